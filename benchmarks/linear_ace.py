"""Linear ACE on revised-MD17 ethanol and the Zuo et al. (2020) elements: errors, basis size, fit time, memory.

Usage:
  python benchmarks/linear_ace.py --data ../shared/data                      # all datasets, one process each
  python benchmarks/linear_ace.py --data ../shared/data --only ethanol       # one dataset (in this process)

For each dataset: the weighted design matrix of the training set is streamed into a solver; the
prior's exponent p and strength λ are chosen on a validation set (ethanol: the 50 configurations after
the first 950; Zuo: every 10th training configuration), then (Zuo) the validation rows are merged in and
the final model is solved with that p, λ and evaluated on the test set. The Zuo fits use the streamed QR
(more rows than features); ethanol's basis has more features (87,636) than rows (26,600), so it uses the
dual (kernel) form, ``jace.models.linear_ace.DualRidge``: one 26,600² kernel per p, one Cholesky per
(energy weight, λ): the energy rows are re-weighted after assembly, so the energy weight is chosen on
validation too.
Each dataset runs in its own process so that its peak memory is its own: ru_maxrss (which also counts
the dual solver's rows file, mapped from disk) and the peak anonymous memory (RssAnon).
Results: benchmarks/results/linear_ace.json (merged per dataset).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "linear_ace.json")

# Hyperparameters per dataset (chosen by the validation errors of a few trial fits, see README).
SETTINGS = {
    "ethanol": dict(
        elements=("H", "C", "O"), cutoff=5.0, n_max=16, l_max=4, correlation=4, max_degree=(16, 16, 15, 14), w_l=1.5,
        energy_weight=30.0, forces_weight=1.0, e0="isolated", prior_p=(0.5,), solver="dual",
        # design-row batches of 144 atoms and 256-edge derivative chunks (defaults 384 and 1024; the edge
        # chunk sets JAX's peak memory, about 16 GiB at 1024 for this basis)
        atom_budget=144, edge_chunk=256, lams=(3e-8, 1e-7, 3e-7, 1e-6),
        # optional: "energy_weights", a list the dual solver scans by re-weighting the energy rows after
        # assembly (on the 64,839-feature basis 15 gave the same validation errors as 30, see README)
    ),
    # Si and Ge energy weights: chosen on validation with linear_ace_scan.py (see README), from 3 … 300;
    # Ge's cutoff too, from 5.0, 5.5, 6.0 and 6.5 Å (validation still improving slowly at 6.5)
    "Si": dict(elements=("Si",), cutoff=5.5, n_max=24, l_max=6, correlation=4, max_degree=(24, 22, 18, 14), w_l=1.5,
               energy_weight=20.0, forces_weight=1.0, stress_weight=1.0, e0="least_squares", prior_p=(0.5, 1.0, 2.0)),
    "Ge": dict(elements=("Ge",), cutoff=6.5, n_max=24, l_max=6, correlation=4, max_degree=(24, 22, 18, 14), w_l=1.5,
               energy_weight=15.0, forces_weight=1.0, stress_weight=1.0, e0="least_squares", prior_p=(0.5, 1.0, 2.0)),
    "Li": dict(elements=("Li",), cutoff=5.5, n_max=22, l_max=6, correlation=4, max_degree=(22, 20, 16, 13), w_l=1.5,
               energy_weight=30.0, forces_weight=1.0, stress_weight=1.0, e0="least_squares", prior_p=(0.5, 1.0, 2.0)),
    "Mo": dict(elements=("Mo",), cutoff=5.2, n_max=22, l_max=6, correlation=4, max_degree=(22, 20, 16, 13), w_l=1.5,
               energy_weight=30.0, forces_weight=1.0, stress_weight=1.0, e0="least_squares", prior_p=(0.5, 1.0, 2.0)),
}
# λ values scanned on validation, for each exponent p in a dataset's "prior_p" (the smoothness prior is
# Γ_v = (Σ (n + 1) + w_l l(l+1))^p).
# The dual solver (ethanol) factorises the kernel once per λ, so it scans fewer values; below about 1e-8
# the kernel is not numerically positive definite (its condition number is the normal equations').
DUAL_LAMS = (1e-8, 3e-8, 1e-7, 3e-7, 1e-6)
LAMS = (1e-12, 1e-11, 1e-10, 1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2)

# Published numbers (../shared/data/README.md): ethanol MAE meV, meV/Å (MACE paper Table 1);
# Zuo test MAE meV/atom, eV/Å (as quoted by ACEpotentials.jl).
PUBLISHED = {
    "ethanol": {"linear ACE": {"E_meV": 1.2, "F_meV_A": 7.3}, "MACE": {"E_meV": 0.4, "F_meV_A": 2.1}},
    "Li": {"GAP": {"E_meV_atom": 0.49, "F_eV_A": 0.01}, "MTP": {"E_meV_atom": 0.49, "F_eV_A": 0.01}},
    "Mo": {"GAP": {"E_meV_atom": 2.24, "F_eV_A": 0.09}, "MTP": {"E_meV_atom": 2.83, "F_eV_A": 0.09}},
    "Si": {"GAP": {"E_meV_atom": 2.91, "F_eV_A": 0.07}, "MTP": {"E_meV_atom": 2.21, "F_eV_A": 0.06}},
    "Ge": {"GAP": {"E_meV_atom": 2.06, "F_eV_A": 0.05}, "MTP": {"E_meV_atom": 1.79, "F_eV_A": 0.05}},
}


def load(dataset: str, data: str):
    from jace.data.io import read_configurations, split_isolated_atoms
    from jace.data.keys import DataKeys

    if dataset == "ethanol":
        configs = read_configurations(os.path.join(data, "ethanol", "train.xyz"), require=("energy", "forces"))
        isolated = read_configurations(os.path.join(data, "ethanol", "isolated_atoms.xyz"))
        return configs[:950], configs[950:1000], {}, isolated
    z = os.path.join(data, "zuo2020")
    keys = DataKeys(config_type="group")  # Zuo's AIMD-NVT, Elastic, Surface, Vacancy: errors per group
    train = read_configurations(os.path.join(z, f"{dataset}_training.extxyz"), keys, require=("energy", "forces"))
    isolated, train = split_isolated_atoms(train)
    val = train[::10]
    fit = [c for k, c in enumerate(train) if k % 10]
    test_path = os.path.join(z, f"{dataset}_test.extxyz")
    tests = {"test": read_configurations(test_path, keys)} if os.path.exists(test_path) else {}
    return fit, val, tests, isolated


class AnonymousMemoryPeak:
    """Peak anonymous resident memory (RssAnon of /proc/self/status, sampled every 0.2 s in a thread).

    ru_maxrss also counts file-backed pages, such as the dual solver's rows file mapped into memory,
    which the operating system can drop and re-read; RssAnon is what the process itself holds.
    """

    def __init__(self):
        import threading

        self.peak_kib, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self):
        try:
            with open("/proc/self/status") as fh:
                for line in fh:
                    if line.startswith("RssAnon:"):
                        self.peak_kib = max(self.peak_kib, int(line.split()[1]))
        except OSError:  # not Linux
            pass

    def _run(self):
        while not self._stop.wait(0.2):
            self._sample()

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self._sample()
        return self.peak_kib / 1024


def rss_anon_mib() -> float:
    """RssAnon of this process in MiB (0 where /proc is not available)."""
    try:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("RssAnon:")) / 1024
    except (OSError, StopIteration):
        return 0.0


def release_host_memory():
    """Hand back what the design-row phase leaves behind before the solves: JAX's compiled functions
    and buffers (jax.clear_caches) and the C heap's free pages (glibc malloc_trim), which otherwise
    stay in the process (about 6.8 GiB after the 87,636-feature ethanol assembly)."""
    import ctypes
    import gc

    import jax

    before = rss_anon_mib()
    jax.clear_caches()
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc
        pass
    print(f"released host memory: RssAnon {before:.0f} -> {rss_anon_mib():.0f} MiB", flush=True)


def run_one(dataset: str, data: str, override: dict | None = None, n_train: int | None = None) -> dict:
    import jax

    jax.config.update("jax_enable_x64", True)
    from jace.data.e0 import resolve_e0
    from jace.data.graph import SpeciesMap
    from jace.models.design import FitSpec, LinearACESpec, RadialSpec
    from jace.models.linear_ace import (
        LinearACEModel,
        assemble_linear_system,
        design_rows,
        evaluate,
        product_basis_for,
        smoothness_prior,
    )
    from jace.training.metrics import compute_metrics, metrics_by_config_type

    s = dict(SETTINGS[dataset])
    s.update(override or {})
    spec = LinearACESpec(
        elements=s["elements"], cutoff=s["cutoff"],
        radial=RadialSpec(s.get("radial", "bessel"), s["n_max"], "polynomial", 5, s.get("transform", "none"),
                          s.get("r0_scale", 1.0), s.get("q", 4.0)),
        l_max=s["l_max"], correlation=s["correlation"], max_degree=tuple(float(x) for x in s["max_degree"]), w_l=s["w_l"],
    )
    fit = FitSpec(
        energy_weight=s["energy_weight"], forces_weight=s["forces_weight"], stress_weight=s.get("stress_weight", 1.0),
        e0=s["e0"], regulariser="smoothness", smoothness_p=2.0, lam=1e-6,
    )
    train, val, tests, isolated = load(dataset, data)
    if n_train:
        train = train[:n_train]
    species = SpeciesMap.from_symbols(spec.elements)
    anon = AnonymousMemoryPeak()
    t_start = time.perf_counter()
    e0 = np.asarray(resolve_e0(fit.e0, species, train, isolated))
    basis = product_basis_for(spec)
    t_basis = time.perf_counter() - t_start
    solver_kind = s.get("solver", "qr")
    rows_kw = dict(atom_budget=int(s.get("atom_budget", 384)), edge_chunk=int(s.get("edge_chunk", 1024)))  # bound JAX's peak
    solver, info = assemble_linear_system(spec, fit, train, e0, solver=solver_kind, **rows_kw)

    # validation rows (unweighted) for choosing the prior exponent p and λ
    t_val = time.perf_counter()
    val_rows = list(design_rows(spec, val, **rows_kw))
    release_host_memory()
    scan, coefs = [], {}
    energy_weights = s.get("energy_weights", (s["energy_weight"],))
    if solver_kind == "qr" and tuple(energy_weights) != (s["energy_weight"],):
        raise SystemExit("energy_weights (a scan) needs the dual solver; choose QR weights with linear_ace_scan.py")
    lams = s.get("lams", LAMS if solver_kind == "qr" else DUAL_LAMS)

    def row_scale(w):  # energy rows from the assembled weight to w (dual solver only)
        return None if w == s["energy_weight"] else np.where(info["row_kinds"] == "e", w / s["energy_weight"], 1.0)

    for prior_p, we in itertools.product(s["prior_p"], energy_weights):
        gamma = np.tile(smoothness_prior(basis, spec, dataclasses.replace(fit, smoothness_p=float(prior_p))), len(species))
        if solver_kind == "qr":
            path = solver.ridge_path(gamma)
        else:  # dual: one kernel per p, one Cholesky factorisation per (energy weight, λ)
            path = functools.partial(solver.solve, gamma=gamma, row_scale=row_scale(we))
        for lam in lams:
            t_lam = time.perf_counter()
            try:
                c = coefs[prior_p, we, lam] = path(lam)
            except np.linalg.LinAlgError:  # λ below the kernel's round-off floor
                print(f"p={prior_p} w_E={we:g} λ={lam:g}: kernel not numerically positive definite, skipped", flush=True)
                continue
            de, df = [], []
            for k, x_e, x_f, _ in val_rows:
                cfg = val[k]
                e_ref = cfg.energy - e0[species.indices(cfg.numbers)].sum()
                de.append((x_e @ c - e_ref) / cfg.n_atoms)
                df.append(x_f @ c - cfg.forces.reshape(-1))
            scan.append({
                "prior_p": float(prior_p),
                "energy_weight": float(we),
                "lam": lam,
                "val_energy_per_atom_mae_meV": 1e3 * float(np.mean(np.abs(de))),
                "val_forces_mae_meV_per_A": 1e3 * float(np.mean(np.abs(np.concatenate(df)))),
                "solve_s": time.perf_counter() - t_lam,
            })
            print(json.dumps(scan[-1]), flush=True)
        del path
    # choose (p, λ) by a combined score: force MAE + 10 × energy-per-atom MAE (both meV-scale)
    best = min(scan, key=lambda r: r["val_forces_mae_meV_per_A"] + 10 * r["val_energy_per_atom_mae_meV"])
    gamma = np.tile(smoothness_prior(basis, spec, dataclasses.replace(fit, smoothness_p=best["prior_p"])), len(species))
    t_val = time.perf_counter() - t_val

    final_train = train
    if dataset != "ethanol":  # Zuo: merge the validation rows into the final fit
        from jace.models.linear_ace import weighted_rows

        for k, x_e, x_f, x_v in val_rows:
            cfg = val[k]
            solver.add(*weighted_rows(fit, cfg, float(e0[species.indices(cfg.numbers)].sum()), x_e, x_f, x_v))
        final_train = train + val
    t_solve = time.perf_counter()
    if final_train is train and solver_kind == "dual":  # the scan already solved this system
        coef = coefs[best["prior_p"], best["energy_weight"], best["lam"]]
    else:
        coef = solver.solve(best["lam"], gamma) if solver_kind == "qr" else solver.solve(best["lam"], gamma, row_scale(best["energy_weight"]))
    t_solve = time.perf_counter() - t_solve
    fit_time = time.perf_counter() - t_start
    model = LinearACEModel(spec, e0, coef.reshape(len(species), -1))

    out = {
        "dataset": dataset,
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in s.items()},
        "n_basis": info["n_basis"],
        "n_features": info["n_features"],
        "n_rows": int(solver.n_rows),
        "n_train": len(final_train),
        "basis_build_time_s": t_basis,
        "assembly_time_s": info["assembly_time_s"],
        "lambda_scan_time_s": t_val,
        "final_solve_time_s": t_solve,
        "fit_time_s": fit_time,
        "lambda": best["lam"],
        "prior_p": best["prior_p"],
        "energy_weight": best["energy_weight"],
        "lambda_scan": scan,
        "errors": {},
    }
    sets = {"validation": val, **tests}
    if dataset == "ethanol":
        sets = {"validation": val}
    for name, cfgs in sets.items():
        e, f, st = evaluate(model, cfgs)
        out["errors"][name] = compute_metrics(cfgs, e, f, st)
        if name in tests:
            out.setdefault("errors_by_group", {})[name] = metrics_by_config_type(cfgs, e, f, st)
    out["peak_rss_MiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["peak_anon_MiB"] = anon.stop()
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.path.join(HERE, "..", "..", "shared", "data"))
    p.add_argument("--only", choices=sorted(SETTINGS))
    p.add_argument("--datasets", default="ethanol,Si,Ge,Li,Mo")
    p.add_argument("--out", default=RESULTS)
    p.add_argument("--override", default="{}", help="JSON dict of settings to override (experiments)")
    p.add_argument("--n-train", type=int, default=None, help="use only the first N training configs (experiments)")
    args = p.parse_args(argv)
    if not os.path.isdir(args.data):
        sys.exit(f"data folder {args.data} not found (pass --data PATH/TO/shared/data)")
    if args.only:
        res = run_one(args.only, args.data, json.loads(args.override), args.n_train)
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        allres = json.load(open(args.out)) if os.path.exists(args.out) else {}
        allres[args.only] = res
        allres["_machine"] = {"cpus": os.cpu_count(), "note": "2-core CPU, no GPU; float64"}
        tmp = args.out + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(allres, fh, indent=1)
        os.replace(tmp, args.out)
        errs = res["errors"]
        print(json.dumps({"dataset": args.only, "n_basis": res["n_basis"], "lambda": res["lambda"],
                          "fit_time_s": round(res["fit_time_s"], 1), "peak_rss_MiB": round(res["peak_rss_MiB"]),
                          "errors": {k: {m: round(v, 3) for m, v in e.items() if "mae" in m} for k, e in errs.items()}}, indent=1))
        return
    for d in args.datasets.split(","):
        subprocess.run([sys.executable, __file__, "--data", args.data, "--only", d, "--out", args.out], check=True)


if __name__ == "__main__":
    main()
