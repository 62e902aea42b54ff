"""Write the notebooks of this folder from the cell sources below (run: ``python notebooks/make_notebooks.py``).

The notebooks are plain ``.ipynb`` files committed without outputs; this script is their source, so a
change to a notebook is a change here. Every notebook reads ``JACE_NOTEBOOK_QUICK=1`` (the test suite
sets it: ``tests/test_notebooks.py``) to run a short version, and ``JACE_DATA`` for the data folder
(default ``../../shared/data`` relative to ``notebooks/``); without the data they make their own.
"""

from __future__ import annotations

import os

import nbformat

HERE = os.path.dirname(os.path.abspath(__file__))

SETUP = '''import os

import jax

jax.config.update("jax_enable_x64", True)  # before any array exists: float64 for exactness

QUICK = os.environ.get("JACE_NOTEBOOK_QUICK") == "1"  # the test suite runs a short version
DATA = os.environ.get("JACE_DATA", os.path.join("..", "..", "shared", "data"))
WORK = os.path.abspath(os.environ.get("JACE_NOTEBOOK_WORK", "notebook_runs"))
os.makedirs(WORK, exist_ok=True)
print("quick" if QUICK else "full", "run; outputs in", WORK)'''


def md(text):
    return nbformat.v4.new_markdown_cell(text.strip("\n"))


def code(text):
    return nbformat.v4.new_code_cell(text.strip("\n"))


# ------------------------------------------------------------------------------------------------
ABLATION = [
    md('''
# The multi-ACE design space in miniature

The first paper's use of the framework: train several points of the multi-ACE design space with the
same data, seed and budget, and compare them on in-domain and out-of-domain errors and on smoothness
far from the training data. Here: MACE-like models with correlation order ν = 1 or 3 per layer, with
and without gated nonlinearities, on acetylacetone (`../shared/data/acac`, the BOTNet data) when it is
there, and otherwise on acetone frames that jace makes with ASE's EMT (a toy stand-in; 300 K for
training and testing, 900 K as the out-of-domain set).

The full-size version is `jace ablate examples/ablation_acac.yaml` (see `benchmarks/README.md` for
its results).
'''),
    code(SETUP),
    md("## Data"),
    code('''
from jace.data import io as dio
from jace.data.synthetic import emt_isolated_atoms, make_molecule_md_dataset

acac = os.path.join(DATA, "acac")
n_train = 20 if QUICK else 100
if os.path.exists(os.path.join(acac, "train_300K.xyz")):
    train = dio.read_configurations(os.path.join(acac, "train_300K.xyz"))[:n_train]
    isolated = dio.read_configurations(os.path.join(acac, "isolated_atoms.xyz"))
    test_all = dio.read_configurations(os.path.join(acac, "test_MD_300K.xyz"))
    tests = {"in_domain": test_all[: 10 if QUICK else 100]}
    molecule = "acetylacetone (BOTNet data, DFT)"
else:
    train = make_molecule_md_dataset("CH3COCH3", n_train, temperature=300.0, seed=0)
    isolated = emt_isolated_atoms(["H", "C", "O"])
    tests = {
        "in_domain": make_molecule_md_dataset("CH3COCH3", 10 if QUICK else 50, temperature=300.0, seed=1),
        "ood_900K": make_molecule_md_dataset("CH3COCH3", 10 if QUICK else 50, temperature=900.0, seed=2),
    }
    molecule = "acetone (EMT toy data)"
paths = {"train": os.path.join(WORK, "ablation_train.xyz")}
dio.write_configurations(paths["train"], isolated + train)
for name, configs in tests.items():
    paths[name] = os.path.join(WORK, f"ablation_{name}.xyz")
    dio.write_configurations(paths[name], configs)
print(molecule, {k: len(v) for k, v in tests.items()}, "train", len(train))
'''),
    md('''
## The sweep

A sweep is a base training config plus a grid of overrides (dotted keys); every point gets the same
data, seed and budget. It is usually a YAML file (`jace ablate SWEEP.yaml`); here it is a dict
written to one.
'''),
    code('''
import yaml

from jace.diagnostics.ablation import run_ablation
from jace.diagnostics.sweep import load_sweep

sweep = {
    "base_config": {
        "precision": "float64",
        "model": {
            "type": "mace", "elements": ["H", "C", "O"], "cutoff": 4.0,
            "radial": {"kind": "bessel", "n_max": 6, "envelope": "polynomial", "envelope_p": 5},
            "radial_mlp": [16, 16], "num_layers": 2, "hidden_irreps": "8x0e+8x1o", "l_max": 2,
            "correlation": 3, "avg_num_neighbors": "auto",
        },
        "data": {"train": paths["train"], "validation_fraction": 0.2},
        "training": {
            "batch_size": 5, "valid_batch_size": 10, "optimizer": "amsgrad", "lr": 0.01,
            "schedule": "cosine", "ema_decay": 0.99, "energy_weight": 10.0, "forces_weight": 100.0,
            "e0": "isolated", "plots": False, "n_buckets": 1 if QUICK else 4,
        },
    },
    "grid": {"model.correlation": [1, 3], "model.nonlinearity": ["none", "gate"]},
    "seeds": [0],
    "budget": {"max_epochs": 2 if QUICK else 40},
    "test_sets": {k: v for k, v in paths.items() if k != "train"},
    "scans": {"molecule": paths["in_domain"], "index": 0},
    "out_dir": os.path.join(WORK, "ablation"),
}
if QUICK:  # two points are enough to exercise the machinery
    sweep["grid"] = {"model.correlation": [1, 3]}
sweep_path = os.path.join(WORK, "ablation_sweep.yaml")
with open(sweep_path, "w") as fh:
    yaml.safe_dump(sweep, fh, sort_keys=False)
records = run_ablation(load_sweep(sweep_path), resume=False)
'''),
    md('''
## Results

`table.md` is sorted by in-domain force error; the roughness columns measure smoothness along the
scans (∫(E″)² along a bond stretched from 0.5 Å to beyond the cutoff, along a dihedral, and for two
atoms approaching each other).
'''),
    code('''
from IPython.display import Image, Markdown, display

out = sweep["out_dir"]
display(Markdown(open(os.path.join(out, "table.md")).read()))
for name in sorted(os.listdir(out)):
    if name.endswith(".png"):
        print(name)
        display(Image(os.path.join(out, name)))
'''),
    code('''
# every point trained and was evaluated on every test set
assert all(r.status == "ok" for r in records), [(r.name, r.status) for r in records]
print({r.name: r.n_params for r in records})
'''),
]

NOTEBOOKS = {"design_space_ablation.ipynb": ABLATION}


def write(name: str, cells) -> str:
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    path = os.path.join(HERE, name)
    nbformat.write(nb, path)
    return path


if __name__ == "__main__":
    for name, cells in NOTEBOOKS.items():
        print(write(name, cells))
