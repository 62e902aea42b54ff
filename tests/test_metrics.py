"""Error metrics against hand-computed values."""

import json
import math

import numpy as np
import pytest

from jace.data.configuration import Configuration
from jace.training.metrics import (
    compute_metrics,
    format_metrics_table,
    metrics_by_config_type,
    write_metrics_json,
)


def _cfg(n, energy=None, forces=None, stress=None, config_type="default"):
    return Configuration(
        positions=np.zeros((n, 3)),
        numbers=np.full(n, 29),
        cell=np.eye(3) * 4.0,
        pbc=True,
        energy=energy,
        forces=forces,
        stress=stress,
        config_type=config_type,
    )


def test_energy_and_forces_known_values():
    # config A: 2 atoms, E_ref = 1.0, pred 1.004 -> dE = +4 meV, per atom +2 meV
    # config B: 1 atom,  E_ref = -2.0, pred -2.003 -> dE = -3 meV, per atom -3 meV
    fa_ref = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    fa_pred = fa_ref + np.array([[0.001, -0.002, 0.0], [0.0, 0.0, 0.004]])
    fb_ref = np.array([[0.5, 0.5, 0.5]])
    fb_pred = fb_ref + np.array([[0.0, 0.003, 0.0]])
    configs = [_cfg(2, 1.0, fa_ref), _cfg(1, -2.0, fb_ref)]
    m = compute_metrics(configs, [1.004, -2.003], [fa_pred, fb_pred], [None, None])

    assert m["n_configs"] == 2 and m["n_atoms"] == 3
    assert m["energy_mae_meV"] == pytest.approx(3.5)
    assert m["energy_rmse_meV"] == pytest.approx(math.sqrt((16 + 9) / 2))
    assert m["energy_per_atom_mae_meV"] == pytest.approx(2.5)
    assert m["energy_per_atom_rmse_meV"] == pytest.approx(math.sqrt((4 + 9) / 2))
    # 9 force components with errors (meV/Å): 1, -2, 0, 0, 0, 4, 0, 3, 0
    assert m["forces_mae_meV_per_A"] == pytest.approx(10 / 9)
    assert m["forces_rmse_meV_per_A"] == pytest.approx(math.sqrt(30 / 9))
    assert not any(k.startswith("stress") for k in m)


def test_stress_per_component_and_voigt_prediction():
    s_ref = np.zeros((3, 3))
    # predicted in Voigt order (xx, yy, zz, yz, xz, xy): errors 1, 0, 0, 0, 0, 2 meV/Å³
    s_pred = np.array([0.001, 0.0, 0.0, 0.0, 0.0, 0.002])
    m = compute_metrics([_cfg(1, 0.0, stress=s_ref)], [0.0], [None], [s_pred])
    # 3x3 errors: xx=1, xy=yx=2 -> sum |e| = 5, sum e² = 9 over 9 components
    assert m["stress_mae_meV_per_A3"] == pytest.approx(5 / 9)
    assert m["stress_rmse_meV_per_A3"] == pytest.approx(1.0)
    assert m["energy_mae_meV"] == pytest.approx(0.0)
    assert "forces_mae_meV_per_A" not in m


def test_configs_without_labels_are_skipped_and_absent_keys():
    labelled = _cfg(1, 1.0)
    unlabelled = _cfg(4)  # no energy: must not contribute
    m = compute_metrics([labelled, unlabelled], [1.010, 99.0], [np.zeros((1, 3)), np.ones((4, 3))], [None, None])
    assert m["energy_mae_meV"] == pytest.approx(10.0)
    assert m["energy_per_atom_mae_meV"] == pytest.approx(10.0)
    assert m["n_configs"] == 2 and m["n_atoms"] == 5
    for key in ("forces_mae_meV_per_A", "forces_rmse_meV_per_A", "stress_mae_meV_per_A3", "stress_rmse_meV_per_A3"):
        assert key not in m

    none = compute_metrics([unlabelled], [0.0], None, None)
    assert set(none) == {"n_configs", "n_atoms"}


def test_shape_and_length_mismatches_raise():
    c = _cfg(2, 0.0, forces=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="predicted forces"):
        compute_metrics([c], [0.0], [np.zeros((3, 3))], [None])
    with pytest.raises(ValueError, match="2 energy predictions for 1"):
        compute_metrics([c], [0.0, 1.0], [None], [None])


def test_by_config_type():
    configs = [_cfg(1, 0.0, config_type="bulk"), _cfg(1, 0.0, config_type="surface"), _cfg(2, 0.0, config_type="bulk")]
    out = metrics_by_config_type(configs, [0.001, 0.005, 0.004], None, None)
    assert list(out) == ["bulk", "surface"]
    assert out["bulk"]["n_configs"] == 2 and out["bulk"]["n_atoms"] == 3
    assert out["bulk"]["energy_mae_meV"] == pytest.approx(2.5)
    assert out["bulk"]["energy_per_atom_mae_meV"] == pytest.approx(1.5)
    assert out["surface"]["energy_rmse_meV"] == pytest.approx(5.0)


def test_write_metrics_json_atomic_and_plain(tmp_path):
    path = tmp_path / "sub" / "metrics.json"
    metrics = {"train": {"energy_mae_meV": np.float32(1.5), "n_configs": np.int64(3)}, "fit": {"cond": float("nan"), "arr": np.arange(3)}}
    write_metrics_json(path, metrics)
    loaded = json.loads(path.read_text())
    assert loaded == {"train": {"energy_mae_meV": 1.5, "n_configs": 3}, "fit": {"cond": None, "arr": [0, 1, 2]}}
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]  # no temp file left behind


def test_format_table_shows_values_and_gaps():
    text = format_metrics_table({"train": {"n_configs": 2, "n_atoms": 3, "energy_per_atom_rmse_meV": 1.23456}})
    row = text.splitlines()[-1]
    assert row.split()[:4] == ["train", "2", "3", "1.235"] and row.split()[-1] == "-"
