"""Second derivatives of a jace model's energy: Hessians, molecular vibrations and Γ-point phonons.

The Hessian H_{aα,bβ} = ∂²E / ∂r_{aα} ∂r_{bβ} (eV/Å²) is computed in float64 by forward-over-reverse
differentiation: one Hessian-vector product (a JVP of the gradient) per Cartesian coordinate, in
batches of ``batch_size`` columns so memory stays bounded for large structures.

Periodic cells: the variables are the positions of the atoms in the cell; the neighbour list's cell
shifts are held fixed, so a periodic image moves with its atom and the derivative of the full energy
includes every image contribution. The mass-weighted Hessian of a cell is then exactly the dynamical
matrix at q = 0 (Γ) of that cell: ``gamma_phonons``. (For phonons at other q, use a supercell with
``ase.phonons.Phonons`` and :class:`~jace.interfaces.ase_calculator.JaceCalculator`.)

Frequencies follow ASE's conventions (``ase.vibrations.VibrationsData``, which these functions return):
energies ħω in eV and frequencies in cm⁻¹, both complex, with imaginary values for unstable modes;
masses are ``atoms.get_masses()`` (amu).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jace.interfaces.ase_calculator import (
    DEFAULT_MIN_DISTANCE,
    StructureError,
    atoms_to_graph,
    describe_atoms,
    load_potential,
    pad_to_capacity,
)
from jace.models.potential import total_energies

__all__ = ["hessian", "hessian_of_graph", "vibrations", "gamma_phonons"]

DEFAULT_BATCH_SIZE = 96  # Hessian columns (Hessian-vector products) evaluated together


def hessian_of_graph(site_energy_fn, params, graph, n_atoms: int, batch_size: int | None = None) -> jnp.ndarray:
    """[3 n_atoms, 3 n_atoms] Hessian (eV/Å²) of the total energy of a one-structure graph.

    The variables are the positions of the first ``n_atoms`` nodes (the real atoms; padding nodes
    and edge shifts stay fixed). Row/column index 3 a + α is atom a, Cartesian component α.

    Args:
      site_energy_fn: the model's ``site_energy_fn(params, graph) -> [n_nodes]`` eV.
      params: its parameters.
      graph: one structure, possibly padded (positions [n_nodes, 3] Å).
      n_atoms: number of real atoms (static).
      batch_size: Hessian columns computed together (static); None computes all at once.
    """
    positions = graph.nodes["positions"]
    x0 = positions[:n_atoms].reshape(-1)
    rest = positions[n_atoms:]

    def energy(x):
        pos = jnp.concatenate([x.reshape(n_atoms, 3), rest])
        g = graph._replace(nodes={**graph.nodes, "positions": pos})
        return total_energies(site_energy_fn, params, g)[0].sum()

    grad = jax.grad(energy)

    def column(v):
        return jax.jvp(grad, (x0,), (v,))[1]

    basis = jnp.eye(3 * n_atoms, dtype=x0.dtype)
    if batch_size is None or batch_size >= 3 * n_atoms:
        return jax.vmap(column)(basis)
    return jax.lax.map(column, basis, batch_size=batch_size)


_hessian_jit = jax.jit(hessian_of_graph, static_argnames=("site_energy_fn", "n_atoms", "batch_size"))


def _compiled(site_energy_fn):
    try:
        hash(site_energy_fn)
    except TypeError:  # not hashable: compile for this call only
        return jax.jit(functools.partial(hessian_of_graph, site_energy_fn), static_argnames=("n_atoms", "batch_size"))
    return functools.partial(_hessian_jit, site_energy_fn)


def _require_x64():
    if not jax.config.read("jax_enable_x64"):
        raise ValueError(
            "Hessians are computed in float64, which needs 64-bit JAX: call "
            "jax.config.update('jax_enable_x64', True) at the start of the script"
        )


def hessian(
    potential_or_model,
    atoms,
    *,
    min_distance: float = DEFAULT_MIN_DISTANCE,
    batch_size: int | None = DEFAULT_BATCH_SIZE,
    symmetrize: bool = True,
) -> np.ndarray:
    """[3N, 3N] Hessian ∂²E/∂r_{aα}∂r_{bβ} of ``atoms`` in eV/Å², float64 (index 3 a + α).

    Args:
      potential_or_model: a ``Potential``, a model object or a model file path.
      atoms: ``ase.Atoms`` (molecule or periodic cell).
      min_distance: Å; closer pairs raise ``StructureError`` (as in the calculator).
      batch_size: Hessian-vector products evaluated together (memory ∝ batch_size); None: all at once.
      symmetrize: return (H + Hᵀ)/2 (the raw result is symmetric to rounding error).
    """
    _require_x64()
    pot = load_potential(potential_or_model).with_dtype(np.float64)
    graph = atoms_to_graph(atoms, pot.cutoff, pot.species, min_distance)
    n_atoms = len(atoms)
    padded = pad_to_capacity(graph, n_atoms + 1, max(int(graph.n_edge[0]), 1), np.float64)
    if batch_size is not None and (int(batch_size) < 1):
        raise ValueError(f"batch_size must be a positive number of Hessian columns or None, got {batch_size!r}")
    if batch_size is not None and int(batch_size) >= 3 * n_atoms:
        batch_size = None  # all columns at once: one compiled function for every large-enough batch_size
    fn = _compiled(pot.site_energy_fn)
    h = np.asarray(jax.device_get(fn(pot.params, padded, n_atoms, None if batch_size is None else int(batch_size))))
    if not np.all(np.isfinite(h)):
        raise FloatingPointError(f"{describe_atoms(atoms)}: the model gave a non-finite Hessian")
    return 0.5 * (h + h.T) if symmetrize else h


def vibrations(potential_or_model, atoms, **kwargs):
    """Harmonic normal modes as ``ase.vibrations.VibrationsData`` (masses from ``atoms.get_masses()``).

    ``.get_energies()`` gives ħω in eV and ``.get_frequencies()`` cm⁻¹ (complex; imaginary for
    unstable modes), as ``ase.vibrations.Vibrations`` would from finite differences. For a molecule,
    six (five if linear) modes are ≈ 0 (translations, rotations). For a periodic cell these are the
    Γ-point phonons (see :func:`gamma_phonons`). Keyword arguments go to :func:`hessian`.
    """
    from ase.vibrations import VibrationsData

    h = hessian(potential_or_model, atoms, **kwargs)
    bare = atoms.copy()
    bare.calc = None
    return VibrationsData.from_2d(bare, h)


def gamma_phonons(potential_or_model, atoms, **kwargs):
    """Phonons at q = 0 of a periodic cell as ``ase.vibrations.VibrationsData``.

    The mass-weighted Hessian of the cell (images moving with their atoms) is the dynamical matrix at
    Γ; three modes (uniform translations, the acoustic modes) are ≈ 0. Energies in eV, frequencies in
    cm⁻¹ (complex). Keyword arguments go to :func:`hessian`.
    """
    if not np.any(atoms.pbc):
        raise StructureError(
            f"{describe_atoms(atoms)}: Γ-point phonons need periodic boundary conditions (pbc={atoms.pbc.tolist()}); "
            f"use vibrations() for a molecule"
        )
    return vibrations(potential_or_model, atoms, **kwargs)
