"""Every named multi-ACE model trains with the optax loop: a tiny dataset overfits, a stopped and resumed
run equals an uninterrupted one, and an epoch of variable-size configurations compiles the train step at
most once per bucket (float64, tiny models)."""

import dataclasses

import jax
import numpy as np
import pytest

from jace.data.e0 import resolve_e0
from jace.models.design import RadialSpec
from jace.models.multi_ace import MultiACEModel, preset
from jace.training import TrainSettings, dataset_statistics, train
from jace.training.batching import build_graphs

TRAIN_IDX = (0, 1, 3, 6)  # 32, 16, 32 and 16 atoms: batches of different sizes
VALID_IDX = (10, 11)
SETTINGS = TrainSettings(
    max_epochs=30, batch_size=2, valid_batch_size=2, lr=0.05, n_buckets=2, energy_weight=1.0,
    forces_weight=10.0, ema_decay=0.9, seed=1, plots=False,
)
RADIAL = RadialSpec(kind="bessel", n_max=4, envelope_p=5)
TINY = {
    "ace": dict(l_max=2, correlation=(2,), max_degree=(8.0, 6.0), channels=2, radial=RADIAL),
    "nequip": dict(num_layers=2, channels=4, l_max=1, hidden_l_max=1, radial_mlp=(8,), radial=RADIAL),
    "botnet": dict(num_layers=2, channels=4, l_max=1, hidden_l_max=1, radial_mlp=(8,), radial=RADIAL),
    "mace": dict(channels=4, l_max=1, hidden_l_max=1, correlation=(2, 2), radial_mlp=(8,), radial=RADIAL),
}


@pytest.fixture(scope="module")
def data(emt_configs, cuau_species):
    train_set = [emt_configs[i] for i in TRAIN_IDX]
    valid_set = [emt_configs[i] for i in VALID_IDX]
    isolated = [c for c in emt_configs if c.is_isolated_atom()]
    return train_set, valid_set, resolve_e0("isolated", cuau_species, emt_configs, isolated)


def _model(name, data, species):
    train_set, _, e0 = data
    spec = preset(name, ("Cu", "Au"), cutoff=3.5, **TINY[name])
    probe = MultiACEModel(spec, e0=e0, avg_num_neighbors=1.0)
    stats = dataset_statistics(train_set, build_graphs(train_set, probe, SETTINGS), species, e0)
    return MultiACEModel(spec, e0=e0, scale=stats.scale, shift=stats.shift, avg_num_neighbors=stats.avg_num_neighbors)


def _max_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in
               zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize("name", ["ace", "nequip", "botnet", "mace"])
def test_named_model_overfits_resumes_exactly_and_compiles_once_per_bucket(name, data, cuau_species, tmp_path):
    train_set, valid_set, _ = data
    model = _model(name, data, cuau_species)
    full = train(model, train_set, train_set, SETTINGS, tmp_path / "full", progress=False)
    n_buckets = len(full.buckets["train"])
    assert 1 <= full.compilations["train_step"] <= n_buckets <= SETTINGS.n_buckets
    losses = [r["valid_loss"] for r in full.history]
    assert losses[-1] < 0.25 * losses[0], losses  # a tiny dataset overfits (valid = train here)

    settings = dataclasses.replace(SETTINGS, max_epochs=8)
    whole = train(model, train_set, valid_set, settings, tmp_path / "whole", progress=False)
    first = train(model, train_set, valid_set, settings, tmp_path / "split", progress=False,
                  callback=lambda row: row["epoch"] >= 3)
    assert first.stop_reason == "callback" and first.epoch == 3
    second = train(model, train_set, valid_set, settings, tmp_path / "split", resume=True, progress=False)
    assert second.step == whole.step
    assert second.compilations["train_step"] == 0  # the compiled step is reused
    for field in ("params", "ema_params", "opt_state"):
        assert _max_diff(getattr(second.state, field), getattr(whole.state, field)) <= 1e-12, field
