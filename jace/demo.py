"""``jace demo``: the whole path on data jace makes itself, on a fresh machine, with no downloads.

1. **Data**: random Cu–Au fcc alloys labelled with ASE's EMT calculator (``jace.data.synthetic``):
   strained cells of 1–32 atoms at 300–900 K, plus one isolated atom per element for E0.
2. **Train** a small MACE (``jace train`` on a generated YAML config, with a progress bar), or fit a
   linear ACE with ``--model linear_ace``.
3. **Evaluate** on a held-out test set (the metrics table of ``jace train``; ``metrics.json``).
4. **Simulate** with jax-md (Langevin NVT on a 108-atom alloy cell, inside ``lax.fori_loop``), and
   check the model against EMT along the trajectory.
5. **Plot**: learning curves, parity (validation and test) and the energy along the trajectory, as PNG.

Everything is written under one output directory; see :func:`run_demo` for the list.
"""

from __future__ import annotations

import csv
import io
import os
import time
import warnings
from typing import Callable, Optional

import numpy as np

__all__ = ["demo_config", "run_demo", "run_md", "DEMO_MODELS"]

DEMO_MODELS = ("mace", "linear_ace")


def demo_config(model: str, train_path: str, test_path: str, output_dir: str, elements, e0, quick: bool, seed: int) -> dict:
    """The YAML config (as a dict) that ``jace demo`` writes and trains; paths relative to ``output_dir``."""
    data = {
        "train": os.path.relpath(train_path, output_dir),
        "validation_fraction": 0.1,
        "test": {"test": os.path.relpath(test_path, output_dir)},
    }
    if model == "linear_ace":
        return {
            "seed": seed,
            "precision": "float64",
            "output_dir": output_dir,
            "model": {
                "type": "linear_ace",
                "elements": list(elements),
                "cutoff": 5.0,
                "l_max": 2 if quick else 3,
                "correlation": 2 if quick else 3,
                "max_degree": [10, 7] if quick else [14, 11, 8],
                "w_l": 1.5,
                "radial": {"kind": "bessel", "n_max": 6 if quick else 8, "envelope": "polynomial", "envelope_p": 5},
            },
            "data": data,
            "fit": {
                "energy_weight": 30.0,
                "forces_weight": 1.0,
                "stress_weight": 1.0,
                "config_type_weights": {"isolated_atom": {"energy": 1000.0}},
                "regulariser": "smoothness",
                "lam": 1.0e-3,
                "smoothness_p": 2.0,
                "e0": e0,
                "chunk_size": 32,
            },
        }
    if model != "mace":
        raise ValueError(f"demo model must be one of {DEMO_MODELS}, got {model!r}")
    return {
        "seed": seed,
        "precision": "float64",
        "output_dir": output_dir,
        "model": {
            "type": "mace",
            "elements": list(elements),
            "cutoff": 4.5,
            "radial": {"kind": "bessel", "n_max": 8, "envelope": "polynomial", "envelope_p": 5},
            "radial_mlp": [32, 32],
            "hidden_irreps": "8x0e+8x1o" if quick else "16x0e+16x1o",
            "l_max": 2,
            "correlation": 3,
            "normalisation": "scale_shift",
            "avg_num_neighbors": "auto",
        },
        "data": data,
        "training": {
            "max_epochs": 12 if quick else 100,
            "batch_size": 4,
            "valid_batch_size": 8,
            "optimizer": "adam",
            "lr": 0.01,
            "schedule": "cosine",
            "final_lr_factor": 0.05,
            "ema_decay": 0.99,
            "energy_weight": 100.0,
            "forces_weight": 10.0,
            "stress_weight": 10.0,
            "e0": e0,
        },
    }


# --------------------------------------------------------------------------------------------------
# Molecular dynamics with jax-md
# --------------------------------------------------------------------------------------------------

K_B = 8.617333262e-5  # eV/K
TIME_UNIT_FS = 10.180505710774743  # Å·sqrt(amu/eV) in fs: jax-md's time unit in jace's units


def demo_alloy(n_repeat: int = 3, au_fraction: float = 0.5, seed: int = 0):
    """A random fcc Cu–Au alloy, ``4 n_repeat³`` atoms, at the Vegard lattice constant (ASE Atoms)."""
    from ase.build import bulk

    from jace.data.synthetic import EMT_LATTICE_CONSTANTS

    atoms = bulk("Cu", "fcc", a=1.0, cubic=True).repeat(n_repeat)
    rng = np.random.default_rng(seed)
    symbols = np.where(rng.random(len(atoms)) < au_fraction, "Au", "Cu")
    atoms.set_chemical_symbols(symbols.tolist())
    a = float(np.mean([EMT_LATTICE_CONSTANTS[s] for s in symbols]))
    atoms.set_cell(atoms.cell[:] * a, scale_atoms=True)
    return atoms


def run_md(
    model,
    atoms,
    out_dir: str,
    *,
    n_steps: int = 2000,
    temperature: float = 600.0,
    dt_fs: float = 2.0,
    friction_per_fs: float = 0.01,
    snapshot_every: int = 50,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict:
    """Langevin NVT with jax-md (``jace.interfaces.jax_md``) and the EMT energies of snapshots.

    Runs ``n_steps`` steps of ``dt_fs`` at ``temperature`` K in jitted ``lax.fori_loop`` chunks (the
    neighbour list is reallocated on the host if it overflows), records the potential and kinetic
    energy every step, and recomputes every ``snapshot_every``-th frame with ASE's EMT (the reference
    the demo model was trained on). Writes to ``out_dir``:

      trajectory.xyz: the snapshots (extxyz; jace energy in ``jace_energy``, EMT energy in ``energy``);
      energy.csv: step, time (fs), potential energy (eV), temperature (K) of every step;
      energy.png: the jace potential energy along the trajectory with the EMT snapshots, and the
        temperature.

    Returns a summary dict (steps per second, compilations and reallocations of the neighbour list,
    energy RMSE against EMT on the snapshots in meV/atom, mean temperature).
    """
    import jax
    import jax.numpy as jnp
    from ase.calculators.emt import EMT
    from jax_md import quantity, simulate

    from jace.interfaces.jax_md import from_configuration, neighbor_step, run_in_chunks

    os.makedirs(out_dir, exist_ok=True)
    # jax-md's neighbour-list pruning mixes int32/int64 scatters under x64: a FutureWarning, not ours to fix
    warnings.filterwarnings("ignore", message="scatter inputs have incompatible types", category=FutureWarning)
    system = from_configuration(model, atoms)
    nbrs = system.neighbor_fn.allocate(system.positions)
    kT = K_B * temperature
    dt = dt_fs / TIME_UNIT_FS
    init_fn, apply_fn = simulate.nvt_langevin(system.energy_fn, system.shift_fn, dt, kT, gamma=friction_per_fs * TIME_UNIT_FS)
    state = init_fn(jax.random.PRNGKey(seed), system.positions, mass=system.masses, neighbor=nbrs)

    def record(state, nbrs):
        e_pot = system.energy_fn(state.position, neighbor=nbrs)
        e_kin = quantity.kinetic_energy(momentum=state.momentum, mass=state.mass)
        return e_pot, e_kin, state.position

    t0 = time.perf_counter()
    state, nbrs, info = run_in_chunks(
        neighbor_step(apply_fn), state, nbrs, system.neighbor_fn, n_steps, chunk_steps=min(100, n_steps), record=record
    )
    jax.block_until_ready(state.position)
    seconds = time.perf_counter() - t0
    e_pot, e_kin, positions = (np.asarray(x) for x in info.records)
    n_atoms = len(atoms)
    temps = 2.0 * e_kin / (3.0 * n_atoms * K_B)
    steps = np.arange(1, n_steps + 1)

    # Snapshots back in the original orientation, recomputed with EMT.
    from ase.io import write

    frames, jace_e, emt_e = [], [], []
    for k in range(snapshot_every - 1, n_steps, snapshot_every):
        cart = np.asarray(system.cartesian(jnp.asarray(positions[k]))) @ np.asarray(system.rotation)
        frame = atoms.copy()
        frame.positions = cart
        frame.wrap()
        frame.calc = EMT()
        emt_e.append(float(frame.get_potential_energy()))
        jace_e.append(float(e_pot[k]))
        frame.calc = None
        frame.info.update({"energy": emt_e[-1], "jace_energy": jace_e[-1], "step": int(steps[k]), "temperature_K": float(temps[k])})
        frames.append(frame)
    write(os.path.join(out_dir, "trajectory.xyz"), frames, format="extxyz")
    rmse = float(np.sqrt(np.mean((np.asarray(jace_e) - np.asarray(emt_e)) ** 2)) / n_atoms * 1e3) if frames else float("nan")

    from jace.files import atomic_write_bytes

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["step", "time_fs", "potential_energy_eV", "temperature_K"])
    for s, e, t in zip(steps, e_pot, temps):
        w.writerow([int(s), f"{s * dt_fs:.3f}", f"{e:.8f}", f"{t:.3f}"])
    atomic_write_bytes(os.path.join(out_dir, "energy.csv"), buf.getvalue().encode())
    _plot_md(os.path.join(out_dir, "energy.png"), steps * dt_fs, e_pot, temps,
             [f.info["step"] * dt_fs for f in frames], jace_e, emt_e, n_atoms, temperature)

    summary = {
        "n_atoms": n_atoms,
        "n_steps": n_steps,
        "dt_fs": dt_fs,
        "temperature_K": temperature,
        "seconds": seconds,
        "steps_per_second": n_steps / seconds,
        "neighbour_list_reallocations": int(info.n_reallocations),
        "mean_temperature_K": float(np.mean(temps[len(temps) // 2 :])),
        "snapshot_energy_rmse_meV_per_atom": rmse,
        "uses_images": bool(system.uses_images),
    }
    log(
        f"md: {n_steps} steps of {dt_fs:g} fs Langevin NVT at {temperature:g} K on {n_atoms} atoms in {seconds:.1f} s "
        f"({summary['steps_per_second']:.1f} steps/s, compilation included); mean T (second half) "
        f"{summary['mean_temperature_K']:.0f} K; jace vs EMT on {len(frames)} snapshots: "
        f"RMSE {rmse:.2f} meV/atom; neighbour-list reallocations: {info.n_reallocations}"
    )
    return summary


def _plot_md(path, time_fs, e_pot, temps, snap_t, snap_jace, snap_emt, n_atoms, target_t):
    from jace.training.plots import _pyplot, _save

    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    ref = snap_emt[0] if snap_emt else float(e_pot[0])
    ax1.plot(time_fs, (np.asarray(e_pot) - ref) / n_atoms * 1e3, lw=0.8, label="jace (every step)")
    if snap_emt:
        ax1.plot(snap_t, (np.asarray(snap_emt) - ref) / n_atoms * 1e3, "o", ms=4, mfc="none", label="EMT (snapshots)")
    ax1.set_ylabel("potential energy (meV/atom, shifted)")
    ax1.legend()
    ax2.plot(time_fs, temps, lw=0.8)
    ax2.axhline(target_t, color="k", ls="--", lw=0.8)
    ax2.set_ylabel("temperature (K)")
    ax2.set_xlabel("time (fs)")
    fig.suptitle(f"Langevin NVT, {n_atoms} atoms")
    _save(fig, path)


# --------------------------------------------------------------------------------------------------
# The whole path
# --------------------------------------------------------------------------------------------------


def run_demo(
    output_dir: str = "demo_run",
    model: str = "mace",
    quick: bool = False,
    seed: int = 0,
    md_steps: Optional[int] = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Make the data, train, evaluate, simulate and plot; return {"metrics": …, "md": …}.

    Writes under ``output_dir``:
      data/train.xyz, data/test.xyz: the EMT data (train includes one isolated atom per element);
      demo.yaml: the training config; model.jace, metrics.json, config.yaml, train.log, metrics.csv,
        learning_curves.png, valid_parity.png (neural models): what ``jace train`` writes;
      test_parity.png: predicted against EMT energies and forces on the test set;
      md/trajectory.xyz, md/energy.csv, md/energy.png: the jax-md run (needs the ``md`` extra: without
        jax-md the step is skipped with a message).
    """
    import yaml

    from ase.data import chemical_symbols

    from jace.cli import run_training, set_precision
    from jace.config import load_train_config
    from jace.data import io as dio
    from jace.data import synthetic
    from jace.files import atomic_write_bytes

    if model not in DEMO_MODELS:
        raise ValueError(f"demo model must be one of {DEMO_MODELS}, got {model!r}")
    set_precision("float64")
    out_dir = os.path.abspath(output_dir)
    data_dir = os.path.join(out_dir, "data")
    os.makedirs(data_dir, exist_ok=True)
    t0 = time.perf_counter()
    if quick:
        train, test = synthetic.make_emt_splits(n_train=24, n_test=12, seed=seed)
    else:
        train, test = synthetic.make_emt_splits(seed=seed)
    train_path, test_path = os.path.join(data_dir, "train.xyz"), os.path.join(data_dir, "test.xyz")
    dio.write_configurations(train_path, train)
    dio.write_configurations(test_path, test)
    log(f"demo: {len(train)} training and {len(test)} test configurations (EMT) in {data_dir} ({time.perf_counter() - t0:.1f} s)")

    zs = sorted({int(z) for c in list(train) + list(test) for z in c.numbers})
    elements = [chemical_symbols[z] for z in zs]
    isolated, _ = dio.split_isolated_atoms(train)
    e0 = "isolated" if set(zs) <= {int(c.numbers[0]) for c in isolated} else "least_squares"
    config = demo_config(model, train_path, test_path, out_dir, elements, e0, quick, seed)
    config_path = os.path.join(out_dir, "demo.yaml")
    atomic_write_bytes(config_path, yaml.safe_dump(config, sort_keys=False, default_flow_style=None).encode())
    log(f"demo: config {config_path}")

    if model != "linear_ace" and os.path.exists(os.path.join(out_dir, "checkpoints")):
        import shutil

        shutil.rmtree(os.path.join(out_dir, "checkpoints"))  # the demo always starts a fresh run
    metrics = run_training(load_train_config(config_path), log=log, progress=progress)
    model_path = os.path.join(out_dir, "model.jace")

    from jace.models.io import load_model

    trained = load_model(model_path)
    _test_parity(trained, test, os.path.join(out_dir, "test_parity.png"))
    log(f"plots:   {', '.join(sorted(n for n in os.listdir(out_dir) if n.endswith('.png')))}")

    result = {"metrics": metrics, "md": None}
    import importlib.util

    if importlib.util.find_spec("jax_md") is None:
        log("md: skipped, jax-md is not installed (pip install -e '.[md]')")
        return result
    n_steps = md_steps if md_steps is not None else (200 if quick else 2000)
    atoms = demo_alloy(3, seed=seed)  # 108 atoms: wider than twice the cutoff, so a plain jax-md list
    result["md"] = run_md(trained, atoms, os.path.join(out_dir, "md"), n_steps=n_steps, seed=seed, log=log,
                          snapshot_every=max(1, min(50, n_steps // 10)))
    log(f"md:      {os.path.join(out_dir, 'md', 'energy.png')}")
    return result


def _test_parity(model, test, path) -> None:
    """Predicted against reference energies (per atom) and forces on the test set, as a PNG."""
    from jace.cli import _evaluate
    from jace.training.plots import plot_parity

    pred = _evaluate(model, test, batch_size=16)
    plot_parity(test, pred[0], pred[1], path, title="test set")
