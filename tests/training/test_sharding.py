"""SPMD on a device mesh (training.sharding): the same training on 1×8, 2×4 and 8×1 meshes as on
one device, tables split row-wise, no all-gather of a whole table, checkpoints across meshes.

The mesh checks run in one subprocess that sees 8 host devices (``sharding_worker``; XLA's
device count is fixed when JAX starts, so the rest of the suite keeps one device); the tests
below assert on what it measured. The config and error checks run here, on one device.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recsys_jax.config_files import load_config_file
from recsys_jax.tasks.config_checks import config_problems
from recsys_jax.tasks.run_identity import is_result_neutral
from recsys_jax.tasks.runner import train_and_evaluate
from recsys_jax.training import sharding

ROOT = Path(__file__).resolve().parents[2]
CASES = ("mf_dense", "mf_lazy_adam", "two_tower")
MESHES = {"1x8": (1, 8), "2x4": (2, 4), "8x1": (8, 1)}
# Real rows of the table the worker inspects: MF's shared user+item table (30 + 40), the
# two-tower's item id embedding (40).
TABLE_ROWS = {"mf_dense": 70, "mf_lazy_adam": 70, "two_tower": 40}


def tiny_config():
    return load_config_file(ROOT / "configs" / "mf_tiny.py")


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    out = tmp_path_factory.mktemp("sharding")
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "")
                         + " --xla_force_host_platform_device_count=8").strip()}
    done = subprocess.run([sys.executable, "-m", "tests.training.sharding_worker", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return out, json.loads((out / "results.json").read_text())


@pytest.mark.parametrize("mesh", MESHES)
@pytest.mark.parametrize("case", CASES)
def test_training_on_a_mesh_matches_one_device(worker, case, mesh):
    """20 steps of the same global batches: the same losses and final parameters and
    optimizer state (real rows) as on one device, to rtol 1e-5 (entries near zero: within
    1e-5 of their array's largest magnitude, float32 summation order)."""
    out, _ = worker
    one = np.load(out / f"{case}_one.npz")
    sharded = np.load(out / f"{case}_{mesh}.npz")
    assert sorted(one.files) == sorted(sharded.files)
    assert one["losses"].shape == (20,) and np.all(np.isfinite(one["losses"]))
    table = "0/embedding/value" if case.startswith("mf") else "0/item_id_embedding/value"
    assert not np.allclose(one[table], one[f"initial:{table}"], atol=1e-3)  # It trained.
    for name in one.files:
        np.testing.assert_allclose(sharded[name], one[name], rtol=1e-5,
                                   atol=1e-5 * np.abs(one[name]).max(),
                                   err_msg=f"{case} on {mesh}: {name}")


@pytest.mark.parametrize("mesh", MESHES)
@pytest.mark.parametrize("case", CASES)
def test_tables_are_split_row_wise_over_the_model_axis(worker, case, mesh):
    """Each device holds 1/model of the (padded) rows; the padding is less than one row per
    device."""
    facts = worker[1]["cases"][case][mesh]
    model = MESHES[mesh][1]
    rows = TABLE_ROWS[case]
    padded = -(-rows // model) * model
    assert facts["table_shape"][0] == padded
    assert facts["rows_per_device"] == [padded // model]


@pytest.mark.parametrize("mesh", MESHES)
@pytest.mark.parametrize("case", CASES)
def test_the_compiled_step_never_all_gathers_a_whole_table(worker, case, mesh):
    """No all-gather in the compiled epoch has the shape of a row-sharded array (a table or its
    optimizer state, padded or not); lookups and updates stay per shard."""
    facts = worker[1]["cases"][case][mesh]
    whole = {tuple(shape) for shape in facts["row_sharded_shapes"]}
    assert (TABLE_ROWS[case], 4) in whole
    gathered = [shape for shape in facts["all_gathers"] if tuple(shape) in whole]
    assert not gathered, f"{case} on {mesh} all-gathers {gathered}"


def test_the_all_gather_check_sees_a_gathered_table(worker):
    """The check above is not blind: a program that replicates a row-sharded (72, 4) table
    shows an all-gather of that shape."""
    assert [72, 4] in worker[1]["gathered_table"]["all_gathers"]


def test_a_checkpoint_saved_on_8_devices_resumes_on_1_as_if_uninterrupted(worker):
    """Saved on 8 devices (2×4, batches streamed from the host), resumed on 1: the same
    epochs, metrics and final state as one uninterrupted run on one device."""
    runs = worker[1]["checkpoints"]
    straight, across = runs["uninterrupted"], runs["8_to_1"]
    assert across["resumed_from"] == [None, 2] and straight["resumed_from"] == [None]
    assert [r["epoch"] for r in across["history"]] == [1, 2, 3, 4]
    for key in ("train_loss", "val_rmse"):
        np.testing.assert_allclose([r[key] for r in across["history"]],
                                   [r[key] for r in straight["history"]], rtol=1e-5)
    for key in ("embedding", "moments"):
        np.testing.assert_allclose(across[key], straight[key], rtol=1e-5, atol=1e-6)


def test_a_checkpoint_saved_on_1_device_restores_split_on_8(worker):
    """The one-device checkpoint of epoch 4 restored onto a 1×8 mesh: its 70 rows padded to
    72, 9 per device, and the same values as the run that saved it."""
    runs = worker[1]["checkpoints"]
    back = runs["1_to_8"]
    assert back["epoch"] == 4 and back["table_shape"] == [72, 4]
    assert back["rows_per_device"] == [9]
    for key in ("embedding", "moments"):
        np.testing.assert_array_equal(back[key], runs["8_to_1"][key])


def test_full_ranking_splits_users_over_the_data_axis(worker):
    """On a 4×2 mesh a chunk of 6 users grows to 8 (2 per data device) and the top-K lists and
    scores are those of one device."""
    one, mesh = worker[1]["ranking"]["one"], worker[1]["ranking"]["4x2"]
    assert one["chunk_size"] == 6 and mesh["chunk_size"] == 8
    assert mesh["items"] == one["items"]
    np.testing.assert_allclose(mesh["scores"], one["scores"], rtol=1e-6)


def test_a_table_is_built_trained_and_validated_split_over_the_model_axis(worker):
    """A table as one too large for a device must be handled (5,001 × 64 rows, which 8 do not
    divide; lazy Adam; 1×8 mesh): built straight onto the mesh, its moments created there, seen
    by the validator and handed back split, each device holding 1/8 of it at every stage (its
    columns at rest, its padded rows in training); no device ever holds a buffer a third the
    size of the table; the compiled init needs 1/8 of its one-device memory per device; and
    the run is the one-device run from the same initial values."""
    facts = worker[1]["large_table"]
    table = facts["table_bytes"]
    assert facts["built"] == facts["moments_created"] == 0.125
    assert facts["trained"]["table"] == facts["trained"]["moments"] == 0.125
    assert [v["table"] for v in facts["validated"]] == [0.125, 0.125]
    for largest in [v["largest_buffer"] for v in facts["validated"]] + [
            facts["trained"]["largest_buffer"]]:
        assert largest < table / 3, (largest, table)
    # Observed 602,613 bytes per device on 8 against 4,635,413 on one.
    assert facts["init_bytes_per_device"] < table / 2
    assert facts["init_bytes_per_device"] * 6 < facts["init_bytes_one_device"]
    assert facts["initial_equal"]
    np.testing.assert_allclose(facts["history"], facts["history_one_device"], rtol=1e-5)
    assert facts["max_difference"] < 1e-5


def test_a_run_on_a_mesh_ends_as_on_one_device(worker):
    """``configs/mf_tiny.py`` through ``train_and_evaluate`` (model built on the mesh, trained,
    validated, folded in, tested) on a 2×4 mesh gives the one-device test metrics, and the
    model it returns keeps its table split over the 4 model devices."""
    config = tiny_config()
    one = train_and_evaluate(config, None).summary
    mesh = worker[1]["runner"]
    for key, value in mesh["test"].items():
        np.testing.assert_allclose(value, one[key], rtol=1e-5, err_msg=key)
    assert mesh["table"] == 0.25


def test_one_device_has_no_mesh():
    """The default mesh on one device is no mesh: nothing is sharded."""
    assert sharding.mesh_from_config(tiny_config()) is None
    assert sharding.current_mesh() is None
    with sharding.use_mesh(None) as mesh:
        assert mesh is None and sharding.current_mesh() is None


@pytest.mark.parametrize("data, model, words", [
    (2, 1, "must use all 1 device"), (0, 1, "positive device count or -1"),
    (-1, -1, "cannot both be -1"), (1, 3, "must use all 1 device")])
def test_a_mesh_that_does_not_fit_the_devices_is_refused(data, model, words):
    with pytest.raises(ValueError, match=words):
        sharding.make_mesh(data, model)
    config = tiny_config()
    config.mesh.data, config.mesh.model = data, model
    problems = config_problems(config, "rating")
    assert any(p.startswith("mesh.") and words in p for p in problems), problems


def test_the_mesh_is_not_part_of_a_runs_identity():
    """A run saved on one mesh may resume on another."""
    assert is_result_neutral("mesh.data") and is_result_neutral("mesh.model")
