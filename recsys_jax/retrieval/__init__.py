"""FAISS indexes, retrieve() and latency measurement."""
