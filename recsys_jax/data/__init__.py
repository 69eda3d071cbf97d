"""Data sets, id encoding and leakage-free splits."""
