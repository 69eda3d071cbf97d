"""The MF optimizer floor times the recipe's real update: both frameworks apply the same one."""

import json

import numpy as np
import pytest
import torch  # noqa: F401  (collected only with the baseline extra, see conftest)

from benchmarks.torch_baseline import optimizer_floor as floor
from recsys_jax.config_files import sibling_config
from tests.benchmarks.scripts import ROOT, run_benchmark

SHAPES = floor.mf_parameter_shapes(5, 7, 3)


def _optimizer_config():
    return sibling_config(ROOT / "configs" / "mf_tiny.py", "mf_tiny").optimizer.to_dict()


def test_jax_and_torch_apply_the_same_updates():
    config = _optimizer_config()
    assert config["name"] == "adam" and config["weight_decay"] > 0
    epoch_fn, params, opt_state = floor.jax_update_epoch(config, SHAPES, steps=3)
    jax_params = floor.per_side_params(epoch_fn(params, opt_state)[0], num_users=5)
    step, torch_params = floor.torch_update(SHAPES, lr=config["lr"],
                                            weight_decay=config["weight_decay"], fused=False)
    for p in torch_params.values():  # TorchMF starts from random tables: start both at zero.
        p.data.zero_()
    for _ in range(3):
        step()
    assert set(torch_params) == set(jax_params)
    for name, value in torch_params.items():
        want = jax_params[name]  # TorchMF keeps biases as [n, 1] tables.
        np.testing.assert_allclose(value.detach().numpy().reshape(want.shape), want,
                                   rtol=1e-5, atol=1e-9, err_msg=name)
    # The update really moved every parameter (a constant gradient, three Adam steps).
    assert all(np.all(v < 0) for v in jax_params.values())


@pytest.mark.parametrize("variant", floor.VARIANTS)
def test_time_variant_reports_positive_times(variant):
    task = {"variant": variant, "threads": 1, "steps": 4, "repetitions": 2,
            "shapes": SHAPES, "optimizer": _optimizer_config()}
    result = floor.time_variant(task)
    assert result["epoch_update_s"] > 0 and len(result["epoch_update_s_all"]) == 2
    assert result["per_step_us"] == pytest.approx(result["epoch_update_s"] / 4 * 1e6)
    assert (result["compile_s"] > 0) == (variant == "jax")


@pytest.mark.slow
def test_script_end_to_end(tmp_path):
    proc = run_benchmark("mf_optimizer_floor", "--config=configs/mf_tiny.py", "--threads=1",
                          "--repetitions=2", f"--output_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "mf_optimizer_floor.json").read_text())
    assert set(result["variants"]) == set(floor.VARIANTS)
    config = sibling_config(ROOT / "configs" / "mf_tiny.py", "mf_tiny")
    assert result["shapes"]["user_embedding"][1] == config.model.dim
    assert result["num_parameters"] == sum(int(np.prod(s)) for s in result["shapes"].values())
    for r in result["variants"].values():
        assert r["environment"]["threads"] == 1 and r["epoch_update_s"] > 0
    assert "| JAX (library optimizer, scanned) |" in (tmp_path / "mf_optimizer_floor.md").read_text()  # noqa: E501
