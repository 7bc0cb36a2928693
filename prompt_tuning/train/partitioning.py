"""SPMD partitioning: a `data` x `model` device mesh and the one table of logical axis rules.

Every parameter carries logical axis names (T5X's: vocab, embed, mlp, heads, kv, joined_kv,
relpos_buckets, abspos_buckets; prompt methods: prompt, prompt_embed, ...). `LOGICAL_AXIS_RULES` maps each to a
mesh axis or None (replicated). Frozen weights are sharded over `model` for model parallelism;
prompt-method parameters are replicated (a prompt is tiny and saves as one `.npy`). Batches are
sharded over `data`.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from prompt_tuning import errors

DATA_AXIS = "data"
MODEL_AXIS = "model"

# logical axis name -> mesh axis (None: replicated). T5X's `standard_logical_axis_rules` for
# 1-D parameter partitioning plus the prompt methods' axes.
LOGICAL_AXIS_RULES: tuple[tuple[str, Optional[str]], ...] = (
    ("batch", DATA_AXIS),
    ("vocab", MODEL_AXIS),
    ("embed", None),
    ("mlp", MODEL_AXIS),
    ("heads", MODEL_AXIS),
    ("kv", None),
    ("joined_kv", MODEL_AXIS),
    ("relpos_buckets", None),
    ("abspos_buckets", None),
    ("length", None),
    ("layers", None),
    # Prompt methods: replicated.
    ("prompt", None),
    ("prompt_embed", None),
    ("prompt_hidden", None),
    ("prefix_kv", None),
    ("tasks", None),
    ("ensemble", None),
)


class UnknownLogicalAxisError(ValueError):
  """A parameter uses a logical axis name the rules table does not list."""


def make_mesh(num_partitions: int = 1, devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A (data, model) mesh over `devices` (default: all) with `num_partitions` model shards.

  By default devices are ordered by process, so with several processes each `data` row lies
  within one process when `num_partitions` divides the devices per process.
  """
  if devices is None:
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
  devices = list(devices)
  if (not isinstance(num_partitions, int) or isinstance(num_partitions, bool)
      or num_partitions < 1 or len(devices) % num_partitions):
    raise errors.ConfigValueError(
        f"NUM_PARTITIONS={num_partitions!r} must be a positive whole number that divides the "
        f"{len(devices)} devices: pass e.g. --gin.NUM_PARTITIONS=1.")
  grid = np.asarray(devices).reshape(len(devices) // num_partitions, num_partitions)
  return Mesh(grid, (DATA_AXIS, MODEL_AXIS))


def process_batch_shard(mesh: Mesh) -> tuple[int, int]:
  """(index, count): this process feeds slice `index` of `count` equal slices of the global batch.

  Processes whose devices hold the same `data` rows of the mesh (a `model` axis spanning
  processes) must feed the same examples, so they share a slice: `count` is the number of
  distinct row groups, not the number of processes.
  """
  rows: dict[int, set[int]] = {}
  for (row, _), device in np.ndenumerate(mesh.devices):
    rows.setdefault(device.process_index, set()).add(row)
  groups = sorted({tuple(sorted(r)) for r in rows.values()})
  size = len(groups[0])
  if (any(len(g) != size or g != tuple(range(g[0], g[0] + size)) for g in groups)
      or sum(len(g) for g in groups) != mesh.shape[DATA_AXIS]):
    raise ValueError(
        f"the mesh {dict(mesh.shape)} splits the batch unevenly over the {len(rows)} processes "
        f"(rows per process: {sorted(rows.items())}): give every process the same number of "
        "devices and set NUM_PARTITIONS to divide it, or to a multiple of it.")
  return groups.index(tuple(sorted(rows[jax.process_index()]))), len(groups)


def logical_to_spec(axes: Sequence[Optional[str]],
                    rules: Sequence[tuple[str, Optional[str]]] = LOGICAL_AXIS_RULES) -> PartitionSpec:
  """PartitionSpec of one array from its logical axis names (a mesh axis is used once)."""
  table = dict(rules)
  used, spec = set(), []
  for name in axes:
    if name is None:
      spec.append(None)
      continue
    if name not in table:
      raise UnknownLogicalAxisError(
          f"logical axis {name!r} has no partitioning rule: add it to "
          "prompt_tuning.train.partitioning.LOGICAL_AXIS_RULES (or the rules you pass).")
    mesh_axis = table[name]
    spec.append(mesh_axis if mesh_axis not in used else None)
    if mesh_axis is not None:
      used.add(mesh_axis)
  return PartitionSpec(*spec)


def _divisible(spec: PartitionSpec, shape: Sequence[int], mesh: Mesh) -> PartitionSpec:
  """`spec` with shardings dropped on dimensions the mesh axis does not divide."""
  return PartitionSpec(*(
      axis if axis is None or shape[i] % mesh.shape[axis] == 0 else None
      for i, axis in enumerate(spec)))


def param_shardings(axes_tree: Any, shapes_tree: Any, mesh: Mesh,
                    rules: Sequence[tuple[str, Optional[str]]] = LOGICAL_AXIS_RULES) -> Any:
  """Tree of NamedShardings for parameters with logical `axes_tree` and `shapes_tree`."""
  is_axes = lambda x: isinstance(x, tuple) and all(isinstance(a, (str, type(None))) for a in x)
  return jax.tree_util.tree_map(
      lambda axes, shape: NamedSharding(
          mesh, _divisible(logical_to_spec(axes, rules), np.shape(shape), mesh)),
      axes_tree, shapes_tree, is_leaf=is_axes)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension over `data`, the rest replicated."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def shard_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Global arrays from this process's part of the batch ([local batch, ...] each)."""
  sharding = batch_sharding(mesh)
  return {name: jax.make_array_from_process_local_data(sharding, np.asarray(value))
          for name, value in batch.items()}


def _global_array(value: Any, sharding: jax.sharding.Sharding) -> jax.Array:
  """A global array from a value every process holds in full (works across hosts)."""
  if isinstance(value, jax.Array) and value.is_fully_addressable and jax.process_count() == 1:
    return jax.device_put(value, sharding)
  host = np.asarray(value)
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def place(tree: Any, shardings: Any) -> Any:
  """`tree`'s arrays placed with `shardings` (a tree of the same structure, or one sharding)."""
  if isinstance(shardings, jax.sharding.Sharding):
    return jax.tree_util.tree_map(lambda x: _global_array(x, shardings), tree)
  return jax.tree_util.tree_map(_global_array, tree, shardings)
