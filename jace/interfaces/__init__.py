"""Interfaces from jace models to other codes and to derived physics.

Each submodule is imported on its own (nothing is imported eagerly here, so optional dependencies
stay optional):

  * ``jace.interfaces.ase_calculator``: ``JaceCalculator``, an ASE calculator for any jace model or
    model file (energy, free_energy, forces, stress, per-atom energies), compiled once per padded
    capacity; ``atoms_to_graph`` and ``StructureError`` (clear errors for bad structures).
  * ``jace.interfaces.hessian``: ``hessian`` (∂²E/∂r², eV/Å²), ``vibrations`` (normal modes of a
    molecule, ASE ``VibrationsData``) and ``gamma_phonons`` (phonons of a periodic cell at q = 0).
  * ``jace.interfaces.jax_md``: energy and displacement functions for JAX-MD (optional extra ``md``).
  * ``jace.interfaces.differentiable``: end-to-end differentiable simulation helpers.
"""
