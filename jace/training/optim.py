"""Optimisers, learning-rate schedules, reduce-on-plateau, EMA of parameters and the stage-two switch.

The optimiser is an ``optax`` chain wrapped in ``optax.inject_hyperparams``, so the learning rate lives
in the optimiser state as an array: the trainer computes the rate of every step on the host
(schedule × plateau factor, or the stage-two rate) and writes it with :func:`set_learning_rate` inside
the jitted step. Changing the rate therefore never recompiles, and it is checkpointed with the state.

  adam / amsgrad:  clip → [L2: g + λ_wd θ on matched params] → Adam (AMSGrad) → -lr
  adamw:           clip → AdamW direction → + λ_wd θ on matched params (decoupled) → -lr

Weight decay only touches parameters whose path (keys joined by "/", e.g.
``params/Dense_0/kernel``) matches one of the regular expressions in ``weight_decay_patterns``
(``re.search``), through an optax mask.

Schedules (``make_schedule``), with an optional linear warm-up from 0 over ``warmup_steps``:
  constant     lr
  exponential  lr · decay_rate^((t - warmup) / decay_steps)
  cosine       cosine from lr to lr · final_factor at ``total_steps``
  plateau      lr, multiplied by the host-side :class:`PlateauState` factor, which falls by
               ``factor`` when the validation loss has not improved (relatively, by ``threshold``) for
               ``patience`` evaluations.

EMA of parameters: θ̄ ← d_t θ̄ + (1 - d_t) θ with d_t = min(d, (1 + t) / (10 + t)) (a warm-up so the
average does not remember the random initialisation for long); evaluation uses θ̄.

Stage two (as in MACE): from epoch ``floor(start_fraction · max_epochs)`` on, the loss weights change
(typically much larger energy weight) and the learning rate becomes the constant ``lr`` of
:class:`StageTwo`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jace.training.loss import LossWeights

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "param_path",
    "weight_decay_mask",
    "make_optimizer",
    "set_learning_rate",
    "get_learning_rate",
    "make_schedule",
    "PlateauState",
    "plateau_update",
    "ema_decay_at",
    "ema_update",
    "StageTwo",
]

OPTIMIZERS = ("adam", "amsgrad", "adamw")
# Decayed by default (as MACE decays its interaction and product weights): the multi-ACE layer's
# linear maps and product weights, and Flax Dense kernels of other models.
DEFAULT_WEIGHT_DECAY_PATTERNS = ("linear_up", "linear_A", "linear_update", "self_connection", "product", "kernel")
SCHEDULES = ("constant", "exponential", "cosine", "plateau")


def param_path(keypath) -> str:
    """A jax key path as "a/b/c" (dict keys, attribute names and sequence indices)."""
    parts = []
    for k in keypath:
        if isinstance(k, jax.tree_util.DictKey):
            parts.append(str(k.key))
        elif isinstance(k, jax.tree_util.GetAttrKey):
            parts.append(str(k.name))
        elif isinstance(k, jax.tree_util.SequenceKey):
            parts.append(str(k.idx))
        else:
            parts.append(str(k))
    return "/".join(parts)


def weight_decay_mask(params, patterns: Sequence[str]):
    """A pytree of bools like ``params``: True where the parameter's path matches a pattern."""
    compiled = [re.compile(p) for p in patterns]
    return jax.tree_util.tree_map_with_path(
        lambda path, _: any(c.search(param_path(path)) for c in compiled), params
    )


def checked_weight_decay_mask(params, patterns: Sequence[str]):
    """``weight_decay_mask`` that refuses a mask selecting nothing: weight decay that silently decays
    no parameter is a configuration mistake (a pattern that does not fit the model's names)."""
    mask = weight_decay_mask(params, patterns)
    if not any(jax.tree_util.tree_leaves(mask)):
        paths = sorted({param_path(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)})
        shown = ", ".join(paths[:8]) + (", ..." if len(paths) > 8 else "")
        raise ValueError(
            f"training.weight_decay_patterns {list(patterns)} match no parameter of this model, so the weight "
            f"decay would do nothing; parameter paths look like: {shown}"
        )
    return mask


def make_optimizer(
    name: str = "adam",
    *,
    learning_rate: float = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    weight_decay_patterns: Sequence[str] = DEFAULT_WEIGHT_DECAY_PATTERNS,
    clip_norm: Optional[float] = None,
    dtype=jnp.float64,
) -> optax.GradientTransformation:
    """The optax chain (see the module docstring), with the learning rate injected as state.

    Args:
      name: "adam", "amsgrad" or "adamw".
      learning_rate: initial rate (the trainer overwrites it every step).
      b1, b2, eps: Adam moments and denominator offset.
      weight_decay: λ_wd; coupled L2 for adam/amsgrad, decoupled for adamw; 0 disables it.
      weight_decay_patterns: regular expressions selecting the decayed parameters by path.
      clip_norm: clip the gradient to this global norm (None: no clipping).
      dtype: dtype of the injected learning rate (the parameters' dtype, so updates keep it).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    if clip_norm is not None and not clip_norm > 0:
        raise ValueError(f"clip_norm must be positive or None, got {clip_norm!r}")
    patterns = tuple(weight_decay_patterns)

    def mask(params):
        return checked_weight_decay_mask(params, patterns)

    def chain(learning_rate):
        parts = []
        if clip_norm is not None:
            parts.append(optax.clip_by_global_norm(clip_norm))
        if weight_decay and name != "adamw":
            parts.append(optax.add_decayed_weights(weight_decay, mask=mask))
        if name == "amsgrad":
            parts.append(optax.scale_by_amsgrad(b1=b1, b2=b2, eps=eps))
        else:
            parts.append(optax.scale_by_adam(b1=b1, b2=b2, eps=eps))
        if weight_decay and name == "adamw":
            parts.append(optax.add_decayed_weights(weight_decay, mask=mask))
        parts.append(optax.scale_by_learning_rate(learning_rate))
        return optax.chain(*parts)

    return optax.inject_hyperparams(chain, hyperparam_dtype=dtype)(learning_rate=learning_rate)


def set_learning_rate(opt_state, lr):
    """A copy of an injected-hyperparameter optimiser state with a new learning rate (jit-safe)."""
    hyper = dict(opt_state.hyperparams)
    hyper["learning_rate"] = jnp.asarray(lr, dtype=hyper["learning_rate"].dtype)
    return opt_state._replace(hyperparams=hyper)


def get_learning_rate(opt_state) -> float:
    return float(opt_state.hyperparams["learning_rate"])


def make_schedule(
    kind: str,
    lr: float,
    total_steps: int,
    warmup_steps: int = 0,
    decay_rate: float = 0.1,
    decay_steps: int = 1000,
    final_factor: float = 0.01,
) -> optax.Schedule:
    """step → learning rate (see the module docstring); "plateau" is constant here, the host scales it."""
    if kind not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {kind!r}")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if kind == "cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0,
            peak_value=lr,
            warmup_steps=warmup_steps,
            decay_steps=max(int(total_steps), warmup_steps + 1),
            end_value=lr * final_factor,
        )
    if kind == "exponential":
        if decay_steps <= 0:
            raise ValueError(f"decay_steps must be positive, got {decay_steps}")
        main = optax.exponential_decay(lr, transition_steps=decay_steps, decay_rate=decay_rate)
    else:
        main = optax.constant_schedule(lr)
    if warmup_steps == 0:
        return main
    warm = optax.linear_schedule(0.0, lr, warmup_steps)
    return optax.join_schedules([warm, main], [warmup_steps])


@dataclasses.dataclass(frozen=True)
class PlateauState:
    """Host-side reduce-on-plateau state: best value so far, evaluations without improvement, the
    current learning-rate factor and the remaining cool-down evaluations."""

    best: float = math.inf
    bad: int = 0
    scale: float = 1.0
    cooldown: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def plateau_update(
    state: PlateauState,
    value: float,
    factor: float = 0.8,
    patience: int = 10,
    threshold: float = 1e-4,
    min_scale: float = 1e-3,
    cooldown: int = 0,
) -> PlateauState:
    """Record a validation loss; multiply the factor by ``factor`` after ``patience`` evaluations that
    did not improve on the best by more than ``threshold`` (relative), never below ``min_scale``."""
    if value < state.best * (1.0 - threshold) or not math.isfinite(state.best):
        return dataclasses.replace(state, best=float(value), bad=0, cooldown=max(state.cooldown - 1, 0))
    if state.cooldown > 0:
        return dataclasses.replace(state, cooldown=state.cooldown - 1)
    bad = state.bad + 1
    if bad >= patience:
        return PlateauState(best=state.best, bad=0, scale=max(state.scale * factor, min_scale), cooldown=cooldown)
    return dataclasses.replace(state, bad=bad)


def ema_decay_at(step, decay: float):
    """d_t = min(d, (1 + t) / (10 + t)); ``step`` t counts updates made before this one."""
    t = jnp.asarray(step).astype(jnp.result_type(float))
    return jnp.minimum(decay, (1.0 + t) / (10.0 + t))


def ema_update(ema_params, params, decay_t):
    """θ̄ ← d θ̄ + (1 - d) θ, leaf by leaf, in each leaf's dtype."""
    return jax.tree.map(lambda e, p: (decay_t * e + (1.0 - decay_t) * p).astype(p.dtype), ema_params, params)


@dataclasses.dataclass(frozen=True)
class StageTwo:
    """The second training stage: new loss weights and a constant learning rate.

    start_fraction: the stage starts at epoch ``floor(start_fraction · max_epochs)`` (0-based), or earlier
      when early stopping would otherwise stop the first stage.
    energy_weight, forces_weight, stress_weight, virial_weight: λ in stage two (None keeps stage one's).
    lr: the constant learning rate of stage two.
    """

    start_fraction: float = 0.75
    energy_weight: Optional[float] = 1000.0
    forces_weight: Optional[float] = 100.0
    stress_weight: Optional[float] = None
    virial_weight: Optional[float] = None
    lr: float = 1e-3

    def __post_init__(self):
        if not 0.0 <= self.start_fraction <= 1.0:
            raise ValueError(f"stage_two.start_fraction must be in [0, 1], got {self.start_fraction!r}")
        if not self.lr > 0:
            raise ValueError(f"stage_two.lr must be positive, got {self.lr!r}")
        for n in ("energy_weight", "forces_weight", "stress_weight", "virial_weight"):
            v = getattr(self, n)
            if v is not None and not (np.isfinite(v) and v >= 0):
                raise ValueError(f"stage_two.{n} must be >= 0 or None, got {v!r}")

    def start_epoch(self, max_epochs: int) -> int:
        return int(math.floor(self.start_fraction * max_epochs + 1e-9))

    def weights(self, base: LossWeights) -> LossWeights:
        pick = lambda v, b: b if v is None else float(v)  # noqa: E731
        return LossWeights(
            pick(self.energy_weight, base.energy),
            pick(self.forces_weight, base.forces),
            pick(self.stress_weight, base.stress),
            pick(self.virial_weight, base.virial),
        )
