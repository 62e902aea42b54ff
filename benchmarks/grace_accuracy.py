"""Accuracy of GRACE against MACE and BOTNet at an equal training budget (issue 4).

Four models, ``grace-1l``, ``grace-2l``, ``mace`` and ``botnet``, small but sensible sizes (``MODELS``),
are trained with the same data, seed, optimiser and number of epochs (so the same number of steps) on

  acac   ``acac/train_300K.xyz`` (450 train / 50 validation), test ``acac/test_MD_300K.xyz`` (650);
  si     Zuo 2020 ``Si_training.extxyz`` (90 / 10 % split), test ``Si_test.extxyz`` (25);
  mo     Zuo 2020 ``Mo_training.extxyz``: there is no Mo test file, so a seeded 12 % of it is held out
         as the test set (written to ``benchmarks/_work/grace_accuracy/``) and the rest is split 90 / 10.

Every dataset is one sweep of ``jace ablate`` (``jace.diagnostics.ablation``) whose design points are
whole ``model:`` mappings; the sweep file is written next to the results, so one dataset can be rerun
with ``jace ablate benchmarks/_work/grace_accuracy/<dataset>/sweep.yaml``. Run directories (models,
checkpoints, logs) stay in ``benchmarks/_work/grace_accuracy/`` (git-ignored); the table, the sweep
files and every number go to ``benchmarks/results/grace_accuracy.json`` and ``grace_accuracy.md``.

  python benchmarks/grace_accuracy.py --data ../shared/data            # all three datasets
  python benchmarks/grace_accuracy.py --data ../shared/data --datasets acac --epochs acac=10

The budget is a number of epochs, not wall time (other processes share this machine's cores and
distort wall time); training wall time is recorded too. These are equal-budget comparisons of
unconverged models, not the converged accuracies of the papers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_timing import round_robin, wait_for_quiet  # noqa: E402

WORK = os.path.join(HERE, "_work", "grace_accuracy")  # --work changes it

CUTOFF = 5.0
GRACE_RADIAL = {"kind": "chebyshev", "n_max": 8, "envelope": "polynomial", "envelope_p": 5}
BESSEL_RADIAL = {"kind": "bessel", "n_max": 8, "envelope": "polynomial", "envelope_p": 5}

# The four models (elements are added per dataset). mace is the model of the mace-torch latency
# benchmark (multi_ace_vs_mace_torch.py, HP there); botnet has the same widths with 3 layers of ν = 1.
MODELS = {
    "grace-1l": {
        "type": "grace-1l", "cutoff": CUTOFF, "radial": GRACE_RADIAL, "radial_mlp": [32, 32], "embedding_size": 32,
        "channels": 32, "l_max": 3, "correlation": 3, "mlp_densities": 9, "readout_hidden": [32],
    },
    "grace-2l": {
        "type": "grace-2l", "cutoff": CUTOFF, "radial": GRACE_RADIAL, "radial_mlp": [32, 32], "embedding_size": 32,
        "channels": [32, 32], "l_max": [3, 2], "correlation": [3, 3], "message_l_max": 1, "message_channels": 16,
        "mlp_densities": 7, "readout_hidden": [32],
    },
    "mace": {
        "type": "mace", "cutoff": CUTOFF, "radial": BESSEL_RADIAL, "radial_mlp": [64, 64, 64],
        "hidden_irreps": "32x0e+32x1o", "l_max": 2, "num_layers": 2, "correlation": 3,
    },
    "botnet": {
        "type": "botnet", "cutoff": CUTOFF, "radial": BESSEL_RADIAL, "radial_mlp": [64, 64, 64],
        "hidden_irreps": "32x0e+32x1o", "l_max": 2, "num_layers": 3, "correlation": 1,
    },
}

# Published numbers (../shared/data/README.md).
PUBLISHED = {
    "acac": {"what": "RMSE, E meV/molecule / F meV/Å (MACE paper, Table 3, MD 300 K)",
             "BOTNet": (0.89, 6.3), "NequIP": (0.81, 5.90), "MACE": (0.9, 5.1)},
    "si": {"what": "test MAE, E meV/atom / F eV/Å (Zuo 2020 via ACEpotentials.jl)", "GAP": (2.91, 0.07), "MTP": (2.21, 0.06)},
    "mo": {"what": "test MAE, E meV/atom / F eV/Å (Zuo 2020, on their Mo test set, which is not in ../shared)",
           "GAP": (2.24, 0.09), "MTP": (2.83, 0.09)},
}

DEFAULT_EPOCHS = {"acac": 15, "si": 8, "mo": 8}
BATCH = {"acac": 5, "si": 2, "mo": 2}


def dataset_files(name: str, data_dir: str, seed: int) -> dict:
    """{"train", "test", "isolated", "elements"} of a dataset (absolute paths); the Mo split is made here."""
    d = os.path.abspath(data_dir)
    if name == "acac":
        return {"train": f"{d}/acac/train_300K.xyz", "test": f"{d}/acac/test_MD_300K.xyz",
                "isolated": f"{d}/acac/isolated_atoms.xyz", "elements": ["H", "C", "O"]}
    if name == "si":
        return {"train": f"{d}/zuo2020/Si_training.extxyz", "test": f"{d}/zuo2020/Si_test.extxyz",
                "isolated": None, "elements": ["Si"]}
    if name == "mo":
        import ase.io

        src = f"{d}/zuo2020/Mo_training.extxyz"
        frames = ase.io.read(src, ":")
        order = np.random.default_rng(seed).permutation(len(frames))
        n_test = int(round(0.12 * len(frames)))
        os.makedirs(WORK, exist_ok=True)
        train_path, test_path = f"{WORK}/mo_train.extxyz", f"{WORK}/mo_test.extxyz"
        ase.io.write(train_path, [frames[i] for i in sorted(order[n_test:])], format="extxyz")
        ase.io.write(test_path, [frames[i] for i in sorted(order[:n_test])], format="extxyz")
        return {"train": train_path, "test": test_path, "isolated": None, "elements": ["Mo"],
                "split": {"source": src, "n_train_file": len(frames) - n_test, "n_test": n_test, "seed": seed}}
    raise ValueError(f"unknown dataset {name!r}; known: acac, si, mo")


def sweep_mapping(name: str, files: dict, models, epochs: int, seed: int, precision: str) -> dict:
    """The ``jace ablate`` sweep of one dataset: one explicit point per model (a whole ``model:``)."""
    training = {
        "batch_size": BATCH[name], "valid_batch_size": 10, "optimizer": "amsgrad", "lr": 0.01, "schedule": "cosine",
        "final_lr_factor": 0.05, "clip_norm": 10.0, "ema_decay": 0.99, "energy_weight": 1.0, "forces_weight": 100.0,
        # MACE's recipe: a second stage that weights energies 1000 with lr 1e-3 (the best model of that stage is kept)
        "stage_two": {"start_fraction": 0.6, "energy_weight": 1000.0, "forces_weight": 100.0, "lr": 0.001},
        "n_buckets": 2, "plots": False,
        "e0": "isolated" if files["isolated"] else "least_squares",
    }
    data = {"train": files["train"], "validation_fraction": 0.1}
    if files["isolated"]:
        data["isolated_atoms"] = files["isolated"]
    points = [{"name": m, "model": dict(MODELS[m], elements=files["elements"])} for m in models]
    return {
        "base_config": {"precision": precision, "model": points[0]["model"], "data": data, "training": training},
        "points": points, "seeds": [seed], "budget": {"max_epochs": int(epochs)},
        "test_sets": {"test": files["test"]}, "out_dir": os.path.join(WORK, name),
    }


def run_dataset(name: str, files: dict, models, epochs: int, seed: int, precision: str, log) -> list[dict]:
    import yaml

    from jace.diagnostics.ablation import run_ablation
    from jace.diagnostics.sweep import load_sweep

    sweep_dir = os.path.join(WORK, name)
    os.makedirs(sweep_dir, exist_ok=True)
    path = os.path.join(sweep_dir, "sweep.yaml")
    with open(path, "w", encoding="utf-8") as fh:
        yaml.safe_dump(sweep_mapping(name, files, models, epochs, seed, precision), fh, sort_keys=False)
    records = run_ablation(load_sweep(path), log=log)
    rows = []
    for rec in records:
        run_dir = os.path.join(sweep_dir, f"{rec.name},seed={seed}")
        if not os.path.isdir(run_dir):
            run_dir = os.path.join(sweep_dir, rec.name)
        fit = {}
        metrics_path = os.path.join(run_dir, "metrics.json")
        if os.path.isfile(metrics_path):
            with open(metrics_path, encoding="utf-8") as fh:
                fit = json.load(fh).get("fit", {})
        rows.append({
            "dataset": name, "model": rec.name, "status": rec.status, "message": rec.message, "n_params": rec.n_params,
            "train_s": rec.train_seconds, "epochs": fit.get("epochs"), "steps": fit.get("steps"),
            "best_step": fit.get("best_step"), "test": rec.metrics.get("test", {}),
        })
    return rows


def steps_to_reach(dataset: str, models, seed: int, reference: str = "mace") -> dict:
    """From the runs' metrics.csv (validation every epoch): for every model, the first step at which its
    validation force RMSE and energy-per-atom RMSE are at or below the reference model's final ones
    (None if never). The sample-efficiency side of "speed at equal accuracy"."""
    import csv

    def curve(model):
        path = os.path.join(WORK, dataset, f"{model},seed={seed}", "metrics.csv")
        if not os.path.isfile(path):
            return []
        with open(path, encoding="utf-8") as fh:
            return [r for r in csv.DictReader(fh) if r.get("forces_rmse_meV_per_A")]

    ref = curve(reference)
    if not ref:
        return {}
    f_ref = float(ref[-1]["forces_rmse_meV_per_A"])
    e_ref = float(ref[-1]["energy_per_atom_rmse_meV"])
    out = {"reference": reference, "reference_valid_forces_rmse_meV_per_A": f_ref,
           "reference_valid_energy_per_atom_rmse_meV": e_ref, "models": {}}
    for m in models:
        rows = curve(m)
        first_f = next((int(r["step"]) for r in rows if float(r["forces_rmse_meV_per_A"]) <= f_ref), None)
        first_fe = next((int(r["step"]) for r in rows if float(r["forces_rmse_meV_per_A"]) <= f_ref
                         and float(r["energy_per_atom_rmse_meV"]) <= e_ref), None)
        out["models"][m] = {"final_step": int(rows[-1]["step"]) if rows else None,
                            "final_valid_forces_rmse_meV_per_A": float(rows[-1]["forces_rmse_meV_per_A"]) if rows else None,
                            "first_step_forces_at_reference": first_f, "first_step_forces_and_energy_at_reference": first_fe}
    return out


def _f(x, digits=1):
    return "—" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def table(rows: list[dict], epochs: dict) -> str:
    """One markdown table: every dataset, every model, with the published numbers below each dataset."""
    out = ["| dataset | model | params | epochs (steps) | train wall (s) | E RMSE | E MAE | E MAE/atom (meV) | "
           "F RMSE (meV/Å) | F MAE (meV/Å) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        for r in (r for r in rows if r["dataset"] == ds):
            t = r["test"]
            out.append(
                f"| {ds} | {r['model']} | {r['n_params'] or '—':,} | {r['epochs']} ({r['steps']}) | {_f(r['train_s'], 0)} | "
                f"{_f(t.get('energy_rmse_meV'))} | {_f(t.get('energy_mae_meV'))} | {_f(t.get('energy_per_atom_mae_meV'), 2)} | "
                f"{_f(t.get('forces_rmse_meV_per_A'))} | {_f(t.get('forces_mae_meV_per_A'))} |"
                if r["status"] == "ok" else f"| {ds} | {r['model']} | {r['status']}: {r['message']} ||||||||"
            )
        pub = PUBLISHED.get(ds, {})
        for k, v in pub.items():
            if k == "what":
                continue
            if ds == "acac":
                out.append(f"| {ds} | published {k} | | converged | | {v[0]} | | | {v[1]} | |")
            else:
                out.append(f"| {ds} | published {k} | | converged | | | | {v[0]} | | {1e3 * v[1]:.0f} |")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------------
# Speed at the sizes of the accuracy table (--speed)

SPEED_CASES = ["acac_1", "acac_32", "si_64", "si_512", "c_64", "c_512"]  # as multi_ace_vs_mace_torch.py


def speed_model(name: str, elements):
    """The model of MODELS[name] for ``elements`` with random weights: E0 = 0, avg_num_neighbors 20
    (as in multi_ace_vs_mace_torch.py; the time does not depend on these)."""
    from jace.config import parse_train_config
    from jace.models.grace import GraceModel, GraceSpec
    from jace.models.multi_ace import MultiACEModel

    model = dict(MODELS[name], elements=list(elements), avg_num_neighbors=20.0)
    raw = {"model": model, "data": {"train": "unused.xyz", "validation_fraction": 0.1}, "training": {}}
    spec = parse_train_config(raw, file=f"MODELS[{name!r}]", check_paths=False).model
    cls = GraceModel if isinstance(spec, GraceSpec) else MultiACEModel
    return cls(spec, e0=np.zeros(len(elements)))


def speed_case(case: str, dtype: str, data_dir: str, models, rounds: int) -> dict:
    """Energy + forces time of every model on one case: compile all, then ``rounds`` round-robin rounds."""
    import jax

    from multi_ace_vs_mace_torch import frames_for

    from jace.data.configuration import Configuration
    from jace.data.graph import Bucket, batch_graphs, graph_from_configuration, pad_graph
    from jace.models.potential import predict

    frames = frames_for(case, data_dir)
    elements = sorted({a for f in frames for a in f.get_chemical_symbols()})
    calls, rec = {}, {"case": case, "dtype": dtype, "models": {}}
    for name in models:
        model = speed_model(name, elements)
        cfgs = [Configuration(f.positions, f.numbers, np.array(f.cell), list(f.pbc)) for f in frames]
        b = batch_graphs([graph_from_configuration(c, model.cutoff, model.species) for c in cfgs])
        n_node, n_edge = int(b.n_node.sum()), int(b.n_edge.sum())
        # the bucket of multi_ace_vs_mace_torch.py: nodes and edges rounded up to multiples of 64
        g = pad_graph(b, Bucket(-(-(n_node + 1) // 64) * 64, -(-n_edge // 64) * 64, len(cfgs) + 1))
        g = jax.tree.map(lambda x: x.astype(dtype) if np.issubdtype(x.dtype, np.floating) else x, g)
        params = jax.jit(model.init)(jax.random.PRNGKey(0), g)
        fn = jax.jit(lambda p, g, m=model: predict(m.site_energies, p, g, compute_stress=False)[:2])
        t0 = time.perf_counter()
        compiled = fn.lower(params, g).compile()
        compile_s = time.perf_counter() - t0
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        for _ in range(2):  # warm-up
            out = jax.block_until_ready(compiled(params, g))
        if not np.all(np.isfinite(np.asarray(out[1]))):
            raise RuntimeError(f"{case} {name} {dtype}: non-finite forces")
        calls[name] = (lambda c=compiled, p=params, g=g: jax.block_until_ready(c(p, g)))
        rec["models"][name] = {"n_atoms": n_node, "n_edges": n_edge, "n_params": model.n_params(params),
                               "flops": float(cost.get("flops", float("nan"))), "compile_s": compile_s,
                               "times_s": [], "loadavg": []}
    times, loads = round_robin(list(calls.values()), rounds)
    for name, ts, ls in zip(calls, times, loads):
        r = rec["models"][name]
        r["times_s"], r["loadavg"] = ts, ls
        r["median_s"] = float(np.median(r["times_s"]))
    ref = rec["models"].get("mace")
    if ref:
        rec["time_ratio_over_mace"] = {n: r["median_s"] / ref["median_s"] for n, r in rec["models"].items()}
    return rec


def speed_table(records) -> str:
    models = list(records[0]["models"])
    head = "| case | atoms | dtype | " + " | ".join(f"{m} (ms)" for m in models) + " | " + \
        " | ".join(f"{m} / mace" for m in models if m != "mace") + " |"
    out = [head, "|" + "---|" * (3 + len(models) + len(models) - 1)]
    for r in records:
        ms = r["models"]
        first = next(iter(ms.values()))
        out.append(f"| {r['case']} | {first['n_atoms']} | {r['dtype']} | "
                   + " | ".join(f"{1e3 * ms[m]['median_s']:.1f}" for m in models) + " | "
                   + " | ".join(f"{r['time_ratio_over_mace'][m]:.2f}" for m in models if m != "mace") + " |")
    return "\n".join(out)


def run_speed(args) -> int:
    import jax

    out_path = args.speed_out
    load, waited = wait_for_quiet(args.max_load, args.max_wait)
    print(f"timing at load average {load:.2f} (waited {waited:.0f} s)", flush=True)
    records = []
    for dtype in args.dtypes.split(","):
        jax.config.update("jax_enable_x64", dtype == "float64")
        for case in args.cases.split(","):
            rec = speed_case(case, dtype, args.data, args.models.split(","), args.rounds)
            records.append(rec)
            print(f"{case:8s} {dtype}: " + ", ".join(f"{n} {1e3 * r['median_s']:.1f} ms" for n, r in rec["models"].items())
                  + f" (load {os.getloadavg()[0]:.2f})", flush=True)
            out = {"benchmark": "grace_speed", "command": " ".join(["python", os.path.relpath(sys.argv[0])] + sys.argv[1:]),
                   "models": {m: MODELS[m] for m in args.models.split(",")}, "rounds": args.rounds,
                   "load_before_timing": load, "waited_s": waited, "records": records,
                   "platform": platform.platform(), "cpus": os.cpu_count(), "jax": jax.__version__}
            os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
            with open(out_path, "w", encoding="utf-8") as fh:
                json.dump(out, fh, indent=1)
    md = speed_table(records)
    with open(os.path.splitext(out_path)[0] + ".md", "w", encoding="utf-8") as fh:
        fh.write(md + "\n")
    print(md)
    return 0


def main(argv=None) -> int:
    global WORK
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.path.join(HERE, "..", "..", "shared", "data"))
    p.add_argument("--datasets", default="acac,si,mo")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--epochs", nargs="*", default=[], help="dataset=epochs overrides, e.g. acac=10 si=20")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", default="float32", choices=["float32", "float64"])
    p.add_argument("--out", default=os.path.join(HERE, "results", "grace_accuracy.json"))
    p.add_argument("--work", default=WORK, help="run directories (models, checkpoints, logs, the Mo split)")
    p.add_argument("--fresh", action="store_true", help="delete the datasets' old run directories first "
                   "(else finished points are kept and skipped, as jace ablate does)")
    p.add_argument("--speed", action="store_true", help="time energy + forces of the models instead of training")
    p.add_argument("--speed-out", default=os.path.join(HERE, "results", "grace_speed.json"))
    p.add_argument("--dtypes", default="float64,float32", help="--speed: dtypes timed")
    p.add_argument("--cases", default=",".join(SPEED_CASES), help="--speed: cases timed")
    p.add_argument("--rounds", type=int, default=9, help="--speed: round-robin rounds (median reported)")
    p.add_argument("--max-load", type=float, default=1.5, help="--speed: wait for a 1-minute load average below this")
    p.add_argument("--max-wait", type=float, default=600.0, help="--speed: … for at most this many seconds")
    p.add_argument("--summarise", action="store_true", help="only recompute the steps-to-reach summary of "
                   "the finished runs in --work into --out")
    args = p.parse_args(argv)
    WORK = os.path.abspath(args.work)
    if args.speed:
        return run_speed(args)
    if args.summarise:
        if not os.path.isfile(args.out):
            p.error(f"--summarise reads an existing results file, and {args.out} does not exist "
                    "(run the training first, or pass --out)")
        with open(args.out, encoding="utf-8") as fh:
            out = json.load(fh)
        out["steps_to_reach_mace"] = {d: steps_to_reach(d, args.models.split(","), args.seed) for d in out["datasets"]}
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=1)
        print(json.dumps(out["steps_to_reach_mace"], indent=1))
        return 0
    epochs = dict(DEFAULT_EPOCHS)
    for item in args.epochs:
        k, _, v = item.partition("=")
        if k not in DEFAULT_EPOCHS or not v.isdigit():
            p.error(f"--epochs takes dataset=epochs with a dataset of {', '.join(DEFAULT_EPOCHS)}, got {item!r}")
        epochs[k] = int(v)
    models = args.models.split(",")
    for m in models:
        if m not in MODELS:
            p.error(f"unknown model {m!r}; known: {', '.join(MODELS)}")

    previous = {}
    if os.path.isfile(args.out):  # keep the rows of datasets not run this time
        with open(args.out, encoding="utf-8") as fh:
            previous = json.load(fh)
    rows = [r for r in previous.get("rows", []) if r["dataset"] not in args.datasets.split(",")]
    datasets = dict(previous.get("datasets", {}))
    for name in args.datasets.split(","):
        if args.fresh and os.path.isdir(os.path.join(WORK, name)):
            import shutil

            shutil.rmtree(os.path.join(WORK, name))
        files = dataset_files(name, args.data, args.seed)
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        new = run_dataset(name, files, models, epochs[name], args.seed, args.precision, print)
        for r in new:
            r["loadavg_start"] = load0
        rows += new
        datasets[name] = {"files": {k: v for k, v in files.items() if k != "elements"}, "epochs": epochs[name],
                          "batch_size": BATCH[name], "wall_s": time.perf_counter() - t0,
                          "loadavg_end": os.getloadavg()[0],
                          "sweep": sweep_mapping(name, files, models, epochs[name], args.seed, args.precision)}
        order = {d: i for i, d in enumerate(["acac", "si", "mo"])}
        rows.sort(key=lambda r: (order.get(r["dataset"], 9), models.index(r["model"]) if r["model"] in models else 9))
        steps = dict(previous.get("steps_to_reach_mace", {}))
        steps[name] = steps_to_reach(name, models, args.seed)
        out = {"benchmark": "grace_accuracy", "command": " ".join(["python"] + [os.path.relpath(sys.argv[0])] + sys.argv[1:]),
               "precision": args.precision, "seed": args.seed, "models": MODELS, "published": PUBLISHED,
               "datasets": datasets, "rows": rows, "steps_to_reach_mace": steps,
               "platform": platform.platform(), "cpus": os.cpu_count()}
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=1)
        md = table(rows, epochs)
        with open(os.path.splitext(args.out)[0] + ".md", "w", encoding="utf-8") as fh:
            fh.write(md + "\n")
        print(md, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
