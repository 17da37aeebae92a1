"""FOR TESTS ONLY: a tiny OpenAI-compatible judge server on 127.0.0.1 with a scripted preference.

It answers ``GET /v1/models`` and ``POST /v1/chat/completions`` the way vLLM's OpenAI server does for the AE2
``alpaca_eval_clf`` prompt: one token, ``m`` or ``M``, with ``top_logprobs`` for both. ``prefer="longer"`` puts 90% on
the longer output (equal lengths: 50/50); ``prefer="first"`` always puts 90% on ``m`` (pure position bias).
"""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bft.eval.judges import extract_pair


class StubJudge:
    def __init__(self, model: str = "stub-judge", prefer: str = "longer", api_key: str | None = None) -> None:
        self.model, self.prefer, self.api_key = model, prefer, api_key
        self.requests: list[dict[str, Any]] = []  # {"path", "authorization", "body"}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> StubJudge:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    def p_first(self, out_1: str, out_2: str) -> float:
        if self.prefer == "first":
            return 0.9
        if len(out_1) == len(out_2):
            return 0.5
        return 0.9 if len(out_1) > len(out_2) else 0.1

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        user = "\n".join(m["content"] for m in body["messages"] if m["role"] == "user")
        try:
            p = self.p_first(*extract_pair(user))
        except ValueError:  # not a judging prompt (a client's one-token probe): no preference
            p = 0.5
        tops = [
            {"token": "m", "logprob": math.log(p), "bytes": None},
            {"token": "M", "logprob": math.log(1 - p), "bytes": None},
        ]
        best = max(tops, key=lambda t: t["logprob"])
        return {
            "id": f"stub-{len(self.requests)}",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": best["token"]},
                    "finish_reason": "length",
                    "logprobs": {"content": [{**best, "top_logprobs": tops}]},
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _send(self, code: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorised(self) -> bool:
                if stub.api_key is None or self.headers.get("Authorization") == f"Bearer {stub.api_key}":
                    return True
                self._send(401, {"error": {"message": "bad key", "type": "invalid_request_error", "code": 401}})
                return False

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                stub.requests.append({"path": self.path, "authorization": self.headers.get("Authorization")})
                if not self._authorised():
                    return
                if self.path.rstrip("/") == "/v1/models":
                    model = {"id": stub.model, "object": "model", "created": 0, "owned_by": "test"}
                    self._send(200, {"object": "list", "data": [model]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                auth = self.headers.get("Authorization")
                stub.requests.append({"path": self.path, "authorization": auth, "body": body})
                if not self._authorised():
                    return
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, {"error": {"message": "not found"}})
                elif body.get("model") != stub.model:
                    self._send(404, {"error": {"message": f"model {body.get('model')} not served"}})
                else:
                    self._send(200, stub.chat(body))

        return Handler
