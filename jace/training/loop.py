"""The trainer: jitted optax steps over bucket-padded batches, validation, checkpoints, logs and plots.

A trainable model is any object with

  model.init(rng, graph) -> params                 a pytree (Flax-style nested dict)
  model.site_energies(params, graph) -> [n_nodes]  site energies, eV (pure, jit-able, padded graph)
  model.cutoff                                     Å
  model.species                                    a ``SpeciesMap``

``train(model, train_configs, valid_configs, settings, out_dir)`` fits it:

* Graphs are built once on the host (per-``config_type`` weights multiplied into the per-graph
  weights). Batches are padded to a few static shapes (``make_buckets`` over the batch sizes of the
  first epochs' shuffles plus the largest possible batch), chosen once and reused for every epoch and
  on resume, so the jitted train step compiles at most once per bucket.
* Every epoch is shuffled by a NumPy generator seeded with (seed, epoch), so the data order is a
  function of the position in training alone and ``resume=True`` continues exactly: same parameters,
  optimiser state, EMA, step, position in the epoch, RNG key, plateau state and data order.
* The train step computes loss and gradients (``jace.training.loss.batch_loss``), the optax update
  and the EMA of the parameters; the learning rate of each step is computed on the host and injected
  into the optimiser state (``jace.training.optim``). Evaluation uses the EMA parameters.
* Every ``eval_every`` steps or epochs: validation loss and metrics (``compute_metrics``), a row of
  ``metrics.csv``, a line of ``train.log``, ``checkpoints/last.ckpt`` and, when the validation loss
  improved, ``checkpoints/best.ckpt``; reduce-on-plateau and early stopping are driven by the
  validation loss. At the end: ``learning_curves.png``, ``valid_parity.png`` and
  ``valid_metrics.json`` for the best parameters.
* A non-finite loss or gradient raises :class:`TrainingError` naming the step and epoch; the last good
  checkpoint is left untouched.
* ``TrainSettings(data_parallel=True)`` spreads every step over all devices, one batch each
  (``jace.training.parallel``).

The pieces live in ``settings`` (TrainSettings), ``batching`` (graphs, order, buckets), ``steps``
(jitted steps, ``evaluate``), ``loss``, ``optim`` and ``checkpoint``; this module runs the loop.

Files in ``out_dir``: train.log, metrics.csv, checkpoints/{last,best}.ckpt, learning_curves.png,
valid_parity.png, valid_metrics.json.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
import os
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jace.data.configuration import Configuration
from jace.files import atomic_write_bytes
from jace.training.batching import (
    build_graphs,
    check_labels,
    epoch_order,
    epoch_plan,
    fingerprint,
    fixed_batches,
    pad_batch,
    plan_buckets,
)
from jace.training.checkpoint import CheckpointError, read_checkpoint_header, restore_checkpoint, save_checkpoint
from jace.training.metrics import write_metrics_json
from jace.training.optim import PlateauState, make_schedule, plateau_update
from jace.training.settings import TrainSettings
from jace.training.steps import TrainState, cast_params, compiled_steps, evaluate, run_eval, stress_flags

__all__ = [
    "TrainSettings",
    "TrainState",
    "TrainResult",
    "TrainingError",
    "train",
    "evaluate",
    "build_graphs",
    "check_labels",
    "epoch_order",
    "CSV_COLUMNS",
]

CSV_COLUMNS = (
    "step",
    "epoch",
    "lr",
    "stage",
    "train_loss",
    "valid_loss",
    "energy_per_atom_mae_meV",
    "energy_per_atom_rmse_meV",
    "forces_mae_meV_per_A",
    "forces_rmse_meV_per_A",
    "stress_mae_meV_per_A3",
    "stress_rmse_meV_per_A3",
    "time_s",
)

_LOGGER = logging.getLogger("jace.training")
_clock = time.perf_counter  # the max_minutes clock (tests replace it)

# Settings that fix the data order and the compiled shapes: a resumed run must not change them.
_RESUME_FIXED = ("seed", "batch_size", "n_buckets", "dtype", "data_parallel")


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss, or a resume that cannot continue exactly)."""


@dataclasses.dataclass
class TrainResult:
    """What ``train`` returns.

    params: the parameters to use: the EMA parameters of the best validation evaluation.
    state: the final ``TrainState``.
    best_valid_loss, best_step: the best validation loss (current stage) and its step.
    step, epoch: where training stopped (epochs completed).
    stop_reason: "max_epochs", "max_minutes", "early_stopping" or "callback".
    history: the evaluation rows (as in metrics.csv).
    valid_metrics: ``compute_metrics`` of ``params`` on the validation set.
    compilations: {"train_step": n, "eval_step": m} traces (= XLA compilations) in this call.
    buckets: {"train": [...], "valid": [...]} the static batch shapes.
    out_dir: the output directory.
    """

    params: Any
    state: TrainState
    best_valid_loss: float
    best_step: int
    step: int
    epoch: int
    stop_reason: str
    history: list
    valid_metrics: dict
    compilations: dict
    buckets: dict
    out_dir: str


# --------------------------------------------------------------------------------------------------
# Logs


class _TextLog:
    """A log file rewritten atomically on every line (small: one line per evaluation or event)."""

    def __init__(self, path, echo: Callable[[str], None], keep: bool):
        self.path = path
        self.echo = echo
        self.lines: list[str] = []
        if keep and os.path.isfile(path):
            with open(path, encoding="utf-8") as fh:
                self.lines = fh.read().splitlines()

    def __call__(self, msg: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        for line in str(msg).splitlines() or [""]:
            self.lines.append(f"{stamp}  {line}")
        self.echo(msg)
        atomic_write_bytes(self.path, ("\n".join(self.lines) + "\n").encode("utf-8"))


def _format_cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v)
    return str(v)


def _write_csv(path, rows: Sequence[dict]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in rows:
        w.writerow([_format_cell(r.get(k)) for k in CSV_COLUMNS])
    atomic_write_bytes(path, buf.getvalue().encode("utf-8"))


def _read_csv_rows(path, max_step: int) -> list[dict]:
    if not os.path.isfile(path):
        return []
    from jace.training.plots import read_metrics_csv

    return [r for r in read_metrics_csv(path) if r.get("step", math.inf) <= max_step]


# --------------------------------------------------------------------------------------------------
# The trainer


@dataclasses.dataclass
class _Progress:
    """Host-side position and bookkeeping, saved in every checkpoint."""

    epoch: int = 0  # epochs completed
    batch: int = 0  # batches of the current epoch completed
    best_valid_loss: float = math.inf
    best_step: int = -1
    bad_evals: int = 0
    stage_two: bool = False
    plateau: PlateauState = dataclasses.field(default_factory=PlateauState)

    def to_tree(self) -> dict:
        d = dataclasses.asdict(self)
        d["plateau"] = self.plateau.to_dict()
        return d

    @classmethod
    def from_tree(cls, d: Mapping) -> "_Progress":
        p = dict(d["plateau"])
        return cls(
            epoch=int(d["epoch"]),
            batch=int(d["batch"]),
            best_valid_loss=float(d["best_valid_loss"]),
            best_step=int(d["best_step"]),
            bad_evals=int(d["bad_evals"]),
            stage_two=bool(d["stage_two"]),
            plateau=PlateauState(float(p["best"]), int(p["bad"]), float(p["scale"]), int(p["cooldown"])),
        )


def train(
    model,
    train_configs: Sequence[Configuration],
    valid_configs: Sequence[Configuration],
    settings: TrainSettings,
    out_dir,
    resume: bool = False,
    progress: bool = True,
    callback: Optional[Callable[[dict], Optional[bool]]] = None,
) -> TrainResult:
    """Train ``model`` (see the module docstring) and return a :class:`TrainResult`.

    Args:
      model: an object with ``init``, ``site_energies``, ``cutoff`` and ``species``.
      train_configs, valid_configs: labelled configurations (the validation set must not be empty).
      settings: a :class:`TrainSettings`.
      out_dir: directory for logs, metrics, checkpoints and plots (created).
      resume: continue from ``out_dir/checkpoints/last.ckpt`` (start afresh when there is none).
        Without it, an ``out_dir`` that already holds a checkpoint is an error.
      progress: show a tqdm progress bar with the live loss and validation errors.
      callback: called with each evaluation row (a dict as in metrics.csv); returning True stops
        training after that evaluation's checkpoint is written.

    Raises:
      DataError: a weighted observable has no labels in the training set (the message names them).
      TrainingError: the loss or gradient became NaN/inf, or a resume cannot continue exactly.
      CheckpointError: ``resume=True`` and the checkpoint is unreadable or does not fit.
    """
    return _Trainer(model, train_configs, valid_configs, settings, out_dir, resume, progress, callback).run()


class _Trainer:
    def __init__(self, model, train_configs, valid_configs, settings: TrainSettings, out_dir, resume, progress,
                 callback):
        if settings.dtype == "float64" and not jax.config.jax_enable_x64:
            raise ValueError(
                "dtype float64 needs 64-bit JAX: call jax.config.update('jax_enable_x64', True) before "
                "creating arrays, or train with dtype float32"
            )
        self.model = model
        self.s = settings
        self.dtype = settings.np_dtype
        self.train_configs = list(train_configs)
        self.valid_configs = list(valid_configs)
        if not self.train_configs:
            raise ValueError("no training configurations")
        if not self.valid_configs:
            raise ValueError("no validation configurations; split some off the training set")
        self.out_dir = os.fspath(out_dir)
        self.ckpt_dir = os.path.join(self.out_dir, "checkpoints")
        self.last_path = os.path.join(self.ckpt_dir, "last.ckpt")
        self.best_path = os.path.join(self.ckpt_dir, "best.ckpt")
        self.csv_path = os.path.join(self.out_dir, "metrics.csv")
        self.resume = resume
        self.show_progress = progress
        self.callback = callback
        self._elapsed_before, self._loop_start = 0.0, None  # the max_minutes clock (see run)
        if not resume and os.path.exists(self.last_path):
            raise FileExistsError(
                f"{self.last_path} exists: pass resume=True to continue that run, or choose a new out_dir"
            )
        self.resuming = resume and os.path.exists(self.last_path)
        os.makedirs(self.ckpt_dir, exist_ok=True)
        self.pbar = None
        self.log = _TextLog(os.path.join(self.out_dir, "train.log"), self._echo, keep=self.resuming)

    def _echo(self, msg: str) -> None:
        if self.pbar is not None and not self.pbar.disable:
            self.pbar.write(msg)
        else:
            _LOGGER.info(msg)

    # ---------------------------------------------------------------------------------------------
    def _prepare(self):
        s = self.s
        check_labels(self.train_configs, s, "training")
        self.train_graphs = build_graphs(self.train_configs, self.model, s)
        self.valid_graphs = build_graphs(self.valid_configs, self.model, s)
        self.train_buckets = plan_buckets(self.train_graphs, s.batch_size, s.seed, s.n_buckets)
        self.mesh = None
        if s.data_parallel and len(jax.devices()) > 1:
            from jace.training.parallel import data_mesh

            self.mesh = data_mesh()
        self.n_devices = 1 if self.mesh is None else self.mesh.size
        # Steps per epoch: exact on one device; with several, that of epoch 0 (it may vary by one or two).
        self.steps_per_epoch = len(self._plan(0))
        self.total_steps = s.max_epochs * self.steps_per_epoch
        self.valid_buckets, self.valid_batches = fixed_batches(
            self.valid_graphs, s.valid_batch_size, s.n_buckets, self.dtype
        )
        self.train_stress, self.valid_stress = stress_flags(s, self.valid_configs)
        self.schedule = make_schedule(
            s.schedule, s.lr, self.total_steps, s.warmup_steps, s.decay_rate, s.decay_steps, s.final_lr_factor
        )
        self.stage_two_epoch = s.stage_two.start_epoch(s.max_epochs) if s.stage_two is not None else None
        steps = compiled_steps(self.model, s, self.train_stress, self.valid_stress, self.mesh)
        self.optimizer, self.train_step, self.eval_step, self.init_fn, self._counter = steps
        self._counter_start = dict(self._counter)

    def _plan(self, epoch: int):
        return epoch_plan(self.train_graphs, self.s.seed, epoch, self.s.batch_size, self.train_buckets, self.n_devices)

    def _train_batch(self, slots):
        s = self.s
        if self.mesh is None:
            return pad_batch(self.train_graphs, slots[0], self.train_buckets, s.batch_size, self.dtype)
        from jace.training.parallel import masked_copy, shard_batch, stack_batches

        padded = [None if g is None else pad_batch(self.train_graphs, g, self.train_buckets, s.batch_size, self.dtype)
                  for g in slots]
        padded = [masked_copy(padded[0]) if b is None else b for b in padded]
        return shard_batch(stack_batches(padded), self.mesh)

    def _place(self, state):
        if self.mesh is None:
            return jax.device_put(state)
        from jace.training.parallel import replicate

        return replicate(state, self.mesh)

    def _eval_params(self, params):
        # Evaluate on one device (the parameters are replicated under data parallelism).
        return params if self.mesh is None else jax.device_put(params, jax.devices()[0])

    @property
    def counter(self) -> dict:
        """Traces (= compilations) of the jitted steps during this call."""
        return {k: self._counter.get(k, 0) - self._counter_start.get(k, 0) for k in ("train_step", "eval_step")}

    def _init_state(self) -> tuple[TrainState, np.ndarray]:
        key = jax.random.PRNGKey(self.s.seed)
        key, init_key = jax.random.split(key)
        example = pad_batch(self.train_graphs, np.arange(min(self.s.batch_size, len(self.train_graphs))),
                       self.train_buckets, self.s.batch_size, self.dtype)
        try:
            params = self.init_fn(init_key, example)
        except jax.errors.JAXTypeError:  # tracer conversion errors: an init that cannot be traced
            params = self.model.init(init_key, example)
        params = cast_params(params, self.dtype)
        opt_state = self.optimizer.init(params)
        state = TrainState(params, params, opt_state, jnp.asarray(0, jnp.int32))
        return self._place(state), np.asarray(jax.random.key_data(key) if _is_typed_key(key) else key)

    def _tree(self, state: TrainState, rng, prog: _Progress) -> dict:
        return {
            "params": state.params,
            "ema_params": state.ema_params,
            "opt_state": state.opt_state,
            "step": state.step,
            "rng": rng,
            "progress": prog.to_tree(),
        }

    def _header(self, state, prog: _Progress, kind: str) -> dict:
        return {
            "kind": kind,
            "step": int(state.step),
            "epoch": prog.epoch,
            "settings": self.s.to_dict(),
            "n_train": len(self.train_configs),
            "train_fingerprint": fingerprint(self.train_configs),
            "train_elapsed_s": self._elapsed(),
        }

    def _save(self, path, state, rng, prog, kind):
        save_checkpoint(path, self._tree(state, rng, prog), self._header(state, prog, kind))

    def _restore(self, template_state, rng) -> tuple[TrainState, np.ndarray, _Progress, dict]:
        header = read_checkpoint_header(self.last_path)
        old = header.get("settings", {})
        changed = [k for k in _RESUME_FIXED if k in old and old[k] != getattr(self.s, k)]
        if changed:
            raise TrainingError(
                f"cannot resume {self.last_path} exactly: "
                + ", ".join(f"{k} was {old[k]!r}, now {getattr(self.s, k)!r}" for k in changed)
                + "; these fix the data order and shapes, so keep them or start a new run"
            )
        if header.get("n_train") != len(self.train_configs):
            raise TrainingError(
                f"cannot resume {self.last_path}: it was trained on {header.get('n_train')} configurations, "
                f"now {len(self.train_configs)}"
            )
        if header.get("train_fingerprint") != fingerprint(self.train_configs):
            self.log(f"warning: the training data differ from those of {self.last_path}; continuing anyway")
        others = sorted(k for k, v in self.s.to_dict().items() if k in old and old[k] != v and k not in _RESUME_FIXED)
        if others:
            self.log("settings changed since the checkpoint: " + ", ".join(others))
        template = self._tree(template_state, rng, _Progress())
        _, tree = restore_checkpoint(self.last_path, template)
        state = TrainState(
            cast_params(tree["params"], self.dtype),
            cast_params(tree["ema_params"], self.dtype),
            jax.tree.map(jnp.asarray, tree["opt_state"]),
            jnp.asarray(tree["step"], jnp.int32),
        )
        try:
            prog = _Progress.from_tree(tree["progress"])
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{self.last_path}: corrupt training progress record ({err})") from None
        return self._place(state), np.asarray(tree["rng"], dtype=np.uint32), prog, header

    # ---------------------------------------------------------------------------------------------
    def _lr(self, step: int, prog: _Progress) -> float:
        if prog.stage_two:
            return float(self.s.stage_two.lr)
        return float(self.schedule(step)) * prog.plateau.scale

    def _evaluate(self, params, prog: _Progress):
        """(valid loss, metrics, per-config energies, forces, stresses) with the given parameters."""
        weights = self.s.loss_weights(prog.stage_two)
        params = self._eval_params(params)
        return run_eval(
            lambda b: self.eval_step(params, b), self.valid_batches, self.valid_configs, weights, self.valid_stress
        )

    def _elapsed(self) -> float:
        """Seconds of this run's training loop so far, those before a resume included."""
        if self._loop_start is None:
            return self._elapsed_before
        return self._elapsed_before + _clock() - self._loop_start

    def _out_of_time(self, fraction: float = 1.0) -> bool:
        m = self.s.max_minutes
        return m is not None and self._elapsed() >= fraction * 60.0 * m

    def _switch_stage_two(self, prog: _Progress, step: int, why: str) -> None:
        prog.stage_two = True
        prog.best_valid_loss = math.inf
        prog.best_step = -1
        prog.bad_evals = 0
        w = self.s.loss_weights(True)
        self.log(
            f"stage two from step {step} ({why}): loss weights energy={w.energy:g} forces={w.forces:g} "
            f"stress={w.stress:g} virial={w.virial:g}, lr={self.s.stage_two.lr:g}"
        )

    # ---------------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        s = self.s
        t_start = time.time()
        self._prepare()
        state, rng = self._init_state()
        prog = _Progress()
        if self.resuming:
            state, rng, prog, header = self._restore(state, rng)
            self._elapsed_before = float(header.get("train_elapsed_s", 0.0))
            self.log(f"resumed from {self.last_path} at step {int(state.step)}, epoch {prog.epoch}")
            rows = _read_csv_rows(self.csv_path, int(state.step))
        else:
            if self.resume:
                self.log(f"no checkpoint in {self.ckpt_dir}; starting a new run")
            rows = []
            self.log(
                f"training on {len(self.train_configs)} configurations, validating on {len(self.valid_configs)}; "
                f"{self.steps_per_epoch} steps per epoch, {s.max_epochs} epochs, dtype {s.dtype}, "
                f"{self.n_devices} device(s)"
            )
            self.log(
                "train buckets (nodes, edges, graphs): "
                + ", ".join(f"({b.n_node}, {b.n_edge}, {b.n_graph})" for b in self.train_buckets)
            )
        self.rows = rows

        step = int(state.step)
        stop_reason = "max_epochs"
        self.pbar = _progress_bar(total=self.total_steps, initial=min(step, self.total_steps),
                                  disable=not self.show_progress, desc="train", dynamic_ncols=True, leave=True)
        recent_losses: list[float] = []
        groups, groups_epoch = None, -1
        last_eval_step = step if self.resuming else -1
        last_lr = self._lr(step, prog)
        postfix: dict = {}
        self._loop_start = _clock()
        try:
            while prog.epoch < s.max_epochs:
                if (self.stage_two_epoch is not None and not prog.stage_two and prog.batch == 0
                        and prog.epoch >= self.stage_two_epoch):
                    self._switch_stage_two(prog, step, f"epoch {prog.epoch}")
                if (s.stage_two is not None and not prog.stage_two and prog.batch == 0
                        and self._out_of_time(s.stage_two.start_fraction)):
                    self._switch_stage_two(
                        prog, step, f"{self._elapsed() / 60:.2f} of max_minutes {s.max_minutes:g} minutes"
                    )
                if groups_epoch != prog.epoch:
                    groups = self._plan(prog.epoch)
                    groups_epoch = prog.epoch
                batch = self._train_batch(groups[prog.batch])
                last_lr = self._lr(step, prog)
                weights = s.loss_weights(prog.stage_two).as_array(self.dtype)
                new_state, out = self.train_step(state, batch, weights, np.asarray(last_lr, self.dtype))
                loss, gnorm = float(out["loss"]), float(out["grad_norm"])
                if not (math.isfinite(loss) and math.isfinite(gnorm)):
                    what = "loss" if not math.isfinite(loss) else "gradient norm"
                    value = loss if not math.isfinite(loss) else gnorm
                    kept = (f"the last good checkpoint {self.last_path} is left as it was"
                            if os.path.exists(self.last_path) else "no checkpoint was written yet")
                    msg = (f"training diverged: the {what} is {value} at step {step + 1} (epoch {prog.epoch + 1}, "
                           f"step {prog.batch + 1} of {len(groups)} in the epoch); {kept}. Try a smaller "
                           f"learning rate or clip_norm, and check the labels")
                    self.log(msg)
                    raise TrainingError(msg)
                state = new_state
                step += 1
                prog.batch += 1
                epoch_done = prog.batch == len(groups)
                if epoch_done:
                    prog.epoch += 1
                    prog.batch = 0
                recent_losses.append(loss)
                postfix["loss"] = f"{loss:.3g}"
                self.pbar.update(1)
                self.pbar.set_postfix(postfix, refresh=False)

                due = (s.eval_unit == "step" and step % s.eval_every == 0) or (
                    s.eval_unit == "epoch" and epoch_done and prog.epoch % s.eval_every == 0
                )
                out_of_time = self._out_of_time()
                if due or out_of_time or (epoch_done and prog.epoch == s.max_epochs):
                    row, stop = self._eval_and_checkpoint(state, rng, prog, step, last_lr, recent_losses, t_start)
                    recent_losses = []
                    last_eval_step = step
                    postfix.update(_postfix(row))
                    self.pbar.set_postfix(postfix, refresh=True)
                    if stop is None and out_of_time:
                        stop = "max_minutes"
                        self.log(f"stopped at step {step}: the budget of {s.max_minutes:g} minutes is spent "
                                 f"({self._elapsed() / 60:.2f} minutes)")
                    if stop:
                        stop_reason = stop
                        break
            if last_eval_step != step:  # e.g. resumed a finished run: make sure the end is evaluated
                row, _ = self._eval_and_checkpoint(state, rng, prog, step, last_lr, recent_losses, t_start)
        except KeyboardInterrupt:
            self.log(f"interrupted at step {step}; {self.last_path} holds the last evaluation")
            raise
        finally:
            self.pbar.close()
            self.pbar = None

        return self._finish(state, prog, step, stop_reason)

    def _eval_and_checkpoint(self, state, rng, prog: _Progress, step, lr, recent_losses, t_start):
        s = self.s
        params = state.ema_params
        valid_loss, metrics, *_ = self._evaluate(params, prog)
        if not math.isfinite(valid_loss):
            msg = (f"training diverged: the validation loss is {valid_loss} at step {step} (epoch {prog.epoch}); "
                   f"the last good checkpoint {self.last_path} is left as it was")
            self.log(msg)
            raise TrainingError(msg)
        row = {
            "step": step,
            "epoch": prog.epoch + (prog.batch / len(self._plan(prog.epoch)) if prog.batch else 0.0),
            "lr": lr,
            "stage": 2 if prog.stage_two else 1,
            "train_loss": float(np.mean(recent_losses)) if recent_losses else math.nan,
            "valid_loss": valid_loss,
            "time_s": time.time() - t_start,
        }
        row.update({k: v for k, v in metrics.items() if k in CSV_COLUMNS})
        self.rows.append(row)
        _write_csv(self.csv_path, self.rows)

        improved = valid_loss < prog.best_valid_loss
        if improved:
            prog.best_valid_loss, prog.best_step, prog.bad_evals = valid_loss, step, 0
        else:
            prog.bad_evals += 1
        if s.schedule == "plateau" and not prog.stage_two:
            prog.plateau = plateau_update(
                prog.plateau, valid_loss, s.plateau_factor, s.plateau_patience, s.plateau_threshold,
                s.plateau_min_factor,
            )
        stop = None
        if s.patience is not None and prog.bad_evals >= s.patience:
            if s.stage_two is not None and not prog.stage_two:
                self._switch_stage_two(prog, step, f"no improvement for {prog.bad_evals} evaluations")
            else:
                stop = "early_stopping"

        self.log(_format_row(row))
        if improved:
            self._save(self.best_path, state, rng, prog, "best")
        self._save(self.last_path, state, rng, prog, "last")
        if stop == "early_stopping":
            self.log(f"early stopping at step {step}: no improvement for {prog.bad_evals} evaluations")
        if self.callback is not None and self.callback(dict(row)) and stop is None:
            stop = "callback"
            self.log(f"stopped by the callback at step {step}")
        return row, stop

    def _finish(self, state, prog, step, stop_reason) -> TrainResult:
        s = self.s
        if os.path.exists(self.best_path):
            _, tree = restore_checkpoint(self.best_path, self._tree(state, np.zeros(2, np.uint32), _Progress()))
            best_params = cast_params(tree["ema_params"], self.dtype)
        else:
            best_params = state.ema_params
        _, metrics, energies, forces, _ = self._evaluate(best_params, prog)
        write_metrics_json(os.path.join(self.out_dir, "valid_metrics.json"), metrics)
        if s.plots and self.rows:
            try:
                from jace.training.plots import plot_learning_curves, plot_parity, _pyplot

                _pyplot()
            except ImportError:
                self.log("matplotlib is not installed: no plots")
                return self._result(best_params, state, prog, step, stop_reason, metrics)
            plot_learning_curves(self.rows, os.path.join(self.out_dir, "learning_curves.png"))
            plot_parity(self.valid_configs, energies, forces, os.path.join(self.out_dir, "valid_parity.png"),
                        title=f"validation, best EMA parameters (step {prog.best_step})")
        return self._result(best_params, state, prog, step, stop_reason, metrics)

    def _result(self, best_params, state, prog, step, stop_reason, metrics) -> TrainResult:
        self.log(f"finished ({stop_reason}) at step {step}, epoch {prog.epoch}; best validation loss "
                 f"{prog.best_valid_loss:.6g} at step {prog.best_step}; compilations {self.counter}")
        return TrainResult(
            params=best_params,
            state=state,
            best_valid_loss=prog.best_valid_loss,
            best_step=prog.best_step,
            step=step,
            epoch=prog.epoch,
            stop_reason=stop_reason,
            history=list(self.rows),
            valid_metrics=metrics,
            compilations=dict(self.counter),
            buckets={"train": list(self.train_buckets), "valid": list(self.valid_buckets)},
            out_dir=self.out_dir,
        )


class _NoBar:
    """Stands in for tqdm when it is not installed or the bar is off."""

    disable = True

    def update(self, n=1):
        pass

    def set_postfix(self, *args, **kwargs):
        pass

    def write(self, msg):
        pass

    def close(self):
        pass


def _progress_bar(total: int, initial: int, disable: bool, **kwargs):
    if disable:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, initial=initial, **kwargs)


def _is_typed_key(key) -> bool:
    return jnp.issubdtype(getattr(key, "dtype", np.uint32), jax.dtypes.prng_key)


_SHORT = (
    ("energy_per_atom_rmse_meV", "E", "meV/at"),
    ("forces_rmse_meV_per_A", "F", "meV/Å"),
    ("stress_rmse_meV_per_A3", "S", "meV/Å³"),
)


def _postfix(row: dict) -> dict:
    out = {"valid": f"{row['valid_loss']:.3g}"}
    for key, short, _ in _SHORT:
        if key in row and row[key] is not None and math.isfinite(row[key]):
            out[short] = f"{row[key]:.3g}"
    return out


def _format_row(row: dict) -> str:
    parts = [
        f"step {row['step']}",
        f"epoch {row['epoch']:.2f}",
        f"stage {row['stage']}",
        f"lr {row['lr']:.3g}",
        f"train loss {row['train_loss']:.5g}",
        f"valid loss {row['valid_loss']:.5g}",
    ]
    for key, short, unit in _SHORT:
        if key in row and row[key] is not None:
            parts.append(f"{short} RMSE {row[key]:.3f} {unit}")
    return "  ".join(parts)
