"""The papers' AlpacaEval figures (data only), printed beside a run's leaderboard.

HB = Li et al. 2023 (Humpback, arXiv 2308.06259); BFT = Nguyen et al. 2024 (arXiv 2408.04614). AlpacaEval 1.0 win
rates are against text-davinci-003 with the GPT-4 judge (``alpaca_eval_gpt4``); AlpacaEval 2.0 (BFT Table 10) uses the
GPT-4 Turbo judge and reference. Figures are copied from the papers, not recomputed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperRow:
    source: str  # paper and table
    base_model: str
    data: str
    ae1_win_rate: float | None = None
    ae2_win_rate: float | None = None
    ae2_lc_win_rate: float | None = None

    @property
    def label(self) -> str:
        return f"{self.source} | {self.base_model} | {self.data}"


_BFT1 = "BFT Tab.1"
_BFT2 = "BFT Tab.2"
_BFT10 = "BFT Tab.10"
_L7, _L70 = "Llama-2-7B", "Llama-2-70B"

PAPER_ROWS: tuple[PaperRow, ...] = (
    # BFT Table 1: Llama-2-7B, 12.8K pairs (+3.2K seed), AlpacaEval 1.0
    PaperRow(_BFT1, _L7, "Dolma + filtering", ae1_win_rate=71.70),
    PaperRow(_BFT1, _L7, "Dolma + rewriting", ae1_win_rate=73.44),
    PaperRow(_BFT1, _L7, "Dolma + filtering + rewriting", ae1_win_rate=74.38),
    PaperRow(_BFT1, _L7, "ClueWeb + filtering (Humpback data)", ae1_win_rate=70.77),
    PaperRow(_BFT1, _L7, "Open Orca", ae1_win_rate=74.20),
    PaperRow(_BFT1, _L7, "ShareGPT", ae1_win_rate=72.69),
    PaperRow(_BFT1, _L7, "Evol-Instruct", ae1_win_rate=72.32),
    PaperRow(_BFT1, _L7, "Alpaca-GPT4", ae1_win_rate=71.17),
    PaperRow(_BFT1, _L7, "Self-instruct", ae1_win_rate=65.11),
    # BFT Table 2: Llama-2-70B, AlpacaEval 1.0
    PaperRow(_BFT2, _L70, "Dolma + filtering 51.2K", ae1_win_rate=87.42),
    PaperRow(_BFT2, _L70, "Dolma + rewriting 51.2K", ae1_win_rate=90.52),
    PaperRow(_BFT2, _L70, "Dolma + filtering + rewriting 51.2K", ae1_win_rate=91.74),
    PaperRow(_BFT2, _L70, "ClueWeb + filtering 41.8K", ae1_win_rate=88.18),
    PaperRow(_BFT2, _L70, "Open Orca", ae1_win_rate=87.31),
    PaperRow(_BFT2, _L70, "ShareGPT", ae1_win_rate=88.56),
    PaperRow(_BFT2, _L70, "Evol-Instruct", ae1_win_rate=86.05),
    PaperRow(_BFT2, _L70, "Alpaca-GPT4", ae1_win_rate=86.18),
    PaperRow(_BFT2, _L70, "Self-instruct", ae1_win_rate=78.48),
    PaperRow(_BFT2, _L70, "Dolma + filtering + rewriting 25.6K", ae1_win_rate=90.22),
    PaperRow(_BFT2, _L70, "Dolma + filtering + distilling 25.6K", ae1_win_rate=87.58),
    # BFT Table 10: Llama-2-70B, AlpacaEval 2.0 (LC / raw)
    PaperRow(_BFT10, _L70, "Dolma + filtering", ae2_win_rate=11.90, ae2_lc_win_rate=16.71),
    PaperRow(_BFT10, _L70, "Dolma + rewriting", ae2_win_rate=12.66, ae2_lc_win_rate=17.44),
    PaperRow(_BFT10, _L70, "Dolma + filtering + rewriting", ae2_win_rate=12.07, ae2_lc_win_rate=16.68),
    PaperRow(_BFT10, _L70, "ClueWeb + filtering", ae2_win_rate=11.89, ae2_lc_win_rate=15.93),
    PaperRow(_BFT10, _L70, "filtering + rewriting 25.6K", ae2_win_rate=13.05, ae2_lc_win_rate=17.90),
    PaperRow(_BFT10, _L70, "filtering + distilling 25.6K", ae2_win_rate=11.95, ae2_lc_win_rate=17.80),
    # HB: Humpback, AlpacaEval 1.0
    PaperRow("HB", "LLaMA 65B", "Humpback", ae1_win_rate=83.71),
    PaperRow("HB", "LLaMA 33B", "Humpback", ae1_win_rate=79.84),
    PaperRow("HB", _L70, "Humpback", ae1_win_rate=87.94),
)

# Which papers' column matches an annotator: AE1 for the GPT-4 judge, AE2 for the GPT-4 Turbo weighted judge.
AE1_ANNOTATORS = ("alpaca_eval_gpt4",)
AE2_ANNOTATORS = ("weighted_alpaca_eval_gpt4_turbo",)


def rows_for(annotator: str | None) -> tuple[PaperRow, ...]:
    """Paper rows comparable with ``annotator`` (AE2 rows for the AE2 judge, else AE1 rows)."""
    if annotator in AE2_ANNOTATORS:
        return tuple(r for r in PAPER_ROWS if r.ae2_win_rate is not None)
    return tuple(r for r in PAPER_ROWS if r.ae1_win_rate is not None)
