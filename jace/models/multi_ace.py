"""Multi-ACE models: a stack of ``MultiACELayer``s, the named points of the design space, and the model object.

Named models (``preset(name, elements, **overrides)``), from ``../shared/PAPERS.md`` and the reference codes:

  ace     one layer, one-hot elements, the linear-ACE atomic basis ("outer") and full product basis,
          element-dependent linear readout: the same basis as ``jace.models.linear_ace``.
  nequip  ν = 1 per layer, gated nonlinearities, 4 layers, readout of the last layer only.
  botnet  ν = 1 per layer, no nonlinearity on node features, residual, linear readouts of every layer
          summed, the last an MLP (``last_readout: linear`` makes it body-ordered).
  mace    ν = 3, two layers, L_max of messages 0/1/2 (hidden_l_max), linear readout then MLP.

The model object follows the contract used by training, evaluation and the interfaces:
``model.init(rng, graph) -> params`` and ``model.site_energies(params, graph) -> [n_nodes]`` (eV).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph
import numpy as np

from jace.basis.angular import safe_norm, spherical_harmonics, unit_vectors
from jace.basis.radial import pair_r0_table, radial_basis
from jace.data.graph import SpeciesMap, edge_mask, edge_vectors
from jace.layers.multi_ace import MultiACELayer
from jace.models.design import MultiACESpec, RadialSpec
from jace.models.neural import NeuralModel, spec_to_json_dict

# ----------------------------------------------------------------------------------------------
# The named points of the design space
# ----------------------------------------------------------------------------------------------

_PRESETS: dict[str, dict] = {
    "ace": dict(
        num_layers=1, channels=1, l_max=3, hidden_l_max=0, correlation=(3,), one_particle="outer",
        product="full", max_degree=(12.0, 10.0, 8.0), embedding="one_hot", radial_mlp=(),
        residual="none", update_element_dependent=False, nonlinearity="none", readout="linear",
        last_readout="linear", normalisation="e0", avg_num_neighbors=None,
    ),
    "nequip": dict(
        num_layers=4, channels=32, l_max=2, hidden_l_max=2, correlation=(1, 1, 1, 1), residual="linear",
        first_layer_residual=False, update_element_dependent=True, product_element_dependent=False,
        nonlinearity="gate", readout="linear", last_readout="mlp", readout_all_layers=False,
        last_layer_scalars_only=False, radial_mlp=(64, 64), normalisation="scale_shift",
        radial=RadialSpec(kind="bessel", n_max=8, envelope_p=6),
    ),
    "botnet": dict(
        num_layers=3, channels=32, l_max=3, hidden_l_max=3, correlation=(1, 1, 1), residual="element",
        update_element_dependent=True, product_element_dependent=False, nonlinearity="none",
        readout="linear", last_readout="mlp", readout_all_layers=True, last_layer_scalars_only=True,
        radial_mlp=(64, 64, 64), normalisation="scale_shift", cutoff=4.0,
        radial=RadialSpec(kind="bessel", n_max=8, envelope_p=6),
    ),
    "mace": dict(
        num_layers=2, channels=32, l_max=3, hidden_l_max=1, correlation=(3, 3), residual="element",
        update_element_dependent=False, atomic_basis_element_dependent=True, product_element_dependent=True, nonlinearity="none",
        readout="linear", last_readout="mlp", readout_all_layers=True, last_layer_scalars_only=True,
        radial_mlp=(64, 64, 64), normalisation="scale_shift", radial=RadialSpec(kind="bessel", n_max=8, envelope_p=5),
    ),
}
MODEL_NAMES = tuple(_PRESETS) + ("multi_ace",)


def preset(name: str, elements, **overrides) -> MultiACESpec:
    """The MultiACESpec of a named model, with any field overridden.

    ``num_layers`` overrides stretch a per-layer ``correlation`` given as one number or a default tuple.
    """
    if name not in _PRESETS and name != "multi_ace":
        import difflib

        near = difflib.get_close_matches(name, MODEL_NAMES, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ValueError(f"unknown model {name!r}{hint}; known models: {', '.join(MODEL_NAMES)}")
    kw = dict(_PRESETS.get(name, {}))
    kw.update(overrides)
    kw["elements"] = tuple(elements)
    n_layers = int(kw.get("num_layers", MultiACESpec.num_layers))
    corr = kw.get("correlation", MultiACESpec.correlation)
    if isinstance(corr, (int, np.integer)):
        corr = (int(corr),) * n_layers
    elif len(corr) != n_layers and "correlation" not in overrides:
        corr = (corr[0],) * n_layers
    kw["correlation"] = tuple(int(c) for c in corr)
    if kw.get("product") == "full" and "max_degree" in kw and "max_degree" not in overrides:
        md = tuple(kw["max_degree"])
        nu = max(kw["correlation"])
        kw["max_degree"] = tuple(md[i] if i < len(md) else md[-1] for i in range(nu))
    return MultiACESpec(**kw)


# ----------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------


class MultiACENetwork(nn.Module):
    """Edges in, learned site energies out: Σ_t readout_t(h^{(t+1)}) [n_nodes] (before E0 / scale / shift)."""

    spec: MultiACESpec
    inv_avg_neighbors: float = 1.0

    @nn.compact
    def __call__(self, species, vectors, senders, receivers, mask_e, r0=None, paired: bool = False):
        """``paired`` (static): edge k + n_edges/2 is the reverse of edge k, so the radial MLPs, which
        see |r| alone, run on the first half (see ``jace.data.graph.reverse_pair_order``)."""
        s = self.spec
        dtype = vectors.dtype
        n_species = len(s.elements)
        one_hot = jax.nn.one_hot(species, n_species, dtype=dtype)
        r = safe_norm(vectors)
        sh = spherical_harmonics(unit_vectors(vectors, r), s.l_max)
        g = radial_basis(r, s.radial, s.cutoff, r0)
        g = jnp.where(mask_e[:, None], g, 0.0)
        if s.embedding == "one_hot":
            h = one_hot[:, None, :]
        else:
            w = self.param("embedding", nn.initializers.normal(1.0), (n_species, s.channels), dtype)
            h = (one_hot @ w)[:, None, :]
        energy = jnp.zeros(species.shape, dtype)
        for t in range(s.num_layers):
            h, e_t = MultiACELayer(s, t, name=f"layer_{t}")(
                h, one_hot, species, sh, g, senders, receivers, self.inv_avg_neighbors, paired
            )
            energy = energy + e_t
        return energy


# ----------------------------------------------------------------------------------------------
# The model object
# ----------------------------------------------------------------------------------------------


class MultiACEModel(NeuralModel):
    """A multi-ACE potential: spec + data statistics (+ parameters once trained).

    Args:
      spec: the design point. ``spec.avg_num_neighbors == "auto"`` needs ``avg_num_neighbors``.
      e0: [n_species] reference energies, eV.
      scale, shift: E_i = E0 + shift + scale · (learned part) for normalisation "scale_shift"; eV.
      avg_num_neighbors: the data's mean number of neighbours (used when the spec says "auto").
      params: trained parameters (optional; ``init`` makes fresh ones).

    Site energies, derivatives, ``predict_graph``, ``with_params`` and the file protocol come from
    :class:`jace.models.neural.NeuralModel`.
    """

    model_type = "multi_ace"
    display_name = "multi-ACE"

    def __init__(self, spec: MultiACESpec, e0=None, scale: float = 1.0, shift: float = 0.0,
                 avg_num_neighbors: Optional[float] = None, params=None, metadata: Optional[dict] = None):
        self._r0 = (
            pair_r0_table(SpeciesMap.from_symbols(spec.elements).atomic_numbers, spec.radial.r0_scale)
            if spec.radial.transform == "agnesi" else None
        )
        super().__init__(spec, e0, scale, shift, avg_num_neighbors, params, metadata)

    def _make_network(self, inv_avg_neighbors: float):
        return MultiACENetwork(self.spec, inv_avg_neighbors)

    def _inputs(self, graph: jraph.GraphsTuple):
        """(species, edge vectors, senders, receivers, edge mask, r0, paired) for the network.

        A padded graph's edges["pair_order"] puts every edge's reverse n_edges/2 places after it: the
        edges are permuted by it (the sums over edges do not depend on their order) and the radial MLPs
        run on half of them, unless the radial functions depend on the (ordered) element pair.
        """
        vec = edge_vectors(graph.nodes["positions"], graph.globals["cell"], graph)
        species, senders, receivers, mask = graph.nodes["species"], graph.senders, graph.receivers, edge_mask(graph)
        paired = "pair_order" in graph.edges and not self.spec.radial_element_dependent
        if paired:
            order = jnp.asarray(graph.edges["pair_order"])
            senders, receivers, mask = (jnp.asarray(x)[order] for x in (senders, receivers, mask))
            vec = vec[order]
        r0 = None
        if self._r0 is not None:  # symmetric in the pair, as pairing needs
            r0 = jnp.asarray(self._r0, vec.dtype)[species[receivers], species[senders]]
        return species, vec, senders, receivers, mask, r0, paired

    def _spec_to_dict(self) -> dict:
        return spec_to_dict(self.spec)

    @classmethod
    def _spec_from_dict(cls, d: dict) -> MultiACESpec:
        return spec_from_dict(d)


# ----------------------------------------------------------------------------------------------
# Batched evaluation of a trained model
# ----------------------------------------------------------------------------------------------


def _ladder(x: int, minimum: int = 8) -> int:
    """Smallest 2^k or 3·2^(k-1) ≥ x (and ≥ minimum): few distinct static sizes, so few compilations."""
    v = minimum
    while v < x:
        v = v * 3 // 2 if (v & (v - 1)) == 0 else v * 4 // 3
    return v


def _periodic(config) -> bool:
    return bool(np.any(config.pbc)) and config.volume > 1e-8


def _groups(n: int, batch_size: int) -> list[list[int]]:
    return [list(range(s, min(s + batch_size, n))) for s in range(0, n, batch_size)]


def evaluate_many(model: "MultiACEModel", sets: Mapping[str, Any], batch_size: int = 16, min_bucket=None) -> dict:
    """{name: (energies, forces, stresses)} for several sets of configurations, every batch of every set
    padded to one bucket (sizes from a geometric ladder), so the lot costs one compilation of
    ``model.predict_graph``. Energies in eV, forces [n_atoms, 3] eV/Å, stresses [3, 3] eV/Å³ (None for
    a configuration that is not periodic; stress is only computed when some configuration is).

    min_bucket: a ``Bucket`` to pad to at least (e.g. to share shapes with other calls).
    """
    from jace.data.graph import Bucket, batch_graphs, graphs_from_configurations, pad_graph

    sets = {name: list(cs) for name, cs in sets.items()}
    batch_size = max(1, int(batch_size))
    plans = {}
    max_nodes, max_edges, max_graphs = 1, 1, 1
    for name, configs in sets.items():
        graphs = graphs_from_configurations(configs, model.cutoff, model.species)
        groups = _groups(len(configs), batch_size)
        plans[name] = (configs, graphs, groups)
        for g in groups:
            max_nodes = max(max_nodes, sum(configs[k].n_atoms for k in g))
            max_edges = max(max_edges, sum(int(graphs[k].n_edge[0]) for k in g))
            max_graphs = max(max_graphs, len(g))
    bucket = Bucket(_ladder(max_nodes + 1), _ladder(max_edges), _ladder(max_graphs + 1, 2))
    if min_bucket is not None:
        bucket = Bucket(max(bucket.n_node, min_bucket.n_node), max(bucket.n_edge, min_bucket.n_edge),
                        max(bucket.n_graph, min_bucket.n_graph))
    with_stress = any(_periodic(c) for cs in sets.values() for c in cs)
    out: dict = {}
    for name, (configs, graphs, groups) in plans.items():
        n = len(configs)
        energies, forces, stresses = [None] * n, [None] * n, [None] * n
        for g in groups:
            padded = pad_graph(batch_graphs([graphs[k] for k in g]), bucket)
            pred = jax.device_get(model.predict_graph(padded, compute_stress=with_stress))
            start = 0
            for slot, k in enumerate(g):
                n_k = configs[k].n_atoms
                energies[k] = float(pred.energy[slot])
                forces[k] = np.asarray(pred.forces[start : start + n_k], dtype=np.float64)
                if with_stress and _periodic(configs[k]):
                    stresses[k] = np.asarray(pred.stress[slot], dtype=np.float64)
                start += n_k
        out[name] = (energies, forces, stresses)
    return out


def evaluate(model: "MultiACEModel", configs, batch_size: int = 16):
    """(energies, forces, stresses) of every configuration, in order; see :func:`evaluate_many`."""
    return evaluate_many(model, {"set": configs}, batch_size)["set"]


def _atoms_to_configs(images) -> list:
    from jace.data.configuration import Configuration

    return [
        Configuration(
            positions=np.asarray(a.get_positions(), dtype=np.float64),
            numbers=np.asarray(a.numbers),
            cell=np.asarray(a.cell[:], dtype=np.float64),
            pbc=np.asarray(a.pbc, dtype=bool),
            source=f"image {k}",
        )
        for k, a in enumerate(images)
    ]


def energy_forces_fn(model: "MultiACEModel", image_sets=None):
    """``energy_forces(list_of_atoms) -> (energies [n] eV, [forces [n_atoms, 3] eV/Å])`` of a trained
    model, for :mod:`jace.diagnostics.smoothness`: all images of a call in one padded batch.

    image_sets: lists of images the function will be called with (e.g. every scan); the batch is then
    padded to one bucket that fits each of them, so all those calls share one compilation.
    """
    from jace.data.graph import Bucket, graphs_from_configurations

    common = None
    if image_sets:
        nodes, edges, n_graph = 1, 1, 1
        for images in image_sets:
            configs = _atoms_to_configs(images)
            graphs = graphs_from_configurations(configs, model.cutoff, model.species)
            nodes = max(nodes, sum(c.n_atoms for c in configs))
            edges = max(edges, sum(int(g.n_edge[0]) for g in graphs))
            n_graph = max(n_graph, len(configs))
        common = Bucket(_ladder(nodes + 1), _ladder(edges), _ladder(n_graph + 1, 2))

    def energy_forces(images):
        configs = _atoms_to_configs(images)
        energies, forces, _ = evaluate_many(model, {"images": configs}, max(len(configs), 1), common)["images"]
        return np.asarray(energies, dtype=np.float64), forces

    return energy_forces


def spec_to_dict(spec: MultiACESpec) -> dict:
    return spec_to_json_dict(spec)


def spec_from_dict(d: Mapping[str, Any]) -> MultiACESpec:
    kw = dict(d)
    kw["radial"] = RadialSpec(**kw["radial"])
    for k in ("elements", "radial_mlp", "correlation", "max_degree"):
        kw[k] = tuple(kw[k])
    return MultiACESpec(**kw)


def _register():
    from jace.models.io import register_model_type

    register_model_type(MultiACEModel.model_type, MultiACEModel)


_register()
