"""The on-disk format of a run: what a trained model exports for evaluation and comparison.

A run is a directory::

    run.json                 metadata (below), written last: a directory with it is complete
    user_embeddings.npy      kind "embeddings": [num_users, d] float32, row u = encoded user u
    item_embeddings.npy      kind "embeddings": [num_items, d] float32, row i = encoded item i
    ranked.npy               kind "ranked":     [rows, K] int64 item ids, best first, -1 padded
    ranked_users.npy         kind "ranked", optional: [rows] user id of each row (default 0..)
    scores.npy               kind "scores":     [num_users, num_items] float32

``run.json`` holds ``format`` ("recsys_jax.Run"), ``version`` (1), ``name`` (label in tables),
``model``, ``dataset``, ``seen_parts`` (the split parts the run's user representations have
seen, e.g. ``["train"]`` or ``["train", "val"]``; evaluating the run on a part it has seen
would leak), ``split_fingerprint`` (``Split.fingerprint()`` of the split the model
was trained on; comparisons refuse runs whose fingerprints differ), ``split_protocol``,
``protocol`` ("full", or "sampled-<N>" for a run meant for the sampled protocol), ``kind``,
``similarity`` ("dot" or "cosine", for embeddings), ``num_users``, ``num_items``, ``created``
(UTC ISO 8601) and free-form ``metadata`` (hyper-parameters, ...; runs written by the tasks
add ``total_wall_time_s``, ``compile_time_s``, ``train_time_s`` and ``median_epoch_time_s``
when known, or ``fit_time_s`` for closed-form models).
Arrays are plain ``.npy`` files (never pickled), written atomically.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from recsys_jax.data import splits
from recsys_jax.evaluation.results import FULL_PROTOCOL
from recsys_jax.evaluation.sources import (
    SIMILARITIES,
    Embeddings,
    RankedLists,
    ScoreMatrix,
    warn_if_float64_lossy,
)
from recsys_jax.fileio import atomic_save_npy, atomic_write_json

RUN_FILE = "run.json"
RUN_FORMAT = "recsys_jax.Run"
# Version 2 added ``seen_parts``; a version-1 run does not say what its users have seen.
RUN_VERSION = 2
SPLIT_PARTS = splits.PARTS
KINDS = ("embeddings", "ranked", "scores")
_ARRAYS = {"embeddings": ("user_embeddings", "item_embeddings"),
           "ranked": ("ranked", "ranked_users"), "scores": ("scores",)}


class RunError(ValueError):
    """A run directory that is missing, malformed, or incompatible with a comparison."""


@dataclasses.dataclass(frozen=True)
class Run:
    """A loaded run: its metadata and arrays (scores are memory-mapped)."""

    path: Path
    name: str
    model: str
    dataset: str
    split_fingerprint: str
    split_protocol: str
    protocol: str
    kind: str
    similarity: str
    num_users: int
    num_items: int
    created: str
    metadata: dict[str, Any]
    arrays: dict[str, np.ndarray]
    seen_parts: tuple[str, ...] = ("train",)

    @property
    def source(self):
        """The run's arrays as an evaluation score source."""
        if self.kind == "embeddings":
            return Embeddings(self.arrays["user_embeddings"], self.arrays["item_embeddings"],
                              similarity=self.similarity)
        if self.kind == "ranked":
            return RankedLists(self.arrays["ranked"], self.arrays.get("ranked_users"))
        return ScoreMatrix(self.arrays["scores"])


def save_run(directory: str | os.PathLike, *, name: str, model: str, dataset: str,
             split_fingerprint: str, seen_parts: tuple[str, ...] | list[str],
             split_protocol: str = "",
             user_embeddings: np.ndarray | None = None,
             item_embeddings: np.ndarray | None = None, similarity: str = "dot",
             ranked: np.ndarray | None = None, ranked_users: np.ndarray | None = None,
             scores: np.ndarray | None = None, protocol: str = FULL_PROTOCOL,
             num_users: int | None = None, num_items: int | None = None,
             metadata: dict[str, Any] | None = None) -> Path:
    """Writes a run directory; give exactly one of embeddings (both), ranked, or scores.

    ``num_users`` / ``num_items`` are read off the arrays; give them for ranked lists, whose
    largest ids may fall short of the catalogue. ``seen_parts`` is required: which parts of the
    split the user representations were computed from (``("train",)``, ``("train", "val")``).

    Returns:
      The directory path.

    Raises:
      RunError: on a missing or ambiguous payload or inconsistent shapes.
    """
    seen_parts = check_seen_parts(seen_parts)
    kind, arrays, num_users, num_items = _payload(
        user_embeddings=user_embeddings, item_embeddings=item_embeddings,
        similarity=similarity, ranked=ranked, ranked_users=ranked_users, scores=scores,
        num_users=num_users, num_items=num_items)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        atomic_save_npy(directory / f"{stem}.npy", array)
    atomic_write_json(directory / RUN_FILE, {
        "format": RUN_FORMAT, "version": RUN_VERSION, "name": name, "model": model,
        "dataset": dataset, "seen_parts": list(seen_parts),
        "split_fingerprint": split_fingerprint, "split_protocol": split_protocol,
        "protocol": protocol, "kind": kind,
        "similarity": similarity, "num_users": int(num_users), "num_items": int(num_items),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "metadata": metadata or {}})
    return directory


def load_run(directory: str | os.PathLike) -> Run:
    """Reads a run directory written by ``save_run`` (score matrices are memory-mapped).

    Raises:
      RunError: naming the directory and what is wrong.
    """
    directory = Path(directory)
    meta_path = directory / RUN_FILE
    if not meta_path.is_file():
        raise RunError(f"{directory}: not a run (no {RUN_FILE})")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise RunError(f"{meta_path}: invalid JSON ({e})") from e
    if meta.get("format") != RUN_FORMAT:
        raise RunError(f"{meta_path}: not a {RUN_FORMAT} file")
    if meta.get("version") != RUN_VERSION:
        raise RunError(
            f"{meta_path}: a {RUN_FORMAT} v{meta.get('version')} run; this version reads "
            f"v{RUN_VERSION}, which records the split parts the run's users have seen "
            "(seen_parts), so that no run is evaluated on data it has seen. Export the run "
            "again with this version.")
    kind = meta.get("kind")
    if kind not in KINDS:
        raise RunError(f"{meta_path}: unknown kind {kind!r}")
    arrays = {}
    for stem in _ARRAYS[kind]:
        path = directory / f"{stem}.npy"
        if not path.is_file():
            if stem == "ranked_users":
                continue
            raise RunError(f"{directory}: {kind} run lacks {path.name}")
        arrays[stem] = np.load(path, mmap_mode="r" if stem == "scores" else None,
                               allow_pickle=False)
    try:
        return Run(path=directory, name=meta["name"], model=meta["model"],
                   dataset=meta["dataset"], split_fingerprint=meta["split_fingerprint"],
                   split_protocol=meta.get("split_protocol", ""),
                   protocol=meta.get("protocol", FULL_PROTOCOL), kind=kind,
                   similarity=meta.get("similarity", "dot"), num_users=int(meta["num_users"]),
                   num_items=int(meta["num_items"]), created=meta.get("created", ""),
                   metadata=meta.get("metadata", {}), arrays=arrays,
                   seen_parts=check_seen_parts(meta["seen_parts"]))
    except KeyError as e:
        raise RunError(f"{meta_path}: missing field {e.args[0]!r}") from e


def in_memory_run(name: str, *, split_fingerprint: str, seen_parts: tuple[str, ...] | list[str],
                  path: str | os.PathLike = "", model: str = "outside", dataset: str = "",
                  split_protocol: str = "", user_embeddings: np.ndarray | None = None,
                  item_embeddings: np.ndarray | None = None, similarity: str = "dot",
                  scores: np.ndarray | None = None,
                  metadata: dict[str, Any] | None = None) -> Run:
    """A ``Run`` held in memory, checked exactly as ``save_run`` checks what it writes.

    For outside work scored against a split (``compare.py --scores/--embeddings``): give a
    dense score matrix or both embedding matrices, and what its users have seen. ``path`` is
    where the arrays came from (shown in errors).

    Raises:
      RunError: as ``save_run``.
    """
    seen_parts = check_seen_parts(seen_parts)
    kind, arrays, num_users, num_items = _payload(
        user_embeddings=user_embeddings, item_embeddings=item_embeddings,
        similarity=similarity, ranked=None, ranked_users=None, scores=scores,
        num_users=None, num_items=None)
    return Run(path=Path(path), name=name, model=model, dataset=dataset,
               split_fingerprint=split_fingerprint, split_protocol=split_protocol,
               protocol=FULL_PROTOCOL, kind=kind, similarity=similarity, num_users=num_users,
               num_items=num_items, created="", metadata=metadata or {}, arrays=arrays,
               seen_parts=seen_parts)


def _payload(*, user_embeddings, item_embeddings, similarity, ranked, ranked_users, scores,
             num_users, num_items) -> tuple[str, dict[str, np.ndarray], int, int]:
    """Checked (kind, arrays, num_users, num_items) of one run payload (float32 scores)."""
    for what, m in (("user embeddings", user_embeddings), ("item embeddings", item_embeddings),
                    ("scores", scores)):
        if m is not None:
            warn_if_float64_lossy(m, what)  # runs hold float32: say when that rounds
    given = {"embeddings": user_embeddings is not None or item_embeddings is not None,
             "ranked": ranked is not None, "scores": scores is not None}
    kinds = [k for k, v in given.items() if v]
    if len(kinds) != 1:
        raise RunError(f"give exactly one of embeddings, ranked or scores (got {kinds or 'none'})")
    kind = kinds[0]
    if similarity not in SIMILARITIES:
        raise RunError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
    arrays: dict[str, np.ndarray] = {}
    if kind == "embeddings":
        if user_embeddings is None or item_embeddings is None:
            raise RunError("embedding runs need both user and item embeddings")
        source = Embeddings(np.asarray(user_embeddings, np.float32),
                            np.asarray(item_embeddings, np.float32), similarity)
        arrays = {"user_embeddings": source.users, "item_embeddings": source.items}
        _check_count("users", num_users, source.num_users)
        _check_count("items", num_items, source.num_items)
        num_users, num_items = source.num_users, source.num_items
    elif kind == "ranked":
        ranked = np.asarray(ranked)
        if ranked.ndim != 2 or not np.issubdtype(ranked.dtype, np.integer):
            raise RunError(f"ranked lists must be a 2-D integer array, got {ranked.dtype} "
                           f"{ranked.shape}")
        arrays = {"ranked": ranked.astype(np.int64)}
        if ranked_users is not None:
            arrays["ranked_users"] = np.asarray(ranked_users, dtype=np.int64)
            if arrays["ranked_users"].shape != (len(ranked),):
                raise RunError("ranked_users must give one user id per ranked row")
        users = arrays.get("ranked_users", np.arange(len(ranked)))
        num_users = num_users or (int(users.max()) + 1 if len(users) else 0)
        num_items = num_items or (int(ranked.max()) + 1 if ranked.size else 0)
    else:
        scores = np.asarray(scores, dtype=np.float32)
        if scores.ndim != 2:
            raise RunError(f"scores must be 2-D, got shape {scores.shape}")
        arrays = {"scores": scores}
        _check_count("users", num_users, scores.shape[0])
        _check_count("items", num_items, scores.shape[1])
        num_users, num_items = scores.shape
    return kind, arrays, int(num_users), int(num_items)


def update_run_metadata(directory: str | os.PathLike, fields: dict[str, Any]) -> None:
    """Merges ``fields`` into a saved run's free-form ``metadata``; rewrites run.json atomically.

    For facts known only after export (the task's total wall time).

    Raises:
      RunError: as ``load_run`` for a directory that is not a readable run.
    """
    load_run(directory)  # refuses anything that is not a complete, current run
    path = Path(directory) / RUN_FILE
    meta = json.loads(path.read_text())
    meta["metadata"] = {**meta.get("metadata", {}), **fields}
    atomic_write_json(path, meta)


def check_seen_parts(parts: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``parts`` as a tuple in split order, checked: known parts, no repeats, ``train`` included.

    Raises:
      RunError: for anything else.
    """
    if isinstance(parts, str) or not all(isinstance(p, str) for p in parts):
        raise RunError(f"seen_parts must be a list of split parts, got {parts!r}")
    unknown = set(parts) - set(SPLIT_PARTS)
    if unknown or len(set(parts)) != len(parts) or "train" not in parts:
        raise RunError(f"seen_parts must be distinct parts of {SPLIT_PARTS} including 'train', "
                       f"got {list(parts)}")
    return in_split_order(parts)


def in_split_order(parts: Iterable[str]) -> tuple[str, ...]:
    """The split parts among ``parts``, in the split's order (train, val, test)."""
    parts = set(parts)
    return tuple(p for p in SPLIT_PARTS if p in parts)


def _check_count(what: str, given: int | None, found: int) -> None:
    if given is not None and given != found:
        raise RunError(f"num_{what}={given} but the arrays hold {found} {what}")
