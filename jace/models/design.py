"""The design space as frozen, hashable dataclasses.

Everything a model or a fit needs is an explicit object; the CLI only parses YAML into these.
Lengths in Å, energies in eV.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Union

from jace.data.keys import DataKeys  # noqa: F401  (part of the design vocabulary)

__all__ = ["DataKeys", "E0Spec", "FitSpec", "LinearACESpec", "RadialSpec", "RADIAL_KINDS", "ENVELOPE_KINDS", "TRANSFORMS"]

RADIAL_KINDS = ("bessel", "chebyshev", "gaussian")
ENVELOPE_KINDS = ("polynomial", "cosine")
TRANSFORMS = ("none", "agnesi")


@dataclasses.dataclass(frozen=True)
class RadialSpec:
    """Radial basis g_n(r) · envelope(r), n = 0 … n_max - 1.

    kind: "bessel" (sin(nπr/r_c)/r), "chebyshev" (T_n(2r/r_c - 1)) or "gaussian" (evenly spaced centres).
    envelope: "polynomial" of order ``envelope_p`` (C² at r_c for every p ≥ 2), or "cosine"
      (((1 + cos πr/r_c)/2)², also C² at r_c).
    transform: "none", or "agnesi": the basis is evaluated at a transformed distance
      r̃ = r_c (x(0) − x(r)) / (x(0) − x(r_c)), x(r) = 1 / (1 + (r/r0)^q), which spends the basis's
      resolution around r0 (bond lengths) rather than uniformly on [0, r_c]. r0 depends on the element
      pair: r0_scale × (covalent radius of z_i + covalent radius of z_j) (ase.data.covalent_radii), so
      the radial functions are chemistry-dependent, R_{n z_i z_j}(r).
    """

    kind: str = "bessel"
    n_max: int = 8
    envelope: str = "polynomial"
    envelope_p: int = 5
    transform: str = "none"
    r0_scale: float = 1.0
    q: float = 4.0

    def __post_init__(self):
        if self.kind not in RADIAL_KINDS:
            raise ValueError(f"radial.kind must be one of {RADIAL_KINDS}, got {self.kind!r}")
        if self.envelope not in ENVELOPE_KINDS:
            raise ValueError(f"radial.envelope must be one of {ENVELOPE_KINDS}, got {self.envelope!r}")
        if int(self.n_max) < 1:
            raise ValueError(f"radial.n_max must be >= 1, got {self.n_max!r}")
        if self.transform not in TRANSFORMS:
            raise ValueError(f"radial.transform must be one of {TRANSFORMS}, got {self.transform!r}")
        if not (self.r0_scale > 0 and self.q > 0):
            raise ValueError(f"radial.r0_scale and radial.q must be positive, got {self.r0_scale!r}, {self.q!r}")
        if int(self.envelope_p) < 2:
            raise ValueError(f"radial.envelope_p must be >= 2 for a C² envelope, got {self.envelope_p!r}")


@dataclasses.dataclass(frozen=True)
class LinearACESpec:
    """A linear ACE model: E_i = E0(z_i) + Σ_v c_{z_i v} B_{i v}.

    elements: chemical symbols the model knows, in species-index order.
    cutoff: r_c in Å (> 0).
    radial: the radial basis.
    l_max: largest l of the spherical harmonics in the one-particle basis.
    correlation: ν_max, the largest correlation order (body order ν_max + 1).
    max_degree: total-degree truncation per correlation order ν = 1 … ν_max: a product basis function
      of one-particle indices (n_ξ, l_ξ) is kept when Σ_ξ (n_ξ + 1 + w_l · l_ξ) ≤ max_degree[ν - 1].
    w_l: weight of l in the degree.
    """

    elements: tuple[str, ...]
    cutoff: float = 5.0
    radial: RadialSpec = RadialSpec()
    l_max: int = 3
    correlation: int = 3
    max_degree: tuple[float, ...] = (12.0, 10.0, 8.0)
    w_l: float = 1.5

    def __post_init__(self):
        if not self.elements:
            raise ValueError("model.elements must list at least one element")
        if not (self.cutoff > 0):
            raise ValueError(f"model.cutoff must be a positive length in Å, got {self.cutoff!r}")
        if int(self.l_max) < 0:
            raise ValueError(f"model.l_max must be >= 0, got {self.l_max!r}")
        if not 1 <= int(self.correlation) <= 6:
            raise ValueError(f"model.correlation must be between 1 and 6, got {self.correlation!r}")
        if len(self.max_degree) != int(self.correlation):
            raise ValueError(
                f"model.max_degree needs one entry per correlation order 1..{self.correlation}, got {list(self.max_degree)}"
            )
        if self.w_l < 0:
            raise ValueError(f"model.w_l must be >= 0, got {self.w_l!r}")


E0Spec = Union[str, Mapping[str, float]]  # "isolated", "least_squares", "zero", or {symbol: eV}


@dataclasses.dataclass(frozen=True)
class FitSpec:
    """Weighted, regularised linear least squares (defaults in the spirit of ACEpotentials.jl).

    Rows of the system, per configuration with N atoms:
      energy:  energy_weight · (E - E_ref) / sqrt(N)
      forces:  forces_weight · (F - F_ref), per component
      virial:  stress_weight · (W - W_ref) / sqrt(N), per component (periodic cells with stress)
    each also multiplied by the configuration's own weights and by ``config_type_weights`` overrides
    ({config_type: {"energy": w, "forces": w, "stress": w}}).

    regulariser: "smoothness" (Tikhonov with Γ_v = (Σ_ξ n_ξ + 1 + w_l l_ξ(l_ξ+1))^smoothness_p,
      an algebraic smoothness prior) or "ridge" (Γ = 1); strength ``lam``.
    e0: "isolated" (from isolated-atom configurations), "least_squares", "zero", or {symbol: eV}.
    chunk_size: configurations per chunk when assembling the design matrix.
    """

    energy_weight: float = 30.0
    forces_weight: float = 1.0
    stress_weight: float = 1.0
    config_type_weights: Mapping[str, Mapping[str, float]] = dataclasses.field(default_factory=dict)
    regulariser: str = "smoothness"
    lam: float = 1e-3
    smoothness_p: float = 2.0
    e0: E0Spec = "isolated"
    chunk_size: int = 32

    def __post_init__(self):
        if self.regulariser not in ("smoothness", "ridge"):
            raise ValueError(f"fit.regulariser must be 'smoothness' or 'ridge', got {self.regulariser!r}")
        for name in ("energy_weight", "forces_weight", "stress_weight", "lam"):
            if getattr(self, name) < 0:
                raise ValueError(f"fit.{name} must be >= 0, got {getattr(self, name)!r}")
        if isinstance(self.e0, str) and self.e0 not in ("isolated", "least_squares", "zero"):
            raise ValueError(f"fit.e0 must be 'isolated', 'least_squares', 'zero' or a mapping, got {self.e0!r}")
        if int(self.chunk_size) < 1:
            raise ValueError(f"fit.chunk_size must be >= 1, got {self.chunk_size!r}")

    def weights_for(self, config_type: str) -> tuple[float, float, float]:
        o = self.config_type_weights.get(config_type, {})
        return (
            float(o.get("energy", self.energy_weight)),
            float(o.get("forces", self.forces_weight)),
            float(o.get("stress", self.stress_weight)),
        )
