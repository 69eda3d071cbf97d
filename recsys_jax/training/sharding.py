"""The device mesh and where every array of a run lives on it (JAX SPMD).

A run's devices form a 2-D ``jax.sharding.Mesh`` with a ``data`` and a ``model`` axis
(``config.mesh``; ``make_mesh``). What goes where:

* embedding tables (``tables.Table``) are split row-wise over the ``model`` axis: each device of
  a model group holds ``1/model`` of the rows. The layout is declared once, on the model side:
  ``Table`` carries the partitioning metadata ``out_sharding=("model", None, ...)`` and
  ``nnx.get_partition_spec`` reads it. The optimizer state of a table follows its rows: the
  dense optax moments inherit the metadata (``nnx.Optimizer`` copies it), the row-sparse
  optimizer declares it for its moments, accumulators and ``row_slots``;
* every other array (towers, μ, feature tables, the step counter) is replicated;
* batches are split over the ``data`` axis (``batch_sharding``; with ``model > 1`` a batch is
  replicated over the model axis of each data group).

Outside the train step arrays have their real shapes and live **at rest**
(``at_rest_sharding``): a table split over its columns (or its rows, when the model axis
divides them), so no device holds a whole table before, between or after training. Models and
optimizers are created straight onto the mesh that way (``create_on_mesh``), the train step
gets them padded and row-split (``Layout.shard``), and the validator, the caller and exports
get them back at rest (``Layout.unshard``).

The mesh is a context (``use_mesh``: ``jax.set_mesh``), as JAX recommends; ``current_mesh``
returns it, or ``None`` when the run has a single device, in which case nothing here is used
and every array lives on the default device as before (bit for bit).

Padding. JAX shards an axis only if the mesh axes divide its length, so ``Layout`` pads every
sharded axis (a table's rows) up to a multiple of the mesh axes' size with zero rows after the
real ones. Padding rows are never read (ids stay below the real row count), never ranked or
exported (``Layout.unshard`` cuts them off before any validator, export or fold-in sees the
model) and never move: their gradient is zero, and zero rows with zero gradients stay zero
under every optimizer here (weight decay of 0 is 0; row-sparse rules touch only rows read).
Checkpoints hold the padded arrays and record each array's real row count
(``checkpoints.CheckpointStore``), so a checkpoint restores onto any mesh.

Several processes (``distributed``): the mesh spans the devices of all of them. Host arrays
become global arrays here only: ``place_batches`` takes each process's own rows of a batch
(``process_batch_rows``), ``replicate`` the same whole arrays from every process, both through
``jax.make_array_from_process_local_data``; ``Layout.unshard`` returns every array replicated,
so each process can read it whole.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from recsys_jax.training.tables import ROW_AXIS

T = TypeVar("T")

DATA_AXIS = "data"
MODEL_AXIS = ROW_AXIS
AXES = (DATA_AXIS, MODEL_AXIS)


def make_mesh(data: int = -1, model: int = 1,
              devices: list[jax.Device] | None = None) -> Mesh:
    """A ``(data, model)`` mesh over ``devices`` (default: all of ``jax.devices()``).

    Args:
      data: devices on the data axis; -1: all the devices the model axis leaves.
      model: devices on the model axis (each table's rows are split over them); -1: all the
        devices the data axis leaves.
      devices: the devices to use.

    Raises:
      ValueError: when the sizes are not positive (or -1) or do not multiply to the number of
        devices.
    """
    devices = list(jax.devices() if devices is None else devices)
    count = len(devices)
    for name, size in (("mesh.data", data), ("mesh.model", model)):
        if size != -1 and size < 1:
            raise ValueError(f"{name} = {size} must be a positive device count or -1 (all the "
                             "devices the other axis leaves)")
    if data == -1 and model == -1:
        raise ValueError("mesh.data and mesh.model cannot both be -1")
    asked = f"mesh.data={data}, mesh.model={model}"
    if data == -1:
        data = count // model if count % model == 0 else 0
    elif model == -1:
        model = count // data if count % data == 0 else 0
    if data * model != count or data < 1 or model < 1:
        raise ValueError(
            f"a mesh of mesh.data × mesh.model devices must use all {count} device(s) "
            f"({jax.default_backend()}); got {asked}. Choose sizes whose "
            f"product is {count}, or limit the visible devices (CUDA_VISIBLE_DEVICES, "
            "--xla_force_host_platform_device_count on a CPU)")
    return jax.make_mesh((data, model), AXES, axis_types=(AxisType.Auto, AxisType.Auto),
                         devices=devices)


def mesh_from_config(config: Mapping[str, Any]) -> Mesh | None:
    """The mesh of a run config's ``mesh`` block (``data``, ``model``; both optional, default
    all devices on the data axis), or ``None`` when that is a single device: a one-device run
    uses none of this module."""
    block = config.get("mesh") or {}
    mesh = make_mesh(int(block.get("data", -1)), int(block.get("model", 1)))
    return mesh if mesh.size > 1 else None


@contextlib.contextmanager
def use_mesh(mesh: Mesh | None) -> Iterator[Mesh | None]:
    """Makes ``mesh`` the current mesh (``jax.set_mesh``) inside the block; ``None`` does
    nothing."""
    if mesh is None:
        yield None
        return
    with jax.set_mesh(mesh):
        yield mesh


def current_mesh() -> Mesh | None:
    """The mesh set by ``use_mesh`` (or ``jax.set_mesh``), or ``None`` when there is none or it
    has a single device."""
    mesh = jax.sharding.get_mesh()
    if not isinstance(mesh, Mesh) or mesh.empty or mesh.size <= 1:
        return None
    return mesh


def data_size(mesh: Mesh | None) -> int:
    """Devices on the data axis (1 without a mesh)."""
    return 1 if mesh is None else int(mesh.shape.get(DATA_AXIS, 1))


def batch_sharding(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
    """Arrays whose axis ``batch_axis`` is the batch: split over the data axis."""
    return NamedSharding(mesh, PartitionSpec(*([None] * batch_axis), DATA_AXIS))


def place_batches(columns: Mapping[str, Any], mesh: Mesh | None,
                  batch_axis: int = 0) -> dict[str, jax.Array]:
    """Puts host columns on the devices, their ``batch_axis`` split over the data axis (on the
    default device without a mesh). The one place batches are placed.

    With several processes each process passes only its own rows of the batch axis
    (``process_batch_rows``) and they are joined into one global array
    (``jax.make_array_from_process_local_data``); with one process its rows are all of them.
    """
    if mesh is None:
        return jax.device_put(dict(columns))
    return {name: jax.make_array_from_process_local_data(batch_sharding(mesh, batch_axis),
                                                         column)
            for name, column in columns.items()}


def process_batch_rows(mesh: Mesh | None, batch_size: int) -> slice:
    """The rows of every global batch of ``batch_size`` that this process feeds: those of its
    devices on the data axis (contiguous); all of them with one process or without a mesh."""
    if mesh is None or jax.process_count() == 1:
        return slice(0, batch_size)
    indices = batch_sharding(mesh).addressable_devices_indices_map((batch_size,)).values()
    parts = sorted({index[0].indices(batch_size)[:2] for index in indices})
    if any(a[1] != b[0] for a, b in zip(parts, parts[1:])):
        raise ValueError(f"process {jax.process_index()}'s devices hold the batch rows {parts}, "
                         "not one contiguous range: order the mesh's devices by process")
    return slice(parts[0][0], parts[-1][1])


def replicate(arrays: Mapping[str, Any], mesh: Mesh | None) -> dict[str, jax.Array]:
    """Host arrays copied whole onto every device of ``mesh`` (the default device without
    one). With several processes every process passes the same arrays (not compared: that
    would gather them all)."""
    if mesh is None:
        return jax.device_put(dict(arrays))
    return {name: jax.make_array_from_process_local_data(replicated(mesh), x, np.shape(x))
            for name, x in arrays.items()}


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, PartitionSpec())


def _axis_size(mesh: Mesh, entry: Any) -> int:
    if entry is None:
        return 1
    names = entry if isinstance(entry, tuple) else (entry,)
    return math.prod(mesh.shape[name] for name in names)


def _is_spec(x: Any) -> bool:
    return isinstance(x, PartitionSpec)


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where each array of a state (a model, or ``(model, optimizer)``) lives on a mesh.

    Attributes:
      mesh: the mesh.
      shardings: a ``NamedSharding`` per array (the state's structure), from the variables'
        partitioning metadata (``nnx.get_partition_spec``); arrays without metadata are
        replicated.
      logical: ``jax.ShapeDtypeStruct`` per array, the real shapes.
      padded: the shapes on the mesh (sharded axes padded to a multiple of their mesh axes),
        with their shardings: the abstract state the compiled steps see.
      at_rest: a ``NamedSharding`` per array for its real shape, outside the train step
        (``at_rest_sharding``): where a model is built (``create_on_mesh``) and what the
        validator, the caller and the exports see (``unshard``).
    """

    mesh: Mesh
    shardings: Any
    logical: Any
    padded: Any
    at_rest: Any

    @classmethod
    def of(cls, state: nnx.State, mesh: Mesh) -> Layout:
        """The layout of ``state`` (arrays or ``ShapeDtypeStruct`` leaves) on ``mesh``."""
        specs = nnx.get_partition_spec(state)
        shardings = jax.tree.map(lambda p: NamedSharding(mesh, p), specs, is_leaf=_is_spec)
        logical = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)

        def pad(x, sharding):
            shape = tuple(-(-n // s) * s for n, s in zip(
                x.shape, _spec_sizes(mesh, sharding.spec, len(x.shape)), strict=True))
            return jax.ShapeDtypeStruct(shape, x.dtype, sharding=sharding)
        at_rest = jax.tree.map(lambda x, sharding: at_rest_sharding(mesh, sharding.spec, x.shape),
                               logical, shardings)
        return cls(mesh, shardings, logical, jax.tree.map(pad, logical, shardings), at_rest)

    def padded_rows(self) -> dict[str, tuple[int, int]]:
        """``{path: (real rows, padded rows)}`` of the arrays this layout pads."""
        out = {}
        for (path, real), padded in zip(jax.tree_util.tree_leaves_with_path(self.logical),
                                        jax.tree.leaves(self.padded), strict=True):
            if real.shape != padded.shape:
                out[jax.tree_util.keystr(path, simple=True, separator="/")] = (
                    real.shape[0], padded.shape[0])
        return out

    def shard(self, state: Any, *, delete_inputs: bool = False) -> Any:
        """``state`` (real shapes, anywhere: host, one device, or at rest on the mesh) padded
        and placed on the mesh. Arrays at rest on the mesh go there in one compiled program,
        shard by shard, so no device ever holds a whole table. ``delete_inputs`` frees the
        arrays of ``state`` that were copied (the caller holds no other reference to them)."""
        placed = jax.tree.map(self._onto_mesh, state, self.at_rest)
        padded = self._pad_program(placed)
        if delete_inputs:
            for x in jax.tree.leaves(state) + jax.tree.leaves(placed):
                if isinstance(x, jax.Array) and not x.is_deleted() and not any(
                        x is y for y in jax.tree.leaves(padded)):
                    x.delete()
        return padded

    def _onto_mesh(self, x: Any, at_rest: NamedSharding) -> jax.Array:
        # An array already on this mesh stays where it is (no copy); anything else (a host or
        # one-device array) goes to its sharding at rest first.
        if isinstance(x, jax.Array) and x.sharding.device_set == set(self.mesh.devices.flat):
            return x
        return jax.device_put(x, at_rest)

    def unshard(self, state: Any) -> Any:
        """``state`` (padded, on the mesh) with the padding cut off: the real arrays, at rest on
        the mesh (``at_rest``: split over the model axis where it divides an axis), in one
        compiled program. With several processes every array comes back replicated instead,
        so each process can read it whole."""
        # Several processes: every process gets every array whole (host NumPy copies of split
        # arrays are what validators and exports read), replicated on the mesh.
        return self._cut_programs[jax.process_count() > 1](state)

    @functools.cached_property
    def _pad_program(self) -> Callable[[Any], Any]:
        def pad(state):
            return jax.tree.map(lambda x, target: x if x.shape == target.shape else jnp.pad(
                x, [(0, t - n) for n, t in zip(x.shape, target.shape, strict=True)]),
                state, self.padded)
        return jax.jit(pad, out_shardings=self.shardings)

    @functools.cached_property
    def _cut_programs(self) -> dict[bool, Callable[[Any], Any]]:
        # {replicate: program}: the real arrays at rest, or replicated (several processes).
        def cut(state):
            return jax.tree.map(lambda x, real: x if x.shape == real.shape else x[
                tuple(slice(0, n) for n in real.shape)], state, self.logical)
        whole = jax.tree.map(lambda _: replicated(self.mesh), self.at_rest)
        return {False: jax.jit(cut, out_shardings=self.at_rest),
                True: jax.jit(cut, out_shardings=whole)}

    def constrain(self, state: Any) -> Any:
        """Inside ``jit``: ``state`` (padded) pinned to its shardings, so the compiled step's
        output state keeps the layout of its input (``jax.lax.with_sharding_constraint``)."""
        return jax.lax.with_sharding_constraint(state, self.shardings)

    def constrain_batch(self, batch: Any, batch_axis: int = 0) -> Any:
        """Inside ``jit``: every array of ``batch`` split over the data axis on ``batch_axis``."""
        return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(
            x, batch_sharding(self.mesh, batch_axis)), batch)


def at_rest_sharding(mesh: Mesh, spec: PartitionSpec, shape: tuple[int, ...]) -> NamedSharding:
    """Where an array of real ``shape`` that trains as ``spec`` lives outside the train step.

    The train step splits a table's rows (padded to a multiple of the model axis). Outside it
    the arrays have their real shapes, which the model axis may not divide, so a row-split
    array is split over its **last** axis when the mesh axis divides it (an embedding's
    columns: row slices and lookups of it then stay split without moving data), else over
    its rows when they divide, else kept whole on every device (bias vectors and odd widths
    whose rows do not divide: 4 bytes or a few per row). Replicated arrays stay replicated.
    """
    entries = list(spec) + [None] * (len(shape) - len(spec))
    for axis, entry in enumerate(list(entries)):
        size = _axis_size(mesh, entry)
        if size == 1:
            continue
        entries[axis] = None
        for target in (len(shape) - 1, axis):
            if entries[target] is None and shape[target] % size == 0:
                entries[target] = entry
                break
    return NamedSharding(mesh, PartitionSpec(*entries))


def create_on_mesh(create: Callable[..., T], mesh: Mesh, *inputs: Any) -> T:
    """``create(*inputs)``, an NNX object (a model, an optimizer), with its arrays created
    straight onto ``mesh`` at rest (``at_rest_sharding`` of their partitioning metadata), in
    one compiled program: a table's initial values are computed shard by shard on the devices
    that hold them, never whole on one device. JAX's random bits do not depend on the
    sharding, so the values are those of ``create`` jitted on one device, bit for bit (run
    eagerly, some entries differ by one float32 rounding: XLA fuses the arithmetic).

    Args:
      create: builds the object from ``inputs``; traced twice (``nnx.eval_shape``, then
        ``jax.jit``), so it must be a function of its inputs and closed-over constants only.
      mesh: the mesh.
      inputs: NNX objects ``create`` reads (a model, for its optimizer); not modified.
    """
    graphdef, abstract = nnx.split(nnx.eval_shape(create, *inputs))
    at_rest = Layout.of(abstract, mesh).at_rest
    splits = [nnx.split(x) for x in inputs]

    def run(states):
        return nnx.split(create(*(nnx.merge(g, s) for (g, _), s in zip(splits, states,
                                                                            strict=True))))[1]
    with use_mesh(mesh):
        state = jax.jit(run, out_shardings=at_rest)([s for _, s in splits])
    return nnx.merge(graphdef, state)


def _spec_sizes(mesh: Mesh, spec: PartitionSpec, ndim: int) -> list[int]:
    entries = list(spec) + [None] * (ndim - len(spec))
    return [_axis_size(mesh, entry) for entry in entries]


def check_divisible(batch_size: int, mesh: Mesh | None, what: str = "training.batch_size"
                    ) -> None:
    """Raises ``ValueError`` unless the data axis divides ``batch_size``."""
    size = data_size(mesh)
    if batch_size % size:
        raise ValueError(f"{what} = {batch_size} must be a multiple of the data axis's "
                         f"{size} devices (mesh.data): each device takes an equal part of "
                         "every batch")
