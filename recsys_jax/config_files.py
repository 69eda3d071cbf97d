"""Loading one config file from another: variants import and override a base config.

Config files live in ``configs/``, which is not a package and may be used from any working
directory, so a variant loads its base by path, next to itself.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import ml_collections


def sibling_config(config_file: str | os.PathLike, name: str,
                   *args: Any) -> ml_collections.ConfigDict:
    """``get_config(*args)`` of ``<name>.py`` in the directory of ``config_file``.

    Typical use inside a variant: ``config = sibling_config(__file__, "mf_ml100k")``.
    """
    path = Path(config_file).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_config_{name}", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"no config file {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(*args)
