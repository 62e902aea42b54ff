"""Multi-ACE physics in float64 for every named model: symmetries, equivariance, derivatives, padding,
body order, and the equivalence of the one-layer `ace` model with linear ACE."""

import itertools

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from physics_helpers import random_cluster, random_crystal, random_orthogonal

from jace.data.configuration import Configuration
from jace.data.graph import Bucket, SpeciesMap, batch_graphs, graph_from_configuration, pad_graph
from jace.models.design import LinearACESpec, RadialSpec
from jace.models.multi_ace import MultiACEModel, preset

SPECIES = SpeciesMap.from_symbols(["Cu", "Au"])
CUTOFF = 4.0
BUCKET = Bucket(48, 1600, 4)  # one static shape for every structure in this file: one compile per model
TINY_RADIAL = RadialSpec(kind="bessel", n_max=4, envelope_p=5)

TINY = {
    "ace": dict(l_max=2, correlation=(2,), max_degree=(8.0, 7.0), radial=TINY_RADIAL),
    "nequip": dict(num_layers=2, channels=4, l_max=2, hidden_l_max=2, radial_mlp=(8,), radial=TINY_RADIAL),
    "botnet": dict(num_layers=2, channels=4, l_max=2, hidden_l_max=2, radial_mlp=(8,), radial=TINY_RADIAL),
    "mace": dict(channels=4, l_max=2, hidden_l_max=1, correlation=(3, 3), radial_mlp=(8,), radial=TINY_RADIAL),
}


def _tiny(name, seed=0, **overrides):
    key = (name, seed, tuple(sorted(overrides.items())))
    if key not in _MODELS:  # built once: every model compiles its predict function once per file
        _MODELS[key] = _build_tiny(name, seed, **overrides)
    return _MODELS[key]


_MODELS: dict = {}


def _build_tiny(name, seed=0, **overrides):
    spec = preset(name, ("Cu", "Au"), cutoff=CUTOFF, **{**TINY[name], **overrides})
    model = MultiACEModel(spec, e0=[-3.5, -2.1], scale=1.3, shift=0.2, avg_num_neighbors=8.0)
    g = _graph([random_cluster(np.random.default_rng(0), 4)])
    params = model.init(jax.random.PRNGKey(seed), g)
    # random, O(1) parameters everywhere (init may leave some at identity)
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(100 + seed), len(leaves))
    leaves = [x + 0.3 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
    return model.with_params(jax.tree_util.tree_unflatten(tree, leaves))


def _graph(configs, bucket=BUCKET):
    graphs = [graph_from_configuration(c, CUTOFF, SPECIES) for c in configs]
    return pad_graph(batch_graphs(graphs), bucket)


def _predict(model, configs, bucket=BUCKET):
    return model.predict_graph(_graph(configs, bucket))


@pytest.fixture(scope="module", params=["ace", "nequip", "botnet", "mace"])
def model(request):
    return _tiny(request.param)


def test_energy_invariant_under_rotation_inversion_translation_permutation(model):
    rng = np.random.default_rng(1)
    for cfg in [random_cluster(rng, 7), random_crystal(rng)]:
        q = random_orthogonal(rng, inversion=True)
        perm = rng.permutation(cfg.n_atoms)
        moved = Configuration(
            (cfg.positions @ q.T + rng.normal(size=3) * 3)[perm], cfg.numbers[perm], cfg.cell @ q.T, cfg.pbc
        )
        out = _predict(model, [cfg, moved])
        e, e2 = float(out.energy[0]), float(out.energy[1])
        assert abs(e - e2) < 1e-10 * max(1.0, abs(e)), (e, e2)
        n = cfg.n_atoms
        f, f2 = np.asarray(out.forces[:n]), np.asarray(out.forces[n : 2 * n])
        np.testing.assert_allclose(f2, (f @ q.T)[perm], atol=1e-10)
        np.testing.assert_allclose(out.stress[1], q @ np.asarray(out.stress[0]) @ q.T, atol=1e-10)
        assert np.abs(f).max() > 1e-4


def _layer_features(model, graph):
    """Output features h of every layer (captured intermediates)."""
    _, state = model.network.apply(
        {"params": model.params}, *model._inputs(graph), capture_intermediates=True, mutable=["intermediates"]
    )
    inter = state["intermediates"]
    return [inter[f"layer_{t}"]["__call__"][0][0] for t in range(model.spec.num_layers)]


@pytest.mark.parametrize("name", ["ace", "nequip", "botnet", "mace"])
def test_internal_features_are_equivariant(name):
    """h_{i,k,LM} of every layer transforms with the Wigner D of (L, (-1)^L) under rotations with inversion."""
    overrides = {"hidden_l_max": 2, "last_layer_scalars_only": False} if name == "ace" else {}
    m = _tiny(name, **overrides)
    rng = np.random.default_rng(2)
    cfg = random_cluster(rng, 6)
    q = random_orthogonal(rng, inversion=True)
    moved = Configuration(cfg.positions @ q.T, cfg.numbers, cfg.cell, cfg.pbc)
    feats = _layer_features(m, _graph([cfg]))
    feats_q = _layer_features(m, _graph([moved]))
    checked = 0
    for h, hq in zip(feats, feats_q):
        h, hq = np.asarray(h[: cfg.n_atoms]), np.asarray(hq[: cfg.n_atoms])
        l_max = int(round(np.sqrt(h.shape[1]))) - 1  # h: [n, (L+1)², K]
        for l in range(l_max + 1):
            d = np.asarray(e3nn.Irrep(l, (-1) ** l).D_from_matrix(jnp.asarray(q)))
            sl = slice(l * l, (l + 1) ** 2)
            np.testing.assert_allclose(hq[:, sl], np.einsum("ab,nbk->nak", d, h[:, sl]), atol=1e-10)
            if l > 0:
                assert np.abs(h[:, sl]).max() > 1e-6
                checked += 1
    assert checked >= 1


def _energy(model, cfg):
    return float(_predict(model, [cfg]).energy[0])


def test_forces_and_stress_match_finite_differences(model):
    rng = np.random.default_rng(5)
    h = 1e-5
    cluster, crystal = random_cluster(rng, 6), random_crystal(rng, skew=0.3)
    for cfg in (cluster, crystal):
        forces = np.asarray(_predict(model, [cfg]).forces[: cfg.n_atoms])
        for a, d in [(0, 0), (cfg.n_atoms - 1, 2)]:
            p, mm = cfg.positions.copy(), cfg.positions.copy()
            p[a, d] += h
            mm[a, d] -= h
            fd = -(_energy(model, Configuration(p, cfg.numbers, cfg.cell, cfg.pbc))
                   - _energy(model, Configuration(mm, cfg.numbers, cfg.cell, cfg.pbc))) / (2 * h)
            assert abs(fd - forces[a, d]) < 1e-7 * max(1.0, abs(fd)), (fd, forces[a, d])
    stress = np.asarray(_predict(model, [crystal]).stress[0])
    for a, b in [(0, 0), (1, 2)]:
        vals = []
        for s in (+h, -h):
            eps = np.zeros((3, 3))
            eps[a, b] += s / 2
            eps[b, a] += s / 2
            deform = np.eye(3) + eps
            vals.append(_energy(model, Configuration(crystal.positions @ deform, crystal.numbers, crystal.cell @ deform, crystal.pbc)))
        fd = (vals[0] - vals[1]) / (2 * h) / crystal.volume
        assert abs(fd - stress[a, b]) < 1e-7 * max(1.0, abs(fd)), (a, b, fd, stress[a, b])
    assert np.abs(stress).max() > 1e-6


def test_padding_and_batching_leave_results_unchanged(model):
    rng = np.random.default_rng(7)
    configs = [random_crystal(rng), random_cluster(rng, 5)]
    together = _predict(model, configs)
    other = _predict(model, configs, Bucket(64, 2000, 6))
    start = 0
    for k, c in enumerate(configs):
        alone = _predict(model, [c])
        for out in (together, other):
            np.testing.assert_allclose(out.energy[k], alone.energy[0], rtol=1e-12)
            np.testing.assert_allclose(out.forces[start : start + c.n_atoms], alone.forces[: c.n_atoms], atol=1e-12)
        start += c.n_atoms
    assert np.all(np.isfinite(np.asarray(other.forces)))
    assert np.all(np.asarray(other.energy[len(configs) :]) == 0)


def test_isolated_atom_has_a_position_independent_energy_and_zero_force(model):
    """Without neighbours a site energy is E0 + shift + scale · readout(embedding): finite, the same
    wherever the atom is, no force, and for the E0-normalised `ace` exactly E0 (its learned part is
    a product of neighbour densities, all zero)."""
    out = _predict(model, [
        Configuration(np.zeros((1, 3)), np.array([79]), np.zeros((3, 3)), [False] * 3),
        Configuration(np.array([[3.0, -1.0, 7.0]]), np.array([79]), np.zeros((3, 3)), [False] * 3),
    ])
    e = np.asarray(out.energy[:2])
    assert np.all(np.isfinite(e)) and abs(e[0] - e[1]) < 1e-12
    assert np.all(np.asarray(out.forces) == 0)
    if model.spec.normalisation == "e0":
        assert abs(e[0] - model.e0[1]) < 1e-12


def test_parameter_gradients_are_finite_with_padding(model):
    g = _graph([random_cluster(np.random.default_rng(8), 4)])
    from jace.models.potential import predict

    def loss(params):
        out = predict(model.site_energies, params, g)
        return jnp.sum(out.energy**2) + jnp.sum(out.forces**2)

    grads = jax.jit(jax.grad(loss))(model.params)
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(grads))


def test_jit_equals_eager():
    m = _tiny("mace")
    g = _graph([random_crystal(np.random.default_rng(9))])
    jitted = m.predict_graph(g)
    with jax.disable_jit():
        from jace.models.potential import predict

        eager = predict(m.site_energies, m.params, g)
    np.testing.assert_allclose(jitted.energy, eager.energy, rtol=1e-12)
    np.testing.assert_allclose(jitted.forces, eager.forces, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# Body order
# ------------------------------------------------------------------------------------------------


def _alternating_sum(fn, k, rng):
    """Σ_{T ⊆ S} (−1)^{|S|−|T|} fn(T) over a random set S of k neighbours of a centre atom at the origin."""
    neigh = rng.normal(size=(k, 3))
    neigh = (1.4 + 0.8 * rng.uniform(0, 1, (k, 1))) * neigh / np.linalg.norm(neigh, axis=1, keepdims=True)
    numbers = np.concatenate([[29], rng.choice([29, 79], size=k)])
    total, scale = 0.0, 0.0
    for size in range(k + 1):
        for subset in itertools.combinations(range(k), size):
            idx = [0] + [1 + s for s in subset]
            pos = np.concatenate([np.zeros((1, 3)), neigh])[idx]
            e = fn(Configuration(pos, numbers[idx], np.zeros((3, 3)), [False] * 3))
            total += (-1) ** (k - size) * e
            scale = max(scale, abs(e))
    return total, scale


def test_ace_with_correlation_two_is_three_body():
    """One-layer `ace`, ν = 2: the site energy's alternating sum over 3 neighbours vanishes (not over 2)."""
    m = _tiny("ace", seed=3)
    rng = np.random.default_rng(11)
    site = lambda cfg: float(_predict(m, [cfg]).site_energies[0])  # noqa: E731
    zero, scale = _alternating_sum(site, 3, rng)
    assert abs(zero) < 1e-11 * scale, (zero, scale)
    nonzero, scale = _alternating_sum(site, 2, rng)
    assert abs(nonzero) > 1e-8 * scale


def _alternating_total(fn, n_atoms, rng):
    """Σ_{T ⊆ S} (−1)^{|S|−|T|} fn(T) over all non-empty subsets T of a random cluster S of n atoms."""
    pos = random_cluster(rng, n_atoms, box=2.6, min_dist=1.3).positions
    numbers = rng.choice([29, 79], size=n_atoms)
    total, scale = 0.0, 0.0
    for size in range(1, n_atoms + 1):
        for subset in itertools.combinations(range(n_atoms), size):
            idx = list(subset)
            e = fn(Configuration(pos[idx], numbers[idx], np.zeros((3, 3)), [False] * 3))
            total += (-1) ** (n_atoms - size) * e
            scale = max(scale, abs(e))
    return total, scale


def test_two_layer_botnet_is_three_body():
    """Two ν = 1 layers with linear updates and linear readouts: the total energy is a 3-body expansion
    (the alternating sum over any 4 atoms vanishes, over 3 it does not). An MLP last readout — BOTNet's
    default — breaks body ordering, which the same test detects."""
    m = _tiny("botnet", seed=4, last_readout="linear")
    rng = np.random.default_rng(12)
    total = lambda cfg: _energy(m, cfg)  # noqa: E731
    zero, scale = _alternating_total(total, 4, rng)
    assert abs(zero) < 1e-11 * scale, (zero, scale)
    nonzero, scale = _alternating_total(total, 3, rng)
    assert abs(nonzero) > 1e-8 * scale
    nonlinear = _tiny("botnet", seed=4)  # last readout MLP
    broken, scale = _alternating_total(lambda cfg: _energy(nonlinear, cfg), 4, rng)
    assert abs(broken) > 1e-8 * scale


# ------------------------------------------------------------------------------------------------
# `ace` spans linear ACE
# ------------------------------------------------------------------------------------------------


def test_ace_model_spans_the_linear_ace_basis():
    """The one-layer `ace` model's product features are linear ACE's invariants, and with its weights set
    from linear-ACE coefficients it reproduces the linear ACE energies."""
    from jace.models.linear_ace import LinearACEModel, invariant_features, product_basis_for

    lin_spec = LinearACESpec(("Cu", "Au"), cutoff=CUTOFF, radial=TINY_RADIAL, l_max=2, correlation=2, max_degree=(8.0, 7.0))
    n_b = product_basis_for(lin_spec).n_functions()
    rng = np.random.default_rng(13)
    coeff = rng.normal(size=(2, n_b))
    e0 = np.array([-3.5, -2.1])
    lin = LinearACEModel(lin_spec, e0, coeff)

    spec = preset("ace", ("Cu", "Au"), cutoff=CUTOFF, l_max=2, correlation=(2,), max_degree=(8.0, 7.0), radial=TINY_RADIAL)
    ace = MultiACEModel(spec, e0=e0)
    configs = [random_cluster(rng, 6), random_crystal(rng)]
    g = _graph(configs)
    params = ace.init(jax.random.PRNGKey(0), g)
    # same features
    _, state = ace.network.apply({"params": params}, *ace._inputs(g), capture_intermediates=True, mutable=["intermediates"])
    b = state["intermediates"]["layer_0"]["product"]["__call__"][0][1][0][..., 0]
    b_lin = invariant_features(lin_spec, g)
    np.testing.assert_allclose(b, b_lin, atol=1e-12)
    # same energies with the weights set from the linear coefficients
    params = jax.tree.map(lambda x: x, params)
    params["layer_0"]["product"]["w_L0"] = jnp.asarray(coeff[:, :, None] * np.sqrt(n_b))
    params["layer_0"]["linear_update"]["w"] = jnp.ones_like(params["layer_0"]["linear_update"]["w"])
    params["layer_0"]["readout"]["w"] = jnp.ones_like(params["layer_0"]["readout"]["w"])
    out = ace.with_params(params).predict_graph(g)
    ref = lin.predict_graph(g)
    np.testing.assert_allclose(out.energy, ref.energy, rtol=1e-12)
    np.testing.assert_allclose(out.forces, ref.forces, atol=1e-10)


def test_model_round_trips_through_a_file(tmp_path):
    from jace.models.io import load_model, save_model

    m = _tiny("mace")
    save_model(tmp_path / "m.jace", m)
    back = load_model(tmp_path / "m.jace")
    g = _graph([random_crystal(np.random.default_rng(14))])
    np.testing.assert_allclose(back.predict_graph(g).energy, m.predict_graph(g).energy, rtol=1e-13)
    assert back.spec == m.spec and back.n_params() == m.n_params()


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model 'mcae'.*did you mean 'mace'"):
        preset("mcae", ("Cu",))


def test_mace_puts_its_element_dependent_linear_where_mace_torch_does():
    """mace-torch's first interaction block mixes the atomic basis A with an element-dependent linear
    (``skip_tp`` with the one-hot) before the product, and its update linear is element-agnostic; later
    blocks have an element-dependent self-connection. jace's ``mace`` has the same weights in the same
    places (only mace-torch's redundant, non-reduced coupling weights are extra there)."""
    p = _tiny("mace").params
    k, l_max, hidden = TINY["mace"]["channels"], TINY["mace"]["l_max"], TINY["mace"]["hidden_l_max"]
    assert p["layer_0"]["linear_A_element"]["w"].shape == (2, l_max + 1, k, k)
    assert p["layer_0"]["linear_update"]["w"].shape == (hidden + 1, k, k)
    assert "self_connection" not in p["layer_0"] and "linear_A_element" not in p["layer_1"]
    assert p["layer_1"]["self_connection"]["w"].shape == (2, 1, k, k)
    with pytest.raises(ValueError, match="atomic_basis_element_dependent needs product: channelwise"):
        preset("ace", ("Cu",), atomic_basis_element_dependent=True)


def test_paired_edges_give_the_full_edge_computation(model):
    """With edges["pair_order"] (every padded jace graph) the radial MLPs run on half the edges; energy,
    forces and stress equal those of the same graph without it, computed on every edge."""
    rng = np.random.default_rng(12)
    g = _graph([random_crystal(rng, skew=0.2), random_cluster(rng, 5)])
    assert "pair_order" in g.edges
    full = g._replace(edges={k: v for k, v in g.edges.items() if k != "pair_order"})
    a, b = model.predict_graph(g), model.predict_graph(full)
    for x, y in ((a.energy, b.energy), (a.forces, b.forces), (a.stress, b.stress)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n_species,element_dependent", [(3, True), (10, True), (3, False)])
def test_channelwise_message_equals_the_weighted_product_basis(n_species, element_dependent):
    """ProductMessage's channel-wise message (parity-ordered monomials, B = D @ AA as matrix
    products, per-node weights by one-hot for few elements and by gather for many) equals
    m[n, M, k] = Σ_η W[z_n, η, k] B[n, η, M, k] / √n_η with B from ``couple_channels`` on the basis
    in its original monomial order."""
    from jace.basis.product import couple_channels, monomials
    from jace.layers.multi_ace import ProductMessage, channelwise_product_basis

    l_max, nu, l_out, k, n = 2, 3, 1, 5, 7
    rng = np.random.default_rng(3)
    a = jnp.asarray(rng.normal(size=(n, (l_max + 1) ** 2, k)))
    species = jnp.asarray(rng.integers(0, n_species, n))
    module = ProductMessage("channelwise", channelwise_product_basis(l_max, nu, l_out), l_out, k, n_species,
                            element_dependent)
    params = module.init(jax.random.PRNGKey(0), a, species)
    m, _ = jax.jit(module.apply)(params, a, species)

    plain = channelwise_product_basis(l_max, nu, l_out, by_parity=False)
    aa = monomials(plain, a)
    expected = []
    for L in range(l_out + 1):
        b = couple_channels(plain, aa, (L, (-1) ** L))  # [n, η, 2L+1, K]
        w = params["params"][f"w_L{L}"]
        wn = w[species] if element_dependent else jnp.broadcast_to(w, (n,) + w.shape)
        expected.append(jnp.einsum("nek,neMk->nMk", wn, b) / np.sqrt(b.shape[1]))
    np.testing.assert_allclose(m, jnp.concatenate(expected, axis=1), rtol=1e-12, atol=1e-12)
