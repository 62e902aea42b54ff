"""`jace demo`: the whole path (data → fit → evaluation → jax-md MD → plots) on data jace makes itself.

The MACE path of the demo trains for minutes, so the test runs the same path with linear ACE (fitted
in seconds) and a short MD run; the MACE training code is exercised by tests/test_multi_ace_training.py.
"""

import json
import os

import numpy as np
import pytest

pytest.importorskip("jax_md")


def test_demo_runs_the_whole_path(tmp_path):
    from jace.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--model", "linear_ace", "--md-steps", "40", "--output-dir", str(out)]) == 0
    for name in ("data/train.xyz", "data/test.xyz", "demo.yaml", "model.jace", "metrics.json", "test_parity.png",
                 "md/energy.png", "md/energy.csv", "md/trajectory.xyz"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["energy_per_atom_rmse_meV"] < 20.0 and metrics["test"]["forces_rmse_meV_per_A"] < 300.0

    from ase.io import read

    frames = read(out / "md" / "trajectory.xyz", ":")
    assert len(frames) >= 2 and len(frames[0]) == 108
    emt = np.array([f.get_potential_energy() for f in frames])  # ase reads "energy" into a calculator
    jace_e = np.array([f.info["jace_energy"] for f in frames])
    # the model follows its reference along its own trajectory (per atom, within a few tens of meV)
    assert np.all(np.isfinite(jace_e)) and np.abs(jace_e - emt).max() / 108 < 0.05
    rows = (out / "md" / "energy.csv").read_text().splitlines()
    assert rows[0].startswith("step,") and len(rows) == 41


def test_demo_config_is_a_valid_training_config(tmp_path):
    import yaml

    from jace.config import load_train_config
    from jace.demo import demo_config

    for model in ("mace", "linear_ace"):
        cfg = demo_config(model, str(tmp_path / "train.xyz"), str(tmp_path / "test.xyz"), str(tmp_path), ["Cu", "Au"],
                          "isolated", quick=False, seed=0)
        for name in ("train.xyz", "test.xyz"):
            (tmp_path / name).write_text("")
        path = tmp_path / f"{model}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        parsed = load_train_config(str(path))
        assert parsed.model_type == model
    with pytest.raises(ValueError, match="demo model"):
        demo_config("nequip-ish", "a", "b", str(tmp_path), ["Cu"], "isolated", False, 0)
    assert os.path.isdir(tmp_path)
