"""benchmarks/eval_throughput.py and its synthetic problem (benchmarks/eval_problem.py)."""

import json

import numpy as np
import pytest

from benchmarks.eval_problem import synthetic_problem
from tests.benchmarks.scripts import run_benchmark


def test_synthetic_problem_holds_out_one_item_never_excluded():
    problem = synthetic_problem(50, 40, 4, train_per_user=6, seed=1)
    relevant = problem.target.relevant.toarray().astype(bool)
    exclude = problem.target.exclude.toarray().astype(bool)
    assert (relevant.sum(axis=1) == 1).all()
    assert not (relevant & exclude).any()
    assert (exclude.sum(axis=1) <= 6).all()
    assert problem.source.users.shape == (50, 4)


@pytest.mark.slow
def test_eval_throughput_script(tmp_path):
    done = run_benchmark("eval_throughput", "--sizes=300x2000x8", "--repeats=2", "--k=10",
                         "--selection=top_k,blocked", f"--output={tmp_path / 'bench.json'}")
    assert done.returncode == 0, done.stderr
    saved = json.loads((tmp_path / "bench.json").read_text())
    result, blocked = saved["results"]
    assert (result["num_users"], result["num_items"], result["dim"]) == (300, 2000, 8)
    assert result["users_per_s"] > 0 and result["compile_s"] >= 0
    assert len(result["repeats"]) == 2 and result["median_total_s"] >= result["total_s"]
    assert result["median_cpu_s"] > 0
    assert f"| 300 × 2,000 × 8 | 10 | {result['target_s']:.2f} | top_k |" in done.stdout
    assert f"| 300 × 2,000 × 8 | 10 | {result['target_s']:.2f} | blocked |" in done.stdout
    assert f"CPU: {saved['environment']['cpu']}, " in done.stdout
    # The selections rank alike (2,000 items is long enough for blocks at K = 10).
    assert np.isfinite(result["mean_ndcg"]) and blocked["mean_ndcg"] == result["mean_ndcg"]
