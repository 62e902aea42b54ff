"""The neural (multi-ACE) models through configs and the command line, on tiny EMT Cu–Au data.

Config parsing (every MultiACESpec / TrainSettings field is a key, presets give the defaults,
round trips, hidden_irreps, messages that name the key) and cheap failures run in this process.
The runs that compile (``jace train``, ``--resume``, a diverging run, ``jace eval``, ``jace ablate``)
run as ``python -m jace.cli`` subprocesses sharing a persistent XLA compilation cache in a temporary
directory: the same program (the same model on the same data) compiles once for all of them, and
this process's JAX settings stay untouched.
"""

import dataclasses
import glob
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
import yaml

from jace.cli import EXIT_USAGE, main
from jace.config import (
    MULTI_ACE_TYPES,
    ConfigError,
    dump_train_config,
    load_train_config,
    model_types,
    parse_train_config,
    train_config_to_dict,
)
from jace.data import io as dio
from jace.data.synthetic import make_emt_dataset, make_emt_splits

ENERGY_KEYS = ("energy_mae_meV", "energy_rmse_meV", "energy_per_atom_mae_meV", "energy_per_atom_rmse_meV")
FORCES_KEYS = ("forces_mae_meV_per_A", "forces_rmse_meV_per_A")
STRESS_KEYS = ("stress_mae_meV_per_A3", "stress_rmse_meV_per_A3")
EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")

TINY_MACE = {
    "type": "mace",
    "elements": ["Cu", "Au"],
    "cutoff": 4.0,
    "radial": {"n_max": 4},
    "radial_mlp": [8],
    "num_layers": 1,  # one layer compiles in half the time of two; the layer stack is tested in test_multi_ace
    "hidden_irreps": "4x0e+4x1o",
    "l_max": 1,
    "correlation": 2,
}
TINY_TRAINING = {"max_epochs": 1, "batch_size": 4, "valid_batch_size": 8, "n_buckets": 1, "lr": 0.01, "plots": False}


def _config(train="train.xyz", output_dir="run", model=None, training=None, **data):
    return {
        "seed": 0,
        "precision": "float64",
        "output_dir": str(output_dir),
        "model": dict(TINY_MACE if model is None else model),
        "data": {"train": str(train), "validation_fraction": 0.2, **data},
        "training": dict(TINY_TRAINING if training is None else training),
    }


def _write_yaml(path, cfg):
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _parse(cfg):
    return parse_train_config(cfg, file="c.yaml", check_paths=False)


def _parse_error(cfg) -> str:
    with pytest.raises(ConfigError) as info:
        _parse(cfg)
    return str(info.value)


# --------------------------------------------------------------------------------------------------
# Config: schema, presets, round trips


def test_every_spec_and_settings_field_is_a_key():
    from jace.config import _MULTI_ACE_FIELDS, _TRAINING_FIELDS, GRACE_TYPES
    from jace.models.design import MultiACESpec
    from jace.models.multi_ace import MODEL_NAMES
    from jace.training.settings import TrainSettings

    assert set(MULTI_ACE_TYPES) == set(MODEL_NAMES)
    assert set(MULTI_ACE_TYPES) | set(GRACE_TYPES) | {"linear_ace"} == set(model_types())
    assert set(_MULTI_ACE_FIELDS) == {f.name for f in dataclasses.fields(MultiACESpec)}
    assert set(_TRAINING_FIELDS) | {"seed", "dtype"} == {f.name for f in dataclasses.fields(TrainSettings)}


@pytest.mark.parametrize("name", ["ace", "nequip", "botnet", "mace", "multi_ace"])
def test_preset_gives_defaults_and_round_trips(name):
    from jace.models.multi_ace import preset

    cfg = _parse(_config(model={"type": name, "elements": ["Cu", "Au"]}))
    assert cfg.model_type == name and cfg.fit is None
    assert cfg.model == preset(name, ("Cu", "Au"))
    assert cfg.training.settings.seed == 0 and cfg.training.settings.dtype == "float64"
    back = parse_train_config(yaml.safe_load(dump_train_config(cfg)), file="c.yaml", check_paths=False)
    assert back.model == cfg.model and back.training == cfg.training and back.data == cfg.data


def test_yaml_overrides_the_preset():
    cfg = _parse(_config(model={**TINY_MACE, "type": "nequip", "num_layers": 3, "radial": {"n_max": 5},
                                "nonlinearity": False, "avg_num_neighbors": 12}))
    m = cfg.model
    assert (m.channels, m.hidden_l_max, m.l_max, m.num_layers) == (4, 1, 1, 3)
    assert m.correlation == (2, 2, 2)  # one number for every layer
    assert m.radial.n_max == 5 and m.radial.envelope_p == 6  # the rest of the radial spec from the preset
    assert m.nonlinearity == "none" and m.avg_num_neighbors == 12.0
    assert m.radial_mlp == (8,)
    cfg = _parse(_config(model={**TINY_MACE, "num_layers": 2, "correlation": [3, 1], "avg_num_neighbors": None}))
    assert cfg.model.correlation == (3, 1) and cfg.model.avg_num_neighbors is None
    ace = _parse(_config(model={"type": "ace", "elements": ["Cu"], "correlation": 2, "max_degree": 7})).model
    assert ace.correlation == (2,) and ace.max_degree == (7.0, 7.0)


def test_training_section_maps_onto_train_settings():
    from jace.training.optim import StageTwo

    training = {
        "max_epochs": 5, "optimizer": "amsgrad", "lr": "1e-3", "schedule": "plateau", "clip_norm": None,
        "ema_decay": None, "patience": 3, "weight_decay_patterns": "product", "max_minutes": 90,
        "config_type_weights": {"bulk_300K": 2, "bulk_600K": {"forces": 0.5}},
        "stage_two": {"start_fraction": 0.5, "energy_weight": 100, "stress_weight": None, "lr": 1e-4},
        "e0": {"Cu": -0.1, "Au": -0.2}, "precision": "float32",
    }
    raw = _config(training=training)
    del raw["precision"]
    cfg = _parse(raw)
    s = cfg.training.settings
    assert (s.max_epochs, s.optimizer, s.lr, s.schedule, s.clip_norm, s.ema_decay, s.patience) == (
        5, "amsgrad", 1e-3, "plateau", None, None, 3)
    assert s.weight_decay_patterns == ("product",) and s.dtype == "float32" and cfg.precision == "float32"
    assert s.max_minutes == 90.0
    assert s.config_type_weights == {"bulk_300K": 2.0, "bulk_600K": {"forces": 0.5}}
    assert s.stage_two == StageTwo(start_fraction=0.5, energy_weight=100.0, forces_weight=100.0, lr=1e-4)
    assert cfg.training.e0 == {"Cu": -0.1, "Au": -0.2}
    back = _parse(train_config_to_dict(cfg))
    assert back.training == cfg.training and back.precision == "float32"
    assert _parse(_config(training={"stage_two": True})).training.settings.stage_two == StageTwo()


@pytest.mark.parametrize(
    "irreps, channels, l_top",
    [("8x0e", 8, 0), ("16x0e+16x1o", 16, 1), ("4x1o+4x0e+4x2e", 4, 2), ("2x0e+2x0e+4x1o", 4, 1)],
)
def test_hidden_irreps(irreps, channels, l_top):
    m = _parse(_config(model={**TINY_MACE, "hidden_irreps": irreps})).model
    assert (m.channels, m.hidden_l_max) == (channels, l_top)


@pytest.mark.parametrize(
    "irreps, why",
    [
        ("32x0e+16x1o", "unequal multiplicities (32 for L = 0, 16 for L = 1)"),
        ("32x0e+32x2e", "no features with L = 1"),
        ("32x0e+32x1e", "1e, which is not of natural parity"),
        ("32x0o", "0o, which is not of natural parity"),
        ("0x0e", "is empty"),
        ("", "must be an irreps string"),
        ("32 scalars", "is not an irreps string"),
        (32, "must be an irreps string"),
    ],
)
def test_incompatible_hidden_irreps(irreps, why):
    msg = _parse_error(_config(model={**TINY_MACE, "hidden_irreps": irreps}))
    assert msg.startswith("c.yaml: model.hidden_irreps")
    assert why in msg


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"model": {**TINY_MACE, "type": "mcae"}}, "unknown model type 'mcae' (did you mean 'mace'?)"),
        ({"model": {**TINY_MACE, "chanels": 8}}, "unknown key 'model.chanels' (did you mean 'channels'?)"),
        ({"model": {**TINY_MACE, "channels": 8}}, "give either model.hidden_irreps or model.channels, not both"),
        ({"model": {**TINY_MACE, "nonlinearity": "gat"}}, "model.nonlinearity must be one of none, gate; got 'gat' (did you mean 'gate'?)"),
        ({"model": {**TINY_MACE, "correlation": [2, 2]}}, "model.correlation needs one entry per layer (1)"),
        ({"model": {**TINY_MACE, "avg_num_neighbors": "aut"}}, "model.avg_num_neighbors must be a number, null or 'auto'"),
        ({"model": {**TINY_MACE, "radial": {"n_mx": 4}}}, "unknown key 'model.radial.n_mx' (did you mean 'n_max'?)"),
        ({"model": {**TINY_MACE, "residual": "elemental"}}, "model.residual must be one of none, linear, element"),
        ({"training": {"lrr": 0.1}}, "unknown key 'training.lrr' (did you mean 'lr'?)"),
        ({"training": {"stage_two": {"lr_": 1}}}, "unknown key 'training.stage_two.lr_' (did you mean 'lr'?)"),
        ({"training": {"stage_two": {"lr": -1}}}, "training.stage_two.lr must be positive"),
        ({"training": {"max_epochs": 0}}, "training.max_epochs must be a positive integer"),
        ({"training": {"max_minutes": 0}}, "c.yaml: training.max_minutes must be a positive number of minutes"),
        ({"training": {"max_minutes": "an hour"}}, "c.yaml: training.max_minutes must be a number, got 'an hour'"),
        ({"training": {"dtype": "float32"}}, "unknown key 'training.dtype': use 'precision'"),
        ({"training": {"seed": 3}}, "unknown key 'training.seed': use the top-level 'seed'"),
        ({"training": {"precision": "float32"}}, "precision is float64 but training.precision is float32"),
        ({"training": {"e0": {"Cu": 1.0}}}, "training.e0 gives no reference energy for Au"),
        ({"training": {"weight_decay_patterns": ["(unclosed"]}}, "is not a regular expression"),
        ({"fit": {"lam": 1.0}}, "unexpected section 'fit': model type 'mace' is trained by gradient descent"),
        ({"data": {"train": "t.xyz"}}, "needs a validation set"),
    ],
)
def test_bad_config_names_the_key(change, needle):
    assert needle in _parse_error({**_config(), **change})


def test_training_section_for_linear_ace_is_refused():
    raw = {"model": {"type": "linear_ace", "elements": ["Cu"]}, "data": {"train": "t.xyz"}, "training": {}}
    assert "unexpected section 'training': model type 'linear_ace' is fitted by linear least squares" in _parse_error(raw)


# --------------------------------------------------------------------------------------------------
# Example configs


def _example_files():
    return sorted(glob.glob(os.path.join(EXAMPLES, "*.yaml")))


def test_every_example_config_parses():
    from jace.diagnostics.sweep import load_sweep

    names = {os.path.basename(p) for p in _example_files()}
    for model in ("ace", "nequip", "botnet", "mace"):
        assert {f"{model}_acac.yaml", f"{model}_ethanol.yaml"} <= names
    assert "ablation_acac.yaml" in names
    for path in _example_files():
        if os.path.basename(path).startswith("ablation"):
            sweep = load_sweep(path, check_paths=False)
            sweep.check_configs()
            assert len(sweep.expand()) >= 2
            continue
        cfg = load_train_config(path, check_paths=False)
        if cfg.model_type != "linear_ace":
            assert cfg.training is not None
            assert cfg.data.validation is not None or cfg.data.validation_fraction > 0
        if os.path.isfile(cfg.data.train):  # the shared data sets exist here: check every path for real
            load_train_config(path)


def test_example_data_paths_resolve_against_the_config():
    cfg = load_train_config(os.path.join(EXAMPLES, "mace_acac.yaml"), check_paths=False)
    shared = os.path.normpath(os.path.join(EXAMPLES, "..", "..", "shared", "data", "acac"))
    assert cfg.data.train == os.path.join(shared, "train_300K.xyz")
    assert cfg.data.isolated_atoms == os.path.join(shared, "isolated_atoms.xyz")
    assert cfg.data.test == {"test_MD_300K": os.path.join(shared, "test_MD_300K.xyz")}
    ethanol = load_train_config(os.path.join(EXAMPLES, "mace_ethanol.yaml"), check_paths=False)
    assert ethanol.data.validation_fraction == 0.05  # 950 train + 50 validation


# --------------------------------------------------------------------------------------------------
# Data and subprocess runs


def _cluster():
    from ase import Atoms

    # a Cu2Au2 tetrahedron: every pair bonded (bond and dimer scans; no rotatable dihedral)
    pos = [[0.0, 0.0, 0.0], [2.6, 0.0, 0.0], [1.3, 2.252, 0.0], [1.3, 0.751, 2.123]]
    return Atoms("Cu2Au2", positions=pos, pbc=False)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    import ase.io

    d = tmp_path_factory.mktemp("multi_ace_cli")
    train, test = make_emt_splits(n_train=10, n_test=4, seed=5)
    hot = make_emt_dataset(n_configs=3, seed=11, temperatures=(1500.0,), max_strain=0.06, include_isolated=False)
    dio.write_configurations(d / "train.xyz", train)
    dio.write_configurations(d / "test.xyz", test)
    dio.write_configurations(d / "ood.xyz", hot)
    ase.io.write(d / "cluster.xyz", _cluster())
    (d / "xla_cache").mkdir()
    return d


def _jace(data_dir, *args, timeout=600):
    """``python -m jace.cli *args`` with the module's compilation cache; returns CompletedProcess."""
    env = dict(os.environ)
    env.update({
        "JAX_COMPILATION_CACHE_DIR": str(data_dir / "xla_cache"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    })
    return subprocess.run([sys.executable, "-m", "jace.cli", *map(str, args)], cwd=data_dir, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _ok(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def trained(data_dir):
    """``jace train`` once for a tiny MACE (1 epoch); relative data paths resolve against the YAML."""
    cfg_path = _write_yaml(data_dir / "mace.yaml", _config(output_dir="run", test={"test": "test.xyz"}))
    proc = _ok(_jace(data_dir, "train", cfg_path))
    return {"dir": data_dir / "run", "config": cfg_path, "data": data_dir, "stdout": proc.stdout}


def test_train_writes_model_metrics_and_config(trained):
    run = trained["dir"]
    for name in ("model.jace", "metrics.json", "config.yaml", "train.log", "metrics.csv", "checkpoints/best.ckpt"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {"train", "validation", "test", "fit"}
    for name in ("train", "validation", "test"):
        for key in ENERGY_KEYS + FORCES_KEYS + STRESS_KEYS:
            assert np.isfinite(metrics[name][key]), (name, key)
    assert (metrics["train"]["n_configs"], metrics["validation"]["n_configs"], metrics["test"]["n_configs"]) == (8, 2, 4)
    fit = metrics["fit"]
    assert fit["model_type"] == "mace" and fit["epochs"] == 1 and fit["steps"] == 2 and fit["n_params"] > 100
    assert fit["avg_num_neighbors"] > 1 and fit["scale"] > 0 and set(fit["e0"]) == {"Cu", "Au"}
    out = trained["stdout"]
    assert "training:" in out and "E/atom RMSE" in out and str(run / "model.jace") in out

    written = load_train_config(run / "config.yaml")
    original = load_train_config(trained["config"])
    assert written.model == original.model and written.training == original.training
    assert written.data == original.data and written.output_dir == str(run)


def test_saved_model_loads_and_eval_reproduces_test_metrics(trained, tmp_path):
    from jace.models.io import load_model
    from jace.models.multi_ace import MultiACEModel

    model = load_model(trained["dir"] / "model.jace")
    assert isinstance(model, MultiACEModel)
    assert model.spec == load_train_config(trained["config"]).model
    assert model.metadata["model_type"] == "mace" and model.metadata["epochs"] == 1

    out = tmp_path / "m.json"
    proc = _ok(_jace(trained["data"], "eval", trained["dir"] / "model.jace", "test.xyz", "--out", out))
    assert "evaluated 4 configurations" in proc.stdout
    from_eval = json.loads(out.read_text())
    from_train = json.loads((trained["dir"] / "metrics.json").read_text())["test"]
    assert set(from_eval) == set(from_train)
    for key in ENERGY_KEYS + FORCES_KEYS + STRESS_KEYS:  # other padding, same numbers up to rounding
        np.testing.assert_allclose(from_eval[key], from_train[key], rtol=1e-8, err_msg=key)


def test_resume_continues_a_finished_run(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained["dir"], run)
    first = json.loads((run / "metrics.json").read_text())["fit"]
    cfg = _config(train=trained["data"] / "train.xyz", output_dir=run, training={**TINY_TRAINING, "max_epochs": 2})
    cfg_path = _write_yaml(tmp_path / "more.yaml", cfg)
    _ok(_jace(trained["data"], "train", cfg_path, "--resume"))
    log = (run / "train.log").read_text()
    assert f"resumed from {run / 'checkpoints' / 'last.ckpt'} at step 2, epoch 1" in log
    fit = json.loads((run / "metrics.json").read_text())["fit"]
    assert (fit["epochs"], fit["steps"]) == (2, 2 * first["steps"])
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3  # header, epoch 1 (before), epoch 2 (resumed)


def test_diverging_run_is_a_clear_error_and_keeps_the_last_good_checkpoint(data_dir):
    from jace.training.checkpoint import load_checkpoint_params, read_checkpoint_header

    # one good epoch, then a learning rate of 1e30 from the second (stage two)
    training = {**TINY_TRAINING, "max_epochs": 2, "stage_two": {"start_fraction": 0.5, "lr": 1e30}}
    cfg_path = _write_yaml(data_dir / "nan.yaml", _config(output_dir="run_nan", training=training))
    proc = _jace(data_dir, "train", cfg_path)
    assert proc.returncode == EXIT_USAGE
    err = proc.stderr
    assert err.startswith("jace: error: "), err
    assert "nan.yaml" in err and "training diverged" in err and "epoch 2" in err
    assert "last good checkpoint" in err and "Traceback" not in err
    last = data_dir / "run_nan" / "checkpoints" / "last.ckpt"
    assert read_checkpoint_header(last)["epoch"] == 1
    params = load_checkpoint_params(last)
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree_util.tree_leaves(params))
    assert not (data_dir / "run_nan" / "model.jace").exists()


# --------------------------------------------------------------------------------------------------
# Failures that stop before anything is compiled (in this process)


def _fails(argv, capsys, *needles):
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == EXIT_USAGE, err
    assert err.startswith("jace: error:"), err
    for needle in needles:
        assert needle in err, (needle, err)
    assert "Traceback" not in err
    return err


def test_cli_bad_model_name_key_and_irreps(data_dir, tmp_path, capsys):
    cfg = _config(train=data_dir / "train.xyz", output_dir=tmp_path / "r", model={**TINY_MACE, "type": "mcae"})
    _fails(["train", _write_yaml(tmp_path / "a.yaml", cfg)], capsys, "a.yaml", "unknown model type 'mcae' (did you mean 'mace'?)")
    cfg["model"] = {**TINY_MACE, "num_layer": 2}
    _fails(["train", _write_yaml(tmp_path / "b.yaml", cfg)], capsys, "b.yaml", "'model.num_layer' (did you mean 'num_layers'?)")
    cfg["model"] = {**TINY_MACE, "hidden_irreps": "8x0e+4x1o"}
    _fails(["train", _write_yaml(tmp_path / "c.yaml", cfg)], capsys, "c.yaml", "model.hidden_irreps", "unequal multiplicities")


def test_cli_data_without_forces_while_forces_are_weighted(tmp_path, capsys):
    configs = make_emt_dataset(n_configs=4, seed=1)
    for c in configs:
        c.forces = None
    dio.write_configurations(tmp_path / "noforces.xyz", configs)
    cfg = _config(train=tmp_path / "noforces.xyz", output_dir=tmp_path / "r")
    _fails(["train", _write_yaml(tmp_path / "c.yaml", cfg)], capsys, "noforces.xyz:", "no forces",
           "forces are weighted (forces_weight=100)", "forces_weight: 0")
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_cli_existing_run_needs_resume(trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained["dir"], run)
    cfg = _config(train=trained["data"] / "train.xyz", output_dir=run)
    _fails(["train", _write_yaml(tmp_path / "c.yaml", cfg)], capsys, str(run), "--resume")


def test_cli_resume_is_refused_for_linear_ace(data_dir, tmp_path, capsys):
    cfg = {"model": {"type": "linear_ace", "elements": ["Cu", "Au"]}, "output_dir": str(tmp_path / "r"),
           "data": {"train": str(data_dir / "train.xyz")}}
    _fails(["train", _write_yaml(tmp_path / "c.yaml", cfg), "--resume"], capsys, "--resume is for the neural model types")


# --------------------------------------------------------------------------------------------------
# jace ablate


@pytest.fixture(scope="module")
def ablation(trained):
    d = trained["data"]
    sweep = {
        "base": "mace.yaml",  # the trained config: its correlation-2 point reuses the compiled programs
        "grid": {"model.correlation": [1, 2]},
        "points": [{"name": "diverges", "training.lr": 1.0e30}],
        "seeds": [0],
        "budget": {"max_epochs": 1},
        "test_sets": {"in_domain": "test.xyz", "ood": "ood.xyz"},
        "scans": {"molecule": "cluster.xyz"},
        "out_dir": "sweep",
    }
    path = _write_yaml(d / "sweep.yaml", sweep)
    proc = _ok(_jace(d, "ablate", path))
    return {"dir": d / "sweep", "sweep": path, "data": d, "stdout": proc.stdout}


def test_ablate_writes_results_table_and_plots(ablation):
    from jace.diagnostics.tables import load_ablation_results

    out = ablation["dir"]
    records = {r.name: r for r in load_ablation_results(out / "results.json")}
    assert set(records) == {"correlation=1", "correlation=2", "diverges"}
    for name in ("correlation=1", "correlation=2"):
        r = records[name]
        assert r.status == "ok" and r.message is None, r.message
        assert r.n_params > 100 and r.train_seconds > 0
        assert set(r.metrics) == {"in_domain", "ood"}
        assert r.metrics["in_domain"]["n_configs"] == 4 and r.metrics["ood"]["n_configs"] == 3
        for key in ENERGY_KEYS + FORCES_KEYS:
            assert np.isfinite(r.metrics["ood"][key])
        assert set(r.roughness) == {"bond", "dimer"}  # the tetrahedron has no rotatable dihedral
        assert all(np.isfinite(v["roughness"]) for v in r.roughness.values())
    assert records["correlation=1"].n_params < records["correlation=2"].n_params
    assert records["correlation=1"].overrides == {"model.correlation": 1}
    bad = records["diverges"]
    assert bad.status == "diverged" and "training diverged" in bad.message and not bad.metrics

    table = (out / "table.md").read_text()
    assert "in_domain E (meV/atom)" in table and "ood F (meV/Å)" in table and "bond ∫E''²" in table
    lines = [line for line in table.splitlines() if line.startswith("| correlation=") or line.startswith("| diverges")]
    assert len(lines) == 3 and lines[-1].startswith("| diverges") and "diverged" in lines[-1]
    assert "| correlation=" in ablation["stdout"]
    for png in ("scan_bond.png", "scan_dimer.png", "roughness.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    for point in ("correlation=1,seed=0", "correlation=2,seed=0"):
        assert (out / point / "model.jace").is_file() and (out / point / "scans.json").is_file()


def test_ablate_again_skips_the_points_done(ablation):
    before = (ablation["dir"] / "results.json").read_text()
    proc = _ok(_jace(ablation["data"], "ablate", ablation["sweep"]))
    assert proc.stdout.count("done before") == 3
    assert (ablation["dir"] / "results.json").read_text() == before
    assert (ablation["dir"] / "scan_bond.png").is_file()


def test_ablate_budget_and_divergence_handling(data_dir, tmp_path, monkeypatch):
    """budget.max_epochs replaces training.max_epochs, budget.minutes stops training at the first
    evaluation past it (through the trainer's callback), and a TrainingError marks the point diverged
    while the sweep goes on (the trainer is replaced here: nothing is compiled)."""
    import time

    import jace.training.pipeline as pipeline
    from jace.diagnostics.ablation import run_ablation
    from jace.diagnostics.sweep import load_sweep
    from jace.training.loop import TrainingError

    seen = []

    def fake_train(cfg, data, out_dir, resume=False, progress=False, callback=None, settings=None, log=print):
        time.sleep(0.01)
        seen.append((cfg.training.settings.max_epochs, callback({"step": 2}), cfg.model.correlation, resume))
        raise TrainingError("training diverged: the loss is nan at step 2 (epoch 1, step 2 of 2 in the epoch); "
                            "no checkpoint was written yet. Try a smaller learning rate")

    monkeypatch.setattr(pipeline, "train_multi_ace", fake_train)
    _write_yaml(tmp_path / "base.yaml", _config(train=data_dir / "train.xyz"))
    sweep = {"base": "base.yaml", "grid": {"model.correlation": [1, 2]}, "budget": {"max_epochs": 3, "minutes": 1e-5},
             "test_sets": {"in_domain": str(data_dir / "test.xyz")}, "out_dir": "out"}
    lines = []
    records = run_ablation(load_sweep(_write_yaml(tmp_path / "sweep.yaml", sweep)), log=lines.append)
    assert seen == [(3, True, (1,), False), (3, True, (2,), False)]
    assert [(r.name, r.status) for r in records] == [("correlation=1", "diverged"), ("correlation=2", "diverged")]
    assert records[0].message.startswith("training diverged") and "Try" not in records[0].message
    assert "[2/2] correlation=2: diverged" in "\n".join(lines)
    assert (tmp_path / "out" / "results.json").is_file() and "diverged" in (tmp_path / "out" / "table.md").read_text()
