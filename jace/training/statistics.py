"""Dataset statistics that models use to normalise their output before training.

A model predicts site energies E_i = E0(z_i) + shift + scale · ε_i(θ) with a network output ε_i of
order one; ``dataset_statistics`` computes E0, shift and scale from the training set, and the mean
number of neighbours that message-passing models divide their sums by:

  e0:                [n_species] eV, reference energy per element (passed in, see ``jace.data.e0``)
  shift:             eV/atom, mean over configurations of (E - Σ_i E0(z_i)) / N
  scale:             eV/Å, root mean square of the force components; where no configuration has
                     forces, the standard deviation of (E - Σ_i E0(z_i)) / N (eV/atom); 1.0 when
                     neither is available or it is zero
  avg_num_neighbors: mean number of edges (neighbours within the cutoff) per real atom

Isolated-atom configurations (``Configuration.is_isolated_atom``) are left out of shift and scale:
after subtracting E0 their energy is zero by construction and says nothing about interactions.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jraph
import numpy as np

from jace.data.configuration import Configuration
from jace.data.graph import SpeciesMap

__all__ = ["DatasetStatistics", "dataset_statistics"]


@dataclasses.dataclass(frozen=True)
class DatasetStatistics:
    """Normalisation constants of a training set (see the module docstring for definitions).

    Attributes:
      e0: per species, eV, in ``SpeciesMap`` order (a tuple, so the object is hashable).
      shift: eV/atom.
      scale: eV/Å (or eV/atom in the energy-only fallback).
      avg_num_neighbors: edges per atom.
      n_configs: configurations used for shift and scale.
      n_atoms: their atoms.
    """

    e0: tuple[float, ...]
    shift: float
    scale: float
    avg_num_neighbors: float
    n_configs: int = 0
    n_atoms: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DatasetStatistics":
        d = dict(d)
        d["e0"] = tuple(float(x) for x in d["e0"])
        return cls(**d)


def dataset_statistics(
    configs: Sequence[Configuration],
    graphs: Sequence[jraph.GraphsTuple],
    species: SpeciesMap,
    e0: np.ndarray | Sequence[float],
) -> DatasetStatistics:
    """Shift, scale and neighbour count of a training set.

    Args:
      configs: the training configurations.
      graphs: their unpadded graphs (``graphs_from_configurations`` with the model's cutoff), same order;
        only their edge and node counts are used.
      species: the model's elements.
      e0: [n_species] eV, e.g. from ``jace.data.e0.resolve_e0``.

    Returns:
      A :class:`DatasetStatistics`.
    """
    configs = list(configs)
    e0 = np.asarray(e0, dtype=np.float64).reshape(-1)
    if e0.shape[0] != len(species):
        raise ValueError(f"e0 has {e0.shape[0]} entries for {len(species)} species ({', '.join(species.symbols)})")
    if len(graphs) != len(configs):
        raise ValueError(f"got {len(graphs)} graphs for {len(configs)} configurations")

    per_atom, force_sq, n_force = [], 0.0, 0
    n_used, atoms_used = 0, 0
    for c in configs:
        if c.is_isolated_atom():
            continue
        n_used += 1
        atoms_used += c.n_atoms
        idx = species.indices(c.numbers, c.source)
        if c.energy is not None:
            per_atom.append((c.energy - float(e0[idx].sum())) / c.n_atoms)
        if c.forces is not None:
            force_sq += float(np.sum(c.forces**2))
            n_force += c.forces.size

    shift = float(np.mean(per_atom)) if per_atom else 0.0
    if n_force:
        scale = float(np.sqrt(force_sq / n_force))
    elif len(per_atom) > 1:
        scale = float(np.std(per_atom))
    else:
        scale = 1.0
    if not np.isfinite(scale) or scale <= 0.0:
        scale = 1.0

    n_nodes = sum(int(np.sum(g.n_node)) for g in graphs)
    n_edges = sum(int(np.sum(g.n_edge)) for g in graphs)
    avg_nn = float(n_edges / n_nodes) if n_nodes else 0.0
    return DatasetStatistics(
        e0=tuple(float(x) for x in e0),
        shift=shift,
        scale=scale,
        avg_num_neighbors=avg_nn,
        n_configs=n_used,
        n_atoms=atoms_used,
    )
