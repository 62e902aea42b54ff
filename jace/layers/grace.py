"""Graph ACE (GRACE) layers: the tensor-decomposed graph basis as an iteration over layers.

Graph ACE expands the site energy of atom i in basis functions on trees rooted at i: every edge of a
tree carries R(r) Y(r̂) of its own vector, every node couples its child edges with Clebsch–Gordan
coefficients. With the expansion coefficients written as products of per-node factors with channel
indices (a tensor decomposition), the sum over all trees of depth ≤ T is computed from the leaves to the
root as T layers on the neighbour graph; each layer sums over edges once, so the cost is linear in the
number of neighbours and in the number of layers. Layer t (shapes: n nodes, e edges, K = channels[t],
L = l_max[t], E = embedding size, features channels-last [n, (L+1)², K] as in ``jace.layers.equivariant``):

  one-particle / atomic basis
      h_j = W I_j^{(t-1)} + [U_t e(z_j) in the L = 0 block]        (t = 0: only U_0 e(z_j), star graphs)
      A_{i,k,l3 m3} = (1/⟨N⟩) Σ_j Σ_{p=(l1,l2,l3)} R^{(t)}_{k p}(r_ij) Σ C Y_{l1 m1}(r̂_ij) h_{j,k,l2 m2},
      mixed linearly over (path, channel) per l3. For t = 0 the paths are (l, 0, l):
      A_{i,k,lm} = Σ_j R_{k l}(r_ij) Y_lm(r̂_ij) (U e(z_j))_k, GRACE's chemistry-embedded atomic basis.
  product basis (recursive pairwise coupling with channel mixing, channel-wise)
      X_1 = A;   P_ν = X_{ν-1} ⊗ (W_ν A)  (every natural-parity CG path, channel by channel);
      X_ν = mix of P_ν's paths per L (L ≤ L for inner orders, L ≤ l_msg for the last);
      the invariants of order ν are A_{L=0} (ν = 1) and every L = 0 path of P_ν, per channel.
  message (indicator) to the next layer, L ≤ message_l_max, message_channels channels
      I_i = (V [X_1, …, X_ν]_{L ≤ l_msg}) ⊙ (S e(z_i))          (the centre's element as a channel weight)

Chemistry enters only through the embedding e(z) (``ElementEmbedding``) and the element-dependent
density weights of the readout, both gathered per atom, so no operation's cost grows with the number of
elements a model knows. The readout (``GraceReadout``) reduces all invariants of all layers to densities
ρ_{i,d} = Σ_v c_{z_i, d, v} B_{i,v} / sqrt(n_v) and applies a linear, Finnis–Sinclair and/or MLP
embedding (``readout`` in :class:`jace.models.grace.GraceSpec`).
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Optional

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jace.layers import equivariant as eq
from jace.layers.multi_ace import EquivariantLinear, RadialMLP

if TYPE_CHECKING:  # pragma: no cover
    from jace.models.grace import GraceSpec

_normal = nn.initializers.normal(stddev=1.0)

__all__ = [
    "channelwise_tensor_product",
    "product_paths",
    "finnis_sinclair",
    "ElementEmbedding",
    "GraceLayer",
    "GraceReadout",
]


# ----------------------------------------------------------------------------------------------
# Pure functions
# ----------------------------------------------------------------------------------------------


def product_paths(l1_max: int, l2_max: int, l_out: int) -> tuple[tuple[int, int, int], ...]:
    """Natural-parity CG paths (l1 ≤ l1_max, l2 ≤ l2_max, L ≤ l_out, l1 + l2 + L even), sorted by L."""
    return eq.tensor_product_paths(l1_max, l2_max, l_out)


@functools.lru_cache(maxsize=None)
def _pair_coefficients(l1: int, l2: int, l3s: tuple[int, ...]) -> np.ndarray:
    """[(2l1+1)(2l2+1), Σ (2l3+1)]: the scaled CG tensors of (l1, l2) → every l3 in ``l3s``, side by side."""
    d12 = (2 * l1 + 1) * (2 * l2 + 1)
    return np.concatenate([eq._path_coefficients(l1, l2, l3).reshape(d12, 2 * l3 + 1) for l3 in l3s], axis=1)


def channelwise_tensor_product(x: jnp.ndarray, y: jnp.ndarray, paths) -> jnp.ndarray:
    """Channel-wise Clebsch–Gordan coupling of two equivariant feature arrays:

    out[n, (p, M), k] = Σ_{m1, m2} C_p[m1, m2, M] x[n, l1 m1, k] y[n, l2 m2, k],   p = (l1, l2, L),

    with C_p the real CG coefficients scaled by sqrt(2L + 1) (component normalisation). Natural parity in,
    natural parity out (l1 + l2 + L even). Cost O(n K Σ_{(l1,l2)} (2l1+1)(2l2+1) Σ_L (2L+1)), one small
    matmul per (l1, l2) pair, whatever the number of neighbours.

    Args:
      x: [n, (L1+1)², K]; y: [n, (L2+1)², K] (same K).
      paths: as returned by ``product_paths(L1, L2, L_out)`` (sorted by L).
    Returns:
      [n, P, K], P = Σ_p (2L + 1), the paths of each L contiguous, in ``paths`` order (the layout of
      ``jace.layers.equivariant.edge_tensor_product``, so ``eq.mix_paths`` applies).
    """
    n, _, k = x.shape
    pieces: dict = {}
    pairs = list(dict.fromkeys((l1, l2) for l1, l2, _ in paths))
    for l1, l2 in pairs:
        l3s = tuple(l3 for a, b, l3 in paths if (a, b) == (l1, l2))
        d1, d2 = 2 * l1 + 1, 2 * l2 + 1
        outer = (eq.block(x, l1)[:, :, None, :] * eq.block(y, l2)[:, None, :, :]).reshape(n, d1 * d2, k)
        c = jnp.asarray(_pair_coefficients(l1, l2, l3s), x.dtype)
        out = jnp.einsum("nqk,qp->npk", outer, c)
        col = 0
        for l3 in l3s:
            pieces[(l1, l2, l3)] = out[:, col : col + 2 * l3 + 1]
            col += 2 * l3 + 1
    return jnp.concatenate([pieces[p] for p in paths], axis=1)


def finnis_sinclair(rho: jnp.ndarray, m: float) -> jnp.ndarray:
    """The Finnis–Sinclair-type embedding of pacemaker, F(ρ; m), elementwise (dimensionless → same units).

    m = 1: F(ρ) = ρ. Otherwise, with a = |ρ|, ν = 1/m, x₀ = ν^(ν/(1−ν)) e^(−a) and
    y₀ = ν^(1/(1−ν)) e^(−a): F(ρ) = sign(ρ) ((x₀ + a)^m − y₀). F(0) = 0, F is odd, C¹ at ρ = 0 and ~ sign(ρ)|ρ|^m for large |ρ|
    (m = 1/2: a smoothed signed square root). Finite value and gradient everywhere (x₀ + a > 0).
    """
    m = float(m)
    if m == 1.0:
        return rho
    if not m > 0:
        raise ValueError(f"Finnis–Sinclair exponents must be positive, got {m!r}")
    nu = 1.0 / m
    a = jnp.abs(rho)
    decay = jnp.exp(-a)
    x0 = nu ** (nu / (1.0 - nu)) * decay
    y0 = nu ** (1.0 / (1.0 - nu)) * decay
    return jnp.sign(rho) * ((x0 + a) ** m - y0)


# ----------------------------------------------------------------------------------------------
# Modules
# ----------------------------------------------------------------------------------------------


class ElementEmbedding(nn.Module):
    """A learnable vector e(z) of ``size`` numbers per element: species [n] int → [n, size].

    A gather from an [n_species, size] table: its cost does not depend on the number of elements.
    """

    n_species: int
    size: int

    @nn.compact
    def __call__(self, species: jnp.ndarray, dtype) -> jnp.ndarray:
        table = self.param("table", _normal, (self.n_species, self.size), dtype)
        return table[species]


class ScalarLinear(nn.Module):
    """x [n, F] → x W / sqrt(F), [n, out] (no bias)."""

    out: int

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        w = self.param("w", _normal, (x.shape[-1], self.out), x.dtype)
        return x @ w / math.sqrt(x.shape[-1])


class GraceLayer(nn.Module):
    """Layer t of a GRACE model (see the module docstring).

    Call args:
      emb: [n, E] element embeddings e(z) of every node.
      sh: [e, (l_max_all+1)²] spherical harmonics of the edges (sliced to this layer's l_max).
      g: [e, n_basis] radial basis with envelope, zero on padding edges.
      senders (j), receivers (i): [e] int.
      message: [n, (l_msg+1)², C] indicators of the previous layer (None for t = 0).
      inv_avg_neighbors: 1/⟨N⟩ (or 1).
    Returns:
      (invariants [n, n_inv_t], message [n, (message_l_max+1)², message_channels] or None for the last layer).
    Sown (collection "intermediates"): "A" (atomic basis), "message".
    """

    spec: "GraceSpec"
    t: int

    @nn.compact
    def __call__(self, emb, sh, g, senders, receivers, message: Optional[jnp.ndarray], inv_avg_neighbors):
        s, t = self.spec, self.t
        n = emb.shape[0]
        k = int(s.channels[t])
        l_max = int(s.l_max[t])
        nu_max = int(s.correlation[t])
        last = t == s.num_layers - 1
        l_msg = 0 if last else int(s.message_l_max)

        # ---- one-particle and atomic basis ---------------------------------------------------------
        chem = ScalarLinear(k, name="embedding_mix")(emb)  # [n, K]: U_t e(z)
        if message is None:
            h = chem[:, None, :]  # [n, 1, K]: scalars only, star graphs
        else:
            h = EquivariantLinear(k, name="linear_up")(message)  # [n, (l_in+1)², K]
            h = h.at[:, 0, :].add(chem)  # the neighbour's own element keeps the star graphs
        l_in = eq.l_max_of(h)
        paths = eq.tensor_product_paths(l_max, l_in, l_max)
        counts = eq.paths_per_l3(paths, l_max)
        w_r = RadialMLP(tuple(s.radial_mlp), len(paths) * k, name="radial")(g).reshape(-1, len(paths), k)
        sh_t = sh[:, : eq.n_lm(l_max)]
        edge_sum = eq.edge_tensor_product(sh_t, h[senders], w_r, paths, receivers, n) * inv_avg_neighbors
        w_a = [
            self.param(f"linear_A_L{l3}", _normal, (c * k, k), emb.dtype) if c else None for l3, c in enumerate(counts)
        ]
        a = eq.mix_paths(edge_sum, w_a, counts)  # [n, (l_max+1)², K]
        self.sow("intermediates", "A", a)

        # ---- product basis: X_ν = mix(X_{ν-1} ⊗ W_ν A), invariants of every order ------------------
        invariants = [a[:, 0, :]]  # [n, K]
        x = a
        for_message = [eq.truncate_or_pad(a, l_msg)]
        for nu in range(2, nu_max + 1):
            l_keep = l_max if nu < nu_max else l_msg
            wa = EquivariantLinear(k, name=f"product_mix_{nu}")(a)
            p_paths = product_paths(eq.l_max_of(x), l_max, l_keep)
            p = channelwise_tensor_product(x, wa, p_paths)  # [n, P, K]
            p_counts = eq.paths_per_l3(p_paths, l_keep)
            invariants.append(p[:, : p_counts[0], :].reshape(n, -1))  # the L = 0 paths come first
            if nu < nu_max or not last:
                w_p = [
                    self.param(f"product_{nu}_L{l3}", _normal, (c * k, k), emb.dtype) if c else None
                    for l3, c in enumerate(p_counts)
                ]
                x = eq.mix_paths(p, w_p, p_counts)  # [n, (l_keep+1)², K]
                for_message.append(eq.truncate_or_pad(x, l_msg))
        inv = jnp.concatenate(invariants, axis=1)

        # ---- message (indicator) to the next layer ---------------------------------------------------
        if last:
            return inv, None
        feats = jnp.concatenate(for_message, axis=2)  # [n, (l_msg+1)², ν K]
        out = EquivariantLinear(int(s.message_channels), name="message_mix")(feats)
        weight = ScalarLinear(int(s.message_channels), name="message_element")(emb)  # [n, C]
        out = out * weight[:, None, :]
        self.sow("intermediates", "message", out)
        return inv, out


class MLP(nn.Module):
    """x [n, F] → [n]: dense layers without biases and normalised silu, then a linear output.

    Without biases MLP(0) = 0: an atom without neighbours (all densities 0) gets no learned energy.
    """

    hidden: tuple[int, ...]

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        for i, width in enumerate(self.hidden):
            w = self.param(f"w{i}", _normal, (x.shape[-1], width), x.dtype)
            x = eq.normalized_silu(x @ w / math.sqrt(x.shape[-1]))
        w = self.param("w_out", _normal, (x.shape[-1],), x.dtype)
        return x @ w / math.sqrt(x.shape[-1])


class GraceReadout(nn.Module):
    """Invariants of every layer → densities → learned site energy [n] (before E0, scale, shift).

    ρ_{i,d} = Σ_v c_{z_i, d, v} B_{i,v} / sqrt(n_v)    (element-dependent weights, gathered per atom);
    readout "linear": ε_i = ρ_0;   "fs": ε_i = Σ_d F(ρ_d; m_d) (pacemaker's FS-ACE);
    "mlp": ε_i = ρ_0 + MLP(ρ_1 … ρ_D) (GRACE);   "fs_mlp": Σ_d F(ρ_d; m_d) + MLP(ρ_{n_fs} …).
    """

    spec: "GraceSpec"

    @nn.compact
    def __call__(self, inv: jnp.ndarray, species: jnp.ndarray) -> jnp.ndarray:
        s = self.spec
        n_head = len(s.fs_exponents) if s.readout in ("fs", "fs_mlp") else 1
        n_mlp = int(s.mlp_densities) if s.readout in ("mlp", "fs_mlp") else 0
        n_dens = n_head + n_mlp
        n_inv = inv.shape[1]
        w = self.param("densities", _normal, (len(s.elements), n_inv, n_dens), inv.dtype)
        rho = jnp.einsum("nv,nvd->nd", inv, w[species]) / math.sqrt(n_inv)  # [n, D]
        if s.readout in ("fs", "fs_mlp"):
            energy = sum(finnis_sinclair(rho[:, d], m) for d, m in enumerate(s.fs_exponents))
        else:
            energy = rho[:, 0]
        if n_mlp:
            energy = energy + MLP(tuple(s.readout_hidden), name="mlp")(rho[:, n_head:])
        return energy
