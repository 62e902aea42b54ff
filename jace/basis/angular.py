"""Spherical harmonics of edge directions (e3nn-jax's real basis and 'component' normalisation).

Y_l^m for l = 0 … l_max are laid out as e3nn's irreps 0e + 1o + 2e + …: index l² + (m + l).
"""

from __future__ import annotations

import e3nn_jax as e3nn
import jax.numpy as jnp
import numpy as np


def safe_norm(vectors: jnp.ndarray) -> jnp.ndarray:
    """|v| with a finite (zero) gradient at v = 0. Args: [..., 3]. Returns [...]."""
    sq = jnp.sum(vectors * vectors, axis=-1)
    pos = sq > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


def unit_vectors(vectors: jnp.ndarray, lengths: jnp.ndarray) -> jnp.ndarray:
    """v / |v|, and 0 for v = 0 (no NaN in value or gradient). Args: [..., 3], [...]."""
    pos = lengths > 0
    return jnp.where(pos[..., None], vectors / jnp.where(pos, lengths, 1.0)[..., None], 0.0)


def sh_irreps(l_max: int) -> e3nn.Irreps:
    """Irreps of Y_0 … Y_{l_max}: 0e + 1o + 2e + …"""
    return e3nn.Irreps.spherical_harmonics(l_max)


def spherical_harmonics(unit: jnp.ndarray, l_max: int) -> jnp.ndarray:
    """Real spherical harmonics of unit vectors. Args: [..., 3]. Returns [..., (l_max + 1)²] (dimensionless)."""
    return e3nn.spherical_harmonics(sh_irreps(l_max), unit, normalize=False, normalization="component").array


def l_of_lm(l_max: int) -> np.ndarray:
    """[(l_max + 1)²] the l of every (l, m) slot."""
    return np.concatenate([np.full(2 * l + 1, l) for l in range(l_max + 1)])
