"""The one multi-ACE layer (Flax linen), and the small learnable pieces it is made of.

Every ablation of the Design Space paper is a field of :class:`jace.models.design.MultiACESpec`; this
module has one code path per *operation*, never one per named model. The heavy lifting is in pure
functions: ``jace.layers.equivariant`` (linear maps, tensor products, gate) and ``jace.basis.product``
(the symmetrised product basis, shared with linear ACE).

Shapes: n nodes, e edges, K channels, Z elements, features [n, (L+1)², K] (see ``equivariant``).
"""

from __future__ import annotations

import math

import functools
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jace.basis.product import (
    OneParticle,
    ProductBasis,
    build_product_basis,
    couple,
    coupling_blocks,
    monomials,
    parity_ordered,
)
from jace.basis.radial import radial_functions
from jace.layers import equivariant as eq
from jace.models.design import MultiACESpec

_normal = nn.initializers.normal(stddev=1.0)


class EquivariantLinear(nn.Module):
    """h → W h per l (W_{z_i} h when ``n_species`` > 0). Input [n, (L+1)², K] → [n, (L+1)², channels]."""

    channels: int
    n_species: int = 0

    @nn.compact
    def __call__(self, x: jnp.ndarray, one_hot: Optional[jnp.ndarray] = None) -> jnp.ndarray:
        l1 = eq.l_max_of(x) + 1
        if self.n_species:
            w = self.param("w", _normal, (self.n_species, l1, x.shape[2], self.channels), x.dtype)
            return eq.linear_element(x, w, one_hot)
        w = self.param("w", _normal, (l1, x.shape[2], self.channels), x.dtype)
        return eq.linear(x, w)


class RadialMLP(nn.Module):
    """g(r) [e, n_rad] → [e, n_out]: dense layers without biases and normalised silu.

    Without biases and with silu(0) = 0 the output vanishes with its first two derivatives wherever the
    basis does (at the cutoff), so the envelope's smoothness is kept.
    """

    hidden: tuple[int, ...]
    n_out: int

    @nn.compact
    def __call__(self, g: jnp.ndarray) -> jnp.ndarray:
        x = g
        for i, width in enumerate(self.hidden):
            w = self.param(f"w{i}", _normal, (x.shape[-1], width), g.dtype)
            x = eq.normalized_silu(x @ w / math.sqrt(x.shape[-1]))
        w = self.param("w_out", _normal, (x.shape[-1], self.n_out), g.dtype)
        return x @ w / math.sqrt(x.shape[-1])


def radial_per_edge(mlp: nn.Module, g: jnp.ndarray, paired: bool) -> jnp.ndarray:
    """mlp(g) [e, n_out] for g [e, n_rad]; when ``paired`` (rows k and k + e/2 of g belong to an edge
    and its reverse, so they are equal) the MLP runs on the first half and its output is repeated:
    half the MLP's work, forward and backward."""
    if not paired:
        return mlp(g)
    half = mlp(g[: g.shape[0] // 2])
    return jnp.concatenate([half, half], axis=0)


class PairMixing(nn.Module):
    """Element-dependent radial basis: g'_{n}(r; z_i, z_j) = Σ_k W[z_i, z_j, l, n, k] g_k(r), W initialised to identity."""

    n_species: int
    n_l: int = 1

    @nn.compact
    def __call__(self, g, species_i, species_j):
        n = g.shape[-1]
        init = lambda key, shape, dtype: jnp.broadcast_to(jnp.eye(n, dtype=dtype), shape)  # noqa: E731
        w = self.param("w", init, (self.n_species, self.n_species, self.n_l, n, n), g.dtype)
        return radial_functions(g, w, species_i, species_j)  # [e, n_l, n]


class Readout(nn.Module):
    """Invariant channels [n, K] → site energy [n]: linear, or Linear → hidden → silu → Linear."""

    kind: str = "linear"
    hidden: int = 16

    @nn.compact
    def __call__(self, s: jnp.ndarray) -> jnp.ndarray:
        if self.kind == "mlp":
            w1 = self.param("w1", _normal, (s.shape[-1], self.hidden), s.dtype)
            s = eq.normalized_silu(s @ w1 / math.sqrt(s.shape[-1]))
        w = self.param("w", _normal, (s.shape[-1],), s.dtype)
        return s @ w / math.sqrt(s.shape[-1])


@functools.lru_cache(maxsize=64)
def channelwise_product_basis(l_max: int, correlation: int, l_out: int, by_parity: bool = True) -> ProductBasis:
    """All symmetrised products of one channel's A (l = 0 … l_max) up to order ν, coupled to L ≤ l_out;
    monomials ``parity_ordered`` (each L's a slice of every level) unless ``by_parity`` is False."""
    max_deg = [nu * (1.0 + l_max) + 1.0 for nu in range(1, correlation + 1)]
    irreps = tuple((L, (-1) ** L) for L in range(l_out + 1))
    basis = build_product_basis(OneParticle(1, 1, l_max), correlation, max_deg, 1.0, irreps)
    return parity_ordered(basis) if by_parity else basis


@functools.lru_cache(maxsize=64)
def full_product_basis(
    n_channels: int, n_rad: int, l_max: int, correlation: int, max_degree: tuple, w_l: float, l_out: int
) -> ProductBasis:
    """The linear-ACE product basis over A[k, n, lm] (all channels mixed), degree-truncated."""
    irreps = tuple((L, (-1) ** L) for L in range(l_out + 1))
    return build_product_basis(OneParticle(n_channels, n_rad, l_max), correlation, max_degree, w_l, irreps)


class ProductMessage(nn.Module):
    """A → B (symmetric products, orders 1 … ν) → message m_{i,LM,k} = Σ_η W_{(z_i) η k} B_{i,η,LM,k}.

    ``product="channelwise"``: A [n, (l_max+1)², K], products within each channel (MACE).
    ``product="full"``: A [n, size] flattened over (channel, n, lm), all products (linear ACE); output
    channels ``channels``. Returns m [n, (l_out+1)², channels] and, for analysis, the B features per L
    ([n, η, 2L+1, K] channel-wise, [n, η, 2L+1] full).
    """

    kind: str
    basis: ProductBasis
    l_out: int
    channels: int
    n_species: int
    element_dependent: bool

    @nn.compact
    def __call__(self, a: jnp.ndarray, species: jnp.ndarray):
        if self.kind == "channelwise":
            return self._channelwise(a, species)
        n = a.shape[0]
        aa = monomials(self.basis, a)
        parts, feats = [], []
        for L in range(self.l_out + 1):
            irrep = (L, (-1) ** L)
            b = couple(self.basis, aa, irrep)  # [n, η, 2L+1]
            k = self.channels
            n_eta = b.shape[1]
            shape = (self.n_species, n_eta, k) if self.element_dependent else (n_eta, k)
            w = self.param(f"w_L{L}", _normal, shape, a.dtype)
            wn = w[species] if self.element_dependent else jnp.broadcast_to(w, (n,) + w.shape)
            m = jnp.einsum("neM,nek->nMk", b, wn)
            feats.append(b)
            parts.append(m / math.sqrt(max(n_eta, 1)))
        return jnp.concatenate(parts, axis=1), feats

    def _channelwise(self, a: jnp.ndarray, species: jnp.ndarray):
        """m_{n,LM,k} = Σ_η W_{z_n η k} B_{η,M,n,k} / √n_η with B = D · AA per channel.

        The monomials are kept with their own axis first, AA_ν [n_AA_ν, n, K] (``monomials(axis=0)``),
        so B of every (η, M) is one plain matmul D_ν [η (2L+1), q] @ AA_ν [q, n K] over the range of
        monomials q that L uses (``coupling_blocks``; the basis is ``parity_ordered``, so that range
        is a slice), and the recursion's gathers and their gradients move whole rows. The channel is a
        column of that matmul, not a batch dimension, so XLA inserts no transposes. Measured on the
        ν = 3, l_max 2, L ≤ 1, 3-element, 32-channel product of 512 nodes (forward and backward,
        float64): 32 ms, against 50 ms for the earlier form with [n, q, K] monomials and the weights
        folded into the coupling (``folded_coupling``), whose per-channel contraction made XLA
        transpose every monomial array; float32 16 against 26 ms; L = 0 only: 9 against 12 ms.
        Returns m [n, (l_out+1)², K] and B per L as [n, η, 2L+1, K] (unused under jit, so dropped).
        """
        n, k, n_z, dtype = a.shape[0], a.shape[-1], self.n_species, a.dtype
        aa = monomials(self.basis, a.transpose(1, 0, 2), axis=0)  # per ν: [n_AA_ν, n, K]
        one_hot = jax.nn.one_hot(species, n_z, dtype=dtype) if self.element_dependent and n_z <= 8 else None
        parts, feats = [], []
        for L in range(self.l_out + 1):
            blocks = coupling_blocks(self.basis, (L, (-1) ** L))
            n_eta = blocks[0][3].shape[0] if blocks else 0
            shape = (n_z, n_eta, k) if self.element_dependent else (n_eta, k)
            w = self.param(f"w_L{L}", _normal, shape, dtype)
            if n_eta == 0:
                parts.append(jnp.zeros((n, 2 * L + 1, k), dtype))
                feats.append(jnp.zeros((n, 0, 2 * L + 1, k), dtype))
                continue
            b = 0.0
            for nu, lo, hi, d in blocks:
                d2 = jnp.asarray(d.reshape(-1, hi - lo), dtype)  # [η (2L+1), q]
                b = b + (d2 @ aa[nu][lo:hi].reshape(hi - lo, -1)).reshape(n_eta, 2 * L + 1, n, k)
            w = w / math.sqrt(n_eta)
            if not self.element_dependent:
                m = jnp.einsum("ek,eMnk->nMk", w, b)
            else:
                wn = jnp.einsum("nz,zek->nek", one_hot, w) if one_hot is not None else w[species]
                m = jnp.einsum("nek,eMnk->nMk", wn, b)
            parts.append(m)
            feats.append(b.transpose(2, 0, 1, 3))  # [n, η, 2L+1, K]
        return jnp.concatenate(parts, axis=1), feats


class MultiACELayer(nn.Module):
    """Layer t of a multi-ACE stack: features in, (features out, per-node readout energy) out.

    Call args:
      h: [n, K_in, (L_in+1)²] node features; one_hot: [n, Z]; species: [n] int.
      sh: [e, (l_max+1)²] edge harmonics; g: [e, n_rad] radial basis (with envelope; zero on padding edges).
      senders (j), receivers (i): [e] int; inv_avg_neighbors: scalar 1/⟨neighbours⟩ (or 1).
      paired (static): edge k + e/2 is the reverse of edge k, so g is too and the radial MLP runs on
        the first half only (``radial_per_edge``).
    """

    spec: MultiACESpec
    t: int

    @nn.compact
    def __call__(self, h, one_hot, species, sh, g, senders, receivers, inv_avg_neighbors, paired: bool = False):
        s, t = self.spec, self.t
        n, n_species = h.shape[0], one_hot.shape[1]
        l_in = eq.l_max_of(h)
        l_out = s.layer_l_out(t)
        nu = int(s.correlation[t])
        last = t == s.num_layers - 1

        # ---- one-particle basis and atomic basis A -------------------------------------------------
        if s.one_particle == "outer":  # linear-ACE A[k, n, lm] of scalar neighbour features
            if l_in != 0:
                raise ValueError("one_particle 'outer' needs scalar input features")
            n_rad = s.radial.n_max
            if s.radial_mlp:
                r = radial_per_edge(RadialMLP(tuple(s.radial_mlp), n_rad * (s.l_max + 1), name="radial"), g, paired)
                r = r.reshape(-1, s.l_max + 1, n_rad)
            elif s.radial_element_dependent:
                r = PairMixing(n_species, s.l_max + 1, name="radial_pairs")(g, species[receivers], species[senders])
            else:
                r = g
            r_lm = r[:, eq.l_of_lm_index(s.l_max), :] if r.ndim == 3 else r[:, None, :]  # [e, lm | 1, n_rad]
            h_j = h[senders][:, 0, :]  # [e, K] scalar features
            phi = h_j[:, :, None, None] * jnp.swapaxes(r_lm, 1, 2)[:, None] * sh[:, None, None, :]
            a = jax.ops.segment_sum(phi, receivers, num_segments=n) * inv_avg_neighbors  # [n, K, n_rad, lm]
            a = a.reshape(n, -1)
            if s.product == "channelwise":
                a = a.reshape(n, -1, eq.n_lm(s.l_max)).transpose(0, 2, 1)  # channels (k, n_rad)
        else:
            paths = eq.tensor_product_paths(s.l_max, l_in, s.l_max)
            counts = eq.paths_per_l3(paths, s.l_max)
            h_up = EquivariantLinear(s.channels, name="linear_up")(h)
            if s.radial_element_dependent:
                g = PairMixing(n_species, 1, name="radial_pairs")(g, species[receivers], species[senders])[:, 0]
            w_r = radial_per_edge(RadialMLP(tuple(s.radial_mlp), len(paths) * s.channels, name="radial"), g, paired)
            w_r = w_r.reshape(-1, len(paths), s.channels)
            msg = eq.edge_tensor_product(sh, h_up[senders], w_r, paths, receivers, n) * inv_avg_neighbors  # [n, P, K]
            w_a = [
                self.param(f"linear_A_L{l3}", _normal, (c * s.channels, s.channels), h.dtype) if c else None
                for l3, c in enumerate(counts)
            ]
            a = eq.mix_paths(msg, w_a, counts)  # [n, (l_max+1)², K]

        use_residual = s.residual != "none" and (t > 0 or s.first_layer_residual)
        if s.atomic_basis_element_dependent and not use_residual:  # MACE's first block: A ← W_{z_i} A
            a = EquivariantLinear(a.shape[-1], n_species, name="linear_A_element")(a, one_hot)

        # ---- product basis and message ----------------------------------------------------------
        if s.product == "channelwise":
            basis = channelwise_product_basis(s.l_max, nu, l_out)
        else:
            n_rad = s.radial.n_max if s.one_particle == "outer" else 1
            k_a = a.shape[1] // (n_rad * eq.n_lm(s.l_max)) if s.one_particle == "outer" else a.shape[-1]
            if s.one_particle != "outer":  # flatten channel-last A to the (k, n, lm) layout
                a = a.transpose(0, 2, 1).reshape(n, -1)
            basis = full_product_basis(k_a, n_rad, s.l_max, nu, tuple(s.max_degree[:nu]), float(s.w_l), l_out)
        m, _ = ProductMessage(
            s.product, basis, l_out, s.channels, n_species, s.product_element_dependent, name="product"
        )(a, species)

        # ---- update: linear (+ self-connection), gate ---------------------------------------------
        upd_elem = s.update_element_dependent and not use_residual
        h_new = EquivariantLinear(s.channels, n_species if upd_elem else 0, name="linear_update")(m, one_hot)
        if use_residual:
            sc_in = eq.truncate_or_pad(h, l_out)
            sc = EquivariantLinear(s.channels, n_species if s.residual == "element" else 0, name="self_connection")
            h_new = h_new + sc(sc_in, one_hot)
        if s.nonlinearity == "gate":
            if l_out > 0:
                w_g = self.param("w_gates", _normal, (m.shape[2], l_out * s.channels), h.dtype)
                gates = (m[:, 0, :] @ w_g / math.sqrt(m.shape[2])).reshape(n, l_out, s.channels)
            else:
                gates = jnp.zeros((n, 0, s.channels), h.dtype)
            h_new = eq.gate(h_new, gates)

        # ---- readout ----------------------------------------------------------------------------------
        if last:
            energy = Readout(s.last_readout, s.readout_hidden, name="readout")(h_new[:, 0, :])
        elif s.readout_all_layers:
            energy = Readout(s.readout, s.readout_hidden, name="readout")(h_new[:, 0, :])
        else:
            energy = jnp.zeros((n,), h.dtype)
        return h_new, energy
