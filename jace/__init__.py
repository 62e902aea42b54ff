"""jace: JAX machine-learning interatomic potentials (ACE, multi-ACE, graph ACE).

The public API, importable from the top level (loaded lazily, so ``import jace`` stays cheap):

  Data:     Configuration, read_configurations, write_configurations, make_emt_splits, SpeciesMap,
            graphs_from_configurations, iterate_batches
  Design:   LinearACESpec, RadialSpec, FitSpec, DataKeys
  Models:   fit_linear_ace, evaluate, LinearACEModel, predict (site energies → energy, forces, stress),
            Potential, as_potential (any model or model file as pure functions + parameters)
  GRACE:    GraceSpec, GraceModel, grace_preset (graph ACE: grace-1l, grace-2l, fs-ace)
  Files:    save_model, load_model
  Metrics:  compute_metrics
  ASE:      JaceCalculator (ASE calculator), hessian, vibrations, gamma_phonons (second derivatives)
  JAX-MD:   jax_md_system (a structure + model on JAX-MD's spaces and neighbour lists),
            observable_loss_and_grad (differentiable simulation); need the ``md`` extra
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Configuration": "jace.data.configuration",
    "read_configurations": "jace.data.io",
    "write_configurations": "jace.data.io",
    "make_emt_splits": "jace.data.synthetic",
    "SpeciesMap": "jace.data.graph",
    "graphs_from_configurations": "jace.data.graph",
    "iterate_batches": "jace.data.graph",
    "LinearACESpec": "jace.models.design",
    "RadialSpec": "jace.models.design",
    "FitSpec": "jace.models.design",
    "DataKeys": "jace.models.design",
    "fit_linear_ace": "jace.models.linear_ace",
    "evaluate": "jace.models.linear_ace",
    "LinearACEModel": "jace.models.linear_ace",
    "predict": "jace.models.potential",
    "Potential": "jace.models.potential",
    "as_potential": "jace.models.potential",
    "GraceSpec": "jace.models.grace",
    "GraceModel": "jace.models.grace",
    "grace_preset": "jace.models.grace",
    "save_model": "jace.models.io",
    "load_model": "jace.models.io",
    "compute_metrics": "jace.training.metrics",
    "JaceCalculator": "jace.interfaces.ase_calculator",
    "hessian": "jace.interfaces.hessian",
    "vibrations": "jace.interfaces.hessian",
    "gamma_phonons": "jace.interfaces.hessian",
    "jax_md_system": "jace.interfaces.jax_md",
    "observable_loss_and_grad": "jace.interfaces.differentiable",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'jace' has no attribute {name!r}")


def __dir__():
    return __all__
