"""What every neural jace model (multi-ACE, GRACE) shares: data statistics, the site-energy formula,
the jitted derivative function, and the safe file protocol.

A subclass supplies its network and its inputs:

    class MyModel(NeuralModel):
        model_type = "my_model"; display_name = "my model"
        def _make_network(self, inv_avg_neighbors): ...      # a Flax module
        def _inputs(self, graph): ...                         # (species, vectors, senders, receivers,
                                                              #  edge mask, *extra) for network.apply
        def _spec_to_dict(self): ...; @classmethod _spec_from_dict(cls, d): ...

Site energies (eV): E_i = E0(z_i) + shift + scale · ε_i (+ ½ Σ_j V_ZBL(r_ij) when ``spec.zbl``), with
ε_i the network's output; scale and shift are 1 and 0 unless ``spec.normalisation == "scale_shift"``.
"""

from __future__ import annotations

import functools
from typing import Mapping, Optional

import jax
import jax.numpy as jnp
import jraph
import numpy as np

from jace.data.graph import SpeciesMap
from jace.models.potential import predict

__all__ = ["NeuralModel", "flatten_params", "unflatten_params", "spec_to_json_dict"]


def spec_to_json_dict(spec) -> dict:
    """A spec dataclass (with a nested ``radial`` RadialSpec) as plain JSON types, tuples as lists."""
    import dataclasses
    import json

    d = dataclasses.asdict(spec)
    d["radial"] = dataclasses.asdict(spec.radial)
    return json.loads(json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}))


def flatten_params(params, prefix: str = "params") -> dict[str, np.ndarray]:
    """Parameter pytree → {"params/layer_0/radial/w0": array} for the model file."""
    from flax.traverse_util import flatten_dict

    return {f"{prefix}/{k}": np.asarray(v) for k, v in flatten_dict(params, sep="/").items()}


def unflatten_params(arrays: Mapping[str, np.ndarray], prefix: str = "params") -> dict:
    """Inverse of :func:`flatten_params` (other entries of ``arrays``, such as "e0", are ignored)."""
    from flax.traverse_util import unflatten_dict

    n = len(prefix) + 1
    flat = {k[n:]: jnp.asarray(v) for k, v in arrays.items() if k.startswith(prefix + "/")}
    return unflatten_dict(flat, sep="/")


class NeuralModel:
    """A neural potential: spec + data statistics (+ parameters once trained).

    Args:
      spec: the design point (a frozen dataclass with ``elements``, ``cutoff``, ``normalisation``,
        ``avg_num_neighbors``, optionally ``zbl`` and ``zbl_cutoff_scale``).
      e0: [n_species] reference energies, eV.
      scale, shift: E_i = E0 + shift + scale · ε_i for normalisation "scale_shift"; eV.
      avg_num_neighbors: the data's mean number of neighbours (used when the spec says "auto").
      params: trained parameters (optional; ``init`` makes fresh ones).
    """

    model_type = "neural"
    display_name = "neural"

    def __init__(
        self,
        spec,
        e0=None,
        scale: float = 1.0,
        shift: float = 0.0,
        avg_num_neighbors: Optional[float] = None,
        params=None,
        metadata: Optional[dict] = None,
    ):
        self.spec = spec
        self.species = SpeciesMap.from_symbols(spec.elements)
        self.e0 = np.zeros(len(spec.elements)) if e0 is None else np.asarray(e0, dtype=np.float64).reshape(-1)
        if self.e0.shape != (len(spec.elements),):
            raise ValueError(f"e0 needs one value per element {spec.elements}, got shape {self.e0.shape}")
        if spec.normalisation == "scale_shift":
            self.scale, self.shift = float(scale), float(shift)
        else:
            self.scale, self.shift = 1.0, 0.0
        if spec.avg_num_neighbors == "auto":
            if avg_num_neighbors is None:
                raise ValueError("model.avg_num_neighbors is 'auto': pass the data's average number of neighbours")
            self.avg_num_neighbors = float(avg_num_neighbors)
        elif spec.avg_num_neighbors is None:
            self.avg_num_neighbors = 1.0
        else:
            self.avg_num_neighbors = float(spec.avg_num_neighbors)
        if not self.avg_num_neighbors > 0:
            raise ValueError(f"avg_num_neighbors must be positive, got {self.avg_num_neighbors!r}")
        self.network = self._make_network(1.0 / self.avg_num_neighbors)
        self.params = params
        self.metadata = dict(metadata or {})
        self._zbl = None
        if getattr(spec, "zbl", False):
            from jace.basis.repulsion import ZBLTable

            self._zbl = ZBLTable(self.species.atomic_numbers, spec.cutoff, spec.zbl_cutoff_scale)
        self._predict = jax.jit(functools.partial(predict, self.site_energies), static_argnames=("compute_stress",))

    # -- what a subclass supplies ---------------------------------------------------------------
    def _make_network(self, inv_avg_neighbors: float):
        raise NotImplementedError

    def _inputs(self, graph: jraph.GraphsTuple) -> tuple:
        raise NotImplementedError

    def _spec_to_dict(self) -> dict:
        raise NotImplementedError

    @classmethod
    def _spec_from_dict(cls, d: dict):
        raise NotImplementedError

    # -- the model -------------------------------------------------------------------------------
    @property
    def cutoff(self) -> float:
        return float(self.spec.cutoff)

    def init(self, rng, graph: jraph.GraphsTuple):
        """Fresh parameters (dtype of the graph's positions)."""
        return self.network.init(rng, *self._inputs(graph))["params"]

    def learned_energies(self, params, graph: jraph.GraphsTuple) -> jnp.ndarray:
        """ε_i per node [n_nodes], before E0, scale, shift and ZBL."""
        return self.network.apply({"params": params}, *self._inputs(graph))

    def site_energies(self, params, graph: jraph.GraphsTuple) -> jnp.ndarray:
        """[n_nodes] site energies E_i = E0(z_i) + shift + scale · ε_i (+ ½ Σ_j V_ZBL(r_ij)), eV."""
        inputs = self._inputs(graph)
        out = self.network.apply({"params": params}, *inputs)
        species, vec, senders, receivers, mask_e = inputs[:5]
        e = jnp.asarray(self.e0, out.dtype)[species] + self.shift + self.scale * out
        if self._zbl is not None:
            e = e + self._zbl.site_energies(vec, species, senders, receivers, mask_e, species.shape[0])
        return e

    def site_energy_fn(self, params, graph: jraph.GraphsTuple) -> jnp.ndarray:
        """The name every jace model shares (see :class:`jace.models.potential.Potential`)."""
        return self.site_energies(params, graph)

    def predict_graph(self, graph: jraph.GraphsTuple, compute_stress: bool = True, params=None):
        p = self.params if params is None else params
        if p is None:
            raise ValueError("this model has no parameters yet: train it or call init")
        return self._predict(p, graph, compute_stress=compute_stress)

    def n_params(self, params=None) -> int:
        p = self.params if params is None else params
        return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(p)))

    def with_params(self, params):
        return type(self)(self.spec, self.e0, self.scale, self.shift, self.avg_num_neighbors, params, self.metadata)

    # -- safe serialisation protocol (jace.models.io) ------------------------------------------
    def to_state(self):
        if self.params is None:
            raise ValueError(f"cannot save a {self.display_name} model without parameters")
        spec = self._spec_to_dict()
        spec["_statistics"] = {"scale": self.scale, "shift": self.shift, "avg_num_neighbors": self.avg_num_neighbors}
        arrays = {"e0": self.e0, **flatten_params(jax.device_get(self.params))}
        return spec, arrays, {**self.metadata, "n_params": self.n_params()}

    @classmethod
    def from_state(cls, spec: dict, arrays: dict, metadata: dict):
        spec = dict(spec)
        stats = spec.pop("_statistics")
        s = cls._spec_from_dict(spec)
        params = unflatten_params(arrays)
        return cls(s, arrays["e0"], stats["scale"], stats["shift"], stats["avg_num_neighbors"], params, metadata)
