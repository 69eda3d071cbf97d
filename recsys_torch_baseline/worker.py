"""One benchmark measurement in a fresh interpreter: ``python -m recsys_torch_baseline.worker``.

Each (framework variant, repetition) trains in its own process so that (a) peak memory is the
variant's own, (b) one framework's thread pools (PyTorch's OpenMP workers, XLA's Eigen pool)
never compete with the other's, and (c) thread settings are applied before either framework
starts. This module imports neither framework at the top: the thread settings must come first.

Usage: ``python -m recsys_torch_baseline.worker TASK.json OUT_DIR``; the task names the model,
variant, seed, thread count and the ``.npz`` holding the data. Writes ``OUT_DIR/result.json``
and ``OUT_DIR/test_predictions.npy`` (MF) or ``user_embeddings.npy`` / ``item_embeddings.npy``
(two-tower; with task key ``"epoch_embeddings": true`` also every epoch's embeddings,
``epoch_user_embeddings.npy`` / ``epoch_item_embeddings.npy``, ``[epochs, n, dim]``).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any


def thread_environment(threads: int) -> dict[str, str]:
    """Environment variables that cap both frameworks' intra-op threads at ``threads``.

    PyTorch (OpenMP, MKL) reads ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` at start-up (and the
    worker also calls ``torch.set_num_threads``); XLA's CPU client sizes its intra-op Eigen
    pool from ``intra_op_parallelism_threads`` in ``XLA_FLAGS``. CPU affinity, set by the
    worker itself, is the hard limit for both.
    """
    xla = os.environ.get("XLA_FLAGS", "")
    xla = " ".join(f for f in xla.split() if "intra_op_parallelism_threads" not in f
                   and "xla_cpu_multi_thread_eigen" not in f)
    # XLA takes this one without the leading dashes (with them it aborts: "Unknown flag").
    xla = f"{xla} --xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={threads}"
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            "XLA_FLAGS": xla.strip()}


def _status_kib(field: str) -> int | None:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in KiB, if readable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Resets the kernel's peak-RSS mark (``VmHWM``) so later peaks exclude start-up."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def set_threads(threads: int) -> dict[str, Any]:
    """Pins this process to ``threads`` CPUs and caps the frameworks' pools (before import)."""
    os.environ.update(thread_environment(threads))
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if cpus and threads < len(cpus):
        os.sched_setaffinity(0, cpus[:threads])
    affinity = sorted(os.sched_getaffinity(0)) if cpus else None
    return {"threads": threads, "cpu_affinity": affinity,
            **{k: os.environ[k] for k in thread_environment(threads)}}


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


def framework_info(variant: str, threads: int) -> dict[str, Any]:
    """Versions and thread pools of the framework this worker runs (imports it)."""
    if variant == "jax":
        import jax
        jax.devices()  # Start the backend before the clock, as importing torch starts its pools.
        return {"jax": jax.__version__, "backend": jax.default_backend(),
                "device": jax.devices()[0].device_kind}
    import torch
    torch.set_num_threads(threads)
    return {"torch": torch.__version__, "torch_num_threads": torch.get_num_threads(),
            "torch_num_interop_threads": torch.get_num_interop_threads(), "device": "cpu"}


def run_two_tower_task(task: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """One two-tower run: fixed epochs, then the exported embeddings saved as ``.npy`` (and,
    when ``task["epoch_embeddings"]``, every epoch's training-time embeddings)."""
    threads = set_threads(int(task["threads"]))
    import numpy as np
    variant, seed, epochs = task["variant"], int(task["seed"]), int(task["epochs"])
    epoch_embeddings = bool(task.get("epoch_embeddings"))
    threads["framework"] = framework_info(variant, int(task["threads"]))
    if variant == "jax":
        import ml_collections
        from recsys_jax.data.features import TwoTowerFeatures
        from recsys_torch_baseline.jax_two_tower import fit_jax_two_tower
        config = ml_collections.ConfigDict(task["config"])
        features = TwoTowerFeatures.load(task["features"])
        test_features = TwoTowerFeatures.load(task["test_features"])
        with np.load(task["positives"]) as z:
            positives = {name: z[name] for name in z.files if name != "log_q"}
        rss_before = _status_kib("VmRSS")
        reset = _reset_peak_rss()
        record = fit_jax_two_tower(config, features, test_features, positives, seed=seed,
                                   epochs=epochs, epoch_embeddings=epoch_embeddings)
    else:
        from recsys_torch_baseline.two_tower_training import (TwoTowerRecipe,
                                                              fit_torch_two_tower)
        arrays = _load_two_tower_arrays(task)
        with np.load(task["init_params"]) as z:
            init = {k: z[k] for k in z.files}
        recipe = TwoTowerRecipe(**{**task["recipe"], "seed": seed, "epochs": epochs})
        rss_before = _status_kib("VmRSS")
        reset = _reset_peak_rss()
        record = fit_torch_two_tower(variant, recipe, arrays, init_params=init,
                                     compile_model=bool(task.get("compile")),
                                     epoch_embeddings=epoch_embeddings)
    from recsys_torch_baseline.two_tower_training import ARRAY_FIELDS
    peak_training = _status_kib("VmHWM") if reset else None
    for name in ARRAY_FIELDS:
        if getattr(record, name) is not None:
            np.save(out_dir / f"{name}.npy", getattr(record, name))
    result = {k: v for k, v in vars(record).items() if k not in ARRAY_FIELDS}
    return {**result, "seed": seed, "environment": threads,
            **_memory_fields(rss_before, peak_training)}


def _memory_fields(rss_before_kib: float | None, peak_training_kib: float | None
                   ) -> dict[str, float | None]:
    """RSS before training, peak during training (when the peak could be reset) and peak of
    the whole process, in MiB."""
    return {
        "rss_before_training_mib": None if rss_before_kib is None else rss_before_kib / 1024,
        "peak_rss_training_mib": None if peak_training_kib is None else peak_training_kib / 1024,
        # ru_maxrss is in KiB on Linux: the peak of the whole process, start-up included.
        "peak_rss_process_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_task(task: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Runs one measurement; returns the JSON-ready result (predictions saved apart)."""
    if task.get("model") == "two_tower":
        return run_two_tower_task(task, out_dir)
    threads = set_threads(int(task["threads"]))
    import numpy as np
    data = _load_data(task["data"])
    variant, seed = task["variant"], int(task["seed"])
    threads["framework"] = framework_info(variant, int(task["threads"]))
    if variant == "jax":
        import ml_collections
        from recsys_torch_baseline.jax_mf import fit_jax_mf
        config = ml_collections.ConfigDict(task["config"])
        rss_before = _status_kib("VmRSS")
        reset = _reset_peak_rss()
        record = fit_jax_mf(config, data, seed=seed, max_epochs=task.get("max_epochs"))
    else:
        from recsys_torch_baseline.mf_training import MFRecipe, fit_torch_mf
        recipe = MFRecipe(**{**task["recipe"], "seed": seed})
        rss_before = _status_kib("VmRSS")
        reset = _reset_peak_rss()
        record = fit_torch_mf(variant, recipe, data, compile_model=bool(task.get("compile")))
    peak_training = _status_kib("VmHWM") if reset else None
    np.save(out_dir / "test_predictions.npy", record.test_predictions)
    result = {k: v for k, v in vars(record).items() if k != "test_predictions"}
    return {**result, "seed": seed, "environment": threads,
            **_memory_fields(rss_before, peak_training)}


def main(argv: list[str]) -> int:
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
