"""Configurations → graphs: edges, labels, batching, padding to buckets, masks, edge vectors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jace.data.configuration import Configuration
from jace.data.graph import (
    Bucket,
    SpeciesMap,
    choose_bucket,
    edge_graph_index,
    edge_mask,
    edge_vectors,
    graph_from_configuration,
    graph_mask,
    graphs_from_configurations,
    iterate_batches,
    make_buckets,
    node_graph_index,
    node_mask,
    pad_graph,
)
from jace.data.neighbours import neighbour_list

CUTOFF = 5.0


@pytest.fixture(scope="module")
def graphs(emt_configs, cuau_species):
    return graphs_from_configurations(emt_configs, CUTOFF, cuau_species)


def test_graph_edges_match_neighbour_list(emt_configs, cuau_species, graphs):
    for c, g in zip(emt_configs, graphs):
        i, j, S = neighbour_list(c.positions, c.cell, c.pbc, CUTOFF)
        np.testing.assert_array_equal(g.receivers, i)
        np.testing.assert_array_equal(g.senders, j)
        np.testing.assert_array_equal(g.edges["shifts"], S)
        assert g.n_node.tolist() == [c.n_atoms] and g.n_edge.tolist() == [len(i)]
        np.testing.assert_array_equal(g.nodes["species"], (c.numbers == 79).astype(np.int32))
        np.testing.assert_array_equal(g.nodes["positions"], c.positions)
        np.testing.assert_array_equal(g.globals["cell"][0], c.cell)
        assert g.globals["energy"][0] == c.energy
        np.testing.assert_array_equal(g.nodes["forces"], c.forces)
        assert g.globals["has_stress"][0] == (c.stress is not None)
        r = c.positions[j] - c.positions[i] + S @ c.cell
        if len(i):
            assert np.linalg.norm(r, axis=1).max() < CUTOFF
    # The 4-atom cells (edge < 5 Å) have far more edges than atoms², so periodic images are in use.
    small = [g for c, g in zip(emt_configs, graphs) if c.n_atoms == 4]
    assert small and all(int(g.n_edge[0]) > 4 * 4 * 5 for g in small)


def test_unlabelled_configuration_and_unknown_element(cuau_species):
    c = Configuration(positions=[[0, 0, 0], [2.0, 0, 0]], numbers=[29, 29], cell=np.zeros((3, 3)), pbc=False)
    g = graph_from_configuration(c, CUTOFF, cuau_species)
    assert g.globals["has_energy"][0] == 0.0 and g.globals["has_forces"][0] == 0.0
    np.testing.assert_array_equal(g.nodes["forces"], 0.0)
    ni = Configuration(positions=[[0, 0, 0], [2.0, 0, 0]], numbers=[29, 28], cell=np.zeros((3, 3)), pbc=False,
                       source="x.xyz:9")
    with pytest.raises(ValueError, match=r"x\.xyz:9: atom 1 is element Ni \(Z=28\).*known elements: Cu, Au"):
        graph_from_configuration(ni, CUTOFF, cuau_species)
    with pytest.raises(ValueError, match="unknown chemical element 'Xx'"):
        SpeciesMap.from_symbols(["Cu", "Xx"])


def test_batches_are_padded_to_few_buckets(emt_configs, graphs):
    batch_size, n_buckets = 3, 3
    batches = list(iterate_batches(graphs, batch_size, n_buckets=n_buckets))
    shapes = {(b.nodes["positions"].shape[0], b.senders.shape[0], b.n_node.shape[0]) for b, _ in batches}
    assert len(shapes) <= n_buckets
    seen = np.concatenate([idx for _, idx in batches])
    np.testing.assert_array_equal(seen, np.arange(len(graphs)))  # every graph once, in order
    for batch, idx in batches:
        real_nodes = sum(int(graphs[k].n_node[0]) for k in idx)
        real_edges = sum(int(graphs[k].n_edge[0]) for k in idx)
        n_graph = batch.n_node.shape[0]
        assert n_graph == batch_size + 1
        # Masks: exactly the real entries are True, and padding comes last.
        nm, em, gm = np.asarray(node_mask(batch)), np.asarray(edge_mask(batch)), np.asarray(graph_mask(batch))
        assert nm.sum() == real_nodes and nm[:real_nodes].all()
        assert em.sum() == real_edges and em[:real_edges].all()
        assert gm.sum() == len(idx) and gm[: len(idx)].all()
        assert int(batch.n_node.sum()) == nm.shape[0] and int(batch.n_edge.sum()) == em.shape[0]
        # Graph indices of nodes/edges agree with n_node / n_edge.
        ngi, egi = np.asarray(node_graph_index(batch)), np.asarray(edge_graph_index(batch))
        np.testing.assert_array_equal(np.bincount(ngi, minlength=n_graph), batch.n_node)
        np.testing.assert_array_equal(np.bincount(egi, minlength=n_graph), batch.n_edge)
        assert np.all(gm[ngi[nm]]) and not np.any(gm[ngi[~nm]])
        # Edge vectors: real ones equal the unbatched ones; padding edges have length exactly 0.
        r = np.asarray(edge_vectors(jnp.asarray(batch.nodes["positions"]), jnp.asarray(batch.globals["cell"]), batch))
        expected = [
            graphs[k].nodes["positions"][graphs[k].senders]
            - graphs[k].nodes["positions"][graphs[k].receivers]
            + graphs[k].edges["shifts"] @ graphs[k].globals["cell"][0]
            for k in idx
        ]
        np.testing.assert_allclose(r[em], np.concatenate(expected), atol=1e-12)
        assert np.all(r[~em] == 0.0)
        # Labels travel with their graphs.
        np.testing.assert_array_equal(batch.globals["energy"][: len(idx)], [emt_configs[k].energy for k in idx])
        assert np.all(batch.globals["has_energy"][len(idx):] == 0)


def test_edge_vectors_gradients(graphs):
    g = graphs[2]
    pos, cell = jnp.asarray(g.nodes["positions"]), jnp.asarray(g.globals["cell"])

    def sum_sq(p, h):
        return jnp.sum(edge_vectors(p, h, g) ** 2)

    gp, gc = jax.grad(sum_sq, argnums=(0, 1))(pos, cell)
    r = np.asarray(edge_vectors(pos, cell, g))
    expected_p = np.zeros_like(np.asarray(pos))
    np.add.at(expected_p, g.senders, 2 * r)
    np.add.at(expected_p, g.receivers, -2 * r)
    np.testing.assert_allclose(gp, expected_p, atol=1e-10)
    expected_c = 2 * np.einsum("ea,eb->ab", g.edges["shifts"], r)[None]
    np.testing.assert_allclose(gc, expected_c, atol=1e-9)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    sizes=st.lists(st.tuples(st.integers(1, 200), st.integers(0, 5000)), min_size=1, max_size=30),
    n_buckets=st.integers(1, 5),
    n_graph=st.integers(1, 8),
)
def test_make_buckets_covers_every_batch(sizes, n_buckets, n_graph):
    buckets = make_buckets(sizes, n_graph, n_buckets)
    assert 1 <= len(buckets) <= n_buckets
    assert len(set(buckets)) == len(buckets)
    for nn, ne in sizes:
        b = choose_bucket(buckets, nn, ne, n_graph)
        assert b.n_node >= nn + 1 and b.n_edge >= ne and b.n_graph >= n_graph + 1
        assert b.n_node % 8 == 0 and b.n_edge % 8 == 0


def test_bucket_errors(graphs):
    with pytest.raises(ValueError, match="no batches"):
        make_buckets([], 4)
    with pytest.raises(ValueError, match="no bucket fits"):
        choose_bucket([Bucket(16, 16, 2)], 20, 10, 1)
    g = graphs[0]
    too_small = Bucket(int(g.n_node[0]), int(g.n_edge[0]) + 8, 2)  # no room for the padding node
    with pytest.raises(ValueError, match="does not fit"):
        pad_graph(g, too_small)
    padded = pad_graph(g, Bucket(int(g.n_node[0]) + 1, int(g.n_edge[0]), 2))  # exact fit works
    assert padded.nodes["positions"].shape[0] == int(g.n_node[0]) + 1
    assert np.asarray(node_mask(padded)).sum() == int(g.n_node[0])


def test_padded_batches_pair_every_edge_with_its_reverse(cuau_species):
    """pad_graph's edges["pair_order"] P puts the reverse (j ← i, −S) of edge P[k] at P[k + E/2], for a
    small skewed cell with many periodic images (self-image edges i ← i, ±S included) batched with a
    cluster, padding self-loops included; a list missing one direction, or an odd count, gets no order."""
    from jace.data.graph import batch_graphs, reverse_pair_order

    rng = np.random.default_rng(3)
    cell = np.array([[2.6, 0.0, 0.0], [1.9, 2.4, 0.0], [0.7, -0.5, 2.2]])
    crystal = Configuration(rng.random((2, 3)) @ cell, np.array([29, 79]), cell, np.array([True] * 3))
    cluster = Configuration(rng.normal(size=(5, 3)) * 1.5, np.array([29, 79, 29, 29, 79]), np.zeros((3, 3)), np.array([False] * 3))
    gs = graphs_from_configurations([crystal, cluster], CUTOFF, cuau_species)
    assert np.any(gs[0].senders == gs[0].receivers)  # self-image edges present
    n_edge = sum(int(g.n_edge[0]) for g in gs)
    padded = pad_graph(batch_graphs(gs), Bucket(16, n_edge + 10, 3))
    order = padded.edges["pair_order"]
    e = len(order)
    assert sorted(order.tolist()) == list(range(e))
    a, b = order[: e // 2], order[e // 2 :]
    np.testing.assert_array_equal(padded.senders[a], padded.receivers[b])
    np.testing.assert_array_equal(padded.receivers[a], padded.senders[b])
    np.testing.assert_array_equal(padded.edges["shifts"][a], -padded.edges["shifts"][b])
    np.testing.assert_array_equal(padded.edges["mask"][a], padded.edges["mask"][b])
    s, r, sh = padded.senders, padded.receivers, padded.edges["shifts"]
    assert reverse_pair_order(s[:-2], r[:-2], sh[:-2]) is not None  # two padding self-loops fewer: still paired
    assert reverse_pair_order(s[1:], r[1:], sh[1:]) is None  # odd
    keep = np.ones(e, bool)
    keep[[0, np.flatnonzero(r == r[0])[-1]]] = False  # drop one edge and another of the same centre
    assert reverse_pair_order(s[keep], r[keep], sh[keep]) is None
    assert "pair_order" not in pad_graph(batch_graphs(gs), Bucket(16, n_edge + 9, 3)).edges  # odd padding
