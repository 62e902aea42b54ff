"""Accuracy at equal wall-clock budget on acetylacetone: jace `mace` and `botnet` against mace-torch.

mace-torch has no BOTNet any more (0.3.16: "BOTNet is deprecated, use MACE instead"), so jace `botnet`'s
peer is ``mace-torch-nu1``: mace-torch's MACE with correlation order 1 and botnet's three layers.

Each model trains for the same number of minutes on ``acac/train_300K.xyz`` (450 train / 50 validation,
the same seeded split on both sides), batch 5, AMSGrad lr 0.01, energy/forces weights 1/100, gradient
clip 10, EMA 0.99, reduce-on-plateau (0.8), E0s from ``isolated_atoms.xyz``, scale = RMS of training
forces, shift 0 (``mace_run_train --model MACE``); then the EMA weights are evaluated on
``test_MD_300K.xyz`` (650 frames). Runs are sequential so every model has the machine to itself.

Stage two (mace's ``--swa``: loss weights 1000/100 and lr 1e-3) starts on both sides at the first epoch
boundary past ``--stage-two-fraction`` of the budget (0.75, mace's default ``start_swa`` of 3/4 of the
epochs; 0 turns it off). jace's budget is ``TrainSettings.max_minutes``: it counts the training loop
from its first step, compilation included; mace-torch's counts its steps and per-epoch validation.

  python benchmarks/equal_budget_acac.py --data ../shared/data --minutes 8 --out benchmarks/results/equal_budget_acac.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import structures  # noqa: E402
from multi_ace_vs_mace_torch import HP  # noqa: E402


def _configs(frames):
    from jace.data.configuration import Configuration

    out = []
    for f in frames:
        e, fr = structures.labels(f)
        out.append(Configuration(f.positions, f.numbers, np.array(f.cell), list(f.pbc), energy=e, forces=fr, source="acac"))
    return out


def run_jace(name, minutes, data_dir, dtype, seed, out_dir, stage_two_fraction):
    import jax

    jax.config.update("jax_enable_x64", dtype == "float64")
    from jace.data.graph import SpeciesMap
    from jace.models.design import RadialSpec
    from jace.models.multi_ace import MultiACEModel, preset
    from jace.training import TrainSettings, dataset_statistics, evaluate, train
    from jace.training.optim import StageTwo
    from jace.training.batching import build_graphs

    frames = structures.acac_training_set(data_dir)
    configs = _configs(frames)
    order = np.random.default_rng(seed).permutation(len(configs))
    n_valid = int(round(0.1 * len(configs)))
    valid = [configs[i] for i in sorted(order[:n_valid])]
    train_set = [configs[i] for i in sorted(order[n_valid:])]
    test = _configs(structures.acac_test_set(data_dir))
    e0s = structures.acac_isolated_atom_energies(data_dir)
    elements = sorted({a for f in frames for a in f.get_chemical_symbols()})
    species = SpeciesMap.from_symbols(elements)
    e0 = np.array([e0s[z] for z in species.atomic_numbers])
    common = dict(cutoff=HP["cutoff"], channels=HP["channels"], l_max=HP["l_max"], hidden_l_max=HP["hidden_l_max"],
                  radial_mlp=tuple(HP["radial_mlp"]),
                  radial=RadialSpec(kind="bessel", n_max=HP["n_rad"], envelope_p=HP["envelope_p"]))
    if name == "mace":
        spec = preset("mace", elements, correlation=(3, 3), **common)
    else:
        spec = preset("botnet", elements, num_layers=3, correlation=(1, 1, 1), **common)
    settings = TrainSettings(
        max_epochs=100000, batch_size=5, valid_batch_size=25, optimizer="amsgrad", lr=0.01, schedule="plateau",
        plateau_factor=0.8, plateau_patience=50, clip_norm=10.0, ema_decay=0.99, energy_weight=1.0,
        forces_weight=100.0, dtype=dtype, seed=seed, n_buckets=2, plots=False, max_minutes=minutes,
        stage_two=StageTwo(start_fraction=stage_two_fraction, energy_weight=1000.0, forces_weight=100.0, lr=1e-3)
        if stage_two_fraction else None,
    )
    probe = MultiACEModel(spec, e0=e0, avg_num_neighbors=1.0)
    stats = dataset_statistics(train_set, build_graphs(train_set, probe, settings), species, e0)
    model = MultiACEModel(spec, e0=e0, scale=stats.scale, shift=0.0, avg_num_neighbors=stats.avg_num_neighbors)
    t_start = time.perf_counter()
    result = train(model, train_set, valid, settings, out_dir, progress=False)
    train_s = time.perf_counter() - t_start
    stage_two_step = next((int(r["step"]) for r in result.history if r["stage"] == 2), None)
    _, metrics = evaluate(model, result.params, test, settings)
    return {"implementation": f"jace {name}", "dtype": dtype, "minutes": minutes, "train_s": train_s,
            "steps": int(result.step), "epochs": int(result.epoch), "n_params": model.n_params(result.params),
            "stop_reason": result.stop_reason, "stage_two_fraction": stage_two_fraction,
            "first_stage_two_evaluation_step": stage_two_step, "test": metrics}


# mace-torch 0.3.16 removed its BOTNet model ("BOTNet is deprecated, use MACE instead"); its stand-in is
# MACE with correlation order 1 in every layer, given here jace botnet's three layers.
TORCH_MODELS = {"mace-torch": {}, "mace-torch-nu1": {"correlation": 1, "layers": 3}}


def run_torch(name, minutes, data_dir, dtype, seed, torch_python, stage_two_fraction):
    hp = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
    json.dump({**{k: v for k, v in HP.items() if k != "avg_num_neighbors"}, **TORCH_MODELS[name]}, hp)
    hp.close()
    out = hp.name + ".out.json"
    cmd = [torch_python, os.path.join(HERE, "mace_torch_train.py"), hp.name, "--minutes", str(minutes), "--out", out,
           "--dtype", dtype, "--seed", str(seed), "--valid-fraction", "0.1"]
    if stage_two_fraction:
        cmd += ["--stage-two-fraction", str(stage_two_fraction)]
    if data_dir:
        cmd += ["--data", data_dir]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    with open(out) as fh:
        rec = json.load(fh)
    os.unlink(hp.name)
    os.unlink(out)
    return {"implementation": name, "dtype": dtype, "minutes": minutes, "train_s": rec.get("train_s"),
            "steps": rec.get("steps"), "epochs": rec.get("epochs"), "n_params": rec.get("n_params"),
            "stage_two": rec.get("stage_two"), "test": rec["test"], "hyperparameter_overrides": TORCH_MODELS[name],
            "versions": rec.get("versions")}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=None)
    p.add_argument("--minutes", type=float, default=8.0)
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stage-two-fraction", type=float, default=0.75,
                   help="start stage two (weights 1000/100, lr 1e-3) at this fraction of the budget; 0: off")
    p.add_argument("--models", nargs="+", default=["mace-torch", "mace", "mace-torch-nu1", "botnet"],
                   choices=[*TORCH_MODELS, "mace", "botnet"],
                   help="mace-torch-nu1: mace-torch's MACE with correlation 1 and 3 layers, its stand-in for BOTNet")
    p.add_argument("--out", default=os.path.join(HERE, "results", "equal_budget_acac.json"))
    p.add_argument("--torch-python", default=os.path.join(HERE, "_work", "torch-venv", "bin", "python"))
    args = p.parse_args(argv)
    records = []
    for name in args.models:
        if name in TORCH_MODELS:
            rec = run_torch(name, args.minutes, args.data, args.dtype, args.seed, args.torch_python, args.stage_two_fraction)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                rec = run_jace(name, args.minutes, args.data, args.dtype, args.seed, os.path.join(tmp, "run"),
                               args.stage_two_fraction)
        t = rec["test"]
        print(f"{rec['implementation']:14s} {rec['steps']} steps: test E MAE {t['energy_mae_meV']:.2f} meV, "
              f"F MAE {t['forces_mae_meV_per_A']:.2f} meV/Å", flush=True)
        records.append(rec)
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as fh:
            json.dump({"benchmark": "equal_budget_acac", "command": " ".join(["python"] + sys.argv),
                       "hyperparameters": HP, "records": records}, fh, indent=1)


if __name__ == "__main__":
    main()
