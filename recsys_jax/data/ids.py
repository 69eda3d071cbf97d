"""Contiguous id encoding: raw user/item ids (ints or strings) <-> codes 0..N-1.

Embedding tables are indexed by position, so every model needs ids in ``[0, N)``. Codes follow
the sorted order of the raw ids, which keeps encoding order-preserving: anything ordered or
tie-broken by id (splits, ranking ties) gives the same answer before and after encoding.

JAX clamps out-of-bounds gathers instead of failing, so an unknown or out-of-range id would
silently read another row's embedding; :func:`check_ids_in_range` and the encoders refuse
such ids loudly, naming the offending values.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys_jax import fileio
from recsys_jax.data.dataset import Dataset
from recsys_jax.data.errors import DataError, UnknownIdError

_FORMAT = "recsys_jax.IdEncoder"
_VERSION = 1
# How many offending values an error message shows.
_SHOWN = 5
_INT32_MAX = np.iinfo(np.int32).max

USER_IDS_FILE = "user_ids.json"
ITEM_IDS_FILE = "item_ids.json"


class IdOutOfRangeError(UnknownIdError, ValueError):
    """Codes outside ``[0, n)``: an ``UnknownIdError`` that is also a ``ValueError``."""

    def __init__(self, kind: str, bad: list, total_bad: int, n: int):
        super().__init__(kind, bad, total_bad)
        self.n = n
        shown = ", ".join(map(repr, bad))
        more = "" if total_bad <= len(bad) else f" (and {total_bad - len(bad)} more)"
        self.args = (f"{total_bad} {kind} id(s) outside [0, {n}): {shown}{more}",)


def check_ids_in_range(ids: Any, n: int, kind: str) -> None:
    """Checks that integer ``ids`` all lie in ``[0, n)`` (call before a JAX gather).

    Args:
      ids: array-like of any shape (NumPy, JAX or a list); it is read on the host.
      n: table size (number of users or items).
      kind: ``"user"`` or ``"item"``, used in the message.

    Raises:
      IdOutOfRangeError: (an ``UnknownIdError`` and ``ValueError``) naming the first few
        distinct offending values and how many distinct values are offending.
      ValueError: if ``ids`` are not integers or ``n`` is negative.
    """
    if n < 0:
        raise ValueError(f"{kind} table size must be >= 0, got {n}")
    arr = np.asarray(ids)
    if arr.size == 0:
        return
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{kind} ids must be integers, got dtype {arr.dtype}")
    # Fast path: two reductions, no temporary mask, for the common all-valid case.
    if arr.min() >= 0 and arr.max() < n:
        return
    flat = arr.ravel()
    bad = pd.unique(flat[(flat < 0) | (flat >= n)])
    raise IdOutOfRangeError(kind, bad[:_SHOWN].tolist(), len(bad), n)


class IdEncoder:
    """A fitted bijection between raw ids and codes ``0..N-1`` (code = rank in sorted order).

    Raw ids are all integers or all strings. Integers sort numerically, strings by code point.
    """

    def __init__(self, ids: Any, kind: str):
        """Wraps already sorted, distinct raw ids; use :meth:`fit` to build from data.

        Raises:
          ValueError: if ``ids`` are not sorted and distinct, or mix types.
        """
        arr = _as_raw_ids(ids, kind)
        if len(arr) > 1 and not bool(np.all(arr[1:] > arr[:-1])):
            raise ValueError(f"{kind} ids must be sorted and distinct")
        arr.setflags(write=False)
        self.kind = kind
        self._ids = arr
        self._index = pd.Index(arr)

    @classmethod
    def fit(cls, values: Any, kind: str) -> IdEncoder:
        """Fits on the distinct values of ``values`` (array-like of ints or of strings).

        Args:
          values: raw ids, duplicates allowed.
          kind: ``"user"`` or ``"item"``; names the ids in error messages.

        Raises:
          TypeError: if values mix ints and strings, or are floats, bools or missing.
        """
        arr = _as_raw_ids(values, kind)
        return cls(np.sort(pd.unique(arr)), kind)

    def __len__(self) -> int:
        return len(self._ids)

    def __repr__(self) -> str:
        return f"IdEncoder(kind={self.kind!r}, n={len(self)}, id_type={self.id_type!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IdEncoder):
            return NotImplemented
        return (self.kind == other.kind and self._ids.dtype.kind == other._ids.dtype.kind
                and np.array_equal(self._ids, other._ids))

    __hash__ = None  # Equal by value over a large array: not meant as a dict key.

    @property
    def id_type(self) -> str:
        """``"int"`` or ``"str"``."""
        return "str" if self._ids.dtype == object else "int"

    @property
    def raw_ids(self) -> np.ndarray:
        """The raw ids in code order (read-only): ``raw_ids[code]`` is the raw id."""
        return self._ids

    def transform(self, values: Any) -> np.ndarray:
        """Maps raw ids to codes, keeping the input's shape.

        Returns:
          int32 codes (int64 only if there are more than 2**31 - 1 ids).

        Raises:
          UnknownIdError: listing the first few distinct unknown ids (in order of first
            appearance) and how many distinct ids are unknown. Ids of the wrong type (a
            string for an integer encoder) are unknown ids, never silently converted.
        """
        arr = _to_array(values)
        flat = arr.ravel()
        codes = self._index.get_indexer(flat)
        missing = codes < 0
        if missing.any():
            unknown = pd.unique(flat[missing])
            raise UnknownIdError(self.kind, [_plain(v) for v in unknown[:_SHOWN]], len(unknown))
        dtype = np.int32 if len(self) <= _INT32_MAX else np.int64
        return codes.astype(dtype, copy=False).reshape(arr.shape)

    def inverse_transform(self, codes: Any) -> np.ndarray:
        """Maps codes back to raw ids (int64 or object array of str), keeping the shape.

        Raises:
          IdOutOfRangeError: for codes outside ``[0, N)``, naming them.
          ValueError: for non-integer codes.
        """
        arr = np.asarray(codes)
        check_ids_in_range(arr, len(self), self.kind)
        return self._ids[arr.astype(np.int64, copy=False)]

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict (use ``json.dumps`` on it); inverse of :meth:`from_json`."""
        return {"format": _FORMAT, "version": _VERSION, "kind": self.kind,
                "id_type": self.id_type, "ids": self._ids.tolist()}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> IdEncoder:
        """Rebuilds an encoder from :meth:`to_json`'s dict.

        Raises:
          ValueError: if the dict is not an encoder of a known version, or its ids are
            not sorted, distinct and of the declared type.
        """
        if not isinstance(obj, dict) or obj.get("format") != _FORMAT:
            raise ValueError(f"not a {_FORMAT} document")
        if obj.get("version") != _VERSION:
            raise ValueError(f"unsupported {_FORMAT} version {obj.get('version')!r}")
        kind, id_type, ids = obj.get("kind"), obj.get("id_type"), obj.get("ids")
        if not isinstance(kind, str) or id_type not in ("int", "str") or not isinstance(ids, list):
            raise ValueError(f"{_FORMAT} document lacks kind, id_type or ids")
        wanted = str if id_type == "str" else int
        if not all(type(v) is wanted for v in ids):
            raise ValueError(f"{kind} ids are declared {id_type} but are not all {id_type}")
        arr = np.array(ids, dtype=object if id_type == "str" else np.int64)
        return cls(arr, kind)

    def save(self, path: str | os.PathLike) -> None:
        """Writes the encoder as JSON, atomically."""
        fileio.atomic_write_text(path, json.dumps(self.to_json()) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> IdEncoder:
        """Reads an encoder written by :meth:`save`.

        Raises:
          DataError: naming the file, if it is not valid JSON or not a valid encoder.
        """
        try:
            obj = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls.from_json(obj)
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError) as e:
            raise DataError(f"not a valid id encoder file: {e}", path) from e


@dataclasses.dataclass(frozen=True)
class IdMapping:
    """The user and item encoders of one encoded data set."""

    users: IdEncoder
    items: IdEncoder

    @property
    def num_users(self) -> int:
        """Size of the user embedding table."""
        return len(self.users)

    @property
    def num_items(self) -> int:
        """Size of the item embedding table."""
        return len(self.items)

    def save(self, directory: str | os.PathLike) -> None:
        """Writes ``user_ids.json`` and ``item_ids.json`` into ``directory`` (each atomically)."""
        directory = Path(directory)
        self.users.save(directory / USER_IDS_FILE)
        self.items.save(directory / ITEM_IDS_FILE)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> IdMapping:
        """Reads a mapping written by :meth:`save`.

        Raises:
          DataError: naming the file that is missing or invalid.
        """
        directory = Path(directory)
        encoders = []
        for name in (USER_IDS_FILE, ITEM_IDS_FILE):
            path = directory / name
            if not path.is_file():
                raise DataError("id mapping file is missing", path)
            encoders.append(IdEncoder.load(path))
        return cls(users=encoders[0], items=encoders[1])


def encode_dataset(dataset: Dataset) -> tuple[Dataset, IdMapping]:
    """Replaces raw user/item ids by contiguous codes throughout a data set.

    The item encoder is fitted on the catalogue (``dataset.items``), so items that nobody
    rated keep a code and ``items.item_id`` equals the row position ``0..n_items-1`` (rows
    sorted by raw id). When there is a user table, the user encoder is fitted on its users
    together with the interaction users and ``users.user_id`` equals the row position; users
    that interact but lack a profile get a row of missing values (integer columns become
    nullable ``Int64``). Without a user table it is fitted on the interaction users.
    Interactions keep their row order and index; their id columns become int64 codes.

    Returns:
      The encoded data set and the mapping that undoes it.

    Raises:
      UnknownIdError: if an interaction's item is not in the catalogue.
      DataError: if the catalogue or user table lists an id twice.
    """
    where = f"data set {dataset.name!r}"
    if dataset.items["item_id"].duplicated().any():
        raise DataError(f"{where} lists some items twice in its catalogue")
    items = IdEncoder.fit(dataset.items["item_id"], "item")
    interaction_users = dataset.interactions["user_id"]
    if dataset.users is None:
        users = IdEncoder.fit(interaction_users, "user")
        encoded_users = None
    else:
        if dataset.users["user_id"].duplicated().any():
            raise DataError(f"{where} lists some users twice in its user table")
        users = IdEncoder.fit(
            pd.concat([dataset.users["user_id"], interaction_users], ignore_index=True), "user")
        encoded_users = _reindex_by_code(dataset.users, "user_id", users)

    interactions = dataset.interactions.copy()
    interactions["user_id"] = users.transform(interactions["user_id"]).astype(np.int64)
    interactions["item_id"] = items.transform(interactions["item_id"]).astype(np.int64)
    encoded_items = _reindex_by_code(dataset.items, "item_id", items)
    encoded = dataclasses.replace(
        dataset, interactions=interactions, items=encoded_items, users=encoded_users)
    return encoded, IdMapping(users=users, items=items)


def _reindex_by_code(table: pd.DataFrame, column: str, encoder: IdEncoder) -> pd.DataFrame:
    """Rows placed at their code; codes absent from ``table`` get missing values."""
    codes = encoder.transform(table[column]).astype(np.int64)
    out = table.set_index(pd.Index(codes)).drop(columns=[column])
    if len(out) < len(encoder):
        # Plain int columns cannot hold the missing values of the added rows.
        out = out.astype({c: "Int64" for c in out.columns if out[c].dtype.kind in "iu"})
    out = out.reindex(pd.RangeIndex(len(encoder)))
    out.insert(0, column, np.arange(len(encoder), dtype=np.int64))
    return out.reset_index(drop=True)


def _as_raw_ids(values: Any, kind: str) -> np.ndarray:
    """Raw ids as an int64 array or an object array of str; refuses anything else."""
    arr = _to_array(values).ravel()
    if arr.dtype.kind in "iu":
        if arr.dtype == np.uint64 and arr.size and arr.max() > np.iinfo(np.int64).max:
            raise TypeError(f"{kind} ids exceed the int64 range")
        return arr.astype(np.int64)
    if arr.dtype.kind == "U":
        return arr.astype(object)
    if arr.size == 0:
        return np.empty(0, dtype=np.int64)
    if arr.dtype == object:
        inferred = pd.api.types.infer_dtype(arr, skipna=False)
        if inferred == "string":
            return arr
        if inferred == "integer":
            return arr.astype(np.int64)
        raise TypeError(f"{kind} ids must be all integers or all strings, found {inferred} "
                        f"values (missing ids?)")
    raise TypeError(f"{kind} ids must be integers or strings, got dtype {arr.dtype} "
                    f"(float ids usually mean missing values)")


def _to_array(values: Any) -> np.ndarray:
    """An array of the values without NumPy's silent conversions (``[1, "a"]`` -> strings)."""
    if isinstance(values, (pd.Series, pd.Index)):
        return values.to_numpy()
    if isinstance(values, (list, tuple)):
        arr = np.array(values, dtype=object)
        if arr.size and pd.api.types.infer_dtype(arr, skipna=False) == "integer":
            return arr.astype(np.int64)
        return arr
    return np.asarray(values)


def _plain(value: Any) -> Any:
    """NumPy scalars as Python scalars so messages read ``5``, not ``np.int64(5)``."""
    return value.item() if isinstance(value, np.generic) else value
