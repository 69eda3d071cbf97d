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
    done = run_benchmark("eval_throughput", "--sizes=300x500x8", "--repeats=1", "--k=10",
                         f"--output={tmp_path / 'bench.json'}")
    assert done.returncode == 0, done.stderr
    saved = json.loads((tmp_path / "bench.json").read_text())
    result = saved["results"][0]
    assert (result["num_users"], result["num_items"], result["dim"]) == (300, 500, 8)
    assert result["users_per_s"] > 0 and result["compile_s"] >= 0
    assert "| 300 × 500 × 8 |" in done.stdout
    assert f"CPU: {saved['environment']['cpu']}, " in done.stdout
    assert np.isfinite(result["mean_ndcg"])
