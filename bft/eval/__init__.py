"""AlpacaEval scoring for bft runs, always through the ``alpaca_eval`` package itself.

Modules, one job each:
- :mod:`bft.eval.sets`: load an eval set (``ae1``, ``ae2``, ``embedded`` or a local alpaca_eval-format file).
- :mod:`bft.eval.annotators`: resolve an annotator name to an alpaca_eval annotator config; fail fast on missing keys.
- :mod:`bft.eval.judges`: offline ``fn_completions`` for alpaca_eval (a local HF judge, a deterministic test judge).
- :mod:`bft.eval.score`: run ``alpaca_eval.evaluate`` into a run folder; metrics from existing judgements.
- :mod:`bft.eval.stats`: paired bootstrap comparison of two systems on the same instructions.
- :mod:`bft.eval.calibration`: a judge's agreement with gold judgements, length-balanced agreement, position bias and
  length preference, beside the "longer wins" judge and chance (pure arithmetic, with 95% intervals).
- :mod:`bft.eval.calibrate`: ``bft-eval calibrate``: run any annotator on gold pairs, cache the result per judge and
  gold file, and the run summary's calibration line.
- :mod:`bft.eval.decontaminate`: drop training records that overlap the eval instructions.
- :mod:`bft.eval.paper_rows`: the papers' AlpacaEval figures and the settings that define each row.
- :mod:`bft.eval.inference_tags`: the tag(s) the final model is asked with (``eval.inference_tag``).
- :mod:`bft.eval.cli`: the ``bft-eval`` command.
"""

import warnings

# alpaca_eval 0.6.6 imports pkg_resources (hence setuptools<81); its deprecation notice is not actionable here.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
