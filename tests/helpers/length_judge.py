"""A test double for the local judge's model: prefers the longer output (equal lengths = a draw), no model.

It replaces :func:`bft.eval.judges.hf_logprob_completions` (the ``local`` annotator's ``fn_completions``) and keeps
its contract: AE2 ``alpaca_eval_clf`` prompts in, one OpenAI-style logprob record per prompt out, parsed by
alpaca_eval's own ``logprob_parser``. It is injected by the ``length_judge`` fixture (tests/conftest.py), never
selectable from a command line.
"""

from __future__ import annotations

import math
import time
from typing import Any

from bft.eval.judges import _result, extract_pair, logprob_record

JUDGE_MODEL = "length_judge"  # the judge_model tests pass with annotator=local, so results name the double


def length_judge_completions(prompts: list[str], **_: Any) -> dict[str, Any]:
    """Prefer the longer output of each prompt, deterministically (the two orders agree, so ``orders`` is moot)."""
    start = time.perf_counter()
    records = []
    for prompt in prompts:
        out_1, out_2 = extract_pair(prompt)
        if len(out_1) == len(out_2):
            records.append(logprob_record(math.log(0.5), math.log(0.5)))
        elif len(out_1) > len(out_2):
            records.append(logprob_record(0.0, -100.0))
        else:
            records.append(logprob_record(-100.0, 0.0))
    return _result(records, time.perf_counter() - start)
