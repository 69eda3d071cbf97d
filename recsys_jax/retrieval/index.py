"""FAISS indexes over item embeddings: build, move to the GPU, save, load, check, measure recall.

Scores are inner products (the two-tower embeddings are unit-norm, so this is cosine). Kinds:

* ``flat``: ``IndexFlatIP``, exact search (the default, and the reference for recall).
* ``ivf``: ``IndexIVFFlat`` with ``nlist`` k-means cells (trained on at most
  ``train_size`` sampled vectors), searching ``nprobe`` cells.
* ``hnsw``: ``IndexHNSWFlat`` graph with ``hnsw_m`` links per node, ``ef_construction`` at build
  time and ``ef_search`` at query time.

Centring (``center``, on by default for HNSW): trained two-tower item embeddings sit in a narrow
cone (mean item vector of norm ~0.75 on the synthetic catalogue) while a user's best items lie at
its far edge, so the queries are "out of distribution" for the graph, which then misses most of
the exact top-100 (recall@100 0.31 at ef_search 512 on 100K items). Since u·(v − m) = u·v − u·m
and u·m is the same for every item of a query, indexing ``v − m`` (m = mean item vector) leaves
every ranking unchanged; ``CenteredIndex`` adds u·m back so scores stay true inner products.
Measured on the same 100K items: recall@100 0.98 at ef_search 512. (IVF did not gain from it.)

When FAISS sees a GPU (``faiss.get_num_gpus() > 0``) and ``use_gpu`` allows it, the index is
moved there with ``index_cpu_to_all_gpus`` (FAISS has no GPU HNSW: that kind stays on the CPU).
Indexes are always saved from a CPU copy, to a temporary file renamed into place.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from recsys_jax import fileio
from recsys_jax.progress import stage

KINDS = ("flat", "ivf", "hnsw")


def _faiss():
    import faiss  # Deferred: importing the package must not load FAISS's native library.
    return faiss


@dataclasses.dataclass(frozen=True)
class IndexConfig:
    """Which index to build and how to search it.

    Attributes:
      kind: ``flat``, ``ivf`` or ``hnsw``.
      nlist: IVF cells (default: about 4·√N, a power of two, at most N / 39).
      nprobe: IVF cells searched per query.
      train_size: most vectors IVF's k-means is trained on.
      hnsw_m: HNSW links per node.
      ef_construction, ef_search: HNSW beam widths at build and query time.
      use_gpu: ``"auto"`` (when FAISS sees a GPU), ``"never"`` or ``"always"``.
      seed: sampling seed of the IVF training vectors.
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

    @property
    def centered(self) -> bool:
        """Whether the index stores mean-centred items (default: HNSW only)."""
        return self.kind == "hnsw" if self.center is None else bool(self.center)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"index kind must be one of {KINDS}, got {self.kind!r}")
        if self.use_gpu not in ("auto", "never", "always"):
            raise ValueError(f"use_gpu must be auto, never or always, got {self.use_gpu!r}")

    def label(self) -> str:
        """A short description for tables, e.g. ``"ivf(nlist=4096,nprobe=32)"``."""
        suffix = "+center" if self.centered else ""
        if self.kind == "ivf":
            return f"ivf(nlist={self.nlist or 'auto'},nprobe={self.nprobe}){suffix}"
        if self.kind == "hnsw":
            return (f"hnsw(M={self.hnsw_m},efC={self.ef_construction},efS={self.ef_search})"
                    f"{suffix}")
        return "flat" + suffix


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
    """About 4·√N cells (a power of two), with at least 39 training points per cell."""
    target = 4 * np.sqrt(max(num_vectors, 1))
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
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
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
    with stage(f"adding {n:,} items to a {config.kind} index"):
        index.add(vectors)
    index = to_device(index, config)
    return index if offset is None else CenteredIndex(index, offset)


def gpu_available() -> bool:
    """Whether FAISS was built with GPU support and sees a GPU."""
    faiss = _faiss()
    return hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0


def to_device(index, config: IndexConfig = IndexConfig()):
    """``index`` moved to all visible GPUs when ``config.use_gpu`` asks and one is visible."""
    if isinstance(index, CenteredIndex):
        return CenteredIndex(to_device(index.index, config), index.offset)
    if config.use_gpu == "never" or config.kind == "hnsw":
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


def save_index(index, path: str | os.PathLike) -> None:
    """Writes ``index`` (a CPU copy) to ``path`` atomically; a ``CenteredIndex`` also writes its
    offset to ``<path>.offset.npy`` (first, so a complete index file implies its offset)."""
    offset_path = Path(str(path) + ".offset.npy")
    if isinstance(index, CenteredIndex):
        fileio.atomic_save_npy(offset_path, index.offset)
    elif offset_path.exists():
        offset_path.unlink()  # A stale offset would shift a new, uncentred index.
    with fileio.atomic_path(path, suffix=".faiss") as tmp:
        _faiss().write_index(_inner(to_cpu(index)), str(tmp))


def load_index(path: str | os.PathLike, *, num_items: int | None = None,
               dim: int | None = None, config: IndexConfig | None = None):
    """Reads an index written by ``save_index``; checks its size when ``num_items``/``dim`` are
    given and moves it to the GPU per ``config`` (search settings of ``config`` are applied)."""
    faiss = _faiss()
    index = faiss.read_index(str(Path(path)))
    offset_path = Path(str(path) + ".offset.npy")
    if offset_path.exists():
        index = CenteredIndex(index, fileio.load_npy(offset_path))
    if num_items is not None or dim is not None:
        check_index(index, index.ntotal if num_items is None else num_items,
                    index.d if dim is None else dim)
    if config is not None:
        set_search_params(index, config)
        index = to_device(index, config)
    return index


def set_search_params(index, config: IndexConfig) -> None:
    """Applies ``nprobe`` (IVF) or ``ef_search`` (HNSW) of ``config`` to ``index``."""
    faiss = _faiss()
    index = _inner(index)
    if "Gpu" in type(index).__name__:
        if "IVF" in type(index).__name__:
            faiss.GpuParameterSpace().set_index_parameter(index, "nprobe", config.nprobe)
        return
    if isinstance(index, faiss.IndexIVF):
        index.nprobe = min(config.nprobe, index.nlist)
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
