"""YAML training configs: a valid file parses to the design dataclasses; bad input names the key."""

import os
import textwrap

import pytest

from jace.config import (
    ConfigError,
    DataSpec,
    TrainConfig,
    dump_train_config,
    load_train_config,
    parse_train_config,
    train_config_to_dict,
    write_train_config,
)
from jace.models.design import DataKeys, FitSpec, LinearACESpec, RadialSpec

FULL = """\
seed: 3
precision: float32
output_dir: runs/example
model:
  type: linear_ace
  elements: [Cu, Au]
  cutoff: 5.5
  l_max: 3
  correlation: 3
  max_degree: [12, 10, 8]
  w_l: 1.5
  radial: {kind: chebyshev, n_max: 6, envelope: cosine, envelope_p: 4}
data:
  train: data/train.xyz
  validation_fraction: 0.05
  test: {test: data/test.xyz, extra: /abs/other.xyz}
  isolated_atoms: data/isolated.xyz
  keys: {energy: dft_energy, forces: dft_forces, stress: stress, virial: virial, config_type: config_type}
fit:
  energy_weight: 30
  forces_weight: 1
  stress_weight: 0.5
  config_type_weights: {isolated_atom: {energy: 1000}}
  regulariser: smoothness
  lam: 1e-3
  smoothness_p: 2
  e0: isolated
  chunk_size: 16
  solver: dual
"""

MINIMAL = """\
model:
  elements: [Cu]
data:
  train: train.xyz
"""


def _write(tmp_path, text, name="config.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def _error(tmp_path, text, **kw) -> str:
    p = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_train_config(p, check_paths=False, **kw)
    msg = str(info.value)
    assert msg.startswith(str(p) + ":"), msg  # every message names the file
    return msg


def test_full_config_parses(tmp_path):
    cfg = load_train_config(_write(tmp_path, FULL), check_paths=False)
    assert isinstance(cfg, TrainConfig)
    assert cfg.seed == 3 and cfg.precision == "float32" and cfg.output_dir == "runs/example"
    assert cfg.model_type == "linear_ace"
    assert cfg.model == LinearACESpec(
        elements=("Cu", "Au"),
        cutoff=5.5,
        radial=RadialSpec(kind="chebyshev", n_max=6, envelope="cosine", envelope_p=4),
        l_max=3,
        correlation=3,
        max_degree=(12.0, 10.0, 8.0),
        w_l=1.5,
    )
    assert cfg.fit == FitSpec(
        energy_weight=30.0,
        forces_weight=1.0,
        stress_weight=0.5,
        config_type_weights={"isolated_atom": {"energy": 1000.0}},
        regulariser="smoothness",
        lam=1e-3,  # "1e-3" is a string to YAML 1.1; accepted as the number
        smoothness_p=2.0,
        e0="isolated",
        chunk_size=16,
        solver="dual",
    )
    assert cfg.fit.weights_for("isolated_atom") == (1000.0, 1.0, 0.5)
    # relative data paths resolve against the YAML file's directory, absolute ones stay
    assert cfg.data.train == str(tmp_path / "data" / "train.xyz")
    assert cfg.data.isolated_atoms == str(tmp_path / "data" / "isolated.xyz")
    assert cfg.data.test == {"test": str(tmp_path / "data" / "test.xyz"), "extra": "/abs/other.xyz"}
    assert cfg.data.validation is None and cfg.data.validation_fraction == 0.05
    assert cfg.data.keys == DataKeys(energy="dft_energy", forces="dft_forces")


def test_minimal_config_defaults(tmp_path):
    cfg = load_train_config(_write(tmp_path, MINIMAL), check_paths=False)
    assert cfg.seed == 0 and cfg.precision == "float64"
    assert cfg.model == LinearACESpec(elements=("Cu",))
    assert cfg.fit == FitSpec()
    assert cfg.data == DataSpec(train=str(tmp_path / "train.xyz"))


def test_test_sets_from_a_list_take_file_stems(tmp_path):
    text = MINIMAL.replace("  train: train.xyz", "  train: train.xyz\n  test: [a/bulk.xyz, b/surface.extxyz]")
    cfg = load_train_config(_write(tmp_path, text), check_paths=False)
    assert cfg.data.test == {"bulk": str(tmp_path / "a" / "bulk.xyz"), "surface": str(tmp_path / "b" / "surface.extxyz")}
    same_stem = MINIMAL.replace("  train: train.xyz", "  train: train.xyz\n  test: [a/x.xyz, b/x.xyz]")
    assert "data.test[1]" in _error(tmp_path, same_stem)


def test_round_trip_through_dict_and_yaml(tmp_path):
    cfg = load_train_config(_write(tmp_path, FULL), check_paths=False)
    d = train_config_to_dict(cfg)
    assert d["model"]["type"] == "linear_ace" and d["model"]["max_degree"] == [12.0, 10.0, 8.0]
    again = parse_train_config(d, check_paths=False)
    assert dataclasses_equal(again, cfg)
    # written YAML, read back from a different directory, is the same config (paths are absolute)
    out = tmp_path / "elsewhere" / "config.yaml"
    write_train_config(out, cfg)
    assert load_train_config(out, check_paths=False) == dataclasses_replace_source(cfg, str(out))
    assert "linear_ace" in dump_train_config(cfg)


def dataclasses_equal(a, b):
    import dataclasses

    return dataclasses.replace(a, source=None) == dataclasses.replace(b, source=None)


def dataclasses_replace_source(cfg, source):
    import dataclasses

    return dataclasses.replace(cfg, source=source)


def test_missing_data_file_is_reported_when_checked(tmp_path):
    p = _write(tmp_path, MINIMAL)
    with pytest.raises(ConfigError, match=r"data\.train: file not found"):
        load_train_config(p)
    (tmp_path / "train.xyz").write_text("")
    assert load_train_config(p).data.train == str(tmp_path / "train.xyz")


def test_typo_gets_a_suggestion(tmp_path):
    msg = _error(tmp_path, MINIMAL.replace("  elements: [Cu]", "  elements: [Cu]\n  cuttoff: 5.0"))
    assert "unknown key 'model.cuttoff' (did you mean 'cutoff'?)" in msg
    msg = _error(tmp_path, MINIMAL + "fit:\n  lamda: 0.1\n")
    assert "unknown key 'fit.lamda' (did you mean 'lam'?)" in msg
    msg = _error(tmp_path, MINIMAL + "seeed: 1\n")
    assert "unknown key 'seeed' (did you mean 'seed'?)" in msg
    msg = _error(tmp_path, MINIMAL.replace("[Cu]", "[Cu]\n  radial: {knd: bessel}"))
    assert "unknown key 'model.radial.knd' (did you mean 'kind'?)" in msg
    msg = _error(tmp_path, MINIMAL + "  keys: {enrgy: E}\n")
    assert "unknown key 'data.keys.enrgy' (did you mean 'energy'?)" in msg


def test_unknown_key_without_close_match_lists_known_keys(tmp_path):
    msg = _error(tmp_path, MINIMAL + "zzz: 1\n")
    assert "unknown key 'zzz'" in msg and "known keys here:" in msg and "model" in msg


def test_wrong_types_name_the_key(tmp_path):
    msg = _error(tmp_path, MINIMAL.replace("[Cu]", "[Cu]\n  l_max: 3x"))
    assert "model.l_max must be an integer, got '3x'" in msg
    msg = _error(tmp_path, MINIMAL.replace("[Cu]", "[Cu]\n  cutoff: far"))
    assert "model.cutoff must be a number, got 'far'" in msg
    msg = _error(tmp_path, MINIMAL.replace("[Cu]", "[Cu]\n  radial: {n_max: 2.5}"))
    assert "model.radial.n_max must be an integer, got 2.5" in msg
    msg = _error(tmp_path, MINIMAL.replace("[Cu]", "[Cu]\n  max_degree: [12, x, 8]"))
    assert "model.max_degree[1] must be a number, got 'x'" in msg
    msg = _error(tmp_path, MINIMAL + "fit:\n  chunk_size: true\n")
    assert "fit.chunk_size must be an integer, got True" in msg
    msg = _error(tmp_path, MINIMAL + "fit: 3\n")
    assert "fit must be a mapping" in msg
    msg = _error(tmp_path, MINIMAL + "fit:\n  config_type_weights: {bulk: {energy: heavy}}\n")
    assert "fit.config_type_weights.bulk.energy must be a number, got 'heavy'" in msg
    msg = _error(tmp_path, MINIMAL.replace("[Cu]", "[Cu, Xx]"))
    assert "model.elements[1] must be a chemical symbol, got 'Xx'" in msg
    msg = _error(tmp_path, MINIMAL.replace("train: train.xyz", "train: 3"))
    assert "data.train must be a non-empty string, got 3" in msg


def test_bad_values_from_dataclasses_name_the_file_and_key(tmp_path):
    msg = _error(tmp_path, MINIMAL.replace("[Cu]", "[Cu]\n  cutoff: -1.0"))
    assert "model.cutoff must be a positive length" in msg
    msg = _error(tmp_path, MINIMAL.replace("[Cu]", "[Cu]\n  correlation: 2\n  max_degree: [10, 8, 6]"))
    assert "model.max_degree needs one entry per correlation order" in msg
    msg = _error(tmp_path, MINIMAL.replace("[Cu]", "[Cu]\n  radial: {n_max: 0}"))
    assert "model.radial.n_max must be >= 1" in msg
    msg = _error(tmp_path, MINIMAL + "fit:\n  lam: -0.5\n")
    assert "fit.lam must be >= 0" in msg
    msg = _error(tmp_path, MINIMAL + "  validation_fraction: 1.5\n")
    assert "data.validation_fraction must be in [0, 1)" in msg
    msg = _error(tmp_path, MINIMAL + "  validation: v.xyz\n  validation_fraction: 0.1\n")
    assert "data.validation" in msg and "not both" in msg
    msg = _error(tmp_path, MINIMAL + "  test: {train: t.xyz}\n")
    assert "data.test" in msg and "'train'" in msg


def test_bad_choices_suggest(tmp_path):
    msg = _error(tmp_path, MINIMAL + "precision: float16\n")
    assert "precision must be one of float64, float32" in msg
    msg = _error(tmp_path, MINIMAL.replace("[Cu]", "[Cu]\n  radial: {kind: besel}"))
    assert "model.radial.kind must be one of" in msg and "(did you mean 'bessel'?)" in msg
    msg = _error(tmp_path, MINIMAL + "fit:\n  e0: isolatd\n")
    assert "fit.e0 must be one of" in msg and "'isolated'" in msg
    msg = _error(tmp_path, MINIMAL + "fit:\n  solver: duall\n")
    assert "fit.solver must be one of" in msg and "'dual'" in msg
    msg = _error(tmp_path, MINIMAL + "fit:\n  solver: dual\n  lam: 0\n")
    assert "fit.solver 'dual' needs fit.lam > 0" in msg


def test_e0_mapping(tmp_path):
    ok = MINIMAL.replace("[Cu]", "[Cu, Au]") + "fit:\n  e0: {Cu: -0.25, Au: -0.1}\n"
    cfg = load_train_config(_write(tmp_path, ok), check_paths=False)
    assert cfg.fit.e0 == {"Cu": -0.25, "Au": -0.1}
    msg = _error(tmp_path, MINIMAL.replace("[Cu]", "[Cu, Au]") + "fit:\n  e0: {Cu: -0.25}\n")
    assert "fit.e0 gives no reference energy for Au" in msg
    msg = _error(tmp_path, MINIMAL + "fit:\n  e0: {Cu: 0.0, Ag: 1.0}\n")
    assert "fit.e0.Ag" in msg


def test_missing_required_keys(tmp_path):
    msg = _error(tmp_path, "model:\n  elements: [Cu]\n")
    assert "missing required key 'data'" in msg
    msg = _error(tmp_path, "model:\n  cutoff: 4.0\ndata:\n  train: t.xyz\n")
    assert "missing required key 'model.elements'" in msg
    msg = _error(tmp_path, "model:\n  elements: [Cu]\ndata:\n  test: t.xyz\n")
    assert "missing required key 'data.train'" in msg


def test_unknown_model_type_lists_known(tmp_path):
    msg = _error(tmp_path, MINIMAL.replace("model:\n", "model:\n  type: mcae\n"))
    assert "model.type: unknown model type 'mcae' (did you mean 'mace'?)" in msg
    assert "known model types: ace, botnet, fs-ace, grace, grace-1l, grace-2l, linear_ace, mace, multi_ace, nequip" in msg
    msg = _error(tmp_path, MINIMAL.replace("model:\n", "model:\n  type: linear_aec\n"))
    assert "(did you mean 'linear_ace'?)" in msg


def test_missing_yaml_file(tmp_path):
    p = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_train_config(p)


def test_yaml_syntax_error_has_line_number(tmp_path):
    bad = "model:\n  elements: [Cu, Au\ndata:\n  train: t.xyz\n"
    msg = _error(tmp_path, bad)
    assert "invalid YAML at line 3" in msg
    msg = _error(tmp_path, "model:\n  elements: [Cu]\n   cutoff: 3\n")
    assert "invalid YAML at line" in msg


def test_duplicate_keys_are_an_error(tmp_path):
    msg = _error(tmp_path, MINIMAL.replace("[Cu]", "[Cu]\n  cutoff: 4.0\n  cutoff: 5.0"))
    assert "duplicate key 'cutoff'" in msg and "line 4" in msg


def test_empty_and_non_mapping_documents(tmp_path):
    assert "empty" in _error(tmp_path, "")
    assert "top level must be a mapping" in _error(tmp_path, "- a\n- b\n")


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)
    with pytest.raises(ValueError):
        parse_train_config({"model": {"elements": ["Cu"]}}, file=os.devnull)


def test_model_type_typo_key(tmp_path):
    msg = _error(tmp_path, MINIMAL.replace("model:\n", "model:\n  tpye: linear_ace\n"))
    assert "unknown key 'model.tpye' (did you mean 'type'?)" in msg


def test_cli_reports_config_errors_without_traceback(tmp_path, capsys):
    from jace.cli import main

    p = _write(tmp_path, MINIMAL.replace("[Cu]", "[Cu]\n  cuttoff: 5.0"))
    assert main(["train", str(p)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jace: error: ") and "unknown key 'model.cuttoff'" in err
    assert "Traceback" not in err
    assert main(["train", str(tmp_path / "absent.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
