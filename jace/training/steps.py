"""The jitted train and eval steps, their per-model cache, and ``evaluate``.

``make_train_step`` returns ``(state, batch, loss_weights [4], lr) -> (state, out)``: loss and
gradients (``jace.training.loss.batch_loss``), the optax update with the learning rate injected into
the optimiser state, and the EMA of the parameters. Loss weights and learning rate are arguments, so
stage two or a new learning rate never recompiles. ``make_eval_step`` returns the predictions and the
loss terms of a padded batch.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jace.data.configuration import Configuration
from jace.models.potential import predict
from jace.training.batching import build_graphs, fixed_batches
from jace.training.loss import LossWeights, batch_loss, loss_terms
from jace.training.metrics import compute_metrics
from jace.training.optim import ema_decay_at, ema_update, make_optimizer, set_learning_rate
from jace.training.settings import TrainSettings

__all__ = ["TrainState", "make_train_step", "make_eval_step", "cast_params", "compiled_steps", "evaluate"]


class TrainState(NamedTuple):
    """The device-side state of a run: params, their EMA, the optax state and the step (int32)."""

    params: Any
    ema_params: Any
    opt_state: Any
    step: jnp.ndarray


def cast_params(params, dtype):
    """Floating-point leaves of a parameter pytree cast to ``dtype``."""
    def cast(x):
        x = jnp.asarray(x)
        return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x

    return jax.tree.map(cast, params)


def make_train_step(site_energy_fn, optimizer: optax.GradientTransformation, settings: TrainSettings,
                    compute_stress: bool, counter: Optional[dict] = None) -> Callable:
    """The (un-jitted) train step ``(state, batch, loss_weights [4], lr) -> (state, {"loss", "grad_norm"})``.

    ``batch`` is one padded batch or D stacked ones (see ``batch_loss``). When ``counter`` is given,
    ``counter["train_step"]`` counts traces (one per compilation under ``jax.jit``).
    """
    kind, delta, ema = settings.loss, settings.huber_delta, settings.ema_decay

    def train_step(state: TrainState, batch, loss_weights, lr):
        if counter is not None:
            counter["train_step"] = counter.get("train_step", 0) + 1

        def objective(p):
            return batch_loss(site_energy_fn, p, batch, loss_weights, kind, delta, compute_stress)

        (loss, terms), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        opt_state = set_learning_rate(state.opt_state, lr)
        updates, opt_state = optimizer.update(grads, opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema_params = params if ema is None else ema_update(state.ema_params, params, ema_decay_at(state.step, ema))
        new = TrainState(params, ema_params, opt_state, state.step + 1)
        return new, {"loss": loss, "grad_norm": _global_norm(grads), "terms": terms}

    return train_step


def _global_norm(tree) -> jnp.ndarray:
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


def make_eval_step(
    site_energy_fn, settings: TrainSettings, compute_stress: bool, counter: Optional[dict] = None
) -> Callable:
    """``(params, batch) -> (energy [n_graphs], forces [n_nodes, 3], stress [n_graphs, 3, 3], LossTerms)``."""
    kind, delta = settings.loss, settings.huber_delta

    def eval_step(params, batch):
        if counter is not None:
            counter["eval_step"] = counter.get("eval_step", 0) + 1
        pred = predict(site_energy_fn, params, batch, compute_stress)
        return pred.energy, pred.forces, pred.stress, loss_terms(pred, batch, kind, delta)

    return eval_step


# Jitted steps are cached on the model object (in its __dict__, so they go when it goes), per the
# settings they depend on, so that several runs in one process (a resume, a second stage, a test
# suite) compile each batch shape once. The learning rate and loss weights are arguments, not keys.
_CACHE_ATTR = "_jace_train_step_cache"


def compiled_steps(model, s: TrainSettings, train_stress: bool, valid_stress: bool, mesh=None):
    """(optimizer, jitted train step, jitted eval step, jitted init, trace counter) for a model; with a
    mesh, the train step is the data-parallel one of ``jace.training.parallel``."""
    key = (s.loss, s.huber_delta, s.ema_decay, s.optimizer, s.b1, s.b2, s.eps, s.weight_decay,
           tuple(s.weight_decay_patterns), s.clip_norm, s.dtype, train_stress, valid_stress,
           None if mesh is None else (tuple(d.id for d in mesh.devices.flat), mesh.axis_names))

    def build():
        counter: dict = {"train_step": 0, "eval_step": 0}
        optimizer = make_optimizer(
            s.optimizer, learning_rate=s.lr, b1=s.b1, b2=s.b2, eps=s.eps, weight_decay=s.weight_decay,
            weight_decay_patterns=s.weight_decay_patterns, clip_norm=s.clip_norm, dtype=np.dtype(s.dtype),
        )
        if mesh is not None:
            from jace.training.parallel import make_parallel_train_step

            train_jit = make_parallel_train_step(model.site_energies, optimizer, s, mesh, train_stress, counter)
        else:
            donate = (0,) if jax.default_backend() != "cpu" else ()
            train_jit = jax.jit(make_train_step(model.site_energies, optimizer, s, train_stress, counter),
                                donate_argnums=donate)
        eval_jit = jax.jit(make_eval_step(model.site_energies, s, valid_stress, counter))
        return optimizer, train_jit, eval_jit, jax.jit(model.init), counter

    try:
        per_model = vars(model).setdefault(_CACHE_ATTR, {})
    except TypeError:  # a model without a __dict__ (slots): no cache
        return build()
    if key not in per_model:
        per_model[key] = build()
    return per_model[key]


def stress_flags(s: TrainSettings, eval_configs: Sequence[Configuration]) -> tuple[bool, bool]:
    """(the train step needs stress, the eval step needs stress)."""
    lam = s.max_loss_weights()
    train_stress = lam.stress > 0 or lam.virial > 0
    return train_stress, train_stress or any(c.stress is not None for c in eval_configs)


def run_eval(eval_step, batches, configs, weights: LossWeights, with_stress: bool):
    """(loss, metrics, energies, forces, stresses) of one parameter set over padded batches."""
    n = len(configs)
    energies: list = [None] * n
    forces: list = [None] * n
    stresses: list = [None] * n
    sums = counts = 0.0
    for batch, idx in batches:
        e, f, st, t = eval_step(batch)
        e, f, st, t = jax.device_get((e, f, st, t))
        sums, counts = sums + np.asarray(t.sums, np.float64), counts + np.asarray(t.counts, np.float64)
        start = 0
        for slot, k in enumerate(idx):
            na = configs[k].n_atoms
            energies[k] = float(e[slot])
            forces[k] = np.asarray(f[start : start + na], dtype=np.float64)
            stresses[k] = np.asarray(st[slot], dtype=np.float64) if with_stress else None
            start += na
    loss = float(np.sum(weights.as_array(np.float64) * sums / np.maximum(counts, 1.0)))
    metrics = compute_metrics(configs, energies, forces, stresses if with_stress else None)
    return loss, metrics, energies, forces, stresses


def evaluate(model, params, configs: Sequence[Configuration], settings: TrainSettings, stage_two: bool = False):
    """(loss, metrics) of ``params`` on ``configs``, with the loss weights of stage one or two.

    The same computation as the trainer's validation (batches of ``valid_batch_size`` in the given
    order, the same jitted step, reused from the trainer when model and settings match); the loss is
    normalised over the whole set (see ``jace.training.loss``); metrics as ``compute_metrics``.
    """
    configs = list(configs)
    dtype = settings.np_dtype
    graphs = build_graphs(configs, model, settings)
    _, batches = fixed_batches(graphs, settings.valid_batch_size, settings.n_buckets, dtype)
    train_stress, valid_stress = stress_flags(settings, configs)
    eval_step = compiled_steps(model, settings, train_stress, valid_stress)[2]
    params = cast_params(params, dtype)
    loss, metrics, *_ = run_eval(
        lambda b: eval_step(params, b), batches, configs, settings.loss_weights(stage_two), valid_stress
    )
    return loss, metrics
