"""Short-range core repulsion: the Ziegler–Biersack–Littmark (ZBL) universal screened Coulomb potential.

For a pair of atoms with atomic numbers Z_i, Z_j at distance r (Å):

    V(r) = k_e Z_i Z_j / r · φ(r / a) · f(r / r_zbl),        k_e = e² / (4π ε0) = 14.3996 eV Å,
    a    = 0.8854 a_0 / (Z_i^0.23 + Z_j^0.23),                 a_0 = 0.529177 Å (Bohr radius),
    φ(x) = 0.18175 e^{-3.19980 x} + 0.50986 e^{-0.94229 x} + 0.28022 e^{-0.40290 x} + 0.02817 e^{-0.20162 x},

and f the polynomial envelope of order p = 6 (``jace.basis.radial.polynomial_envelope``): f(0) = 1,
f decreasing, and f, f', f'' all vanish at u = r / r_zbl = 1, so V is exactly zero with its first and
second derivatives at and beyond the inner cutoff r_zbl (C² there). Since V_ZBL > 0 and decreasing and
f ≥ 0 and decreasing, V is positive and monotonically repulsive (dV/dr < 0) for r < r_zbl.

The inner cutoff of a pair is r_zbl = scale · (R_cov(Z_i) + R_cov(Z_j)) (ASE's covalent radii), never
more than the model's cutoff (the neighbour list only holds pairs closer than that).

Each pair appears as two edges (i→j and j→i), so the site energy of atom i is ½ Σ_j V(r_ij) and the
total is Σ_{pairs} V. Energies in eV.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jace.basis.radial import polynomial_envelope

COULOMB_EV_A = 14.3996454784  # e² / (4π ε0), eV Å
BOHR_A = 0.529177210903  # Å
ZBL_COEFFS = (0.18175, 0.50986, 0.28022, 0.02817)
ZBL_EXPONENTS = (3.19980, 0.94229, 0.40290, 0.20162)
ZBL_ENVELOPE_P = 6

__all__ = ["zbl_screening", "zbl_pair_energy", "zbl_inner_cutoffs", "zbl_site_energies", "ZBLTable"]


def zbl_screening(x: jnp.ndarray) -> jnp.ndarray:
    """The universal screening function φ(x) (dimensionless; φ(0) = 1). Args and returns [...]."""
    return sum(c * jnp.exp(-d * x) for c, d in zip(ZBL_COEFFS, ZBL_EXPONENTS))


def zbl_pair_energy(r: jnp.ndarray, z_i: jnp.ndarray, z_j: jnp.ndarray, r_zbl: jnp.ndarray) -> jnp.ndarray:
    """V(r) of pairs, eV, switched off smoothly (C²) at the inner cutoff r_zbl.

    Args:
      r: [...] distances, Å. r = 0 (padding edges) gives 0 with a zero gradient, never NaN.
      z_i, z_j: [...] atomic numbers (int or float).
      r_zbl: [...] or scalar inner cutoffs, Å (> 0).
    Returns:
      [...] pair energies, eV: positive and decreasing in r below r_zbl, exactly 0 from r_zbl on.
    """
    r = jnp.asarray(r)
    if not jnp.issubdtype(r.dtype, jnp.floating):
        r = r.astype(jnp.result_type(float))
    z_i = jnp.asarray(z_i, r.dtype)
    z_j = jnp.asarray(z_j, r.dtype)
    pos = r > 0
    r_safe = jnp.where(pos, r, 1.0)
    a = 0.8854 * BOHR_A / (z_i**0.23 + z_j**0.23)  # Å
    v = COULOMB_EV_A * z_i * z_j / r_safe * zbl_screening(r_safe / a)
    return jnp.where(pos, v * polynomial_envelope(r_safe, r_zbl, ZBL_ENVELOPE_P), 0.0)


def zbl_inner_cutoffs(atomic_numbers, cutoff: float, scale: float = 1.0) -> np.ndarray:
    """[n_species, n_species] r_zbl = min(scale · (R_cov(Z_a) + R_cov(Z_b)), cutoff), Å (numpy)."""
    from ase.data import covalent_radii

    if not scale > 0:
        raise ValueError(f"the ZBL cutoff scale must be positive, got {scale!r}")
    rad = np.array([covalent_radii[int(z)] for z in atomic_numbers], dtype=np.float64)
    return np.minimum(scale * (rad[:, None] + rad[None, :]), float(cutoff))


class ZBLTable:
    """The per-species constants of the ZBL term of a model: atomic numbers [S] and inner cutoffs [S, S].

    Built once on the host from the model's elements; ``site_energies`` is pure and jit-able.
    """

    def __init__(self, atomic_numbers, cutoff: float, scale: float = 1.0):
        self.atomic_numbers = np.asarray(atomic_numbers, dtype=np.float64)
        self.r_zbl = zbl_inner_cutoffs(atomic_numbers, cutoff, scale)

    def site_energies(self, vectors, species, senders, receivers, mask_e, n_nodes: int) -> jnp.ndarray:
        """½ Σ_j V(r_ij) per node [n_nodes], eV. vectors [e, 3] Å; species [n]; senders/receivers/mask_e [e]."""
        return zbl_site_energies(
            vectors, species, senders, receivers, mask_e, n_nodes,
            jnp.asarray(self.atomic_numbers, vectors.dtype), jnp.asarray(self.r_zbl, vectors.dtype),
        )


def zbl_site_energies(vectors, species, senders, receivers, mask_e, n_nodes: int, atomic_numbers, r_zbl) -> jnp.ndarray:
    """Per-atom ZBL energies ½ Σ_j V(r_ij), eV.

    Args:
      vectors: [n_edges, 3] r_ij, Å.
      species: [n_nodes] species indices.
      senders (j), receivers (i), mask_e: [n_edges].
      atomic_numbers: [n_species] Z of each species; r_zbl: [n_species, n_species] inner cutoffs, Å.
    Returns:
      [n_nodes] eV (zero for atoms without a neighbour closer than r_zbl).
    """
    from jace.basis.angular import safe_norm

    s_i, s_j = species[receivers], species[senders]
    r = safe_norm(vectors)
    v = zbl_pair_energy(r, atomic_numbers[s_i], atomic_numbers[s_j], r_zbl[s_i, s_j])
    v = jnp.where(mask_e, v, 0.0)
    return 0.5 * jax.ops.segment_sum(v, receivers, num_segments=n_nodes)
