"""benchmarks/movielens_csv.py end to end on a small generated set."""

import json

import pytest

from tests.benchmarks.scripts import run_benchmark


@pytest.mark.slow
def test_movielens_csv_times_every_load_and_checks_the_data(tmp_path):
    proc = run_benchmark("movielens_csv", "--num_users=200", "--num_items=100",
                         "--num_ratings=4000", "--name=ml-latest-small", "--repetitions=1",
                         f"--work_dir={tmp_path}", f"--output_dir={tmp_path / 'out'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "out" / "movielens_csv.json").read_text())
    assert result["data"]["num_ratings"] == 4000
    variants = result["variants"]
    assert {"first_load", "cached_load", "no_binary_cache", "pandas_parse"} <= set(variants)
    for name, variant in variants.items():
        run = variant["runs"][0]
        assert run["from_columnar_cache"] == (name == "cached_load")
        assert run["interactions_digest"] == result["data"]["interactions_digest"]
        assert variant["load_s"] > 0 and variant["process_s"] > variant["load_s"]
    markdown = (tmp_path / "out" / "movielens_csv.md").read_text()
    assert "| cached load (binary cache) |" in markdown and markdown.strip() in proc.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # the temporary cache is gone


@pytest.mark.slow
def test_movielens_csv_refuses_a_cached_load_without_the_first(tmp_path):
    proc = run_benchmark("movielens_csv", "--num_users=20", "--num_items=10",
                         "--num_ratings=100", "--name=ml-latest-small",
                         "--variants=cached_load", f"--output_dir={tmp_path}")
    assert proc.returncode != 0 and "cached_load needs first_load" in proc.stderr
    assert not (tmp_path / "movielens_csv.json").exists()
