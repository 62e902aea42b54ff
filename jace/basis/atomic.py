"""The atomic basis (density projection) A_{i, k n l m} = Σ_j R_{n l}(r_ij) Y_l^m(r̂_ij) φ_k(j).

φ_k(j) is a feature of neighbour j: a one-hot element (linear ACE; ``atomic_basis_one_hot``, whose cost
does not depend on the number of elements) or any learnable per-node feature vector
(``atomic_basis_features``, for message-passing layers). Cost O(n_edges · n_rad · (l_max+1)²).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jace.basis.angular import l_of_lm


def _edge_products(radial: jnp.ndarray, sh: jnp.ndarray, l_max: int) -> jnp.ndarray:
    """[n_edges, n_rad, (l_max+1)²]: R_{n l}(r_e) Y_lm(r̂_e). radial is [n_edges, n_rad] or [n_edges, l_max+1, n_rad]."""
    if radial.ndim == 2:
        return radial[:, :, None] * sh[:, None, :]
    r_lm = radial[:, l_of_lm(l_max), :]  # [n_edges, lm, n_rad]
    return jnp.swapaxes(r_lm, 1, 2) * sh[:, None, :]


def atomic_basis_one_hot(
    radial: jnp.ndarray,
    sh: jnp.ndarray,
    species_j: jnp.ndarray,
    receivers: jnp.ndarray,
    edge_mask: jnp.ndarray,
    n_nodes: int,
    n_species: int,
    l_max: int,
) -> jnp.ndarray:
    """A with φ = one-hot element of the neighbour.

    Args:
      radial: [n_edges, n_rad] or [n_edges, l_max+1, n_rad], radial functions (zero beyond the cutoff).
      sh: [n_edges, (l_max+1)²] spherical harmonics of r̂_ij.
      species_j: [n_edges] neighbour species index; receivers: [n_edges] centre index i.
      edge_mask: [n_edges] bool, False for padding edges (they contribute nothing).
    Returns:
      [n_nodes, n_species, n_rad, (l_max+1)²].
    """
    phi = _edge_products(radial, sh, l_max)
    phi = jnp.where(edge_mask[:, None, None], phi, 0.0)
    seg = receivers * n_species + species_j
    a = jax.ops.segment_sum(phi, seg, num_segments=n_nodes * n_species)
    return a.reshape(n_nodes, n_species, *phi.shape[1:])


def atomic_basis_features(
    radial: jnp.ndarray,
    sh: jnp.ndarray,
    features_j: jnp.ndarray,
    receivers: jnp.ndarray,
    edge_mask: jnp.ndarray,
    n_nodes: int,
    l_max: int,
) -> jnp.ndarray:
    """A with φ = a scalar feature vector of the neighbour.

    Args:
      features_j: [n_edges, n_channels] features of neighbour j (e.g. a learnable element embedding).
    Returns:
      [n_nodes, n_channels, n_rad, (l_max+1)²].
    """
    phi = _edge_products(radial, sh, l_max)
    phi = jnp.where(edge_mask[:, None, None], phi, 0.0)
    phi = features_j[:, :, None, None] * phi[:, None]
    return jax.ops.segment_sum(phi, receivers, num_segments=n_nodes)
