"""One load of a MovieLens CSV set in a fresh interpreter:
``python -m benchmarks.movielens_csv_worker TASK.json OUT_DIR`` (launched by
``harness.run_worker_process`` from ``benchmarks.movielens_csv``).

A fresh process per load, so each one pays what a user's new session pays: the imports, and the
SHA-256 of every cached file (a process remembers the digests it computed, so a second load in
the same process would skip them). The task says what to time:

* ``"load"``: ``load_movielens(name, cache_dir=..., download=False, binary_cache=...)``;
* ``"pandas"``: ``ratings.csv`` alone parsed by the library's parser (pandas' C engine);
* ``"pyarrow"``: ``ratings.csv`` alone parsed by ``pyarrow.csv`` into the same typed frame (for
  the comparison of parsers only; the library does not use pyarrow).

Writes ``OUT_DIR/result.json``: seconds for the imports and for the call, peak RSS, whether the
ratings came from the columnar cache, and a digest of what was loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import harness


def interactions_digest(frame) -> str:
    """SHA-256 over the interaction columns' names, dtypes and bytes, in order."""
    digest = hashlib.sha256()
    import numpy as np
    for column in frame.columns:
        values = np.ascontiguousarray(frame[column].to_numpy())
        digest.update(f"{column}:{values.dtype.str}:{len(values)};".encode())
        digest.update(memoryview(values).cast("B"))
    return digest.hexdigest()


def dataset_digest(dataset) -> str:
    """SHA-256 over the interactions (:func:`interactions_digest`), the catalogue (ids, titles,
    years, genres) and the genre names: equal digests, equal data sets."""
    import pandas as pd
    digest = hashlib.sha256(interactions_digest(dataset.interactions).encode())
    items = dataset.items
    digest.update(json.dumps([items["item_id"].tolist(), items["title"].tolist(),
                              [None if pd.isna(y) else int(y) for y in items["year"]],
                              [list(g) for g in items["genres"]],
                              list(dataset.genre_names)]).encode())
    return digest.hexdigest()


class _CacheHits(logging.Handler):
    """Counts the columnar cache's "Read ... from the columnar cache" records."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.hits = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.hits += "from the columnar cache" in record.getMessage()


def _load(task: dict[str, Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    from recsys_jax.data.movielens import load_movielens
    import_s = time.perf_counter() - t0
    hits = _CacheHits()
    cache_logger = logging.getLogger("recsys_jax.data.columnar_cache")
    cache_logger.addHandler(hits)
    cache_logger.setLevel(logging.INFO)
    t0 = time.perf_counter()
    dataset = load_movielens(task["name"], cache_dir=task["cache_dir"], download=False,
                             binary_cache=bool(task["binary_cache"]))
    load_s = time.perf_counter() - t0
    return {"import_s": import_s, "load_s": load_s, "from_columnar_cache": hits.hits > 0,
            "rows": len(dataset.interactions), "digest": dataset_digest(dataset),
            "interactions_digest": interactions_digest(dataset.interactions)}


def _parse_with_pandas(task: dict[str, Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    from recsys_jax.data import movielens
    import_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    # The library's own ratings parser (pandas' C engine), without the catalogue, checksums
    # or cache around it: the counterpart of the pyarrow parse.
    ratings = movielens._RatingsFile(Path(task["cache_dir"]) / task["name"] / "ratings.csv",
                                     sep=",", header=("userId", "movieId", "rating",
                                                      "timestamp"))
    frame = ratings.read(movielens.CSV_RATING_SCALE)
    load_s = time.perf_counter() - t0
    return {"import_s": import_s, "load_s": load_s, "from_columnar_cache": False,
            "rows": len(frame), "interactions_digest": interactions_digest(frame)}


def _parse_with_pyarrow(task: dict[str, Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import_s = time.perf_counter() - t0
    names = ["user_id", "item_id", "rating", "timestamp"]
    t0 = time.perf_counter()
    table = pa_csv.read_csv(
        Path(task["cache_dir"]) / task["name"] / "ratings.csv",
        read_options=pa_csv.ReadOptions(column_names=names, skip_rows=1),
        parse_options=pa_csv.ParseOptions(quote_char=False),
        convert_options=pa_csv.ConvertOptions(
            column_types={"user_id": pa.int64(), "item_id": pa.int64(),
                          "rating": pa.float64(), "timestamp": pa.int64()},
            null_values=[], strings_can_be_null=False))
    columns = {name: table.column(name).to_numpy() for name in names}
    columns["rating"] = columns["rating"].astype(np.float32)
    frame = pd.DataFrame(columns, copy=False)
    load_s = time.perf_counter() - t0
    return {"import_s": import_s, "load_s": load_s, "from_columnar_cache": False,
            "rows": len(frame), "interactions_digest": interactions_digest(frame),
            "pyarrow": pa.__version__}


def main(argv: list[str]) -> int:
    """``python -m benchmarks.movielens_csv_worker TASK.json OUT_DIR``: the worker."""
    if len(argv) != 3:
        print(main.__doc__, file=sys.stderr)
        return 2
    task = json.loads(Path(argv[1]).read_text())
    run = {"load": _load, "pandas": _parse_with_pandas,
           "pyarrow": _parse_with_pyarrow}[task["mode"]]
    result = run(task)
    result["peak_rss_mib"] = harness.peak_rss_mib()
    harness.write_worker_result(argv[2], result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
