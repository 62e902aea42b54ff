"""MD throughput: jace on jax-md, jace's ASE calculator and mace-torch's ASE calculator, same structures.

    python benchmarks/md_throughput.py --data ../shared/data --out benchmarks/results/md_throughput.json

Model: the MACE of ``benchmarks/multi_ace_vs_mace_torch.py`` on both sides (32 channels, l_max 2,
hidden 32x0e+32x1o, correlation 3, 2 layers, 8 Bessel functions, p = 5, r_c = 5 Å, radial MLP
[64, 64, 64]) with random weights (the cost does not depend on them; jace: ``init`` with PRNGKey(0),
mace-torch: ``torch.manual_seed(0)``); average number of neighbours from the structure itself.

Structures (``benchmarks/structures.py``): rattled diamond Si cells of 64, 512 and 4,096 atoms, and one
acetylacetone molecule (15 atoms; needs ``--data``). All start at rest; steps of 0.5 fs.

What is timed, per structure and dtype (float32 and float64):
  * jax-md: ``from_configuration`` + ``simulate.nve`` + ``run_in_chunks`` (jitted ``lax.fori_loop``
    chunks of ``chunk`` steps with jax-md's neighbour list updated every step); the first chunk
    (compilation) is timed separately, then ``n_chunks`` chunks;
  * jace ASE: ``JaceCalculator`` + ASE ``VelocityVerlet`` (host neighbour list every step), after two
    warm-up steps;
  * mace-torch ASE: ``MACECalculator`` + the same integrator, in its own venv
    (``benchmarks/md_throughput_torch.py``, 2 torch threads).
Plus: XLA compilations during a 10,000-step jax-md run and during a 10,000-step ASE run on acac
(counted with ``jax.monitoring``'s backend-compile events, and the calculator's own trace counter),
and the largest Si cell whose energy+forces program fits in memory (XLA's memory analysis of the
compiled program for growing cells, the largest one then run once to confirm).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_timing import time_dynamics  # noqa: E402
HP = {"channels": 32, "l_max": 2, "correlation": 3, "layers": 2, "hidden_l_max": 1, "n_rad": 8, "cutoff": 5.0,
      "envelope_p": 5, "radial_mlp": [64, 64, 64]}
TORCH_PY = os.path.join(HERE, "_work", "torch-venv", "bin", "python")
DT_FS = 0.5
TIME_UNIT_FS = 10.180505710774743
# (jax-md chunk length, timed chunks, ASE steps) per case
PLAN = {"acac_1": (200, 5, 50), "si_64": (100, 3, 20), "si_512": (20, 2, 5), "si_4096": (4, 1, 2)}

_COMPILES = [0]


def _count_compiles():
    import jax

    def listener(event, duration, **kw):
        if event == "/jax/core/compile/backend_compile_duration":
            _COMPILES[0] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)


def structure(case, data):
    import structures

    if case == "acac_1":
        return structures.acac_molecule(data)
    return structures.silicon_cell(int(case.split("_")[1]))


def model_for(atoms, dtype):
    import jax

    from jace.data.configuration import Configuration
    from jace.data.graph import graph_from_configuration
    from jace.models.potential import cast_params
    from multi_ace_vs_mace_torch import jace_model

    from ase.data import chemical_symbols

    elements = sorted({chemical_symbols[z] for z in atoms.numbers}, key=lambda s: chemical_symbols.index(s))
    cfg = Configuration(atoms.positions, atoms.numbers, np.asarray(atoms.cell[:]), atoms.pbc)
    probe = jace_model(HP, elements, dtype, avg=1.0)
    g = graph_from_configuration(cfg, HP["cutoff"], probe.species)
    avg = len(g.senders) / len(atoms)
    model = jace_model(HP, elements, dtype, avg=avg)
    params = cast_params(model.init(jax.random.PRNGKey(0), g), np.dtype(dtype))
    return model.with_params(params)


def jaxmd_run(model, atoms, chunk, n_chunks):
    import jax
    from jax_md import simulate

    from jace.interfaces.jax_md import from_configuration, neighbor_step, run_in_chunks

    system = from_configuration(model, atoms)
    nbrs = system.neighbor_fn.allocate(system.positions)
    init_fn, apply_fn = simulate.nve(system.energy_fn, system.shift_fn, DT_FS / TIME_UNIT_FS)
    state = init_fn(jax.random.PRNGKey(0), system.positions, 0.0, mass=system.masses, neighbor=nbrs)
    step = neighbor_step(apply_fn)
    t0 = time.perf_counter()
    state, nbrs, _ = run_in_chunks(step, state, nbrs, system.neighbor_fn, chunk, chunk_steps=chunk)
    jax.block_until_ready(state.position)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    state, nbrs, info = run_in_chunks(step, state, nbrs, system.neighbor_fn, chunk * n_chunks, chunk_steps=chunk)
    jax.block_until_ready(state.position)
    seconds = time.perf_counter() - t0
    steps = chunk * n_chunks
    return {"implementation": "jace jax-md", "steps": steps, "seconds": seconds, "first_chunk_seconds": first,
            "steps_per_s": steps / seconds, "atom_steps_per_s": steps * len(atoms) / seconds,
            "reallocations": int(info.n_reallocations), "uses_images": bool(system.uses_images),
            "finite": bool(np.isfinite(np.asarray(state.position)).all()), "loadavg": os.getloadavg()[0]}


def ase_run(model, atoms, dtype, steps):
    from ase import units
    from ase.md.verlet import VelocityVerlet

    from jace.interfaces.ase_calculator import JaceCalculator

    atoms = atoms.copy()
    atoms.calc = JaceCalculator(model, dtype=dtype)
    warm, seconds = time_dynamics(VelocityVerlet(atoms, DT_FS * units.fs), steps)
    return {"implementation": "jace ASE calculator", "steps": steps, "seconds": seconds, "warmup_seconds": warm,
            "steps_per_s": steps / seconds, "atom_steps_per_s": steps * len(atoms) / seconds,
            "compilations": atoms.calc.n_compilations, "loadavg": os.getloadavg()[0]}


def torch_run(case, dtype, steps, hp_path):
    if not os.path.exists(TORCH_PY):
        return None
    env = dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1")
    out = subprocess.run([TORCH_PY, os.path.join(HERE, "md_throughput_torch.py"), hp_path, case, dtype, str(steps)],
                         capture_output=True, text=True, env=env, timeout=1800)
    lines = [x for x in out.stdout.splitlines() if x.startswith("{")]
    if out.returncode != 0 or not lines:
        print(out.stderr[-2000:], file=sys.stderr)
        return {"error": out.stderr[-500:]}
    return json.loads(lines[-1])


def compilations_10k(data, dtype):
    """XLA compilations during 10,000 MD steps of acac: jax-md (chunks of 500) and the ASE calculator."""
    import jax
    from ase import units
    from ase.md.verlet import VelocityVerlet
    from jax_md import simulate

    from jace.interfaces.ase_calculator import JaceCalculator
    from jace.interfaces.jax_md import from_configuration, neighbor_step, run_in_chunks

    atoms = structure("acac_1", data)
    model = model_for(atoms, dtype)
    out = {}
    system = from_configuration(model, atoms)
    nbrs = system.neighbor_fn.allocate(system.positions)
    init_fn, apply_fn = simulate.nve(system.energy_fn, system.shift_fn, DT_FS / TIME_UNIT_FS)
    state = init_fn(jax.random.PRNGKey(0), system.positions, 0.0, mass=system.masses, neighbor=nbrs)
    c0, t0 = _COMPILES[0], time.perf_counter()
    state, nbrs, info = run_in_chunks(neighbor_step(apply_fn), state, nbrs, system.neighbor_fn, 10_000, chunk_steps=500)
    jax.block_until_ready(state.position)
    out["jax_md"] = {"steps": 10_000, "xla_compilations": _COMPILES[0] - c0, "reallocations": int(info.n_reallocations),
                     "seconds": time.perf_counter() - t0}
    atoms = atoms.copy()
    atoms.calc = JaceCalculator(model, dtype=dtype)
    dyn = VelocityVerlet(atoms, DT_FS * units.fs)
    c0, t0 = _COMPILES[0], time.perf_counter()
    dyn.run(10_000)
    out["ase"] = {"steps": 10_000, "xla_compilations": _COMPILES[0] - c0, "calculator_compilations": atoms.calc.n_compilations,
                  "seconds": time.perf_counter() - t0}
    return out


def largest_cell(dtype, limit_gib):
    """Largest diamond Si cell (n×n×n conventional cells) whose energy+forces program fits in ``limit_gib``."""
    import jax
    from ase.build import bulk

    from jace.data.configuration import Configuration
    from jace.data.graph import Bucket, graph_from_configuration, pad_graph

    rows, best = [], None
    for n in (8, 10, 12, 14, 16, 18):
        atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(n)
        model = model_for(atoms, dtype)
        cfg = Configuration(atoms.positions, atoms.numbers, np.asarray(atoms.cell[:]), atoms.pbc)
        g = graph_from_configuration(cfg, HP["cutoff"], model.species)
        g = pad_graph(g, Bucket(len(atoms) + 8, len(g.senders) + 8, 2))
        lowered = model._predict.lower(model.params, g, compute_stress=True)
        mem = lowered.compile().memory_analysis()
        total = mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
        rows.append({"n_atoms": len(atoms), "n_edges": int(len(g.senders)), "predicted_bytes": int(total)})
        print(f"  largest cell: {len(atoms)} atoms, predicted {total / 2**30:.2f} GiB", flush=True)
        if total > limit_gib * 2**30:
            break
        best = (atoms, model, g, total)
    atoms, model, g, total = best
    t0 = time.perf_counter()
    out = model.predict_graph(g)
    jax.block_until_ready(out.energy)
    import resource

    return {"limit_gib": limit_gib, "scan": rows, "largest_n_atoms": len(atoms), "predicted_gib": total / 2**30,
            "confirmed_seconds": time.perf_counter() - t0, "finite": bool(np.isfinite(np.asarray(out.forces)).all()),
            "max_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="../shared/data (for acac; skipped when absent)")
    p.add_argument("--out", default=os.path.join(HERE, "results", "md_throughput.json"))
    p.add_argument("--cases", nargs="+", default=list(PLAN))
    p.add_argument("--dtype", nargs="+", default=["float32", "float64"])
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--skip-10k", action="store_true")
    p.add_argument("--memory-limit-gib", type=float, default=14.0)
    p.add_argument("--skip-largest", action="store_true")
    p.add_argument("--merge", help="a results JSON whose records of other dtypes are kept (run one dtype at a time)")
    args = p.parse_args(argv)

    import jax

    _count_compiles()
    import warnings

    warnings.filterwarnings("ignore", message="scatter inputs have incompatible types")
    hp_path = os.path.join(HERE, "_work", "md_hp.json")
    os.makedirs(os.path.dirname(hp_path), exist_ok=True)
    with open(hp_path, "w") as f:
        json.dump(HP, f)
    records, extra = [], {}
    for dtype in args.dtype:
        # jax-md systems take their dtype from this flag (as jace's own float32 training does)
        jax.config.update("jax_enable_x64", dtype == "float64")
        for case in args.cases:
            if case == "acac_1" and not args.data:
                print("acac_1: skipped (no --data)")
                continue
            chunk, n_chunks, ase_steps = PLAN[case]
            atoms = structure(case, args.data)
            model = model_for(atoms, dtype)
            rec = {"case": case, "dtype": dtype, "n_atoms": len(atoms), "jax_md": jaxmd_run(model, atoms, chunk, n_chunks),
                   "ase": ase_run(model, atoms, dtype, ase_steps)}
            rec["mace_torch_ase"] = None if args.no_torch else torch_run(case, dtype, ase_steps, hp_path)
            t = rec["mace_torch_ase"]
            if t and "steps_per_s" in t:
                rec["ratio_jaxmd_over_torch_steps_per_s"] = rec["jax_md"]["steps_per_s"] / t["steps_per_s"]
                rec["ratio_ase_over_torch_steps_per_s"] = rec["ase"]["steps_per_s"] / t["steps_per_s"]
            records.append(rec)
            print(f"{case:8s} {dtype}: jax-md {rec['jax_md']['steps_per_s']:.2f} steps/s, jace ASE "
                  f"{rec['ase']['steps_per_s']:.2f}, mace-torch ASE "
                  f"{(t or {}).get('steps_per_s', float('nan')):.2f} (load {os.getloadavg()[0]:.2f})", flush=True)
    if args.merge and os.path.exists(args.merge):
        with open(args.merge) as f:
            old = json.load(f)
        records = [r for r in old["records"] if r["dtype"] not in args.dtype] + records
        for key in ("compilations_10k_steps_acac_float64", "largest_cell_float64"):
            if key in old and (key == "largest_cell_float64" and args.skip_largest or key != "largest_cell_float64" and args.skip_10k):
                extra[key] = old[key]
    result = {"records": records, "hp": HP, "dt_fs": DT_FS, "machine": platform.platform(), "cpus": os.cpu_count(),
              "jax": jax.__version__, **extra}
    jax.config.update("jax_enable_x64", True)
    if not args.skip_10k and args.data:
        result["compilations_10k_steps_acac_float64"] = compilations_10k(args.data, "float64")
        print("10k steps:", result["compilations_10k_steps_acac_float64"], flush=True)
    if not args.skip_largest:
        result["largest_cell_float64"] = largest_cell("float64", args.memory_limit_gib)
        print("largest:", {k: v for k, v in result["largest_cell_float64"].items() if k != "scan"}, flush=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
