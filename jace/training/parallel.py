"""Data-parallel training with ``jax.sharding``: one step over D padded batches on D devices.

A parallel step takes D padded batches of the *same* bucket (static shape), stacked along a new leading
axis that is sharded over a one-dimensional device mesh with axis name ``"data"``; parameters and
optimiser state are replicated. The loss is computed by ``jace.training.loss.batch_loss`` on the
stacked batch: every device computes the penalty sums and label counts of its batch, and the sums and
counts are added over devices *before* dividing, so the loss, its gradient and the update are those of
the single-device step on one batch holding the union of the D batches (global normalisation, not
an average of per-device means). XLA inserts the cross-device reductions; the code contains no
explicit collective.

Usage on one host::

    mesh = data_mesh()                                   # all local devices, axis "data"
    step = make_parallel_train_step(model.site_energies, optimizer, settings, mesh, compute_stress=False)
    state = replicate(state, mesh)
    for group in same_bucket_groups(padded_batches, mesh.size):
        state, out = step(state, shard_batch(stack_batches(group), mesh), loss_weights, lr)

Multi-host (several processes, e.g. one per node under SLURM): call ``jax.distributed.initialize()``
(with coordinator address, number of processes and process id, or nothing where the cluster is
auto-detected) in every process before any other JAX call. ``jax.devices()`` then lists the devices of
all hosts and ``data_mesh()`` spans them. Each process builds the stacked batch rows of its own
devices (``jax.make_array_from_process_local_data(NamedSharding(mesh, P("data")), local_stack)``
instead of ``shard_batch``), all processes must use the same bucket and call the step in the same
order, and only process 0 (``jax.process_index() == 0``) should write logs and checkpoints.

``train(..., TrainSettings(data_parallel=True))`` in ``jace.training.loop`` uses these pieces on all
devices of one host: each epoch's batches are grouped by bucket, D to a step
(``jace.training.batching.epoch_plan``). The parallel step is tested to agree with the single-device
step (``tests/test_training.py``).
"""

from __future__ import annotations

from typing import Iterable, Iterator, Optional, Sequence

import jax
import jraph
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jace.training.settings import TrainSettings
from jace.training.steps import make_train_step

__all__ = [
    "DATA_AXIS",
    "data_mesh",
    "stack_batches",
    "masked_copy",
    "same_bucket_groups",
    "shard_batch",
    "replicate",
    "make_parallel_train_step",
]

DATA_AXIS = "data"


def data_mesh(devices: Optional[Sequence] = None) -> Mesh:
    """A one-dimensional mesh with axis "data" over ``devices`` (default: all devices)."""
    devices = list(jax.devices() if devices is None else devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def _shape(batch: jraph.GraphsTuple) -> tuple:
    return tuple((tuple(np.shape(x)), np.asarray(x).dtype.str) for x in jax.tree.leaves(batch))


def stack_batches(batches: Sequence[jraph.GraphsTuple]) -> jraph.GraphsTuple:
    """D padded NumPy batches of identical shapes → one batch with a leading axis of length D."""
    batches = list(batches)
    if not batches:
        raise ValueError("no batches to stack")
    ref = _shape(batches[0])
    for k, b in enumerate(batches[1:], 1):
        if _shape(b) != ref:
            raise ValueError(f"batch {k} has another padded shape than batch 0; stack batches of one bucket only")
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *batches)


def masked_copy(batch: jraph.GraphsTuple) -> jraph.GraphsTuple:
    """A batch of the same shape with every node, edge and graph masked out: it adds nothing to a loss.
    Used to fill the last group of a bucket when it has fewer than D batches."""
    return batch._replace(
        nodes={**batch.nodes, "mask": np.zeros_like(batch.nodes["mask"])},
        edges={**batch.edges, "mask": np.zeros_like(batch.edges["mask"])},
        globals={**batch.globals, "mask": np.zeros_like(batch.globals["mask"])},
    )


def same_bucket_groups(batches: Iterable[jraph.GraphsTuple], n_devices: int) -> Iterator[list[jraph.GraphsTuple]]:
    """Group padded batches by shape into lists of ``n_devices`` (in order of first appearance);
    incomplete groups are filled with ``masked_copy`` batches."""
    pending: dict = {}
    for b in batches:
        key = _shape(b)
        pending.setdefault(key, []).append(b)
        if len(pending[key]) == n_devices:
            yield pending.pop(key)
    for group in pending.values():
        yield group + [masked_copy(group[0])] * (n_devices - len(group))


def shard_batch(stacked: jraph.GraphsTuple, mesh: Mesh) -> jraph.GraphsTuple:
    """Place a stacked batch on the mesh, its leading axis split over "data"."""
    return jax.device_put(stacked, NamedSharding(mesh, P(DATA_AXIS)))


def replicate(tree, mesh: Mesh):
    """Place a pytree (parameters, optimiser state) on every device of the mesh."""
    return jax.device_put(tree, NamedSharding(mesh, P()))


def make_parallel_train_step(
    site_energy_fn,
    optimizer: optax.GradientTransformation,
    settings: TrainSettings,
    mesh: Mesh,
    compute_stress: bool = False,
    counter: Optional[dict] = None,
):
    """The jitted data-parallel step ``(state, stacked_batch, loss_weights [4], lr) -> (state, out)``.

    Same signature and result as the single-device step of ``jace.training.loop`` (see
    ``jace.training.steps.make_train_step``) on the union of the stacked batches; ``state`` replicated,
    ``stacked_batch`` sharded over "data" (``shard_batch``).
    """
    replicated = NamedSharding(mesh, P())
    sharded = NamedSharding(mesh, P(DATA_AXIS))
    step = make_train_step(site_energy_fn, optimizer, settings, compute_stress, counter)
    return jax.jit(
        step,
        in_shardings=(replicated, sharded, replicated, replicated),
        out_shardings=(replicated, replicated),
    )
