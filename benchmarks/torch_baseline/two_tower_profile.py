"""Where a two-tower training step spends its time, in JAX and in PyTorch, piece by piece.

The side-by-side benchmark (``two_tower_benchmark``) times whole epochs; this module breaks one
training step of the ML-100K recipe into components and times each in both frameworks, on the
real shapes with random inputs (speed depends on shapes, not values, so no data is needed):

  step              a. the full step as each library runs it: JAX ``steps.make_train_step``
                    (``nnx.value_and_grad`` of ``make_retrieval_loss``'s loss, then
                    ``nnx.Optimizer.update``, jitted, state donated); PyTorch the body of
                    ``TunedTrainer.train_epoch`` (eager, fused AdamW)
  step_scanned      a′. (JAX only) the same step inside ``steps.make_train_steps``' ``lax.scan``
                    over ``scan_steps`` batches, per step: what the benchmark's scanned epoch runs,
                    without one dispatch per step
  step_no_history   b. the full step of a model without the history tower: a − b is the cost of
                    the whole-catalogue item-tower pass that history pooling needs
  towers            c. user + item towers (model as in a) forward/backward on the batch with a
                    trivial loss Σ_i u_i·v_i: no [B, B] matrix, no optimizer
  towers_no_history c′. the same for the model of b
  loss              d. the [B, B] in-batch softmax (logQ, accidental-hit masking) alone on fixed
                    [B, dim] embeddings, forward + backward (gradients of both sides and τ)
  optimizer         e. one AdamW update over the model's parameters with given gradients

Each piece is timed as the median over ``repetitions`` calls after ``warmup`` calls; JAX pieces
are compiled ahead of time (``lower().compile()``, reported as ``compile_s``) and every call
waits for its outputs (``jax.block_until_ready``); PyTorch on the CPU is synchronous, so plain
wall clock. Both frameworks start from the same parameters (NumPy-initialised, loaded into each
as ``TorchTwoTower.load_jax_params`` does), so comparable pieces compute the same numbers.

Each framework runs in its own fresh process (``python -m
benchmarks.torch_baseline.two_tower_profile
TASK.json OUT_DIR``) with the thread settings of ``harness.set_threads`` (CPU affinity,
``OMP_NUM_THREADS``/``MKL_NUM_THREADS``, XLA's intra-op pool, ``torch.set_num_threads``), so one
framework's thread pools never disturb the other's. Importing this module loads neither
framework: each is imported inside the functions that need it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import harness

FRAMEWORKS = ("jax", "torch")
PIECES = ("step", "step_scanned", "step_no_history", "towers", "towers_no_history", "loss",
          "optimizer")
LABELS = {
    "step": "a. full step (fwd + bwd + AdamW)",
    "step_scanned": "a′. full step in lax.scan, per step (JAX only; ratio vs PyTorch a)",
    "step_no_history": "b. full step, no history tower",
    "towers": "c. towers only (fwd + bwd, Σ u·v)",
    "towers_no_history": "c′. towers only, no history tower",
    "loss": "d. B×B in-batch softmax alone (fwd + bwd)",
    "optimizer": "e. AdamW update alone",
}
# Pieces PyTorch has no counterpart of; their ratio is taken against this PyTorch piece.
JAX_ONLY = {"step_scanned": "step"}


@dataclasses.dataclass(frozen=True)
class ProfileShapes:
    """Sizes and recipe of the profiled step; defaults are ``configs/two_tower_ml100k.py`` on
    ML-100K (what ``prepare_retrieval_data`` gives: 65 user features — history statistics and
    demographics —, 405 item features — MiniLM title, genres, year —, 943 users, 1,682 items,
    98,114 training positives)."""

    batch_size: int = 2048
    user_dim: int = 65
    item_dim: int = 405
    num_users: int = 943
    num_items: int = 1682
    history_len: int = 10
    hidden_dim: int = 256
    dim: int = 128
    history_positions: bool = True
    temperature: float = 0.07
    lr: float = 2e-3
    weight_decay: float = 1e-4
    num_train: int | None = 98114  # Training positives, for the per-epoch estimate.

    def __post_init__(self):
        small = {k: v for k, v in dataclasses.asdict(self).items()
                 if k in ("batch_size", "user_dim", "item_dim", "num_users", "num_items",
                          "history_len", "hidden_dim", "dim") and v < 1}
        if small:
            raise ValueError(f"shapes must be positive: {small}")

    @property
    def steps_per_epoch(self) -> int | None:
        """Batches per epoch (the last one padded), or None without ``num_train``."""
        return None if not self.num_train else math.ceil(self.num_train / self.batch_size)


def shapes_from_config(config: Any, **overrides: Any) -> ProfileShapes:
    """The shapes a two-tower experiment config really trains on: runs
    ``prepare_retrieval_data`` (loads the data set; imports JAX in this process).

    Raises:
      ValueError: for configs the profile does not mirror (no history tower, id embeddings,
        random negatives, per-user rather than causal per-pair inputs).
    """
    from benchmarks.torch_baseline.jax_two_tower import prepare_retrieval_data
    m = config.model
    bad = {}
    if not m.history:
        bad["model.history"] = m.history
    for field in ("user_id_dim", "item_id_dim"):
        if m.get(field, 0):
            bad[f"model.{field}"] = m[field]
    if config.loss.num_random_negatives:
        bad["loss.num_random_negatives"] = config.loss.num_random_negatives
    if not (config.loss.logq and config.loss.remove_accidental_hits):
        bad["loss"] = "logq and remove_accidental_hits must be on"
    if config.features.get("train_user_inputs", "all_train") != "causal":
        bad["features.train_user_inputs"] = config.features.get("train_user_inputs")
    if config.optimizer.name != "adamw" or config.optimizer.get("schedule",
                                                                "constant") != "constant":
        bad["optimizer"] = f"{config.optimizer.name} ({config.optimizer.get('schedule')})"
    if bad:
        raise ValueError(f"the profile mirrors the default recipe only; unsupported: {bad}")
    data = prepare_retrieval_data(config)
    f = data.features
    fields = dict(batch_size=int(config.training.batch_size), user_dim=int(f.user.shape[1]),
                  item_dim=int(f.item.shape[1]), num_users=int(f.user.shape[0]),
                  num_items=int(f.item.shape[0]), history_len=int(f.history_ids.shape[1]),
                  hidden_dim=int(m.hidden_dim), dim=int(m.dim),
                  history_positions=bool(m.get("history_positions", False)),
                  temperature=float(m.temperature), lr=float(config.optimizer.lr),
                  weight_decay=float(config.optimizer.get("weight_decay", 0.0)),
                  num_train=len(data.train["user"]))
    fields.update(overrides)
    return ProfileShapes(**fields)


# ---------------------------------------------------------------------------------------------
# Inputs and parameters (NumPy, shared by both frameworks).


def make_inputs(shapes: ProfileShapes, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs of the profiled step: the stored feature tables, one batch with its causal
    per-pair user inputs, log q, and fixed unit-norm embeddings for the loss-only piece.

    Item ids follow a Zipf-like popularity (as rating data does), so the batch has repeated
    items (accidental hits) and log q is the log of that popularity.
    """
    s, rng = shapes, np.random.default_rng(seed)
    popularity = 1.0 / (np.arange(s.num_items) + 10.0)
    popularity = rng.permutation(popularity / popularity.sum())

    def histories(n: int) -> tuple[np.ndarray, np.ndarray]:
        ids = rng.choice(s.num_items, (n, s.history_len), p=popularity).astype(np.int32)
        # Most rows have a full history, some a shorter one (down to none).
        lengths = np.where(rng.random(n) < 0.9, s.history_len,
                           rng.integers(0, s.history_len, n))
        return ids, (np.arange(s.history_len)[None, :] < lengths[:, None]).astype(np.float32)

    def unit(n: int) -> np.ndarray:
        x = rng.standard_normal((n, s.dim)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    history_ids, history_mask = histories(s.num_users)
    batch_history_ids, batch_history_mask = histories(s.batch_size)
    return {
        "user_features": rng.standard_normal((s.num_users, s.user_dim)).astype(np.float32),
        "item_features": rng.standard_normal((s.num_items, s.item_dim)).astype(np.float32),
        "history_ids": history_ids, "history_mask": history_mask,
        "log_q": np.log(popularity).astype(np.float32),
        "batch_user": rng.integers(0, s.num_users, s.batch_size).astype(np.int32),
        "batch_item": rng.choice(s.num_items, s.batch_size, p=popularity).astype(np.int32),
        "batch_user_features": rng.standard_normal((s.batch_size, s.user_dim)
                                                   ).astype(np.float32),
        "batch_history_ids": batch_history_ids, "batch_history_mask": batch_history_mask,
        "user_vectors": unit(s.batch_size), "item_vectors": unit(s.batch_size),
    }


def initial_params(shapes: ProfileShapes, *, history: bool, seed: int = 0
                   ) -> dict[str, np.ndarray]:
    """Parameters of the profiled model, flat with the JAX names (``"user_tower/hidden/kernel"``
    → ``[in, out]`` array), to load into both frameworks."""
    s, rng = shapes, np.random.default_rng(seed + 1)
    out: dict[str, np.ndarray] = {}
    user_in = s.user_dim + (s.dim if history else 0)
    for side, in_dim in (("user", user_in), ("item", s.item_dim)):
        for layer, (n_in, n_out) in (("hidden", (in_dim, s.hidden_dim)),
                                     ("out", (s.hidden_dim, s.dim))):
            out[f"{side}_tower/{layer}/kernel"] = (rng.standard_normal((n_in, n_out))
                                                   / math.sqrt(n_in)).astype(np.float32)
            out[f"{side}_tower/{layer}/bias"] = (0.01 * rng.standard_normal(n_out)
                                                 ).astype(np.float32)
        out[f"{side}_tower/norm/scale"] = (1 + 0.01 * rng.standard_normal(s.dim)
                                           ).astype(np.float32)
        out[f"{side}_tower/norm/bias"] = (0.01 * rng.standard_normal(s.dim)).astype(np.float32)
    if history and s.history_positions:
        out["history_position_logits"] = (0.02 * rng.standard_normal(s.history_len)
                                          ).astype(np.float32)
    out["log_temperature"] = np.asarray(math.log(s.temperature), np.float32)
    return out


def random_gradients(params: Mapping[str, np.ndarray], seed: int = 0) -> dict[str, np.ndarray]:
    """Gradients for the optimizer-only piece: small random arrays shaped like ``params``."""
    rng = np.random.default_rng(seed + 2)
    return {k: (1e-3 * rng.standard_normal(np.shape(v))).astype(np.float32)
            for k, v in params.items()}


# ---------------------------------------------------------------------------------------------
# Timing.


@dataclasses.dataclass
class Piece:
    """One profiled computation.

    Attributes:
      run: performs one repetition (state it updates lives in the closure) and returns its
        outputs: a dict with ``loss`` (and ``grads`` where gradients are the result) or the
        updated state.
      block: waits until ``run``'s outputs are computed (``jax.block_until_ready``; a no-op for
        PyTorch on the CPU).
      compile_s: ahead-of-time compilation before the first call (JAX), else 0.
      steps_per_run: training steps one ``run`` performs (``step_scanned``); times are
        reported per step.
    """

    run: Callable[[], Any]
    block: Callable[[Any], Any]
    compile_s: float = 0.0
    steps_per_run: int = 1


def time_piece(piece: Piece, *, repetitions: int, warmup: int) -> dict[str, Any]:
    """Wall-clock milliseconds of ``repetitions`` calls after ``warmup`` untimed ones: the
    median, quartiles, minimum and every time."""
    if repetitions < 1 or warmup < 0:
        raise ValueError(f"need repetitions >= 1 and warmup >= 0, got {repetitions}, {warmup}")
    _, seconds = harness.time_calls(lambda: piece.block(piece.run()), repetitions,
                                    warmup=warmup)
    times = [t * 1e3 for t in seconds]
    q = np.percentile(times, [25, 75])
    return {"median_ms": statistics.median(times), "p25_ms": float(q[0]),
            "p75_ms": float(q[1]), "min_ms": min(times), "times_ms": times,
            "compile_s": piece.compile_s}


# ---------------------------------------------------------------------------------------------
# JAX pieces.


def jax_model(shapes: ProfileShapes, inputs: Mapping[str, np.ndarray], *, history: bool,
              seed: int = 0, params: Mapping[str, np.ndarray] | None = None) -> Any:
    """recsys_jax's ``TwoTower`` over the inputs' tables, holding ``params`` (flat JAX names;
    default ``initial_params``)."""
    import jax.numpy as jnp
    from flax import nnx

    from recsys_jax.models.two_tower import TwoTower
    s = shapes
    model = TwoTower(inputs["user_features"], inputs["item_features"], rngs=nnx.Rngs(seed),
                     hidden_dim=s.hidden_dim, dim=s.dim, temperature=s.temperature,
                     history_ids=inputs["history_ids"] if history else None,
                     history_mask=inputs["history_mask"] if history else None,
                     history_positions=s.history_positions)
    flat = initial_params(shapes, history=history, seed=seed) if params is None else params
    state = nnx.state(model, nnx.Param)
    names = set()
    for path, variable in nnx.to_flat_state(state):
        key = "/".join(map(str, path))
        names.add(key)
        if key not in flat or flat[key].shape != variable.shape:
            raise ValueError(f"parameter {key} missing from params or of another shape")
        variable[...] = jnp.asarray(flat[key])
    if names != set(flat):
        raise ValueError(f"params has extra entries {sorted(set(flat) - names)}")
    nnx.update(model, state)
    return model


def jax_batch(inputs: Mapping[str, np.ndarray], *, history: bool) -> dict[str, Any]:
    """The training batch as ``steps.gather_batches`` builds it: ids, causal user inputs
    (history columns only with the history tower) and the ``weight`` column (all real rows)."""
    import jax
    batch = {"user": inputs["batch_user"], "item": inputs["batch_item"],
             "user_features": inputs["batch_user_features"],
             "weight": np.ones(len(inputs["batch_user"]), np.float32)}
    if history:
        batch.update(history_ids=inputs["batch_history_ids"],
                     history_mask=inputs["batch_history_mask"])
    return jax.device_put(batch)


def _jax_optimizer(model: Any, shapes: ProfileShapes) -> Any:
    """AdamW from the library's ``make_optimizer`` (constant rate, no decay on scalars)."""
    from flax import nnx

    from recsys_jax.training.optimizers import make_optimizer
    tx, _ = make_optimizer({"name": "adamw", "lr": shapes.lr,
                            "weight_decay": shapes.weight_decay, "schedule": "constant"},
                           steps_per_epoch=1, num_epochs=1)
    return nnx.Optimizer(model, tx, wrt=nnx.Param)


def _stateful(compiled: Callable, state: Any, *args: Any) -> Callable[[], Any]:
    """``run`` for a compiled ``f(state, *args) -> (state, out)`` that donates its state."""
    box = [state]

    def run() -> Any:
        box[0], out = compiled(box[0], *args)
        return box[0], out
    return run


def jax_pieces(shapes: ProfileShapes, inputs: Mapping[str, np.ndarray], *,
               scan_steps: int = 8, seed: int = 0,
               pieces: Sequence[str] = PIECES) -> dict[str, Piece]:
    """The JAX pieces (see the module docstring), compiled ahead of time.

    ``run()`` returns ``(state, metrics)`` for the steps (metrics as ``steps.py``: ``loss``,
    ``temperature``, ``weight``; per step for ``step_scanned``), ``{"loss", "grads"}`` for
    the towers and the loss, the new state for the optimizer.
    """
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from recsys_jax.tasks.retrieval_losses import in_batch_softmax_loss, make_retrieval_loss
    from recsys_jax.training import steps as steps_lib
    from recsys_jax.training.losses import weighted_mean
    loss_fn = make_retrieval_loss(num_items=shapes.num_items, item_log_q=inputs["log_q"],
                                  remove_accidental_hits=True)
    key = jax.random.key(seed)
    out: dict[str, Piece] = {}

    def compiled(fn: Callable, *args: Any) -> tuple[Callable, float]:
        t0 = time.perf_counter()
        exe = fn.lower(*args).compile()
        return exe, time.perf_counter() - t0

    def train_state(history: bool) -> tuple[Any, Any]:
        model = jax_model(shapes, inputs, history=history, seed=seed)
        return nnx.split((model, _jax_optimizer(model, shapes)))

    for name, history in (("step", True), ("step_no_history", False)):
        if name in pieces:
            graphdef, state = train_state(history)
            batch = jax_batch(inputs, history=history)
            exe, seconds = compiled(steps_lib.make_train_step(graphdef, loss_fn), state,
                                    batch, key)
            out[name] = Piece(_stateful(exe, state, batch, key), jax.block_until_ready,
                              seconds)
    if "step_scanned" in pieces and scan_steps > 0:
        graphdef, state = train_state(True)
        batches = jax.tree.map(lambda x: jnp.broadcast_to(x, (scan_steps,) + x.shape),
                               jax_batch(inputs, history=True))
        exe, seconds = compiled(steps_lib.make_train_steps(graphdef, loss_fn), state,
                                batches, key)
        out["step_scanned"] = Piece(_stateful(exe, state, batches, key),
                                    jax.block_until_ready, seconds, steps_per_run=scan_steps)

    for name, history in (("towers", True), ("towers_no_history", False)):
        if name in pieces:
            graphdef, state = nnx.split(jax_model(shapes, inputs, history=history, seed=seed))
            batch = jax_batch(inputs, history=history)

            def towers(state, batch, graphdef=graphdef):
                def trivial_loss(model):
                    users, items = model.encode_batch(batch, batch["item"])
                    return jnp.sum(users * items)
                loss, grads = nnx.value_and_grad(trivial_loss)(nnx.merge(graphdef, state))
                return {"loss": loss, "grads": grads}
            exe, seconds = compiled(jax.jit(towers), state, batch)
            out[name] = Piece(lambda exe=exe, state=state, batch=batch: exe(state, batch),
                              jax.block_until_ready, seconds)

    if "loss" in pieces:
        weight = jnp.ones((shapes.batch_size,), jnp.float32)
        items, log_q = jnp.asarray(inputs["batch_item"]), jnp.asarray(inputs["log_q"])
        user_vectors = jnp.asarray(inputs["user_vectors"])
        item_vectors = jnp.asarray(inputs["item_vectors"])
        temperature = jnp.asarray(shapes.temperature, jnp.float32)

        def softmax_loss(user_vectors, item_vectors, temperature, items, log_q, weight):
            def loss(u, v, t):
                # As make_retrieval_loss: log q of the candidates, weighted mean over rows.
                per_row = in_batch_softmax_loss(u, v, items, weight, t,
                                                candidate_log_q=log_q[items],
                                                remove_accidental_hits=True)
                return weighted_mean(per_row, weight)
            value, grads = jax.value_and_grad(loss, argnums=(0, 1, 2))(
                user_vectors, item_vectors, temperature)
            return {"loss": value, "grads": grads}
        args = (user_vectors, item_vectors, temperature, items, log_q, weight)
        exe, seconds = compiled(jax.jit(softmax_loss), *args)
        out["loss"] = Piece(lambda exe=exe: exe(*args), jax.block_until_ready, seconds)

    if "optimizer" in pieces:
        graphdef, state = train_state(True)
        # The gradients as a State of the model's Params: a second model holding them.
        grads = nnx.state(jax_model(shapes, inputs, history=True, seed=seed, params=(
            random_gradients(initial_params(shapes, history=True, seed=seed), seed))), nnx.Param)

        def update(state, grads):
            model, optimizer = nnx.merge(graphdef, state)
            optimizer.update(model, grads)
            return nnx.state((model, optimizer)), None
        exe, seconds = compiled(jax.jit(update, donate_argnums=0), state, grads)
        out["optimizer"] = Piece(lambda run=_stateful(exe, state, grads): run()[0],
                                 jax.block_until_ready, seconds)
    return out


# ---------------------------------------------------------------------------------------------
# PyTorch pieces.


def _torch_recipe(shapes: ProfileShapes, history: bool) -> Any:
    from benchmarks.torch_baseline.two_tower_training import TwoTowerRecipe
    s = shapes
    return TwoTowerRecipe(hidden_dim=s.hidden_dim, dim=s.dim, temperature=s.temperature,
                          history=history, history_positions=s.history_positions,
                          causal_inputs=True, optimizer="adamw", lr=s.lr,
                          weight_decay=s.weight_decay, logq=True, remove_accidental_hits=True,
                          batch_size=s.batch_size)


def torch_model(shapes: ProfileShapes, inputs: Mapping[str, np.ndarray], *, history: bool,
                seed: int = 0, params: Mapping[str, np.ndarray] | None = None) -> Any:
    """The baseline's ``TorchTwoTower`` over the inputs' tables, holding ``params`` (flat JAX
    names, loaded by ``load_jax_params``; default ``initial_params``)."""
    from benchmarks.torch_baseline.two_tower_training import build_torch_two_tower
    arrays = {k: inputs[k] for k in ("user_features", "item_features", "history_ids",
                                     "history_mask")}
    return build_torch_two_tower(arrays, _torch_recipe(shapes, history),
                                 initial_params(shapes, history=history, seed=seed)
                                 if params is None else params)


def torch_batch(inputs: Mapping[str, np.ndarray], *, history: bool) -> dict[str, np.ndarray]:
    """The batch as the positives ``TunedTrainer`` slices (history columns only with the
    history tower)."""
    batch = {"user": inputs["batch_user"], "item": inputs["batch_item"],
             "user_features": inputs["batch_user_features"]}
    if history:
        batch.update(history_ids=inputs["batch_history_ids"],
                     history_mask=inputs["batch_history_mask"])
    return batch


def torch_pieces(shapes: ProfileShapes, inputs: Mapping[str, np.ndarray], *, seed: int = 0,
                 pieces: Sequence[str] = PIECES) -> dict[str, Piece]:
    """The PyTorch pieces (see the module docstring; no ``step_scanned``), eager.

    ``run()`` returns ``{"loss"}`` for the steps, ``{"loss", "grads"}`` for the towers and the
    loss, ``{}`` for the optimizer.
    """
    import torch

    from benchmarks.torch_baseline.torch_two_tower import in_batch_softmax_loss
    from benchmarks.torch_baseline.two_tower_training import (
        TunedTrainer,
        make_optimizer,
        positive_tensors,
    )
    out: dict[str, Piece] = {}

    def no_wait(outputs: Any) -> Any:
        return outputs  # Eager CPU ops have finished when they return.

    for name, history in (("step", True), ("step_no_history", False)):
        if name in pieces:
            model = torch_model(shapes, inputs, history=history, seed=seed)
            batch = torch_batch(inputs, history=history)
            # The tuned loop's own optimizer (fused AdamW) and loss module; the batch is its
            # whole "epoch", so its columns are exactly one batch.
            trainer = TunedTrainer(model, batch, inputs["log_q"],
                                   _torch_recipe(shapes, history))

            def step(trainer=trainer) -> dict[str, Any]:
                # The body of TunedTrainer.train_epoch's loop.
                trainer.optimizer.zero_grad(set_to_none=True)
                loss = trainer.loss(*trainer.columns)
                loss.backward()
                trainer.optimizer.step()
                return {"loss": loss.detach()}
            out[name] = Piece(step, no_wait)

    for name, history in (("towers", True), ("towers_no_history", False)):
        if name in pieces:
            model = torch_model(shapes, inputs, history=history, seed=seed)
            users, items, *user_inputs = positive_tensors(torch_batch(inputs, history=history))

            def towers(model=model, users=users, items=items, user_inputs=user_inputs
                       ) -> dict[str, Any]:
                model.zero_grad(set_to_none=True)
                u = model.encode_users(user_inputs[0], users, *user_inputs[1:])
                loss = (u * model.item_embeddings(items)).sum()
                loss.backward()
                return {"loss": loss.detach(),
                        "grads": {n: p.grad for n, p in model.named_parameters()}}
            out[name] = Piece(towers, no_wait)

    if "loss" in pieces:
        leaves = [torch.tensor(inputs["user_vectors"], requires_grad=True),
                  torch.tensor(inputs["item_vectors"], requires_grad=True),
                  torch.tensor(shapes.temperature, dtype=torch.float32, requires_grad=True)]
        items = torch.as_tensor(inputs["batch_item"].astype(np.int64))
        log_q = torch.as_tensor(inputs["log_q"])

        def softmax_loss() -> dict[str, Any]:
            for leaf in leaves:
                leaf.grad = None
            loss = in_batch_softmax_loss(*leaves[:2], items, leaves[2],
                                         candidate_log_q=log_q[items],
                                         remove_accidental_hits=True)
            loss.backward()
            return {"loss": loss.detach(), "grads": tuple(leaf.grad for leaf in leaves)}
        out["loss"] = Piece(softmax_loss, no_wait)

    if "optimizer" in pieces:
        model = torch_model(shapes, inputs, history=True, seed=seed)
        optimizer = make_optimizer(model, _torch_recipe(shapes, True), fused=True)
        # Gradients loaded like parameters (same names and transposes), from a second model.
        grads = torch_model(shapes, inputs, history=True, seed=seed, params=random_gradients(
            initial_params(shapes, history=True, seed=seed), seed))
        for p, g in zip(model.parameters(), grads.parameters()):
            p.grad = g.detach().clone()

        def update() -> dict[str, Any]:
            optimizer.step()
            return {}
        out["optimizer"] = Piece(update, no_wait)
    return out


# ---------------------------------------------------------------------------------------------
# One framework in this process, and both in fresh processes.


def profile_framework(framework: str, shapes: ProfileShapes, *, repetitions: int = 20,
                      warmup: int = 3, scan_steps: int = 8, seed: int = 0,
                      pieces: Sequence[str] = PIECES) -> dict[str, dict[str, Any]]:
    """Times every piece of ``framework`` (``jax`` or ``torch``) in this process: piece →
    ``time_piece``'s figures plus ``loss`` (the first call's, where the piece has one).

    The first call (whose loss is kept) counts as one of the ``warmup`` calls; there is always
    at least that one. ``pieces`` selects a subset (the results keep ``PIECES`` order).
    """
    if framework not in FRAMEWORKS:
        raise ValueError(f"framework must be one of {FRAMEWORKS}, got {framework!r}")
    inputs = make_inputs(shapes, seed)
    built = (jax_pieces(shapes, inputs, scan_steps=scan_steps, seed=seed, pieces=pieces)
             if framework == "jax" else torch_pieces(shapes, inputs, seed=seed, pieces=pieces))
    results = {}
    for name in PIECES:  # Fixed order, whatever order the pieces were built in.
        if name not in built:
            continue
        piece = built[name]
        first = piece.block(piece.run())
        timing = time_piece(piece, repetitions=repetitions, warmup=max(0, warmup - 1))
        if piece.steps_per_run > 1:  # Per step; the compile time stays the whole call's.
            for k in ("median_ms", "p25_ms", "p75_ms", "min_ms"):
                timing[k] /= piece.steps_per_run
            timing["times_ms"] = [t / piece.steps_per_run for t in timing["times_ms"]]
        timing["steps_per_run"] = piece.steps_per_run
        timing["loss"] = piece_loss(first)
        results[name] = timing
    return results


def piece_loss(outputs: Any) -> float | None:
    """The loss in a piece's outputs (of the first step, for scanned steps), if it has one."""
    if isinstance(outputs, tuple) and len(outputs) == 2 and isinstance(outputs[1], dict):
        outputs = outputs[1]  # (state, metrics) of the JAX steps.
    if isinstance(outputs, dict) and "loss" in outputs:
        return float(np.asarray(outputs["loss"]).reshape(-1)[0])
    return None


def run_worker(framework: str, shapes: ProfileShapes, work_dir: Path, *, threads: int,
               repetitions: int, warmup: int, scan_steps: int, seed: int = 0,
               timeout_s: float | None = None) -> dict[str, Any]:
    """Profiles ``framework`` in a fresh interpreter with the thread environment of
    ``harness.thread_environment`` (``harness.run_worker_process``); returns its
    ``result.json``."""
    task = {"framework": framework, "shapes": dataclasses.asdict(shapes), "threads": threads,
            "repetitions": repetitions, "warmup": warmup, "scan_steps": scan_steps,
            "seed": seed}
    return harness.run_worker_process(task, work_dir, timeout_s=timeout_s,
                              module="benchmarks.torch_baseline.two_tower_profile")


def run_profile(shapes: ProfileShapes, *, threads: int | None = None, repetitions: int = 20,
                warmup: int = 3, scan_steps: int = 8, seed: int = 0,
                work_dir: str | None = None, timeout_s: float | None = None,
                log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Profiles both frameworks, each in its own worker process, and joins the results.

    Args:
      shapes: sizes and recipe (``ProfileShapes``; ``shapes_from_config`` for a config's).
      threads: CPU threads for both frameworks (default: the CPUs this process may use).
      repetitions: timed calls per piece (medians reported).
      warmup: untimed calls per piece before timing (after the JAX compile).
      scan_steps: batches per ``lax.scan`` in ``step_scanned`` (0: leave that piece out).
      seed: inputs and parameters.
      work_dir: where worker files go (default: a temporary directory).
      timeout_s: limit per worker.

    Returns:
      ``shapes``, settings, ``environment`` (machine, versions, each worker's threads),
      ``pieces`` (piece → ``jax_ms``, ``torch_ms``, ``torch_over_jax``, ``jax_compile_s``,
      losses) and the raw per-framework timings under ``frameworks``.
    """
    threads = threads or harness.default_threads()
    raw: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        for framework in FRAMEWORKS:
            t0 = time.perf_counter()
            raw[framework] = run_worker(framework, shapes, Path(tmp) / framework,
                                        threads=threads, repetitions=repetitions,
                                        warmup=warmup, scan_steps=scan_steps, seed=seed,
                                        timeout_s=timeout_s)
            log(f"{framework}: profiled {len(raw[framework]['pieces'])} pieces in "
                f"{time.perf_counter() - t0:.1f}s")
    return {
        "benchmark": "two_tower_profile", "shapes": dataclasses.asdict(shapes),
        "steps_per_epoch": shapes.steps_per_epoch, "threads": threads,
        "repetitions": repetitions, "warmup": warmup, "scan_steps": scan_steps, "seed": seed,
        "environment": harness.environment(threads, {f: [r] for f, r in raw.items()}),
        "pieces": join_pieces(raw["jax"]["pieces"], raw["torch"]["pieces"]),
        "frameworks": {f: r["pieces"] for f, r in raw.items()},
    }


def join_pieces(jax_results: Mapping[str, Any], torch_results: Mapping[str, Any]
                ) -> dict[str, dict[str, Any]]:
    """Per piece: both medians (ms), PyTorch/JAX, the JAX compile time and both losses."""
    out = {}
    for name in PIECES:
        j = jax_results.get(name)
        t = torch_results.get(JAX_ONLY.get(name, name))
        if j is None and t is None:
            continue
        jax_ms = None if j is None else j["median_ms"]
        torch_ms = None if t is None or name in JAX_ONLY else t["median_ms"]
        reference = None if t is None else t["median_ms"]
        out[name] = {"jax_ms": jax_ms, "torch_ms": torch_ms,
                     "torch_over_jax": (reference / jax_ms if reference and jax_ms else None),
                     "jax_compile_s": None if j is None else j["compile_s"],
                     "jax_loss": None if j is None else j.get("loss"),
                     "torch_loss": None if t is None or name in JAX_ONLY else t.get("loss")}
    return out


def _ms(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


def format_profile_markdown(result: Mapping[str, Any]) -> str:
    """The profile as Markdown: setup line, the per-piece table and derived differences."""
    s, env, pieces = result["shapes"], result["environment"], result["pieces"]
    workers = env.get("workers", {})
    versions = ", ".join(f"{k} {v}" for w in workers.values()
                         for k, v in w.get("framework", {}).items() if k in ("jax", "torch"))
    lines = [
        "## Two-tower training step, piece by piece: JAX vs PyTorch",
        "",
        f"Batch {s['batch_size']}, user features {s['user_dim']}, item features "
        f"{s['item_dim']}, {s['num_users']:,} users × {s['num_items']:,} items (the catalogue "
        f"the history pooling encodes every step), history length {s['history_len']} "
        f"(position weights {s['history_positions']}), towers hidden {s['hidden_dim']} → "
        f"{s['dim']}, in-batch softmax with logQ and accidental-hit removal, AdamW lr "
        f"{s['lr']:g} weight decay {s['weight_decay']:g}; random inputs (seed "
        f"{result['seed']}), the same initial parameters in both frameworks. Median of "
        f"{result['repetitions']} timed calls after {result['warmup']} warm-up calls; JAX "
        f"compiled ahead of time (compile time apart) and waited on with "
        f"`jax.block_until_ready`, PyTorch eager (fused AdamW, the tuned loop's step). CPU: "
        f"{env['cpu']}, {result['threads']} thread(s) for each framework, each in its own "
        f"process; {versions}.",
        "",
        "| piece | JAX ms | PyTorch ms | PyTorch/JAX | JAX compile (s) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, p in pieces.items():
        ratio = "—" if p["torch_over_jax"] is None else f"{p['torch_over_jax']:.2f}×"
        compile_s = "—" if p["jax_compile_s"] is None else f"{p['jax_compile_s']:.2f}"
        lines.append(f"| {LABELS[name]} | {_ms(p['jax_ms'])} | {_ms(p['torch_ms'])} | {ratio} "
                     f"| {compile_s} |")
    lines += ["", *derived_lines(result)]
    return "\n".join(lines) + "\n"


def derived_lines(result: Mapping[str, Any]) -> list[str]:
    """Differences that locate the time: the history tower's cost (a − b), what the
    pieces leave unexplained (a − c − d − e) and the step time per epoch."""
    pieces = result["pieces"]

    def get(name: str, side: str) -> float | None:
        return pieces.get(name, {}).get(f"{side}_ms")

    lines = []
    for side, label in (("jax", "JAX"), ("torch", "PyTorch")):
        a, b = get("step", side), get("step_no_history", side)
        c, c0 = get("towers", side), get("towers_no_history", side)
        d, e = get("loss", side), get("optimizer", side)
        parts = []
        if a is not None and b is not None:
            parts.append(f"history tower a − b = {a - b:.2f} ms ({(a - b) / a:.0%} of a)")
        if c is not None and c0 is not None:
            parts.append(f"towers c − c′ = {c - c0:.2f} ms")
        if None not in (a, c, d, e):
            parts.append(f"rest a − (c + d + e) = {a - c - d - e:.2f} ms (gathers, logQ, "
                         f"masks, graph glue{', dispatch' if side == 'jax' else ''})")
        if parts:
            lines.append(f"- {label}: " + "; ".join(parts) + ".")
    steps = result.get("steps_per_epoch")
    if steps:
        a_j, a_t = get("step", "jax"), get("step", "torch")
        scanned = get("step_scanned", "jax")
        epoch = [f"JAX {steps * a_j / 1e3:.3f} s (jitted step)" if a_j else None,
                 f"JAX {steps * scanned / 1e3:.3f} s (scanned)" if scanned else None,
                 f"PyTorch {steps * a_t / 1e3:.3f} s" if a_t else None]
        lines.append(f"- Per epoch ({steps} steps of {result['shapes']['num_train']:,} "
                     f"positives), step time only: " + ", ".join(x for x in epoch if x) + ".")
    return lines


def main(argv: list[str]) -> int:
    """Worker entry point: ``python -m benchmarks.torch_baseline.two_tower_profile TASK OUT``."""
    if len(argv) != 3:
        print(main.__doc__, file=sys.stderr)
        return 2
    task = json.loads(Path(argv[1]).read_text())
    out_dir = Path(argv[2])
    out_dir.mkdir(parents=True, exist_ok=True)
    threads = int(task["threads"])
    environment = harness.set_threads(threads)  # Before either framework is imported.
    framework = task["framework"]
    # framework_info: "jax" starts the JAX backend; anything else imports torch and calls
    # torch.set_num_threads(threads).
    environment["framework"] = harness.framework_info(framework, threads)
    t0 = time.perf_counter()
    pieces = profile_framework(framework, ProfileShapes(**task["shapes"]),
                               repetitions=int(task["repetitions"]),
                               warmup=int(task["warmup"]), scan_steps=int(task["scan_steps"]),
                               seed=int(task["seed"]))
    result = {"framework": framework, "environment": environment, "pieces": pieces,
              "worker_wall_s": time.perf_counter() - t0}
    harness.write_worker_result(out_dir, result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
