"""Committees: N models of one design trained together in one vmapped program; their mean and spread.

A committee of ``n_members`` models shares the design (the spec, E0, scale, shift, cutoff) and differs in
the random initialisation and, optionally, in the data each member is trained on. Training runs all
members in one jitted program: the train step is ``jax.vmap`` of the single-model step
(``jace.training.steps.make_train_step``: the same loss, optimiser, clipping and EMA) over stacked
parameters, optimiser states and per-member configuration weights, so every member sees the same padded
batches in the same order and the step compiles once per bucket, whatever ``n_members``.

Members (``CommitteeSettings``; ``seed`` is ``TrainSettings.seed``):

  * member m's parameters are initialised from ``jax.random.PRNGKey(seeds[m])``, split once as the
    single-model trainer does (``seeds`` defaults to ``seed, seed + 1, …``), so member 0 of a committee
    without subsampling is exactly the model ``jace.training.train`` makes with the same settings;
  * the data order (batches) is that of ``seed``, shared by all members;
  * a data subsample is a per-configuration weight w_mc multiplying the configuration's weight in the
    loss (``jace.training.loss``), drawn from ``numpy.random.default_rng([seed, m, 0x636F6D])``:
      ``subsample: None``         w = 1 for every configuration;
      ``subsample: "bootstrap"``  w = how often the configuration is drawn in n draws with replacement;
      ``subsample: f``, 0 < f ≤ 1 w = n / k on a random subset of k = round(f · n) configurations, else 0;
    either way Σ_c w_mc = n, so every member's loss has the scale of the full-data loss.
  Members with equal seeds and no subsample are identical (zero spread).

Evaluation, validation loss and selection: every evaluation computes each member's validation loss with
its EMA parameters; the committee's validation loss is their mean, and it drives the best checkpoint,
reduce-on-plateau, stage two and early stopping (members are selected together, at one step). The
validation metrics are those of the mean prediction, plus the uncertainty statistics below. Everything
else (logs, metrics.csv, checkpoints and exact resume, plots) is the single-model trainer's
(``jace.training.loop``), whose checkpoints then hold the stacked state.

Predictions (``Committee.predict``): the mean over members of energy (eV), forces (eV/Å) and stress
(eV/Å³), and their spread, the population standard deviation over members (ddof = 0):

  energy_std   [n_configs] eV             std of the total energy
  forces_std   [n_atoms]   eV/Å           per atom, sqrt(mean_m |F_m,i - F̄_i|²) = sqrt(Σ_a σ²_ia)
                                          (rotation invariant)
  stress_std   [3, 3]      eV/Å³          per component

Uncertainty statistics (``uncertainty_metrics``; added to every metrics dict of a committee):
``energy_std_per_atom_mean_meV`` / ``_max_meV`` (energy_std / N over configurations, meV/atom),
``forces_std_mean_meV_per_A`` / ``_max_meV_per_A`` (forces_std over atoms, meV/Å) and, when stresses
are predicted, ``stress_std_mean_meV_per_A3`` (mean over components and configurations).

A :class:`Committee` is a model like the others: ``site_energy_fn`` (the mean of the members' site
energies), ``params`` (stacked, leading axis n_members), ``cutoff`` and ``species``, so
``jace.models.potential.as_potential`` (and with it the ASE calculator and jax-md) runs the mean model;
it is saved by ``jace.models.io.save_model`` as model type ``"committee"``: the member model's spec and
every member array stacked. Linear ACE committees are not supported (it is fitted by least squares,
not trained); the members must be trainable models with ``init``, ``site_energies`` and ``with_params``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import jraph
import numpy as np

from jace.data.configuration import Configuration
from jace.models.potential import Predictions, predict
from jace.training.batching import pad_batch
from jace.training.checkpoint import read_checkpoint_header
from jace.training.loop import TrainingError, TrainResult, _is_typed_key, _Trainer
from jace.training.metrics import compute_metrics
from jace.training.settings import TrainSettings
from jace.training.steps import TrainState, cast_params, make_eval_step, make_train_step

__all__ = [
    "SUBSAMPLE_MODES",
    "CommitteeSettings",
    "member_weights",
    "member_site_energies",
    "committee_site_energies",
    "CommitteeGraphPrediction",
    "committee_predict",
    "CommitteePrediction",
    "uncertainty_metrics",
    "make_committee_train_step",
    "make_committee_eval_step",
    "Committee",
    "train_committee",
    "train_multi_ace_committee",
    "evaluate_committee_sets",
    "write_predictions",
]

SUBSAMPLE_MODES = ("bootstrap",)
# The training graphs carry each member's configuration weight under this globals key ([n_graphs,
# n_members]); padding graphs get 0. The single-model step never sees it.
COMMITTEE_WEIGHT = "committee_weight"
_SUBSAMPLE_TAG = 0x636F6D  # "com": keeps the subsample draws apart from the epoch orders
_EV_TO_MEV = 1000.0


# --------------------------------------------------------------------------------------------------
# Settings and per-member data weights


@dataclasses.dataclass(frozen=True)
class CommitteeSettings:
    """How many members and how they differ (see the module docstring).

    n_members: a positive integer.
    subsample: None (every member sees all data), "bootstrap", or a fraction in (0, 1].
    seeds: one initialisation seed per member (None: ``seed, seed + 1, …`` of the training settings).
    """

    n_members: int = 4
    subsample: Optional[Union[float, str]] = None
    seeds: Optional[tuple[int, ...]] = None

    def __post_init__(self):
        n = self.n_members
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
            raise ValueError(f"committee.n_members must be a positive integer, got {n!r}")
        sub = self.subsample
        if isinstance(sub, str):
            if sub not in SUBSAMPLE_MODES:
                raise ValueError(
                    f"committee.subsample must be null, 'bootstrap' or a fraction in (0, 1], got {sub!r}"
                )
        elif sub is not None:
            if isinstance(sub, bool) or not isinstance(sub, (int, float, np.integer, np.floating)):
                raise ValueError(
                    f"committee.subsample must be null, 'bootstrap' or a fraction in (0, 1], got {sub!r}"
                )
            if not (math.isfinite(float(sub)) and 0.0 < float(sub) <= 1.0):
                raise ValueError(f"committee.subsample must be a fraction in (0, 1], got {sub!r}")
            object.__setattr__(self, "subsample", float(sub))
        if self.seeds is not None:
            seeds = tuple(self.seeds)
            if len(seeds) != n:
                raise ValueError(
                    f"committee.seeds must give one seed per member ({n}), got {len(seeds)}: {list(seeds)}"
                )
            for s in seeds:
                if not isinstance(s, (int, np.integer)) or isinstance(s, bool) or s < 0:
                    raise ValueError(f"committee.seeds must be integers >= 0, got {s!r}")
            object.__setattr__(self, "seeds", tuple(int(s) for s in seeds))

    def member_seeds(self, seed: int) -> tuple[int, ...]:
        """The initialisation seed of every member, given the run's seed."""
        return self.seeds if self.seeds is not None else tuple(int(seed) + m for m in range(self.n_members))

    def to_dict(self) -> dict:
        return {
            "n_members": int(self.n_members),
            "subsample": self.subsample,
            "seeds": None if self.seeds is None else list(self.seeds),
        }


def member_weights(n_configs: int, committee: CommitteeSettings, seed: int) -> np.ndarray:
    """[n_members, n_configs] float64 per-member configuration weights (see the module docstring)."""
    n = int(n_configs)
    if n < 1:
        raise ValueError("no training configurations to draw committee subsamples from")
    out = np.ones((committee.n_members, n), dtype=np.float64)
    if committee.subsample is None:
        return out
    for m in range(committee.n_members):
        rng = np.random.default_rng([int(seed), m, _SUBSAMPLE_TAG])
        if committee.subsample == "bootstrap":
            out[m] = np.bincount(rng.integers(0, n, size=n), minlength=n).astype(np.float64)
        else:
            k = min(max(int(round(committee.subsample * n)), 1), n)
            w = np.zeros(n, dtype=np.float64)
            w[rng.choice(n, size=k, replace=False)] = n / k
            out[m] = w
    return out


# --------------------------------------------------------------------------------------------------
# The functional core: stacked parameters (leading axis n_members) → mean and spread


def member_site_energies(site_energy_fn, stacked_params, graph: jraph.GraphsTuple) -> jnp.ndarray:
    """[n_members, n_nodes] every member's site energies, eV."""
    return jax.vmap(site_energy_fn, in_axes=(0, None))(stacked_params, graph)


def committee_site_energies(site_energy_fn, stacked_params, graph: jraph.GraphsTuple) -> jnp.ndarray:
    """[n_nodes] the mean over members of the site energies, eV (the committee's own site energies)."""
    return jnp.mean(member_site_energies(site_energy_fn, stacked_params, graph), axis=0)


class CommitteeGraphPrediction(NamedTuple):
    """Mean, spread and members' predictions of a padded batch (padding entries are zero).

    mean: ``Predictions`` averaged over members (energy [n_graphs] eV, forces [n_nodes, 3] eV/Å, …).
    members: ``Predictions`` with a leading [n_members] axis on every field.
    energy_std: [n_graphs] eV; forces_std: [n_nodes] eV/Å, per atom (see the module docstring);
    stress_std: [n_graphs, 3, 3] eV/Å³.
    """

    mean: Predictions
    members: Predictions
    energy_std: jnp.ndarray
    forces_std: jnp.ndarray
    stress_std: jnp.ndarray


def committee_predict(
    site_energy_fn, stacked_params, graph: jraph.GraphsTuple, compute_stress: bool = True
) -> CommitteeGraphPrediction:
    """Every member's ``predict`` (one vmapped pass), their mean and standard deviations (ddof 0)."""
    members = jax.vmap(lambda p: predict(site_energy_fn, p, graph, compute_stress))(stacked_params)
    mean = jax.tree.map(lambda x: jnp.mean(x, axis=0), members)
    energy_std = jnp.sqrt(jnp.mean(jnp.square(members.energy - mean.energy), axis=0))
    df2 = jnp.sum(jnp.square(members.forces - mean.forces), axis=-1)  # [M, n_nodes]
    forces_std = jnp.sqrt(jnp.mean(df2, axis=0))
    stress_std = jnp.sqrt(jnp.mean(jnp.square(members.stress - mean.stress), axis=0))
    return CommitteeGraphPrediction(mean, members, energy_std, forces_std, stress_std)


# --------------------------------------------------------------------------------------------------
# Per-configuration predictions


@dataclasses.dataclass
class CommitteePrediction:
    """Per-configuration committee predictions (NumPy, float64), in the order of the configurations.

    member_energies: [n_configs, n_members] eV.
    member_forces: per configuration [n_members, n_atoms, 3] eV/Å.
    member_stresses: per configuration [n_members, 3, 3] eV/Å³, or None (not periodic / not computed).
    The mean and spread properties are derived from these.
    """

    member_energies: np.ndarray
    member_forces: list
    member_stresses: list

    @property
    def n_members(self) -> int:
        return int(self.member_energies.shape[1])

    @property
    def energies(self) -> np.ndarray:
        """[n_configs] mean energy, eV."""
        return self.member_energies.mean(axis=1)

    @property
    def energy_std(self) -> np.ndarray:
        """[n_configs] std of the energy over members, eV."""
        return self.member_energies.std(axis=1)

    @property
    def forces(self) -> list:
        """Per configuration [n_atoms, 3] mean forces, eV/Å."""
        return [f.mean(axis=0) for f in self.member_forces]

    @property
    def forces_std(self) -> list:
        """Per configuration [n_atoms] per-atom force spread sqrt(mean_m |F_m - F̄|²), eV/Å."""
        return [np.sqrt(np.mean(np.sum((f - f.mean(axis=0)) ** 2, axis=-1), axis=0)) for f in self.member_forces]

    @property
    def stresses(self) -> list:
        """Per configuration [3, 3] mean stress (eV/Å³) or None."""
        return [None if s is None else s.mean(axis=0) for s in self.member_stresses]

    @property
    def stress_std(self) -> list:
        """Per configuration [3, 3] std of the stress over members (eV/Å³) or None."""
        return [None if s is None else s.std(axis=0) for s in self.member_stresses]

    def mean(self) -> tuple[list, list, list]:
        """(energies, forces, stresses) of the mean model, as ``compute_metrics`` takes them."""
        return [float(e) for e in self.energies], self.forces, self.stresses

    def member(self, m: int) -> tuple[list, list, list]:
        """(energies, forces, stresses) of member m."""
        return (
            [float(e) for e in self.member_energies[:, m]],
            [f[m] for f in self.member_forces],
            [None if s is None else s[m] for s in self.member_stresses],
        )

    def uncertainty_metrics(self, configs: Sequence[Configuration]) -> dict:
        """See :func:`uncertainty_metrics`."""
        return uncertainty_metrics(configs, self.energy_std, self.forces_std, self.stress_std)


def uncertainty_metrics(
    configs: Sequence[Configuration], energy_std, forces_std, stress_std: Optional[Sequence] = None
) -> dict:
    """Summary of a committee's spread over a set (keys in the module docstring; meV units)."""
    n_atoms = np.asarray([c.n_atoms for c in configs], dtype=np.float64)
    e = np.asarray(energy_std, dtype=np.float64).reshape(-1) / np.maximum(n_atoms, 1.0) * _EV_TO_MEV
    f = np.concatenate([np.asarray(x, dtype=np.float64).reshape(-1) for x in forces_std]) * _EV_TO_MEV
    out = {
        "energy_std_per_atom_mean_meV": float(np.mean(e)),
        "energy_std_per_atom_max_meV": float(np.max(e)),
    }
    if f.size:
        out["forces_std_mean_meV_per_A"] = float(np.mean(f))
        out["forces_std_max_meV_per_A"] = float(np.max(f))
    s = [np.asarray(x, dtype=np.float64) for x in (stress_std or []) if x is not None]
    if s:
        out["stress_std_mean_meV_per_A3"] = float(np.mean(np.stack(s))) * _EV_TO_MEV
    return out


def _collect(configs: Sequence[Configuration], n_members: int):
    """Empty per-configuration member arrays to be filled batch by batch."""
    n = len(configs)
    return np.zeros((n, n_members)), [None] * n, [None] * n


def _scatter(store, idx, configs, e, f, st, stress_for: Callable[[int], bool]):
    """Copy one batch's member predictions (e [M, G], f [M, N, 3], st [M, G, 3, 3]) into ``store``."""
    energies, forces, stresses = store
    start = 0
    for slot, k in enumerate(idx):
        na = configs[k].n_atoms
        energies[k] = np.asarray(e[:, slot], dtype=np.float64)
        forces[k] = np.asarray(f[:, start : start + na], dtype=np.float64)
        stresses[k] = np.asarray(st[:, slot], dtype=np.float64) if stress_for(k) else None
        start += na


def _periodic(c: Configuration) -> bool:
    return bool(np.any(c.pbc)) and c.volume > 1e-8


# --------------------------------------------------------------------------------------------------
# Train and eval steps


def make_committee_train_step(site_energy_fn, optimizer, settings: TrainSettings, compute_stress: bool,
                              counter: Optional[dict] = None) -> Callable:
    """``(state, batch, loss_weights [4], lr) -> (state, out)``: the single-model train step vmapped over
    members (stacked ``params``, ``ema_params``, ``opt_state``; ``step`` is shared).

    ``batch.globals["committee_weight"]`` [n_graphs, n_members] multiplies each member's configuration
    weights. ``out``: ``loss`` (mean over members), ``grad_norm`` (max over members), ``member_loss``
    and ``member_grad_norm`` [n_members].
    """
    single = make_train_step(site_energy_fn, optimizer, settings, compute_stress)
    axes = TrainState(0, 0, 0, None)

    def committee_step(state: TrainState, batch, loss_weights, lr):
        if counter is not None:
            counter["train_step"] = counter.get("train_step", 0) + 1
        glob = {k: v for k, v in batch.globals.items() if k != COMMITTEE_WEIGHT}
        cw = batch.globals[COMMITTEE_WEIGHT]

        def one(member_state, w):
            b = batch._replace(globals={**glob, "weight": glob["weight"] * w})
            return single(member_state, b, loss_weights, lr)

        new, out = jax.vmap(one, in_axes=(axes, 1), out_axes=(axes, 0))(state, cw)
        return new, {
            "loss": jnp.mean(out["loss"]),
            "grad_norm": jnp.max(out["grad_norm"]),
            "member_loss": out["loss"],
            "member_grad_norm": out["grad_norm"],
        }

    return committee_step


def make_committee_eval_step(site_energy_fn, settings: TrainSettings, compute_stress: bool,
                             counter: Optional[dict] = None) -> Callable:
    """``(stacked params, batch) -> (energy [M, G], forces [M, N, 3], stress [M, G, 3, 3], LossTerms [M, 4])``."""
    single = make_eval_step(site_energy_fn, settings, compute_stress)

    def committee_eval(params, batch):
        if counter is not None:
            counter["eval_step"] = counter.get("eval_step", 0) + 1
        return jax.vmap(single, in_axes=(0, None))(params, batch)

    return committee_eval


_CACHE_ATTR = "_jace_committee_step_cache"


def _compiled_committee_steps(model, settings: TrainSettings, optimizer, train_stress: bool, valid_stress: bool):
    """(jitted committee train step, jitted committee eval step, trace counter), cached on the model per
    optimiser (itself cached per settings by ``compiled_steps``) and stress flags."""
    key = (optimizer, train_stress, valid_stress)

    def build():
        counter: dict = {"train_step": 0, "eval_step": 0}
        donate = (0,) if jax.default_backend() != "cpu" else ()
        train_jit = jax.jit(
            make_committee_train_step(model.site_energies, optimizer, settings, train_stress, counter),
            donate_argnums=donate,
        )
        eval_jit = jax.jit(make_committee_eval_step(model.site_energies, settings, valid_stress, counter))
        return train_jit, eval_jit, counter

    try:
        per_model = vars(model).setdefault(_CACHE_ATTR, {})
    except TypeError:
        return build()
    if key not in per_model:
        per_model[key] = build()
    return per_model[key]


def _stack(trees: Sequence[Any]):
    return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *trees)


# --------------------------------------------------------------------------------------------------
# The trainer: the single-model loop with a stacked state and vmapped steps


class _CommitteeTrainer(_Trainer):
    """``jace.training.loop``'s trainer with the committee's pieces in its hooks: per-member weights on
    the training graphs and the vmapped steps (``_prepare``), stacked initial state (``_init_state``),
    the committee settings in checkpoint headers (``_header``, checked by ``_restore``) and the
    committee evaluation (``_evaluate``)."""

    def __init__(self, model, train_configs, valid_configs, settings: TrainSettings, committee: CommitteeSettings,
                 out_dir, resume, progress, callback):
        super().__init__(model, train_configs, valid_configs, settings, out_dir, resume, progress, callback)
        self.committee = committee
        self.member_seeds = committee.member_seeds(settings.seed)

    def _prepare(self):
        super()._prepare()
        self.weights = member_weights(len(self.train_graphs), self.committee, self.s.seed)
        for k, g in enumerate(self.train_graphs):
            g.globals[COMMITTEE_WEIGHT] = self.weights[:, k][None, :].copy()
        self.train_step, self.eval_step, self._counter = _compiled_committee_steps(
            self.model, self.s, self.optimizer, self.train_stress, self.valid_stress
        )
        self._counter_start = dict(self._counter)

    def _init_state(self):
        s = self.s
        key, _ = jax.random.split(jax.random.PRNGKey(s.seed))  # the loop's RNG state, as in a single run
        example = pad_batch(self.train_graphs, np.arange(min(s.batch_size, len(self.train_graphs))),
                            self.train_buckets, s.batch_size, self.dtype)
        params, opt_states = [], []
        for seed in self.member_seeds:
            _, init_key = jax.random.split(jax.random.PRNGKey(seed))
            try:
                p = self.init_fn(init_key, example)
            except jax.errors.JAXTypeError:
                p = self.model.init(init_key, example)
            p = cast_params(p, self.dtype)
            params.append(p)
            opt_states.append(self.optimizer.init(p))
        stacked = _stack(params)
        state = TrainState(stacked, stacked, _stack(opt_states), jnp.asarray(0, jnp.int32))
        return self._place(state), np.asarray(jax.random.key_data(key) if _is_typed_key(key) else key)

    def _header(self, state, prog, kind: str) -> dict:
        header = super()._header(state, prog, kind)
        header["committee"] = {**self.committee.to_dict(), "seeds": list(self.member_seeds)}
        return header

    def _restore(self, template_state, rng):
        old = read_checkpoint_header(self.last_path).get("committee")
        new = {**self.committee.to_dict(), "seeds": list(self.member_seeds)}
        if old is None:
            raise TrainingError(f"cannot resume {self.last_path} as a committee: it is a single-model run")
        changed = [k for k in new if old.get(k) != new[k]]
        if changed:
            raise TrainingError(
                f"cannot resume {self.last_path} exactly: "
                + ", ".join(f"committee.{k} was {old.get(k)!r}, now {new[k]!r}" for k in changed)
                + "; keep them or start a new run"
            )
        return super()._restore(template_state, rng)

    def _evaluate(self, params, prog):
        """(mean of the members' validation losses, metrics of the mean prediction with the uncertainty
        statistics and ``member_valid_loss``, per-config mean energies, forces, stresses)."""
        weights = self.s.loss_weights(prog.stage_two).as_array(np.float64)
        params = self._eval_params(params)
        configs = self.valid_configs
        store = _collect(configs, self.committee.n_members)
        sums = counts = 0.0
        for batch, idx in self.valid_batches:
            e, f, st, t = jax.device_get(self.eval_step(params, batch))
            sums = sums + np.asarray(t.sums, np.float64)
            counts = counts + np.asarray(t.counts, np.float64)
            _scatter(store, idx, configs, e, f, st, lambda k: self.valid_stress)
        member_loss = np.sum(weights * sums / np.maximum(counts, 1.0), axis=-1)  # [M]
        pred = CommitteePrediction(*store)
        energies, forces, stresses = pred.mean()
        metrics = compute_metrics(configs, energies, forces, stresses if self.valid_stress else None)
        metrics.update(pred.uncertainty_metrics(configs))
        metrics["member_valid_loss"] = [float(x) for x in member_loss]
        return float(np.mean(member_loss)), metrics, energies, forces, stresses


def train_committee(
    model,
    train_configs: Sequence[Configuration],
    valid_configs: Sequence[Configuration],
    settings: TrainSettings,
    committee: Union[CommitteeSettings, int],
    out_dir,
    resume: bool = False,
    progress: bool = True,
    callback: Optional[Callable[[dict], Optional[bool]]] = None,
) -> tuple["Committee", TrainResult]:
    """Train a committee of ``model`` (the template: its design, E0 and statistics) in one vmapped program.

    Args:
      model: a trainable model (``init``, ``site_energies``, ``cutoff``, ``species``, ``with_params``),
        e.g. a ``MultiACEModel``.
      train_configs, valid_configs, settings, out_dir, resume, progress, callback: as for
        ``jace.training.train`` (same files in ``out_dir``; the checkpoints hold the stacked state).
      committee: a :class:`CommitteeSettings`, or just the number of members.

    Returns:
      (Committee with the EMA parameters of the best validation evaluation, TrainResult whose ``params``
      and ``state`` are stacked over members).
    """
    if not isinstance(committee, CommitteeSettings):
        committee = CommitteeSettings(n_members=committee)
    for attr in ("init", "site_energies", "with_params"):
        if not callable(getattr(model, attr, None)):
            raise TypeError(
                f"a committee needs a trainable model with init, site_energies and with_params; "
                f"{type(model).__name__} has no {attr} (linear ACE is fitted by least squares, not trained)"
            )
    if settings.data_parallel:
        raise ValueError("training.data_parallel cannot be combined with a committee (its members are vmapped "
                         "on one device); set data_parallel: false")
    trainer = _CommitteeTrainer(model, train_configs, valid_configs, settings, committee, out_dir, resume,
                                progress, callback)
    result = trainer.run()
    metadata = {
        "committee": {**committee.to_dict(), "seeds": list(committee.member_seeds(settings.seed))},
        "seed": int(settings.seed),
    }
    return Committee(model, result.params, metadata), result


# --------------------------------------------------------------------------------------------------
# The committee model


def _mean_predict(member_fn, params, graph, compute_stress=True) -> Predictions:
    return predict(lambda p, g: committee_site_energies(member_fn, p, g), params, graph, compute_stress)


# Jitted once for the process, with the member's site-energy function static: committees sharing a member
# model (``with_params``, a trainer's result) share the compiled programs.
_mean_predict_jit = jax.jit(_mean_predict, static_argnames=("compute_stress",), static_argnums=(0,))
_committee_predict_jit = jax.jit(committee_predict, static_argnames=("compute_stress",), static_argnums=(0,))


class Committee:
    """N models of one design with stacked parameters: the mean model plus its spread.

    Args:
      member: the template model (any jace model with ``site_energies``, ``cutoff``, ``species``,
        ``with_params``; its own parameters are not used).
      params: the members' parameters stacked along a leading axis [n_members, ...].
      metadata: free-form JSON-serialisable information (saved with the model).
    """

    model_type = "committee"

    def __init__(self, member, params, metadata: Optional[dict] = None):
        leaves = jax.tree.leaves(params)
        if not leaves:
            raise ValueError("a committee needs stacked member parameters, got none")
        sizes = {int(np.shape(x)[0]) if np.ndim(x) else -1 for x in leaves}
        if len(sizes) != 1 or -1 in sizes:
            raise ValueError(
                f"committee parameters must all have the same leading (member) axis, got leading sizes {sorted(sizes)}"
            )
        self.member = member
        self.params = params
        self.n_members = sizes.pop()
        self.metadata = dict(metadata or {})

    # -- the model contract ---------------------------------------------------------------------
    @property
    def cutoff(self) -> float:
        return float(self.member.cutoff)

    @property
    def species(self):
        return self.member.species

    @property
    def spec(self):
        return getattr(self.member, "spec", None)

    def site_energies(self, params, graph: jraph.GraphsTuple) -> jnp.ndarray:
        """[n_nodes] the mean of the members' site energies, eV (``params`` stacked)."""
        return committee_site_energies(self.member.site_energies, params, graph)

    site_energy_fn = site_energies

    def member_model(self, m: int):
        """Member ``m`` as a model of the member's type, with its parameters."""
        if not 0 <= m < self.n_members:
            raise IndexError(f"member {m} of a committee of {self.n_members}")
        return self.member.with_params(jax.tree.map(lambda x: x[m], self.params))

    def with_params(self, params) -> "Committee":
        return Committee(self.member, params, self.metadata)

    def n_params(self) -> int:
        """Parameters of one member."""
        return int(sum(np.size(x) for x in jax.tree.leaves(self.params))) // self.n_members

    def _dtype(self):
        return np.dtype(jax.tree.leaves(self.params)[0].dtype)

    # -- prediction -----------------------------------------------------------------------------
    def predict_graph(self, graph: jraph.GraphsTuple, compute_stress: bool = True, params=None) -> Predictions:
        """``Predictions`` of the mean model (mean energy, forces, stress) of a padded batch."""
        p = self.params if params is None else params
        return _mean_predict_jit(self.member.site_energies, p, graph, compute_stress=compute_stress)

    def predict(self, data, compute_stress: Optional[bool] = None, batch_size: int = 16):
        """Mean, spread and members' predictions.

        data: a padded graph (→ :class:`CommitteeGraphPrediction`, ``compute_stress`` default True), or
          configurations (→ :class:`CommitteePrediction`, stress for the periodic ones).
        """
        if isinstance(data, jraph.GraphsTuple):
            stress = True if compute_stress is None else compute_stress
            return _committee_predict_jit(self.member.site_energies, self.params, data, compute_stress=stress)
        if isinstance(data, Configuration):
            data = [data]
        return self.predict_sets({"set": list(data)}, batch_size, compute_stress)["set"]

    def predict_sets(self, sets, batch_size: int = 16, compute_stress: Optional[bool] = None) -> dict:
        """{name: CommitteePrediction} for several sets, all padded to one bucket (one compilation)."""
        from jace.data.graph import graphs_from_configurations, make_buckets

        sets = {name: list(cs) for name, cs in sets.items()}
        batch_size = max(1, int(batch_size))
        plans, sizes = {}, []
        for name, configs in sets.items():
            graphs = graphs_from_configurations(configs, self.cutoff, self.species)
            groups = [np.arange(s, min(s + batch_size, len(configs))) for s in range(0, len(configs), batch_size)]
            plans[name] = (configs, graphs, groups)
            sizes += [(sum(configs[k].n_atoms for k in g), sum(int(graphs[k].n_edge[0]) for k in g)) for g in groups]
        out = {name: CommitteePrediction(np.zeros((0, self.n_members)), [], []) for name in sets}
        if not sizes:
            return out
        buckets = make_buckets(sizes, batch_size, 1)
        if compute_stress is None:
            compute_stress = any(_periodic(c) for cs in sets.values() for c in cs)
        dtype = self._dtype()
        for name, (configs, graphs, groups) in plans.items():
            store = _collect(configs, self.n_members)
            for g in groups:
                batch = pad_batch(graphs, g, buckets, batch_size, dtype)
                pred = jax.device_get(_committee_predict_jit(self.member.site_energies, self.params, batch,
                                                             compute_stress=compute_stress))
                m = pred.members
                _scatter(store, g, configs, m.energy, m.forces, m.stress,
                         lambda k: compute_stress and _periodic(configs[k]))
            out[name] = CommitteePrediction(*store)
        return out

    def evaluate(self, configs: Sequence[Configuration], batch_size: int = 16):
        """(energies, forces, stresses) of the mean model, per configuration (the evaluation protocol)."""
        return self.predict(list(configs), batch_size=batch_size).mean()

    # -- safe serialisation protocol (jace.models.io) -------------------------------------------
    def to_state(self):
        member_states = [self.member_model(m).to_state() for m in range(self.n_members)]
        spec, _, member_meta = member_states[0]
        keys = set(member_states[0][1])
        for m, (_, arrays, _) in enumerate(member_states):
            if set(arrays) != keys:
                raise ValueError(f"committee member {m} has arrays {sorted(arrays)}, member 0 {sorted(keys)}")
        arrays = {k: np.stack([np.asarray(st[1][k]) for st in member_states]) for k in sorted(keys)}
        committee_spec = {
            "member_model_type": self.member.model_type,
            "member_spec": spec,
            "member_metadata": member_meta,
            "n_members": self.n_members,
        }
        return committee_spec, arrays, {**self.metadata, "n_members": self.n_members}

    @classmethod
    def from_state(cls, spec: dict, arrays: dict, metadata: dict):
        from jace.models.io import ModelState, model_from_state

        for key in ("member_model_type", "member_spec", "n_members"):
            if key not in spec:
                raise KeyError(f"committee spec has no {key!r}")
        n = spec["n_members"]
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"committee n_members must be a positive integer, got {n!r}")
        if spec["member_model_type"] == cls.model_type:
            raise ValueError("a committee's members cannot themselves be committees")
        for k, v in arrays.items():
            if np.ndim(v) == 0 or np.shape(v)[0] != n:
                raise ValueError(
                    f"array {k!r} has shape {list(np.shape(v))}; a committee of {n} needs a leading axis of {n}"
                )
        members = [
            model_from_state(ModelState(spec["member_model_type"], spec["member_spec"],
                                        {k: v[m] for k, v in arrays.items()}, dict(spec.get("member_metadata", {}))),
                             f"<committee member {m}>")
            for m in range(n)
        ]
        return cls(members[0], _stack([mm.params for mm in members]), metadata)


# --------------------------------------------------------------------------------------------------
# Configs and the command line


def train_multi_ace_committee(
    cfg,
    data,
    out_dir,
    resume: bool = False,
    progress: bool = False,
    callback: Optional[Callable[[dict], Optional[bool]]] = None,
    settings: Optional[TrainSettings] = None,
    log: Callable[[str], None] = print,
):
    """``jace.training.pipeline.train_multi_ace`` for a config with ``training.committee``.

    Returns (Committee, TrainResult, info dict: that of a single model plus ``n_members``, ``subsample``,
    ``seeds`` and the validation uncertainty statistics).
    """
    from jace.training.batching import check_labels
    from jace.training.pipeline import build_multi_ace

    committee = cfg.training.committee
    if committee is None:
        raise ValueError(f"{cfg.source or 'config'}: training.committee is not set")
    settings = cfg.training.settings if settings is None else settings
    check_labels(data.train, settings, "training")
    model, stats = build_multi_ace(cfg, data)
    symbols = tuple(cfg.model.elements)
    seeds = list(committee.member_seeds(settings.seed))
    log(
        f"model: committee of {committee.n_members} {cfg.model_type} (seeds {seeds}, subsample "
        f"{committee.subsample}); E0 " + ", ".join(f"{s} {e:.6g}" for s, e in zip(symbols, stats.e0)) + " eV; "
        f"shift {model.shift:.4g} eV/atom, scale {model.scale:.4g}, avg_num_neighbors {model.avg_num_neighbors:.4g}"
    )
    t0 = time.perf_counter()
    trained, result = train_committee(model, data.train, data.validation, settings, committee, out_dir,
                                      resume=resume, progress=progress, callback=callback)
    seconds = time.perf_counter() - t0
    info = {
        "model_type": cfg.model_type,
        "n_members": committee.n_members,
        "subsample": committee.subsample,
        "seeds": seeds,
        "n_params": trained.n_params(),
        "epochs": int(result.epoch),
        "steps": int(result.step),
        "best_step": int(result.best_step),
        "best_valid_loss": float(result.best_valid_loss),
        "member_valid_loss": result.valid_metrics.get("member_valid_loss"),
        "stop_reason": result.stop_reason,
        "train_seconds": seconds,
        "e0": {s: float(e) for s, e in zip(symbols, stats.e0)},
        "shift": float(model.shift),
        "scale": float(model.scale),
        "avg_num_neighbors": float(model.avg_num_neighbors),
        "compilations": dict(result.compilations),
    }
    info.update({k: v for k, v in result.valid_metrics.items() if "_std_" in k})
    trained.metadata.update({k: info[k] for k in ("model_type", "epochs", "steps", "best_step", "stop_reason")})
    return trained, result, info


def evaluate_committee_sets(committee: Committee, sets, batch_size: int = 16) -> dict:
    """{name: metrics of the mean prediction (``pipeline.set_metrics``) plus the uncertainty statistics}
    for every non-empty set, all sets padded to one bucket."""
    from jace.training.pipeline import set_metrics

    sets = {name: list(cs) for name, cs in sets.items() if cs}
    preds = committee.predict_sets(sets, batch_size)
    out = {}
    for name, cs in sets.items():
        m = set_metrics(cs, preds[name].mean())
        m.update(preds[name].uncertainty_metrics(cs))
        out[name] = m
    return out


def write_predictions(path, configs: Sequence[Configuration], energies, forces, stresses=None,
                      energy_std=None, forces_std=None, stress_std=None, prefix: str = "jace_") -> None:
    """Write configurations with their labels and the predictions as extxyz, atomically.

    Predictions go to ``info[prefix + "energy"]`` (eV), ``arrays[prefix + "forces"]`` (eV/Å) and
    ``info[prefix + "stress"]`` (Voigt xx yy zz yz xz xy, eV/Å³, ASE's sign); a committee's spread to
    ``info["energy_std"]`` (eV), ``arrays["forces_std"]`` (per atom, eV/Å) and ``info["stress_std"]``
    (Voigt, eV/Å³). Reference labels keep their usual places (``read_configurations`` reads them back).
    """
    import io as _io

    import ase.io

    from jace.data.io import configuration_to_atoms
    from jace.files import atomic_write_bytes

    def voigt(s):
        s = np.asarray(s, dtype=np.float64)
        return np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])

    images = []
    for k, c in enumerate(configs):
        atoms = configuration_to_atoms(c)
        atoms.info[prefix + "energy"] = float(energies[k])
        atoms.arrays[prefix + "forces"] = np.asarray(forces[k], dtype=np.float64).reshape(c.n_atoms, 3)
        if stresses is not None and stresses[k] is not None:
            atoms.info[prefix + "stress"] = voigt(stresses[k])
        if energy_std is not None:
            atoms.info["energy_std"] = float(energy_std[k])
        if forces_std is not None:
            atoms.arrays["forces_std"] = np.asarray(forces_std[k], dtype=np.float64).reshape(c.n_atoms)
        if stress_std is not None and stress_std[k] is not None:
            atoms.info["stress_std"] = voigt(stress_std[k])
        images.append(atoms)
    buffer = _io.StringIO()
    ase.io.write(buffer, images, format="extxyz")
    atomic_write_bytes(os.fspath(path), buffer.getvalue().encode("utf-8"))


def _register():
    from jace.models.io import register_model_type

    register_model_type(Committee.model_type, Committee)


_register()
