"""Record each stage's code version and code digest in tests/stage_code_digests.json (tests/test_stage_code.py).

    python -m tests.record_stage_digests                          # stages whose version was bumped, new stages
    python -m tests.record_stage_digests --same-results curate    # also: curate's code changed, its results did not
    python -m tests.record_stage_digests --same-results           # ... for every stage whose code changed

A stage whose code changed while its version did not is recorded only with ``--same-results`` (its name, or
``name:compute_function``): that states the change leaves its results as they were, so artifacts made by the old code
keep being reused. If its results change, bump ``version=`` in its Stage declaration instead, then run this.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/, for helpers/ (as under pytest)

from helpers.stage_code import DIGESTS, SourceTree, advice, changes, load_recorded, record  # noqa: E402


def _named(stage: str, names: list[str]) -> bool:
    return any(n in (stage, stage.partition(":")[0]) for n in names)


def main(argv: list[str] | None = None, digests: Path = DIGESTS, tree: SourceTree | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.record_stage_digests", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--same-results",
        nargs="*",
        metavar="STAGE",
        help="record these stages' code changes as result-neutral (no names: every stage whose code changed)",
    )
    args = parser.parse_args(argv)
    old, new = load_recorded(digests), record(tree)
    found = changes(old, new)
    if not found:
        print(f"{digests}: up to date ({len(new['stages'])} stages)")
        return 0
    same = args.same_results
    refused = [
        c for c in found if c.kind == "lowered" or (c.kind == "code" and (same is None or (same and not _named(c.stage, same))))
    ]
    if refused:
        print(advice(refused), file=sys.stderr)
        print("nothing recorded", file=sys.stderr)
        return 1
    for change in found:
        verdict = "same results stated, its artifacts are reused" if change.kind == "code" else "recorded"
        print(f"{change.text.removesuffix(', not recorded')}: {verdict}")
    digests.write_text(json.dumps(new, indent=1, sort_keys=True) + "\n")
    print(f"wrote {digests}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
