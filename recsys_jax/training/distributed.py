"""Several processes: one run as N cooperating processes (``jax.distributed``).

The same script runs once per process (one per host, or one per GPU); each process sees its own
devices and ``jax.devices()`` lists all of them, so the run's mesh (``sharding.make_mesh``)
spans every process and the compiled programs are the same as with one process. What differs:

* ``initialize`` must run once, before any JAX computation (the scripts call
  ``initialize_from_flags`` first thing in ``main``);
* each process feeds only its own rows of every batch (``sharding.place_batches``);
* only process 0 writes the workdir's files (``is_primary``); orbax checkpoints are written by
  all processes together, as orbax requires.

Where the settings come from, first found wins:

1. flags: ``--coordinator_address=host:port --num_processes=N --process_id=i``
   (``--local_device_ids=0,1`` restricts a process to some of its host's devices);
2. the environment: ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``
   (and ``JAX_LOCAL_DEVICE_IDS``, which JAX reads itself);
3. ``--distributed`` alone: ``jax.distributed.initialize()`` detects the settings of a cluster
   launcher (SLURM, Open MPI, Cloud TPU, Kubernetes).

With none of these nothing is initialised and the run is one process, as before.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags, logging

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


@dataclasses.dataclass(frozen=True)
class Settings:
    """What ``jax.distributed.initialize`` is given; ``None`` fields are left to JAX's cluster
    detection.

    Attributes:
      coordinator_address: ``host:port`` of process 0's coordinator service.
      num_processes: how many processes the run has.
      process_id: this process's index, ``0 … num_processes - 1``.
      local_device_ids: the devices of this host the process uses (default: all, except under
        SLURM or Open MPI on GPUs, where JAX gives each process one).
      auto_detect: initialise even when nothing above is set (a cluster launcher's variables).
    """

    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    local_device_ids: tuple[int, ...] | None = None
    auto_detect: bool = False

    @property
    def wanted(self) -> bool:
        """Whether these settings ask for several processes at all."""
        return self.auto_detect or any(v is not None for v in (
            self.coordinator_address, self.num_processes, self.process_id))


def settings_from(coordinator_address: str | None = None, num_processes: int | None = None,
                  process_id: int | None = None,
                  local_device_ids: Sequence[int | str] | None = None,
                  auto_detect: bool = False,
                  environ: dict[str, str] | None = None) -> Settings:
    """Settings from explicit values, falling back to the ``JAX_*`` environment variables.

    Raises:
      ValueError: when a count or index in the environment is not an integer.
    """
    environ = os.environ if environ is None else environ

    def env_int(name: str) -> int | None:
        value = environ.get(name, "").strip()
        if not value:
            return None
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"{name}={value!r} is not an integer") from None

    return Settings(
        coordinator_address=coordinator_address or environ.get(ENV_COORDINATOR) or None,
        num_processes=num_processes if num_processes is not None else env_int(
            ENV_NUM_PROCESSES),
        process_id=process_id if process_id is not None else env_int(ENV_PROCESS_ID),
        local_device_ids=(tuple(int(i) for i in local_device_ids) if local_device_ids
                          else None),
        auto_detect=auto_detect)


def initialize(settings: Settings) -> bool:
    """Joins the run's processes (``jax.distributed.initialize``) when ``settings`` ask for it;
    returns whether it did. Call once per process, before any JAX computation. With
    ``num_processes == 1`` (or nothing set) it does nothing: one process runs as before.

    Raises:
      RuntimeError: when JAX is already initialised for several processes.
    """
    if not settings.wanted or settings.num_processes == 1:
        return False
    if jax.distributed.is_initialized():
        raise RuntimeError("jax.distributed is already initialised; call initialize once")
    jax.distributed.initialize(
        coordinator_address=settings.coordinator_address,
        num_processes=settings.num_processes, process_id=settings.process_id,
        local_device_ids=list(settings.local_device_ids) if settings.local_device_ids
        else None)
    logging.info("process %d of %d: %d local device(s), %d in all", jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count())
    return True


def is_primary() -> bool:
    """Whether this process writes the run's files (process 0; true with one process)."""
    return jax.process_index() == 0


def is_multiprocess() -> bool:
    """Whether the run has several processes."""
    return jax.process_count() > 1


def barrier(name: str) -> None:
    """Waits until every process reached the barrier ``name`` (nothing with one process)."""
    if is_multiprocess():
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def local_copy(tree: Any) -> Any:
    """The arrays of ``tree`` copied to this process's default device, for work that no other
    process joins (each must be whole here: replicated, or on this process's devices only).
    Typed PRNG keys stay keys."""
    def copy(x):
        if not isinstance(x, jax.Array):
            return x
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(np.asarray(jax.random.key_data(x)),
                                            impl=jax.random.key_impl(x))
        return jnp.asarray(np.asarray(x))
    return jax.tree.map(copy, tree)


# Flags for the scripts (experiments/train.py and the workflow scripts), defined on demand so
# importing the library defines none.
_FLAGS: dict[str, flags.FlagHolder] = {}


def define_flags() -> None:
    """Defines ``--coordinator_address``, ``--num_processes``, ``--process_id``,
    ``--local_device_ids`` and ``--distributed`` (once; call at a script's import)."""
    if _FLAGS:
        return
    _FLAGS["coordinator_address"] = flags.DEFINE_string(
        "coordinator_address", None, "Several processes: host:port of process 0's coordinator "
        f"(default: ${ENV_COORDINATOR}). See docs/scaling_out.md.")
    _FLAGS["num_processes"] = flags.DEFINE_integer(
        "num_processes", None, f"Several processes: how many (default: ${ENV_NUM_PROCESSES}).")
    _FLAGS["process_id"] = flags.DEFINE_integer(
        "process_id", None, f"Several processes: this one's index (default: ${ENV_PROCESS_ID}).")
    _FLAGS["local_device_ids"] = flags.DEFINE_list(
        "local_device_ids", None, "Several processes: the local devices this process uses "
        "(default: all, or $JAX_LOCAL_DEVICE_IDS).")
    _FLAGS["distributed"] = flags.DEFINE_bool(
        "distributed", False, "Several processes, settings detected from the cluster launcher "
        "(SLURM, Open MPI, Cloud TPU) by jax.distributed.initialize().")


def initialize_from_flags() -> bool:
    """``initialize`` with the settings of the flags of ``define_flags`` (then the
    environment); returns whether several processes were joined."""
    if not _FLAGS:
        raise RuntimeError("call distributed.define_flags() at the script's import first")
    return initialize(settings_from(
        _FLAGS["coordinator_address"].value, _FLAGS["num_processes"].value,
        _FLAGS["process_id"].value, _FLAGS["local_device_ids"].value,
        auto_detect=_FLAGS["distributed"].value))
