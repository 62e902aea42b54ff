"""Host-side data for training: labelled graphs, per-epoch order, buckets and padded batches.

Graphs are built once (``build_graphs``, with per-``config_type`` weights folded into the per-graph
weights). The order of epoch e is a permutation drawn from a NumPy generator seeded with (seed, e)
(``epoch_order``), so it depends on the position in training alone. Batches are padded to a few
static shapes chosen once per run (``plan_buckets``), so a jitted step compiles once per bucket.
"""

from __future__ import annotations

import hashlib
from typing import Optional, Sequence

import jax
import jraph
import numpy as np

from jace.data.configuration import Configuration
from jace.data.graph import Bucket, batch_graphs, choose_bucket, graphs_from_configurations, make_buckets, pad_graph
from jace.data.io import DataError
from jace.training.settings import TrainSettings, config_type_multipliers

__all__ = [
    "check_labels",
    "build_graphs",
    "cast_graph",
    "epoch_order",
    "plan_buckets",
    "epoch_plan",
    "pad_batch",
    "fixed_batches",
    "fingerprint",
]


def check_labels(configs: Sequence[Configuration], settings: TrainSettings, what: str = "training") -> None:
    """Raise ``DataError`` when a weighted observable has no labels (naming the configurations)."""
    lam = settings.max_loss_weights()
    missing_e, missing_f = [], []
    for c in configs:
        me, mf, _ = config_type_multipliers(settings.config_type_weights, c.config_type)
        if c.energy is None and lam.energy * me * c.weight * c.energy_weight > 0:
            missing_e.append(c.source)
        if c.forces is None and c.n_atoms > 1 and lam.forces * mf * c.weight * c.forces_weight > 0:
            missing_f.append(c.source)

    def names(lst):
        return ", ".join(lst[:5]) + (f" and {len(lst) - 5} more" if len(lst) > 5 else "")

    if missing_f:
        raise DataError(
            f"{len(missing_f)} {what} configuration(s) have no forces but forces are weighted "
            f"(forces_weight={lam.forces:g}): {names(missing_f)}. Check the forces key of the data, or set "
            "forces_weight: 0 (or config_type_weights {type: {forces: 0}}) to train on energies only"
        )
    if missing_e:
        raise DataError(
            f"{len(missing_e)} {what} configuration(s) have no energy but energies are weighted "
            f"(energy_weight={lam.energy:g}): {names(missing_e)}. Check the energy key of the data, or give "
            "them energy_weight 0"
        )
    if (lam.stress > 0 or lam.virial > 0) and not any(c.stress is not None for c in configs):
        raise DataError(
            f"stress_weight={lam.stress:g}, virial_weight={lam.virial:g}, but no {what} configuration has a "
            "stress label; check the stress key of the data, or set both weights to 0"
        )


def build_graphs(
    configs: Sequence[Configuration], model, settings: TrainSettings
) -> list[jraph.GraphsTuple]:
    """Unpadded NumPy graphs, with the per-config_type multipliers folded into the per-graph
    energy/forces/stress weights."""
    graphs = graphs_from_configurations(configs, model.cutoff, model.species)
    for c, g in zip(configs, graphs):
        me, mf, ms = config_type_multipliers(settings.config_type_weights, c.config_type)
        g.globals["energy_weight"] = g.globals["energy_weight"] * me
        g.globals["forces_weight"] = g.globals["forces_weight"] * mf
        g.globals["stress_weight"] = g.globals["stress_weight"] * ms
    return graphs


def cast_graph(graph: jraph.GraphsTuple, dtype) -> jraph.GraphsTuple:
    """Floating-point arrays of a (NumPy) graph cast to ``dtype``; integer and bool arrays unchanged."""
    dtype = np.dtype(dtype)
    return jax.tree.map(lambda x: x.astype(dtype) if np.issubdtype(np.asarray(x).dtype, np.floating) else x, graph)


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The permutation of the training set in ``epoch`` (a function of (seed, epoch) only)."""
    return np.random.default_rng([int(seed), int(epoch)]).permutation(n)


def _groups(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


def _size(graphs, grp) -> tuple[int, int]:
    return sum(int(graphs[k].n_node[0]) for k in grp), sum(int(graphs[k].n_edge[0]) for k in grp)


def plan_buckets(
    graphs: Sequence[jraph.GraphsTuple], batch_size: int, seed: int, n_buckets: int, n_epochs: int = 4
) -> list[Bucket]:
    """Static shapes for training batches, fixed for the whole run.

    Covers the batches of the first ``n_epochs`` shuffles (a sample of the size distribution) and the
    largest batch any shuffle can make (the ``batch_size`` largest graphs by nodes and by edges), so
    every later epoch fits.
    """
    sizes = [
        _size(graphs, grp) for e in range(n_epochs) for grp in _groups(epoch_order(seed, e, len(graphs)), batch_size)
    ]
    nodes = sorted((int(g.n_node[0]) for g in graphs), reverse=True)
    edges = sorted((int(g.n_edge[0]) for g in graphs), reverse=True)
    sizes.append((sum(nodes[:batch_size]), sum(edges[:batch_size])))
    return make_buckets(sizes, batch_size, n_buckets)


def epoch_plan(
    graphs: Sequence[jraph.GraphsTuple], seed: int, epoch: int, batch_size: int, buckets: Sequence[Bucket],
    n_devices: int = 1,
) -> list[list[Optional[np.ndarray]]]:
    """The steps of an epoch: for each step, ``n_devices`` lists of graph indices (None: an empty slot).

    With one device every batch of ``epoch_order`` is a step. With D devices the batches are grouped by
    bucket, in order of completion, D to a step; the last step of a bucket is filled with empty slots.
    A function of (seed, epoch) only, so a resumed run replays it exactly.
    """
    groups = _groups(epoch_order(seed, epoch, len(graphs)), batch_size)
    if n_devices == 1:
        return [[g] for g in groups]
    pending: dict = {}
    steps = []
    for g in groups:
        b = choose_bucket(buckets, *_size(graphs, g), len(g))
        pending.setdefault(b, []).append(g)
        if len(pending[b]) == n_devices:
            steps.append(pending.pop(b))
    for b in buckets:
        if b in pending:
            steps.append(pending[b] + [None] * (n_devices - len(pending[b])))
    return steps


def pad_batch(graphs, grp, buckets, batch_size, dtype) -> jraph.GraphsTuple:
    """The graphs ``grp`` batched, padded to the first bucket that fits, floats cast to ``dtype``."""
    nn_, ne = _size(graphs, grp)
    b = choose_bucket(buckets, nn_, ne, len(grp))
    return cast_graph(pad_graph(batch_graphs([graphs[k] for k in grp]), b), dtype)


def fingerprint(configs: Sequence[Configuration]) -> str:
    h = hashlib.sha256()
    for c in configs:
        h.update(np.ascontiguousarray(c.numbers).tobytes())
        h.update(np.ascontiguousarray(c.positions).tobytes())
        h.update(repr(c.energy).encode())
    return h.hexdigest()[:16]


def fixed_batches(graphs: Sequence[jraph.GraphsTuple], batch_size: int, n_buckets: int, dtype):
    """(buckets, [(padded batch, graph indices)]) for a set evaluated in its own order."""
    groups = _groups(np.arange(len(graphs)), batch_size)
    buckets = make_buckets([_size(graphs, g) for g in groups], batch_size, n_buckets)
    return buckets, [(pad_batch(graphs, g, buckets, batch_size, dtype), g) for g in groups]
