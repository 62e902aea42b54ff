"""jace `mace` against PyTorch MACE (mace-torch), side by side in one run, same hyperparameters.

Latency of energy+forces (model call; neighbour list and batching timed separately) for one
acetylacetone molecule, a batch of 32, 64- and 512-atom rattled diamond Si and C cells; training steps
per second on acetylacetone with batch size 5; in float32 and float64. The torch side runs in its own
virtual environment (``benchmarks/_work/torch-venv``, see ``mace_torch_side.py``) as a subprocess of
this script, one case at a time alternating with jace, so both see the same machine state.

  python benchmarks/multi_ace_vs_mace_torch.py --data ../shared/data --out benchmarks/results/mace_comparison.json

On a GPU machine (``benchmarks/device_kit.sh`` prepares and runs it there), jace runs on JAX's default
backend and ``--torch-device cuda`` puts mace-torch on the GPU; both sides copy the batch to the GPU
before the clock starts and wait for the GPU before it stops.

Hyperparameters (both sides): channels 32, spherical harmonics l_max 2, hidden irreps 32x0e+32x1o
(hidden_l_max 1), correlation 3, 2 layers, 8 Bessel functions, polynomial envelope p = 5, cutoff 5 Å,
radial MLP [64, 64, 64], readout MLP 16, avg_num_neighbors fixed at 20 for latency.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import structures  # noqa: E402

HP = {"channels": 32, "l_max": 2, "correlation": 3, "layers": 2, "hidden_l_max": 1, "n_rad": 8, "cutoff": 5.0,
      "envelope_p": 5, "radial_mlp": [64, 64, 64], "avg_num_neighbors": 20.0}
CASES = ["acac_1", "acac_32", "si_64", "si_512", "c_64", "c_512", "train"]
# jace pads nodes (one more for the padding node) and edges up to a multiple of this, as its own
# ``make_buckets`` does for ``jace eval`` and training; mace-torch runs at the exact size. Sessions 5-12
# used 64, which padded the 64-atom cells' 65 nodes to 128 (``--pad-multiple 64`` repeats that).
PAD_MULTIPLE = 8


def frames_for(case, data_dir):
    """The Atoms of one latency case (``structures.LATENCY_CASES``, shared with the torch side)."""
    return structures.LATENCY_CASES[case][1](data_dir)


def jace_model(hp, elements, dtype, e0=None, scale=1.0, shift=0.0, avg=None):
    from jace.models.design import RadialSpec
    from jace.models.multi_ace import MultiACEModel, preset

    spec = preset(
        "mace", elements, cutoff=hp["cutoff"], channels=hp["channels"], l_max=hp["l_max"],
        hidden_l_max=hp["hidden_l_max"], correlation=(hp["correlation"],) * hp["layers"], num_layers=hp["layers"],
        radial_mlp=tuple(hp["radial_mlp"]), radial=RadialSpec(kind="bessel", n_max=hp["n_rad"], envelope_p=hp["envelope_p"]),
    )
    return MultiACEModel(spec, e0=e0, scale=scale, shift=shift, avg_num_neighbors=avg or hp["avg_num_neighbors"])


def _stats(ts):
    return {"median_s": float(np.median(ts)), "min_s": float(np.min(ts)), "mean_s": float(np.mean(ts)), "n": len(ts)}


def jace_setup(case, dtype, data_dir, pad_multiple=PAD_MULTIPLE):
    """(model, prep) for one latency case: jace ``mace`` with ``HP``, and prep() → (padded graph in
    ``dtype``, n_nodes, n_edges), the neighbour list and batching a user's call would do; nodes + 1 and
    edges padded up to a multiple of ``pad_multiple``."""
    import jax

    from jace.data.configuration import Configuration
    from jace.data.graph import Bucket, SpeciesMap, batch_graphs, graph_from_configuration, pad_graph

    frames = frames_for(case, data_dir)
    elements = sorted({a for f in frames for a in f.get_chemical_symbols()})
    species = SpeciesMap.from_symbols(elements)
    model = jace_model(HP, elements, dtype)

    def prep():
        cfgs = [Configuration(f.positions, f.numbers, np.array(f.cell), list(f.pbc)) for f in frames]
        gs = [graph_from_configuration(c, HP["cutoff"], species) for c in cfgs]
        b = batch_graphs(gs)
        n_node, n_edge = int(b.n_node.sum()), int(b.n_edge.sum())
        m = pad_multiple
        bucket = Bucket(-(-(n_node + 1) // m) * m, -(-n_edge // m) * m, len(gs) + 1)
        g = pad_graph(b, bucket)
        return jax.tree.map(lambda x: x.astype(dtype) if np.issubdtype(x.dtype, np.floating) else x, g), n_node, n_edge

    return model, prep


def jace_latency(case, dtype, data_dir, repeats, warmup, pad_multiple=PAD_MULTIPLE):
    import jax

    model, prep = jace_setup(case, dtype, data_dir, pad_multiple)
    g, n_node, n_edge = prep()
    params = jax.jit(model.init)(jax.random.PRNGKey(0), g)
    periodic = not case.startswith("acac")  # the Si and C cells
    t0 = time.perf_counter()
    jax.block_until_ready(model.predict_graph(g, compute_stress=False, params=params))
    compile_s = time.perf_counter() - t0
    for _ in range(warmup):
        jax.block_until_ready(model.predict_graph(g, compute_stress=False, params=params))
    tp, tm, ts = [], [], []
    on_accelerator = jax.default_backend() != "cpu"
    for _ in range(repeats):
        t0 = time.perf_counter()
        g, _, _ = prep()
        tp.append(time.perf_counter() - t0)
        if on_accelerator:  # the graph goes to the GPU before the clock starts, as mace-torch's batch does
            g = jax.block_until_ready(jax.device_put(g))
        t0 = time.perf_counter()
        out = jax.block_until_ready(model.predict_graph(g, compute_stress=False, params=params))
        tm.append(time.perf_counter() - t0)
    rec = {"case": case, "dtype": dtype, "implementation": "jace", "n_atoms": n_node, "n_edges": n_edge,
           "padded_nodes": int(g.n_node.sum()), "padded_edges": int(g.n_edge.sum()),
           "n_params": model.n_params(params), "compile_s": compile_s, "prep": _stats(tp), "model": _stats(tm),
           "check": {"energy_sum_eV": float(np.sum(out.energy)), "force_abs_max": float(np.abs(out.forces).max())}}
    if periodic:
        jax.block_until_ready(model.predict_graph(g, compute_stress=True, params=params))
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(model.predict_graph(g, compute_stress=True, params=params))
            ts.append(time.perf_counter() - t0)
        rec["model_stress"] = _stats(ts)
    return rec


def jace_training(dtype, data_dir, steps, warmup):
    import jax

    from jace.data.configuration import Configuration
    from jace.data.graph import SpeciesMap
    from jace.training.batching import build_graphs, fixed_batches
    from jace.training.settings import TrainSettings
    from jace.training.statistics import dataset_statistics
    from jace.training.steps import TrainState, cast_params, compiled_steps

    frames = structures.acac_training_set(data_dir)
    e0s = structures.acac_isolated_atom_energies(data_dir)
    cfgs = []
    for f in frames:
        e, fr = structures.labels(f)
        cfgs.append(Configuration(f.positions, f.numbers, np.array(f.cell), list(f.pbc), energy=e, forces=fr))
    elements = sorted({a for f in frames for a in f.get_chemical_symbols()})
    species = SpeciesMap.from_symbols(elements)
    e0 = np.array([e0s[z] for z in species.atomic_numbers])
    settings = TrainSettings(batch_size=5, optimizer="amsgrad", lr=0.01, energy_weight=1.0, forces_weight=100.0,
                             clip_norm=10.0, ema_decay=0.99, dtype=dtype, n_buckets=1, max_epochs=1)
    probe = jace_model(HP, elements, dtype, e0=e0)
    graphs = build_graphs(cfgs, probe, settings)
    stats = dataset_statistics(cfgs, graphs, species, e0)
    model = jace_model(HP, elements, dtype, e0=e0, scale=stats.scale, shift=0.0, avg=stats.avg_num_neighbors)
    _, batches = fixed_batches(graphs, 5, 1, dtype)
    optimizer, train_jit, _, init_jit, _ = compiled_steps(model, settings, False, False)
    params = cast_params(init_jit(jax.random.PRNGKey(0), batches[0][0]), np.dtype(dtype))
    state = TrainState(params, params, optimizer.init(params), jax.numpy.asarray(0, jax.numpy.int32))
    lw = settings.loss_weights(False).as_array(dtype)
    lr = np.asarray(settings.lr, dtype)
    t0 = time.perf_counter()
    state, out = train_jit(state, batches[0][0], lw, lr)
    jax.block_until_ready(out["loss"])
    compile_s = time.perf_counter() - t0
    times, losses = [], []
    for k in range(warmup + steps):
        t0 = time.perf_counter()
        state, out = train_jit(state, batches[(k + 1) % len(batches)][0], lw, lr)
        jax.block_until_ready(out["loss"])
        if k >= warmup:
            times.append(time.perf_counter() - t0)
        losses.append(float(out["loss"]))
    return {"case": "train", "dtype": dtype, "implementation": "jace", "batch_size": 5, "compile_s": compile_s,
            "step": _stats(times), "steps_per_s": 1.0 / float(np.mean(times)), "n_params": model.n_params(state.params),
            "loss_first_last": [losses[0], losses[-1]]}


def torch_side(case, dtype, args, hp_path):
    out = tempfile.NamedTemporaryFile(suffix=".json", delete=False).name
    cmd = [args.torch_python, os.path.join(HERE, "mace_torch_side.py"), hp_path, "--dtype", dtype, "--cases", case,
           "--out", out, "--repeats", str(args.repeats), "--threads", str(args.threads),
           "--train-steps", str(args.train_steps)]
    if args.data:
        cmd += ["--data", args.data]
    if args.torch_device != "cpu":
        cmd += ["--device", args.torch_device]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    with open(out) as fh:
        recs = json.load(fh)["records"]
    os.unlink(out)
    return recs[0]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=None)
    p.add_argument("--out", default=os.path.join(HERE, "results", "mace_comparison.json"))
    p.add_argument("--dtype", nargs="+", default=["float32", "float64"])
    p.add_argument("--cases", nargs="+", default=CASES, choices=CASES)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--pad-multiple", type=int, default=PAD_MULTIPLE,
                   help="jace pads nodes + 1 and edges up to a multiple of this (sessions 5-12: 64)")
    p.add_argument("--train-steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=2, help="torch threads (XLA uses every core)")
    p.add_argument("--torch-python", default=os.path.join(HERE, "_work", "torch-venv", "bin", "python"))
    p.add_argument("--torch-device", default="cpu", help="mace-torch's device: cpu, or cuda on a GPU machine "
                   "(jace runs on JAX's default backend)")
    p.add_argument("--no-torch", action="store_true")
    args = p.parse_args(argv)

    hp_path = tempfile.NamedTemporaryFile(suffix=".json", delete=False, mode="w")
    json.dump(HP, hp_path)
    hp_path.close()
    records = []
    for dtype in args.dtype:
        import jax

        jax.config.update("jax_enable_x64", dtype == "float64")
        for case in args.cases:
            if case == "train":
                rj = jace_training(dtype, args.data, args.train_steps, args.warmup)
            else:
                rj = jace_latency(case, dtype, args.data, args.repeats, args.warmup, args.pad_multiple)
            rt = None if args.no_torch else torch_side(case, dtype, args, hp_path.name)
            key = "steps_per_s" if case == "train" else None
            if rt is not None:
                if case == "train":
                    ratio = rt["steps_per_s"] and (1.0 / rj["steps_per_s"]) / (1.0 / rt["steps_per_s"])
                else:
                    ratio = rj["model"]["median_s"] / rt["model"]["median_s"]
            else:
                ratio = None
            records.append({"case": case, "dtype": dtype, "jace": rj, "mace_torch": rt, "time_ratio_jace_over_torch": ratio})
            msg = (f"{case:8s} {dtype}: jace " + (f"{rj['steps_per_s']:.2f} steps/s" if key else f"{1e3 * rj['model']['median_s']:.1f} ms"))
            if rt is not None:
                msg += ", torch " + (f"{rt['steps_per_s']:.2f} steps/s" if key else f"{1e3 * rt['model']['median_s']:.1f} ms")
                msg += f", time ratio jace/torch {ratio:.2f}"
            print(msg, flush=True)
    os.unlink(hp_path.name)
    result = {"benchmark": "multi_ace_vs_mace_torch", "hyperparameters": HP, "platform": platform.platform(),
              "cpu_count": os.cpu_count(), "command": " ".join(["python"] + sys.argv),
              "GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES"),  # inherited by the mace-torch subprocesses
              "jax_backend": jax.default_backend(), "jax_devices": [str(d.device_kind) for d in jax.devices()],
              "torch_device": args.torch_device, "pad_multiple": args.pad_multiple, "records": records}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
