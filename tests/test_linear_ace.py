"""Linear ACE physics in float64: symmetries, derivatives, body order, padding, jit, cutoff, isolated atoms."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from physics_helpers import random_cluster, random_crystal, random_orthogonal

from jace.data.configuration import Configuration
from jace.data.graph import Bucket, SpeciesMap, batch_graphs, graph_from_configuration, pad_graph
from jace.models.design import LinearACESpec, RadialSpec
from jace.models.linear_ace import LinearACEModel, equivariant_features, evaluate, site_energies
from jace.models.potential import predict

SPECIES = SpeciesMap.from_symbols(["Cu", "Au"])


def _model(correlation=3, max_degree=(8, 8, 7), seed=0, cutoff=4.5):
    spec = LinearACESpec(
        elements=("Cu", "Au"),
        cutoff=cutoff,
        radial=RadialSpec(kind="bessel", n_max=4, envelope="polynomial", envelope_p=5),
        l_max=3,
        correlation=correlation,
        max_degree=max_degree[:correlation],
    )
    rng = np.random.default_rng(seed)
    from jace.models.linear_ace import product_basis_for

    n_b = product_basis_for(spec).n_functions()
    return LinearACEModel(spec, np.array([-3.5, -2.1]), rng.normal(size=(2, n_b)) * 0.1)


@pytest.fixture(scope="module")
def model():
    return _model()


def _predict(model, configs):
    graphs = [graph_from_configuration(c, model.cutoff, model.species) for c in configs]
    n_node = sum(c.n_atoms for c in configs) + 1
    n_edge = sum(int(g.n_edge[0]) for g in graphs)
    bucket = Bucket(n_node + 7, n_edge + 16, len(configs) + 1)
    return model.predict_graph(pad_graph(batch_graphs(graphs), bucket))


def _energy(model, config):
    return float(_predict(model, [config]).energy[0])


def test_energy_invariant_under_rotation_inversion_translation_permutation(model):
    rng = np.random.default_rng(1)
    for cfg in [random_cluster(rng, 7), random_crystal(rng)]:
        e = _energy(model, cfg)
        q = random_orthogonal(rng, inversion=True)
        t = rng.normal(size=3) * 3
        perm = rng.permutation(cfg.n_atoms)
        moved = Configuration(
            (cfg.positions @ q.T + t)[perm], cfg.numbers[perm], cfg.cell @ q.T, cfg.pbc, source="moved"
        )
        e2 = _energy(model, moved)
        assert abs(e2 - e) <= 1e-10 * abs(e), (e, e2)
        # a different structure gives a different energy (the test can fail)
        other = Configuration(cfg.positions * 1.02, cfg.numbers, cfg.cell * 1.02, cfg.pbc)
        assert abs(_energy(model, other) - e) > 1e-6


def test_forces_and_site_energies_permute_and_rotate(model):
    rng = np.random.default_rng(2)
    cfg = random_crystal(rng)
    out = _predict(model, [cfg])
    q = random_orthogonal(rng, inversion=True)
    perm = rng.permutation(cfg.n_atoms)
    moved = Configuration((cfg.positions @ q.T)[perm], cfg.numbers[perm], cfg.cell @ q.T, cfg.pbc)
    out2 = _predict(model, [moved])
    n = cfg.n_atoms
    np.testing.assert_allclose(out2.forces[:n], (np.asarray(out.forces[:n]) @ q.T)[perm], atol=1e-10)
    np.testing.assert_allclose(out2.site_energies[:n], np.asarray(out.site_energies[:n])[perm], atol=1e-10)
    np.testing.assert_allclose(out2.stress[0], q @ np.asarray(out.stress[0]) @ q.T, atol=1e-10)


@pytest.mark.parametrize("irrep", [(1, -1), (2, 1)])
def test_equivariant_features_of_a_structure(model, irrep):
    import e3nn_jax as e3nn

    rng = np.random.default_rng(4)
    cfg = random_cluster(rng, 6)
    q = random_orthogonal(rng, inversion=True)
    rot = Configuration(cfg.positions @ q.T, cfg.numbers, cfg.cell, cfg.pbc)
    g1 = graph_from_configuration(cfg, model.cutoff, SPECIES)
    g2 = graph_from_configuration(rot, model.cutoff, SPECIES)
    b1 = np.asarray(equivariant_features(model.spec, jax.tree.map(jnp.asarray, g1), irrep))
    b2 = np.asarray(equivariant_features(model.spec, jax.tree.map(jnp.asarray, g2), irrep))
    d = np.asarray(e3nn.Irrep(*irrep).D_from_matrix(jnp.asarray(q)))
    assert b1.shape[1] > 0 and np.abs(b1).max() > 1e-6
    np.testing.assert_allclose(b2, np.einsum("MN,nvN->nvM", d, b1), atol=1e-10)


def test_forces_match_central_finite_differences(model):
    rng = np.random.default_rng(5)
    for cfg in [random_cluster(rng, 6), random_crystal(rng)]:
        forces = np.asarray(_predict(model, [cfg]).forces[: cfg.n_atoms])
        h = 1e-5
        for a, d in [(0, 0), (1, 2), (cfg.n_atoms - 1, 1)]:
            p, m = cfg.positions.copy(), cfg.positions.copy()
            p[a, d] += h
            m[a, d] -= h
            ep = _energy(model, Configuration(p, cfg.numbers, cfg.cell, cfg.pbc))
            em = _energy(model, Configuration(m, cfg.numbers, cfg.cell, cfg.pbc))
            fd = -(ep - em) / (2 * h)
            assert abs(fd - forces[a, d]) < 1e-7 * max(1.0, abs(fd)), (fd, forces[a, d])
        assert np.abs(forces).max() > 1e-4


def test_stress_matches_finite_strain(model):
    rng = np.random.default_rng(6)
    cfg = random_crystal(rng, skew=0.3)
    stress = np.asarray(_predict(model, [cfg]).stress[0])
    vol = cfg.volume
    h = 1e-5
    for a, b in [(0, 0), (1, 2), (2, 1), (0, 1)]:
        vals = []
        for s in (+h, -h):
            eps = np.zeros((3, 3))
            eps[a, b] += s / 2
            eps[b, a] += s / 2
            deform = np.eye(3) + eps
            vals.append(_energy(model, Configuration(cfg.positions @ deform, cfg.numbers, cfg.cell @ deform, cfg.pbc)))
        fd = (vals[0] - vals[1]) / (2 * h) / vol
        assert abs(fd - stress[a, b]) < 1e-7 * max(1.0, abs(fd)), (a, b, fd, stress[a, b])
    assert np.abs(stress).max() > 1e-5
    # symmetric, and zero for molecules
    np.testing.assert_allclose(stress, stress.T, atol=1e-12)
    assert np.all(np.asarray(_predict(model, [random_cluster(rng, 4)]).stress[0]) == 0)


def _site_energy_of_subset(model, centre, neighbours, numbers):
    pos = np.concatenate([centre[None], neighbours])
    cfg = Configuration(pos, numbers[: len(pos)], np.zeros((3, 3)), [False] * 3)
    return float(_predict(model, [cfg]).site_energies[0])


@pytest.mark.parametrize("nu", [1, 2, 3])
def test_body_order_inclusion_exclusion(nu):
    """A correlation-order-ν model is a (ν+1)-body expansion: the alternating sum over ν+1 neighbours
    vanishes, while the one over ν neighbours does not."""
    m = _model(correlation=nu, max_degree=(8, 8, 7), seed=nu)
    rng = np.random.default_rng(10 + nu)
    centre = np.zeros(3)

    def alternating_sum(k):
        neigh = rng.normal(size=(k, 3))
        neigh = 1.2 * neigh / np.linalg.norm(neigh, axis=1, keepdims=True) + 0.8 * rng.uniform(0, 1, (k, 1)) * neigh
        numbers = np.concatenate([[29], rng.choice([29, 79], size=k)])
        total, scale = 0.0, 0.0
        for size in range(k + 1):
            for subset in itertools.combinations(range(k), size):
                sub_numbers = np.concatenate([[numbers[0]], numbers[1:][list(subset)]])
                e = _site_energy_of_subset(m, centre, neigh[list(subset)], sub_numbers)
                total += (-1) ** (k - size) * e
                scale = max(scale, abs(e))
        return total, scale

    zero, scale = alternating_sum(nu + 1)
    assert abs(zero) < 1e-11 * scale, (zero, scale)
    nonzero, scale = alternating_sum(nu)
    assert abs(nonzero) > 1e-8 * scale


def test_padding_and_batching_leave_results_unchanged(model):
    rng = np.random.default_rng(7)
    configs = [random_crystal(rng), random_cluster(rng, 5), random_crystal(rng, skew=0.1)]
    single = [_predict(model, [c]) for c in configs]
    graphs = [graph_from_configuration(c, model.cutoff, model.species) for c in configs]
    n_node = sum(c.n_atoms for c in configs)
    n_edge = sum(int(g.n_edge[0]) for g in graphs)
    for extra_nodes, extra_edges, extra_graphs in [(1, 0, 1), (40, 300, 4)]:
        bucket = Bucket(n_node + extra_nodes, n_edge + extra_edges, len(configs) + extra_graphs)
        out = model.predict_graph(pad_graph(batch_graphs(graphs), bucket))
        start = 0
        for k, c in enumerate(configs):
            np.testing.assert_allclose(out.energy[k], single[k].energy[0], rtol=1e-12)
            np.testing.assert_allclose(out.forces[start : start + c.n_atoms], single[k].forces[: c.n_atoms], atol=1e-12)
            np.testing.assert_allclose(out.stress[k], single[k].stress[0], atol=1e-12)
            start += c.n_atoms
        assert np.all(np.isfinite(np.asarray(out.forces)))
        assert np.all(np.asarray(out.forces[n_node:]) == 0) and np.all(np.asarray(out.energy[len(configs):]) == 0)


def test_padding_gives_finite_parameter_gradients(model):
    rng = np.random.default_rng(8)
    cfg = random_cluster(rng, 4)
    g = graph_from_configuration(cfg, model.cutoff, model.species)
    padded = pad_graph(batch_graphs([g]), Bucket(16, int(g.n_edge[0]) + 24, 3))

    def loss(params):
        out = predict(model.site_energy_fn, params, padded)
        return jnp.sum(out.energy**2) + jnp.sum(out.forces**2)

    grads = jax.grad(loss)(model.params)
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(grads))


def test_jit_equals_eager(model):
    rng = np.random.default_rng(9)
    cfg = random_crystal(rng)
    g = jax.tree.map(jnp.asarray, graph_from_configuration(cfg, model.cutoff, model.species))
    eager = site_energies(model.spec, model.params, g)
    jitted = jax.jit(lambda p, gr: site_energies(model.spec, p, gr))(model.params, g)
    np.testing.assert_allclose(jitted, eager, rtol=1e-13, atol=1e-13)
    with jax.disable_jit():
        out_eager = predict(model.site_energy_fn, model.params, g)
    out_jit = model.predict_graph(g)
    np.testing.assert_allclose(out_jit.forces, out_eager.forces, atol=1e-12)


def test_energy_and_forces_continuous_across_cutoff(model):
    """A neighbour moving out through r_c: energy and forces approach their values without it."""
    rc = model.cutoff
    base = np.array([[0.0, 0.0, 0.0], [2.4, 0.3, 0.1], [0.2, 2.5, -0.4]])
    numbers = np.array([29, 79, 29])
    without = Configuration(base, numbers, np.zeros((3, 3)), [False] * 3)
    e_without = _energy(model, without)
    f_without = np.asarray(_predict(model, [without]).forces[:3])
    direction = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])
    prev = None
    for delta in [1e-3, 1e-4, 1e-5, 0.0, -1e-6]:
        p = base[0] + (rc - delta) * direction  # distance to atom 0 just inside, at, beyond r_c
        cfg = Configuration(np.vstack([base, p]), np.append(numbers, 79), np.zeros((3, 3)), [False] * 3)
        # the new atom may still see atoms 1 and 2; compare atom 0's site energy instead of the total
        out = _predict(model, [cfg])
        e0_site = float(out.site_energies[0])
        ref_site = float(_predict(model, [without]).site_energies[0])
        gap = abs(e0_site - ref_site)
        if prev is not None:
            assert gap <= prev + 1e-15
        prev = gap
    assert gap < 1e-12
    assert np.isfinite(e_without) and np.all(np.isfinite(f_without))


def test_isolated_atom_gets_e0_and_zero_force(model):
    for z, e0 in [(29, -3.5), (79, -2.1)]:
        cfg = Configuration(np.zeros((1, 3)), [z], np.zeros((3, 3)), [False] * 3)
        out = _predict(model, [cfg])
        assert float(out.energy[0]) == pytest.approx(e0, abs=1e-14)
        assert np.all(np.asarray(out.forces[0]) == 0)
        g = graph_from_configuration(cfg, model.cutoff, model.species)
        grads = jax.grad(lambda p: predict(model.site_energy_fn, p, jax.tree.map(jnp.asarray, g)).energy.sum())(
            model.params
        )
        assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(grads))


def test_unknown_element_is_a_clear_error(model):
    cfg = Configuration(np.zeros((2, 3)) + [[0, 0, 0], [2, 0, 0]], [29, 26], np.zeros((3, 3)), [False] * 3, source="x.xyz:3")
    with pytest.raises(ValueError, match=r"x.xyz:3.*element Fe.*known elements: Cu, Au"):
        evaluate(model, [cfg])


def test_float32_runs_and_agrees_roughly(model):
    """Float32 inputs stay float32 through the model and agree with float64 to single precision."""
    rng = np.random.default_rng(12)
    cfg = random_cluster(rng, 5)
    g64 = jax.tree.map(jnp.asarray, graph_from_configuration(cfg, model.cutoff, model.species))
    g32 = jax.tree.map(lambda x: x.astype(jnp.float32) if x.dtype == jnp.float64 else x, g64)
    p32 = jax.tree.map(lambda x: x.astype(jnp.float32), model.params)
    e32 = site_energies(model.spec, p32, g32)
    e64 = site_energies(model.spec, model.params, g64)
    assert e32.dtype == jnp.float32
    np.testing.assert_allclose(e32, e64, rtol=1e-4, atol=1e-4)


def test_design_rows_reproduce_model_predictions(model):
    """x_E·c, x_F·c and x_W·c from the forward-mode design matrix equal the model's energy, forces, virial."""
    from jace.models.linear_ace import design_rows

    rng = np.random.default_rng(13)
    configs = [random_crystal(rng), random_cluster(rng, 5), random_crystal(rng, skew=0.3)]
    c = model.coefficients.reshape(-1)
    for k, x_e, x_f, x_v in design_rows(model.spec, configs, batch_size=2):
        cfg = configs[k]
        out = _predict(model, [cfg])
        e0 = model.e0[model.species.indices(cfg.numbers)].sum()
        assert x_e @ c + e0 == pytest.approx(float(out.energy[0]), abs=1e-10)
        np.testing.assert_allclose(x_f @ c, np.asarray(out.forces[: cfg.n_atoms]).reshape(-1), atol=1e-10)
        if cfg.pbc.all():
            np.testing.assert_allclose(x_v @ c, np.asarray(out.virial[0])[np.triu_indices(3)], atol=1e-10)
        else:
            assert x_v is None
    # derivatives evaluated 37 edges at a time (padding the last chunk) give the same rows
    small = {k: rows for k, *rows in design_rows(model.spec, configs, batch_size=2, edge_chunk=37)}
    for k, x_e, x_f, x_v in design_rows(model.spec, configs, batch_size=2):
        np.testing.assert_allclose(small[k][0], x_e, rtol=0, atol=1e-12)
        np.testing.assert_allclose(small[k][1], x_f, rtol=0, atol=1e-12)


def test_fit_recovers_a_linear_ace_model_exactly():
    """Labels made by a linear ACE model are fitted to round-off by the same basis (λ → 0)."""
    from jace.models.design import FitSpec
    from jace.models.linear_ace import fit_linear_ace

    truth = _model(correlation=2, max_degree=(6, 6), seed=3)
    rng = np.random.default_rng(14)
    configs = [random_crystal(rng, skew=0.15) for _ in range(16)] + [random_cluster(rng, 6) for _ in range(12)]
    e, f, s = evaluate(truth, configs)
    labelled = [
        Configuration(c.positions, c.numbers, c.cell, c.pbc, energy=ek, forces=fk, stress=sk)
        for c, ek, fk, sk in zip(configs, e, f, s)
    ]
    fitted, info = fit_linear_ace(truth.spec, FitSpec(e0={"Cu": -3.5, "Au": -2.1}, lam=1e-14, regulariser="ridge"), labelled)
    assert info["n_rows"] > info["n_features"]
    unseen = [random_crystal(rng, skew=0.2) for _ in range(3)] + [random_cluster(rng, 5)]
    e_t, f_t, _ = evaluate(truth, unseen)
    e_f, f_f, _ = evaluate(fitted, unseen)
    np.testing.assert_allclose(e_f, e_t, rtol=1e-8)
    for a, b in zip(f_f, f_t):
        np.testing.assert_allclose(a, b, atol=1e-7)


def test_dual_and_qr_fits_agree_when_features_outnumber_rows():
    """With more basis functions than rows ``solver: auto`` takes the dual (kernel) form, and it gives
    the coefficients of the streamed-QR fit; the dual form refuses λ = 0 when the FitSpec is made."""
    from jace.models.design import FitSpec
    from jace.models.linear_ace import fit_linear_ace

    truth = _model(correlation=2, max_degree=(6, 6), seed=3)
    rng = np.random.default_rng(15)
    configs = [random_cluster(rng, 4) for _ in range(3)]
    e, f, _ = evaluate(truth, configs)
    labelled = [Configuration(c.positions, c.numbers, c.cell, c.pbc, energy=ek, forces=fk) for c, ek, fk in zip(configs, e, f)]
    fits = {}
    for solver in ("auto", "qr", "dual"):
        fit = FitSpec(e0={"Cu": -3.5, "Au": -2.1}, lam=1e-4, smoothness_p=1.0, solver=solver)
        fits[solver] = fit_linear_ace(truth.spec, fit, labelled)
    assert fits["auto"][1]["n_features"] > fits["auto"][1]["n_rows"]
    assert [fits[k][1]["solver"] for k in fits] == ["dual", "qr", "dual"]
    scale = np.abs(fits["qr"][0].coefficients).max()
    for k in ("auto", "dual"):
        np.testing.assert_allclose(fits[k][0].coefficients, fits["qr"][0].coefficients, rtol=0, atol=1e-8 * scale)
    with pytest.raises(ValueError, match="needs fit.lam > 0"):
        FitSpec(lam=0.0, solver="dual")


def test_dual_row_scale_reweights_an_observable_without_reassembly():
    """Assembled with energy weight 2, the dual solver re-weighted by ``row_scale`` (energy rows × 5,
    found by info["row_kinds"]) gives the fit assembled with energy weight 10; stress rows of periodic
    cells keep their place in the kinds. A row_scale of the wrong length is refused."""
    from jace.models.design import FitSpec
    from jace.models.linear_ace import assemble_linear_system, count_rows

    truth = _model(correlation=2, max_degree=(6, 6), seed=3)
    rng = np.random.default_rng(16)
    configs = [random_crystal(rng, skew=0.1) for _ in range(2)] + [random_cluster(rng, 4) for _ in range(2)]
    e, f, st = evaluate(truth, configs)
    labelled = [
        Configuration(c.positions, c.numbers, c.cell, c.pbc, energy=ek + 0.01 * k, forces=fk, stress=sk)
        for k, (c, ek, fk, sk) in enumerate(zip(configs, e, f, st))
    ]
    e0 = np.array([-3.5, -2.1])
    gamma = 1.0 + np.arange(len(truth.coefficients.reshape(-1)), dtype=float) % 7
    coef = {}
    for w in (2.0, 10.0):
        solver, info = assemble_linear_system(truth.spec, FitSpec(energy_weight=w, lam=1e-5), labelled, e0, solver="dual")
        kinds = info["row_kinds"]
        assert len(kinds) == info["n_rows"] == sum(count_rows(c) for c in labelled)
        assert (kinds == "e").sum() == 4 and (kinds == "v").sum() == 6 * 2 and (kinds == "f").sum() == 3 * sum(c.n_atoms for c in labelled)
        coef[w] = solver.solve(1e-5, gamma)
        if w == 2.0:
            coef["scaled"] = solver.solve(1e-5, gamma, row_scale=np.where(kinds == "e", 5.0, 1.0))
            with pytest.raises(ValueError, match="row_scale must be"):
                solver.solve(1e-5, gamma, row_scale=np.ones(3))
        solver.close()
    assert np.abs(coef[2.0] - coef[10.0]).max() > 1e-6 * np.abs(coef[10.0]).max()  # the weight matters here
    np.testing.assert_allclose(coef["scaled"], coef[10.0], rtol=0, atol=1e-9 * np.abs(coef[10.0]).max())


def test_transformed_radial_model_is_invariant_and_conservative():
    """With the pair-dependent (Agnesi) radial transform: invariance and forces = −∇E still hold."""
    spec = LinearACESpec(
        elements=("Cu", "Au"), cutoff=4.5, radial=RadialSpec(kind="chebyshev", n_max=4, transform="agnesi"),
        l_max=2, correlation=2, max_degree=(6, 6),
    )
    from jace.models.linear_ace import product_basis_for

    m = LinearACEModel(spec, np.zeros(2), np.random.default_rng(0).normal(size=(2, product_basis_for(spec).n_functions())))
    rng = np.random.default_rng(21)
    cfg = random_cluster(rng, 5)
    q = random_orthogonal(rng)
    e = _energy(m, cfg)
    assert _energy(m, Configuration(cfg.positions @ q.T + 1.0, cfg.numbers, cfg.cell, cfg.pbc)) == pytest.approx(e, rel=1e-11)
    forces = np.asarray(_predict(m, [cfg]).forces[:5])
    h = 1e-5
    p, mm = cfg.positions.copy(), cfg.positions.copy()
    p[2, 1] += h
    mm[2, 1] -= h
    fd = -(_energy(m, Configuration(p, cfg.numbers, cfg.cell, cfg.pbc)) - _energy(m, Configuration(mm, cfg.numbers, cfg.cell, cfg.pbc))) / (2 * h)
    assert fd == pytest.approx(forces[2, 1], abs=1e-7)


def test_ridge_path_matches_the_qr_solve_and_the_blocked_gram_is_exact():
    """The eigen-path used for scanning λ gives the same coefficients as the QR solve, and the
    blocked Gram product (which avoids OpenBLAS syrk) equals aᵀa, also when n is not a multiple of the block."""
    from jace.models.linear_ace import IncrementalQR, gram

    rng = np.random.default_rng(5)
    a = rng.normal(size=(300, 37))
    np.testing.assert_allclose(gram(a, block=8), a.T @ a, rtol=1e-13, atol=1e-11)
    x, y = rng.normal(size=(400, 25)), rng.normal(size=400)
    solver = IncrementalQR(25, buffer_elements=2000)  # several flushes
    for s in range(0, 400, 70):
        solver.add(x[s : s + 70], y[s : s + 70])
    gamma = 1.0 + rng.random(25) * 3
    path = solver.ridge_path(gamma)
    for lam in (1e-6, 1e-2, 1.0):
        direct = np.linalg.solve(x.T @ x + lam * np.diag(gamma**2), x.T @ y)
        np.testing.assert_allclose(path(lam), direct, rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(solver.solve(lam, gamma), direct, rtol=1e-9, atol=1e-10)


def test_dual_ridge_equals_the_primal_solve_for_a_wide_design_and_checks_its_rows():
    """The kernel form c = Γ⁻² Xᵀ (XΓ⁻²Xᵀ + λI)⁻¹ y equals the primal ridge solution when there are more
    features than rows (its use case), across several row blocks of the kernel; it refuses λ ≤ 0, a
    solve before all rows are in, and rows beyond its size, with messages that say so."""
    from jace.models.linear_ace import DualRidge, IncrementalQR, cholesky_lower

    rng = np.random.default_rng(11)
    m, n = 90, 160
    x = rng.normal(size=(m, n)) * np.exp(-np.arange(n) / 60.0)
    y = rng.normal(size=m)
    gamma = 1.0 + np.sqrt(np.arange(n))
    dual, qr = DualRidge(n, m), IncrementalQR(n)
    for s in range(0, m, 25):
        qr.add(x[s : s + 25], y[s : s + 25])
        if s == 50:
            with pytest.raises(ValueError, match="holds 50 of the 90 rows"):
                dual.solve(1e-3, gamma)
        dual.add(x[s : s + 25], y[s : s + 25])
    np.testing.assert_allclose(np.tril(dual.kernel(gamma, row_block=16)), np.tril((x / gamma**2) @ x.T), rtol=1e-12, atol=1e-12)
    # the blocked Cholesky (LAPACK potrf crashes in OpenBLAS 0.3.31 at large n) reads only the lower triangle
    spd = x @ x.T + np.eye(m)
    garbage_above = np.where(np.tri(m, dtype=bool), spd, np.nan)
    np.testing.assert_allclose(np.tril(cholesky_lower(garbage_above, block=16)), np.linalg.cholesky(spd), rtol=0, atol=1e-11)
    for lam in (1e-6, 1e-2):
        direct = np.linalg.solve(x.T @ x + lam * np.diag(gamma**2), x.T @ y)
        np.testing.assert_allclose(dual.solve(lam, gamma), direct, rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(qr.solve(lam, gamma), direct, rtol=1e-7, atol=1e-9)
    with pytest.raises(ValueError, match="λ > 0"):
        dual.solve(0.0, gamma)
    with pytest.raises(np.linalg.LinAlgError):  # below the kernel's round-off floor it refuses, never returns junk
        cholesky_lower(-np.eye(4), block=3)
    with pytest.raises(ValueError, match="sized for 90 rows"):
        dual.add(x[:1], y[:1])
    dual.close()


def test_dual_ridge_column_blocks_give_the_dense_ridge_solution():
    """DualRidge stores its rows in column blocks (here 7 columns, the last block padded) and keeps the
    kernel on disk: the solution equals the dense ridge formula for any block size, for several λ and a
    row scaling, and the kernel read back for the same Γ is the one computed."""
    from jace.models.linear_ace import DualRidge

    rng = np.random.default_rng(4)
    m, n = 23, 61
    x, y = rng.normal(size=(m, n)), rng.normal(size=m)
    gamma = 0.5 + rng.random(n)
    scale = np.where(np.arange(m) % 4 == 0, 3.0, 1.0)
    for block in (7, None):
        solver = DualRidge(n, m, column_block=block)
        assert solver.column_block == (7 if block else n)
        solver.add(x[:10], y[:10])
        solver.add(x[10:], y[10:])
        k = solver.kernel(gamma)
        np.testing.assert_allclose(np.tril(k), np.tril((x / gamma**2) @ x.T), rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(solver.kernel(gamma), k)  # read back from disk
        for lam, s in ((1e-3, None), (0.3, None), (1e-2, scale)):
            ss = np.ones(m) if s is None else s
            xs = ss[:, None] * x
            dense = np.linalg.solve(xs.T @ xs + lam * np.diag(gamma**2), xs.T @ (ss * y))
            np.testing.assert_allclose(solver.solve(lam, gamma, row_scale=s), dense, rtol=1e-8, atol=1e-10)
        with pytest.raises(ValueError, match="overflows"):
            solver.add(x[:1], y[:1])
        solver.close()
    with pytest.raises(ValueError, match=r"rows must be \[2, 61\]"):
        DualRidge(n, m).add(x[:2, :5], y[:2])
