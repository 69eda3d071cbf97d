"""FAISS indexes over item embeddings: build, move to the GPU, save, load, check, measure recall.

Scores are inner products (the two-tower embeddings are unit-norm, so this is cosine). Kinds:

* ``flat``: ``IndexFlatIP``, exact search (the default, and the reference for recall).
* ``ivf``: ``IndexIVFFlat`` with ``nlist`` cells from plain (L2) k-means, trained on at most
  ``train_size`` sampled vectors, each item in its nearest centroid's cell; a query scans the
  ``nprobe`` cells its coarse quantizer ranks first. ``quantizer`` says how cells are ranked:

  - ``"radius"`` (the default): by u·c + w·r_c, with r_c the distance from centroid c to the
    farthest item of its cell and w = ``radius_weight`` (0.5). For a unit query u, u·c + r_c
    bounds the best score in the cell (u·v = u·c + u·(v − c) ≤ u·c + ‖v − c‖), so cells are
    ranked by what they could hold, not by their average item. That is what trained two-tower
    embeddings need: 1000 users' top-100 lists on the 1M-item synthetic catalogue are made of
    214 outliers at the edge of the items' cone, and each is the farthest item of a cell of
    ordinary items (median distance/radius ratio 1.00), whose centroid says nothing about it.
    There, with 8192 cells, recall@100 is 0.977 at nprobe 512, scanning 4.4% of the items;
    L2 probing needs nprobe 2048 (21%) for 0.952. w = 0.5 was chosen on 1000 other users
    (0.4 to 0.6 within 0.002 of each other; 1, the bound itself: 0.960). The ranking lives
    in the FAISS file: the quantizer is an ``IndexPreTransform`` mapping u to [u, w] in front
    of an ``IndexFlatIP`` over the rows [c, r_c]; w is a search setting (``set_search_params``,
    ``load_index(config=)``), like ``nprobe``. Queries of norm s ≠ 1 weigh the radius as w/s
    would (the two-tower's are unit-norm).
  - ``"l2"``: by L2 distance, u·c − ‖c‖²/2 (the same cells), which favours spread-out cells of
    small centroid norm: 0.887 at nprobe 1024, 0.952 at 2048 on the catalogue above.
  - ``"ip"``: FAISS's default for inner product (spherical k-means, ranked by u·c), the first
    recipe: about half L2's recall at every nprobe there.

  Centring does not help IVF (0.10 at nprobe 32 with inner-product k-means; with L2 probing
  the query is not in the centred space: 0.002), and more cells are better for the same share
  scanned (L2 probing: 1024 cells 0.80 scanning 21%, 4096 0.90, 8192 0.95, hence
  ``default_nlist`` ≈ 8·√N). See docs/models/two_tower.md for the measurements.
* ``hnsw``: ``IndexHNSWFlat`` graph with ``hnsw_m`` links per node, ``ef_construction`` at build
  time and ``ef_search`` at query time.

Centring (``center``, on by default for HNSW): trained two-tower item embeddings sit in a narrow
cone (mean item vector of norm ~0.75 on the synthetic catalogue) while a user's best items lie at
its far edge, so the queries are "out of distribution" for the graph, which then misses most of
the exact top-100 (recall@100 0.31 at ef_search 512 on 100K items). Since u·(v − m) = u·v − u·m
and u·m is the same for every item of a query, indexing ``v − m`` (m = mean item vector) leaves
every ranking unchanged; ``CenteredIndex`` adds u·m back so scores stay true inner products.
Measured on the same 100K items: recall@100 0.98 at ef_search 512. (IVF does not gain from it.)

When FAISS sees a GPU (``faiss.get_num_gpus() > 0``) and ``use_gpu`` allows it, the index is
moved there with ``index_cpu_to_all_gpus``. Two stay on the CPU: HNSW (FAISS has no GPU HNSW)
and the radius-probed IVF (FAISS's GPU IVF accepts a CPU coarse quantizer such as its
``IndexPreTransform``, but that path has not been run here; ``quantizer="l2"`` is the GPU IVF).
Indexes are always saved from a CPU copy, to a temporary file renamed into place.

An index file is tied to the embeddings it was built from: ``save_index`` writes a sidecar
``<index>.meta.json`` with the index file's size and SHA-256, ``ntotal``, ``d``, the SHA-256 of
the float32 item table it indexes (``items_sha256``), the centring offset's SHA-256, the IVF
quantizer (``ivf_quantizer``) and the run's identity (model, dataset, split fingerprint...).
``load_index`` refuses an index whose file, offset or sidecar disagree, and (given the item
embeddings, their checksum or an identity) one built from other embeddings or another run, with
an ``IndexFileError`` naming the files; given a config, one of another kind, quantizer or
centring (``IndexMismatchError``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from recsys_jax import fileio
from recsys_jax.progress import stage

KINDS = ("flat", "ivf", "hnsw")
IVF_QUANTIZERS = ("radius", "l2", "ip")
SIDECAR_FORMAT = 1
# Rows compared when checking that an index holds a given item table (see ``check_index_holds``).
SPOT_CHECK_ROWS = 16
# A row matches when ‖stored − expected‖ ≤ this × ‖expected‖: loose enough for another backend's
# rounding (TF32 matmuls), far below the distance between two models' unit vectors (≈ 1.4).
SPOT_CHECK_TOLERANCE = 1e-2


class IndexFileError(ValueError):
    """An index file, its offset or its sidecar is missing, unreadable or inconsistent."""


class IndexMismatchError(IndexFileError):
    """An index (or its offset) does not hold the item embeddings or run it is checked against."""


def _faiss():
    import faiss  # Deferred: importing the package must not load FAISS's native library.
    return faiss


@dataclasses.dataclass(frozen=True)
class IndexConfig:
    """Which index to build and how to search it.

    Attributes:
      kind: ``flat``, ``ivf`` or ``hnsw``.
      nlist: IVF cells (default: about 8·√N, a power of two, at most N / 39).
      nprobe: IVF cells searched per query.
      train_size: most vectors IVF's k-means is trained on.
      hnsw_m: HNSW links per node.
      ef_construction, ef_search: HNSW beam widths at build and query time.
      use_gpu: ``"auto"`` (when FAISS sees a GPU), ``"never"`` or ``"always"``.
      seed: sampling seed of the IVF training vectors.
      center: index mean-centred items (default: HNSW only; see the module docstring).
      quantizer: IVF coarse quantizer: ``"radius"`` (the default: plain k-means cells probed
        by u·c + ``radius_weight``·r_c, r_c the distance from centroid c to its farthest
        item), ``"l2"`` (the same cells probed by L2 distance to the query) or ``"ip"`` (the
        first recipe, FAISS's default for inner product: spherical k-means, cells probed by
        inner product). See the module docstring; ``l2`` and ``ip`` reproduce old measurements.
      radius_weight: weight of the cell radius when probing ``"radius"`` cells (search time,
        like ``nprobe``: applied by ``set_search_params`` and ``load_index``). 1 ranks cells by
        an upper bound of their best inner product with a unit query, 0 by u·c alone.
    """

    kind: str = "flat"
    nlist: int | None = None
    nprobe: int = 32
    train_size: int = 262144
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 128
    use_gpu: str = "auto"
    seed: int = 0
    center: bool | None = None
    quantizer: str = "radius"
    radius_weight: float = 0.5

    @property
    def centered(self) -> bool:
        """Whether the index stores mean-centred items (default: HNSW only)."""
        return self.kind == "hnsw" if self.center is None else bool(self.center)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"index kind must be one of {KINDS}, got {self.kind!r}")
        if self.use_gpu not in ("auto", "never", "always"):
            raise ValueError(f"use_gpu must be auto, never or always, got {self.use_gpu!r}")
        if self.quantizer not in IVF_QUANTIZERS:
            raise ValueError(f"IVF quantizer must be one of {IVF_QUANTIZERS}, "
                             f"got {self.quantizer!r}")
        if not (np.isfinite(self.radius_weight) and self.radius_weight >= 0):
            raise ValueError(f"radius_weight must be finite and >= 0, got "
                             f"{self.radius_weight!r}")
        reason = cpu_only(self.kind, self.quantizer)
        if self.use_gpu == "always" and reason:
            raise ValueError(f"use_gpu='always' asks for a GPU index, but {reason}")

    def label(self) -> str:
        """A short description for tables, e.g. ``"ivf(nlist=4096,nprobe=32)"``."""
        suffix = "+center" if self.centered else ""
        if self.kind == "ivf":
            quantizer = "" if self.quantizer == "radius" else f",quantizer={self.quantizer}"
            if self.quantizer == "radius" and self.radius_weight != IndexConfig.radius_weight:
                quantizer = f",radius_weight={self.radius_weight:g}"
            return f"ivf(nlist={self.nlist or 'auto'},nprobe={self.nprobe}{quantizer}){suffix}"
        if self.kind == "hnsw":
            return (f"hnsw(M={self.hnsw_m},efC={self.ef_construction},efS={self.ef_search})"
                    f"{suffix}")
        return "flat" + suffix


def cpu_only(kind: str, quantizer: str) -> str | None:
    """Why an index of ``kind`` (with IVF ``quantizer``) stays on the CPU whatever
    ``use_gpu`` says, or ``None`` when FAISS can move it to a GPU."""
    if kind == "hnsw":
        return "FAISS has no GPU HNSW: use kind='flat' or kind='ivf' with quantizer='l2'"
    if kind == "ivf" and quantizer == "radius":
        return ("the radius-probed IVF stays on the CPU: use quantizer='l2' (the GPU IVF) or "
                "use_gpu='auto'")
    return None


class CenteredIndex:
    """A FAISS index over ``items − offset`` that answers inner-product queries on ``items``.

    ``search`` returns the inner index's ids and scores plus ``query · offset``, i.e. the true
    ``query · item``; ``ntotal`` and ``d`` are the inner index's.
    """

    def __init__(self, index, offset: np.ndarray):
        self.index = index
        self.offset = np.ascontiguousarray(offset, dtype=np.float32)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def d(self) -> int:
        return int(self.index.d)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, ids = self.index.search(queries, k)
        shift = (queries @ self.offset)[:, None]
        return np.where(ids >= 0, scores + shift, scores).astype(np.float32), ids


def _inner(index):
    return index.index if isinstance(index, CenteredIndex) else index


def default_nlist(num_vectors: int) -> int:
    """About 8·√N cells (a power of two; 8192 at 1M), at most N / 39 (FAISS's minimum of 39
    training points per cell when all N train).

    8·√N rather than 4·√N: on the 1M-item synthetic catalogue, 8192 L2 cells reach recall@100
    0.95 scanning 21% of the items, 4096 cells 0.90 (see docs/models/two_tower.md)."""
    target = 8 * np.sqrt(max(num_vectors, 1))
    nlist = 1 << int(np.round(np.log2(max(target, 1))))
    return int(max(1, min(nlist, num_vectors // 39 or 1)))


def as_float32_rows(vectors: np.ndarray) -> np.ndarray:
    """C-contiguous float32 ``[n, d]`` (what FAISS requires)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be 2-D [n, d], got shape {vectors.shape}")
    if not np.all(np.isfinite(vectors)):
        raise ValueError("vectors hold NaN or infinity")
    return vectors


def build_index(item_vectors: np.ndarray, config: IndexConfig = IndexConfig()):
    """A FAISS index holding ``item_vectors`` (row i = item id i), on the GPU when configured.

    Returns:
      The index (``ntotal`` = number of items, ``d`` = embedding dimension).
    """
    faiss = _faiss()
    vectors = as_float32_rows(item_vectors)
    n, d = vectors.shape
    offset = None
    if config.centered:
        offset = vectors.mean(axis=0, dtype=np.float64).astype(np.float32)
        vectors = np.ascontiguousarray(vectors - offset)
    if config.kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif config.kind == "ivf":
        nlist = config.nlist or default_nlist(n)
        # "radius" cells are the "l2" recipe's k-means cells; only their probing differs.
        index = _empty_ivf(d, nlist, "ip" if config.quantizer == "ip" else "l2")
        rng = np.random.default_rng(config.seed)
        sample = (vectors if n <= config.train_size
                  else vectors[np.sort(rng.choice(n, config.train_size, replace=False))])
        with stage(f"training the IVF quantizer ({nlist:,} lists) on {len(sample):,} items"):
            index.train(sample)
        index.nprobe = min(config.nprobe, nlist)
    else:
        index = faiss.IndexHNSWFlat(d, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = config.ef_construction
        index.hnsw.efSearch = config.ef_search
    if config.kind == "ivf" and config.quantizer == "radius":
        index = _radius_ivf(index, vectors, config.radius_weight)  # Adds the items.
    else:
        with stage(f"adding {n:,} items to a {config.kind} index"):
            index.add(vectors)
    index = to_device(index, config)
    return index if offset is None else CenteredIndex(index, offset)


def _empty_ivf(d: int, nlist: int, quantizer: str):
    """An untrained ``IndexIVFFlat`` scoring by inner product with the given coarse quantizer.

    ``"ip"``: FAISS's default for inner product (spherical k-means, ``IndexFlatIP`` probing).
    ``"l2"``: plain k-means, ``IndexFlatL2`` probing. Both are plain ``IndexIVFFlat``s that
    ``index_cpu_to_all_gpus`` copies (the GPU IVF clones whatever flat quantizer it holds).
    """
    faiss = _faiss()
    if quantizer == "ip":
        return faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.spherical = False  # FAISS turns it on for inner-product IVFs.
    return index


def _radius_ivf(trained, vectors: np.ndarray, weight: float):
    """An ``IndexIVFFlat`` holding ``vectors`` in the k-means cells of ``trained`` (an empty,
    trained L2-quantizer IVF), each item in its nearest centroid's cell as ``trained.add`` would
    put it, whose cells are probed by u·c + weight·r_c (r_c: the distance from centroid c to the
    farthest item of its cell).

    The probing lives in the coarse quantizer, so the index is one ordinary FAISS file: an
    ``IndexPreTransform`` maps the query u to [u, weight] (a ``LinearTransform`` d → d + 1 with
    bias e_{d+1}·weight) in front of an ``IndexFlatIP`` over the rows [c, r_c]. The items are
    added with their precomputed cells: adding through this quantizer would put each item in its
    best-probed cell instead of its nearest one. The transform is flagged orthonormal so that
    FAISS can reconstruct the centroids c (A^T (y - b) = c) where it needs them.
    """
    faiss = _faiss()
    from faiss.contrib.ivf_tools import add_preassigned

    nlist, d = trained.nlist, trained.d
    centroids = trained.quantizer.reconstruct_n(0, nlist)
    with stage(f"assigning {len(vectors):,} items to {nlist:,} IVF cells"):
        cells = trained.quantizer.assign(vectors, 1).ravel()
    radii = _cell_radii(vectors, centroids, cells)
    transform = faiss.LinearTransform(d, d + 1, True)
    faiss.copy_array_to_vector(np.eye(d + 1, d, dtype=np.float32).ravel(), transform.A)
    transform.is_trained = True
    transform.is_orthonormal = True  # A^T A = I; FAISS's own check only covers d_out <= d_in.
    _set_radius_weight(transform, weight)
    cells_index = faiss.IndexFlatIP(d + 1)
    cells_index.add(np.hstack([centroids, radii[:, None]]).astype(np.float32))
    index = faiss.IndexIVFFlat(faiss.IndexPreTransform(transform, cells_index), d, nlist,
                               faiss.METRIC_INNER_PRODUCT)
    index.nprobe = trained.nprobe
    with stage(f"adding {len(vectors):,} items to an ivf index"):
        add_preassigned(index, vectors, cells)
    return index


def _cell_radii(vectors: np.ndarray, centroids: np.ndarray, cells: np.ndarray,
                chunk: int = 65536) -> np.ndarray:
    """Per cell, the largest L2 distance from its centroid to one of its items (0 if empty)."""
    radii = np.zeros(len(centroids), np.float32)
    for start in range(0, len(vectors), chunk):  # Chunks: no second copy of a large table.
        rows = slice(start, start + chunk)
        distance = np.linalg.norm(vectors[rows] - centroids[cells[rows]], axis=1)
        np.maximum.at(radii, cells[rows], distance)
    return radii


def _radius_transform(index):
    """The ``LinearTransform`` in front of a radius-probed IVF's quantizer, or None."""
    faiss = _faiss()
    quantizer = faiss.downcast_index(index.quantizer)
    if not isinstance(quantizer, faiss.IndexPreTransform) or quantizer.chain.size() != 1:
        return None
    transform = faiss.downcast_VectorTransform(quantizer.chain.at(0))
    return transform if isinstance(transform, faiss.LinearTransform) else None


def _set_radius_weight(transform, weight: float) -> None:
    bias = np.zeros(transform.d_out, np.float32)
    bias[-1] = weight
    _faiss().copy_array_to_vector(bias, transform.b)


def radius_weight(index) -> float | None:
    """The radius weight a radius-probed IVF (CPU or centred) searches with; None otherwise."""
    index = _inner(to_cpu(index))
    if ivf_quantizer(index) != "radius":
        return None
    return float(_faiss().vector_to_array(_radius_transform(index).b)[-1])


def ivf_quantizer(index) -> str | None:
    """``"radius"``, ``"l2"`` or ``"ip"``: the coarse quantizer of an IVF index (CPU, GPU or
    centred); None for other kinds."""
    faiss = _faiss()
    index = _inner(to_cpu(index))
    if not isinstance(index, faiss.IndexIVF):
        return None
    if _radius_transform(index) is not None:
        return "radius"
    return "ip" if index.quantizer.metric_type == faiss.METRIC_INNER_PRODUCT else "l2"


def gpu_available() -> bool:
    """Whether FAISS was built with GPU support and sees a GPU."""
    faiss = _faiss()
    return hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0


def to_device(index, config: IndexConfig = IndexConfig()):
    """``index`` moved to all visible GPUs when ``config.use_gpu`` asks and one is visible."""
    if isinstance(index, CenteredIndex):
        return CenteredIndex(to_device(index.index, config), index.offset)
    # No GPU HNSW in FAISS; radius-probed IVF: see the module docstring (IndexConfig refuses
    # use_gpu='always' for both).
    if config.use_gpu == "never" or cpu_only(config.kind, ivf_quantizer(index) or ""):
        return index
    if not gpu_available():
        if config.use_gpu == "always":
            raise RuntimeError("use_gpu='always' but FAISS sees no GPU")
        return index
    return _faiss().index_cpu_to_all_gpus(index)


def to_cpu(index):
    """A CPU copy of a GPU index (the index itself when it is already on the CPU)."""
    faiss = _faiss()
    if isinstance(index, CenteredIndex):
        return CenteredIndex(to_cpu(index.index), index.offset)
    if hasattr(faiss, "index_gpu_to_cpu") and "Gpu" in type(index).__name__:
        return faiss.index_gpu_to_cpu(index)
    return index


def check_index(index, num_items: int, dim: int) -> None:
    """Raises ``ValueError`` unless ``index`` holds ``num_items`` vectors of dimension ``dim``."""
    if index.ntotal != num_items or index.d != dim:
        raise ValueError(f"index holds {index.ntotal} vectors of dimension {index.d}; the "
                         f"catalogue has {num_items} items of dimension {dim}")


def items_sha256(items: np.ndarray) -> str:
    """SHA-256 (hex) of an item table as the index sees it: float32, little-endian, C order.

    Raises:
      ValueError: when ``items`` is not a finite 2-D array.
    """
    table = np.ascontiguousarray(as_float32_rows(items), dtype="<f4")
    return hashlib.sha256(table.tobytes()).hexdigest()


def _array_sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, dtype="<f4").tobytes()).hexdigest()


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def sidecar_path(path: str | os.PathLike) -> Path:
    """``<path>.meta.json``: the sidecar ``save_index`` writes beside an index file."""
    return Path(str(path) + ".meta.json")


def offset_path(path: str | os.PathLike) -> Path:
    """``<path>.offset.npy``: the centring offset of a ``CenteredIndex`` saved at ``path``."""
    return Path(str(path) + ".offset.npy")


def check_index_holds(index, items: np.ndarray, *, what: str = "the item table") -> bool:
    """Checks that ``index`` stores ``items`` (row i = item i) on up to ``SPOT_CHECK_ROWS`` rows
    spread over the catalogue, read back with ``reconstruct``.

    Returns:
      True when checked; False when the index cannot reconstruct vectors (IVF without a
      direct map: the sidecar's checksum is then the only tie).

    Raises:
      IndexMismatchError: when a stored row differs from the same row of ``items``.
    """
    items = np.asarray(items, np.float32)
    check_index(index, len(items), items.shape[1])
    if len(items) == 0:
        return True
    rows = np.unique(np.linspace(0, len(items) - 1, min(SPOT_CHECK_ROWS, len(items)))
                     .astype(np.int64))
    try:
        stored = np.asarray(_inner(index).reconstruct_batch(rows), np.float32)
    except RuntimeError:  # FAISS: this index keeps no id -> vector map.
        return False
    if isinstance(index, CenteredIndex):
        stored = stored + index.offset
    expected = items[rows]
    error = np.linalg.norm(stored - expected, axis=1)
    bad = error > SPOT_CHECK_TOLERANCE * np.maximum(np.linalg.norm(expected, axis=1), 1e-6)
    if bad.any():
        raise IndexMismatchError(
            f"the index does not hold {what}: item {int(rows[bad][0])}'s stored vector differs "
            f"by {float(error[bad][0]):.3g} (L2); the index was built from other embeddings "
            f"(another model or run). Rebuild it from these embeddings with build_index")
    return True


def save_index(index, path: str | os.PathLike, *, items: np.ndarray,
               identity: Mapping[str, Any] | None = None) -> None:
    """Writes ``index`` (a CPU copy) to ``path`` atomically, with its sidecar.

    Order: the old sidecar is removed, then a ``CenteredIndex``'s offset goes to
    ``<path>.offset.npy`` (a stale one is removed), then the index, then the sidecar
    ``<path>.meta.json``; an interrupted save leaves files that ``load_index`` refuses.

    Args:
      index: the index (CPU, GPU or ``CenteredIndex``).
      path: the index file.
      items: the float32 ``[ntotal, d]`` item table the index was built from; its SHA-256 goes
        into the sidecar (rows are spot-checked against the index first).
      identity: the run's identity (e.g. ``model``, ``dataset``, ``split_fingerprint``),
        JSON-serialisable; ``load_index(..., identity=)`` compares it.

    Raises:
      ValueError: when ``items`` does not match the index's size or contents.
    """
    path = Path(path)
    cpu = to_cpu(index)
    items = as_float32_rows(items)
    check_index_holds(cpu, items, what="the item table passed to save_index")
    sidecar = sidecar_path(path)
    sidecar.unlink(missing_ok=True)
    offset_file = offset_path(path)
    offset_sha = None
    if isinstance(cpu, CenteredIndex):
        fileio.atomic_save_npy(offset_file, cpu.offset)
        offset_sha = _array_sha256(cpu.offset)
    else:
        offset_file.unlink(missing_ok=True)  # A stale offset would shift a new, uncentred index.
    with fileio.atomic_path(path, suffix=".faiss") as tmp:
        _faiss().write_index(_inner(cpu), str(tmp))
        size, file_sha = tmp.stat().st_size, _file_sha256(tmp)
    fileio.atomic_write_json(sidecar, {
        "format": SIDECAR_FORMAT, "index_file": path.name, "index_bytes": size,
        "index_sha256": file_sha, "index_type": type(_inner(cpu)).__name__,
        "ntotal": int(cpu.ntotal), "d": int(cpu.d), "items_sha256": items_sha256(items),
        "centered": offset_sha is not None, "offset_sha256": offset_sha,
        "ivf_quantizer": ivf_quantizer(cpu), "identity": dict(identity or {})})


def read_sidecar(path: str | os.PathLike) -> dict[str, Any]:
    """The sidecar of the index file ``path``.

    Raises:
      IndexFileError: when it is missing, not JSON or lacks a field.
    """
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        raise IndexFileError(
            f"{sidecar} is missing: the index {path} cannot be tied to the embeddings it was "
            f"built from. Rebuild and save it: save_index(build_index(items, config), "
            f"{str(path)!r}, items=items, identity=...)")
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IndexFileError(f"{sidecar}: unreadable index sidecar ({e}); rebuild the index "
                             f"with save_index") from None
    required = ("format", "index_bytes", "index_sha256", "ntotal", "d", "items_sha256",
                "centered", "offset_sha256", "identity")
    missing = [key for key in required if not isinstance(meta, dict) or key not in meta]
    if missing or meta["format"] != SIDECAR_FORMAT:
        raise IndexFileError(f"{sidecar}: not an index sidecar of format {SIDECAR_FORMAT} "
                             f"(missing {missing or 'nothing'}, format "
                             f"{meta.get('format') if isinstance(meta, dict) else None}); "
                             f"rebuild the index with save_index")
    return meta


def _check_file(path: Path, meta: Mapping[str, Any]) -> None:
    size = path.stat().st_size
    if size != meta["index_bytes"]:
        problem = f"{size:,} bytes, its sidecar records {meta['index_bytes']:,}"
    elif _file_sha256(path) != meta["index_sha256"]:
        problem = "its SHA-256 differs from the one its sidecar records"
    else:
        return
    raise IndexFileError(f"{path} is truncated or changed since it was saved ({problem}; "
                         f"sidecar {sidecar_path(path)}); rebuild the index with save_index")


def _load_offset(path: Path, meta: Mapping[str, Any]) -> np.ndarray | None:
    offset_file = offset_path(path)
    if not meta["centered"]:
        if offset_file.exists():
            raise IndexMismatchError(
                f"stale offset {offset_file}: the sidecar {sidecar_path(path)} records an "
                f"uncentred index {path}; delete the offset file or re-save the index")
        return None
    if not offset_file.is_file():
        raise IndexFileError(f"{offset_file} is missing: the sidecar {sidecar_path(path)} "
                             f"records a centred index {path}; re-save the index")
    try:
        offset = fileio.load_npy(offset_file)
    except (OSError, ValueError, EOFError) as e:
        raise IndexFileError(f"{offset_file}: unreadable centring offset ({e}); re-save the "
                             f"index {path}") from None
    if (offset.shape != (meta["d"],) or offset.dtype != np.float32
            or _array_sha256(offset) != meta["offset_sha256"]):
        raise IndexMismatchError(
            f"stale offset {offset_file} ({offset.dtype} {offset.shape}): it is not the offset "
            f"the sidecar {sidecar_path(path)} records for {path} (float32 ({meta['d']},), "
            f"another SHA-256); re-save the index")
    return offset


def _read_faiss(path: Path):
    try:
        return _faiss().read_index(str(path))
    except RuntimeError:  # FAISS's message is a C++ assertion; say what it means instead.
        raise IndexFileError(f"{path}: not a readable FAISS index (truncated or another "
                             f"format); rebuild it with save_index") from None


def _check_items(path: Path, meta: Mapping[str, Any], items: np.ndarray | str | os.PathLike
                 | None, items_sha: str | None) -> None:
    if items is not None:
        name = "the given item embeddings"
        if isinstance(items, (str, os.PathLike)):
            name = str(items)
            try:
                items = fileio.load_npy(items)
            except (OSError, ValueError, EOFError) as e:
                raise IndexFileError(f"{name}: unreadable item embeddings ({e})") from None
        items = np.asarray(items)
        if items.ndim != 2 or items.shape != (meta["ntotal"], meta["d"]):
            raise IndexMismatchError(
                f"{path} indexes {meta['ntotal']} items of dimension {meta['d']}, {name} has "
                f"shape {items.shape}; use the embeddings the index was built from or rebuild it")
        items_sha = items_sha256(items)
    else:
        name = "the given checksum"
    if items_sha is not None and items_sha != meta["items_sha256"]:
        raise IndexMismatchError(
            f"{path} was built from other item embeddings than {name} (SHA-256 "
            f"{items_sha[:12]}…, its sidecar {sidecar_path(path)} records "
            f"{meta['items_sha256'][:12]}…): the index and the embeddings come from different "
            f"runs or models. Rebuild the index from these embeddings with save_index")


def _check_identity(path: Path, meta: Mapping[str, Any],
                    identity: Mapping[str, Any] | None) -> None:
    if not identity:
        return
    recorded = meta["identity"]
    differ = {key: (recorded.get(key, "<absent>"), value) for key, value in identity.items()
              if recorded.get(key, "<absent>") != fileio.json_safe(value)}
    if differ:
        details = "; ".join(f"{key}: index {old!r}, expected {new!r}"
                            for key, (old, new) in sorted(differ.items()))
        raise IndexMismatchError(f"{path} belongs to another run ({details}; from "
                                 f"{sidecar_path(path)}); rebuild the index for this run")


def _check_recipe(path: Path, meta: Mapping[str, Any], index, config: IndexConfig) -> None:
    # The file's kind and IVF quantizer must be the config's: a search tuned for one recipe
    # (nprobe, ef_search) says nothing about another's recall. The quantizer is read from the
    # FAISS file itself, so sidecars written before it was recorded are checked too.
    faiss = _faiss()
    inner = _inner(index)
    kind = ("ivf" if isinstance(inner, faiss.IndexIVF) else
            "hnsw" if isinstance(inner, faiss.IndexHNSW) else "flat")
    found = kind + (f" (quantizer {ivf_quantizer(index)})" if kind == "ivf" else "")
    wanted = config.kind + (f" (quantizer {config.quantizer})" if config.kind == "ivf" else "")
    if found != wanted:
        raise IndexMismatchError(
            f"{path} is a {found} index (sidecar {sidecar_path(path)}), the config asks for "
            f"{wanted}; rebuild the index with this config or set index.kind/quantizer to "
            f"match the file")
    if meta["centered"] != config.centered:
        raise IndexMismatchError(
            f"{path} is {'' if meta['centered'] else 'not '}centred (sidecar "
            f"{sidecar_path(path)}), the config asks for center={config.centered}; rebuild the "
            f"index with this config")


def load_index(path: str | os.PathLike, *, items: np.ndarray | str | os.PathLike | None = None,
               items_sha256: str | None = None, identity: Mapping[str, Any] | None = None,
               num_items: int | None = None, dim: int | None = None,
               config: IndexConfig | None = None):
    """Reads an index written by ``save_index`` and checks it against its sidecar.

    Always checked: the sidecar exists and parses; the index file's size and SHA-256; its
    ``ntotal``/``d``; the offset file (present exactly when the index is centred, same SHA-256).

    Args:
      path: the index file.
      items: the item embeddings (array or ``.npy`` path) the index must have been built from.
      items_sha256: their checksum (``items_sha256(items)``) instead of the table.
      identity: run identity keys that must equal the sidecar's.
      num_items, dim: expected size (the catalogue's).
      config: checks that the file is the index ``config`` builds (kind, IVF quantizer,
        centring), then moves it to the GPU per ``config`` and applies its search settings.

    Raises:
      IndexFileError: missing, truncated or unreadable files (named in the message).
      IndexMismatchError: another item table, offset, identity; ``ValueError``: another size.
    """
    path = Path(path)
    if not path.is_file():
        raise IndexFileError(f"{path}: no such index file")
    meta = read_sidecar(path)
    _check_file(path, meta)
    offset = _load_offset(path, meta)
    index = _read_faiss(path)
    if index.ntotal != meta["ntotal"] or index.d != meta["d"]:
        raise IndexMismatchError(f"{path} holds {index.ntotal} vectors of dimension {index.d}, "
                                 f"its sidecar records {meta['ntotal']} of {meta['d']}")
    if offset is not None:
        index = CenteredIndex(index, offset)
    if num_items is not None or dim is not None:
        check_index(index, index.ntotal if num_items is None else num_items,
                    index.d if dim is None else dim)
    _check_items(path, meta, items, items_sha256)
    _check_identity(path, meta, identity)
    if config is not None:
        _check_recipe(path, meta, index, config)
        set_search_params(index, config)
        index = to_device(index, config)
    return index


def set_search_params(index, config: IndexConfig) -> None:
    """Applies ``nprobe`` and (radius-probed IVF) ``radius_weight``, or ``ef_search`` (HNSW), of
    ``config`` to ``index``."""
    faiss = _faiss()
    index = _inner(index)
    if "Gpu" in type(index).__name__:
        if "IVF" in type(index).__name__:
            faiss.GpuParameterSpace().set_index_parameter(index, "nprobe", config.nprobe)
        return
    if isinstance(index, faiss.IndexIVF):
        index.nprobe = min(config.nprobe, index.nlist)
        transform = _radius_transform(index)
        if transform is not None:
            _set_radius_weight(transform, config.radius_weight)
    elif isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = config.ef_search


def search(index, queries: np.ndarray, k: int, *,
           num_threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(scores [n, k] float32, ids [n, k] int64)``; ids are -1 where fewer than k exist.

    ``num_threads`` caps FAISS's OpenMP threads for this call. One query gains nothing from
    several threads and, on a busy machine, loses a lot: measured on the 2-core development
    machine, a single exact search over 20K items took 0.13 ms with one thread and 20 ms with
    two (threads waiting on each other), so serving single queries uses 1.
    """
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    queries = as_float32_rows(queries)
    if queries.shape[1] != index.d:
        raise ValueError(f"queries have dimension {queries.shape[1]}, the index {index.d}")
    if num_threads is None:
        return index.search(queries, int(k))
    faiss = _faiss()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(int(num_threads))
    try:
        return index.search(queries, int(k))
    finally:
        faiss.omp_set_num_threads(before)


def recall_at_k(approximate_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Mean over queries of |approx top-K ∩ exact top-K| / |exact top-K| (-1 padding, where
    the catalogue has fewer than K items, is not counted)."""
    approximate_ids, exact_ids = np.asarray(approximate_ids), np.asarray(exact_ids)
    if approximate_ids.shape != exact_ids.shape:
        raise ValueError(f"shapes differ: {approximate_ids.shape} vs {exact_ids.shape}")
    recalls = [len(np.intersect1d(a[a >= 0], e[e >= 0])) / max(int((e >= 0).sum()), 1)
               for a, e in zip(approximate_ids, exact_ids)]
    return float(np.mean(recalls)) if recalls else float("nan")


def index_memory_bytes(index) -> int:
    """Bytes of the serialised (CPU) index, a close measure of its memory footprint."""
    extra = index.offset.nbytes if isinstance(index, CenteredIndex) else 0
    return int(_faiss().serialize_index(_inner(to_cpu(index))).nbytes) + extra
