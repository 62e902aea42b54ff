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
SOLVERS = ("auto", "qr", "dual")


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
    solver: "qr" (streamed QR, memory O(n_features²)), "dual" (kernel form, memory O(n_rows²) plus the
      rows on disk; needs lam > 0) or "auto": dual when there are more features than rows and lam > 0.
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
    solver: str = "auto"

    def __post_init__(self):
        if self.regulariser not in ("smoothness", "ridge"):
            raise ValueError(f"fit.regulariser must be 'smoothness' or 'ridge', got {self.regulariser!r}")
        for name in ("energy_weight", "forces_weight", "stress_weight", "lam"):
            if getattr(self, name) < 0:
                raise ValueError(f"fit.{name} must be >= 0, got {getattr(self, name)!r}")
        if isinstance(self.e0, str) and self.e0 not in ("isolated", "least_squares", "zero"):
            raise ValueError(f"fit.e0 must be 'isolated', 'least_squares', 'zero' or a mapping, got {self.e0!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"fit.solver must be one of {SOLVERS}, got {self.solver!r}")
        if self.solver == "dual" and not self.lam > 0:
            raise ValueError(f"fit.solver 'dual' needs fit.lam > 0, got {self.lam!r}")
        if int(self.chunk_size) < 1:
            raise ValueError(f"fit.chunk_size must be >= 1, got {self.chunk_size!r}")

    def weights_for(self, config_type: str) -> tuple[float, float, float]:
        o = self.config_type_weights.get(config_type, {})
        return (
            float(o.get("energy", self.energy_weight)),
            float(o.get("forces", self.forces_weight)),
            float(o.get("stress", self.stress_weight)),
        )


ONE_PARTICLE_KINDS = ("channelwise", "outer")
PRODUCT_KINDS = ("channelwise", "full")
EMBEDDING_KINDS = ("learned", "one_hot")
RESIDUAL_KINDS = ("none", "linear", "element")
NONLINEARITY_KINDS = ("none", "gate")
READOUT_KINDS = ("linear", "mlp")
NORMALISATION_KINDS = ("e0", "scale_shift")


@dataclasses.dataclass(frozen=True)
class MultiACESpec:
    """One point of the multi-ACE design space (Batatia et al.): a stack of ``num_layers`` ACE layers.

    Node features h_{i,k,LM} have ``channels`` channels for every L = 0 … hidden_l_max, natural parity
    ((-1)^L: 0e, 1o, 2e, …). Layer t:

      one-particle   φ_{k,p,l3 m3}(r_ij, h_j) = R_{k p}(r_ij) Σ C^{l3 m3}_{l1 m1 l2 m2} Y_{l1 m1}(r̂_ij) (W h_j)_{k l2 m2}
                     for every path p = (l1 ≤ l_max, l2 ≤ L_in, l3 ≤ l_max), ``one_particle="channelwise"``;
                     or, for scalar inputs, the outer product R_{n l}(r_ij) Y_{lm}(r̂_ij) h_{j,k} with channels (k, n)
                     (``"outer"``: the linear-ACE atomic basis when h is a one-hot element);
      atomic basis   A_{i,k,lm} = (1/avg_num_neighbors) Σ_j Σ_{k',p} w_{k, k' p} φ_{k',p,lm};
      product        B_{i,k,η,LM}, the symmetrised products of A of orders 1 … correlation[t], channel-wise
                     (``product="channelwise"``, MACE) or over all channels with a total-degree bound
                     (``"full"``, linear ACE);
      message        m_{i,k,LM} = Σ_η W_{(z_i) k η} B_{i,k,η,LM} (element-dependent if product_element_dependent);
      update         h' = Linear(m) (+ self-connection of h: ``residual``), then an optional gate;
      readout        per layer, linear or MLP on the invariant channels of h'; summed over layers.

    E_i = E0(z_i) + Σ_t readout_t(h_i^{(t+1)}) (normalisation "e0") or
    E_i = E0(z_i) + shift + scale · Σ_t readout_t (normalisation "scale_shift", scale and shift from the data).

    Fields (lengths Å):
      elements, cutoff, radial: as in LinearACESpec.
      radial_mlp: hidden widths of the radial MLP (silu, no biases, so R(r_c) = 0 stays C²); () uses the
        radial basis itself (one function per n, ``one_particle="outer"`` only).
      radial_element_dependent: mix the radial basis with a learnable per-(z_i, z_j) matrix before the MLP.
      num_layers, channels, l_max (spherical harmonics and A), hidden_l_max (L_max of messages/hidden features).
      correlation: ν per layer (tuple, one entry per layer).
      max_degree, w_l: total-degree bound per ν for ``product="full"``.
      embedding: "learned" (linear map of the one-hot element to ``channels`` scalars) or "one_hot".
      residual: self-connection in layers t ≥ 1: "none", "linear" (W h) or "element" (W_{z_i} h);
        first_layer_residual applies it in layer 0 too.
      update_element_dependent: the update linear of layers without a residual is element-dependent.
      atomic_basis_element_dependent: layers without a residual mix A with an element-dependent linear
        W_{z_i} A before the product (MACE's first interaction block, mace-torch's ``skip_tp``); needs
        ``product="channelwise"``. ``mace`` sets it and leaves the update element-agnostic, as mace-torch does.
      nonlinearity: "none" or "gate" (silu on scalars, sigmoid gates on L > 0) after each update but the last.
      readout, last_readout: "linear" or "mlp" (Linear → readout_hidden → silu → Linear);
        readout_all_layers: sum readouts of every layer (MACE, BOTNet) or only of the last (NequIP).
      last_layer_scalars_only: the last layer only computes L = 0 features (MACE).
      normalisation: "e0" or "scale_shift".
      avg_num_neighbors: None (no division), a number, or "auto" (from the training data).
      zbl: add the ZBL core repulsion ½ Σ_j V_ZBL(r_ij) to every site energy (``jace.basis.repulsion``),
        switched off C²-smoothly at r_zbl = zbl_cutoff_scale × (covalent radius z_i + covalent radius z_j)
        (at most ``cutoff``); off by default.
    """

    elements: tuple[str, ...]
    cutoff: float = 5.0
    radial: RadialSpec = RadialSpec()
    radial_mlp: tuple[int, ...] = (64, 64, 64)
    radial_element_dependent: bool = False
    num_layers: int = 2
    channels: int = 32
    l_max: int = 3
    hidden_l_max: int = 1
    correlation: tuple[int, ...] = (3, 3)
    one_particle: str = "channelwise"
    product: str = "channelwise"
    max_degree: tuple[float, ...] = ()
    w_l: float = 1.5
    product_element_dependent: bool = True
    embedding: str = "learned"
    residual: str = "element"
    first_layer_residual: bool = False
    update_element_dependent: bool = True
    atomic_basis_element_dependent: bool = False
    nonlinearity: str = "none"
    readout: str = "linear"
    last_readout: str = "mlp"
    readout_hidden: int = 16
    readout_all_layers: bool = True
    last_layer_scalars_only: bool = True
    normalisation: str = "scale_shift"
    avg_num_neighbors: Union[None, float, str] = "auto"
    zbl: bool = False
    zbl_cutoff_scale: float = 1.0

    def __post_init__(self):
        if not self.elements:
            raise ValueError("model.elements must list at least one element")
        if not (self.cutoff > 0):
            raise ValueError(f"model.cutoff must be a positive length in Å, got {self.cutoff!r}")
        if not self.zbl_cutoff_scale > 0:
            raise ValueError(f"model.zbl_cutoff_scale must be positive, got {self.zbl_cutoff_scale!r}")
        if int(self.num_layers) < 1:
            raise ValueError(f"model.num_layers must be >= 1, got {self.num_layers!r}")
        if int(self.channels) < 1:
            raise ValueError(f"model.channels must be >= 1, got {self.channels!r}")
        if int(self.l_max) < 0 or int(self.hidden_l_max) < 0:
            raise ValueError(f"model.l_max and model.hidden_l_max must be >= 0, got {self.l_max!r}, {self.hidden_l_max!r}")
        if len(self.correlation) != int(self.num_layers):
            raise ValueError(
                f"model.correlation needs one entry per layer ({self.num_layers}), got {list(self.correlation)}"
            )
        if any(not 1 <= int(c) <= 6 for c in self.correlation):
            raise ValueError(f"model.correlation entries must be between 1 and 6, got {list(self.correlation)}")
        for name, kinds in (
            ("one_particle", ONE_PARTICLE_KINDS),
            ("product", PRODUCT_KINDS),
            ("embedding", EMBEDDING_KINDS),
            ("residual", RESIDUAL_KINDS),
            ("nonlinearity", NONLINEARITY_KINDS),
            ("readout", READOUT_KINDS),
            ("last_readout", READOUT_KINDS),
            ("normalisation", NORMALISATION_KINDS),
        ):
            if getattr(self, name) not in kinds:
                raise ValueError(f"model.{name} must be one of {kinds}, got {getattr(self, name)!r}")
        if any(int(w) < 1 for w in self.radial_mlp):
            raise ValueError(f"model.radial_mlp widths must be >= 1, got {list(self.radial_mlp)}")
        if self.one_particle == "outer":
            if self.num_layers != 1:
                raise ValueError("model.one_particle 'outer' (the linear-ACE atomic basis) needs num_layers: 1")
        elif not self.radial_mlp:
            raise ValueError("model.radial_mlp may only be empty with one_particle: outer")
        if self.atomic_basis_element_dependent and self.product != "channelwise":
            raise ValueError("model.atomic_basis_element_dependent needs product: channelwise (A mixed per channel)")
        if self.product == "full":
            if len(self.max_degree) != max(int(c) for c in self.correlation):
                raise ValueError(
                    "model.product 'full' needs max_degree with one entry per correlation order, "
                    f"got {list(self.max_degree)}"
                )
        if isinstance(self.avg_num_neighbors, str):
            if self.avg_num_neighbors != "auto":
                raise ValueError(f"model.avg_num_neighbors must be a number, null or 'auto', got {self.avg_num_neighbors!r}")
        elif self.avg_num_neighbors is not None and not self.avg_num_neighbors > 0:
            raise ValueError(f"model.avg_num_neighbors must be positive, got {self.avg_num_neighbors!r}")
        if int(self.readout_hidden) < 1:
            raise ValueError(f"model.readout_hidden must be >= 1, got {self.readout_hidden!r}")

    def layer_l_out(self, t: int) -> int:
        """L_max of the features leaving layer t."""
        if t == self.num_layers - 1 and self.last_layer_scalars_only:
            return 0
        return int(self.hidden_l_max)
