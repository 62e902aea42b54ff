"""Equivariant feature arrays and the pure operations on them.

Layout: a feature array is ``[n, K, (L+1)²]``: K channels for every l = 0 … L, natural parity
((-1)^l: 0e, 1o, 2e, …), components in e3nn's real basis at index l² + (m + l). This is the layout of
``jace.basis.angular.spherical_harmonics`` and of the atomic basis, so products and tensor products need
no reshuffling. All functions are pure and jit/vmap-able; weights are explicit arguments.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jace.basis.coupling import _cg


def n_lm(l_max: int) -> int:
    """Number of components (l_max+1)²."""
    return (l_max + 1) ** 2


def block(x: jnp.ndarray, l: int) -> jnp.ndarray:
    """The l-th component block x[..., l² : (l+1)²]."""
    return x[..., l * l : (l + 1) * (l + 1)]


def truncate_or_pad(x: jnp.ndarray, l_max: int) -> jnp.ndarray:
    """Features restricted to l ≤ l_max, zero-padded when x has fewer l's. [n, K, (l_max+1)²]."""
    have = x.shape[-1]
    want = n_lm(l_max)
    if have >= want:
        return x[..., :want]
    return jnp.concatenate([x, jnp.zeros(x.shape[:-1] + (want - have,), x.dtype)], axis=-1)


def linear(x: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
    """Channel mixing per l: out[n, k', lm] = Σ_k x[n, k, lm] w[l, k, k'] / sqrt(K).

    Args: x [n, K, (L+1)²]; w [L+1, K, K'] (one matrix per l: equivariant by Schur's lemma).
    Returns [n, K', (L+1)²].
    """
    l_max = w.shape[0] - 1
    norm = 1.0 / np.sqrt(x.shape[1])
    parts = [jnp.einsum("nkm,kj->njm", block(x, l), w[l]) for l in range(l_max + 1)]
    return jnp.concatenate(parts, axis=-1) * norm


def linear_element(x: jnp.ndarray, w: jnp.ndarray, one_hot: jnp.ndarray) -> jnp.ndarray:
    """Element-dependent channel mixing: out[n, k', lm] = Σ_k x[n, k, lm] w[z_n, l, k, k'] / sqrt(K).

    Computed as one matmul over (element, channel) pairs of the outer product one_hot ⊗ x, so no
    per-node weight matrices are gathered. Args: x [n, K, (L+1)²]; w [Z, L+1, K, K']; one_hot [n, Z].
    Returns [n, K', (L+1)²].
    """
    n_z, l1, k_in, k_out = w.shape
    xz = (one_hot[:, :, None, None] * x[:, None]).reshape(x.shape[0], n_z * k_in, x.shape[-1])
    wz = jnp.transpose(w, (1, 0, 2, 3)).reshape(l1, n_z * k_in, k_out)
    return linear(xz, wz) * np.sqrt(n_z)


@functools.lru_cache(maxsize=None)
def tensor_product_paths(l_sh: int, l_in: int, l_out: int) -> tuple[tuple[int, int, int], ...]:
    """Paths (l1, l2, l3) of Y_{l1} ⊗ h_{l2} → l3 with natural parity (l1 + l2 + l3 even), sorted by l3."""
    paths = [
        (l1, l2, l3)
        for l3 in range(l_out + 1)
        for l1 in range(l_sh + 1)
        for l2 in range(l_in + 1)
        if abs(l1 - l2) <= l3 <= l1 + l2 and (l1 + l2 + l3) % 2 == 0
    ]
    return tuple(paths)


@functools.lru_cache(maxsize=None)
def tensor_product_table(l_sh: int, l_in: int, l_out: int):
    """Dense coupling table of all paths.

    Returns (C, path_of_column, n_paths_per_l3):
      C [(l_sh+1)², (l_in+1)², P] with P = Σ_paths (2 l3 + 1), columns grouped by l3 (all paths of one l3
        contiguous, each path's 2 l3 + 1 components contiguous), scaled by sqrt(2 l3 + 1) so that outputs
        have the magnitude of the inputs;
      path_of_column [P] int, the path of each column;
      n_paths_per_l3: tuple, the number of paths landing in each l3 (0 means that l3 is unreachable).
    """
    paths = tensor_product_paths(l_sh, l_in, l_out)
    cols = sum(2 * l3 + 1 for _, _, l3 in paths)
    c = np.zeros((n_lm(l_sh), n_lm(l_in), cols))
    owner = np.zeros(cols, dtype=np.int32)
    col = 0
    for p, (l1, l2, l3) in enumerate(paths):
        d = 2 * l3 + 1
        c[l1 * l1 : (l1 + 1) ** 2, l2 * l2 : (l2 + 1) ** 2, col : col + d] = _cg(l1, l2, l3) * np.sqrt(d)
        owner[col : col + d] = p
        col += d
    counts = tuple(sum(1 for *_, l3 in paths if l3 == L) for L in range(l_out + 1))
    return c, owner, counts


def edge_tensor_product(sh: jnp.ndarray, h_j: jnp.ndarray, weights: jnp.ndarray, table) -> jnp.ndarray:
    """Channel-wise, radially weighted tensor product of edge harmonics with neighbour features.

    out[e, k, (p, m3)] = w[e, k, p] Σ_{m1, m2} C_p[m1, m2, m3] Y_{l1 m1}(r̂_e) h_{j(e), k, l2 m2}

    Args:
      sh: [n_edges, (l_sh+1)²] spherical harmonics.
      h_j: [n_edges, K, (l_in+1)²] features of each edge's neighbour.
      weights: [n_edges, K, n_paths] per-path radial weights.
      table: ``tensor_product_table(l_sh, l_in, l_out)``.
    Returns:
      [n_edges, K, P], columns as in the table. Cost O(n_edges · K · (l_in+1)² · P).
    """
    c, owner, _ = table
    t = jnp.einsum("ea,abc->ebc", sh, jnp.asarray(c, sh.dtype))  # [e, (l_in+1)², P]
    if h_j.shape[-1] == 1:
        out = h_j * t[:, 0][:, None, :]
    else:
        out = jnp.einsum("ekb,ebc->ekc", h_j, t)
    return out * weights[:, :, owner]


def mix_paths(x: jnp.ndarray, w: list, counts: tuple[int, ...]) -> jnp.ndarray:
    """Linear map from per-path tensor-product outputs to K' channels per l3.

    Args: x [n, K, P] (columns as in ``tensor_product_table``); w[l3] [K · n_paths(l3), K'] (None where
    n_paths(l3) = 0: that block is zero). Returns [n, K', (l_out+1)²].
    """
    n, k, _ = x.shape
    parts, col = [], 0
    k_out = next(wl.shape[1] for wl in w if wl is not None)
    for l3, n_p in enumerate(counts):
        d = 2 * l3 + 1
        if n_p == 0:
            parts.append(jnp.zeros((n, k_out, d), x.dtype))
            continue
        xb = x[:, :, col : col + n_p * d].reshape(n, k * n_p, d)
        parts.append(jnp.einsum("nkm,kj->njm", xb, w[l3]) / np.sqrt(k * n_p))
        col += n_p * d
    return jnp.concatenate(parts, axis=-1)


def normalized_silu(x: jnp.ndarray) -> jnp.ndarray:
    """silu scaled so that its second moment under a unit normal input is 1 (e3nn's normalize2mom)."""
    return jax.nn.silu(x) * 1.6790


def gate(x: jnp.ndarray, gates: jnp.ndarray) -> jnp.ndarray:
    """Gated nonlinearity: silu on the scalars, sigmoid(gate) times every L > 0 block (equivariant).

    Args: x [n, K, (L+1)²]; gates [n, K, L] scalars, one per channel and l ≥ 1. Returns x's shape.
    """
    l_max = int(round(np.sqrt(x.shape[-1]))) - 1
    parts = [normalized_silu(block(x, 0))]
    for l in range(1, l_max + 1):
        parts.append(block(x, l) * jax.nn.sigmoid(gates[:, :, l - 1 : l]))
    return jnp.concatenate(parts, axis=-1)


def l_of_lm_index(l_max: int) -> np.ndarray:
    """[(l_max+1)²] the l of every component slot (for gathering per-l radial functions)."""
    return np.concatenate([np.full(2 * l + 1, l) for l in range(l_max + 1)])
