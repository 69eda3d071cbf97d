r"""Reruns the headline tables and checks them against the values stored in the repository.

Usage (ML-100K, ≈ 20 min on 2 CPU cores; not part of CI):
  python experiments/reproduce.py --suite=ml100k
  python experiments/reproduce.py --suite=ml100k --only=mf_random,mf_user_temporal

Each run of ``experiments/expected/<suite>.json`` trains its config (with overrides) through
``train_and_evaluate`` into ``--workdir_root/<name>`` and compares one metric with the stored
expected value and its accepted range (the documented 95% CI, or a stated tolerance). Prints a
table, writes ``reproduce.json`` and ``reproduce.md`` there, and exits with status 1 when any
figure falls outside its range.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from absl import app, flags, logging

from recsys_jax import fileio
from recsys_jax.config_files import load_config_file
from recsys_jax.console import quiet_startup
from recsys_jax.tasks.rating_search import apply_overrides
from recsys_jax.tasks.runner import train_and_evaluate
from recsys_jax.tasks.seed_runs import metric_value

REPO = Path(__file__).resolve().parents[1]

_SUITE = flags.DEFINE_string("suite", "ml100k", "Name of experiments/expected/<suite>.json.")
_ONLY = flags.DEFINE_list("only", [], "Run only these names of the suite.")
_WORKDIR_ROOT = flags.DEFINE_string("workdir_root", "workdirs/reproduce",
                                    "Parent of the runs' workdirs (each must be new).")


def main(argv: list[str]) -> None:
    del argv
    quiet_startup()
    suite = json.loads((REPO / "experiments" / "expected" / f"{_SUITE.value}.json")
                       .read_text())
    root = Path(_WORKDIR_ROOT.value)
    rows = []
    for spec in suite["runs"]:
        if _ONLY.value and spec["name"] not in _ONLY.value:
            continue
        config = apply_overrides(load_config_file(REPO / spec["config"]), spec["overrides"])
        t0 = time.perf_counter()
        run = train_and_evaluate(config, root / spec["name"])
        value = metric_value(run.summary, spec["metric"])
        ok = spec["low"] <= value <= spec["high"]
        rows.append({**spec, "value": value, "ok": ok, "seconds": time.perf_counter() - t0})
        logging.info("%s: %s %.4f (expected %.4f, range [%.4f, %.4f]) %s", spec["name"],
                     spec["metric"], value, spec["expected"], spec["low"], spec["high"],
                     "ok" if ok else "OUT OF RANGE")
    lines = ["| run | metric | measured | expected | accepted range | ok | seconds |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['name']} | {r['metric']} | {r['value']:.4f} | {r['expected']:.4f} | "
              f"[{r['low']:.4f}, {r['high']:.4f}] | {'yes' if r['ok'] else '**no**'} | "
              f"{r['seconds']:.0f} |" for r in rows]
    table = "\n".join(lines)
    print(table)
    root.mkdir(parents=True, exist_ok=True)
    fileio.atomic_write_json(root / "reproduce.json", {"suite": _SUITE.value, "runs": rows})
    fileio.atomic_write_text(root / "reproduce.md", table + "\n")
    if not all(r["ok"] for r in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    app.run(main)
