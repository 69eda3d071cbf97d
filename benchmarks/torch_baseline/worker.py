"""One benchmark measurement in a fresh interpreter:
``python -m benchmarks.torch_baseline.worker TASK.json OUT_DIR`` (launched by
``harness.run_worker_process``, cwd the repository root, the root on ``PYTHONPATH``).

Each (framework variant, repetition) trains in its own process so that (a) peak memory is the
variant's own, (b) one framework's thread pools (PyTorch's OpenMP workers, XLA's Eigen pool)
never compete with the other's, and (c) thread settings are applied before either framework
(or NumPy) starts: this module imports only the standard library and the harness at the top.

The task names the model, variant, seed, thread count and the files holding the data. Writes
``OUT_DIR/result.json`` and ``OUT_DIR/test_predictions.npy`` (MF) or ``user_embeddings.npy`` /
``item_embeddings.npy`` (two-tower; for PyTorch with task key ``"epoch_embeddings": true``
also every epoch's embeddings, ``epoch_user_embeddings.npy`` / ``epoch_item_embeddings.npy``,
``[epochs, n, dim]``; the JAX side validates inside ``loop.fit`` instead).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import harness
from recsys_jax.console import quiet_startup


def _load_data(path: str) -> dict[str, Any]:
    import numpy as np
    with np.load(path) as z:
        data = {part: {col: z[f"{part}_{col}"] for col in ("user", "item", "rating")}
                for part in ("train", "val", "test")}
        data["num_users"] = int(z["num_users"])
        data["num_items"] = int(z["num_items"])
        data["rating_scale"] = tuple(float(x) for x in z["rating_scale"])
    return data


def _load_two_tower_arrays(task: dict[str, Any]) -> dict[str, Any]:
    """The two-tower inputs the parent saved, as plain NumPy (no recsys_jax, no JAX)."""
    import numpy as np
    out = {}
    for prefix, path in (("", task["features"]), ("test_", task["test_features"])):
        with np.load(path) as z:
            out[f"{prefix}user_features"] = z["user"]
            out[f"{prefix}history_ids"] = z["history_ids"]
            out[f"{prefix}history_mask"] = z["history_mask"]
            if not prefix:
                out["item_features"] = z["item"]
    with np.load(task["positives"]) as z:
        out.update({f"pos_{name}": z[name] for name in z.files if name != "log_q"})
        out["log_q"] = z["log_q"]
    return out


def run_two_tower_task(task: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """One two-tower run: fixed epochs, then the exported embeddings saved as ``.npy``."""
    threads = harness.set_threads(int(task["threads"]))
    import numpy as np
    variant, seed, epochs = task["variant"], int(task["seed"]), int(task["epochs"])
    threads["framework"] = harness.framework_info(variant, int(task["threads"]))
    if variant == "jax":
        import ml_collections

        from benchmarks.torch_baseline.jax_two_tower import fit_jax_two_tower, load_retrieval_data
        config = ml_collections.ConfigDict(task["config"])
        data = load_retrieval_data(task)
        memory = harness.TrainingMemory.start()
        record = fit_jax_two_tower(config, data, seed=seed, epochs=epochs)
    else:
        from benchmarks.torch_baseline.two_tower_training import TwoTowerRecipe, fit_torch_two_tower
        arrays = _load_two_tower_arrays(task)
        with np.load(task["init_params"]) as z:
            init = {k: z[k] for k in z.files}
        recipe = TwoTowerRecipe(**{**task["recipe"], "seed": seed, "epochs": epochs})
        memory = harness.TrainingMemory.start()
        record = fit_torch_two_tower(variant, recipe, arrays, init_params=init,
                                     compile_model=bool(task.get("compile")),
                                     epoch_embeddings=bool(task.get("epoch_embeddings")),
                                     device=task.get("torch_device", "cpu"))
    from benchmarks.torch_baseline.two_tower_training import ARRAY_FIELDS
    memory_fields = memory.fields()
    for name in ARRAY_FIELDS:
        if getattr(record, name) is not None:
            np.save(out_dir / f"{name}.npy", getattr(record, name))
    result = {k: v for k, v in vars(record).items() if k not in ARRAY_FIELDS}
    return {**result, "seed": seed, "environment": threads,
            **memory_fields}


def run_task(task: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Runs one measurement; returns the JSON-ready result (predictions saved apart)."""
    if task.get("model") == "two_tower":
        return run_two_tower_task(task, out_dir)
    threads = harness.set_threads(int(task["threads"]))
    import numpy as np
    data = _load_data(task["data"])
    variant, seed = task["variant"], int(task["seed"])
    threads["framework"] = harness.framework_info(variant, int(task["threads"]))
    if variant == "jax":
        import ml_collections

        from benchmarks.torch_baseline.jax_mf import fit_jax_mf
        config = ml_collections.ConfigDict(task["config"])
        memory = harness.TrainingMemory.start()
        record = fit_jax_mf(config, data, seed=seed, max_epochs=task.get("max_epochs"))
    else:
        from benchmarks.torch_baseline.mf_training import MFRecipe, fit_torch_mf
        recipe = MFRecipe(**{**task["recipe"], "seed": seed})
        memory = harness.TrainingMemory.start()
        record = fit_torch_mf(variant, recipe, data, compile_model=bool(task.get("compile")),
                              device=task.get("torch_device", "cpu"))
    memory_fields = memory.fields()
    np.save(out_dir / "test_predictions.npy", record.test_predictions)
    result = {k: v for k, v in vars(record).items() if k != "test_predictions"}
    return {**result, "seed": seed, "environment": threads,
            **memory_fields}


def main(argv: list[str]) -> int:
    quiet_startup()
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    task = json.loads(Path(argv[1]).read_text())
    out_dir = Path(argv[2])
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result = run_task(task, out_dir)
    result["worker_wall_s"] = time.perf_counter() - t0
    (out_dir / "result.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
