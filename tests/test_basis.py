"""The basis as pure functions: radial smoothness, coupling counts, equivariance of product features."""

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from physics_helpers import random_orthogonal

from jace.basis import radial
from jace.basis.angular import safe_norm, spherical_harmonics, unit_vectors
from jace.basis.atomic import atomic_basis_features, atomic_basis_one_hot
from jace.basis.coupling import symmetric_coupling
from jace.basis.product import OneParticle, build_product_basis, fold_coefficients, monomials, product_basis
from jace.models.design import RadialSpec

CUTOFF = 4.5


@pytest.mark.parametrize("kind", ["bessel", "chebyshev", "gaussian"])
@pytest.mark.parametrize("env", ["polynomial", "cosine"])
def test_radial_smooth_to_second_derivative_at_cutoff(kind, env):
    spec = RadialSpec(kind=kind, n_max=6, envelope=env, envelope_p=5)
    f = lambda r: radial.radial_basis(r, spec, CUTOFF)  # noqa: E731
    d1 = jax.jacfwd(f)
    d2 = jax.jacfwd(d1)
    for r in [CUTOFF - 1e-7, CUTOFF, CUTOFF + 0.3]:
        r = jnp.asarray(r)
        assert np.max(np.abs(f(r))) < 1e-10
        assert np.max(np.abs(d1(r))) < 1e-6
        assert np.max(np.abs(d2(r))) < 1e-4
    # and it is not trivially zero inside
    assert np.max(np.abs(f(jnp.asarray(0.5 * CUTOFF)))) > 1e-3


def test_plain_cosine_would_not_be_c2():
    """The envelope's square is needed: (1 + cos)/2 alone has a non-zero second derivative at r_c."""
    plain = lambda r: 0.5 * (1 + jnp.cos(jnp.pi * r / CUTOFF))  # noqa: E731
    assert abs(jax.grad(jax.grad(plain))(jnp.asarray(CUTOFF))) > 0.1
    assert abs(jax.grad(jax.grad(lambda r: radial.cosine_envelope(r, CUTOFF)))(jnp.asarray(CUTOFF))) < 1e-12


@pytest.mark.parametrize("kind", ["bessel", "chebyshev", "gaussian"])
def test_radial_finite_with_finite_gradient_at_zero(kind):
    spec = RadialSpec(kind=kind, n_max=5)
    v = jnp.zeros((1, 3))

    def total(v):
        r = safe_norm(v)
        sh = spherical_harmonics(unit_vectors(v, r), 3)
        return jnp.sum(radial.radial_basis(r, spec, CUTOFF)) + jnp.sum(sh)

    val, grad = jax.value_and_grad(total)(v)
    assert np.isfinite(val) and np.all(np.isfinite(grad))


def test_bessel_limit_at_zero_matches_small_r():
    small = radial.bessel(jnp.asarray([1e-6]), 4, CUTOFF)
    zero = radial.bessel(jnp.asarray([0.0]), 4, CUTOFF)
    np.testing.assert_allclose(small, zero, rtol=1e-9)


def test_radial_functions_are_chemistry_dependent():
    g = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)))
    w = jnp.asarray(np.random.default_rng(1).normal(size=(2, 2, 2, 5, 3)))
    zi, zj = jnp.array([0, 0, 1, 1]), jnp.array([0, 1, 0, 1])
    out = radial.radial_functions(g, w, zi, zj)
    assert out.shape == (4, 2, 5)
    for e in range(4):
        np.testing.assert_allclose(out[e], np.einsum("lnk,k->ln", w[zi[e], zj[e]], g[e]))


@pytest.mark.parametrize(
    "ls,sizes,L,expected",
    [
        ((1, 1), (2,), 0, 1),  # |A_1|²
        ((1, 1, 1, 1), (4,), 0, 1),  # |A_1|⁴ only
        ((1, 1, 1, 1), (1, 1, 1, 1), 0, 3),  # (a·b)(c·d) and two pairings
        ((1, 1), (2,), 1, 0),  # a × a = 0
        ((1, 1), (1, 1), 1, 1),  # a × b
        ((2, 2, 2), (3,), 0, 1),
    ],
)
def test_symmetric_coupling_counts(ls, sizes, L, expected):
    _, coeff = symmetric_coupling(ls, sizes, L)
    assert coeff.shape[0] == expected


def _random_neighbourhood(rng, n_nodes=3, n_edges=14, n_species=2):
    vec = rng.normal(size=(n_edges, 3)) * 1.5
    receivers = rng.integers(0, n_nodes, n_edges)
    species_j = rng.integers(0, n_species, n_edges)
    return vec, receivers, species_j


def _a_flat(vec, receivers, species_j, n_nodes, n_species, n_rad, l_max):
    vec = jnp.asarray(vec)
    r = safe_norm(vec)
    sh = spherical_harmonics(unit_vectors(vec, r), l_max)
    g = radial.radial_basis(r, RadialSpec(n_max=n_rad), CUTOFF)
    mask = jnp.ones(len(vec), bool)
    a = atomic_basis_one_hot(g, sh, jnp.asarray(species_j), jnp.asarray(receivers), mask, n_nodes, n_species, l_max)
    return a.reshape(n_nodes, -1)


@pytest.fixture(scope="module")
def equivariant_basis():
    op = OneParticle(2, 4, 3)
    irreps = ((0, 1), (1, -1), (1, 1), (2, 1), (3, -1))
    return op, build_product_basis(op, 3, (8, 8, 7), 1.5, irreps)


@pytest.mark.parametrize("irrep", [(0, 1), (1, -1), (1, 1), (2, 1), (3, -1)])
def test_product_basis_equivariance_with_inversion(equivariant_basis, irrep):
    op, basis = equivariant_basis
    rng = np.random.default_rng(3)
    vec, rec, sj = _random_neighbourhood(rng)
    q = random_orthogonal(rng, inversion=True)
    b = product_basis(basis, _a_flat(vec, rec, sj, 3, 2, op.n_rad, op.l_max), irrep)
    b_rot = product_basis(basis, _a_flat(vec @ q.T, rec, sj, 3, 2, op.n_rad, op.l_max), irrep)
    assert b.shape[1] > 0
    d = np.asarray(e3nn.Irrep(irrep[0], irrep[1]).D_from_matrix(jnp.asarray(q)))
    expected = np.einsum("MN,nvN->nvM", d, np.asarray(b))
    np.testing.assert_allclose(b_rot, expected, atol=1e-10 * max(1.0, np.abs(b).max()))
    assert np.abs(b).max() > 1e-6


def test_product_basis_functions_are_linearly_independent(equivariant_basis):
    op, basis = equivariant_basis
    rng = np.random.default_rng(5)
    rows = []
    for _ in range(30):
        vec, rec, sj = _random_neighbourhood(rng, n_nodes=20, n_edges=200)
        rows.append(np.asarray(product_basis(basis, _a_flat(vec, rec, sj, 20, 2, op.n_rad, op.l_max))[..., 0]))
    x = np.concatenate(rows)
    s = np.linalg.svd(x / np.linalg.norm(x, axis=0), compute_uv=False)
    assert s[-1] / s[0] > 1e-8, "product basis has linearly dependent functions"


def test_folded_coefficients_equal_basis_contraction(equivariant_basis):
    op, basis = equivariant_basis
    rng = np.random.default_rng(7)
    vec, rec, sj = _random_neighbourhood(rng)
    a = _a_flat(vec, rec, sj, 3, 2, op.n_rad, op.l_max)
    c = rng.normal(size=(1, basis.n_functions()))
    direct = np.asarray(product_basis(basis, a))[..., 0] @ c[0]
    folded = sum(np.asarray(aa) @ f[0] for aa, f in zip(monomials(basis, a), fold_coefficients(basis, c)))
    np.testing.assert_allclose(folded, direct, rtol=1e-10, atol=1e-12)


def test_one_hot_atomic_basis_equals_feature_form():
    rng = np.random.default_rng(11)
    vec, rec, sj = _random_neighbourhood(rng, n_species=3)
    vec = jnp.asarray(vec)
    r = safe_norm(vec)
    sh = spherical_harmonics(unit_vectors(vec, r), 2)
    g = radial.radial_basis(r, RadialSpec(n_max=4), CUTOFF)
    mask = jnp.asarray(rng.random(len(vec)) > 0.2)
    one_hot = atomic_basis_one_hot(g, sh, jnp.asarray(sj), jnp.asarray(rec), mask, 3, 3, 2)
    feat = atomic_basis_features(g, sh, jax.nn.one_hot(sj, 3), jnp.asarray(rec), mask, 3, 2)
    np.testing.assert_allclose(one_hot, feat, atol=1e-13)


def test_agnesi_transform_is_monotone_onto_cutoff_range_and_keeps_c2():
    r = jnp.linspace(0.0, CUTOFF, 200)
    rt = radial.agnesi_distance(r, 1.1, 4.0, CUTOFF)
    assert float(rt[0]) == pytest.approx(0.0, abs=1e-12) and float(rt[-1]) == pytest.approx(CUTOFF, rel=1e-12)
    assert np.all(np.diff(np.asarray(rt)) > 0)
    # steepest around r0: most of the range is spent on short distances
    assert float(radial.agnesi_distance(jnp.asarray(1.5), 1.1, 4.0, CUTOFF)) > 0.5 * CUTOFF
    spec = RadialSpec(kind="chebyshev", n_max=6, transform="agnesi")
    f = lambda x: radial.radial_basis(x, spec, CUTOFF, 1.1)  # noqa: E731
    d2 = jax.jacfwd(jax.jacfwd(f))
    assert np.max(np.abs(d2(jnp.asarray(CUTOFF)))) < 1e-4
    with pytest.raises(ValueError, match="needs r0"):
        radial.radial_basis(r, spec, CUTOFF)


def test_pair_r0_table_is_element_pair_dependent():
    tab = radial.pair_r0_table((1, 6, 8))
    assert tab.shape == (3, 3) and np.allclose(tab, tab.T)
    assert tab[0, 0] < tab[0, 1] < tab[1, 1]


@pytest.mark.parametrize("l_max,nu,l_out", [(2, 3, 1), (3, 3, 2), (1, 2, 1)])
def test_folded_coupling_equals_the_coupled_products(l_max, nu, l_out):
    """folded_coupling's dense D gives B = D · AA, the same functions in the same order as couple_channels
    (multi-ACE messages fold their weights into D instead of forming B)."""
    from jace.basis.product import couple_channels, folded_coupling, monomials
    from jace.layers.multi_ace import channelwise_product_basis

    basis = channelwise_product_basis(l_max, nu, l_out)
    a = jnp.asarray(np.random.default_rng(0).normal(size=(5, (l_max + 1) ** 2, 4)))
    aa = monomials(basis, a)
    for L in range(l_out + 1):
        b = couple_channels(basis, aa, (L, (-1) ** L))
        d = folded_coupling(basis, (L, (-1) ** L))
        assert d.shape == (b.shape[1], 2 * L + 1, sum(basis.n_monomials)) and b.shape[1] > 0
        np.testing.assert_allclose(jnp.einsum("eMa,nak->neMk", d, jnp.concatenate(aa, axis=1)), b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("l_max,nu,l_out", [(2, 3, 1), (3, 3, 2), (1, 2, 1)])
def test_parity_ordered_basis_and_coupling_blocks(l_max, nu, l_out):
    """parity_ordered reorders monomials only: B is unchanged, function for function; each irrep's
    coupling_blocks then cover a slice of monomials of that irrep's parity alone, and with the
    monomial axis first (monomials(axis=0)) give the same B."""
    from jace.basis.product import couple_channels, coupling_blocks, monomials, parity_ordered
    from jace.layers.multi_ace import channelwise_product_basis

    plain = channelwise_product_basis(l_max, nu, l_out, by_parity=False)
    ordered = parity_ordered(plain)
    a = jnp.asarray(np.random.default_rng(1).normal(size=(5, (l_max + 1) ** 2, 4)))
    aa, aa_plain = monomials(ordered, a), monomials(plain, a)
    aa_first = monomials(ordered, a.transpose(1, 0, 2), axis=0)
    assert [x.shape[1] for x in aa] == plain.n_monomials
    l_of = np.floor(np.sqrt(np.arange((l_max + 1) ** 2))).astype(int)
    for L in range(l_out + 1):
        b = couple_channels(ordered, aa, (L, (-1) ** L))
        np.testing.assert_allclose(b, couple_channels(plain, aa_plain, (L, (-1) ** L)), rtol=0, atol=1e-12)
        from_blocks = 0.0
        for v, lo, hi, d in coupling_blocks(ordered, (L, (-1) ** L)):
            # parity of each monomial in the block: product of its factors' (-1)^l along the recursion
            parity = np.ones(hi - lo)
            idx = np.arange(lo, hi)
            for level in range(v, -1, -1):
                parent, last = ordered.levels[level]
                parity *= (-1.0) ** l_of[last[idx]]
                idx = parent[idx]
            assert np.all(parity == (-1) ** L), (L, v)
            from_blocks = from_blocks + jnp.einsum("eMq,qnk->neMk", d, aa_first[v][lo:hi])
        np.testing.assert_allclose(from_blocks, b, rtol=0, atol=1e-12)
