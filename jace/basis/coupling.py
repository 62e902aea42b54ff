"""Generalised Clebsch–Gordan coefficients for symmetrised ACE products, computed once and cached.

A product of ν one-particle functions A_{α_1 m_1} … A_{α_ν m_ν} is coupled to an irrep (L, parity) by
recursively coupling (l_1 ⊗ l_2 → k_2) ⊗ l_3 → k_3 … → L with e3nn-jax's real Clebsch–Gordan
coefficients; every chain of intermediate k's is one coupling path.

Products of commuting factors are symmetric under swapping identical factors (same α), so the natural
coordinates are *monomials*: multisets of (α, m). Projecting the path tensors onto monomials and
keeping an orthonormal basis of their span (SVD) gives the independent symmetrised basis functions, with
all redundant couplings removed. The result depends only on the l's and on which factors are identical,
so it is cached on that key (``functools.lru_cache``, in-process).
"""

from __future__ import annotations

import functools
import itertools

import e3nn_jax as e3nn
import numpy as np


@functools.lru_cache(maxsize=None)
def _cg(l1: int, l2: int, l3: int) -> np.ndarray:
    """Real CG tensor [2l1+1, 2l2+1, 2l3+1] in e3nn's basis (float64)."""
    return np.asarray(e3nn.clebsch_gordan(l1, l2, l3), dtype=np.float64)


@functools.lru_cache(maxsize=None)
def generalised_cg(ls: tuple[int, ...], L: int) -> tuple[np.ndarray, ...]:
    """All coupling paths of (l_1, …, l_ν) to L.

    Returns a tuple of tensors, each [2l_1+1, …, 2l_ν+1, 2L+1], one per chain of intermediate
    angular momenta (parity is not checked here: see ``symmetric_coupling``).
    """
    if len(ls) == 1:
        return (np.eye(2 * L + 1),) if ls[0] == L else ()
    head, last = ls[:-1], ls[-1]
    paths = []
    for k in range(0, sum(head) + 1):
        if not abs(k - last) <= L <= k + last:
            continue
        for t in generalised_cg(head, k):
            paths.append(np.tensordot(t, _cg(k, last, L), axes=([-1], [0])))
    return tuple(paths)


@functools.lru_cache(maxsize=None)
def symmetric_coupling(ls: tuple[int, ...], sizes: tuple[int, ...], L: int, tol: float = 1e-9):
    """Independent symmetrised couplings of a product with identical-factor groups.

    Args:
      ls: the l of each factor, factors of one group contiguous.
      sizes: group sizes (sum = ν); factors within a group are identical (same α).
      L: output angular momentum. The parity of the output is (-1)^Σl, so use only Σl even for
        invariants (0e).

    Returns:
      (monomials, coeff): ``monomials`` [n_mono, ν] int, the m-offsets (0 … 2l) of each factor,
      canonical (sorted within groups); ``coeff`` [r, 2L+1, n_mono], orthonormal rows, such that
      B_{η M} = Σ_q coeff[η, M, q] Π_ξ A_{α_ξ, monomials[q, ξ]}. r may be 0.
    """
    nu = len(ls)
    paths = generalised_cg(ls, L)
    if not paths:
        return np.zeros((0, nu), dtype=np.int64), np.zeros((0, 2 * L + 1, 0))
    full = np.stack(paths).reshape(len(paths), -1, 2 * L + 1)  # [paths, Π d, 2L+1]
    mtuples = np.array(list(itertools.product(*[range(2 * l + 1) for l in ls])), dtype=np.int64)
    canon = mtuples.copy()
    start = 0
    for s in sizes:
        canon[:, start : start + s] = np.sort(canon[:, start : start + s], axis=1)
        start += s
    monomials, inverse = np.unique(canon, axis=0, return_inverse=True)
    proj = np.zeros((len(paths), 2 * L + 1, len(monomials)))
    np.add.at(proj, (slice(None), slice(None), inverse.reshape(-1)), np.transpose(full, (0, 2, 1)))
    flat = proj.reshape(len(paths), -1)
    _, s, vt = np.linalg.svd(flat, full_matrices=False)
    rank = int(np.sum(s > tol * max(s.max(initial=0.0), 1.0)))
    coeff = vt[:rank].reshape(rank, 2 * L + 1, len(monomials))
    used = np.any(np.abs(coeff) > 1e-12, axis=(0, 1))
    return monomials[used], coeff[:, :, used]
