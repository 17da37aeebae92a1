"""``bft-bench``: throughput of generation, curation and SFT on this machine, against plain baselines."""
