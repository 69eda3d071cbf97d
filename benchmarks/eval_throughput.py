r"""Full-ranking evaluation throughput on synthetic embeddings, compile time kept apart.

Usage:
  python -m benchmarks.eval_throughput
  python -m benchmarks.eval_throughput --sizes=100000x50000x64 --repeats=1 \
      --output=workdirs/benchmark_eval.json
  python -m benchmarks.eval_throughput --sizes=138493x26744x64 --train_per_user=115 \
      --k=10,100 --selection=top_k,blocked --repeats=3

Each size is users x items x embedding dimension. Every user has --train_per_user excluded
training items and one held-out item; the timed evaluation is the suite's own
``evaluate_ranking`` (chunked top-K on the device, then ranking and beyond-accuracy metrics
at every K); building the target from the (user, item) pairs is timed once, apart.
--selection compares ``full_ranking``'s selections side by side (they take turns in every
repeat). Prints the CPU and a Markdown table (best and median repeat, and the median CPU
seconds: every thread's, steadier than wall time on a shared machine); --output also saves the
figures (with the environment) as JSON.
"""

from __future__ import annotations

from absl import app, flags

from benchmarks import harness
from benchmarks.eval_problem import benchmark_full_ranking
from recsys_jax.console import quiet_startup

_SIZES = flags.DEFINE_list("sizes", ["943x1682x64", "100000x50000x64"],
                           "users x items x dim per benchmark (ML-100K size, then 100K x 50K).")
_K = flags.DEFINE_list("k", ["10", "50", "100"], "Cut-offs K (the top-K length is the largest).")
_TRAIN_PER_USER = flags.DEFINE_integer("train_per_user", 20, "Excluded items per user.")
_CHUNK_SIZE = flags.DEFINE_integer("chunk_size", None, "Users per device call (default: auto).")
_SELECTION = flags.DEFINE_list("selection", [], "full_ranking selections to compare "
                               "(top_k, blocked; default: the backend's).")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Timed evaluations per size (best reported).")
_OUTPUT = flags.DEFINE_string("output", None, "Optional JSON file for the figures.")


def main(argv: list[str]) -> None:
    quiet_startup()
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    ks = [int(k) for k in _K.value]
    results = []
    env = harness.environment(device=True)
    print(harness.cpu_line(env) + ".\n")
    print("| users × items × dim | K | target s | selection | chunk | compile s | top-K s | "
          "metrics s | total s | median total s | median CPU s | users/s | peak RSS GiB | "
          "backend |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for size in _SIZES.value:
        num_users, num_items, dim = (int(x) for x in size.lower().split("x"))
        for r in benchmark_full_ranking(num_users, num_items, dim, ks,
                                        train_per_user=_TRAIN_PER_USER.value,
                                        chunk_size=_CHUNK_SIZE.value,
                                        selections=_SELECTION.value or [None],
                                        repeats=_REPEATS.value):
            results.append(r)
            print(f"| {num_users:,} × {num_items:,} × {dim} | {max(ks)} | {r['target_s']:.2f} | "
                  f"{r['selection']} | "
                  f"{r['chunk_size']} | {r['compile_s']:.2f} | {r['rank_s']:.2f} | "
                  f"{r['metrics_s']:.2f} | {r['total_s']:.2f} | {r['median_total_s']:.2f} | "
                  f"{r['median_cpu_s']:.2f} | "
                  f"{r['users_per_s']:,.0f} | {r['peak_rss_gib']:.2f} | {r['backend']} |",
                  flush=True)
    if _OUTPUT.value:
        harness.write_json(_OUTPUT.value, {"results": results, "environment": env})


if __name__ == "__main__":
    app.run(main)
