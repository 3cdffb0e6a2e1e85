"""Data parallelism with ``jax.sharding``: one mesh axis ``data`` over the devices, batches split along it,
parameters and data pools replicated. The same jitted step runs on 1 or N devices; XLA inserts the
cross-device reductions of the gradients. On several hosts, call ``jax.distributed.initialize()`` first
(the launchers' ``--distributed`` flag): the mesh then spans every host's devices and each host holds the
batch shards of its own devices.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def data_mesh(devices: Sequence[Any] | None = None) -> Mesh:
    """A 1-D mesh over ``devices`` (``jax.Device`` objects; default: all devices)."""
    return Mesh(np.asarray(list(devices) if devices is not None else jax.devices()), (DATA_AXIS,))


def check_batch_size(batch_size: int, mesh: Mesh, name: str = "batch_size") -> None:
    if batch_size % mesh.size:
        raise ValueError(f"config.{name}={batch_size} must be a multiple of the {mesh.size} devices of the data mesh")


def shard_batch(batch: dict[str, Any], mesh: Mesh, unsharded: Sequence[str] = ()) -> dict[str, Any]:
    """Inside a jitted function: splits every leaf of ``batch`` along its first axis over the mesh, except the
    entries named in ``unsharded`` (e.g. a candidate set shared by all examples), which stay replicated."""
    split, whole = NamedSharding(mesh, PartitionSpec(DATA_AXIS)), NamedSharding(mesh, PartitionSpec())
    return {
        k: jax.tree.map(lambda x, s=(whole if k in unsharded else split): jax.lax.with_sharding_constraint(x, s), v)
        for k, v in batch.items()
    }


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places ``tree`` on every device of the mesh."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))
