r"""Times loading an ML-20M-sized ``ratings.csv``: the first load (parse, then store the binary
columnar cache), a cached load, and parsing every time.

Usage:
  python -m benchmarks.movielens_csv --output_dir=workdirs/movielens_csv
  python -m benchmarks.movielens_csv --num_users=2000 --num_items=500 --num_ratings=50000 \
      --name=ml-latest-small --repetitions=1 --output_dir=/tmp/movielens_csv

GroupLens may be out of reach, so the files are generated
(``recsys_jax.data.movielens_synthetic``, ML-20M's shape by default: 138,493 users, 26,744
movies, 20,000,263 ratings) into a temporary data cache laid out as a download leaves it
(``<cache>/<name>/`` with its manifest), and loaded with ``load_movielens(name, cache_dir=...,
download=False)``. Every load runs in a fresh interpreter (``benchmarks.movielens_csv_worker``),
so each pays the imports and the SHA-256 checks a new session pays; the files are in the page
cache (just written), as after a download.

Timed, each ``--repetitions`` times (median reported; ``--variants`` picks some):

* ``first_load``: an empty columnar cache, so ``ratings.csv`` is parsed and the cache written;
* ``cached_load``: the ratings read back from the columnar cache;
* ``no_binary_cache``: ``binary_cache=False``, the CSV parsed on every load;
* ``pandas_parse`` and ``pyarrow_parse`` (when pyarrow is installed): ``ratings.csv`` alone
  parsed into the same typed frame by the library's parser (pandas' C engine) and by
  ``pyarrow.csv`` (multi-threaded), for the choice of parser.

Every load must give the same data set as the generator drew (a digest of interactions,
catalogue and genre names; for pyarrow, of the interactions): a mismatch stops the benchmark.
Prints a Markdown table and writes ``movielens_csv.{json,md}`` to ``--output_dir``.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from absl import app, flags

from benchmarks import harness
from benchmarks.movielens_csv_worker import dataset_digest, interactions_digest
from recsys_jax.console import quiet_startup
from recsys_jax.data import cache_manifest, columnar_cache
from recsys_jax.data.movielens_synthetic import (
    ML20M_SHAPE,
    generate_movielens_csv_dataset,
    write_movielens_csv,
)

VARIANTS = {  # variant -> (worker mode, binary_cache, empty the columnar cache first)
    "first_load": ("load", True, True),
    "cached_load": ("load", True, False),
    "no_binary_cache": ("load", False, False),
    "pandas_parse": ("pandas", False, False),
    "pyarrow_parse": ("pyarrow", False, False),
}
LABELS = {"first_load": "first load (parse + write the binary cache)",
          "cached_load": "cached load (binary cache)",
          "no_binary_cache": "`binary_cache=False` (parse every time)",
          "pandas_parse": "pandas C engine parse of ratings.csv alone (the library's parser)",
          "pyarrow_parse": "`pyarrow.csv` parse of ratings.csv alone (comparison)"}


_NUM_USERS = flags.DEFINE_integer("num_users", ML20M_SHAPE["num_users"], "Users.")
_NUM_ITEMS = flags.DEFINE_integer("num_items", ML20M_SHAPE["num_items"], "Movies.")
_NUM_RATINGS = flags.DEFINE_integer("num_ratings", ML20M_SHAPE["num_interactions"], "Ratings.")
_NAME = flags.DEFINE_enum("name", "ml-20m", ["ml-20m", "ml-25m", "ml-latest-small"],
                          "Data set name the files are loaded as (ml-20m and ml-25m require "
                          "their published rating counts; use ml-latest-small for other sizes).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the generated data set.")
_REPETITIONS = flags.DEFINE_integer("repetitions", 3, "Loads per variant (median reported).")
_VARIANTS = flags.DEFINE_list("variants", list(VARIANTS), "Variants to time (cached_load "
                               "needs first_load before it); pyarrow_parse is skipped when "
                               "pyarrow is not installed.")
_WORK_DIR = flags.DEFINE_string("work_dir", None, "Where the temporary data cache is made "
                                "(default: the system's temporary folder). Needs ~2 GB free "
                                "at ML-20M's size.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "workdirs/movielens_csv", "Output directory.")

def _pyarrow_installed() -> bool:
    return "pyarrow" in harness.package_versions(("pyarrow",))


def generate(cache: Path, name: str, seed: int) -> dict[str, Any]:
    """Writes the generated set into ``cache/name`` with a manifest, as a download would."""
    t0 = time.perf_counter()
    dataset = generate_movielens_csv_dataset(_NUM_USERS.value, _NUM_ITEMS.value,
                                             _NUM_RATINGS.value, seed=seed, name=name)
    generate_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    directory = write_movielens_csv(dataset, cache / name)
    cache_manifest.write_manifest(directory, "benchmarks.movielens_csv (generated)",
                                  f"seed:{seed}")
    write_s = time.perf_counter() - t0
    return {"num_users": _NUM_USERS.value, "num_items": _NUM_ITEMS.value,
            "num_ratings": len(dataset.interactions), "seed": seed,
            "ratings_csv_bytes": (directory / "ratings.csv").stat().st_size,
            "movies_csv_bytes": (directory / "movies.csv").stat().st_size,
            "generate_s": generate_s, "write_s": write_s,
            "digest": dataset_digest(dataset),
            "interactions_digest": interactions_digest(dataset.interactions)}


def run_variant(variant: str, cache: Path, name: str, repetitions: int,
                expected: Mapping[str, str], work: Path) -> dict[str, Any]:
    """Runs one variant ``repetitions`` times, each in a fresh worker; checks every result."""
    mode, binary_cache, empty_first = VARIANTS[variant]
    runs = []
    for repetition in range(repetitions):
        if empty_first:
            shutil.rmtree(cache / columnar_cache.CACHE_SUBDIR, ignore_errors=True)
        task = {"mode": mode, "name": name, "cache_dir": str(cache),
                "binary_cache": binary_cache, "threads": harness.default_threads()}
        t0 = time.perf_counter()
        result = harness.run_worker_process(task, work / f"{variant}-{repetition}",
                                            module="benchmarks.movielens_csv_worker")
        result["process_s"] = time.perf_counter() - t0
        runs.append(result)
        key = "digest" if mode == "load" else "interactions_digest"
        if result[key] != expected[key]:
            raise RuntimeError(f"{variant} (run {repetition + 1}) loaded other data than the "
                               "generator wrote")
        if result["from_columnar_cache"] != (variant == "cached_load"):
            raise RuntimeError(f"{variant} (run {repetition + 1}): from_columnar_cache is "
                               f"{result['from_columnar_cache']}")
    return {"load_s": statistics.median(r["load_s"] for r in runs),
            "import_s": statistics.median(r["import_s"] for r in runs),
            "process_s": statistics.median(r["process_s"] for r in runs),
            "peak_rss_mib": harness.median([r["peak_rss_mib"] for r in runs]),
            "load_s_all": [r["load_s"] for r in runs], "runs": runs}


def format_markdown(result: Mapping[str, Any]) -> str:
    """The results as a Markdown table with its setup line."""
    env, data = result["environment"], result["data"]
    lines = [f"{data['num_ratings']:,} ratings ({data['num_users']:,} users, "
             f"{data['num_items']:,} movies), ratings.csv {data['ratings_csv_bytes'] / 2**20:,.0f}"
             f" MiB, loaded as {result['name']}; median of {result['repetitions']} fresh "
             f"processes; {harness.cpu_line(env)}, {env['cpu_count']} CPUs; pandas "
             f"{env['versions'].get('pandas', '?')}, numpy {env['versions'].get('numpy', '?')}.",
             "",
             "| load | call (s) | imports (s) | process (s) | peak RSS (MiB) | each call (s) |",
             "|---|---:|---:|---:|---:|---|"]
    for variant, r in result["variants"].items():
        each = ", ".join(f"{s:.2f}" for s in r["load_s_all"])
        lines.append(f"| {LABELS[variant]} | {r['load_s']:.2f} | {r['import_s']:.2f} | "
                     f"{r['process_s']:.2f} | {harness.fmt_mib(r['peak_rss_mib'])} | {each} |")
    lines += ["", f"Generating the files took {data['generate_s']:.1f} s and writing them "
              f"{data['write_s']:.1f} s. Every load gave the generated data set."]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    quiet_startup()
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if min(_NUM_USERS.value, _NUM_ITEMS.value, _REPETITIONS.value) < 1:
        raise app.UsageError("--num_users, --num_items and --repetitions must be positive")
    unknown = sorted(set(_VARIANTS.value) - set(VARIANTS))
    if unknown:
        raise app.UsageError(f"unknown --variants {unknown}; choose from {list(VARIANTS)}")
    if "cached_load" in _VARIANTS.value and "first_load" not in _VARIANTS.value:
        raise app.UsageError("--variants: cached_load needs first_load (which fills the cache)")
    variants = [v for v in VARIANTS if v in _VARIANTS.value
                and (v != "pyarrow_parse" or _pyarrow_installed())]
    with tempfile.TemporaryDirectory(prefix="movielens_csv.", dir=_WORK_DIR.value) as tmp:
        cache, work = Path(tmp) / "cache", Path(tmp) / "workers"
        data = generate(cache, _NAME.value, _SEED.value)
        print(f"Wrote {data['num_ratings']:,} ratings in {data['write_s']:.1f} s", flush=True)
        results = {}
        for variant in variants:
            results[variant] = run_variant(variant, cache, _NAME.value, _REPETITIONS.value,
                                           data, work)
            print(f"{variant}: {results[variant]['load_s']:.2f} s", flush=True)
    env = harness.environment()
    env["versions"].update(harness.package_versions(("pandas", "pyarrow")))
    result = {"name": _NAME.value, "repetitions": _REPETITIONS.value, "data": data,
              "variants": results, "environment": env}
    markdown = format_markdown(result)
    print(markdown)
    harness.write_results(_OUTPUT_DIR.value, "movielens_csv", result, markdown)


if __name__ == "__main__":
    app.run(main)
