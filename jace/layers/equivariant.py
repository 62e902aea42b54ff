"""Equivariant feature arrays and the pure operations on them.

Layout (channels last): a feature array is ``[n, (L+1)², K]``: K channels for every l = 0 … L,
natural parity ((-1)^l: 0e, 1o, 2e, …), components in e3nn's real basis at index l² + (m + l), the same
order as ``jace.basis.angular.spherical_harmonics``. Channels last keeps the innermost loops of every
elementwise op and every per-l linear map contiguous over K (vectorised on CPU, coalesced on GPU).
All functions are pure and jit/vmap-able; weights are explicit arguments.
"""

from __future__ import annotations

import math

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jace.basis.coupling import _cg


def n_lm(l_max: int) -> int:
    """Number of components (l_max+1)²."""
    return (l_max + 1) ** 2


def l_max_of(x: jnp.ndarray) -> int:
    """The L of a feature array [n, (L+1)², K]."""
    return int(round(np.sqrt(x.shape[1]))) - 1


def block(x: jnp.ndarray, l: int) -> jnp.ndarray:
    """The l-th component block x[:, l² : (l+1)², :]."""
    return x[:, l * l : (l + 1) * (l + 1)]


def truncate_or_pad(x: jnp.ndarray, l_max: int) -> jnp.ndarray:
    """Features restricted to l ≤ l_max, zero-padded when x has fewer l's. [n, (l_max+1)², K]."""
    have, want = x.shape[1], n_lm(l_max)
    if have >= want:
        return x[:, :want]
    return jnp.concatenate([x, jnp.zeros((x.shape[0], want - have, x.shape[2]), x.dtype)], axis=1)


def linear(x: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
    """Channel mixing per l: out[n, lm, k'] = Σ_k x[n, lm, k] w[l, k, k'] / sqrt(K).

    Args: x [n, (L+1)², K]; w [L+1, K, K'] (one matrix per l: equivariant by Schur's lemma).
    Returns [n, (L+1)², K'].
    """
    norm = 1.0 / math.sqrt(x.shape[2])
    parts = [block(x, l) @ w[l] for l in range(w.shape[0])]
    return jnp.concatenate(parts, axis=1) * norm


def linear_element(x: jnp.ndarray, w: jnp.ndarray, one_hot: jnp.ndarray) -> jnp.ndarray:
    """Element-dependent channel mixing: out[n, lm, k'] = Σ_k x[n, lm, k] w[z_n, l, k, k'] / sqrt(K).

    One matmul over (element, channel) pairs of the outer product x ⊗ one_hot, so no per-node weight
    matrices are gathered. Args: x [n, (L+1)², K]; w [Z, L+1, K, K']; one_hot [n, Z].
    Returns [n, (L+1)², K'].
    """
    n_z, l1, k_in, k_out = w.shape
    xz = (x[:, :, None, :] * one_hot[:, None, :, None]).reshape(x.shape[0], x.shape[1], n_z * k_in)
    wz = w.reshape(n_z, l1, k_in, k_out).transpose(1, 0, 2, 3).reshape(l1, n_z * k_in, k_out)
    return linear(xz, wz) * math.sqrt(n_z)


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


def paths_per_l3(paths, l_out: int) -> tuple[int, ...]:
    """How many paths land in each l3 = 0 … l_out (0: that l3 is unreachable)."""
    return tuple(sum(1 for *_, l3 in paths if l3 == L) for L in range(l_out + 1))


@functools.lru_cache(maxsize=None)
def _path_coefficients(l1: int, l2: int, l3: int) -> np.ndarray:
    """CG [2l1+1, 2l2+1, 2l3+1] scaled by sqrt(2 l3 + 1) so outputs keep the magnitude of the inputs."""
    return _cg(l1, l2, l3) * np.sqrt(2 * l3 + 1)


@functools.lru_cache(maxsize=None)
def _stacked_path_coefficients(paths: tuple, l_sh: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """All paths' coefficients side by side: [(l_sh+1)², Σ_p (2l2+1)(2l3+1)] and each path's offset."""
    cols = sum((2 * l2 + 1) * (2 * l3 + 1) for _, l2, l3 in paths)
    c = np.zeros((n_lm(l_sh), cols))
    offsets, col = [], 0
    for l1, l2, l3 in paths:
        width = (2 * l2 + 1) * (2 * l3 + 1)
        c[l1 * l1 : (l1 + 1) ** 2, col : col + width] = _path_coefficients(l1, l2, l3).reshape(2 * l1 + 1, width)
        offsets.append(col)
        col += width
    return c, tuple(offsets)


def edge_tensor_product(
    sh: jnp.ndarray, h_j: jnp.ndarray, weights: jnp.ndarray, paths, receivers: jnp.ndarray, n_nodes: int
) -> jnp.ndarray:
    """Channel-wise, radially weighted tensor product of edge harmonics with neighbour features, summed
    over each node's edges:

    out[i, (p, m3), k] = Σ_{e: receiver(e) = i} w[e, p, k] Σ_{m1, m2} C_p[m1, m2, m3] Y_{l1 m1}(r̂_e) h_{j(e), l2 m2, k}

    Implementation: T_p[e, m2, m3] = Σ_{m1} C_p Y for all paths is one matmul; each path then touches
    only its own l2 block of h (no dense (l_in+1)² loop), weighted first and contracted with T_p as one
    batched [d3 × d2] @ [d2 × K] dot per edge, and is summed to the nodes on its own, so no
    [n_edges, P, K] array is ever concatenated (or split in the backward pass). On CPU the batched dot
    is 1.7–1.9× faster (forward and backward) than the same contraction written as d2 broadcast
    products, which XLA fuses with the gather into slow scalar loops (measured on 14,336 edges, K = 32,
    l_sh = 2, l_in = 1; mace on 512-atom Si: 0.67× the time). The per-path weights come from one
    ``split``, whose gradient is one concatenate: slicing each path out of ``weights`` had XLA pad
    every path's gradient to the full [n_edges, P, K] and add them up (fwd+bwd of this function with
    the radial output layer, 64 C atoms, 5,696 edges: 40-42 ms against 30-32 ms in float64, 22 against
    15 ms in float32).

    Args:
      sh: [n_edges, (l_sh+1)²] spherical harmonics.
      h_j: [n_edges, (l_in+1)², K] features of each edge's neighbour.
      weights: [n_edges, n_paths, K] per-path radial weights (zero on padding edges).
      paths: ``tensor_product_paths(l_sh, l_in, l_out)`` (sorted by l3).
      receivers: [n_edges] node index i of each edge.
    Returns:
      [n_nodes, P, K], P = Σ_paths (2 l3 + 1), the paths of each l3 contiguous, in ``paths`` order.
      Cost O(n_edges · K · Σ_paths (2 l2 + 1)(2 l3 + 1)).
    """
    l_sh = int(round(np.sqrt(sh.shape[1]))) - 1
    c, offsets = _stacked_path_coefficients(tuple(paths), l_sh)
    t_all = sh @ jnp.asarray(c, sh.dtype)  # [e, Σ_p (2l2+1)(2l3+1)]
    w_paths = jnp.split(weights, len(paths), axis=1)  # one split: its gradient is one concatenate
    outs = []
    for p, ((l1, l2, l3), off) in enumerate(zip(paths, offsets)):
        d2, d3 = 2 * l2 + 1, 2 * l3 + 1
        t = t_all[:, off : off + d2 * d3].reshape(-1, d2, d3)
        h = h_j[:, l2 * l2 : (l2 + 1) ** 2] * w_paths[p]  # [e, 2l2+1, K]
        acc = jnp.einsum("ebm,ebk->emk", t, h)  # a batched [d3 × d2] @ [d2 × K] per edge
        outs.append(jax.ops.segment_sum(acc, receivers, num_segments=n_nodes))
    return jnp.concatenate(outs, axis=1)


def mix_paths(x: jnp.ndarray, w: list, counts: tuple[int, ...]) -> jnp.ndarray:
    """Linear map from per-path tensor-product outputs to K' channels per l3.

    Args: x [n, P, K] (as returned by ``edge_tensor_product``); w[l3] [n_paths(l3) · K, K'] (None where
    n_paths(l3) = 0: that block is zero). Returns [n, (l_out+1)², K'].
    """
    n, _, k = x.shape
    k_out = next(wl.shape[1] for wl in w if wl is not None)
    parts, col = [], 0
    for l3, n_p in enumerate(counts):
        d = 2 * l3 + 1
        if n_p == 0:
            parts.append(jnp.zeros((n, d, k_out), x.dtype))
            continue
        xb = x[:, col : col + n_p * d].reshape(n, n_p, d, k).transpose(0, 2, 1, 3).reshape(n, d, n_p * k)
        parts.append(xb @ w[l3] / math.sqrt(k * n_p))
        col += n_p * d
    return jnp.concatenate(parts, axis=1)


def normalized_silu(x: jnp.ndarray) -> jnp.ndarray:
    """silu scaled so that its second moment under a unit normal input is 1 (e3nn's normalize2mom)."""
    return jax.nn.silu(x) * 1.6790


def gate(x: jnp.ndarray, gates: jnp.ndarray) -> jnp.ndarray:
    """Gated nonlinearity: silu on the scalars, sigmoid(gate) times every L > 0 block (equivariant).

    Args: x [n, (L+1)², K]; gates [n, L, K] scalars, one per l ≥ 1 and channel. Returns x's shape.
    """
    parts = [normalized_silu(block(x, 0))]
    for l in range(1, l_max_of(x) + 1):
        parts.append(block(x, l) * jax.nn.sigmoid(gates[:, l - 1 : l, :]))
    return jnp.concatenate(parts, axis=1)


def l_of_lm_index(l_max: int) -> np.ndarray:
    """[(l_max+1)²] the l of every component slot (for gathering per-l radial functions)."""
    return np.concatenate([np.full(2 * l + 1, l) for l in range(l_max + 1)])
