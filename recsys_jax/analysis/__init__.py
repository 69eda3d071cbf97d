"""Embedding plots, genre-cluster score, similar items, reports."""
