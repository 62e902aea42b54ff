"""Graph ACE (GRACE) models: the design point, the named presets, the network and the model object.

Named models (``preset(name, elements, **overrides)``), sizes close to the GRACE v1 "small" presets
(``../shared/PAPERS.md`` §4) and overridable field by field:

  grace-1l  one layer (star graphs), l_max 3, 20 channels, product order 3, 10 densities
            (ρ_0 linear + MLP of 9), Chebyshev radial basis + MLP, cutoff 6 Å.
  grace-2l  two layers (star and tree graphs, reach 2 × cutoff), l_max 3 / 2, 20 / 32 channels,
            order 3, messages of L ≤ 1 with 16 channels, 8 densities.
  fs-ace    the nonlinear single-layer FS-ACE of pacemaker in tensor-decomposed form: one layer,
            order 4, E_i = ρ_0 + F(ρ_1; 1/2) (Finnis–Sinclair readout, no MLP).
  grace     a user-defined point starting from the ``GraceSpec`` defaults.

The model object follows the same protocol as ``MultiACEModel`` (training, save/load, evaluation, the
ASE calculator and jax-md use it unchanged): ``init(rng, graph) -> params``,
``site_energies(params, graph) -> [n_nodes]`` eV, ``params``, ``cutoff``, ``species``, ``predict_graph``,
``with_params``, ``n_params``, ``to_state`` / ``from_state`` (registered as model type "grace").
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph
import numpy as np

from jace.basis.angular import safe_norm, spherical_harmonics, unit_vectors
from jace.basis.radial import radial_basis
from jace.data.graph import edge_mask, edge_vectors
from jace.layers.grace import ElementEmbedding, GraceLayer, GraceReadout
from jace.models.design import RadialSpec
from jace.models.neural import NeuralModel, spec_to_json_dict

__all__ = [
    "GraceSpec",
    "GraceModel",
    "GraceNetwork",
    "preset",
    "grace_preset",
    "MODEL_NAMES",
    "evaluate",
    "evaluate_many",
    "energy_forces_fn",
    "spec_to_dict",
    "spec_from_dict",
]

GRACE_READOUTS = ("linear", "fs", "mlp", "fs_mlp")
NORMALISATION_KINDS = ("e0", "scale_shift")
PER_LAYER_FIELDS = ("channels", "l_max", "correlation")


@dataclasses.dataclass(frozen=True)
class GraceSpec:
    """One point of the graph-ACE design space (``jace.layers.grace`` has the equations).

    Fields (lengths Å, energies eV):
      elements: chemical symbols, in species-index order.
      cutoff: r_c (> 0). A model of ``num_layers`` layers sees atoms up to num_layers × r_c away.
      radial: the radial basis g_n(r) (GRACE: Chebyshev polynomials of 2r/r_c − 1 times the polynomial
        envelope, 8 functions); ``transform`` must be "none".
      radial_mlp: hidden widths of the radial MLP g → R_{k,p}(r) (normalised silu, no biases, so R and its
        first two derivatives vanish at r_c).
      num_layers: T ≥ 1 (1: star graphs only; 2: star and tree graphs of depth 2; …).
      embedding_size: E, the size of the learnable element embedding e(z).
      channels: K per layer (GRACE's n_rad): channels of the atomic basis and the products.
      l_max: per layer, the largest l of the edge harmonics and of the atomic basis A.
      correlation: per layer, the largest product order ν (≥ 1; 4 and more are fine).
      message_l_max, message_channels: the indicators passed from layer t to t + 1 (L ≤ message_l_max).
      readout: "linear" (ε = ρ_0), "fs" (ε = Σ_d F(ρ_d; fs_exponents[d]), pacemaker), "mlp"
        (ε = ρ_0 + MLP(ρ_1 … ρ_mlp_densities), GRACE) or "fs_mlp" (both).
      fs_exponents: the m of each Finnis–Sinclair density (m = 1: linear); used by "fs" and "fs_mlp".
      mlp_densities: the densities fed to the MLP ("mlp", "fs_mlp").
      readout_hidden: hidden widths of that MLP.
      normalisation: "e0" (E_i = E0 + ε_i) or "scale_shift" (E_i = E0 + shift + scale · ε_i).
      avg_num_neighbors: None (no division), a number or "auto" (from the training data).
      zbl: add the ZBL core repulsion (``jace.basis.repulsion``), switched off C²-smoothly at
        r_zbl = zbl_cutoff_scale × (covalent radius z_i + covalent radius z_j) (at most ``cutoff``).
    """

    elements: tuple[str, ...]
    cutoff: float = 6.0
    radial: RadialSpec = RadialSpec(kind="chebyshev", n_max=8, envelope="polynomial", envelope_p=5)
    radial_mlp: tuple[int, ...] = (64, 64)
    num_layers: int = 1
    embedding_size: int = 128
    channels: tuple[int, ...] = (20,)
    l_max: tuple[int, ...] = (3,)
    correlation: tuple[int, ...] = (3,)
    message_l_max: int = 1
    message_channels: int = 16
    readout: str = "mlp"
    fs_exponents: tuple[float, ...] = (1.0, 0.5)
    mlp_densities: int = 9
    readout_hidden: tuple[int, ...] = (64,)
    normalisation: str = "scale_shift"
    avg_num_neighbors: Union[None, float, str] = "auto"
    zbl: bool = False
    zbl_cutoff_scale: float = 1.0

    def __post_init__(self):
        if not self.elements:
            raise ValueError("model.elements must list at least one element")
        if not (self.cutoff > 0):
            raise ValueError(f"model.cutoff must be a positive length in Å, got {self.cutoff!r}")
        if self.radial.transform != "none":
            raise ValueError(f"model.radial.transform must be 'none' for GRACE models, got {self.radial.transform!r}")
        if int(self.num_layers) < 1:
            raise ValueError(f"model.num_layers must be >= 1, got {self.num_layers!r}")
        for name in PER_LAYER_FIELDS:
            v = getattr(self, name)
            if len(v) != int(self.num_layers):
                raise ValueError(f"model.{name} needs one entry per layer ({self.num_layers}), got {list(v)}")
        if any(int(c) < 1 for c in self.channels):
            raise ValueError(f"model.channels entries must be >= 1, got {list(self.channels)}")
        if any(int(l) < 0 for l in self.l_max):
            raise ValueError(f"model.l_max entries must be >= 0, got {list(self.l_max)}")
        if any(int(c) < 1 for c in self.correlation):
            raise ValueError(f"model.correlation entries must be >= 1, got {list(self.correlation)}")
        if int(self.message_l_max) < 0:
            raise ValueError(f"model.message_l_max must be >= 0, got {self.message_l_max!r}")
        for name in ("embedding_size", "message_channels"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"model.{name} must be >= 1, got {getattr(self, name)!r}")
        if any(int(w) < 1 for w in self.radial_mlp) or any(int(w) < 1 for w in self.readout_hidden):
            raise ValueError(
                f"model.radial_mlp and model.readout_hidden widths must be >= 1, got {list(self.radial_mlp)}, "
                f"{list(self.readout_hidden)}"
            )
        if self.readout not in GRACE_READOUTS:
            raise ValueError(f"model.readout must be one of {GRACE_READOUTS}, got {self.readout!r}")
        if self.readout in ("fs", "fs_mlp"):
            if not self.fs_exponents or any(not float(m) > 0 for m in self.fs_exponents):
                raise ValueError(f"model.fs_exponents must be positive numbers, got {list(self.fs_exponents)}")
        if self.readout in ("mlp", "fs_mlp") and int(self.mlp_densities) < 1:
            raise ValueError(
                f"model.mlp_densities must be >= 1 for readout {self.readout!r}, got {self.mlp_densities!r}"
            )
        if self.normalisation not in NORMALISATION_KINDS:
            raise ValueError(f"model.normalisation must be one of {NORMALISATION_KINDS}, got {self.normalisation!r}")
        if isinstance(self.avg_num_neighbors, str):
            if self.avg_num_neighbors != "auto":
                raise ValueError(
                    f"model.avg_num_neighbors must be a number, null or 'auto', got {self.avg_num_neighbors!r}"
                )
        elif self.avg_num_neighbors is not None and not self.avg_num_neighbors > 0:
            raise ValueError(f"model.avg_num_neighbors must be positive, got {self.avg_num_neighbors!r}")
        if not self.zbl_cutoff_scale > 0:
            raise ValueError(f"model.zbl_cutoff_scale must be positive, got {self.zbl_cutoff_scale!r}")

    @property
    def reach(self) -> float:
        """How far a site energy sees: num_layers × cutoff, Å."""
        return float(self.num_layers) * float(self.cutoff)


# ----------------------------------------------------------------------------------------------
# The named points
# ----------------------------------------------------------------------------------------------

_GRACE_RADIAL = RadialSpec(kind="chebyshev", n_max=8, envelope="polynomial", envelope_p=5)

_PRESETS: dict[str, dict] = {
    "grace-1l": dict(
        cutoff=6.0, radial=_GRACE_RADIAL, radial_mlp=(64, 64), num_layers=1, embedding_size=128, channels=(20,),
        l_max=(3,), correlation=(3,), readout="mlp", mlp_densities=9, readout_hidden=(64,),
        normalisation="scale_shift",
    ),
    "grace-2l": dict(
        cutoff=6.0, radial=_GRACE_RADIAL, radial_mlp=(64, 64), num_layers=2, embedding_size=128, channels=(20, 32),
        l_max=(3, 2), correlation=(3, 3), message_l_max=1, message_channels=16, readout="mlp", mlp_densities=7,
        readout_hidden=(64,), normalisation="scale_shift",
    ),
    "fs-ace": dict(
        cutoff=6.0, radial=_GRACE_RADIAL, radial_mlp=(64, 64), num_layers=1, embedding_size=64, channels=(16,),
        l_max=(3,), correlation=(4,), readout="fs", fs_exponents=(1.0, 0.5), normalisation="scale_shift",
    ),
}
MODEL_NAMES = tuple(_PRESETS) + ("grace",)


def preset(name: str, elements, **overrides) -> GraceSpec:
    """The GraceSpec of a named model with any field overridden.

    Per-layer fields (channels, l_max, correlation) may be given as one number for every layer; when
    ``num_layers`` is overridden, a per-layer field taken from the preset is stretched (its last entry
    repeated) or cut to the new number of layers.
    """
    if name not in MODEL_NAMES:
        import difflib

        near = difflib.get_close_matches(name, MODEL_NAMES, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ValueError(f"unknown model {name!r}{hint}; known GRACE models: {', '.join(MODEL_NAMES)}")
    kw = dict(_PRESETS.get(name, {}))
    kw.update(overrides)
    kw["elements"] = tuple(elements)
    n_layers = int(kw.get("num_layers", GraceSpec.num_layers))
    for field in PER_LAYER_FIELDS:
        v = kw.get(field, getattr(GraceSpec, field))
        if isinstance(v, (int, np.integer)):
            v = (int(v),) * n_layers
        elif len(v) != n_layers and field not in overrides:
            v = tuple(v[:n_layers]) + (v[-1],) * max(0, n_layers - len(v))
        kw[field] = tuple(int(x) for x in v)
    for field in ("radial_mlp", "readout_hidden"):
        if field in kw:
            kw[field] = tuple(int(x) for x in kw[field])
    if "fs_exponents" in kw:
        kw["fs_exponents"] = tuple(float(x) for x in kw["fs_exponents"])
    return GraceSpec(**kw)


grace_preset = preset  # the name exported from ``jace``


# ----------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------


class GraceNetwork(nn.Module):
    """Edges in, learned site energies ε_i out [n_nodes] (before E0, scale, shift and ZBL).

    Every parameter is initialised as a standard normal (layers divide by their fan-in);
    ``GraceModel.init`` relies on it.
    """

    spec: GraceSpec
    inv_avg_neighbors: float = 1.0

    @nn.compact
    def __call__(self, species, vectors, senders, receivers, mask_e):
        s = self.spec
        dtype = vectors.dtype
        r = safe_norm(vectors)
        sh = spherical_harmonics(unit_vectors(vectors, r), max(int(l) for l in s.l_max))
        g = radial_basis(r, s.radial, s.cutoff)
        g = jnp.where(mask_e[:, None], g, 0.0)  # [e, n_basis]
        emb = ElementEmbedding(len(s.elements), int(s.embedding_size), name="embedding")(species, dtype)
        invariants, message = [], None
        for t in range(s.num_layers):
            inv, message = GraceLayer(s, t, name=f"layer_{t}")(
                emb, sh, g, senders, receivers, message, self.inv_avg_neighbors
            )
            invariants.append(inv)
        return GraceReadout(s, name="readout")(jnp.concatenate(invariants, axis=1), species)


# ----------------------------------------------------------------------------------------------
# The model object
# ----------------------------------------------------------------------------------------------


class GraceModel(NeuralModel):
    """A graph-ACE potential: spec + data statistics (+ parameters once trained).

    Args:
      spec: the design point; ``spec.avg_num_neighbors == "auto"`` needs ``avg_num_neighbors``.
      e0: [n_species] reference energies, eV.
      scale, shift: E_i = E0 + shift + scale · ε_i for normalisation "scale_shift"; eV.
      avg_num_neighbors: the data's mean number of neighbours (used when the spec says "auto").
      params: trained parameters (optional; ``init`` makes fresh ones).
    """

    model_type = "grace"
    display_name = "GRACE"

    def __init__(self, spec: GraceSpec, e0=None, scale: float = 1.0, shift: float = 0.0,
                 avg_num_neighbors: Optional[float] = None, params=None, metadata: Optional[dict] = None):
        if not isinstance(spec, GraceSpec):
            raise TypeError(f"GraceModel needs a GraceSpec, got {type(spec).__name__}")
        super().__init__(spec, e0, scale, shift, avg_num_neighbors, params, metadata)

    def _make_network(self, inv_avg_neighbors: float):
        return GraceNetwork(self.spec, inv_avg_neighbors)

    def _inputs(self, graph: jraph.GraphsTuple):
        vec = edge_vectors(graph.nodes["positions"], graph.globals["cell"], graph)
        return graph.nodes["species"], vec, graph.senders, graph.receivers, edge_mask(graph)

    def init(self, rng, graph: jraph.GraphsTuple):
        """Fresh parameters (dtype of the graph's positions): every entry an independent standard normal.

        That is the initialiser of every GRACE parameter (each layer divides by its fan-in), so the
        network is only traced for the parameter shapes (``jax.eval_shape``), never run or compiled:
        ``jax.jit(model.init)`` compiles a random-number program only.
        """
        shapes = jax.eval_shape(lambda g: self.network.init(jax.random.PRNGKey(0), *self._inputs(g))["params"], graph)
        leaves, tree = jax.tree_util.tree_flatten(shapes)
        sizes = [int(np.prod(x.shape)) for x in leaves]
        flat = jax.random.normal(rng, (sum(sizes),), leaves[0].dtype)  # one draw: a small program to compile
        starts = np.cumsum([0] + sizes)
        return jax.tree_util.tree_unflatten(
            tree, [flat[a:b].reshape(x.shape).astype(x.dtype) for a, b, x in zip(starts[:-1], starts[1:], leaves)]
        )

    def evaluate(self, configs, batch_size: int = 16):
        """(energies, forces, stresses) of every configuration; see :func:`evaluate`."""
        return evaluate(self, configs, batch_size)

    def _spec_to_dict(self) -> dict:
        return spec_to_dict(self.spec)

    @classmethod
    def _spec_from_dict(cls, d: dict) -> GraceSpec:
        return spec_from_dict(d)


# ----------------------------------------------------------------------------------------------
# Evaluation (the batched evaluation of multi-ACE works for any model with predict_graph)
# ----------------------------------------------------------------------------------------------


def evaluate_many(model: GraceModel, sets: Mapping[str, Any], batch_size: int = 16, min_bucket=None) -> dict:
    """{name: (energies, forces, stresses)} of several sets, one compilation for all; see
    :func:`jace.models.multi_ace.evaluate_many`."""
    from jace.models.multi_ace import evaluate_many as _many

    return _many(model, sets, batch_size, min_bucket)


def evaluate(model: GraceModel, configs, batch_size: int = 16):
    """(energies eV, forces [n_atoms, 3] eV/Å, stresses [3, 3] eV/Å³ or None) of every configuration."""
    return evaluate_many(model, {"set": configs}, batch_size)["set"]


def energy_forces_fn(model: GraceModel, image_sets=None):
    """``energy_forces(list_of_atoms)`` for the smoothness scans; see :func:`jace.models.multi_ace.energy_forces_fn`."""
    from jace.models.multi_ace import energy_forces_fn as _fn

    return _fn(model, image_sets)


# ----------------------------------------------------------------------------------------------
# Spec (de)serialisation
# ----------------------------------------------------------------------------------------------


def spec_to_dict(spec: GraceSpec) -> dict:
    return spec_to_json_dict(spec)


def spec_from_dict(d: Mapping[str, Any]) -> GraceSpec:
    kw = dict(d)
    kw["radial"] = RadialSpec(**kw["radial"])
    for k in ("elements", "radial_mlp", "channels", "l_max", "correlation", "readout_hidden"):
        kw[k] = tuple(kw[k])
    kw["fs_exponents"] = tuple(float(x) for x in kw["fs_exponents"])
    return GraceSpec(**kw)


def _register():
    from jace.models.io import register_model_type

    register_model_type(GraceModel.model_type, GraceModel)


_register()
