"""A tiny trainable pair potential that satisfies the trainer's model contract, for fast tests.

E_i = E0(z_i) + shift + scale · (b(z_i) + ½ Σ_j MLP([g(r_ij), onehot(z_i), onehot(z_j)]) · f_c(r_ij))

with Gaussian radial features g (n_rbf of them) and the cosine cutoff f_c(r) = ((1 + cos πr/r_c)/2)²
for r < r_c (0 beyond and on zero-length padding edges).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jace.data.graph import SpeciesMap, edge_vectors


class _PairNet(nn.Module):
    n_species: int
    n_rbf: int
    hidden: int
    cutoff: float

    @nn.compact
    def __call__(self, positions, cell, graph):
        dtype = positions.dtype
        vec = edge_vectors(positions, cell, graph)  # [n_edges, 3] Å
        r2 = jnp.sum(vec * vec, axis=-1)
        real = graph.edges["mask"] & (r2 > 0)
        r = jnp.where(real, jnp.sqrt(jnp.where(real, r2, 1.0)), 0.0)  # double-where norm
        centres = jnp.linspace(0.5, self.cutoff, self.n_rbf, dtype=dtype)
        width = self.cutoff / self.n_rbf
        rbf = jnp.exp(-(((r[:, None] - centres) / width) ** 2))  # [n_edges, n_rbf]
        fc = jnp.where(real & (r < self.cutoff), (0.5 * (jnp.cos(jnp.pi * r / self.cutoff) + 1.0)) ** 2, 0.0)
        species = graph.nodes["species"]
        oh = jax.nn.one_hot(species, self.n_species, dtype=dtype)
        x = jnp.concatenate([rbf, oh[graph.receivers], oh[graph.senders]], axis=-1)
        h = jnp.tanh(nn.Dense(self.hidden, name="hidden")(x))
        pair = nn.Dense(1, name="out")(h)[:, 0] * fc  # [n_edges]
        n_nodes = positions.shape[0]
        bias = self.param("species_bias", nn.initializers.zeros, (self.n_species,), dtype)
        return bias[species] + 0.5 * jax.ops.segment_sum(pair, graph.receivers, num_segments=n_nodes)


class ToyPairModel:
    """model.init(rng, graph) -> params; model.site_energies(params, graph) -> [n_nodes] eV."""

    def __init__(self, species: SpeciesMap, cutoff: float = 3.2, e0=None, shift: float = 0.0, scale: float = 1.0,
                 n_rbf: int = 4, hidden: int = 8):
        self.species = species
        self.cutoff = float(cutoff)
        self.e0 = np.zeros(len(species)) if e0 is None else np.asarray(e0, dtype=np.float64)
        self.shift = float(shift)
        self.scale = float(scale)
        self.net = _PairNet(len(species), n_rbf, hidden, self.cutoff)

    def init(self, rng, graph):
        return self.net.init(rng, graph.nodes["positions"], graph.globals["cell"], graph)

    def site_energies(self, params, graph):
        pos = graph.nodes["positions"]
        out = self.net.apply(params, pos, graph.globals["cell"], graph)
        e0 = jnp.asarray(self.e0, dtype=pos.dtype)[graph.nodes["species"]]
        return e0 + self.shift + self.scale * out


class NaNModel(ToyPairModel):
    """The same parameters as ToyPairModel, but every site energy is NaN (to test divergence handling)."""

    def site_energies(self, params, graph):
        return super().site_energies(params, graph) * jnp.nan
