"""Data loading: validated record IO, seed pairs, and web-corpus loading and cleaning."""
