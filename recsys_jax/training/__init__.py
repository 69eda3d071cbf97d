"""Losses, compiled train steps, the fit loop and checkpoints."""
