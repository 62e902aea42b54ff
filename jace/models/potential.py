"""From site energies to energy, forces, stress and virials: the one derivative function.

Every jace model is a function ``site_energies(params, graph) -> [n_nodes]`` (eV) that reads positions
from ``graph.nodes["positions"]`` and the cell from ``graph.globals["cell"]``. This module derives all
observables from it with one reverse-mode pass.

Conventions (those of ASE):
  * forces F_a = -∂E/∂r_a (eV/Å);
  * the energy is differentiated with respect to a homogeneous strain ε applied to positions and cell,
    r → r (1 + ε), cell → cell (1 + ε); the virial is W = -∂E/∂ε (eV) and the stress is
    σ = (1/V) ∂E/∂ε (eV/Å³, positive = tensile); both are symmetrised. Graphs with zero cell volume
    (molecules) get zero stress.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import jraph

from jace.data.graph import graph_mask, node_graph_index, node_mask

SiteEnergyFn = Callable[[object, jraph.GraphsTuple], jnp.ndarray]


class Predictions(NamedTuple):
    """Per-graph and per-node observables of a (padded) batch; padding entries are zero.

    energy: [n_graphs] eV; forces: [n_nodes, 3] eV/Å; stress: [n_graphs, 3, 3] eV/Å³;
    virial: [n_graphs, 3, 3] eV; site_energies: [n_nodes] eV.
    """

    energy: jnp.ndarray
    forces: jnp.ndarray
    stress: jnp.ndarray
    virial: jnp.ndarray
    site_energies: jnp.ndarray


def total_energies(site_energy_fn: SiteEnergyFn, params, graph: jraph.GraphsTuple) -> tuple[jnp.ndarray, jnp.ndarray]:
    """([n_graphs] energies, [n_nodes] masked site energies), eV."""
    n_graph = graph.n_node.shape[0]
    e_site = site_energy_fn(params, graph)
    e_site = jnp.where(node_mask(graph), e_site, 0.0)
    energy = jax.ops.segment_sum(e_site, node_graph_index(graph), num_segments=n_graph)
    return jnp.where(graph_mask(graph), energy, 0.0), e_site


def predict(site_energy_fn: SiteEnergyFn, params, graph: jraph.GraphsTuple, compute_stress: bool = True) -> Predictions:
    """Energy, forces, stress, virial and site energies of every graph in a batch."""
    positions = graph.nodes["positions"]
    cell = graph.globals["cell"]
    n_graph = cell.shape[0]
    node_graph = node_graph_index(graph)

    def energy_fn(pos, strain):
        # strain: [n_graphs, 3, 3]; r -> r (1 + ε), cell -> cell (1 + ε)
        deform = jnp.eye(3, dtype=pos.dtype)[None] + strain
        pos_s = jnp.einsum("na,nab->nb", pos, deform[node_graph])
        cell_s = jnp.einsum("gia,gab->gib", cell, deform)
        g = graph._replace(nodes={**graph.nodes, "positions": pos_s}, globals={**graph.globals, "cell": cell_s})
        energy, e_site = total_energies(site_energy_fn, params, g)
        return energy.sum(), (energy, e_site)

    strain0 = jnp.zeros((n_graph, 3, 3), dtype=positions.dtype)
    argnums = (0, 1) if compute_stress else (0,)
    grads, (energy, e_site) = jax.grad(energy_fn, argnums=argnums, has_aux=True)(positions, strain0)
    forces = -jnp.where(node_mask(graph)[:, None], grads[0], 0.0)
    if compute_stress:
        dE_deps = 0.5 * (grads[1] + jnp.swapaxes(grads[1], 1, 2))
        volume = jnp.abs(jnp.linalg.det(cell))
        safe_v = jnp.where(volume > 1e-8, volume, 1.0)
        stress = jnp.where((volume > 1e-8)[:, None, None], dE_deps / safe_v[:, None, None], 0.0)
        virial = -dE_deps
    else:
        stress = virial = jnp.zeros((n_graph, 3, 3), dtype=positions.dtype)
    return Predictions(energy, forces, stress, virial, e_site)


# --------------------------------------------------------------------------------------------------
# A model as pure functions plus parameters
# --------------------------------------------------------------------------------------------------


def cast_params(params, dtype):
    """``params`` with every floating-point leaf cast to ``dtype`` (integer leaves untouched)."""
    dtype = jnp.dtype(dtype)

    def cast(x):
        x = jnp.asarray(x)
        return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x

    return jax.tree_util.tree_map(cast, params)


class Potential(NamedTuple):
    """Any jace model as pure functions plus its parameters, for research scripts.

    ``site_energy_fn(params, graph) -> [n_nodes]`` eV is a pure function: jit, vmap and grad it freely
    (with respect to positions, cell or parameters). ``energy`` and ``predict`` are built on it.

    Fields:
      site_energy_fn: the model's site energies (E0 included), eV.
      params: its parameters (a pytree of arrays).
      cutoff: the radial cutoff, Å; a graph must hold every pair closer than this.
      species: the model's ``SpeciesMap`` (element order of ``graph.nodes["species"]``).
      model: the model object it came from (for saving, metadata, …).
    """

    site_energy_fn: SiteEnergyFn
    params: object
    cutoff: float
    species: object
    model: object

    def energy(self, params, graph: jraph.GraphsTuple) -> jnp.ndarray:
        """[n_graphs] total energies, eV (zero for padding graphs)."""
        return total_energies(self.site_energy_fn, params, graph)[0]

    def predict(self, params, graph: jraph.GraphsTuple, compute_stress: bool = True) -> Predictions:
        """Energy, forces, stress, virial and site energies; see :func:`predict`."""
        return predict(self.site_energy_fn, params, graph, compute_stress)

    def with_dtype(self, dtype) -> "Potential":
        """The same potential with floating-point parameters cast to ``dtype`` (float32 or float64)."""
        return self._replace(params=cast_params(self.params, dtype))


def as_potential(model_or_path) -> Potential:
    """A :class:`Potential` from a model object (linear ACE, multi-ACE, …) or a saved model file."""
    import os

    model = model_or_path
    if isinstance(model_or_path, (str, os.PathLike)):
        from jace.models.io import load_model

        model = load_model(model_or_path)
    params = getattr(model, "params", None)
    if params is None:
        raise ValueError(f"{type(model).__name__} has no parameters yet: train it or call init first")
    return Potential(model.site_energy_fn, params, float(model.cutoff), model.species, model)
