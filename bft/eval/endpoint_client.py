"""The OpenAI client alpaca_eval builds for a served judge (named as ``client_class`` in its client config)."""

from __future__ import annotations

from typing import Any

import openai

from bft.eval.endpoint import Endpoint


class EnvKeyOpenAI(openai.OpenAI):
    """``openai.OpenAI`` whose key comes from the environment variable ``api_key_env`` (none: a keyless server), so
    that alpaca_eval's client config file names the variable and never holds the key."""

    def __init__(self, *, api_key_env: str | None = None, **kwargs: Any) -> None:
        super().__init__(api_key=Endpoint("", "", api_key_env).api_key(), **kwargs)
