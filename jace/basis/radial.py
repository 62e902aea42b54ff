"""Radial bases and cutoff envelopes, as pure functions of distances.

All functions take distances r in Å with any leading shape and return arrays with one trailing axis of
basis functions. They are finite with finite gradients at r = 0 (padding edges have r = 0) and exactly
zero, with zero first and second derivatives, at and beyond the cutoff r_c.
"""

from __future__ import annotations

import jax.numpy as jnp

from jace.models.design import RadialSpec


def _safe_positive(r):
    """(r > 0 mask, r with zeros replaced by 1): the double-where pattern for functions singular at 0."""
    pos = r > 0
    return pos, jnp.where(pos, r, 1.0)


def bessel(r: jnp.ndarray, n_max: int, cutoff: float) -> jnp.ndarray:
    """Spherical Bessel functions j_0 of the n-th zero: sqrt(2/r_c) sin(nπ r/r_c) / r, n = 1 … n_max.

    Args: r [...] Å. Returns [..., n_max], units Å^-3/2. At r = 0 the limit sqrt(2/r_c) nπ/r_c is used.
    """
    n = jnp.arange(1, n_max + 1, dtype=r.dtype)
    k = n * jnp.pi / cutoff  # [n_max], 1/Å
    pos, r_safe = _safe_positive(r[..., None])
    pref = jnp.sqrt(2.0 / cutoff)
    return pref * jnp.where(pos, jnp.sin(k * r_safe) / r_safe, k)


def chebyshev(r: jnp.ndarray, n_max: int, cutoff: float) -> jnp.ndarray:
    """Chebyshev polynomials T_n(x), x = 2 r / r_c - 1, n = 0 … n_max - 1 (dimensionless). Returns [..., n_max]."""
    x = jnp.clip(2.0 * r / cutoff - 1.0, -1.0, 1.0)
    out = [jnp.ones_like(x), x]
    for _ in range(2, n_max):
        out.append(2.0 * x * out[-1] - out[-2])
    return jnp.stack(out[:n_max], axis=-1)


def gaussian(r: jnp.ndarray, n_max: int, cutoff: float) -> jnp.ndarray:
    """Gaussians exp(-(r - μ_n)² / (2σ²)), μ_n evenly spaced on [0, r_c], σ = r_c / n_max. Returns [..., n_max]."""
    mu = jnp.linspace(0.0, cutoff, n_max, dtype=r.dtype)
    sigma = cutoff / n_max
    return jnp.exp(-0.5 * ((r[..., None] - mu) / sigma) ** 2)


def polynomial_envelope(r: jnp.ndarray, cutoff: float, p: int = 5) -> jnp.ndarray:
    """1 - (p+1)(p+2)/2 u^p + p(p+2) u^(p+1) - p(p+1)/2 u^(p+2), u = r/r_c; 0 for r ≥ r_c.

    Value, first and second derivatives vanish at r_c for every p ≥ 2; equals 1 at r = 0. Returns [...].
    """
    u = jnp.clip(r / cutoff, 0.0, 1.0)
    f = 1.0 - 0.5 * (p + 1) * (p + 2) * u**p + p * (p + 2) * u ** (p + 1) - 0.5 * p * (p + 1) * u ** (p + 2)
    return jnp.where(r < cutoff, f, 0.0)


def cosine_envelope(r: jnp.ndarray, cutoff: float) -> jnp.ndarray:
    """((1 + cos(π r/r_c)) / 2)², 0 for r ≥ r_c. The square makes it C² at r_c (plain cosine is only C¹)."""
    u = jnp.clip(r / cutoff, 0.0, 1.0)
    f = 0.5 * (1.0 + jnp.cos(jnp.pi * u))
    return jnp.where(r < cutoff, f * f, 0.0)


def envelope(r: jnp.ndarray, spec: RadialSpec, cutoff: float) -> jnp.ndarray:
    if spec.envelope == "polynomial":
        return polynomial_envelope(r, cutoff, spec.envelope_p)
    return cosine_envelope(r, cutoff)


def agnesi_distance(r: jnp.ndarray, r0: jnp.ndarray, q: float, cutoff: float) -> jnp.ndarray:
    """r̃ = r_c (x(0) − x(r)) / (x(0) − x(r_c)), x(r) = 1/(1 + (r/r0)^q): a smooth, increasing map of
    [0, r_c] onto itself that is steepest around r0. Args: r [...] Å, r0 [...] or scalar Å. Returns [...] Å."""
    x = lambda d: 1.0 / (1.0 + (d / r0) ** q)  # noqa: E731
    xc = x(jnp.asarray(cutoff, dtype=r.dtype))
    return cutoff * (1.0 - x(r)) / (1.0 - xc)


def radial_basis(r: jnp.ndarray, spec: RadialSpec, cutoff: float, r0: jnp.ndarray | float | None = None) -> jnp.ndarray:
    """g_n(r̃) · envelope(r) for n = 0 … n_max - 1, with r̃ = r or the Agnesi-transformed distance.

    Args: r [...] Å; r0 [...] Å (per edge, e.g. from the element pair) when spec.transform == "agnesi".
    Returns [..., n_max].
    """
    fn = {"bessel": bessel, "chebyshev": chebyshev, "gaussian": gaussian}[spec.kind]
    rt = r
    if spec.transform == "agnesi":
        if r0 is None:
            raise ValueError("the agnesi radial transform needs r0 (per edge or scalar)")
        rt = agnesi_distance(r, r0, spec.q, cutoff)
    return fn(rt, spec.n_max, cutoff) * envelope(r, spec, cutoff)[..., None]


def pair_r0_table(atomic_numbers, scale: float = 1.0):
    """[n_species, n_species] r0 = scale × (covalent radius z_i + covalent radius z_j), Å (numpy)."""
    import numpy as np
    from ase.data import covalent_radii

    rad = np.array([covalent_radii[z] for z in atomic_numbers])
    return scale * (rad[:, None] + rad[None, :])


def radial_functions(
    g: jnp.ndarray, weights: jnp.ndarray, species_i: jnp.ndarray, species_j: jnp.ndarray
) -> jnp.ndarray:
    """Chemistry-dependent radial functions R_{n l z_i z_j}(r) = Σ_k W[z_i, z_j, l, n, k] g_k(r).

    Args:
      g: [n_edges, n_basis] radial basis values.
      weights: [n_species, n_species, l_max + 1, n_out, n_basis] mixing weights (fixed or learnable).
      species_i, species_j: [n_edges] species of the centre and the neighbour.
    Returns:
      [n_edges, l_max + 1, n_out].
    """
    w = weights[species_i, species_j]  # [n_edges, l, n_out, n_basis]
    return jnp.einsum("elnk,ek->eln", w, g)
