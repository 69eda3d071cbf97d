"""What MF's optimizer update alone costs per epoch, in JAX and in PyTorch.

The MF recipe (``configs/mf_ml100k.py``: Adam with L2 weight decay, batch 256) updates *every*
parameter on every step, whichever rows the batch touched: the decay term and Adam's moments
make the update dense. This module times exactly that update, with nothing else (no forward, no
backward, no data), for the steps of one epoch on each model's real parameters:

  jax            the library's optimizer (``training.optimizers.make_optimizer`` on the config's
                 ``optimizer`` block) applied ``steps`` times inside one jitted ``lax.scan`` to
                 ``models.mf.MatrixFactorization``'s parameters (one table for users and items)
  torch          ``mf_training.make_adam`` (the baseline's ``torch.optim.Adam``, CPU default)
  torch_fused    the same with ``fused=True`` (the tuned variant's optimizer)

Gradients are fixed non-zero tensors. Whatever else an implementation of the recipe does, it
cannot run an epoch faster than this update, so the fastest row bounds the speed-up any
framework can reach over a given baseline epoch (``baseline epoch / floor``). Each framework is
timed in its own fresh process with the same thread settings (``harness.run_worker_process``).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import harness

VARIANTS = ("jax", "torch", "torch_fused")
GRADIENT = 1e-3  # The fixed gradient of every parameter entry.


def mf_parameter_shapes(num_users: int, num_items: int, dim: int) -> dict[str, tuple[int, ...]]:
    """The MF parameters per side, as ``TorchMF`` names them (the JAX model holds the same
    numbers in one table; see ``jax_update_epoch``)."""
    return {"user_embedding": (num_users, dim), "item_embedding": (num_items, dim),
            "user_bias": (num_users,), "item_bias": (num_items,), "global_mean": ()}


def jax_update_epoch(optimizer_config: Mapping[str, Any], shapes: Mapping[str, tuple],
                     steps: int) -> tuple[Callable, Any, Any]:
    """``(epoch_fn, params, opt_state)``: ``epoch_fn(params, opt_state)`` applies the library's
    optimizer ``steps`` times with the fixed gradients and returns the new pair.

    ``params`` are the ``nnx.Param`` state of a zero ``MatrixFactorization`` of the sizes in
    ``shapes``; ``per_side_params`` names them as ``shapes`` does.
    """
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from recsys_jax.models.mf import MatrixFactorization
    from recsys_jax.training.optimizers import make_optimizer

    tx, _ = make_optimizer(optimizer_config, steps_per_epoch=steps, num_epochs=1)
    num_users, dim = shapes["user_embedding"]
    model = MatrixFactorization(num_users, shapes["item_embedding"][0], dim, rngs=nnx.Rngs(0))
    params = jax.tree.map(jnp.zeros_like, nnx.state(model, nnx.Param))
    grads = jax.tree.map(lambda p: jnp.full(p.shape, GRADIENT, jnp.float32), params)

    def epoch_fn(params, opt_state):
        def step(carry, _):
            p, s = carry
            updates, s = tx.update(grads, s, p)
            return (optax.apply_updates(p, updates), s), None
        return jax.lax.scan(step, (params, opt_state), None, length=steps)[0]

    return jax.jit(epoch_fn, donate_argnums=(0, 1)), params, tx.init(params)


def per_side_params(params: Any, num_users: int) -> dict[str, np.ndarray]:
    """JAX MF parameters (``jax_update_epoch``'s) as NumPy, named per side like ``TorchMF``'s."""
    table, bias = np.asarray(params["embedding"][...]), np.asarray(params["bias"][...])
    return {"user_embedding": table[:num_users], "item_embedding": table[num_users:],
            "user_bias": bias[:num_users], "item_bias": bias[num_users:],
            "global_mean": np.asarray(params["global_mean"][...])}


def torch_update(shapes: Mapping[str, tuple], *, lr: float, weight_decay: float,
                 fused: bool) -> tuple[Callable[[], None], dict[str, Any]]:
    """``(step_fn, params)``: one step of ``mf_training.make_adam`` over a ``TorchMF`` of the
    given shapes, every gradient fixed."""
    import torch

    from benchmarks.torch_baseline.mf_training import MFRecipe, make_adam
    from benchmarks.torch_baseline.torch_mf import TorchMF

    num_users, dim = shapes["user_embedding"]
    model = TorchMF(num_users, shapes["item_embedding"][0], dim)
    for p in model.parameters():
        p.grad = torch.full_like(p, GRADIENT)
    optimizer = make_adam(model, MFRecipe(dim=dim, lr=lr, weight_decay=weight_decay),
                          fused=fused)
    # nn.Embedding tables are ``<name>.weight``; keyed here as the JAX model names them.
    return optimizer.step, {name.removesuffix(".weight"): p
                            for name, p in model.named_parameters()}


def time_variant(task: Mapping[str, Any]) -> dict[str, Any]:
    """Times one variant's update over an epoch's steps (median of ``repetitions`` epochs after
    one warm-up epoch; JAX's compilation apart)."""
    shapes = {k: tuple(v) for k, v in task["shapes"].items()}
    steps, repetitions = int(task["steps"]), int(task["repetitions"])
    # "jax" starts the JAX backend; the torch variants import torch and set its threads.
    framework = harness.framework_info(task["variant"], int(task["threads"]))
    if task["variant"] == "jax":
        import jax
        t0 = time.perf_counter()
        epoch_fn, params, opt_state = jax_update_epoch(task["optimizer"], shapes, steps)
        epoch_fn = epoch_fn.lower(params, opt_state).compile()
        compile_s = time.perf_counter() - t0
        state = [epoch_fn(params, opt_state)]

        def run():
            state[0] = epoch_fn(*state[0])
            jax.block_until_ready(state[0])
    else:
        step, _ = torch_update(shapes, lr=float(task["optimizer"]["lr"]),
                               weight_decay=float(task["optimizer"]["weight_decay"]),
                               fused=task["variant"] == "torch_fused")
        compile_s = 0.0

        def run():
            for _ in range(steps):
                step()
    median_s, times = harness.time_calls(run, repetitions, warmup=1)
    return {"variant": task["variant"], "epoch_update_s": median_s, "epoch_update_s_all": times,
            "per_step_us": median_s / steps * 1e6, "compile_s": compile_s,
            "framework": framework}


def run_floor(optimizer_config: Mapping[str, Any], shapes: Mapping[str, tuple], *, steps: int,
              threads: int | None = None, repetitions: int = 7,
              log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Times every variant in its own worker process; returns the joined results."""
    threads = threads or harness.default_threads()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in VARIANTS:
            task = {"variant": variant, "threads": threads, "steps": steps,
                    "repetitions": repetitions, "shapes": dict(shapes),
                    "optimizer": dict(optimizer_config)}
            results[variant] = harness.run_worker_process(
                task, Path(tmp) / variant, module="benchmarks.torch_baseline.optimizer_floor")
            log(f"{variant:>11}: {results[variant]['epoch_update_s'] * 1e3:.1f} ms per epoch "
                f"of {steps} updates")
    return {"shapes": {k: list(v) for k, v in shapes.items()}, "steps": steps,
            "num_parameters": int(sum(np.prod(s, dtype=np.int64) for s in shapes.values())),
            "repetitions": repetitions,
            "environment": harness.environment(threads, {v: [r] for v, r in results.items()}),
            "variants": results}


def format_markdown(result: Mapping[str, Any]) -> str:
    """The result as a Markdown table with its setup line."""
    env = result["environment"]
    labels = {"jax": "JAX (library optimizer, scanned)", "torch": "PyTorch Adam (CPU default)",
              "torch_fused": "PyTorch Adam (fused=True)"}
    lines = [f"MF optimizer update alone: {result['num_parameters']:,} parameters "
             f"({', '.join(f'{k} {tuple(v)}' for k, v in result['shapes'].items())}), "
             f"{result['steps']} updates per epoch, median of {result['repetitions']} epochs; "
             f"CPU: {env['cpu']}, {env['threads']} thread(s) for every framework.", "",
             "| variant | update-only epoch (ms) | per step (µs) |", "|---|---:|---:|"]
    for v, r in result["variants"].items():
        lines.append(f"| {labels[v]} | {r['epoch_update_s'] * 1e3:.1f} | "
                     f"{r['per_step_us']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    """``python -m benchmarks.torch_baseline.optimizer_floor TASK.json OUT_DIR``: the worker."""
    if len(argv) != 3:
        print(main.__doc__, file=sys.stderr)
        return 2
    task = json.loads(Path(argv[1]).read_text())
    settings = harness.set_threads(int(task["threads"]))
    result = {**time_variant(task), "environment": settings}
    harness.write_worker_result(argv[2], result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
