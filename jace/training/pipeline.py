"""A training config end to end: data → E0 → statistics → model → training → metrics.

``jace train`` (for the neural model types) and ``jace ablate`` both go through here:

  read_datasets        the train / validation / isolated-atom / test sets of a ``TrainConfig``
  build_multi_ace      E0 (``jace.data.e0.resolve_e0``), graphs, ``dataset_statistics`` and the
                       untrained ``MultiACEModel`` (avg_num_neighbors "auto" → from the statistics;
                       scale and shift for normalisation "scale_shift")
  train_multi_ace      ``jace.training.train`` into a run directory; returns the model with the EMA
                       parameters of the best validation evaluation
  evaluate_sets        metrics (``jace.training.metrics``) of a model on named sets

JAX's precision must be set (``jace.cli.set_precision``) before any of these makes an array.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from jace.data.configuration import Configuration

__all__ = [
    "Datasets",
    "read_datasets",
    "split_validation",
    "check_elements",
    "set_metrics",
    "evaluate_model",
    "evaluate_sets",
    "build_multi_ace",
    "train_multi_ace",
    "has_checkpoint",
]


@dataclasses.dataclass
class Datasets:
    """The configurations of one config: ``train`` (isolated atoms taken out), ``validation``,
    ``isolated`` (for E0 only) and ``tests`` ({name: configurations})."""

    train: list
    validation: list
    isolated: list
    tests: dict

    def summary(self) -> str:
        return (
            f"{len(self.train)} training, {len(self.validation)} validation, {len(self.isolated)} isolated-atom "
            "configurations" + "".join(f", {len(cs)} in test set {name!r}" for name, cs in self.tests.items())
        )


def split_validation(configs: list, fraction: float, seed: int) -> tuple[list, list]:
    """(train, validation): a random ``fraction`` of ``configs`` held out, reproducibly from ``seed``."""
    if fraction <= 0 or not configs:
        return configs, []
    n = len(configs)
    if n < 2:
        raise ValueError(f"cannot hold out a validation fraction of {fraction} from {n} training configuration(s)")
    n_val = min(max(int(round(fraction * n)), 1), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    val_idx = set(order[:n_val].tolist())
    train = [c for i, c in enumerate(configs) if i not in val_idx]
    val = [c for i, c in enumerate(configs) if i in val_idx]
    return train, val


def check_elements(configs: Sequence[Configuration], elements: Sequence[str], what: str) -> None:
    """Fail early, naming the file, when data contains an element the model does not know."""
    from ase.data import atomic_numbers, chemical_symbols

    known = {atomic_numbers[s] for s in elements}
    for c in configs:
        for z in set(int(v) for v in c.numbers):
            if z not in known:
                sym = chemical_symbols[z] if 0 < z < len(chemical_symbols) else f"Z={z}"
                raise ValueError(
                    f"{c.source}: {what} contains element {sym}, which model.elements ({', '.join(elements)}) does not list"
                )


def read_datasets(cfg, tests: Optional[Mapping[str, str]] = None) -> Datasets:
    """Read the data a ``TrainConfig`` names. ``tests``: {name: path} to use instead of ``cfg.data.test``.

    Isolated-atom configurations of the training file (and the ``isolated_atoms`` file) only set E0;
    the validation set is ``data.validation`` or a seeded ``validation_fraction`` of the training set.
    Every configuration needs an energy; elements outside ``model.elements`` are an error naming the file.
    """
    from jace.data import io as dio

    keys = cfg.data.keys
    train_all = dio.read_configurations(cfg.data.train, keys, require=("energy",))
    isolated, train = dio.split_isolated_atoms(train_all)
    isolated, train = list(isolated), list(train)
    if cfg.data.isolated_atoms is not None:
        isolated = list(dio.read_configurations(cfg.data.isolated_atoms, keys, require=("energy",))) + isolated
    if cfg.data.validation is not None:
        validation = list(dio.read_configurations(cfg.data.validation, keys, require=("energy",)))
    else:
        train, validation = split_validation(train, cfg.data.validation_fraction, cfg.seed)
    test_paths = dict(cfg.data.test) if tests is None else dict(tests)
    test_sets = {name: list(dio.read_configurations(p, keys, require=("energy",))) for name, p in test_paths.items()}
    if not train:
        raise ValueError(f"{cfg.data.train}: no training configurations (other than isolated atoms)")
    elements = tuple(getattr(cfg.model, "elements", ()))
    if elements:
        # isolated atoms of other elements are harmless (a shared isolated_atoms file): leave them out
        from ase.data import atomic_numbers

        known = {atomic_numbers[s] for s in elements}
        isolated = [c for c in isolated if set(int(z) for z in c.numbers) <= known]
        check_elements(train, elements, "the training data")
        check_elements(validation, elements, "the validation data")
        for name, cs in test_sets.items():
            check_elements(cs, elements, f"test set {name!r}")
    return Datasets(train=train, validation=validation, isolated=isolated, tests=test_sets)


# --------------------------------------------------------------------------------------------------
# Evaluation


def set_metrics(configs, predictions) -> dict:
    """``compute_metrics`` of (energies, forces, stresses), plus ``by_config_type`` when there are several."""
    from jace.training.metrics import compute_metrics, metrics_by_config_type

    energies, forces, stresses = predictions
    out = compute_metrics(configs, energies, forces, stresses)
    if len({c.config_type for c in configs}) > 1:
        out["by_config_type"] = metrics_by_config_type(configs, energies, forces, stresses)
    return out


def evaluate_model(model, configs, batch_size: int = 16):
    """(energies, forces, stresses) per configuration, for a linear ACE or multi-ACE model."""
    model_type = getattr(model, "model_type", None)
    if model_type == "linear_ace":
        from jace.models.linear_ace import evaluate

        return evaluate(model, configs, batch_size=batch_size)
    if model_type in ("multi_ace", "grace"):
        from jace.models.multi_ace import evaluate  # any model with predict_graph

        return evaluate(model, configs, batch_size=batch_size)
    if hasattr(model, "evaluate"):
        return model.evaluate(configs, batch_size=batch_size)
    raise ValueError(f"do not know how to evaluate a model of type {model_type!r}")


def evaluate_sets(model, sets: Mapping[str, Sequence[Configuration]], batch_size: int = 16) -> dict:
    """{name: set_metrics(...)} for every non-empty set (a multi-ACE model pads every set to one
    bucket: one compilation for all of them)."""
    sets = {name: list(cs) for name, cs in sets.items() if cs}
    if getattr(model, "model_type", None) in ("multi_ace", "grace"):
        from jace.models.multi_ace import evaluate_many  # any model with predict_graph

        preds = evaluate_many(model, sets, batch_size)
        return {name: set_metrics(cs, preds[name]) for name, cs in sets.items()}
    return {name: set_metrics(cs, evaluate_model(model, cs, batch_size)) for name, cs in sets.items()}


# --------------------------------------------------------------------------------------------------
# Multi-ACE: model and training


def _neural_model_class(spec):
    """The model class of a neural spec: ``GraceModel`` for a ``GraceSpec``, else ``MultiACEModel``."""
    from jace.models.grace import GraceModel, GraceSpec
    from jace.models.multi_ace import MultiACEModel

    return GraceModel if isinstance(spec, GraceSpec) else MultiACEModel


def build_multi_ace(cfg, data: Datasets):
    """(untrained model, DatasetStatistics) for a neural ``TrainConfig`` and its data: a
    ``MultiACEModel``, or a ``GraceModel`` for the graph-ACE types."""
    from jace.data.e0 import resolve_e0
    from jace.data.graph import SpeciesMap, graphs_from_configurations
    from jace.training.statistics import dataset_statistics

    spec = cfg.model
    species = SpeciesMap.from_symbols(spec.elements)
    e0 = resolve_e0(cfg.training.e0, species, data.train, data.isolated)
    graphs = graphs_from_configurations(data.train, spec.cutoff, species)
    stats = dataset_statistics(data.train, graphs, species, e0)
    if spec.avg_num_neighbors == "auto" and not stats.avg_num_neighbors > 0:
        raise ValueError(
            f"{cfg.data.train}: no atom of the training set has a neighbour within the cutoff "
            f"({spec.cutoff} Å), so avg_num_neighbors cannot be 'auto'; check model.cutoff"
        )
    model = _neural_model_class(spec)(
        spec, e0=e0, scale=stats.scale, shift=stats.shift, avg_num_neighbors=stats.avg_num_neighbors,
        metadata={"model_type": cfg.model_type},
    )
    return model, stats


def has_checkpoint(out_dir) -> bool:
    """Whether ``out_dir`` holds a training run that ``resume`` would continue."""
    return os.path.exists(os.path.join(os.fspath(out_dir), "checkpoints", "last.ckpt"))


def train_multi_ace(
    cfg,
    data: Datasets,
    out_dir,
    resume: bool = False,
    progress: bool = False,
    callback: Optional[Callable[[dict], Optional[bool]]] = None,
    settings=None,
    log: Callable[[str], None] = print,
):
    """Train the neural model of ``cfg`` on ``data`` into ``out_dir``.

    settings: the TrainSettings to use (default ``cfg.training.settings``).
    Returns (trained MultiACEModel with the best EMA parameters, TrainResult, info dict).
    Raises DataError for missing labels (before anything is compiled) and TrainingError on divergence.
    """
    from jace.training.batching import check_labels
    from jace.training.loop import train

    settings = cfg.training.settings if settings is None else settings
    check_labels(data.train, settings, "training")
    model, stats = build_multi_ace(cfg, data)
    symbols = tuple(cfg.model.elements)
    log(
        f"model: {cfg.model_type}; E0 " + ", ".join(f"{s} {e:.6g}" for s, e in zip(symbols, stats.e0)) + " eV; "
        f"shift {model.shift:.4g} eV/atom, scale {model.scale:.4g}, avg_num_neighbors {model.avg_num_neighbors:.4g}"
    )
    t0 = time.perf_counter()
    result = train(model, data.train, data.validation, settings, out_dir, resume=resume, progress=progress,
                   callback=callback)
    seconds = time.perf_counter() - t0
    trained = model.with_params(result.params)
    info = {
        "model_type": cfg.model_type,
        "n_params": trained.n_params(),
        "epochs": int(result.epoch),
        "steps": int(result.step),
        "best_step": int(result.best_step),
        "best_valid_loss": float(result.best_valid_loss),
        "stop_reason": result.stop_reason,
        "train_seconds": seconds,
        "e0": {s: float(e) for s, e in zip(symbols, stats.e0)},
        "shift": float(model.shift),
        "scale": float(model.scale),
        "avg_num_neighbors": float(model.avg_num_neighbors),
        "compilations": dict(result.compilations),
    }
    trained.metadata.update({k: info[k] for k in ("model_type", "epochs", "steps", "best_step", "stop_reason")})
    return trained, result, info
