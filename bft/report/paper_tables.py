"""The papers' tables as the report lays them out (data only).

The rows, their figures and the settings that define each come from :mod:`bft.eval.paper_rows` (single source of
truth). What that module does not carry lives here: which rows make up which report table, the tables' titles, HB's
data-scaling slope and HB's selection precision / recall per curation round. Copied from the papers (see the
reference notes), not recomputed.
"""

from __future__ import annotations

from bft.eval.paper_rows import PAPER_ROWS, PaperRow

# The report's paper tables: key (file stem of its Markdown / CSV) -> the PaperRow.source of its rows.
TABLE_SOURCES: dict[str, str] = {
    "table1": "BFT Tab.1",
    "table2": "BFT Tab.2",
    "table10": "BFT Tab.10",
    "corpus_ablation": "BFT corpus",
    "hb_table4": "HB Tab.4",
    "hb_headline": "HB",
}
TABLE_TITLES: dict[str, str] = {
    "table1": "BFT Table 1 - Llama-2-7B, 12.8K pairs (+3.2K seed), AlpacaEval 1.0 win rate",
    "table2": "BFT Table 2 - Llama-2-70B, AlpacaEval 1.0 win rate",
    "table10": "BFT Table 10 - Llama-2-70B, AlpacaEval 2.0 (GPT-4 Turbo judge), LC / raw win rate",
    "corpus_ablation": "Corpus ablation - BFT: 3.2K pairs, Llama-2-7B, AlpacaEval 1.0",
    "hb_table4": "HB Table 4 - system prompt (tag) in training and at inference, 7B, AlpacaEval 1.0 win rate ± SE",
    "hb_headline": "HB - Humpback after two curation iterations, AlpacaEval 1.0 win rate",
}
# Tables whose figures are AlpacaEval 2.0 (LC and raw) rather than AlpacaEval 1.0.
AE2_TABLES = ("table10",)


def table_rows(table: str) -> tuple[PaperRow, ...]:
    """The paper rows of one report table, in the paper's order."""
    source = TABLE_SOURCES[table]
    return tuple(r for r in PAPER_ROWS if r.source == source)


def table_of(row: PaperRow) -> str:
    """The report table key (``table1``, ``hb_table4``, ...) of a paper row."""
    return next(key for key, source in TABLE_SOURCES.items() if source == row.source)


# BFT corpus ablation: 3.2K pairs, Llama-2-7B, AlpacaEval 1.0 win rate (corpus -> figure).
CORPUS_ABLATION: dict[str, float] = {r.data: r.ae1_win_rate for r in table_rows("corpus_ablation") if r.ae1_win_rate is not None}

# HB data scaling: w = alpha * log N + C, alpha for Humpback data (log taken as natural log here; see report notes).
HB_SCALING_ALPHA = 6.95

# HB: precision / recall of the self-curation selection against human labels, by curation round (0-based).
HB_SELECTION_QUALITY: dict[int, tuple[float, float]] = {0: (0.44, 0.09), 1: (0.52, 0.44)}
