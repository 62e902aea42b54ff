"""End to end through the command line (``jace.cli.main``) on tiny EMT data with a tiny model.

``jace train`` runs once per module; the tests check what it wrote, that ``jace eval`` reproduces the
test-set metrics of training, that a saved-and-loaded model predicts bit-for-bit what the in-memory
one does, and that bad input ends with exit code 2 and a message naming the problem.
"""

import json
import sys

import numpy as np
import pytest
import yaml

import jace.models.io as model_io
from jace.cli import EXIT_USAGE, main
from jace.config import load_train_config
from jace.data import io as dio
from jace.data.synthetic import make_emt_dataset, make_emt_splits
from jace.models.linear_ace import evaluate

ENERGY_KEYS = ("energy_mae_meV", "energy_rmse_meV", "energy_per_atom_mae_meV", "energy_per_atom_rmse_meV")
FORCES_KEYS = ("forces_mae_meV_per_A", "forces_rmse_meV_per_A")
STRESS_KEYS = ("stress_mae_meV_per_A3", "stress_rmse_meV_per_A3")

TINY_MODEL = {
    "type": "linear_ace",
    "elements": ["Cu", "Au"],
    "cutoff": 4.5,
    "l_max": 2,
    "correlation": 2,
    "max_degree": [6, 5],
    "radial": {"kind": "bessel", "n_max": 3},
}


def _config(train, test=None, output_dir="run", model=None, fit=None, **data):
    cfg = {
        "seed": 0,
        "precision": "float64",
        "output_dir": str(output_dir),
        "model": dict(model if model is not None else TINY_MODEL),
        "data": {"train": str(train), **data},
        "fit": dict(fit if fit is not None else {"e0": "isolated", "lam": 1.0e-3}),
    }
    if test is not None:
        cfg["data"]["test"] = {"test": str(test)}
    return cfg


def _write_yaml(path, cfg):
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_data")
    train, test = make_emt_splits(n_train=8, n_test=4, seed=5)
    dio.write_configurations(d / "train.xyz", train)
    dio.write_configurations(d / "test.xyz", test)
    return d


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    """Run ``jace train`` once; keep the in-memory model that it saved."""
    out = tmp_path_factory.mktemp("cli_run")
    # relative data paths resolve against the YAML file's directory
    cfg_path = _write_yaml(data_dir / "train.yaml", _config("train.xyz", "test.xyz", out / "run"))

    saved = []
    original_save = model_io.save_model

    def save_and_keep(path, model):
        saved.append(model)
        original_save(path, model)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(model_io, "save_model", save_and_keep)
        rc = main(["train", str(cfg_path)])
    assert rc == 0
    assert len(saved) == 1
    return {"dir": out / "run", "config": cfg_path, "model": saved[0], "data": data_dir}


# --------------------------------------------------------------------------------------------------
# train / eval / save-load


def test_train_writes_model_metrics_and_config(trained):
    run = trained["dir"]
    for name in ("model.jace", "metrics.json", "config.yaml"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    for name in ("train", "test"):
        for key in ENERGY_KEYS + FORCES_KEYS + STRESS_KEYS:
            assert key in metrics[name], (name, key)
            assert np.isfinite(metrics[name][key]), (name, key)
    assert metrics["test"]["n_configs"] == 4
    assert metrics["train"]["n_configs"] == 8  # isolated atoms only set E0
    assert metrics["fit"]["n_basis"] == trained["model"].n_basis

    # the written config reads back to the same model, fit and data
    written = load_train_config(run / "config.yaml")
    original = load_train_config(trained["config"])
    assert written.model == original.model
    assert written.fit == original.fit
    assert written.data == original.data
    assert written.output_dir == str(run)


def test_training_errors_are_small_on_emt(trained):
    # even the tiny model learns EMT Cu–Au to a few meV/atom; a broken fit would not
    metrics = json.loads((trained["dir"] / "metrics.json").read_text())
    assert metrics["train"]["energy_per_atom_rmse_meV"] < 20.0
    assert metrics["test"]["energy_per_atom_rmse_meV"] < 50.0
    assert metrics["test"]["forces_rmse_meV_per_A"] < 500.0


def test_eval_reproduces_test_metrics_of_training(trained, tmp_path, capsys):
    out = tmp_path / "m.json"
    rc = main(["eval", str(trained["dir"] / "model.jace"), str(trained["data"] / "test.xyz"), "--out", str(out)])
    assert rc == 0
    assert "evaluated 4 configurations" in capsys.readouterr().out
    from_eval = json.loads(out.read_text())
    from_train = json.loads((trained["dir"] / "metrics.json").read_text())["test"]
    assert from_eval == from_train  # the same numbers, exactly


def test_loaded_model_predicts_bit_for_bit(trained):
    in_memory = trained["model"]
    loaded = model_io.load_model(trained["dir"] / "model.jace")
    assert type(loaded) is type(in_memory)
    assert loaded.spec == in_memory.spec
    np.testing.assert_array_equal(loaded.e0, in_memory.e0)
    np.testing.assert_array_equal(loaded.coefficients, in_memory.coefficients)

    configs = dio.read_configurations(trained["data"] / "test.xyz")
    e_mem, f_mem, s_mem = evaluate(in_memory, configs)
    e_load, f_load, s_load = evaluate(loaded, configs)
    assert np.array_equal(np.asarray(e_mem), np.asarray(e_load))
    for a, b in zip(f_mem, f_load):
        assert np.array_equal(a, b)
    for a, b in zip(s_mem, s_load):
        assert np.array_equal(a, b)


# --------------------------------------------------------------------------------------------------
# bad input: exit code 2 and a message that names the problem


def _fails(argv, capsys, *needles):
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == EXIT_USAGE, err
    assert err.startswith("jace: error:"), err
    for needle in needles:
        assert needle in err, (needle, err)
    assert "Traceback" not in err
    return err


def test_missing_train_file(trained, tmp_path, capsys):
    cfg = _write_yaml(tmp_path / "c.yaml", _config(tmp_path / "nope.xyz", output_dir=tmp_path / "run"))
    _fails(["train", cfg], capsys, "data.train", "file not found", "nope.xyz")


def test_missing_config_file(tmp_path, capsys):
    _fails(["train", tmp_path / "absent.yaml"], capsys, "absent.yaml", "not found")


def test_eval_missing_data_file(trained, tmp_path, capsys):
    _fails(["eval", trained["dir"] / "model.jace", tmp_path / "nope.xyz"], capsys, "nope.xyz", "not found")


def test_eval_missing_model_file(trained, tmp_path, capsys):
    _fails(["eval", tmp_path / "absent.jace", trained["data"] / "test.xyz"], capsys, "absent.jace", "not found")


def test_data_without_the_energy_key(trained, tmp_path, capsys):
    # the file has "energy"; the config says the energies are under "dft_energy"
    cfg = _config(trained["data"] / "train.xyz", output_dir=tmp_path / "run", keys={"energy": "dft_energy"})
    err = _fails(["train", _write_yaml(tmp_path / "c.yaml", cfg)], capsys, "'dft_energy'", "train.xyz")
    assert "energy" in err


def test_data_without_any_energy(tmp_path, capsys):
    configs = make_emt_dataset(n_configs=2, seed=1)
    for c in configs:
        c.energy = None
    dio.write_configurations(tmp_path / "train.xyz", configs)
    cfg = _write_yaml(tmp_path / "c.yaml", _config(tmp_path / "train.xyz", output_dir=tmp_path / "run"))
    _fails(["train", cfg], capsys, "train.xyz", "required label 'energy'", "key 'energy'")


def test_nan_in_a_label(tmp_path, capsys):
    configs = make_emt_dataset(n_configs=3, seed=1)
    configs[1].forces[2, 1] = np.nan
    dio.write_configurations(tmp_path / "train.xyz", configs)
    cfg = _write_yaml(tmp_path / "c.yaml", _config(tmp_path / "train.xyz", output_dir=tmp_path / "run"))
    _fails(["train", cfg], capsys, "train.xyz:1", "'forces'", "NaN")


def test_nan_in_an_eval_label(trained, tmp_path, capsys):
    configs = make_emt_dataset(n_configs=2, seed=1, include_isolated=False)
    configs[0].energy = float("nan")
    dio.write_configurations(tmp_path / "bad.xyz", configs)
    _fails(["eval", trained["dir"] / "model.jace", tmp_path / "bad.xyz"], capsys, "bad.xyz:0", "'energy'", "NaN")


def test_unknown_element_in_training_data(tmp_path, capsys):
    configs = make_emt_dataset(n_configs=2, seed=1, elements=("Cu", "Ni"))
    dio.write_configurations(tmp_path / "train.xyz", configs)
    cfg = _write_yaml(tmp_path / "c.yaml", _config(tmp_path / "train.xyz", output_dir=tmp_path / "run"))
    _fails(["train", cfg], capsys, "train.xyz", "element Ni", "Cu, Au")


def test_unknown_element_in_eval_data(trained, tmp_path, capsys):
    configs = make_emt_dataset(n_configs=2, seed=1, elements=("Ni",), include_isolated=False)
    dio.write_configurations(tmp_path / "ni.xyz", configs)
    _fails(["eval", trained["dir"] / "model.jace", tmp_path / "ni.xyz"], capsys, "ni.xyz", "element Ni")


def test_negative_cutoff(trained, tmp_path, capsys):
    model = {**TINY_MODEL, "cutoff": -4.5}
    cfg = _config(trained["data"] / "train.xyz", output_dir=tmp_path / "run", model=model)
    _fails(["train", _write_yaml(tmp_path / "c.yaml", cfg)], capsys, "c.yaml", "model.cutoff", "-4.5")


def test_yaml_typo(trained, tmp_path, capsys):
    model = {k: v for k, v in TINY_MODEL.items() if k != "cutoff"}
    model["cuttoff"] = 4.5
    cfg = _config(trained["data"] / "train.xyz", output_dir=tmp_path / "run", model=model)
    _fails(["train", _write_yaml(tmp_path / "c.yaml", cfg)], capsys, "c.yaml", "'model.cuttoff'", "'cutoff'")


def test_invalid_yaml_syntax(tmp_path, capsys):
    p = tmp_path / "c.yaml"
    p.write_text("model: {elements: [Cu\ndata: x\n")
    _fails(["train", p], capsys, "c.yaml", "invalid YAML", "line")


def test_training_log_lines_are_printed_once_even_with_a_configured_root_logger(capsys):
    import logging

    from jace.cli import echo_training_log

    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)  # what logging.basicConfig would add
    root.addHandler(handler)
    try:
        lines = []
        with echo_training_log(lines.append):
            logging.getLogger("jace.training").info("step 1 of a run")
        assert lines == ["step 1 of a run"]
        assert "step 1 of a run" not in capsys.readouterr().err
        assert logging.getLogger("jace.training").propagate  # restored
    finally:
        root.removeHandler(handler)
