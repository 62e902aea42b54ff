"""Committees trained in one vmapped program (float64, a tiny one-layer MACE on EMT Cu–Au data).

Every committee here has 3 members and the same data and settings, so the vmapped step compiles once
for the module; the single-model references reuse one compiled single-model step.
"""

import dataclasses
import json

import jax
import numpy as np
import pytest
import yaml
from physics_helpers import random_orthogonal

from jace.config import ConfigError, dump_train_config, parse_train_config, train_config_to_dict
from jace.data import io as dio
from jace.data.configuration import Configuration
from jace.data.e0 import resolve_e0
from jace.data.graph import Bucket, batch_graphs, graphs_from_configurations, pad_graph
from jace.models.design import RadialSpec
from jace.models.io import ModelFileError, ModelState, load_model, model_from_state, save_model
from jace.models.multi_ace import MultiACEModel, preset
from jace.models.potential import as_potential, predict
from jace.training import TrainSettings, TrainingError, dataset_statistics, train
from jace.training.batching import build_graphs, epoch_plan, pad_batch, plan_buckets
from jace.training.committee import Committee, CommitteeSettings, member_weights, train_committee
from jace.training.steps import TrainState, cast_params, compiled_steps

N = 3
TRAIN_IDX = (0, 1, 3, 6)  # 32, 16, 32 and 16 atoms: two batch shapes
VALID_IDX = (10, 11)
SETTINGS = TrainSettings(
    max_epochs=3, batch_size=2, valid_batch_size=2, lr=0.05, n_buckets=1, energy_weight=1.0, forces_weight=10.0,
    ema_decay=0.9, seed=1, plots=False,
)
RADIAL = RadialSpec(kind="bessel", n_max=4, envelope_p=5)
TINY = dict(num_layers=1, channels=4, l_max=1, hidden_l_max=1, correlation=(2,), radial_mlp=(8,), radial=RADIAL)


def _max_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in
               zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _member(tree, m):
    return jax.tree.map(lambda x: np.asarray(x)[m], tree)


@pytest.fixture(scope="module")
def data(emt_configs):
    return [emt_configs[i] for i in TRAIN_IDX], [emt_configs[i] for i in VALID_IDX]


@pytest.fixture(scope="module")
def model(emt_configs, cuau_species, data):
    train_set, _ = data
    isolated = [c for c in emt_configs if c.is_isolated_atom()]
    e0 = resolve_e0("isolated", cuau_species, emt_configs, isolated)
    spec = preset("mace", ("Cu", "Au"), cutoff=3.5, **TINY)
    probe = MultiACEModel(spec, e0=e0, avg_num_neighbors=1.0)
    stats = dataset_statistics(train_set, build_graphs(train_set, probe, SETTINGS), cuau_species, e0)
    return MultiACEModel(spec, e0=e0, scale=stats.scale, shift=stats.shift, avg_num_neighbors=stats.avg_num_neighbors)


def _moved(c: Configuration):
    """``c`` rotated with inversion, translated and permuted; (configuration, rotation, permutation)."""
    rng = np.random.default_rng(7)
    rot = random_orthogonal(rng, inversion=True)
    perm = rng.permutation(c.n_atoms)
    moved = dataclasses.replace(c, positions=(c.positions @ rot.T + rng.normal(size=3))[perm], numbers=c.numbers[perm],
                                cell=c.cell @ rot.T, forces=None, stress=None)
    return moved, rot, perm


@pytest.fixture(scope="module")
def graphs(model, data):
    """Padded batches in one bucket: the validation set, and valid[1] with its moved copy."""
    _, valid_set = data
    pairs = [valid_set, [valid_set[1], _moved(valid_set[1])[0]]]
    gs = [graphs_from_configurations(p, model.cutoff, model.species) for p in pairs]
    n_edge = max(sum(int(g.n_edge[0]) for g in pair) for pair in gs)
    bucket = Bucket(72, 8 * (n_edge // 8 + 1), 3)
    return bucket, [pad_graph(batch_graphs(pair), bucket) for pair in gs]


@pytest.fixture(scope="module")
def single_predict(model):
    """One jitted single-model ``predict`` taking the parameters as an argument."""
    return jax.jit(lambda p, g: predict(model.site_energies, p, g))


@pytest.fixture(scope="module")
def bootstrap(model, data, tmp_path_factory):
    """Default seeds (1, 2, 3), bootstrap subsamples."""
    train_set, valid_set = data
    out = tmp_path_factory.mktemp("committee") / "bootstrap"
    committee, result = train_committee(model, train_set, valid_set, SETTINGS,
                                        CommitteeSettings(N, "bootstrap"), out, progress=False)
    return committee, result, out


@pytest.fixture(scope="module")
def identical(model, data, tmp_path_factory):
    """Three members with one seed and all the data: three copies of one model."""
    train_set, valid_set = data
    out = tmp_path_factory.mktemp("committee") / "identical"
    return train_committee(model, train_set, valid_set, SETTINGS, CommitteeSettings(N, seeds=(1, 1, 1)), out,
                           progress=False)


# --------------------------------------------------------------------------------------------------
# Training


def _one_by_one(model, train_set, seed, weights):
    """A member trained alone: the single-model jitted step over the committee's batches (data order of
    SETTINGS.seed), parameters initialised from PRNGKey(seed), configuration weights multiplied by
    ``weights``."""
    s = SETTINGS
    optimizer, step, _, init, _ = compiled_steps(model, s, False, True)
    configs = [dataclasses.replace(c, weight=c.weight * w) for c, w in zip(train_set, weights)]
    graphs = build_graphs(configs, model, s)
    buckets = plan_buckets(graphs, s.batch_size, s.seed, s.n_buckets)
    example = pad_batch(graphs, np.arange(s.batch_size), buckets, s.batch_size, np.float64)
    params = cast_params(init(jax.random.split(jax.random.PRNGKey(seed))[1], example), np.float64)
    state = TrainState(params, params, optimizer.init(params), np.asarray(0, np.int32))
    lam = s.loss_weights().as_array(np.float64)
    for epoch in range(s.max_epochs):
        for (grp,) in epoch_plan(graphs, s.seed, epoch, s.batch_size, buckets):
            state, _ = step(state, pad_batch(graphs, grp, buckets, s.batch_size, np.float64), lam, np.float64(s.lr))
    return state


def test_vmapped_committee_equals_its_members_trained_one_by_one(model, data, graphs, single_predict, bootstrap):
    train_set, _ = data
    committee, result, _ = bootstrap
    graph = graphs[1][0]
    weights = member_weights(len(train_set), CommitteeSettings(N, "bootstrap"), SETTINGS.seed)
    assert result.compilations["train_step"] == 1  # one program (one bucket) for all members
    assert result.state.step == SETTINGS.max_epochs * 2
    members = committee.with_params(result.state.ema_params).predict(graph).members
    for m in range(N):
        alone = _one_by_one(model, train_set, SETTINGS.seed + m, weights[m])
        for field in ("params", "ema_params", "opt_state"):
            assert _max_diff(_member(getattr(result.state, field), m), getattr(alone, field)) <= 1e-10, (m, field)
        ref = single_predict(alone.ema_params, graph)
        for field in ("energy", "forces", "stress"):
            np.testing.assert_allclose(np.asarray(getattr(members, field))[m], np.asarray(getattr(ref, field)),
                                       rtol=0, atol=1e-10, err_msg=f"member {m} {field}")


def test_identical_members_equal_the_single_model_trainer_and_have_zero_spread(model, data, graphs, single_predict,
                                                                              identical, tmp_path):
    train_set, valid_set = data
    graph = graphs[1][0]
    committee, result = identical
    single = train(model, train_set, valid_set, SETTINGS, tmp_path / "single", progress=False)
    assert result.best_step == single.best_step
    for m in range(N):
        assert _max_diff(_member(result.params, m), single.params) <= 1e-10
        assert _max_diff(_member(result.state.opt_state, m), single.state.opt_state) <= 1e-10
    pred = committee.predict(graph)
    for std in (pred.energy_std, pred.forces_std, pred.stress_std):
        assert float(np.max(std)) <= 1e-10
    assert result.valid_metrics["forces_std_mean_meV_per_A"] <= 1e-7
    ref = single_predict(single.params, graph)
    np.testing.assert_allclose(np.asarray(pred.mean.energy), np.asarray(ref.energy), rtol=0, atol=1e-10)
    np.testing.assert_allclose(np.asarray(pred.mean.forces), np.asarray(ref.forces), rtol=0, atol=1e-10)


def test_spread_is_positive_and_the_mean_is_the_mean_of_the_members(bootstrap, data, graphs, single_predict):
    _, valid_set = data
    committee, result, _ = bootstrap
    graph = graphs[1][0]
    pred = committee.predict(valid_set)
    assert pred.n_members == N and pred.member_energies.shape == (len(valid_set), N)
    assert np.all(pred.energy_std > 1e-6)
    assert all(np.all(f > 1e-6) for f in pred.forces_std)
    # every member on its own, through the single-model predict (configurations in graph order)
    members = [jax.device_get(single_predict(jax.tree.map(lambda x: x[m], committee.params), graph)) for m in range(N)]
    energies = np.stack([mm.energy[: len(valid_set)] for mm in members])  # [M, n_configs]
    np.testing.assert_allclose(pred.energies, energies.mean(axis=0), rtol=0, atol=1e-10)
    np.testing.assert_allclose(pred.energy_std, energies.std(axis=0), rtol=0, atol=1e-10)
    start = 0
    for k, c in enumerate(valid_set):
        fs = np.stack([mm.forces[start : start + c.n_atoms] for mm in members])
        start += c.n_atoms
        np.testing.assert_allclose(pred.forces[k], fs.mean(axis=0), rtol=0, atol=1e-10)
        spread = np.sqrt(np.mean(np.sum((fs - fs.mean(axis=0)) ** 2, axis=-1), axis=0))
        np.testing.assert_allclose(pred.forces_std[k], spread, rtol=0, atol=1e-10)
        np.testing.assert_allclose(pred.stresses[k], np.mean([mm.stress[k] for mm in members], axis=0), atol=1e-10)
    # the metrics the trainer reports are those of the mean, with the uncertainty statistics
    m = result.valid_metrics
    assert len(m["member_valid_loss"]) == N
    assert m["energy_std_per_atom_mean_meV"] > 0 and m["forces_std_mean_meV_per_A"] > 0
    # the mean model (what a Potential runs): the derivatives of the mean site energies are the means
    pot = as_potential(committee)
    assert pot.site_energy_fn == committee.site_energies and pot.params is committee.params
    assert pot.cutoff == committee.cutoff and pot.species == committee.species
    out = committee.predict_graph(graph)
    full = committee.predict(graph)
    np.testing.assert_allclose(np.asarray(out.energy[:2]), pred.energies, rtol=0, atol=1e-10)
    for field in ("energy", "forces", "stress", "site_energies"):
        np.testing.assert_allclose(np.asarray(getattr(out, field)), np.asarray(getattr(full.mean, field)),
                                   rtol=0, atol=1e-10, err_msg=field)


def test_spread_is_invariant_and_unchanged_by_padding(bootstrap, data, graphs):
    _, valid_set = data
    committee, _, _ = bootstrap
    (_, (_, graph)), c = graphs, valid_set[1]
    _, rot, perm = _moved(c)
    n = c.n_atoms
    pred = jax.device_get(committee.predict(graph))  # c and its rotated (with inversion), moved, permuted copy
    np.testing.assert_allclose(pred.energy_std[1], pred.energy_std[0], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(pred.forces_std[n : 2 * n], pred.forces_std[:n][perm], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(pred.mean.forces[n : 2 * n], (pred.mean.forces[:n] @ rot.T)[perm], atol=1e-10)
    np.testing.assert_allclose(np.sum(pred.stress_std[1] ** 2), np.sum(pred.stress_std[0] ** 2), rtol=1e-9)
    np.testing.assert_allclose(pred.mean.stress[1], rot @ pred.mean.stress[0] @ rot.T, atol=1e-10)
    # padding: the per-configuration path pads the validation set to another bucket than ``graphs``
    padded = jax.device_get(committee.predict(graphs[1][0]))
    other = committee.predict(valid_set)  # a bucket of 17 graphs, no extra compilation (the spread test made it)
    assert other.member_energies.shape == (2, N)
    np.testing.assert_allclose(other.energy_std, padded.energy_std[:2], rtol=0, atol=1e-12)
    np.testing.assert_allclose(other.member_energies, padded.members.energy[:, :2].T, rtol=0, atol=1e-12)
    na = valid_set[0].n_atoms
    np.testing.assert_allclose(np.concatenate(other.forces_std), padded.forces_std[: na + n], rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.concatenate(other.forces), padded.mean.forces[: na + n], rtol=0, atol=1e-12)


def test_subsample_weights():
    boot = member_weights(10, CommitteeSettings(4, "bootstrap"), seed=3)
    assert boot.shape == (4, 10) and np.all(boot.sum(axis=1) == 10)
    assert np.all(boot == np.round(boot)) and len({tuple(r) for r in boot}) == 4
    sub = member_weights(10, CommitteeSettings(4, 0.7), seed=3)
    assert np.all(np.count_nonzero(sub, axis=1) == 7)
    np.testing.assert_allclose(sub.sum(axis=1), 10.0)
    np.testing.assert_allclose(sub[sub > 0], 10 / 7)
    np.testing.assert_array_equal(sub, member_weights(10, CommitteeSettings(4, 0.7), seed=3))  # reproducible
    assert not np.array_equal(sub, member_weights(10, CommitteeSettings(4, 0.7), seed=4))
    assert np.all(member_weights(10, CommitteeSettings(2), seed=3) == 1.0)
    assert np.all(member_weights(10, CommitteeSettings(2, 1.0), seed=3) == 1.0)


def test_resume_continues_exactly_and_refuses_another_committee(model, data, bootstrap, tmp_path):
    train_set, valid_set = data
    _, whole, _ = bootstrap
    cs = CommitteeSettings(N, "bootstrap")
    _, first = train_committee(model, train_set, valid_set, SETTINGS, cs, tmp_path / "run", progress=False,
                               callback=lambda row: row["epoch"] >= 1)
    assert first.stop_reason == "callback" and first.epoch == 1
    _, second = train_committee(model, train_set, valid_set, SETTINGS, cs, tmp_path / "run", resume=True,
                                progress=False)
    assert second.step == whole.step and second.compilations["train_step"] == 0
    for field in ("params", "ema_params", "opt_state"):
        assert _max_diff(getattr(second.state, field), getattr(whole.state, field)) <= 1e-12, field
    with pytest.raises(TrainingError, match="committee.subsample was 'bootstrap', now 0.5"):
        train_committee(model, train_set, valid_set, SETTINGS, CommitteeSettings(N, 0.5), tmp_path / "run",
                        resume=True, progress=False)


# --------------------------------------------------------------------------------------------------
# Files


def test_save_load_round_trip(bootstrap, tmp_path):
    committee, _, _ = bootstrap
    path = tmp_path / "committee.jace"
    save_model(path, committee)
    loaded = load_model(path)
    assert isinstance(loaded, Committee) and loaded.n_members == N
    assert loaded.member.spec == committee.member.spec and loaded.cutoff == committee.cutoff
    assert _max_diff(loaded.params, committee.params) == 0.0
    for attr in ("e0", "scale", "shift", "avg_num_neighbors"):
        np.testing.assert_array_equal(getattr(loaded.member, attr), getattr(committee.member, attr))
    pot = as_potential(path)
    assert pot.model.n_members == N and _max_diff(pot.params, committee.params) == 0.0

    state = ModelState("committee", *committee.to_state())
    bad = dict(state.arrays)
    key = next(k for k in bad if k.startswith("params/"))
    bad[key] = bad[key][:2]
    with pytest.raises(ModelFileError, match=f"bad.jace: .*{key}.* leading axis of {N}"):
        model_from_state(state._replace(arrays=bad), "bad.jace")


# --------------------------------------------------------------------------------------------------
# Settings, configs and the command line


@pytest.mark.parametrize("kw, needle", [
    (dict(n_members=0), "committee.n_members must be a positive integer, got 0"),
    (dict(n_members=2.5), "committee.n_members must be a positive integer, got 2.5"),
    (dict(n_members=2, subsample=0.0), "committee.subsample must be a fraction in (0, 1], got 0.0"),
    (dict(n_members=2, subsample=1.5), "committee.subsample must be a fraction in (0, 1], got 1.5"),
    (dict(n_members=2, subsample="jackknife"), "committee.subsample must be null, 'bootstrap' or a fraction"),
    (dict(n_members=2, seeds=(1, 2, 3)), "committee.seeds must give one seed per member (2), got 3"),
])
def test_bad_committee_settings(kw, needle):
    with pytest.raises(ValueError) as info:
        CommitteeSettings(**kw)
    assert needle in str(info.value)


TINY_MODEL = {"type": "ace", "elements": ["Cu", "Au"], "cutoff": 3.5, "radial": {"n_max": 3}, "l_max": 1,
              "correlation": 2, "max_degree": [4, 3]}


def _config(out, committee, **training):
    return {
        "seed": 1, "precision": "float64", "output_dir": str(out), "model": dict(TINY_MODEL),
        "data": {"train": "train.xyz", "validation": "valid.xyz", "test": {"test": "test.xyz"}},
        "training": {"max_epochs": 1, "batch_size": 2, "valid_batch_size": 4, "n_buckets": 1, "plots": False,
                     "committee": committee, **training},
    }


@pytest.mark.parametrize("committee, extra, needle", [
    ({"n_members": 0}, {}, "c.yaml: training.committee.n_members must be a positive integer, got 0"),
    ({"n_members": 2, "subsample": 1.2}, {}, "training.committee.subsample must be a fraction in (0, 1], got 1.2"),
    ({"n_members": 2, "subsample": -0.5}, {}, "training.committee.subsample must be a fraction in (0, 1], got -0.5"),
    ({"n_members": 2, "subsample": "bootstrapp"}, {}, "(did you mean 'bootstrap'?)"),
    ({"subsample": 0.5}, {}, "missing required key 'training.committee.n_members'"),
    ({"n_members": 2, "seed": [1, 2]}, {}, "unknown key 'training.committee.seed' (did you mean 'seeds'?)"),
    ({"n_members": 2, "seeds": [1]}, {}, "training.committee.seeds must give one seed per member (2), got 1"),
    ({"n_members": 2}, {"data_parallel": True}, "training.committee cannot be combined with training.data_parallel"),
])
def test_bad_committee_config_names_the_key(committee, extra, needle, tmp_path):
    with pytest.raises(ConfigError) as info:
        parse_train_config(_config(tmp_path, committee, **extra), file="c.yaml", check_paths=False)
    assert needle in str(info.value)


def test_committee_config_round_trips(tmp_path):
    cfg = parse_train_config(_config(tmp_path, {"n_members": 3, "subsample": 0.8, "seeds": [4, 5, 6]}),
                             file="c.yaml", check_paths=False)
    assert cfg.training.committee == CommitteeSettings(3, 0.8, (4, 5, 6))
    again = parse_train_config(yaml.safe_load(dump_train_config(cfg)), file="c.yaml", check_paths=False)
    assert again.training == cfg.training
    plain = parse_train_config(_config(tmp_path, None), file="c.yaml", check_paths=False)
    assert plain.training.committee is None and "committee" not in train_config_to_dict(plain)["training"]


def test_linear_ace_and_data_parallel_committees_are_refused(data, tmp_path):
    from jace.models.linear_ace import LinearACEModel

    train_set, valid_set = data
    lin = LinearACEModel.__new__(LinearACEModel)  # only its methods matter here
    with pytest.raises(TypeError, match="LinearACEModel has no init .linear ACE is fitted by least squares"):
        train_committee(lin, train_set, valid_set, SETTINGS, 2, tmp_path, progress=False)
    with pytest.raises(ValueError, match="data_parallel cannot be combined with a committee"):
        train_committee(MultiACEModel.__new__(MultiACEModel), train_set, valid_set,
                        dataclasses.replace(SETTINGS, data_parallel=True), 2, tmp_path, progress=False)


def test_cli_trains_and_evaluates_a_committee(emt_configs, tmp_path, capsys):
    import ase.io

    from jace.cli import main

    isolated = [c for c in emt_configs if c.is_isolated_atom()]  # for E0
    dio.write_configurations(tmp_path / "train.xyz", [emt_configs[i] for i in (0, 1, 3, 6)] + isolated)
    dio.write_configurations(tmp_path / "valid.xyz", [emt_configs[i] for i in (10, 11)])
    dio.write_configurations(tmp_path / "test.xyz", [emt_configs[i] for i in (12, 13)])
    cfg_path = tmp_path / "committee.yaml"
    cfg_path.write_text(yaml.safe_dump(_config(tmp_path / "run", {"n_members": 2, "subsample": 0.75})))
    assert main(["train", str(cfg_path)]) == 0
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    for name in ("train", "validation", "test"):
        for key in ("energy_std_per_atom_mean_meV", "forces_std_mean_meV_per_A", "forces_rmse_meV_per_A"):
            assert metrics[name][key] > 0, (name, key)
    fit = metrics["fit"]
    assert fit["n_members"] == 2 and fit["subsample"] == 0.75 and fit["seeds"] == [1, 2]
    assert len(fit["member_valid_loss"]) == 2 and fit["forces_std_mean_meV_per_A"] > 0
    model = load_model(run / "model.jace")
    assert isinstance(model, Committee) and model.n_members == 2

    out, xyz = tmp_path / "m.json", tmp_path / "pred.xyz"
    assert main(["eval", str(run / "model.jace"), str(tmp_path / "test.xyz"), "--out", str(out),
                 "--predictions", str(xyz)]) == 0
    assert "mean force std" in capsys.readouterr().out
    evaluated = json.loads(out.read_text())
    for key in ("energy_rmse_meV", "forces_rmse_meV_per_A", "energy_std_per_atom_mean_meV",
                "forces_std_mean_meV_per_A"):
        assert evaluated[key] == pytest.approx(metrics["test"][key], rel=1e-9)
    images = ase.io.read(xyz, index=":")
    test_set = list(dio.read_configurations(tmp_path / "test.xyz"))  # positions as written (8 decimals)
    pred = model.predict(test_set)
    for k, atoms in enumerate(images):
        assert atoms.info["energy_std"] == pytest.approx(pred.energy_std[k], rel=1e-9)
        assert atoms.info["jace_energy"] == pytest.approx(pred.energies[k], rel=1e-12)
        np.testing.assert_allclose(atoms.arrays["forces_std"], pred.forces_std[k], rtol=0, atol=1e-8)  # 8 decimals
        np.testing.assert_allclose(atoms.arrays["jace_forces"], pred.forces[k], rtol=0, atol=1e-8)
        np.testing.assert_allclose(atoms.get_forces(), test_set[k].forces, atol=1e-6)  # the labels are kept
