r"""Generates a synthetic ratings data set and prints how long it took, peak memory and its stats.

Usage:
  python experiments/generate_synthetic.py  # 10M ratings, 200K users, 1M items
  python experiments/generate_synthetic.py --num_users=943 --num_items=1682 \
      --num_interactions=100000 --seed=1 --stats_json=/tmp/synthetic_stats.json

Wall time depends on what else the machine runs; CPU time (this process, all threads) less so.
Peak memory is the process's peak resident set size (``getrusage``), read once right after
generation (so it covers imports plus generation) and again after the statistics.
"""

from __future__ import annotations

import resource
import time

from absl import app, flags

from recsys_jax.console import quiet_startup
from recsys_jax.data import stats, synthetic
from recsys_jax.fileio import atomic_write_json

_NUM_USERS = flags.DEFINE_integer("num_users", 200_000, "Users.", lower_bound=1)
_NUM_ITEMS = flags.DEFINE_integer("num_items", 1_000_000, "Catalogue size.", lower_bound=1)
_NUM_INTERACTIONS = flags.DEFINE_integer("num_interactions", 10_000_000, "Ratings to draw.",
                                         lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")
_POPULARITY_EXPONENT = flags.DEFINE_float("popularity_exponent", 1.0,
                                          "Zipf exponent of item popularity.", lower_bound=0.0)
_STATS_JSON = flags.DEFINE_string("stats_json", None, "Where to save the statistics as JSON.")


def _peak_rss_mib() -> float:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str]) -> None:
    quiet_startup()
    del argv
    rss_before = _peak_rss_mib()
    start, start_cpu = time.perf_counter(), time.process_time()
    dataset, truth = synthetic.generate_synthetic_with_truth(
        _NUM_USERS.value, _NUM_ITEMS.value, _NUM_INTERACTIONS.value, seed=_SEED.value,
        popularity_exponent=_POPULARITY_EXPONENT.value)
    generate_s, generate_cpu_s = time.perf_counter() - start, time.process_time() - start_cpu
    rss_generated = _peak_rss_mib()

    start = time.perf_counter()
    summary = stats.describe_dataset(dataset)
    describe_s = time.perf_counter() - start

    print(stats.format_stats(summary))
    print(f"Source: {dataset.source}")
    print(f"Repeated pairs left after redrawing: {truth.num_repeated_pairs}")
    print(f"Generation: {generate_s:.1f} s wall ({generate_cpu_s:.1f} s CPU), "
          f"peak RSS {rss_generated:,.0f} MiB ({rss_before:,.0f} MiB after imports)")
    print(f"Statistics: {describe_s:.1f} s, peak RSS {_peak_rss_mib():,.0f} MiB")
    if _STATS_JSON.value:
        atomic_write_json(_STATS_JSON.value, summary.to_dict())
        print(f"Saved statistics to {_STATS_JSON.value}")


if __name__ == "__main__":
    app.run(main)
