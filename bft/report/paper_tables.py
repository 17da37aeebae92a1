"""The papers' figures as the report lays them out (data only).

BFT Tables 1, 2 and 10 and HB's headline rows come from :mod:`bft.eval.paper_rows` (single source of truth).
The figures that module does not carry live here: BFT's corpus ablation, HB's data-scaling slope and HB's
selection precision / recall per curation round. Copied from the papers (see the reference notes), not recomputed.
"""

from __future__ import annotations

from bft.eval.paper_rows import PAPER_ROWS, PaperRow

TABLE_SOURCES: dict[str, str] = {"table1": "BFT Tab.1", "table2": "BFT Tab.2", "table10": "BFT Tab.10"}
TABLE_TITLES: dict[str, str] = {
    "table1": "BFT Table 1 - Llama-2-7B, 12.8K pairs (+3.2K seed), AlpacaEval 1.0 win rate",
    "table2": "BFT Table 2 - Llama-2-70B, AlpacaEval 1.0 win rate",
    "table10": "BFT Table 10 - Llama-2-70B, AlpacaEval 2.0 (GPT-4 Turbo judge), LC / raw win rate",
}

# BFT corpus ablation: 3.2K pairs, Llama-2-7B, AlpacaEval 1.0 win rate.
CORPUS_ABLATION: dict[str, float] = {"C4": 66.83, "Dolma head": 67.92, "Dolma middle": 67.21, "ClueWeb": 68.04}

# HB data scaling: w = alpha * log N + C, alpha for Humpback data (log taken as natural log here; see report notes).
HB_SCALING_ALPHA = 6.95

# HB: precision / recall of the self-curation selection against human labels, by curation round (0-based).
HB_SELECTION_QUALITY: dict[int, tuple[float, float]] = {0: (0.44, 0.09), 1: (0.52, 0.44)}


def table_rows(table: str) -> tuple[PaperRow, ...]:
    """The paper rows of one BFT table (``table1``, ``table2`` or ``table10``), in the paper's order."""
    source = TABLE_SOURCES[table]
    return tuple(r for r in PAPER_ROWS if r.source == source)
