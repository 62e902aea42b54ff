"""``TrainSettings``: everything that controls a training run, as one frozen dataclass."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

import numpy as np

from jace.training.loss import LOSS_KINDS, LossWeights
from jace.training.optim import DEFAULT_WEIGHT_DECAY_PATTERNS, OPTIMIZERS, SCHEDULES, StageTwo

__all__ = ["TrainSettings", "config_type_multipliers"]


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """Everything that controls a training run (one default; see ``tests/test_training.py`` for a tiny one).

    Data and evaluation:
      max_epochs: passes over the training set.
      batch_size, valid_batch_size: configurations per batch.
      eval_every, eval_unit: validate every ``eval_every`` "epoch"s or "step"s (and at the end).
      n_buckets: static batch shapes per set (compilations of the train step, at most).
      seed: parameter initialisation and data order.
      dtype: "float64" (needs ``jax_enable_x64``) or "float32"; parameters and graphs are cast to it.
      data_parallel: use every device in ``jax.devices()``: a step takes one batch per device, all of
        one bucket, sharded over the devices (``jace.training.parallel``); with one device it changes
        nothing.
    Optimiser (``jace.training.optim``):
      optimizer: "adam", "amsgrad" or "adamw"; lr, b1, b2, eps.
      schedule: "constant", "exponential" (decay_rate per decay_steps), "cosine" (to
        lr · final_lr_factor at the last step) or "plateau" (factor plateau_factor after
        plateau_patience evaluations without relative improvement plateau_threshold, never below
        plateau_min_factor); warmup_steps of linear warm-up for all.
      weight_decay, weight_decay_patterns: λ_wd and the regexes of the decayed parameter paths.
      clip_norm: global gradient-norm clipping (None: off).
      ema_decay: EMA of parameters used for evaluation (None: evaluate the raw parameters).
    Loss (``jace.training.loss``):
      loss: "squared" or "huber" (huber_delta δ).
      energy_weight, forces_weight, stress_weight, virial_weight: λ of the four terms.
      config_type_weights: {config_type: w} or {config_type: {"energy": w, "forces": w, "stress": w}},
        multipliers of the per-configuration weights.
      stage_two: a ``StageTwo`` (new loss weights and lr from a fraction of the epochs on), or None.
    Stopping:
      patience: stop after this many evaluations without a better validation loss (None: never);
        when a stage two is pending, it starts instead.
      max_minutes: a wall-clock budget for the training loop (steps, evaluations and the first
        compilation; graph building before it is not counted), carried over by ``--resume``.
        Training stops after the first step past it, with an evaluation and a checkpoint. A pending
        stage two starts at the first epoch boundary past ``stage_two.start_fraction`` of the budget
        if that comes before its epoch. None: no limit but ``max_epochs``.
      plots: write PNG plots at the end.
    """

    max_epochs: int = 100
    batch_size: int = 8
    valid_batch_size: int = 16
    eval_every: int = 1
    eval_unit: str = "epoch"
    optimizer: str = "adam"
    lr: float = 1e-2
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    schedule: str = "constant"
    warmup_steps: int = 0
    decay_rate: float = 0.1
    decay_steps: int = 1000
    final_lr_factor: float = 0.01
    plateau_factor: float = 0.8
    plateau_patience: int = 5
    plateau_threshold: float = 1e-4
    plateau_min_factor: float = 1e-3
    weight_decay: float = 0.0
    weight_decay_patterns: tuple[str, ...] = DEFAULT_WEIGHT_DECAY_PATTERNS
    clip_norm: Optional[float] = 10.0
    ema_decay: Optional[float] = 0.99
    loss: str = "squared"
    huber_delta: float = 0.01
    energy_weight: float = 1.0
    forces_weight: float = 100.0
    stress_weight: float = 0.0
    virial_weight: float = 0.0
    config_type_weights: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    stage_two: Optional[StageTwo] = None
    patience: Optional[int] = None
    max_minutes: Optional[float] = None
    seed: int = 0
    n_buckets: int = 4
    dtype: str = "float64"
    data_parallel: bool = False
    plots: bool = True

    def __post_init__(self):
        def positive_int(name):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")

        for name in ("max_epochs", "batch_size", "valid_batch_size", "eval_every", "n_buckets", "decay_steps"):
            positive_int(name)
        if self.eval_unit not in ("epoch", "step"):
            raise ValueError(f"eval_unit must be 'epoch' or 'step', got {self.eval_unit!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.loss not in LOSS_KINDS:
            raise ValueError(f"loss must be one of {LOSS_KINDS}, got {self.loss!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) or None, got {self.ema_decay!r}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be >= 1 or None, got {self.patience!r}")
        if self.max_minutes is not None and not (np.isfinite(self.max_minutes) and self.max_minutes > 0):
            raise ValueError(f"max_minutes must be a positive number of minutes or None, got {self.max_minutes!r}")
        for name in ("energy_weight", "forces_weight", "stress_weight", "virial_weight", "weight_decay"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if isinstance(self.weight_decay_patterns, str):
            object.__setattr__(self, "weight_decay_patterns", (self.weight_decay_patterns,))
        for ct in self.config_type_weights:
            config_type_multipliers(self.config_type_weights, ct)  # validates

    @property
    def np_dtype(self):
        return np.dtype(self.dtype)

    def loss_weights(self, stage_two: bool = False) -> LossWeights:
        base = LossWeights(self.energy_weight, self.forces_weight, self.stress_weight, self.virial_weight)
        return self.stage_two.weights(base) if (stage_two and self.stage_two is not None) else base

    def max_loss_weights(self) -> LossWeights:
        """The largest λ of each term over both stages (what the labels must support)."""
        a, b = self.loss_weights(False), self.loss_weights(True)
        return LossWeights(*(max(x, y) for x, y in zip(a, b)))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["config_type_weights"] = {
            k: (dict(v) if isinstance(v, Mapping) else v) for k, v in self.config_type_weights.items()
        }
        d["weight_decay_patterns"] = list(self.weight_decay_patterns)
        return d


def config_type_multipliers(spec: Mapping[str, Any], config_type: str) -> tuple[float, float, float]:
    """(energy, forces, stress) multipliers of a config_type from ``config_type_weights`` (1 if absent)."""
    v = spec.get(config_type, 1.0)
    if isinstance(v, Mapping):
        unknown = set(v) - {"energy", "forces", "stress"}
        if unknown:
            raise ValueError(
                f"config_type_weights[{config_type!r}] has unknown key(s) {sorted(unknown)}; "
                "use 'energy', 'forces', 'stress'"
            )
        out = (float(v.get("energy", 1.0)), float(v.get("forces", 1.0)), float(v.get("stress", 1.0)))
    else:
        try:
            w = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"config_type_weights[{config_type!r}] must be a number or a mapping, got {v!r}") from None
        out = (w, w, w)
    if not all(np.isfinite(x) and x >= 0 for x in out):
        raise ValueError(f"config_type_weights[{config_type!r}] must be finite and >= 0, got {v!r}")
    return out
