"""The ACE product basis: symmetrised products of the atomic basis, coupled to irreps.

Given A_{i, α m} with α = (k, n, l) (neighbour feature k, radial n, angular l), the product basis of
correlation order ν is

    B_{i, η L M} = Σ_q C^{L M}_{η q} AA_{i q},    AA_{i q} = Π_{ξ=1..ν} A_{i, α_ξ m_ξ},

where q runs over monomials (multisets of (α, m)) and C are the symmetrised generalised Clebsch–Gordan
coefficients of ``coupling.symmetric_coupling``. Which products are kept is set by a total degree:
a sorted tuple (α_1 ≤ … ≤ α_ν) is kept when Σ_ξ (n_ξ + 1 + w_l l_ξ) ≤ max_degree[ν - 1].

Evaluation is recursive (the sparse ACE recursion): every monomial of order ν is its order-(ν-1)
prefix times one more A, so each AA costs one multiplication, whatever ν. Prefixes that no basis
function uses directly are kept as intermediate nodes. The coupling C is block-diagonal (one block per
α-tuple) and blocks sharing (l's, identical-factor pattern) share coefficients, so B is computed as one
gather and one small dense contraction per block type — no scatter.

Cost per atom: Σ_ν n_AA(ν) multiplications for the products plus Σ_blocks n_mono · r for the coupling.
n_AA(ν) grows like the number of degree-bounded multisets of ν one-particle indices (combinatorially
in ν, polynomially in the degree), never like (number of A)^ν. For the energy of a linear model the
coupling is folded into the coefficients (``fold_coefficients``) and the cost is Σ_ν n_AA(ν).

Everything here except the evaluation functions is host-side numpy, built once per model.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Sequence

import jax.numpy as jnp
import numpy as np

from jace.basis.coupling import symmetric_coupling


@dataclasses.dataclass(frozen=True)
class OneParticle:
    """Layout of the flattened atomic basis A[k, n, (l, m)]."""

    n_channels: int  # k: species for one-hot, feature channels otherwise
    n_rad: int
    l_max: int

    @property
    def size(self) -> int:
        return self.n_channels * self.n_rad * (self.l_max + 1) ** 2

    def offset(self, k: int, n: int, l: int) -> int:
        """Flat index of A[k, n, l, m = -l]."""
        return (k * self.n_rad + n) * (self.l_max + 1) ** 2 + l * l


@dataclasses.dataclass
class CouplingGroup:
    """Blocks of one correlation order and one coupling type.

    mono_index: [n_blocks, n_mono] indices into the AA array of order ``nu``.
    coeff: [r, 2L+1, n_mono] shared coupling coefficients.
    """

    nu: int
    L: int
    mono_index: np.ndarray
    coeff: np.ndarray

    @property
    def n_functions(self) -> int:
        return self.mono_index.shape[0] * self.coeff.shape[0]


@dataclasses.dataclass
class ProductBasis:
    """A built product basis (host-side tables).

    levels[ν-1] = (parent [n_AA_ν], last [n_AA_ν]): AA_ν[:, q] = AA_{ν-1}[:, parent[q]] · A[:, last[q]]
      (parent is unused for ν = 1).
    groups[(L, p)]: CouplingGroups producing the outputs of irrep (L, parity p = ±1), in order.
    info[(L, p)]: per basis function, a dict of arrays: nu, n_sum (Σ (n+1)), l_sum (Σ l), ll_sum (Σ l(l+1)).
    """

    one_particle: OneParticle
    correlation: int
    levels: list
    groups: dict
    info: dict
    cache: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)  # host tables, per irrep

    def n_functions(self, irrep=(0, 1)) -> int:
        return int(sum(g.n_functions for g in self.groups.get(irrep, [])))

    @property
    def n_monomials(self) -> list[int]:
        return [len(last) for _, last in self.levels]


def _enumerate_tuples(alphas, degrees, nu, max_deg):
    """Non-decreasing index tuples of length ν with Σ degree ≤ max_deg (DFS with pruning)."""
    min_deg = float(np.min(degrees))
    out = []

    def rec(start, prefix, deg):
        if len(prefix) == nu:
            out.append(tuple(prefix))
            return
        remaining = nu - len(prefix) - 1
        for a in range(start, len(alphas)):
            d = deg + degrees[a]
            if d + remaining * min_deg <= max_deg + 1e-9:
                rec(a, prefix + [a], d)

    rec(0, [], 0.0)
    return out


def build_product_basis(
    one_particle: OneParticle,
    correlation: int,
    max_degree: Sequence[float],
    w_l: float = 1.5,
    irreps: Sequence[tuple[int, int]] = ((0, 1),),
) -> ProductBasis:
    """Enumerate and couple the product basis.

    Args:
      one_particle: layout of A.
      correlation: ν_max ≥ 1.
      max_degree: per ν, the total-degree bound.
      w_l: weight of l in the degree n + 1 + w_l l.
      irreps: outputs as (L, parity); (0, 1) are the invariants used for energies.
    """
    op = one_particle
    alphas = [(k, n, l) for k in range(op.n_channels) for n in range(op.n_rad) for l in range(op.l_max + 1)]
    degrees = np.array([n + 1 + w_l * l for (_, n, l) in alphas])
    level_keys: list[dict] = [dict() for _ in range(correlation)]
    pending = {irr: [] for irr in irreps}  # (nu, ckey, L, flat monomials [n_mono, nu], alpha tuple)

    for nu in range(1, correlation + 1):
        for tup in _enumerate_tuples(alphas, degrees, nu, max_degree[nu - 1]):
            als = [alphas[a] for a in tup]
            lsum = sum(l for _, _, l in als)
            # groups of identical factors (tup is sorted, so identical ones are contiguous)
            groups = [list(g) for _, g in itertools.groupby(tup)]
            groups.sort(key=lambda g: (alphas[g[0]][2], len(g), g[0]))
            canon = [a for g in groups for a in g]
            ls = tuple(alphas[a][2] for a in canon)
            sizes = tuple(len(g) for g in groups)
            offsets = np.array([op.offset(*alphas[a]) for a in canon])
            for L, p in irreps:
                if (-1) ** lsum != p or L > lsum:
                    continue
                mono, coeff = symmetric_coupling(ls, sizes, L)
                if coeff.shape[0] == 0:
                    continue
                flat = np.sort(offsets[None, :] + mono, axis=1)
                pending[(L, p)].append((nu, (ls, sizes), L, flat, coeff, als))
                for row in map(tuple, flat):
                    for depth in range(nu, 0, -1):
                        key = row[:depth]
                        if key in level_keys[depth - 1]:
                            break
                        level_keys[depth - 1][key] = len(level_keys[depth - 1])

    levels = []
    for nu in range(1, correlation + 1):
        keys = list(level_keys[nu - 1].keys())
        last = np.array([k[-1] for k in keys], dtype=np.int32)
        if nu == 1:
            parent = np.zeros(len(keys), dtype=np.int32)
        else:
            parent = np.array([level_keys[nu - 2][k[:-1]] for k in keys], dtype=np.int32)
        levels.append((parent, last))

    groups, info = {}, {}
    for irr, items in pending.items():
        by_type: dict = {}
        for nu, ckey, L, flat, coeff, als in items:
            idx = np.array([level_keys[nu - 1][tuple(r)] for r in flat], dtype=np.int32)
            by_type.setdefault((nu, ckey, L), (coeff, []))[1].append((idx, als))
        glist, meta = [], {"nu": [], "n_sum": [], "l_sum": [], "ll_sum": []}
        for (nu, _, L), (coeff, blocks) in by_type.items():
            glist.append(CouplingGroup(nu, L, np.stack([b[0] for b in blocks]), coeff))
            for _, als in blocks:
                for _ in range(coeff.shape[0]):
                    meta["nu"].append(nu)
                    meta["n_sum"].append(sum(n + 1 for _, n, _ in als))
                    meta["l_sum"].append(sum(l for _, _, l in als))
                    meta["ll_sum"].append(sum(l * (l + 1) for _, _, l in als))
        groups[irr] = glist
        info[irr] = {k: np.asarray(v) for k, v in meta.items()}
    return ProductBasis(op, correlation, levels, groups, info)


def monomials(basis: ProductBasis, a_flat: jnp.ndarray, axis: int = 1) -> list[jnp.ndarray]:
    """The recursion. Args: a_flat [n_nodes, one_particle.size, *batch]. Returns per ν: AA_ν [n_nodes, n_AA_ν, *batch].

    Trailing batch axes (e.g. channels for the channel-wise products of multi-ACE layers) ride along.
    ``axis`` is where the one-particle (and monomial) axis is: 1 as above, or 0 for a_flat
    [size, n_nodes, *batch] → AA_ν [n_AA_ν, n_nodes, *batch], where every gather copies whole
    contiguous rows (and its gradient adds whole rows).
    """
    lead = (slice(None),) * axis  # static numpy indices: plain indexing, no out-of-bounds masking
    out = []
    for nu, (parent, last) in enumerate(basis.levels, start=1):
        a_last = a_flat[lead + (last,)]
        out.append(a_last if nu == 1 else out[-1][lead + (parent,)] * a_last)
    return out


def parity_ordered(basis: ProductBasis) -> ProductBasis:
    """The same basis (same functions, same order η) with every level's monomials reordered: those of
    even parity (Π_ξ (-1)^{l_ξ} = +1) first, then the odd ones.

    A function of parity p only uses monomials of parity p, so after this reordering the monomials of
    one irrep are a contiguous range of each level: a slice instead of a gather.
    """
    op = basis.one_particle
    l_of_flat = np.floor(np.sqrt(np.arange(op.size) % (op.l_max + 1) ** 2)).astype(int)
    levels, inverses, parities = [], [], []
    for nu, (parent, last) in enumerate(basis.levels, start=1):
        parity = (-1) ** l_of_flat[last] * (parities[-1][parent] if nu > 1 else 1)
        perm = np.argsort(parity < 0, kind="stable")
        new_parent = inverses[-1][parent[perm]].astype(np.int32) if nu > 1 else parent[perm]
        levels.append((new_parent, last[perm]))
        inverses.append(np.argsort(perm))
        parities.append(parity)
    groups = {
        irr: [CouplingGroup(g.nu, g.L, inverses[g.nu - 1][g.mono_index].astype(np.int32), g.coeff) for g in gl]
        for irr, gl in basis.groups.items()
    }
    return ProductBasis(op, basis.correlation, levels, groups, basis.info)


def couple(basis: ProductBasis, aa: list[jnp.ndarray], irrep=(0, 1)) -> jnp.ndarray:
    """B of one irrep from the monomials. Returns [n_nodes, n_functions, 2L+1]."""
    parts = []
    for g in basis.groups.get(irrep, []):
        x = aa[g.nu - 1][:, g.mono_index]  # [n_nodes, n_blocks, n_mono]
        b = jnp.einsum("nbq,rMq->nbrM", x, jnp.asarray(g.coeff, dtype=x.dtype))
        parts.append(b.reshape(b.shape[0], -1, b.shape[-1]))
    if not parts:
        n = aa[0].shape[0]
        return jnp.zeros((n, 0, 2 * irrep[0] + 1), dtype=aa[0].dtype)
    return jnp.concatenate(parts, axis=1)


def couple_channels(basis: ProductBasis, aa: list[jnp.ndarray], irrep=(0, 1)) -> jnp.ndarray:
    """``couple`` with a trailing channel axis: aa_ν [n, n_AA_ν, K] → B [n, n_functions, 2L+1, K]."""
    parts = []
    for g in basis.groups.get(irrep, []):
        x = aa[g.nu - 1][:, g.mono_index]  # [n, n_blocks, n_mono, K]
        b = jnp.einsum("nbqk,rMq->nbrMk", x, jnp.asarray(g.coeff, dtype=x.dtype))
        parts.append(b.reshape(b.shape[0], -1, b.shape[-2], b.shape[-1]))
    if not parts:
        n, k = aa[0].shape[0], aa[0].shape[-1]
        return jnp.zeros((n, 0, 2 * irrep[0] + 1, k), dtype=aa[0].dtype)
    return jnp.concatenate(parts, axis=1)


def folded_coupling(basis: ProductBasis, irrep=(0, 1)) -> np.ndarray:
    """The coupling of one irrep as one dense host-side tensor D [n_functions, 2L+1, Σ_ν n_AA_ν].

    B_{η M} = Σ_a D[η, M, a] AA_a with AA = concatenate(``monomials``, axis=1): what ``couple`` computes,
    in the same order of functions η. A linear map of B (Σ_η W_η B_η) folds into one contraction over
    monomials, Σ_a (Σ_η W_η D[η, :, a]) AA_a, without forming B (as MACE's symmetric contraction does).
    """
    starts = np.concatenate([[0], np.cumsum(basis.n_monomials)])
    n_fun, d = basis.n_functions(irrep), 2 * irrep[0] + 1
    out = np.zeros((n_fun, d, int(starts[-1])))
    eta = 0
    for g in basis.groups.get(irrep, []):
        nb, r = g.mono_index.shape[0], g.coeff.shape[0]
        rows = eta + np.arange(nb * r).reshape(nb, r)  # η = block-major, then r, as in ``couple``
        cols = starts[g.nu - 1] + g.mono_index  # [nb, n_mono]
        for q in range(g.mono_index.shape[1]):
            np.add.at(out, (rows, slice(None), cols[:, q : q + 1]), np.broadcast_to(g.coeff[None, :, :, q], (nb, r, d)))
        eta += nb * r
    return out


def coupling_blocks(basis: ProductBasis, irrep=(0, 1)) -> list[tuple[int, int, int, np.ndarray]]:
    """``folded_coupling`` cut into the monomial ranges one irrep uses: a list of (ν - 1, lo, hi, D_ν)
    with D_ν [n_functions, 2L+1, hi - lo] such that B_{η M} = Σ_blocks Σ_q D_ν[η, M, q] AA_ν[lo + q].

    Orders ν with no function of this irrep are left out; with ``parity_ordered`` levels each range
    holds only monomials of the irrep's parity. Computed once per basis and irrep (host-side, cached
    on the basis; the arrays are read-only).
    """
    cache = basis.cache.setdefault("coupling_blocks", {})
    if irrep not in cache:
        d = folded_coupling(basis, irrep)
        starts = np.concatenate([[0], np.cumsum(basis.n_monomials)])
        blocks = []
        for nu in range(basis.correlation):
            d_nu = d[:, :, starts[nu] : starts[nu + 1]]
            used = np.nonzero(np.any(d_nu != 0, axis=(0, 1)))[0]
            if used.size:
                lo, hi = int(used[0]), int(used[-1]) + 1
                block = np.ascontiguousarray(d_nu[:, :, lo:hi])
                block.flags.writeable = False
                blocks.append((nu, lo, hi, block))
        cache[irrep] = blocks
    return cache[irrep]


def product_basis(basis: ProductBasis, a_flat: jnp.ndarray, irrep=(0, 1)) -> jnp.ndarray:
    """B_{i, v} of one irrep. Args: a_flat [n_nodes, size]. Returns [n_nodes, n_functions, 2L+1]."""
    return couple(basis, monomials(basis, a_flat), irrep)


def fold_coefficients(basis: ProductBasis, coefficients: np.ndarray) -> list[np.ndarray]:
    """Fold linear coefficients of the invariants into monomial space.

    Args: coefficients [n_out, n_functions] (e.g. one row per species).
    Returns per ν: [n_out, n_AA_ν] such that Σ_v c_v B_v = Σ_ν AA_ν · c̃_ν.
    """
    coefficients = np.asarray(coefficients)
    folded = [np.zeros((coefficients.shape[0], len(last))) for _, last in basis.levels]
    start = 0
    for g in basis.groups.get((0, 1), []):
        nb, r = g.mono_index.shape[0], g.coeff.shape[0]
        c = coefficients[:, start : start + nb * r].reshape(-1, nb, r)
        contrib = np.einsum("obr,rq->obq", c, g.coeff[:, 0, :])  # [n_out, n_blocks, n_mono]
        np.add.at(folded[g.nu - 1], (slice(None), g.mono_index.reshape(-1)), contrib.reshape(c.shape[0], -1))
        start += nb * r
    return folded
