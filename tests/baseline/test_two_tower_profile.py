"""The two-tower step profile: on tiny shapes, each piece computes the same thing in JAX and
PyTorch, timings have the expected form, and the script runs end to end."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch  # noqa: F401  (collected only with the baseline extra, see conftest)
from flax import nnx

from benchmarks.torch_baseline import two_tower_profile as tp
from recsys_jax.config_files import sibling_config
from recsys_jax.tasks.retrieval_losses import in_batch_softmax_loss
from tests.benchmarks.scripts import ROOT, run_benchmark

TINY = tp.ProfileShapes(batch_size=32, user_dim=5, item_dim=7, num_users=20, num_items=30,
                        history_len=4, hidden_dim=16, dim=8, num_train=100)
TINY_FLAGS = ["--batch_size=32", "--user_dim=5", "--item_dim=7", "--num_users=20",
              "--num_items=30", "--history_len=4", "--hidden_dim=16", "--dim=8",
              "--num_train=100"]


@pytest.fixture(scope="module")
def built():
    inputs = tp.make_inputs(TINY)
    return (inputs, tp.jax_pieces(TINY, inputs, scan_steps=3),
            tp.torch_pieces(TINY, inputs))


def _loss(outputs):
    return tp.piece_loss(outputs)


def test_inputs_have_accidental_hits_and_valid_ids():
    inputs = tp.make_inputs(TINY)
    assert len(np.unique(inputs["batch_item"])) < TINY.batch_size  # Repeated items.
    assert inputs["batch_item"].max() < TINY.num_items
    assert inputs["batch_history_ids"].shape == (TINY.batch_size, TINY.history_len)
    np.testing.assert_allclose(np.linalg.norm(inputs["user_vectors"], axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(np.exp(inputs["log_q"]).sum(), 1, rtol=1e-4)


def test_pieces_compute_the_same_in_both_frameworks(built):
    inputs, jax_pieces, torch_pieces = built
    assert set(jax_pieces) == set(tp.PIECES)
    assert set(torch_pieces) == set(tp.PIECES) - {"step_scanned"}
    first = {}
    for name in ("step", "step_no_history", "towers", "towers_no_history", "loss"):
        j = jax_pieces[name].block(jax_pieces[name].run())
        t = torch_pieces[name].run()
        first[name] = (j, t)
        assert np.isfinite(_loss(j)), name
        assert _loss(j) == pytest.approx(_loss(t), rel=1e-5), name
    # A second step after one AdamW update still agrees: the optimizers match too.
    for name in ("step", "step_no_history"):
        j = _loss(jax_pieces[name].block(jax_pieces[name].run()))
        t = _loss(torch_pieces[name].run())
        assert j != pytest.approx(_loss(first[name][0]), rel=1e-7), name  # It moved.
        assert j == pytest.approx(t, rel=1e-4), name
    # The scanned step's first step is the step of a.
    scanned = jax_pieces["step_scanned"].block(jax_pieces["step_scanned"].run())
    assert np.shape(scanned[1]["loss"]) == (3,)
    assert _loss(scanned) == pytest.approx(_loss(first["step"][0]), rel=1e-6)

    # d equals the library's loss on the same embeddings, and its gradients match PyTorch's.
    items = jnp.asarray(inputs["batch_item"])
    expected = jnp.mean(in_batch_softmax_loss(
        jnp.asarray(inputs["user_vectors"]), jnp.asarray(inputs["item_vectors"]), items,
        jnp.ones(TINY.batch_size), jnp.asarray(TINY.temperature),
        candidate_log_q=jnp.asarray(inputs["log_q"])[items], remove_accidental_hits=True))
    j, t = first["loss"]
    assert _loss(j) == pytest.approx(float(expected), rel=1e-6)
    for jg, tg in zip(j["grads"], t["grads"]):
        np.testing.assert_allclose(np.asarray(jg), tg.numpy(), rtol=1e-4, atol=1e-6)

    # c: no B×B matrix, but gradients reach every tower parameter (and the position weights).
    for name in ("towers", "towers_no_history"):
        j, t = first[name]
        torch_grads = {k: g for k, g in t["grads"].items() if g is not None}
        assert any("history_position_logits" in k for k in torch_grads) == (name == "towers")
        tower_grads = {k: g for k, g in torch_grads.items() if "tower" in k}
        assert len(tower_grads) == 12, name  # 2 towers × (2 Linear × 2 + LayerNorm × 2).
        for k, g in tower_grads.items():
            assert float(g.abs().sum()) > 0, (name, k)
        jax_norms = [float(jnp.abs(g[...]).sum())
                     for path, g in nnx.to_flat_state(j["grads"])
                     if "tower" in path[0]]
        assert len(jax_norms) == 12 and all(x > 0 for x in jax_norms), name


def test_optimizer_piece_updates_parameters(built):
    _, jax_pieces, torch_pieces = built
    piece = jax_pieces["optimizer"]

    def leaf(state):  # The user tower's first kernel in the (model, optimizer) state.
        return next(np.array(v[...]) for path, v in nnx.to_flat_state(state)
                    if path[1:] == ("user_tower", "hidden", "kernel"))
    before = leaf(piece.block(piece.run()))
    after = leaf(piece.block(piece.run()))
    assert np.abs(after - before).max() > 0
    assert torch_pieces["optimizer"].run() == {}


def test_profile_framework_timings():
    result = tp.profile_framework("torch", TINY, repetitions=2, warmup=1)
    assert list(result) == [p for p in tp.PIECES if p != "step_scanned"]
    for name, r in result.items():
        assert len(r["times_ms"]) == 2, name
        assert r["median_ms"] > 0 and r["min_ms"] > 0 and r["p25_ms"] <= r["p75_ms"], name
        assert r["compile_s"] == 0 and r["steps_per_run"] == 1, name
        assert (r["loss"] is None) == (name == "optimizer"), name
    jax_result = tp.profile_framework("jax", TINY, repetitions=2, warmup=1,
                                      pieces=("loss", "optimizer"))
    assert list(jax_result) == ["loss", "optimizer"]
    assert all(r["compile_s"] > 0 and r["median_ms"] > 0 for r in jax_result.values())
    with pytest.raises(ValueError, match="framework"):
        tp.profile_framework("tf", TINY)


def test_defaults_are_the_ml100k_config():
    config = sibling_config(ROOT / "configs" / "two_tower_ml100k.py", "two_tower_ml100k")
    d = tp.ProfileShapes()
    assert (d.batch_size, d.hidden_dim, d.dim, d.history_len) == (
        config.training.batch_size, config.model.hidden_dim, config.model.dim,
        config.features.history_len)
    assert (d.lr, d.weight_decay, d.temperature, d.history_positions) == (
        config.optimizer.lr, config.optimizer.weight_decay, config.model.temperature,
        config.model.history_positions)
    assert d.steps_per_epoch == 48


def test_shapes_from_tiny_config():
    config = sibling_config(ROOT / "configs" / "two_tower_tiny.py", "two_tower_tiny")
    shapes = tp.shapes_from_config(config, batch_size=64)
    assert shapes.batch_size == 64
    assert (shapes.hidden_dim, shapes.dim, shapes.history_len) == (16, 8, 8)
    assert shapes.num_train > 0 and shapes.user_dim > 0 and shapes.item_dim > 0


@pytest.mark.slow
def test_profile_script_end_to_end(tmp_path):
    proc = run_benchmark("profile_two_tower", *TINY_FLAGS, "--repetitions=2", "--warmup=1",
                          "--scan_steps=2", "--threads=1", f"--output_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| piece | JAX ms | PyTorch ms | PyTorch/JAX |" in proc.stdout
    result = json.loads((tmp_path / "profile_two_tower.json").read_text())
    assert result["shapes"]["batch_size"] == 32 and result["repetitions"] == 2
    assert set(result["pieces"]) == set(tp.PIECES)
    for name, p in result["pieces"].items():
        assert p["jax_ms"] > 0 and p["jax_compile_s"] > 0, name
        assert p["torch_over_jax"] > 0, name
        if name == "step_scanned":
            assert p["torch_ms"] is None
        else:
            assert p["torch_ms"] > 0, name
            if name != "optimizer":
                assert p["jax_loss"] == pytest.approx(p["torch_loss"], rel=1e-5), name
    workers = result["environment"]["workers"]
    assert workers["jax"]["OMP_NUM_THREADS"] == workers["torch"]["OMP_NUM_THREADS"] == "1"
    assert "intra_op_parallelism_threads=1" in workers["jax"]["XLA_FLAGS"]
    assert workers["torch"]["framework"]["torch_num_threads"] == 1
    assert "jax" in workers["jax"]["framework"] and "torch" in workers["torch"]["framework"]
    markdown = (tmp_path / "profile_two_tower.md").read_text()
    assert markdown.startswith("## Two-tower training step, piece by piece")
