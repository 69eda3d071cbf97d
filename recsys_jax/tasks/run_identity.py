"""Run identity: what produced the run in a workdir, checked before a rerun may resume it.

A workdir records its run's identity in ``run_identity.json``, written atomically once the data
is prepared and before any training:

  task               the task's name
  config             every resolved config key that can change the result (flattened, dotted;
                     all keys except ``RESULT_NEUTRAL_KEYS``)
  split_fingerprint  the split's fingerprint

A rerun resumes only when its identity is the recorded one. The config keys are compared before
any work (``check_config_identity``), the split fingerprint right after the data is prepared and
before any checkpoint is restored (``check_fingerprint``). A difference raises ``WorkdirError``
naming each differing key (recorded → now) and the two ways on (a key added since a run was
recorded counts as recorded at its default, ``ADDED_KEYS``): a new ``--workdir``, or
``--overwrite``, which moves the old run aside to ``<workdir>.replaced-<timestamp>``
(``move_aside``; nothing is ever deleted).
"""

from __future__ import annotations

import fnmatch
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_collections

from recsys_jax import fileio

IDENTITY_FILE = "run_identity.json"
IDENTITY_FORMAT = 1

# Config keys that cannot change a run's result beyond float rounding, so they may differ
# between the invocations that share one workdir: labels, where the same files are read from,
# logging, post-training analyses (recomputed by every invocation), the number of timed
# queries, and how the same computation is laid out (data on the device or streamed, evaluation
# chunks, the exact structure that tests negatives, the rows the item tower runs on per step, the
# device mesh: a run saved on one mesh resumes on another), and the FAISS index, which every
# invocation builds anew from the trained model (its own identity is saved beside it). Every
# other key is part of the identity. A key ending in ".*" covers its whole block.
RESULT_NEUTRAL_KEYS = (
    "run_name",
    "tensorboard",
    "data.data_dir",
    "data.cache_dir",
    "features.cache_dir",
    "analysis.*",
    "serving.num_queries",
    "serving.batch_size",
    "serving.recall_queries",
    "training.data_on_device",
    "training.eval_chunk_size",
    "training.positive_set",
    "model.max_step_items",
    "mesh.*",
    "index.*",
)

# Config keys added after runs were recorded without them, with the value such a run had: a
# recorded identity that lacks one of these keys is read as having this value, so a run
# recorded before the key existed resumes under a config that sets it to its default.
ADDED_KEYS: dict[str, Any] = {
    "optimizer.tables": "dense",
    "model.history_source": "item_tower",
    "training.l2_reg": 0.0,
}

# Outputs of a started run; a workdir with any of them must have recorded its identity.
RUN_OUTPUTS = ("checkpoints", "metrics.jsonl", "model", "test_metrics.json")


class WorkdirError(ValueError):
    """A workdir that this run cannot use safely (another layout, task or identity, or held
    by another run)."""


def how_to_proceed(workdir: Path) -> str:
    """The two ways on from a refused workdir, for error messages."""
    return (f"Use a new --workdir, or rerun with --overwrite to move this run aside to "
            f"{workdir.name}.replaced-<timestamp> beside it (nothing is deleted).")


def is_result_neutral(key: str) -> bool:
    """Whether the dotted config ``key`` is one of ``RESULT_NEUTRAL_KEYS``."""
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in RESULT_NEUTRAL_KEYS)


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def identity_config(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The resolved config keys that determine the result, flattened, as JSON values."""
    flat = _flatten(json.loads(config.to_json()))
    return {k: v for k, v in sorted(flat.items()) if not is_result_neutral(k)}


def read_identity(workdir: Path) -> dict[str, Any] | None:
    """The recorded identity of ``workdir``'s run, or ``None`` when none is recorded.

    Raises:
      WorkdirError: when ``run_identity.json`` cannot be read.
    """
    path = workdir / IDENTITY_FILE
    if not path.exists():
        return None
    try:
        identity = json.loads(path.read_text())
        if not isinstance(identity, dict) or not isinstance(identity.get("config"), dict):
            raise ValueError("no 'config' mapping")
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise WorkdirError(f"{path} is unreadable ({e}), so whether this config produced the "
                           f"run in {workdir} cannot be checked. {how_to_proceed(workdir)}"
                           ) from e
    return identity


_ABSENT = object()  # A key one side does not have (a block added or removed).


def _show(value: Any) -> str:
    return "(absent)" if value is _ABSENT else json.dumps(value)


def differences(recorded: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """``"key: recorded → now"`` for every key whose value differs, sorted by key."""
    return [f"{k}: {_show(recorded.get(k, _ABSENT))} → {_show(now.get(k, _ABSENT))}"
            for k in sorted(recorded.keys() | now.keys())
            if recorded.get(k, _ABSENT) != now.get(k, _ABSENT)]


def check_config_identity(workdir: Path, task: str, config: ml_collections.ConfigDict
                          ) -> dict[str, Any] | None:
    """Checks ``config`` against the identity recorded in ``workdir`` (before any work).

    Returns:
      The recorded identity, or ``None`` for a workdir that holds no run yet.

    Raises:
      WorkdirError: when a result-determining key differs (all of them are named, with the
        recorded and the new value), or the workdir holds run outputs without an identity.
    """
    recorded = read_identity(workdir)
    outputs = [name for name in RUN_OUTPUTS if (workdir / name).exists()]
    if recorded is None:
        if outputs:
            raise WorkdirError(
                f"{workdir} holds run outputs ({', '.join(outputs)}) but no {IDENTITY_FILE}, "
                f"so whether this config produced them cannot be checked. "
                + how_to_proceed(workdir))
        return None
    now = identity_config(config)
    # Keys made result-neutral since the run was recorded no longer count.
    then = {k: v for k, v in recorded["config"].items() if not is_result_neutral(k)}
    # Keys added since the run was recorded: it had their default (ADDED_KEYS).
    implied = {k: v for k, v in ADDED_KEYS.items() if k in now and k not in then}
    changed = differences({"task": recorded.get("task"), **implied, **then},
                          {"task": task, **now})
    if changed:
        raise WorkdirError(
            f"{workdir} holds a run of another configuration; resuming it would test a model "
            f"trained under the recorded settings and claim the new ones produced it. "
            f"{len(changed)} key(s) differ (recorded → now):\n  " + "\n  ".join(changed)
            + f"\n{how_to_proceed(workdir)} Keys that may change between runs: "
            f"{', '.join(RESULT_NEUTRAL_KEYS)} (run_identity.RESULT_NEUTRAL_KEYS).")
    return recorded


def check_fingerprint(workdir: Path, recorded: Mapping[str, Any] | None,
                      fingerprint: str) -> None:
    """Checks the prepared split against the recorded one (after ``prepare``, before any
    checkpoint is restored).

    Raises:
      WorkdirError: when the run in ``workdir`` was trained on another split (the data under
        the same config changed, e.g. another ``data_dir`` or a new data file).
    """
    before = None if recorded is None else recorded.get("split_fingerprint")
    if before is not None and before != fingerprint:
        raise WorkdirError(
            f"{workdir} holds a run trained on another split (fingerprint {before[:16]}… "
            f"recorded, {fingerprint[:16]}… now) although the config is the same: the data "
            f"changed (another data_dir or data file?). Resuming would test the old model on "
            f"rows it may have trained on. {how_to_proceed(workdir)}")


def write_identity(workdir: Path, task: str, config: ml_collections.ConfigDict,
                   split_fingerprint: str) -> None:
    """Records the run's identity in ``workdir/run_identity.json`` (atomically)."""
    fileio.atomic_write_json(workdir / IDENTITY_FILE, {
        "format": IDENTITY_FORMAT, "task": task, "config": identity_config(config),
        "split_fingerprint": split_fingerprint,
        "result_neutral_keys": list(RESULT_NEUTRAL_KEYS)})


def move_aside(workdir: Path, is_run: bool) -> Path | None:
    """Renames ``workdir`` to ``<workdir>.replaced-<timestamp>`` beside it (never deletes).

    Args:
      workdir: the directory to move.
      is_run: whether it holds a recsys_jax run; only runs are moved.

    Returns:
      The new path, or ``None`` when there was nothing to move (missing or empty).

    Raises:
      WorkdirError: for a non-empty directory that holds no run (it might be anything).
    """
    workdir = Path(os.path.abspath(workdir))
    if not workdir.exists() or (workdir.is_dir() and not any(workdir.iterdir())):
        return None
    if not is_run:
        raise WorkdirError(f"{workdir} is not empty and holds no recsys_jax run; --overwrite "
                           "only moves runs aside. Use a new --workdir.")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = workdir.with_name(f"{workdir.name}.replaced-{stamp}")
    suffix = 1
    while target.exists():
        target = workdir.with_name(f"{workdir.name}.replaced-{stamp}-{suffix}")
        suffix += 1
    os.rename(workdir, target)
    return target
