"""Loads config files by path (configs/ is not a package)."""

import importlib.util
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def load_config(name: str):
    """``configs/<name>.py``'s ``get_config()``."""
    spec = importlib.util.spec_from_file_location(name, CONFIGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def tiny_two_tower_config():
    """``configs/two_tower_tiny.py`` with history pooling (length 4), activity features and no
    title model."""
    config = load_config("two_tower_tiny")
    config.features.history_len = 4
    config.features.activity = True
    return config
