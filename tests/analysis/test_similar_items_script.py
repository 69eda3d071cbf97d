"""experiments/similar_items.py end to end on a tiny ML-100K-format directory (no network)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recsys_jax.data import ids

pytestmark = pytest.mark.slow  # every test runs the script in a subprocess

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "experiments" / "similar_items.py"
ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                 "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                 "Romance", "Sci-Fi", "Thriller", "War", "Western")
# Raw id -> (title, genres). Raw ids 1..6 encode to rows 0..5.
MOVIES = {
    1: ("Star Wars (1977)", ("Action", "Adventure", "Romance", "Sci-Fi", "War")),
    2: ("Return of the Jedi (1983)", ("Action", "Adventure", "Romance", "Sci-Fi", "War")),
    3: ("Empire Strikes Back, The (1980)", ("Action", "Adventure", "Drama", "Romance", "Sci-Fi",
                                            "War")),
    4: ("Toy Story (1995)", ("Animation", "Children's", "Comedy")),
    5: ("Fargo (1996)", ("Crime", "Drama", "Thriller")),
    6: ("Heat (1995)", ("Action", "Crime", "Thriller")),
}
EMBEDDINGS = np.array([[1.0, 0.0, 0.1], [0.9, 0.1, 0.0], [0.8, 0.3, 0.0],
                       [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=np.float32)


def _write_ml100k(directory: Path) -> None:
    directory.mkdir(parents=True)
    (directory / "u.genre").write_text(
        "".join(f"{g}|{i}\n" for i, g in enumerate(ML100K_GENRES)) + "\n", encoding="latin-1")
    lines = []
    for item_id, (title, genres) in MOVIES.items():
        flags = "|".join("1" if g in genres else "0" for g in ML100K_GENRES)
        lines.append(f"{item_id}|{title}|01-Jan-1995||http://example.com|{flags}\n")
    (directory / "u.item").write_text("".join(lines), encoding="latin-1")
    (directory / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    (directory / "u.occupation").write_text("technician\nother\n")
    ratings = [(u, i, 1 + (u + i) % 5, 881250949 + 10 * i + u) for u in (1, 2) for i in MOVIES]
    (directory / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ratings))


@pytest.fixture
def run_dirs(tmp_path: Path) -> tuple[Path, Path]:
    data_dir, workdir = tmp_path / "ml-100k", tmp_path / "run"
    _write_ml100k(data_dir)
    workdir.mkdir()
    np.save(workdir / "item_embeddings.npy", EMBEDDINGS)
    return data_dir, workdir


def _run(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    # An empty cache and no downloads: the test never leaves the temporary directory.
    hermetic = [f"--data_dir={data_dir}", f"--cache_dir={data_dir.parent / 'cache'}",
                "--nodownload"]
    return subprocess.run([sys.executable, str(SCRIPT), *hermetic, *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_prints_the_most_similar_items(run_dirs):
    data_dir, workdir = run_dirs
    (workdir / "config.json").write_text(json.dumps({"data": {"dataset": "ml-100k"}}))
    done = _run(data_dir, f"--workdir={workdir}", "--title=star wars (1977)",
                "--k=3")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Most similar to Star Wars (1977) (item 0, Action|Adventure")
    assert "Return of the Jedi (1983)" in lines[2]
    assert "Empire Strikes Back, The (1980)" in lines[3]
    assert "Sci-Fi" in lines[2]
    assert len(lines) == 5 and "Star Wars" not in "".join(lines[2:])


def _save_item_ids(workdir: Path, raw_item_ids: list[int]) -> None:
    ids.IdMapping(users=ids.IdEncoder.fit([1, 2], "user"),
                  items=ids.IdEncoder.fit(raw_item_ids, "item")).save(workdir / "ids")


def test_query_by_item_id(run_dirs):
    data_dir, workdir = run_dirs
    _save_item_ids(workdir, list(MOVIES))  # the mapping training saved; it matches
    done = _run(data_dir, f"--workdir={workdir}", "--item_id=4", "--k=1")
    assert done.returncode == 0, done.stderr
    assert "Most similar to Fargo (1996)" in done.stdout


def test_unknown_title_is_a_clear_error(run_dirs):
    data_dir, workdir = run_dirs
    done = _run(data_dir, f"--workdir={workdir}", "--title=Star Wars")
    assert done.returncode == 1
    assert "did you mean 'Star Wars (1977)'" in done.stderr
    assert "Traceback" not in done.stderr


def test_item_ids_of_another_data_set_are_refused(run_dirs):
    data_dir, workdir = run_dirs
    _save_item_ids(workdir, [1, 2, 3, 4, 5, 7])
    done = _run(data_dir, f"--workdir={workdir}", "--item_id=0")
    assert done.returncode == 1
    assert "differ from those of 'ml-100k'" in done.stderr


def test_duplicate_title_asks_for_an_item_id(run_dirs):
    data_dir, workdir = run_dirs
    item = data_dir / "u.item"
    item.write_text(item.read_text(encoding="latin-1").replace("Heat (1995)", "Fargo (1996)"),
                    encoding="latin-1")
    done = _run(data_dir, f"--workdir={workdir}", "--title=Fargo (1996)")
    assert done.returncode == 1
    assert "matches items [4, 5]; query one of them by id with --item_id" in done.stderr


def test_non_movielens_run_is_a_clear_error(run_dirs):
    data_dir, workdir = run_dirs
    (workdir / "config.json").write_text(json.dumps({"data": {"dataset": "synthetic"}}))
    done = _run(data_dir, f"--workdir={workdir}", "--item_id=0")
    assert done.returncode == 1
    assert "'synthetic' is not a MovieLens data set" in done.stderr


def test_missing_embeddings_is_a_clear_error(run_dirs, tmp_path):
    data_dir, _ = run_dirs
    done = _run(data_dir, f"--workdir={tmp_path / 'nowhere'}", "--item_id=0")
    assert done.returncode == 1
    assert "item_embeddings.npy does not exist" in done.stderr


def test_dataset_defaults_from_config(tmp_path):
    configs = {"top": {"dataset": "ml-1m"}, "nested": {"data": {"dataset": "ml-1m"}},
               "named": {"data": {"name": "ml-1m"}}, "other": {"model": {"dim": 8}}}
    for name, config in configs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(config))
    (tmp_path / "none").mkdir()
    code = ("import sys; from pathlib import Path; sys.path.insert(0, 'experiments'); "
            "import similar_items as s; "
            "print([s.dataset_from_config(Path(d)) for d in sys.argv[1:]])")
    names = [*configs, "none"]
    done = subprocess.run([sys.executable, "-c", code, *(str(tmp_path / n) for n in names)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(["ml-1m", "ml-1m", "ml-1m", None, None])
