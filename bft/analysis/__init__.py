"""Dataset analyses from the BFT / Humpback papers: diversity, lengths, MAUVE, eval overlap, plots (``bft-analyze``)."""
