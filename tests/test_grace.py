"""Graph ACE (GRACE) in float64 with tiny models: symmetries, equivariant messages, derivatives, padding,
semilocality (grace-2l sees two cutoffs, grace-1l one), body order of the product recursion, cost
independent of the number of elements, the ZBL core repulsion (GRACE and multi-ACE), model files,
training of every preset and a `jace train` / `jace eval` round trip through the CLI."""

import itertools
import json

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from physics_helpers import random_cluster, random_crystal, random_orthogonal

from jace.basis.repulsion import COULOMB_EV_A, zbl_inner_cutoffs, zbl_pair_energy, zbl_screening
from jace.data.configuration import Configuration
from jace.data.graph import Bucket, SpeciesMap, batch_graphs, graph_from_configuration, pad_graph
from jace.layers.grace import finnis_sinclair
from jace.models.design import RadialSpec
from jace.models.grace import MODEL_NAMES, GraceModel, GraceSpec, preset
from jace.models.potential import predict

SPECIES = SpeciesMap.from_symbols(["Cu", "Au"])
CUTOFF = 4.0
BUCKET = Bucket(48, 1600, 4)  # one static shape for the physics tests: one compilation per model
RADIAL = RadialSpec(kind="chebyshev", n_max=4, envelope_p=5)
COMMON = dict(cutoff=CUTOFF, radial=RADIAL, radial_mlp=(8,), embedding_size=3, mlp_densities=2, readout_hidden=(4,))
TINY = {
    "grace-1l": dict(channels=3, l_max=2, correlation=3),
    "grace-2l": dict(channels=(3, 3), l_max=(2, 1), correlation=(2, 2), message_l_max=1, message_channels=3),
    "fs-ace": dict(channels=3, l_max=2, correlation=3),
}
E0 = [-3.5, -2.1]

_MODELS: dict = {}


def _tiny(name, seed=0, **overrides):
    """A tiny model with random O(1) parameters, built once per (name, seed, overrides)."""
    key = (name, seed, tuple(sorted(overrides.items())))
    if key not in _MODELS:
        spec = preset(name, ("Cu", "Au"), **{**COMMON, **TINY[name], **overrides})
        model = GraceModel(spec, e0=E0, scale=1.3, shift=0.2, avg_num_neighbors=6.0)
        g = _graph([random_cluster(np.random.default_rng(0), 4)])
        _MODELS[key] = model.with_params(jax.jit(model.init)(jax.random.PRNGKey(seed), g))
    return _MODELS[key]


def _graph(configs, bucket=BUCKET, species=SPECIES):
    return pad_graph(batch_graphs([graph_from_configuration(c, CUTOFF, species) for c in configs]), bucket)


def _predict(model, configs, bucket=BUCKET):
    return model.predict_graph(_graph(configs, bucket))


def _energy(model, cfg):
    return float(_predict(model, [cfg]).energy[0])


@pytest.fixture(scope="module", params=["grace-1l", "grace-2l", "fs-ace"])
def model(request):
    return _tiny(request.param)


# ------------------------------------------------------------------------------------------------
# Symmetries, derivatives, padding
# ------------------------------------------------------------------------------------------------


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
        np.testing.assert_allclose(out.site_energies[n : 2 * n], np.asarray(out.site_energies[:n])[perm], atol=1e-10)
        np.testing.assert_allclose(out.stress[1], q @ np.asarray(out.stress[0]) @ q.T, atol=1e-10)
        assert np.abs(f).max() > 1e-4


def test_atomic_basis_and_messages_are_equivariant_and_eager_equals_jit():
    """A of both layers and the indicators passed from layer 0 to layer 1 transform with the Wigner D of
    (L, (-1)^L) under a rotation with inversion. The network runs op by op here (``jax.disable_jit``),
    and its site energies equal those of the compiled ``predict``."""
    m = _tiny("grace-2l")
    rng = np.random.default_rng(2)
    cfg = random_cluster(rng, 6)
    q = random_orthogonal(rng, inversion=True)
    moved = Configuration(cfg.positions @ q.T, cfg.numbers, cfg.cell, cfg.pbc)
    graphs = [_graph([cfg]), _graph([moved])]
    with jax.disable_jit():
        runs = [m.network.apply({"params": m.params}, *m._inputs(g), mutable=["intermediates"]) for g in graphs]
    eager = np.asarray(m.e0)[np.asarray(graphs[0].nodes["species"])] + m.shift + m.scale * np.asarray(runs[0][0])
    jitted = np.asarray(m.predict_graph(graphs[0]).site_energies)
    np.testing.assert_allclose(eager[: cfg.n_atoms], jitted[: cfg.n_atoms], rtol=1e-12, atol=1e-12)
    inter, inter_q = (r[1]["intermediates"] for r in runs)
    assert "message" not in inter["layer_1"]  # the last layer passes nothing on
    for layer, name in [("layer_0", "A"), ("layer_0", "message"), ("layer_1", "A")]:
        h, hq = (np.asarray(x[layer][name][0][: cfg.n_atoms]) for x in (inter, inter_q))
        l_top = int(round(np.sqrt(h.shape[1]))) - 1
        assert l_top >= 1, (layer, name)
        for l in range(l_top + 1):
            d = np.asarray(e3nn.Irrep(l, (-1) ** l).D_from_matrix(jnp.asarray(q)))
            sl = slice(l * l, (l + 1) ** 2)
            np.testing.assert_allclose(hq[:, sl], np.einsum("ab,nbk->nak", d, h[:, sl]), atol=1e-10)
            assert np.abs(h[:, sl]).max() > 1e-6, (layer, name, l)


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
            strained = Configuration(crystal.positions @ deform, crystal.numbers, crystal.cell @ deform, crystal.pbc)
            vals.append(_energy(model, strained))
        fd = (vals[0] - vals[1]) / (2 * h) / crystal.volume
        assert abs(fd - stress[a, b]) < 1e-7 * max(1.0, abs(fd)), (a, b, fd, stress[a, b])
    assert np.abs(stress).max() > 1e-6


def test_padding_and_batching_leave_results_unchanged(model):
    """A structure alone (much padding) and batched with another (less) gives the same energy, forces
    and site energies; padding entries are zero and finite."""
    rng = np.random.default_rng(7)
    configs = [random_crystal(rng), random_cluster(rng, 5)]
    together = _predict(model, configs)
    start = 0
    for k, c in enumerate(configs):
        alone = _predict(model, [c])
        np.testing.assert_allclose(together.energy[k], alone.energy[0], rtol=1e-12)
        np.testing.assert_allclose(together.forces[start : start + c.n_atoms], alone.forces[: c.n_atoms], atol=1e-12)
        np.testing.assert_allclose(together.site_energies[start : start + c.n_atoms], alone.site_energies[: c.n_atoms],
                                   atol=1e-12)
        start += c.n_atoms
    assert np.all(np.isfinite(np.asarray(together.forces)))
    assert np.all(np.asarray(together.energy[len(configs):]) == 0)


def test_isolated_atom_gets_e0_plus_shift_and_no_force(model):
    """Without neighbours every density is zero, so E = E0 + shift wherever the atom is."""
    out = _predict(model, [
        Configuration(np.zeros((1, 3)), np.array([79]), np.zeros((3, 3)), [False] * 3),
        Configuration(np.array([[3.0, -1.0, 7.0]]), np.array([29]), np.zeros((3, 3)), [False] * 3),
    ])
    np.testing.assert_allclose(np.asarray(out.energy[:2]), [E0[1] + 0.2, E0[0] + 0.2], atol=1e-12)
    assert np.all(np.asarray(out.forces) == 0)


def test_float32_in_float32_out():
    """A float32 graph and float32 parameters give float32 energies close to the float64 ones (no
    float64 constant promotes the computation while x64 is enabled)."""
    m = _tiny("grace-2l")
    cfg = random_cluster(np.random.default_rng(3), 6)
    g = _graph([cfg])
    f32 = lambda x: x.astype(np.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x  # noqa: E731
    e32 = jax.jit(m.site_energies)(jax.tree.map(f32, m.params), jax.tree.map(f32, g))
    assert e32.dtype == jnp.float32
    e64 = np.asarray(m.predict_graph(g).site_energies)[: cfg.n_atoms]
    np.testing.assert_allclose(np.asarray(e32, dtype=np.float64)[: cfg.n_atoms], e64, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------------
# Semilocality: trees of depth 2 reach two cutoffs
# ------------------------------------------------------------------------------------------------


def _chain(x_k: float, x_m: float) -> Configuration:
    """i at the origin, j (2.5 Å away) its only neighbour, k within r_c of j but not of i, m within r_c of k only."""
    pos = np.array([[0.0, 0.0, 0.0], [2.5, 0.4, 0.0], [x_k, 0.9, 0.5], [x_m, 0.2, -0.6]])
    return Configuration(pos, np.array([29, 79, 29, 79]), np.zeros((3, 3)), [False] * 3)


def test_semilocality_two_layers_see_two_cutoffs_one_layer_one():
    base, k_moved, m_moved = _chain(5.5, 8.6), _chain(5.8, 8.6), _chain(5.5, 8.9)
    for c in (base, k_moved, m_moved):
        d = np.linalg.norm(c.positions - c.positions[0], axis=1)
        assert d[1] < CUTOFF < d[2] < 2 * CUTOFF < d[3]  # j near, k between one and two cutoffs, m beyond two
        d_j = np.linalg.norm(c.positions - c.positions[1], axis=1)
        assert d_j[2] < CUTOFF < d_j[3]
    for name, sees_k in (("grace-1l", False), ("grace-2l", True)):
        m = _tiny(name)
        out = _predict(m, [base, k_moved, m_moved])
        e_i = np.asarray(out.site_energies)[[0, 4, 8]]  # atom i of each structure
        if sees_k:
            assert abs(e_i[1] - e_i[0]) > 1e-6, e_i
        else:
            assert abs(e_i[1] - e_i[0]) < 1e-12, e_i
        assert abs(e_i[2] - e_i[0]) < 1e-12, (name, e_i)  # m is beyond two cutoffs: never seen


# ------------------------------------------------------------------------------------------------
# The product recursion: a linear one-layer model of order ν is (ν + 1)-body
# ------------------------------------------------------------------------------------------------


def _order_four_model():
    """One layer, l_max 1, products up to order 4, linear readout, E0 normalisation; random parameters."""
    if "order4" not in _MODELS:
        spec = preset("grace-1l", ("Cu", "Au"), **{**COMMON, "channels": 2, "l_max": 1, "correlation": 4,
                                                   "readout": "linear", "normalisation": "e0"})
        m = GraceModel(spec, e0=E0, avg_num_neighbors=4.0)
        _MODELS["order4"] = (m, m.init(jax.random.PRNGKey(3), _graph([random_cluster(np.random.default_rng(0), 3)])))
    return _MODELS["order4"]


def test_linear_readout_of_order_four_is_five_body():
    """One layer, products up to order 4, linear readout: the centre's site energy is a sum of terms of at
    most 4 neighbours, so its alternating sum over all subsets of 5 neighbours vanishes (not over 4)."""
    m, params = _order_four_model()
    rng = np.random.default_rng(11)
    neigh = rng.normal(size=(5, 3))
    neigh = (1.4 + 0.8 * rng.uniform(0, 1, (5, 1))) * neigh / np.linalg.norm(neigh, axis=1, keepdims=True)
    pos_all = np.concatenate([np.zeros((1, 3)), neigh])
    numbers = np.concatenate([[29], rng.choice([29, 79], size=5)])
    bucket = Bucket(6 * 32 + 1, 30 * 32, 33)
    site = jax.jit(m.site_energies)

    def alternating(k):
        configs, signs = [], []
        for size in range(k + 1):
            for subset in itertools.combinations(range(k), size):
                idx = [0] + [1 + s for s in subset]
                configs.append(Configuration(pos_all[idx], numbers[idx], np.zeros((3, 3)), [False] * 3))
                signs.append((-1) ** (k - size))
        e = np.asarray(site(params, _graph(configs, bucket)))
        first = np.cumsum([0] + [c.n_atoms for c in configs])[:-1]  # the centre of every structure
        return float(np.dot(signs, e[first])), float(np.abs(e[first]).max())

    zero, scale = alternating(5)
    assert abs(zero) < 1e-11 * scale, (zero, scale)
    nonzero, scale = alternating(4)
    assert abs(nonzero) > 1e-8 * scale, (nonzero, scale)


# ------------------------------------------------------------------------------------------------
# Chemistry through the embedding: cost does not grow with the number of elements
# ------------------------------------------------------------------------------------------------


def test_cost_and_parameters_do_not_grow_with_the_number_of_elements():
    """A two-layer model knowing 4 elements and one knowing 89 (H … Ac): XLA's flop count of energy +
    forces is the same, and only the embedding table and the element-dependent density weights have a
    leading axis of the number of elements (every other parameter has the same shape)."""
    from ase.data import chemical_symbols

    small = dict(COMMON, channels=2, l_max=1, correlation=2, message_l_max=1, message_channels=2)
    cfg = random_cluster(np.random.default_rng(4), 8)
    flops, shapes = {}, {}
    for elements in (("Cu", "Au", "H", "O"), tuple(chemical_symbols[1:90])):
        m = GraceModel(preset("grace-2l", elements, **small), avg_num_neighbors=6.0)
        g = _graph([cfg], Bucket(16, 128, 2), species=m.species)
        p = jax.eval_shape(m.init, jax.random.PRNGKey(0), g)
        lowered = jax.jit(lambda p, g: predict(m.site_energies, p, g, compute_stress=False)[:2]).lower(p, g)
        flops[len(elements)] = lowered.cost_analysis()["flops"]
        shapes[len(elements)] = {k: v.shape for k, v in _flat(p).items()}
    assert flops[4] > 1e4 and flops[89] == flops[4], flops
    assert shapes[4].keys() == shapes[89].keys()
    per_element = {k for k in shapes[4] if shapes[4][k] != shapes[89][k]}
    assert per_element == {"embedding/table", "readout/densities"}, per_element
    for k in per_element:
        assert shapes[4][k][0] == 4 and shapes[89][k] == (89,) + shapes[4][k][1:]


def _flat(params):
    from flax.traverse_util import flatten_dict

    return flatten_dict(params, sep="/")


# ------------------------------------------------------------------------------------------------
# ZBL
# ------------------------------------------------------------------------------------------------


def test_zbl_is_positive_repulsive_and_exactly_zero_beyond_its_cutoff():
    z_i, z_j = 29.0, 79.0
    r_zbl = float(zbl_inner_cutoffs([29, 79], cutoff=5.0)[0, 1])
    assert abs(r_zbl - 2.68) < 0.05  # covalent radii of Cu and Au
    v = lambda r: zbl_pair_energy(r, z_i, z_j, r_zbl)  # noqa: E731
    derivs = jax.jit(jax.vmap(lambda r: jnp.stack([v(r), jax.grad(v)(r), jax.grad(jax.grad(v))(r)])))

    def at(*r):  # [len(r), 3]: V, V', V'' at each distance
        return np.asarray(derivs(jnp.asarray(r, dtype=jnp.float64)))

    inside = at(*np.linspace(0.05, r_zbl * 0.999, 200))
    assert np.all(inside[:, 0] > 0) and np.all(inside[:, 1] < 0)  # positive, monotonically repulsive
    assert np.all(at(r_zbl, r_zbl + 1e-9, r_zbl + 0.3, 6.0) == 0.0)  # value and derivatives exactly 0
    # C² from below: value, slope and curvature all go to zero at r_zbl
    near, mid = at(r_zbl - 1e-4)[0], at(0.5 * r_zbl)[0]
    assert np.all(np.abs(near) < np.array([1e-8, 1e-5, 1e-2]) * np.abs(mid)), (near, mid)
    # forces: the analytic derivative equals finite differences
    x = np.array([0.3, 1.1, 2.2])
    fd = (at(*(x + 1e-6))[:, 0] - at(*(x - 1e-6))[:, 0]) / 2e-6
    np.testing.assert_allclose(at(*x)[:, 1], fd, rtol=1e-6)
    # the universal screening: φ(0) = 1, so V → the bare Coulomb repulsion at short range
    assert abs(float(zbl_screening(jnp.asarray(0.0))) - 1.0) < 1e-4
    r0 = 1e-4
    assert abs(at(r0)[0, 0] / (COULOMB_EV_A * z_i * z_j / r0) - 1.0) < 1e-2
    assert np.all(at(0.0)[0, :2] == 0.0)  # padding edges (r = 0): no NaN, no force


def _dimers(distances):
    return [Configuration(np.array([[0.0, 0.0, 0.0], [d * 0.6, d * 0.8, 0.0]]), np.array([29, 79]),
                          np.zeros((3, 3)), [False] * 3) for d in distances]


def _dimer_energy_difference(model_a, model_b, params, distances):
    """E_a − E_b of Cu–Au dimers at ``distances`` (Å), both models in one compiled program."""
    bucket = Bucket(2 * len(distances) + 1, 2 * len(distances), len(distances) + 1)
    g = _graph(_dimers(distances), bucket, model_a.species)
    e = np.asarray(jax.jit(lambda p, g: model_a.site_energies(p, g) - model_b.site_energies(p, g))(params, g))
    return e[0 : 2 * len(distances) : 2] + e[1 : 2 * len(distances) : 2]


@pytest.mark.parametrize("family", ["grace", "multi_ace"])
def test_zbl_term_changes_a_model_only_at_short_distances(family):
    """The same parameters with and without zbl: dimer energies differ by exactly V_ZBL(r) below the
    inner cutoff and not at all beyond it (GRACE and multi-ACE models)."""
    distances = np.array([0.4, 0.8, 1.2, 1.8, 2.4, 2.7, 3.0, 3.5, 3.9])
    if family == "grace":
        base = _tiny("grace-1l")
        with_zbl = GraceModel(preset("grace-1l", ("Cu", "Au"), **{**COMMON, **TINY["grace-1l"], "zbl": True}),
                              e0=E0, scale=1.3, shift=0.2, avg_num_neighbors=6.0)
    else:
        from jace.models.multi_ace import MultiACEModel
        from jace.models.multi_ace import preset as ma_preset

        kw = dict(cutoff=CUTOFF, num_layers=1, channels=2, l_max=1, hidden_l_max=0, correlation=(2,), radial_mlp=(4,),
                  radial=RadialSpec(n_max=4))
        base = MultiACEModel(ma_preset("mace", ("Cu", "Au"), **kw), e0=E0, scale=1.3, shift=0.2, avg_num_neighbors=3.0)
        base = base.with_params(jax.jit(base.init)(jax.random.PRNGKey(0), _graph(_dimers([2.0]), Bucket(4, 4, 2))))
        with_zbl = MultiACEModel(ma_preset("mace", ("Cu", "Au"), **kw, zbl=True), e0=E0, scale=1.3, shift=0.2,
                                 avg_num_neighbors=3.0)
    diff = _dimer_energy_difference(with_zbl, base, base.params, distances)
    r_zbl = float(zbl_inner_cutoffs([29, 79], CUTOFF)[0, 1])
    expected = np.asarray(zbl_pair_energy(jnp.asarray(distances), 29.0, 79.0, r_zbl))
    np.testing.assert_allclose(diff, expected, rtol=1e-10, atol=1e-12)
    assert np.all(diff[distances < r_zbl] > 0) and np.all(diff[distances >= r_zbl] == 0)


# ------------------------------------------------------------------------------------------------
# Readout, presets, files
# ------------------------------------------------------------------------------------------------


def test_finnis_sinclair_embedding():
    rho = np.concatenate([np.linspace(-4.0, 4.0, 81), [25.0, 100.0]])
    fn = jax.jit(lambda x: (finnis_sinclair(x, 1.0), finnis_sinclair(x, 0.5),
                            jax.vmap(jax.grad(lambda y: finnis_sinclair(y, 0.5)))(x)))
    lin, f, g = (np.asarray(a) for a in fn(jnp.asarray(rho)))
    np.testing.assert_array_equal(lin, rho)
    np.testing.assert_allclose(f[:81], -f[:81][::-1], atol=1e-15)  # odd
    assert f[40] == 0.0  # F(0) = 0
    np.testing.assert_allclose(f[81:], np.sqrt(rho[81:]), rtol=1e-6)  # ~ sqrt for large ρ
    assert np.all(np.isfinite(g)) and np.all(g[rho != 0] > 0)  # increasing, finite slope everywhere


def test_presets_and_spec_errors():
    assert set(MODEL_NAMES) == {"grace-1l", "grace-2l", "fs-ace", "grace"}
    one, two, fs = (preset(n, ("H", "C", "O")) for n in ("grace-1l", "grace-2l", "fs-ace"))
    assert (one.num_layers, one.l_max, one.channels, one.correlation) == (1, (3,), (20,), (3,))
    assert one.mlp_densities + 1 == 10  # ρ_0 + 9 densities into the MLP
    assert (two.num_layers, two.l_max, two.channels) == (2, (3, 2), (20, 32))
    assert (two.message_l_max, two.message_channels, two.mlp_densities + 1) == (1, 16, 8)
    assert two.reach == 2 * two.cutoff and one.radial.kind == "chebyshev" and not one.zbl
    assert fs.readout == "fs" and fs.correlation == (4,) and fs.fs_exponents == (1.0, 0.5)
    assert preset("grace-2l", ("H",), num_layers=3).channels == (20, 32, 32)  # stretched
    assert preset("grace-1l", ("H",), l_max=2, num_layers=2).l_max == (2, 2)
    with pytest.raises(ValueError, match="unknown model 'grace-2'.*did you mean"):
        preset("grace-2", ("H",))
    with pytest.raises(ValueError, match=r"model.channels needs one entry per layer \(2\)"):
        preset("grace-2l", ("H",), channels=(4,))
    with pytest.raises(ValueError, match="model.readout must be one of"):
        preset("grace-1l", ("H",), readout="fs-mlp")
    with pytest.raises(ValueError, match="model.fs_exponents must be positive"):
        preset("fs-ace", ("H",), fs_exponents=(1.0, -0.5))
    with pytest.raises(ValueError, match="model.radial.transform must be 'none'"):
        GraceSpec(("H",), radial=RadialSpec(transform="agnesi"))
    with pytest.raises(ValueError, match="avg_num_neighbors is 'auto'"):
        GraceModel(one)


@pytest.mark.parametrize("name", ["grace-1l", "grace-2l", "fs-ace", "grace"])
def test_every_spec_field_is_a_config_key_and_configs_round_trip(name):
    import dataclasses

    from jace.config import _GRACE_FIELDS, GRACE_TYPES, ConfigError, dump_train_config, parse_train_config

    assert set(GRACE_TYPES) == set(MODEL_NAMES)
    assert set(_GRACE_FIELDS) == {f.name for f in dataclasses.fields(GraceSpec)}
    raw = {"model": {"type": name, "elements": ["Cu", "Au"]}, "data": {"train": "t.xyz", "validation_fraction": 0.1}}
    cfg = parse_train_config(raw, file="c.yaml", check_paths=False)
    assert cfg.model == preset(name, ("Cu", "Au")) and cfg.fit is None and cfg.training is not None
    back = parse_train_config(yaml.safe_load(dump_train_config(cfg)), file="c.yaml", check_paths=False)
    assert back.model == cfg.model and back.training == cfg.training
    over = dict(raw, model={**raw["model"], "num_layers": 2, "channels": [4, 6], "l_max": 2, "zbl": True,
                            "radial": {"n_max": 5}, "fs_exponents": [1, 0.5]})
    m = parse_train_config(over, file="c.yaml", check_paths=False).model
    assert (m.channels, m.l_max, m.zbl, m.radial.n_max, m.radial.kind) == ((4, 6), (2, 2), True, 5, "chebyshev")
    for change, needle in [
        ({"chanels": 4}, "unknown key 'model.chanels' (did you mean 'channels'?)"),
        ({"readout": "mpl"}, "model.readout must be one of linear, fs, mlp, fs_mlp; got 'mpl' (did you mean 'mlp'?)"),
        ({"channels": [4, 4, 4]}, "model.channels needs one entry per layer"),
        ({"hidden_irreps": "8x0e"}, "unknown key 'model.hidden_irreps'"),
    ]:
        with pytest.raises(ConfigError) as info:
            parse_train_config(dict(raw, model={**raw["model"], **change}), file="c.yaml", check_paths=False)
        assert str(info.value).startswith("c.yaml: ") and needle in str(info.value), str(info.value)


def test_model_round_trips_through_a_file(tmp_path):
    from jace.models.io import load_model, save_model
    from jace.models.potential import as_potential

    m = _tiny("grace-2l")
    save_model(tmp_path / "m.jace", m)
    back = load_model(tmp_path / "m.jace")
    assert isinstance(back, GraceModel) and back.spec == m.spec and back.n_params() == m.n_params()
    assert (back.scale, back.shift, back.avg_num_neighbors) == (m.scale, m.shift, m.avg_num_neighbors)
    np.testing.assert_array_equal(back.e0, m.e0)
    for a, b in zip(jax.tree.leaves(back.params), jax.tree.leaves(m.params)):
        np.testing.assert_array_equal(a, b)
    pot = as_potential(tmp_path / "m.jace")
    g = _graph([random_cluster(np.random.default_rng(14), 5)])
    np.testing.assert_allclose(m.predict_graph(g, params=pot.params).energy, m.predict_graph(g).energy, rtol=1e-14)


# ------------------------------------------------------------------------------------------------
# Training: every preset through jace.training.train, and one run through the CLI
# ------------------------------------------------------------------------------------------------

TRAIN_TINY = dict(cutoff=3.5, radial=RADIAL, radial_mlp=(8,), embedding_size=3, channels=3, l_max=1, correlation=2,
                  message_l_max=1, message_channels=3, mlp_densities=2, readout_hidden=(4,))


@pytest.mark.parametrize("name", ["grace-2l", "fs-ace"])
def test_preset_trains_and_its_loss_falls(name, emt_configs, cuau_species, tmp_path):
    from jace.data.e0 import resolve_e0
    from jace.training import TrainSettings, dataset_statistics, train
    from jace.training.batching import build_graphs

    train_set = [emt_configs[i] for i in (0, 1, 3, 6)]
    e0 = resolve_e0("isolated", cuau_species, emt_configs, [c for c in emt_configs if c.is_isolated_atom()])
    settings = TrainSettings(max_epochs=8, batch_size=2, valid_batch_size=2, lr=0.05, n_buckets=1, energy_weight=1.0,
                             forces_weight=10.0, ema_decay=0.9, seed=1, plots=False)
    spec = preset(name, ("Cu", "Au"), **TRAIN_TINY)
    probe = GraceModel(spec, e0=e0, avg_num_neighbors=1.0)
    stats = dataset_statistics(train_set, build_graphs(train_set, probe, settings), cuau_species, e0)
    model = GraceModel(spec, e0=e0, scale=stats.scale, shift=stats.shift, avg_num_neighbors=stats.avg_num_neighbors)
    result = train(model, train_set, train_set, settings, tmp_path / name, progress=False)
    losses = [r["valid_loss"] for r in result.history]
    assert len(losses) == 8 and np.all(np.isfinite(losses))
    assert losses[-1] < 0.8 * losses[0], losses
    assert result.compilations["train_step"] == 1
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(result.params))


def test_jace_train_and_eval_round_trip_through_the_cli(tmp_path, capsys):
    """`jace train` a grace-1l YAML (its loss falls), the model file loads as the YAML's model, the written
    config reads back the same, and `jace eval` reproduces the test-set metrics."""
    from jace.cli import main
    from jace.config import GRACE_TYPES, load_train_config
    from jace.data import io as dio
    from jace.data.synthetic import make_emt_splits
    from jace.models.io import load_model

    train, test = make_emt_splits(n_train=8, n_test=3, seed=5)
    dio.write_configurations(tmp_path / "train.xyz", train)
    dio.write_configurations(tmp_path / "test.xyz", test)
    model = {k: (list(v) if isinstance(v, tuple) else v) for k, v in TRAIN_TINY.items() if k != "radial"}
    model.update(type="grace-1l", elements=["Cu", "Au"], radial={"kind": "chebyshev", "n_max": 4}, zbl=True)
    cfg = {
        "seed": 0, "precision": "float64", "output_dir": "run",
        "model": model,
        "data": {"train": "train.xyz", "validation_fraction": 0.25, "test": {"test": "test.xyz"}},
        "training": {"max_epochs": 8, "batch_size": 2, "valid_batch_size": 8, "n_buckets": 1, "lr": 0.05,
                     "forces_weight": 10.0, "ema_decay": 0.9, "plots": False},
    }
    (tmp_path / "grace.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    parsed = load_train_config(tmp_path / "grace.yaml")
    assert parsed.model_type == "grace-1l" and "grace-1l" in GRACE_TYPES and parsed.model.zbl
    run = tmp_path / "run"
    assert main(["train", str(tmp_path / "grace.yaml"), "--output-dir", str(run)]) == 0

    loaded = load_model(run / "model.jace")
    assert isinstance(loaded, GraceModel) and loaded.spec == parsed.model
    assert load_train_config(run / "config.yaml").model == parsed.model
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["fit"]["model_type"] == "grace-1l" and metrics["fit"]["epochs"] == 8
    rows = [line.split(",") for line in (run / "metrics.csv").read_text().splitlines()]
    col = rows[0].index("valid_loss")
    losses = [float(r[col]) for r in rows[1:]]
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.8 * losses[0], losses

    capsys.readouterr()
    out = tmp_path / "eval.json"
    assert main(["eval", str(run / "model.jace"), str(tmp_path / "test.xyz"), "--out", str(out)]) == 0
    again = json.loads(out.read_text())
    for key in ("energy_rmse_meV", "forces_rmse_meV_per_A", "stress_rmse_meV_per_A3"):
        assert np.isfinite(again[key])
        np.testing.assert_allclose(again[key], metrics["test"][key], rtol=1e-8)
