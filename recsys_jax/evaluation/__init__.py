"""Metrics, ranking protocols, significance tests and simple baselines."""
