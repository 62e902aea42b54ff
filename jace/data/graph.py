"""Configurations → ``jraph.GraphsTuple``, batching and padding to a few fixed bucket sizes.

A jace graph carries everything the energy needs as a differentiable function of positions and cell:

  nodes:   positions [n_nodes, 3] Å, species [n_nodes] int32 (index into the model's element list),
           forces [n_nodes, 3] eV/Å (label, zeros where absent)
  edges:   shifts [n_edges, 3] integer cell shifts S (stored as float so they multiply the cell)
  senders:   [n_edges] neighbour j;  receivers: [n_edges] centre i
           (messages flow j → i; r_ij = positions[j] - positions[i] + S @ cell)
  masks:   nodes["mask"], edges["mask"], globals["mask"]: True for real entries, False for padding
  pairs:   edges["pair_order"] [n_edges] int32 (padded graphs only, when every edge has its reverse):
           a permutation P of the edges such that edge P[k + n_edges/2] is the reverse (j, i, −S) of
           edge P[k], so per-edge functions of |r_ij| alone are computed for half the edges
  globals: cell [n_graphs, 3, 3] Å, energy [n_graphs] eV, stress [n_graphs, 3, 3] eV/Å³,
           weight / energy_weight / forces_weight / stress_weight [n_graphs],
           has_energy / has_forces / has_stress [n_graphs] (1.0 where the label exists)

Padding (``pad_graph``) appends one dummy graph that owns all padding nodes and edges. Padding edges
connect the first padding node to itself with zero shift, so their length is exactly 0; every basis
function in jace is written to give a finite value and a finite gradient there, and models mask
padded edges and nodes, so padding never changes a result or makes a NaN.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Iterator, Sequence

import jax.numpy as jnp
import jraph
import numpy as np

from jace.data.configuration import Configuration
from jace.data.neighbours import neighbour_list


@dataclasses.dataclass(frozen=True)
class SpeciesMap:
    """The elements a model knows, in a fixed order; ``index(Z)`` is the species index."""

    atomic_numbers: tuple[int, ...]

    def __post_init__(self):
        if len(set(self.atomic_numbers)) != len(self.atomic_numbers):
            raise ValueError(f"duplicate elements in {self.atomic_numbers}")

    @classmethod
    def from_symbols(cls, symbols: Sequence[str]) -> "SpeciesMap":
        from ase.data import atomic_numbers

        out = []
        for s in symbols:
            if s not in atomic_numbers or atomic_numbers[s] == 0:
                raise ValueError(f"unknown chemical element {s!r}")
            out.append(atomic_numbers[s])
        return cls(tuple(out))

    @property
    def symbols(self) -> tuple[str, ...]:
        from ase.data import chemical_symbols

        return tuple(chemical_symbols[z] for z in self.atomic_numbers)

    def __len__(self) -> int:
        return len(self.atomic_numbers)

    def indices(self, numbers: np.ndarray, source: str = "<structure>") -> np.ndarray:
        lookup = {z: k for k, z in enumerate(self.atomic_numbers)}
        out = np.empty(len(numbers), dtype=np.int32)
        for a, z in enumerate(np.asarray(numbers)):
            if int(z) not in lookup:
                from ase.data import chemical_symbols

                sym = chemical_symbols[int(z)] if 0 < int(z) < len(chemical_symbols) else str(z)
                raise ValueError(
                    f"{source}: atom {a} is element {sym} (Z={int(z)}), which this model does not know; "
                    f"known elements: {', '.join(self.symbols)}"
                )
            out[a] = lookup[int(z)]
        return out


def graph_from_configuration(
    config: Configuration, cutoff: float, species: SpeciesMap, backend: str = "matscipy"
) -> jraph.GraphsTuple:
    """One configuration → one (unpadded, numpy) graph with its labels."""
    i, j, S = neighbour_list(config.positions, config.cell, config.pbc, cutoff, backend=backend, source=config.source)
    n = config.n_atoms
    forces = config.forces if config.forces is not None else np.zeros((n, 3))
    stress = config.stress if config.stress is not None else np.zeros((3, 3))
    g = lambda x: np.asarray([x], dtype=np.float64)  # noqa: E731
    return jraph.GraphsTuple(
        nodes={
            "positions": config.positions.astype(np.float64),
            "species": species.indices(config.numbers, config.source),
            "forces": np.asarray(forces, dtype=np.float64),
            "mask": np.ones(n, dtype=bool),
        },
        edges={"shifts": S.astype(np.float64), "mask": np.ones(len(i), dtype=bool)},
        senders=j.astype(np.int32),
        receivers=i.astype(np.int32),
        n_node=np.asarray([n], dtype=np.int32),
        n_edge=np.asarray([len(i)], dtype=np.int32),
        globals={
            "cell": config.cell[None].astype(np.float64),
            "energy": g(config.energy if config.energy is not None else 0.0),
            "stress": stress[None].astype(np.float64),
            "weight": g(config.weight),
            "energy_weight": g(config.energy_weight),
            "forces_weight": g(config.forces_weight),
            "stress_weight": g(config.stress_weight),
            "has_energy": g(config.energy is not None),
            "has_forces": g(config.forces is not None),
            "has_stress": g(config.stress is not None),
            "mask": np.ones(1, dtype=bool),
        },
    )


def graphs_from_configurations(configs: Iterable[Configuration], cutoff: float, species: SpeciesMap, backend="matscipy"):
    return [graph_from_configuration(c, cutoff, species, backend) for c in configs]


# ----------------------------------------------------------------------------------------------
# Padding and buckets
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Bucket:
    """A static batch shape: total nodes, edges and graphs, padding included."""

    n_node: int
    n_edge: int
    n_graph: int

    def fits(self, n_node: int, n_edge: int, n_graph: int) -> bool:
        # One node and one graph are always reserved for padding.
        return n_node + 1 <= self.n_node and n_edge <= self.n_edge and n_graph + 1 <= self.n_graph


def _round_up(x: int, multiple: int) -> int:
    return int(-(-x // multiple) * multiple)


def make_buckets(sizes: Sequence[tuple[int, int]], n_graph: int, n_buckets: int = 4) -> list[Bucket]:
    """Choose at most ``n_buckets`` static shapes that cover batches of the given (nodes, edges) sizes.

    Batches are sorted by edge count and split at quantiles; each bucket is the maximum over its group
    (plus the padding node), rounded up to a multiple of 8. Every batch fits the last bucket.
    """
    if not sizes:
        raise ValueError("no batches to make buckets for")
    arr = np.asarray(sorted(sizes, key=lambda s: (s[1], s[0])), dtype=np.int64)
    k = min(n_buckets, len(arr))
    cuts = [int(np.ceil(len(arr) * (q + 1) / k)) for q in range(k)]
    buckets = []
    for c in cuts:
        grp = arr[: max(c, 1)]
        b = Bucket(
            _round_up(int(grp[:, 0].max()) + 1, 8), max(_round_up(int(grp[:, 1].max()), 8), 8), n_graph + 1
        )
        if not buckets or b != buckets[-1]:
            buckets.append(b)
    # Make node capacities monotone so that the last bucket covers everything.
    max_nodes = _round_up(int(arr[:, 0].max()) + 1, 8)
    buckets[-1] = Bucket(max(buckets[-1].n_node, max_nodes), buckets[-1].n_edge, n_graph + 1)
    return buckets


def choose_bucket(buckets: Sequence[Bucket], n_node: int, n_edge: int, n_graph: int) -> Bucket:
    for b in buckets:
        if b.fits(n_node, n_edge, n_graph):
            return b
    raise ValueError(f"no bucket fits a batch of {n_node} nodes, {n_edge} edges, {n_graph} graphs: {list(buckets)}")


def reverse_pair_order(senders: np.ndarray, receivers: np.ndarray, shifts: np.ndarray) -> np.ndarray | None:
    """A permutation P [n_edges] of the edges with edge P[k + n_edges/2] the reverse of edge P[k].

    The reverse of the edge (i ← j, shift S) is (j ← i, −S); a full neighbour list (both directions
    of every pair, as every jace graph has) always has one. Edges that are their own reverse (the
    padding self-loops, S = 0) are paired with each other. Returns None when some edge has no reverse,
    or when their count is odd. Host-side (numpy), O(n_edges log n_edges).
    """
    e = len(senders)
    if e % 2:
        return None
    s = np.rint(np.asarray(shifts)).astype(np.int64)
    i, j = np.asarray(receivers, np.int64), np.asarray(senders, np.int64)
    key = (s[:, 2], s[:, 1], s[:, 0], j, i)  # lexsort: last key is the primary one
    key_rev = (-s[:, 2], -s[:, 1], -s[:, 0], i, j)
    order, order_rev = np.lexsort(key), np.lexsort(key_rev)
    if not all(np.array_equal(a[order], b[order_rev]) for a, b in zip(key, key_rev)):
        return None
    rev = np.empty(e, dtype=np.int64)
    rev[order_rev] = order  # edge order_rev[k], reversed, is edge order[k]
    if not np.array_equal(rev[rev], np.arange(e)):
        return None
    idx = np.arange(e)
    fwd, own = idx[idx < rev], idx[idx == rev]
    if len(own) % 2:
        return None
    return np.concatenate([fwd, own[0::2], rev[fwd], own[1::2]]).astype(np.int32)


def pad_graph(graph: jraph.GraphsTuple, bucket: Bucket) -> jraph.GraphsTuple:
    """Pad a (batched) numpy graph to the bucket's static shape with one extra dummy graph.

    Adds edges["pair_order"] (see the module docstring) when every edge, padding included, has its
    reverse.
    """
    n_node, n_edge, n_graph = int(graph.n_node.sum()), int(graph.n_edge.sum()), int(graph.n_node.shape[0])
    if not bucket.fits(n_node, n_edge, n_graph):
        raise ValueError(f"batch of {n_node} nodes, {n_edge} edges, {n_graph} graphs does not fit {bucket}")
    edges = {k: v for k, v in graph.edges.items() if k != "pair_order"}  # a batch's order is its own
    padded = jraph.pad_with_graphs(graph._replace(edges=edges), bucket.n_node, bucket.n_edge, bucket.n_graph)
    # jraph pads edges between the first padding node and itself; shifts are zero, so |r| = 0.
    order = reverse_pair_order(padded.senders, padded.receivers, padded.edges["shifts"])
    if order is not None:
        padded = padded._replace(edges={**padded.edges, "pair_order": order})
    return padded


def batch_graphs(graphs: Sequence[jraph.GraphsTuple]) -> jraph.GraphsTuple:
    return jraph.batch_np(list(graphs))


def iterate_batches(
    graphs: Sequence[jraph.GraphsTuple],
    batch_size: int,
    buckets: Sequence[Bucket] | None = None,
    n_buckets: int = 4,
) -> Iterator[tuple[jraph.GraphsTuple, np.ndarray]]:
    """Yield padded batches of at most ``batch_size`` graphs, in order.

    Returns pairs (padded_batch, graph_indices) where ``graph_indices`` are the positions of the
    batch's real graphs in ``graphs``. Batches are padded to at most ``n_buckets`` static shapes.
    """
    groups = [list(range(s, min(s + batch_size, len(graphs)))) for s in range(0, len(graphs), batch_size)]
    sizes = [
        (sum(int(graphs[k].n_node.sum()) for k in grp), sum(int(graphs[k].n_edge.sum()) for k in grp)) for grp in groups
    ]
    if buckets is None:
        buckets = make_buckets(sizes, batch_size, n_buckets)
    for grp, (nn, ne) in zip(groups, sizes):
        b = choose_bucket(buckets, nn, ne, len(grp))
        yield pad_graph(batch_graphs([graphs[k] for k in grp]), b), np.asarray(grp)


# ----------------------------------------------------------------------------------------------
# JAX-side helpers
# ----------------------------------------------------------------------------------------------


def _segment_index(counts: jnp.ndarray, total: int) -> jnp.ndarray:
    """[total] k such that entry e lies in segment k of consecutive segments of sizes ``counts``.

    A comparison against the cumulative counts ([total, n_segments], cheap for the few graphs of a
    batch) rather than ``jnp.repeat``: when the counts are compile-time constants (a jax-md energy
    function, a calculator), XLA constant-folds ``repeat``'s scan over every entry, which took seconds
    per compilation for ~10⁴ edges. Entries past the last segment get the last index.
    """
    ends = jnp.cumsum(jnp.asarray(counts))
    idx = jnp.sum(jnp.arange(total)[:, None] >= ends[None, :], axis=1)
    return jnp.minimum(idx, counts.shape[0] - 1).astype(jnp.int32)


def node_graph_index(graph: jraph.GraphsTuple) -> jnp.ndarray:
    """[n_nodes] index of the graph each node belongs to (static length)."""
    return _segment_index(graph.n_node, graph.nodes["positions"].shape[0])


def edge_graph_index(graph: jraph.GraphsTuple) -> jnp.ndarray:
    """[n_edges] index of the graph each edge belongs to (static length)."""
    return _segment_index(graph.n_edge, graph.senders.shape[0])


def edge_vectors(positions: jnp.ndarray, cell: jnp.ndarray, graph: jraph.GraphsTuple) -> jnp.ndarray:
    """[n_edges, 3] r_ij = r_j - r_i + S @ cell, Å, differentiable in positions and cell.

    Args:
      positions: [n_nodes, 3] Å.
      cell: [n_graphs, 3, 3] Å, lattice vectors as rows.
      graph: supplies senders (j), receivers (i), edges["shifts"] S [n_edges, 3] and the edge → graph map.
    """
    positions, cell = jnp.asarray(positions), jnp.asarray(cell)  # a closed-over numpy graph works under jit
    shifts = jnp.asarray(graph.edges["shifts"]).astype(positions.dtype)
    offsets = jnp.einsum("ea,eab->eb", shifts, cell[edge_graph_index(graph)])
    return positions[graph.senders] - positions[graph.receivers] + offsets


def node_mask(graph: jraph.GraphsTuple) -> jnp.ndarray:
    """[n_nodes] bool, True for real nodes (padding fills the stored mask with False)."""
    return graph.nodes["mask"]


def graph_mask(graph: jraph.GraphsTuple) -> jnp.ndarray:
    """[n_graphs] bool, True for real graphs."""
    return graph.globals["mask"]


def edge_mask(graph: jraph.GraphsTuple) -> jnp.ndarray:
    """[n_edges] bool, True for real edges."""
    return graph.edges["mask"]
