"""The optax trainer with a tiny pair potential (tests/training_toy_model.py) on EMT Cu–Au data.

One reference run (``base_run``) is trained once per module and checked for overfitting, compilations,
EMA, files and checkpoints; the other runs reuse its jitted steps (they are cached on the model), so
the module is dominated by a handful of compilations.
"""

import contextlib
import dataclasses
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jace.data.e0 import resolve_e0
from jace.data.graph import Bucket, batch_graphs, pad_graph
from jace.data.io import DataError
from jace.training.checkpoint import (
    CheckpointError,
    load_checkpoint_params,
    read_checkpoint,
    read_checkpoint_header,
    save_checkpoint,
)
from jace.training.batching import build_graphs, check_labels, epoch_order
from jace.training.loop import CSV_COLUMNS, TrainingError, TrainSettings, evaluate, train
from jace.training.loss import loss_terms, residual_penalty
from jace.training.optim import (
    PlateauState,
    StageTwo,
    make_optimizer,
    make_schedule,
    plateau_update,
    weight_decay_mask,
)
from jace.training.statistics import dataset_statistics

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from training_toy_model import ToyPairModel  # noqa: E402

TRAIN_IDX = (0, 1, 3, 6)  # 32, 16, 32 and 16 atoms: batches of different sizes
VALID_IDX = (10, 11, 12, 13)
MAX_EPOCHS = 40
SETTINGS = TrainSettings(
    max_epochs=MAX_EPOCHS,
    batch_size=2,
    valid_batch_size=4,
    lr=0.05,
    n_buckets=2,
    energy_weight=1.0,
    forces_weight=10.0,
    ema_decay=0.9,
    clip_norm=100.0,
    seed=3,
)


@contextlib.contextmanager
def count_compilations(name: str):
    """Names of the XLA compilations (jax.monitoring events) of functions whose name contains ``name``."""
    seen = []

    def listener(event, duration_secs, **kwargs):
        if "backend_compile" in event and name in str(kwargs.get("fun_name", "")):
            seen.append(kwargs.get("fun_name"))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield seen
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


@pytest.fixture(scope="module")
def data(emt_configs, cuau_species):
    train_configs = [emt_configs[i] for i in TRAIN_IDX]
    valid_configs = [emt_configs[i] for i in VALID_IDX]
    isolated = [c for c in emt_configs if c.is_isolated_atom()]
    e0 = resolve_e0("isolated", cuau_species, emt_configs, isolated)
    return train_configs, valid_configs, e0


@pytest.fixture(scope="module")
def model(data, cuau_species):
    train_configs, _, e0 = data
    probe = ToyPairModel(cuau_species, cutoff=3.2)
    stats = dataset_statistics(train_configs, build_graphs(train_configs, probe, SETTINGS), cuau_species, e0)
    return ToyPairModel(cuau_species, cutoff=3.2, e0=e0, shift=stats.shift, scale=stats.scale, n_rbf=8, hidden=16)


@pytest.fixture(scope="module")
def base_run(model, data, tmp_path_factory):
    """The reference run; every other training test depends on it, so it compiles first."""
    train_configs, valid_configs, _ = data
    out = tmp_path_factory.mktemp("base")
    with count_compilations("train_step") as seen:
        result = train(model, train_configs, valid_configs, SETTINGS, out, progress=False)
    result.monitored_compiles = len(seen)
    return result


# ----------------------------------------------------------------------------------------------
# Statistics, loss, optimiser pieces


def test_dataset_statistics_by_hand(data, cuau_species):
    train_configs, _, e0 = data
    graphs = build_graphs(train_configs, ToyPairModel(cuau_species, cutoff=3.2), SETTINGS)
    stats = dataset_statistics(train_configs, graphs, cuau_species, e0)
    per_atom = [
        (c.energy - sum(e0[cuau_species.indices(c.numbers)])) / c.n_atoms for c in train_configs
    ]
    forces = np.concatenate([c.forces.reshape(-1) for c in train_configs])
    assert stats.shift == pytest.approx(np.mean(per_atom), rel=1e-12)
    assert stats.scale == pytest.approx(np.sqrt(np.mean(forces**2)), rel=1e-12)
    edges = sum(int(g.n_edge[0]) for g in graphs)
    assert stats.avg_num_neighbors == pytest.approx(edges / sum(c.n_atoms for c in train_configs))
    assert stats.e0 == tuple(e0)
    # Energy-only fallback: the spread of per-atom energies.
    no_f = [dataclasses.replace(c, forces=None) for c in train_configs]
    assert dataset_statistics(no_f, graphs, cuau_species, e0).scale == pytest.approx(np.std(per_atom))


def test_huber_matches_squared_near_zero_and_is_linear_beyond():
    r = np.array([-0.5, -0.01, 0.0, 0.005, 0.02])
    h = np.asarray(residual_penalty(jnp.asarray(r), "huber", 0.01))
    np.testing.assert_allclose(h[1:4], r[1:4] ** 2)
    np.testing.assert_allclose(h[[0, 4]], 2 * 0.01 * np.abs(r[[0, 4]]) - 1e-4)


def test_loss_does_not_depend_on_padding(base_run, model, data):
    # The same validation set in batches of 4 (two buckets, as in the run) and in batches of 3 padded
    # to one larger bucket: the loss, normalised over the whole set, and the metrics agree.
    params = base_run.state.ema_params
    loss_a, metrics_a = evaluate(model, params, data[1], SETTINGS)
    other = dataclasses.replace(SETTINGS, valid_batch_size=3, n_buckets=1)
    loss_b, metrics_b = evaluate(model, params, data[1], other)
    assert loss_a > 0
    assert loss_b == pytest.approx(loss_a, rel=1e-12)
    for key in metrics_a:
        assert metrics_b[key] == pytest.approx(metrics_a[key], rel=1e-10), key


def test_loss_counts_only_real_labels(model, data):
    # One batch of two configurations padded generously: counts see 2 energies, 3·N force
    # components and 2·9 stress components, nothing of the padding.
    graphs = build_graphs(data[0][:2], model, SETTINGS)
    batch = batch_graphs(graphs)
    n, e = int(batch.n_node.sum()), int(batch.n_edge.sum())
    padded = pad_graph(batch, Bucket(n + 37, e + 101, 6))
    pred = _zero_predictions(padded)
    terms = loss_terms(pred, padded)
    assert np.asarray(terms.counts).tolist() == [2.0, 3.0 * n, 18.0, 18.0]
    # With zero predictions the energy sum is Σ (E/N)² over the two real graphs.
    e_ref = sum((c.energy / c.n_atoms) ** 2 for c in data[0][:2])
    assert float(terms.sums[0]) == pytest.approx(e_ref, rel=1e-12)


def _zero_predictions(graph):
    from jace.models.potential import Predictions

    n_g, n_n = graph.n_node.shape[0], graph.nodes["positions"].shape[0]
    return Predictions(np.zeros(n_g), np.zeros((n_n, 3)), np.zeros((n_g, 3, 3)), np.zeros((n_g, 3, 3)), np.zeros(n_n))


def test_weight_decay_mask_applies_only_to_matched_params():
    params = {"params": {"hidden": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)}, "species_bias": jnp.ones(2)}}
    mask = weight_decay_mask(params, ("kernel",))
    assert mask == {"params": {"hidden": {"kernel": True, "bias": False}, "species_bias": False}}
    zero = jax.tree.map(jnp.zeros_like, params)
    for name in ("adamw", "adam"):
        opt = make_optimizer(name, learning_rate=0.1, weight_decay=0.5, weight_decay_patterns=("kernel",))
        updates, _ = opt.update(zero, opt.init(params), params)
        assert np.all(np.asarray(updates["params"]["hidden"]["kernel"]) < 0), name
        assert np.all(np.asarray(updates["params"]["hidden"]["bias"]) == 0), name
        assert np.all(np.asarray(updates["params"]["species_bias"]) == 0), name
    # Decoupled (adamw): exactly -lr · λ · θ.
    opt = make_optimizer("adamw", learning_rate=0.1, weight_decay=0.5, weight_decay_patterns=("kernel",))
    updates, _ = opt.update(zero, opt.init(params), params)
    np.testing.assert_allclose(updates["params"]["hidden"]["kernel"], -0.05)


def test_schedules_and_plateau():
    cos = make_schedule("cosine", 1.0, total_steps=100, warmup_steps=10, final_factor=0.1)
    assert float(cos(0)) == 0.0 and float(cos(5)) == pytest.approx(0.5)
    assert float(cos(10)) == pytest.approx(1.0) and float(cos(100)) == pytest.approx(0.1)
    exp = make_schedule("exponential", 1.0, 100, decay_rate=0.5, decay_steps=10)
    assert float(exp(20)) == pytest.approx(0.25)
    p = PlateauState()
    for v in (1.0, 0.5, 0.6, 0.6):
        p = plateau_update(p, v, factor=0.5, patience=2)
    assert p.scale == 0.5 and p.best == 0.5 and p.bad == 0


def test_config_type_weights_multiply_per_graph_weights(model, data):
    configs = [dataclasses.replace(c, config_type=t) for c, t in zip(data[0][:3], ("a", "b", "c"))]
    settings = dataclasses.replace(SETTINGS, config_type_weights={"a": 2.0, "b": {"forces": 0.5}})
    graphs = build_graphs(configs, model, settings)
    got = [[float(g.globals[k][0]) for k in ("energy_weight", "forces_weight", "stress_weight")] for g in graphs]
    assert got == [[2.0, 2.0, 2.0], [1.0, 0.5, 1.0], [1.0, 1.0, 1.0]]


def test_settings_validation():
    with pytest.raises(ValueError, match="optimizer"):
        TrainSettings(optimizer="sgd")
    with pytest.raises(ValueError, match="config_type_weights"):
        TrainSettings(config_type_weights={"bulk": {"energies": 2.0}})


# ----------------------------------------------------------------------------------------------
# The reference run


def test_tiny_dataset_overfits(base_run):
    h = base_run.history
    assert len(h) == MAX_EPOCHS and base_run.stop_reason == "max_epochs"
    assert h[-1]["train_loss"] < h[0]["train_loss"] / 20
    assert h[-1]["valid_loss"] < h[0]["valid_loss"] / 5
    assert base_run.best_valid_loss <= min(r["valid_loss"] for r in h)


def test_epoch_compiles_at_most_once_per_bucket(base_run, data):
    # Variable-size batches: more distinct raw sizes than buckets, yet one compile per bucket at most.
    train_configs = data[0]
    sizes = set()
    for epoch in range(MAX_EPOCHS):
        order = epoch_order(SETTINGS.seed, epoch, len(train_configs))
        for s in range(0, len(order), SETTINGS.batch_size):
            sizes.add(sum(train_configs[k].n_atoms for k in order[s : s + SETTINGS.batch_size]))
    n_buckets = len(base_run.buckets["train"])
    assert len(sizes) > n_buckets
    assert 1 <= base_run.compilations["train_step"] <= n_buckets
    assert 1 <= base_run.monitored_compiles <= n_buckets
    assert base_run.compilations["eval_step"] <= len(base_run.buckets["valid"])


def test_ema_params_differ_and_are_what_evaluation_uses(base_run, model, data):
    state = base_run.state
    diff = _max_diff(state.params, state.ema_params)
    assert diff > 1e-4
    valid = data[1]
    loss_ema, _ = evaluate(model, state.ema_params, valid, SETTINGS)
    loss_raw, _ = evaluate(model, state.params, valid, SETTINGS)
    assert loss_ema == pytest.approx(base_run.history[-1]["valid_loss"], rel=1e-12)
    assert abs(loss_raw - loss_ema) > 1e-6 * loss_ema


def test_output_files(base_run):
    out = base_run.out_dir
    for name in ("train.log", "metrics.csv", "learning_curves.png", "valid_parity.png", "valid_metrics.json",
                 "checkpoints/last.ckpt", "checkpoints/best.ckpt"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    with open(os.path.join(out, "metrics.csv")) as fh:
        lines = fh.read().splitlines()
    assert lines[0].split(",") == list(CSV_COLUMNS) and len(lines) == MAX_EPOCHS + 1
    with open(os.path.join(out, "learning_curves.png"), "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    header = read_checkpoint_header(os.path.join(out, "checkpoints/best.ckpt"))
    assert header["step"] == base_run.best_step and header["format_version"] == 1
    best = load_checkpoint_params(os.path.join(out, "checkpoints/best.ckpt"))
    for a, b in zip(jax.tree.leaves(best), jax.tree.leaves(base_run.params)):
        np.testing.assert_array_equal(a, np.asarray(b))


def test_existing_run_is_not_overwritten_without_resume(base_run, model, data):
    with pytest.raises(FileExistsError, match="resume=True"):
        train(model, data[0], data[1], SETTINGS, base_run.out_dir, progress=False)


# ----------------------------------------------------------------------------------------------
# Resume, divergence, checkpoints


def _max_diff(a, b):
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b))
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in pairs)


def test_resume_equals_uninterrupted(base_run, model, data, tmp_path):
    half = MAX_EPOCHS // 2
    first = train(model, data[0], data[1], SETTINGS, tmp_path, progress=False,
                  callback=lambda row: row["epoch"] >= half)
    assert first.stop_reason == "callback" and first.epoch == half
    second = train(model, data[0], data[1], SETTINGS, tmp_path, resume=True, progress=False)
    assert second.epoch == MAX_EPOCHS and second.step == base_run.step
    assert second.compilations == {"train_step": 0, "eval_step": 0}  # reused, no recompilation
    for field in ("params", "ema_params", "opt_state"):
        assert _max_diff(getattr(second.state, field), getattr(base_run.state, field)) <= 1e-12, field
    expected = [r["valid_loss"] for r in base_run.history]
    assert [r["valid_loss"] for r in second.history] == pytest.approx(expected, rel=1e-12)
    assert len(second.history) == MAX_EPOCHS  # the CSV continues where it stopped


def test_resume_mid_epoch_with_plateau_schedule(base_run, model, data, tmp_path):
    # Evaluations (and checkpoints) every 3 steps with 2 steps per epoch fall in the middle of epochs;
    # reduce-on-plateau with a demanding threshold changes the learning rate along the way.
    settings = dataclasses.replace(
        SETTINGS, max_epochs=6, eval_unit="step", eval_every=3, schedule="plateau",
        plateau_patience=1, plateau_threshold=0.3, plateau_factor=0.5, plots=False,
    )
    full = train(model, data[0], data[1], settings, tmp_path / "full", progress=False)
    lrs = [r["lr"] for r in full.history]
    assert lrs[0] == SETTINGS.lr and min(lrs) < SETTINGS.lr  # the plateau factor acted
    first = train(model, data[0], data[1], settings, tmp_path / "split", progress=False,
                  callback=lambda row: row["step"] >= 9)
    assert first.step == 9 and first.epoch == 4  # stopped after batch 1 of epoch 5
    second = train(model, data[0], data[1], settings, tmp_path / "split", resume=True, progress=False)
    assert second.step == full.step
    for field in ("params", "ema_params", "opt_state"):
        assert _max_diff(getattr(second.state, field), getattr(full.state, field)) <= 1e-12, field
    assert [r["lr"] for r in second.history] == lrs


def test_nan_loss_stops_with_step_and_keeps_last_checkpoint(base_run, model, data, tmp_path):
    first = train(model, data[0], data[1], SETTINGS, tmp_path, progress=False, callback=lambda row: True)
    last = tmp_path / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    poisoned = [dataclasses.replace(c, energy=math.nan) for c in data[0]]
    with pytest.raises(TrainingError, match=rf"loss is nan at step {first.step + 1} \(epoch 2"):
        train(model, poisoned, data[1], SETTINGS, tmp_path, resume=True, progress=False)
    assert last.read_bytes() == before
    header, state = read_checkpoint(last)
    assert header["step"] == first.step
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state["params"]))


def _corrupt_copies(src, tmp_path):
    data = open(src, "rb").read()
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(data[: len(data) // 2])
    flipped = bytearray(data)
    flipped[-10] ^= 0xFF
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(bytes(flipped))
    foreign = tmp_path / "foreign.ckpt"
    foreign.write_bytes(b"\x80\x04\x95pickle, not a checkpoint")
    return truncated, corrupt, foreign


def test_truncated_corrupt_and_foreign_checkpoints_raise_checkpoint_error(base_run, tmp_path):
    src = os.path.join(base_run.out_dir, "checkpoints", "last.ckpt")
    truncated, corrupt, foreign = _corrupt_copies(src, tmp_path)
    for path, what in ((truncated, "truncated"), (corrupt, "corrupt"), (foreign, "not a jace checkpoint")):
        with pytest.raises(CheckpointError, match=what) as err:
            read_checkpoint(path)
        assert str(path) in str(err.value)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        read_checkpoint(tmp_path / "missing.ckpt")


def test_resume_from_truncated_checkpoint_names_the_file(base_run, model, data, tmp_path):
    src = os.path.join(base_run.out_dir, "checkpoints", "last.ckpt")
    (tmp_path / "checkpoints").mkdir()
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.write_bytes(open(src, "rb").read()[:-100])
    with pytest.raises(CheckpointError, match="truncated") as err:
        train(model, data[0], data[1], SETTINGS, tmp_path, resume=True, progress=False)
    assert str(last) in str(err.value)


def test_checkpoint_round_trip_and_template_mismatch(tmp_path):
    from jace.training.checkpoint import restore_checkpoint

    tree = {"a": np.arange(3.0), "b": {"c": np.int32(7)}, "best": math.inf, "flag": True}
    path = tmp_path / "x.ckpt"
    save_checkpoint(path, tree, {"note": "hi"})
    header, back = restore_checkpoint(path, {"a": np.zeros(3), "b": {"c": np.int32(0)}, "best": 0.0, "flag": False})
    assert header["note"] == "hi" and back["best"] == math.inf and back["flag"] is True
    np.testing.assert_array_equal(back["a"], tree["a"])
    with pytest.raises(CheckpointError, match="does not match"):
        restore_checkpoint(path, {"a": np.zeros(4), "b": {"c": np.int32(0)}, "best": 0.0, "flag": False})


def test_missing_forces_are_named(model, data, tmp_path):
    configs = list(data[0])
    configs[2] = dataclasses.replace(configs[2], forces=None, source="train.xyz:2")
    with pytest.raises(DataError, match=r"no forces.*train\.xyz:2"):
        train(model, configs, data[1], SETTINGS, tmp_path, progress=False)
    # Energies only is fine once forces are not weighted.
    check_labels(configs, dataclasses.replace(SETTINGS, forces_weight=0.0))


# ----------------------------------------------------------------------------------------------
# Stage two, early stopping, float32


def test_stage_two_switches_weights_and_lr(base_run, model, data, tmp_path):
    stage = StageTwo(start_fraction=0.5, energy_weight=1000.0, forces_weight=1.0, lr=1e-3)
    settings = dataclasses.replace(SETTINGS, max_epochs=4, stage_two=stage)
    result = train(model, data[0], data[1], settings, tmp_path, progress=False)
    assert result.compilations["train_step"] == 0  # weights and lr are arguments: no recompilation
    stages = [r["stage"] for r in result.history]
    assert stages == [1, 1, 2, 2]
    assert [r["lr"] for r in result.history] == [SETTINGS.lr, SETTINGS.lr, 1e-3, 1e-3]
    last = result.history[-1]
    ema = result.state.ema_params
    loss2, _ = evaluate(model, ema, data[1], settings, stage_two=True)
    loss1, _ = evaluate(model, ema, data[1], settings, stage_two=False)
    assert last["valid_loss"] == pytest.approx(loss2, rel=1e-12)
    assert abs(loss1 - loss2) > 1e-3 * loss2
    with open(os.path.join(tmp_path, "train.log")) as fh:
        assert "stage two from step 4" in fh.read()


def test_early_stopping_starts_pending_stage_two_then_stops(base_run, model, data, tmp_path):
    # Zero loss weights: zero gradients, the parameters never change, the validation loss never improves.
    settings = dataclasses.replace(
        SETTINGS, max_epochs=20, energy_weight=0.0, forces_weight=0.0, patience=2,
        stage_two=StageTwo(start_fraction=1.0, energy_weight=0.0, forces_weight=0.0, lr=1e-3),
    )
    result = train(model, data[0], data[1], settings, tmp_path, progress=False)
    assert result.stop_reason == "early_stopping"
    assert result.compilations["train_step"] == 0
    assert [r["stage"] for r in result.history] == [1, 1, 1, 2, 2, 2]


def test_float32_training(model, data, tmp_path, base_run):
    settings = dataclasses.replace(SETTINGS, dtype="float32", max_epochs=3, n_buckets=1, plots=False)
    result = train(model, data[0], data[1], settings, tmp_path, progress=False)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(result.state.params))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(result.params))
    h = result.history
    assert all(math.isfinite(r["valid_loss"]) for r in h) and h[-1]["valid_loss"] < h[0]["valid_loss"]


# ----------------------------------------------------------------------------------------------
# Data parallel


def test_data_parallel_step_equals_single_device_step():
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "training_parallel_check.py")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["n_devices"] == 4 and out["sharded_over"] == 4
    assert out["param_change"] > 1e-4
    for key, value in out["full"].items():
        assert value <= 1e-10, (key, value)
    for key, value in out["filled"].items():
        assert value <= 1e-10, (key, value)
    # 8 configurations, one per batch, 4 devices: 2 steps per epoch, one bucket, one compilation.
    trainer = out["trainer"]
    assert trainer["steps"] == 6 and trainer["compilations"] == 1
    assert trainer["valid_loss"][-1] < trainer["valid_loss"][0]



def test_weight_decay_patterns_matching_nothing_are_an_error():
    """Weight decay that would decay no parameter is refused, naming the patterns and real paths;
    the default patterns match the multi-ACE layer's weights."""
    params = {"params": {"layer_0": {"linear_up": {"w": jnp.ones((2, 3))}, "radial": {"w0": jnp.ones(3)}}}}
    opt = make_optimizer("adamw", weight_decay=1e-3, weight_decay_patterns=("no_such_layer",))
    with pytest.raises(ValueError, match=r"\['no_such_layer'\] match no parameter.*layer_0"):
        opt.init(params)
    mask = weight_decay_mask(params, TrainSettings().weight_decay_patterns)
    assert mask["params"]["layer_0"]["linear_up"]["w"] and not mask["params"]["layer_0"]["radial"]["w0"]


def test_max_minutes_stops_starts_stage_two_and_carries_over_resume(base_run, model, data, tmp_path, monkeypatch):
    import jace.training.loop as loop

    ticks = iter(range(10**6))  # a clock that advances one second every time it is read
    monkeypatch.setattr(loop, "_clock", lambda: float(next(ticks)))
    stage = StageTwo(start_fraction=0.5, energy_weight=1000.0, forces_weight=1.0, lr=1e-3)
    settings = dataclasses.replace(SETTINGS, max_minutes=0.5, stage_two=stage)  # 30 "seconds"
    result = train(model, data[0], data[1], settings, tmp_path, progress=False)
    assert result.stop_reason == "max_minutes"
    assert 0 < result.step < MAX_EPOCHS * 2
    stages = [r["stage"] for r in result.history]
    assert stages[0] == 1 and stages[-1] == 2  # stage two began halfway through the budget, by time
    assert result.history[-1]["lr"] == 1e-3
    assert result.compilations["train_step"] == 0
    spent = read_checkpoint_header(os.path.join(tmp_path, "checkpoints", "last.ckpt"))["train_elapsed_s"]
    assert spent >= 30.0
    with open(os.path.join(tmp_path, "train.log")) as fh:
        log = fh.read()
    assert "minutes is spent" in log and "of max_minutes 0.5 minutes" in log
    # The budget is carried over: a resumed run has none left and stops after one more step.
    again = train(model, data[0], data[1], settings, tmp_path, resume=True, progress=False)
    assert again.stop_reason == "max_minutes" and again.step == result.step + 1
    # A larger budget lets it go on from where it stopped.
    more = train(model, data[0], data[1], dataclasses.replace(settings, max_minutes=1.0), tmp_path, resume=True,
                 progress=False)
    assert more.step > again.step + 1


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_max_minutes_must_be_positive(bad):
    with pytest.raises(ValueError, match="max_minutes"):
        dataclasses.replace(SETTINGS, max_minutes=bad)
