"""Loading one config file from another (variants import and override a base config), and the
config blocks every experiment config shares.

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
    return load_config_file(Path(config_file).with_name(f"{name}.py"), *args)


def load_config_file(spec: str | os.PathLike, *args: Any) -> ml_collections.ConfigDict:
    """``get_config(...)`` of a config file, as ``--config=`` names it.

    ``spec`` is a path, optionally followed by ``:<argument>`` (``configs/mf_ml100k_tuned.py:
    global_temporal``), which is passed to ``get_config`` as its first argument.

    Raises:
      FileNotFoundError: when the file does not exist.
    """
    path, sep, argument = str(spec).partition(".py:")
    path = Path(path + ".py") if sep else Path(path)
    if sep:
        args = (argument, *args)
    if not path.is_file():
        raise FileNotFoundError(f"no config file {path}")
    module_spec = importlib.util.spec_from_file_location(f"_config_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(*args)


def mesh_config() -> ml_collections.ConfigDict:
    """The ``mesh`` block of every experiment config: the devices a run uses, as a (data,
    model) mesh (``recsys_jax.training.sharding``; docs/scaling_out.md).

    ``data``: devices that split each batch; ``model``: devices that split each embedding
    table's rows. -1 means all the devices the other axis leaves. The default, all devices on the
    data axis, is a single device on a machine with one (then nothing is sharded and a run is
    exactly what it was before meshes existed).
    """
    mesh = ml_collections.ConfigDict()
    mesh.data = -1
    mesh.model = 1
    return mesh
