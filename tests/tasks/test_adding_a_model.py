"""The model contract, proved: a model of each task kind added as one new module, one line in
the model registry and one config, then trained, evaluated and exported through
``experiments/train.py`` — in a copy of the project, so nothing else can have been touched.

The example modules live in ``tests/tasks/examples/`` and are the ones
``docs/adding_a_model.md`` walks through.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = Path(__file__).parent / "examples"
REGISTRY = Path("recsys_jax/models/registry.py")

pytestmark = pytest.mark.slow


def _copy_project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("recsys_jax", "configs"):
        shutil.copytree(REPO / folder, project / folder, ignore=ignore)
    (project / "experiments").mkdir()
    shutil.copy(REPO / "experiments" / "train.py", project / "experiments" / "train.py")
    return project


def _add_model(project: Path, module: str, config_name: str, config_text: str) -> None:
    """The three changes a user makes: the module, one registry line, one config."""
    shutil.copy(EXAMPLES / f"{module}.py", project / "recsys_jax" / "models" / f"{module}.py")
    registry = project / REGISTRY
    text = registry.read_text()
    anchor = "MODELS: dict[str, ModelBuilder | str] = {\n"
    assert anchor in text
    registry.write_text(text.replace(
        anchor, anchor + f'    "{module}": "recsys_jax.models.{module}:build",\n'))
    (project / "configs" / f"{config_name}.py").write_text(textwrap.dedent(config_text))


def _changed_files(project: Path) -> list[str]:
    """Files of the copy that differ from the repository (added or modified)."""
    changed = []
    for path in sorted(project.rglob("*.py")):
        relative = path.relative_to(project)
        original = REPO / relative
        if not original.exists() or not filecmp.cmp(path, original, shallow=False):
            changed.append(str(relative))
    return changed


def _registry_diff(project: Path) -> list[str]:
    new = (project / REGISTRY).read_text().splitlines()
    old = (REPO / REGISTRY).read_text().splitlines()
    assert len(new) == len(old) + 1
    return [line for line in new if line not in old]


def _run(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(project), "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, *args], cwd=project, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _train(project: Path, config_name: str, workdir: Path) -> dict:
    _run(project, "experiments/train.py", f"--config=configs/{config_name}.py",
         f"--workdir={workdir}")
    return json.loads((workdir / "test_metrics.json").read_text())


def _check_only_three_changes(project: Path, module: str, config_name: str) -> None:
    assert _changed_files(project) == sorted([f"configs/{config_name}.py",
                                              f"recsys_jax/models/{module}.py",
                                              str(REGISTRY)])
    assert _registry_diff(project) == [f'    "{module}": "recsys_jax.models.{module}:build",']


def test_rating_model_in_one_file(tmp_path):
    project = _copy_project(tmp_path)
    _add_model(project, "bias_only", "bias_only_tiny", '''
        from recsys_jax.config_files import sibling_config


        def get_config():
            config = sibling_config(__file__, "mf_tiny")
            config.model = {"name": "bias_only"}
            config.training.l2_reg = 0.0
            config.analysis.enabled = False
            return config
        ''')
    _check_only_three_changes(project, "bias_only", "bias_only_tiny")
    workdir = tmp_path / "run"
    summary = _train(project, "bias_only_tiny", workdir)
    assert (summary["task"], summary["model"], summary["epochs_trained"]) == ("rating",
                                                                              "bias_only", 3)
    assert "test_cold_start" not in summary  # No SeenMasks: nothing to count, no KeyError.
    # Test RMSE recomputed independently from the exported predictions and the saved split.
    predictions = np.load(workdir / "test_predictions.npy")
    check = f'''
import json, numpy as np
from recsys_jax.data.splits import Split
from recsys_jax.models.registry import load_model
test = Split.load("{workdir}/split").test
model = load_model("{workdir}/model")
pred = np.asarray(model(test["user_id"].to_numpy(), test["item_id"].to_numpy()))
print(json.dumps({{"pred": pred.tolist(), "rating": test["rating"].tolist()}}))
'''
    out = json.loads(_run(project, "-c", check).stdout)
    np.testing.assert_allclose(out["pred"], predictions, rtol=1e-6)
    clipped = np.clip(predictions, 1.0, 5.0)
    rmse = float(np.sqrt(np.mean((clipped - np.asarray(out["rating"])) ** 2)))
    assert summary["test_rmse"] == pytest.approx(rmse, rel=1e-5)
    # Biases alone must beat the global mean, whose error is the ratings' spread.
    assert summary["test_rmse"] < float(np.std(out["rating"]))
    report = (workdir / "report.md").read_text()
    assert report.count("# bias_only on synthetic") == 1
    assert "Against the rating baselines" in report


def test_implicit_model_fitted_without_gradients(tmp_path):
    project = _copy_project(tmp_path)
    _add_model(project, "popularity", "popularity_tiny", '''
        from recsys_jax.config_files import sibling_config


        def get_config():
            config = sibling_config(__file__, "ncf_tiny")
            config.model = {"name": "popularity"}
            return config
        ''')
    _check_only_three_changes(project, "popularity", "popularity_tiny")
    workdir = tmp_path / "run"
    summary = _train(project, "popularity_tiny", workdir)
    assert summary["task"] == "implicit" and summary["model"] == "popularity"
    assert "best_epoch" not in summary and summary["fit_time_s"] >= 0
    assert not (workdir / "checkpoints").exists()  # The gradient loop never ran.
    # Known answer: HR@10 of "most popular unseen items first", computed here with NumPy.
    check = f'''
import json, numpy as np
from recsys_jax.data.splits import Split
split = Split.load("{workdir}/split")
print(json.dumps({{p: [split.parts()[p]["user_id"].tolist(), split.parts()[p]["item_id"].tolist()]
                  for p in ("train", "val", "test")}}))
'''
    parts = {k: np.asarray(v) for k, v in json.loads(_run(project, "-c", check).stdout).items()}
    num_items = summary["num_items"]
    counts = np.bincount(parts["train"][1], minlength=num_items).astype(float)
    hits = []
    for user in np.unique(parts["test"][0]):
        seen = set(parts["train"][1][parts["train"][0] == user])
        seen |= set(parts["val"][1][parts["val"][0] == user])
        held_out = set(parts["test"][1][parts["test"][0] == user])
        # Score ties resolve by lower item id first, as the suite's ranking does.
        ranked = [i for i in np.lexsort((np.arange(num_items), -counts)) if i not in seen]
        hits.append(bool(held_out & set(ranked[:10])))
    assert summary["test"]["full"]["hr@10"] == pytest.approx(np.mean(hits), abs=1e-6)
    assert summary["positives_counted"] == len(parts["train"][0])


def test_retrieval_model_in_one_file(tmp_path):
    project = _copy_project(tmp_path)
    _add_model(project, "id_towers", "id_towers_tiny", '''
        from recsys_jax.config_files import sibling_config


        def get_config():
            config = sibling_config(__file__, "two_tower_tiny")
            config.model = {"name": "id_towers", "dim": 8}
            config.features.train_user_inputs = "all_train"
            config.training.epochs = 3
            return config
        ''')
    _check_only_three_changes(project, "id_towers", "id_towers_tiny")
    workdir = tmp_path / "run"
    summary = _train(project, "id_towers_tiny", workdir)
    assert summary["task"] == "retrieval" and summary["model"] == "id_towers"
    assert summary["epochs_trained"] == 3
    users = np.load(workdir / "user_embeddings.npy")
    items = np.load(workdir / "item_embeddings.npy")
    np.testing.assert_allclose(np.linalg.norm(users, axis=1), 1.0, rtol=1e-5)
    # The exact index returns what NumPy's exact search returns.
    assert summary["index"]["recall@100_vs_exact"] == pytest.approx(1.0)
    assert summary["retrieve_latency_ms"]["n"] == 30
    assert items.shape == (summary["num_items"], 8)
