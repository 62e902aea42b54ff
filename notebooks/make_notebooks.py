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


# ------------------------------------------------------------------------------------------------
QUICKSTART = [
    md("""
# Quick start: train, evaluate, simulate

The whole path on data jace makes itself: label random Cu–Au alloys with ASE's EMT calculator, train
a small MACE with optax, evaluate it, relax a structure with the ASE calculator and run Langevin
dynamics with jax-md. Every step is a plain Python call; `jace demo` does the same from the command
line.
"""),
    code(SETUP),
    md("## Data: EMT-labelled Cu–Au cells (energies, forces, stresses) and isolated atoms for E0"),
    code("""
from jace.data import io as dio
from jace.data.synthetic import make_emt_splits

train_all, test = make_emt_splits(n_train=16 if QUICK else 40, n_test=8 if QUICK else 20, seed=0)
isolated, train_all = dio.split_isolated_atoms(train_all)
train, valid = train_all[:-4], train_all[-4:]
dio.write_configurations(os.path.join(WORK, "train.xyz"), isolated + train)  # extxyz, readable by any code
print(len(train), "train,", len(valid), "validation,", len(test), "test configurations;",
      "sizes", sorted({c.n_atoms for c in train}))
"""),
    md("""
## A MACE model

`preset` gives a named point of the multi-ACE design space (`ace`, `nequip`, `botnet`, `mace`) with
any field overridden. E0s come from the isolated atoms; the scale, shift and average number of
neighbours from the training set, as MACE does.
"""),
    code("""
from jace.data.e0 import resolve_e0
from jace.data.graph import SpeciesMap, graphs_from_configurations
from jace.models.multi_ace import MultiACEModel, preset
from jace.training.statistics import dataset_statistics

spec = preset("mace", ["Cu", "Au"], cutoff=4.5, channels=8, hidden_l_max=1, l_max=2, correlation=3,
              radial_mlp=(16, 16))
species = SpeciesMap.from_symbols(spec.elements)
e0 = resolve_e0("isolated", species, train, isolated)
stats = dataset_statistics(train, graphs_from_configurations(train, spec.cutoff, species), species, e0)
model = MultiACEModel(spec, e0=e0, scale=stats.scale, shift=stats.shift, avg_num_neighbors=stats.avg_num_neighbors)
print("E0", dict(zip(spec.elements, e0)), "shift", round(stats.shift, 4), "scale", round(stats.scale, 4))
"""),
    md("## Train with optax (EMA, cosine schedule, progress bar, checkpoints, PNG plots)"),
    code("""
from jace.training import TrainSettings, train as train_model

settings = TrainSettings(max_epochs=3 if QUICK else 60, batch_size=4, lr=0.01, schedule="cosine",
                         energy_weight=100.0, forces_weight=10.0, stress_weight=10.0, n_buckets=2 if QUICK else 4)
result = train_model(model, train, valid, settings, os.path.join(WORK, "quickstart_run"), progress=True)
model = model.with_params(result.params)  # the best EMA parameters
print(result.stop_reason, "after", result.step, "steps;", model.n_params(), "parameters")
"""),
    md("## Evaluate, save, load"),
    code("""
from jace.models.io import load_model, save_model
from jace.models.multi_ace import evaluate
from jace.training.metrics import compute_metrics

save_model(os.path.join(WORK, "mace.jace"), model)  # msgpack, no pickle
model = load_model(os.path.join(WORK, "mace.jace"))
energies, forces, stresses = evaluate(model, test)
metrics = compute_metrics(test, energies, forces, stresses)
print({k: round(v, 2) for k, v in metrics.items() if k.endswith("rmse_meV") or "rmse" in k})
"""),
    md("""
## The ASE calculator

`JaceCalculator` takes a model or a model file; it pads to capacities that grow geometrically, so a
relaxation or an MD run compiles a handful of times, and `n_compilations` says how many.
"""),
    code("""
import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.optimize import BFGS

from jace.interfaces.ase_calculator import JaceCalculator

atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat(2)
atoms.symbols[::3] = "Au"
atoms.rattle(0.05, seed=1)
atoms.calc = JaceCalculator(model)
BFGS(atoms, logfile=None).run(fmax=0.02, steps=20 if QUICK else 200)
e_jace = atoms.get_potential_energy()
reference = atoms.copy()
reference.calc = EMT()
print(f"relaxed: jace {e_jace:.4f} eV, EMT at the same geometry {reference.get_potential_energy():.4f} eV; "
      f"compilations: {atoms.calc.n_compilations}")
"""),
    md("""
## Molecular dynamics with jax-md

`from_configuration` puts any jace model on a jax-md space with jax-md's own neighbour list;
`run_in_chunks` runs jitted `lax.fori_loop` chunks and reallocates the list on the host if it ever
overflows (neighbours are never dropped silently).
"""),
    code("""
import jax
from jax_md import quantity, simulate

from jace.demo import TIME_UNIT_FS, demo_alloy
from jace.interfaces.jax_md import from_configuration, neighbor_step, run_in_chunks

system = from_configuration(model, demo_alloy(3, seed=0))  # 108 atoms
nbrs = system.neighbor_fn.allocate(system.positions)
kT = 8.617333262e-5 * 600.0  # eV
init_fn, apply_fn = simulate.nvt_langevin(system.energy_fn, system.shift_fn, dt=2.0 / TIME_UNIT_FS, kT=kT, gamma=0.1)
state = init_fn(jax.random.PRNGKey(0), system.positions, mass=system.masses, neighbor=nbrs)
record = lambda state, nbrs: (system.energy_fn(state.position, neighbor=nbrs),
                              quantity.temperature(momentum=state.momentum, mass=state.mass))
state, nbrs, info = run_in_chunks(neighbor_step(apply_fn), state, nbrs, system.neighbor_fn,
                                  n_steps=100 if QUICK else 2000, chunk_steps=50, record=record)
e_pot, kT_inst = (np.asarray(x) for x in info.records)
print("steps", len(e_pot), "mean T (K)", round(float(kT_inst[len(kT_inst) // 2:].mean() / 8.617333262e-5)),
      "reallocations", info.n_reallocations)
"""),
    code("""
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(np.arange(1, len(e_pot) + 1) * 2.0, (e_pot - e_pot[0]) / 108 * 1e3)
ax.set_xlabel("time (fs)"); ax.set_ylabel("E_pot − E_pot(0) (meV/atom)")
plt.show()
"""),
]

# ------------------------------------------------------------------------------------------------
DIFFERENTIABLE = [
    md("""
# Differentiable simulation: fit a potential to a trajectory observable

A short NVE run with jax-md is an ordinary JAX function of the model parameters, so `jax.grad`
differentiates any observable of the trajectory through every integration step. Here the observable
is a smooth radial distribution function g(r) of fcc copper at 600 K. The target is g(r) from the same
run (same start, same momenta) with ASE's EMT calculator; the starting potential is a linear ACE fitted
to EMT data whose coefficients we then spoil by 20 %; a few Adam steps on the g(r) mismatch alone bring
the trajectory back towards EMT's.
"""),
    code(SETUP),
    md("## A linear ACE potential for Cu, fitted to EMT data in a few seconds"),
    code("""
import numpy as np

from jace.data import io as dio
from jace.data.synthetic import make_emt_dataset
from jace.models.design import FitSpec, LinearACESpec, RadialSpec
from jace.models.linear_ace import fit_linear_ace

isolated, train = dio.split_isolated_atoms(make_emt_dataset(n_configs=30, elements=("Cu",), seed=0))
spec = LinearACESpec(elements=("Cu",), cutoff=4.5, radial=RadialSpec(kind="bessel", n_max=6), l_max=2,
                     correlation=2, max_degree=(10, 7))
model, info = fit_linear_ace(spec, FitSpec(e0="isolated", lam=1e-3), train, isolated)
print(model.n_basis, "basis functions")
"""),
    md("## The reference trajectory: EMT, velocity Verlet, 2 fs steps, from a 600 K Maxwell–Boltzmann start"),
    code("""
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet

atoms = bulk("Cu", "fcc", a=3.59, cubic=True).repeat(3)  # 108 atoms
MaxwellBoltzmannDistribution(atoms, temperature_K=600, rng=np.random.default_rng(0))
p0 = atoms.get_momenta().copy()  # amu·Å/(Å·sqrt(amu/eV)): the same units as jax-md's here
n_steps, dt_fs = (30 if QUICK else 150), 2.0
reference = atoms.copy()
reference.calc = EMT()
reference.set_momenta(p0)
dyn = VelocityVerlet(reference, dt_fs * units.fs)
frames = []
for _ in range(n_steps):
    dyn.run(1)
    frames.append(reference.get_positions().copy())
"""),
    md("""
## The observable and its gradient

`from_configuration` puts the model on a jax-md space (Cartesian coordinates here). `rdf_observable`
averages a Gaussian-smoothed g(r) over the frames; `observable_loss_and_grad` runs the NVE trajectory
and returns the loss ‖g − g_target‖², its gradient with respect to the parameters, and the observable.
"""),
    code("""
import jax
import jax.numpy as jnp

from jace.demo import TIME_UNIT_FS
from jace.interfaces.differentiable import Trajectory, fit_observable, observable_loss_and_grad, rdf_observable
from jace.interfaces.jax_md import from_configuration

system = from_configuration(model, atoms, fractional_coordinates=False)
Q = np.asarray(system.rotation)  # jax-md wants an upper-triangular box: the structure may be rotated
r = np.linspace(2.0, 4.4, 40)
g_of = rdf_observable(system, r, sigma=0.1)
target = g_of(Trajectory(jnp.asarray(np.stack(frames) @ Q.T), None, None, None))
run = dict(observable=g_of, n_steps=n_steps, dt=dt_fs / TIME_UNIT_FS, momenta=jnp.asarray(p0 @ Q.T))

good = system.potential.params                      # {"e0": [1], "folded": coefficients per order}
spoilt = {"e0": good["e0"], "folded": [0.8 * f for f in good["folded"]]}
loss_good, _, aux_good = observable_loss_and_grad(system, good, system.positions, target=target, **run)
loss0, grads, aux0 = observable_loss_and_grad(system, spoilt, system.positions, target=target, **run)
print(f"loss of the fitted model {float(loss_good):.2e}, of the spoilt one {float(loss0):.2e}")
print("gradient norms:", [float(jnp.linalg.norm(g)) for g in grads["folded"]])
"""),
    md("## A few Adam steps on the g(r) mismatch (E0 frozen)"),
    code("""
trainable = {"e0": False, "folded": [True] * len(spoilt["folded"])}
fitted, history = fit_observable(system, spoilt, system.positions, target=target, trainable=trainable,
                                 n_iterations=3 if QUICK else 12, learning_rate=3e-3, **run)
losses = [h["loss"] for h in history]
print("loss per iteration:", ", ".join(f"{x:.2e}" for x in losses))
assert min(losses[1:]) < losses[0]
"""),
    code("""
import matplotlib.pyplot as plt

best = history[int(np.argmin(losses))]["observable"]
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(r, np.asarray(target), "k-", lw=2, label="EMT (target)")
ax.plot(r, np.asarray(aux0["observable"]), "--", label="spoilt linear ACE")
ax.plot(r, best, "-", label="after fitting to g(r)")
ax.set_xlabel("r (Å)"); ax.set_ylabel("g(r), smoothed"); ax.legend()
plt.show()
"""),
]

NOTEBOOKS = {"quickstart.ipynb": QUICKSTART, "design_space_ablation.ipynb": ABLATION,
             "differentiable_simulation.ipynb": DIFFERENTIABLE}


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
