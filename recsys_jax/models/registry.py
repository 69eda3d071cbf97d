"""Models by name, and one save/load for every model.

A config's ``model.name`` picks the builder. A builder has the signature
``build(model_config, *, num_users, num_items, train, rngs, **inputs)`` and returns an
``nnx.Module``; ``train`` holds the validated training columns (``user``, ``item`` and, for
ratings, ``rating``) so a builder can size tables and initialise from data; ``inputs`` are what a
task adds (the retrieval task passes ``features=``). To add a model, write one module with its
builder and add one line to ``MODELS`` (see ``docs/adding_a_model.md``).

``save_model`` writes a model as ``model.json`` (name, model config, id-space sizes, metadata)
and ``state.npz`` (every NNX variable: parameters, masks, stored inputs); ``load_model`` builds
the same architecture through the registry and fills it, refusing files whose names or shapes
differ. No pickle is ever read.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from recsys_jax import fileio
from recsys_jax.models import mf, ncf, two_tower
from recsys_jax.models.fitted import DataSized

ModelBuilder = Callable[..., nnx.Module]

# name -> builder, or "module:function" of a builder imported when first used (so a new
# model is one line here: ``"my_model": "recsys_jax.models.my_model:build",``).
MODELS: dict[str, ModelBuilder | str] = {
    "mf": mf.build_mf,
    "two_tower": two_tower.build_two_tower,
    "gmf": ncf.build_gmf,
    "mlp": ncf.build_mlp,
    "neumf": ncf.build_neumf,
    "dot_mf": ncf.build_dot_mf,
    "ease": "recsys_jax.models.ease:build",
    "ials": "recsys_jax.models.ials:build",
    "item_knn": "recsys_jax.models.item_knn:build",
    "sasrec": "recsys_jax.models.sasrec:build_sasrec",
}

MODEL_FILE = "model.json"
STATE_FILE = "state.npz"
SAVE_FORMAT = 1


def build_model(model_config: Mapping[str, Any], *, num_users: int, num_items: int,
                train: Mapping[str, np.ndarray], rngs: nnx.Rngs, **inputs: Any) -> nnx.Module:
    """Builds the model named by ``model_config["name"]``.

    ``inputs`` go to the builder unchanged, for models that need more than ids (the two-tower
    model takes ``features=``).

    Raises:
      ValueError: for a name that is not registered (the message lists the known names).
    """
    name = model_config["name"]
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; registered models: {sorted(MODELS)}")
    return builder(name)(model_config, num_users=num_users, num_items=num_items,
                         train=train, rngs=rngs, **inputs)


def builder(name: str) -> ModelBuilder:
    """The builder registered as ``name`` (importing a ``"module:function"`` entry)."""
    entry = MODELS[name]
    if isinstance(entry, str):
        module, _, function = entry.partition(":")
        entry = getattr(importlib.import_module(module), function)
    return entry


def flat_state(model: nnx.Module, kind: type = nnx.Variable) -> dict[str, np.ndarray]:
    """The model's ``kind`` variables as NumPy by ``/``-joined path (``nnx.Variable``: all)."""
    leaves = jax.tree_util.tree_flatten_with_path(
        nnx.to_pure_dict(nnx.state(model, kind)))[0]
    return {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
            for path, v in leaves}


def load_flat_state(model: nnx.Module, arrays: Mapping[str, np.ndarray], *, source: str,
                    kind: type = nnx.Variable) -> None:
    """Sets the model's ``kind`` variables from ``flat_state``-style arrays, in place.

    ``DataSized`` variables (stored events) take the saved length; every other variable must
    have the model's shape.

    Raises:
      ValueError: when names or shapes differ from the model's (another architecture).
    """
    state = nnx.state(model, kind)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(state))
    names = ["/".join(str(getattr(k, "key", k)) for k in path) for path, _ in leaves]
    current = dict(zip(names, (v for _, v in leaves)))
    sized_by_data = set(flat_state(model, DataSized))
    problems = [f"{n}: only in {'the file' if n in arrays else 'the model'}"
                for n in sorted(set(current) ^ set(arrays))]
    problems += [f"{n}: saved {np.shape(arrays[n])}, model {np.shape(v)}"
                 for n, v in current.items() if n in arrays and np.shape(arrays[n]) != v.shape
                 and (n not in sized_by_data or np.ndim(arrays[n]) != np.ndim(v))]
    if problems:
        raise ValueError(f"{source} does not fit this model: {problems[:5]}")
    restored = jax.tree_util.tree_unflatten(
        treedef, [jnp.asarray(arrays[n], current[n].dtype) for n in names])
    nnx.replace_by_pure_dict(state, restored)
    nnx.update(model, state)


def save_model(model: nnx.Module, directory: str | os.PathLike, *,
               model_config: Mapping[str, Any], num_users: int, num_items: int,
               metadata: Mapping[str, Any] | None = None) -> Path:
    """Writes ``model.json`` and ``state.npz`` into ``directory`` (atomically each).

    Args:
      model: a model built by ``build_model``.
      directory: created if missing.
      model_config: the ``model`` block it was built from (``name`` included).
      num_users, num_items: the id-space sizes it was built for.
      metadata: JSON-able facts to keep with it (split fingerprint, data set, ...).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with fileio.atomic_path(directory / STATE_FILE, suffix=".npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, **flat_state(model))
    fileio.atomic_write_json(directory / MODEL_FILE, {
        "format": SAVE_FORMAT, "name": model_config["name"],
        "model_config": dict(model_config), "num_users": int(num_users),
        "num_items": int(num_items), "metadata": dict(metadata or {})})
    return directory


def read_model_info(directory: str | os.PathLike) -> dict[str, Any]:
    """The ``model.json`` of a saved model.

    Raises:
      FileNotFoundError: when ``directory`` holds no saved model.
      ValueError: for a file of another format.
    """
    path = Path(directory) / MODEL_FILE
    if not path.exists():
        raise FileNotFoundError(f"no saved model in {directory} (missing {MODEL_FILE})")
    info = json.loads(path.read_text())
    if info.get("format") != SAVE_FORMAT:
        raise ValueError(f"{path} has format {info.get('format')!r}, this version reads "
                         f"{SAVE_FORMAT}")
    return info


def load_model(directory: str | os.PathLike, **inputs: Any) -> nnx.Module:
    """The model saved by ``save_model`` in ``directory``.

    ``inputs`` are the builder's extra inputs (the two-tower model needs ``features=``, whose
    shapes the saved tables must match; their values are replaced by the saved ones).

    Raises:
      FileNotFoundError, ValueError: missing files, another format or another architecture.
    """
    info = read_model_info(directory)
    empty = {"user": np.zeros(0, np.int32), "item": np.zeros(0, np.int32),
             "rating": np.zeros(0, np.float32)}
    model = build_model(info["model_config"], num_users=info["num_users"],
                        num_items=info["num_items"], train=empty, rngs=nnx.Rngs(0), **inputs)
    path = Path(directory) / STATE_FILE
    with np.load(path, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    load_flat_state(model, arrays, source=str(path))
    return model
