"""How the cost of a GRACE model grows with the number of neighbours and with the number of layers.

    python benchmarks/grace_scaling.py --out benchmarks/results/grace_scaling.json

Model: ``preset("grace-2l", ["Cu"], ...)`` stretched to 1–4 layers, every layer alike: 16 channels,
l_max 2, product order 3, messages of L ≤ 1 with 16 channels, radial MLP [32, 32], 8 Chebyshev
functions, r_c = 5 Å, embedding 16, readout MLP [16] (float64).

Structure: 256 atoms at fixed positions in reduced coordinates — an fcc 4×4×4 supercell with every
atom displaced by a normal deviate of 0.15 lattice constants (an amorphous-like arrangement, so the
number of neighbours grows smoothly with density instead of in fcc shells) — in a cubic box scaled
to lattice constants from 5.2 Å to 2.9 Å. At the fixed 5 Å cutoff the number of edges grows about 7×
(15 → 90 neighbours per atom) while the number of atoms stays 256.

* Neighbours: the 2-layer model's energy + forces at every density.
* Layers: at a = 3.61 Å (about 42 neighbours per atom), models of 1, 2, 3 and 4 layers.

Every program is compiled first; then ``--rounds`` rounds each time every program once, in turn
(round robin), so a burst of load from other processes hits every point of a fit alike; the time of
a point is the median over rounds. The 1-minute load average is recorded with every point. Memory:
XLA's memory analysis of the compiled program (temporaries + arguments + outputs), deterministic
and independent of other processes. Fits:

* time ∝ edges^a and memory ∝ edges^b (least-squares slopes in log–log), also against neighbours per
  atom (the same slope at a fixed number of atoms), and the straight line time = t_0 + c_edge · edges
  (with the number of atoms fixed, t_0 is the per-atom part and c_edge the cost of one edge; the
  share of the time spent on edges, c_edge · edges / time, is reported at both ends);
* the edge-dependent part alone: the same 256 atoms in a box so dilute (a = 40 Å) that they have
  (almost) no neighbours are timed too; their time (and flops, memory) is the per-atom work (products,
  readout), and (time − that) ∝ edges^a is fitted (a = 1: the work per edge is constant);
* the edge part per edge, (time − dilute time) / edges, at every density, and its exponent over the
  densities with at least 20 neighbours per atom (small arrays use the cores less well);
* time ∝ layers^a over 1–4 and over 2–4 layers, and time = t_0 + c_layer · layers (c_layer: the
  cost of one more layer; the residuals say how straight the line is);
* the added layers alone: (time(T) − time(1)) ∝ (T − 1)^a for T = 2–4. The first layer is cheaper
  than every later one (its input is the element embedding, a scalar per channel, so its edge tensor
  product has l_max + 1 paths; later layers couple L ≤ 1 messages with Y, about twice as many paths on
  four times the components, and a layer that feeds another one also builds a message), so the power
  law of the whole time is steeper than 1 although every added layer costs the same.

Writes the JSON and ``grace_scaling.png`` next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_timing import round_robin, wait_for_quiet  # noqa: E402

LATTICE = (5.2, 4.8, 4.4, 4.1, 3.8, 3.61, 3.4, 3.2, 3.05, 2.9)
DILUTE = 40.0  # lattice constant of the reference point without neighbours (per-atom work only)
LAYERS = (1, 2, 3, 4)
LAYER_LATTICE = 3.61


def build(n_layers, cutoff=5.0):
    from jace.models.design import RadialSpec
    from jace.models.grace import GraceModel, preset

    spec = preset("grace-2l", ["Cu"], num_layers=n_layers, channels=16, l_max=2, correlation=3,
                  message_l_max=1, message_channels=16, radial_mlp=(32, 32), cutoff=cutoff,
                  radial=RadialSpec(kind="chebyshev", n_max=8, envelope="polynomial", envelope_p=5),
                  embedding_size=16, readout_hidden=(16,))
    return GraceModel(spec, e0=[0.0], avg_num_neighbors=40.0)


def cell(a, seed=0, rattle=0.15):
    """256 Cu atoms: fcc 4×4×4 with reduced displacements N(0, rattle / 4) (rattle in lattice constants)."""
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=1.0, cubic=True).repeat(4)
    frac = atoms.get_scaled_positions() + np.random.default_rng(seed).normal(0, rattle / 4, (len(atoms), 3))
    atoms.set_cell(np.eye(3) * 4 * a)
    atoms.set_scaled_positions(frac % 1.0)
    return atoms


def prepare(model, atoms):
    """A compiled energy + forces program for one structure, with its sizes and XLA memory."""
    import jax

    from jace.data.configuration import Configuration
    from jace.data.graph import Bucket, graph_from_configuration, pad_graph
    from jace.models.potential import predict

    cfg = Configuration(atoms.positions, atoms.numbers, np.asarray(atoms.cell[:]), atoms.pbc)
    g = graph_from_configuration(cfg, model.cutoff, model.species)
    n_edges = int(len(g.senders))
    g = pad_graph(g, Bucket(len(atoms) + 8, n_edges + 8, 2))
    params = model.init(jax.random.PRNGKey(0), g)
    fn = jax.jit(lambda p, g: predict(model.site_energies, p, g, compute_stress=False)[:2])
    t0 = time.perf_counter()
    compiled = fn.lower(params, g).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    out = jax.block_until_ready(compiled(params, g))
    assert np.all(np.isfinite(np.asarray(out[1]))), "non-finite forces"
    rec = {"n_atoms": len(atoms), "n_edges": n_edges, "neighbours_per_atom": n_edges / len(atoms),
           "memory_bytes": int(mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes),
           "temp_bytes": int(mem.temp_size_in_bytes), "flops": float(cost.get("flops", float("nan"))),
           "n_params": model.n_params(params), "compile_s": compile_s, "times_s": [], "loadavg": []}
    return rec, (lambda: jax.block_until_ready(compiled(params, g)))


def timed_rounds(points, rounds):
    """Round robin: every round calls every point's program once; fills times_s and loadavg."""
    times, loads = round_robin([call for _, call in points], rounds)
    for (rec, _), ts, ls in zip(points, times, loads):
        rec["times_s"], rec["loadavg"] = ts, ls
        rec["median_s"] = float(np.median(rec["times_s"]))
        rec["min_s"] = float(np.min(rec["times_s"]))
        rec["spread"] = float(np.percentile(rec["times_s"], 75) / np.percentile(rec["times_s"], 25) - 1)


def loglog(x, y):
    """(slope, its standard error) of log y against log x."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    (a, b), cov = np.polyfit(lx, ly, 1, cov=True) if len(lx) > 2 else (np.polyfit(lx, ly, 1), np.zeros((2, 2)))
    return float(a), float(np.sqrt(cov[0, 0]))


def line(x, y):
    """(intercept, slope, max relative residual) of y = intercept + slope · x."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    slope, icpt = np.polyfit(x, y, 1)
    return float(icpt), float(slope), float(np.max(np.abs(icpt + slope * x - y) / y))


def fits(neigh, layers, dilute):
    e = [r["n_edges"] for r in neigh]
    nb = [r["neighbours_per_atom"] for r in neigh]
    t = [r["median_s"] for r in neigh]
    m = [r["memory_bytes"] for r in neigh]
    fl = [r["flops"] for r in neigh]
    t0, c_edge, res_e = line(e, t)
    L = [r["layers"] for r in layers]
    tl = [r["median_s"] for r in layers]
    ml = [r["memory_bytes"] for r in layers]
    l0, c_layer, res_l = line(L, tl)
    out = {
        "time_vs_edges_exponent": loglog(e, t),
        "time_vs_neighbours_per_atom_exponent": loglog(nb, t),
        "memory_vs_edges_exponent": loglog(e, m),
        "flops_vs_edges_exponent": loglog(e, fl),
        # the edge-dependent part: minus the cost of the same 256 atoms without neighbours (measured)
        "time_minus_dilute_vs_edges_exponent": loglog(e, [x - dilute["median_s"] for x in t]),
        "flops_minus_dilute_vs_edges_exponent": loglog(e, [x - dilute["flops"] for x in fl]),
        "memory_minus_dilute_vs_edges_exponent": loglog(e, [x - dilute["memory_bytes"] for x in m]),
        "dilute_share_of_time": [dilute["median_s"] / x for x in t],
        # the edge part per edge (µs): constant when the cost is linear in the edges
        "edge_part_us_per_edge": [1e6 * (x - dilute["median_s"]) / n for x, n in zip(t, e)],
        "time_minus_dilute_vs_edges_exponent_from_20_per_atom": loglog(
            [x for x, k in zip(e, nb) if k >= 20], [x - dilute["median_s"] for x, k in zip(t, nb) if k >= 20]),
        "time_line_edges": {"t0_s": t0, "s_per_edge": c_edge, "max_rel_residual": res_e,
                            "edge_share_at_min": c_edge * e[0] / t[0], "edge_share_at_max": c_edge * e[-1] / t[-1]},
        "time_vs_layers_exponent": loglog(L, tl),
        "time_vs_layers_exponent_2to4": loglog(L[1:], tl[1:]),
        "memory_vs_layers_exponent": loglog(L, ml),
        "memory_vs_layers_exponent_2to4": loglog(L[1:], ml[1:]),
        "flops_vs_layers_exponent": loglog(L, [r["flops"] for r in layers]),
        # the cost of the layers added to a 1-layer model (every added layer alike: messages in and out)
        "added_layers_time_exponent": loglog([n - 1 for n in L[1:]], [x - tl[0] for x in tl[1:]]),
        "added_layers_flops_exponent": loglog([n - 1 for n in L[1:]], [r["flops"] - layers[0]["flops"] for r in layers[1:]]),
        "added_layers_memory_exponent": loglog([n - 1 for n in L[1:]], [x - ml[0] for x in ml[1:]]),
        "time_line_layers": {"t0_s": l0, "s_per_layer": c_layer, "max_rel_residual": res_l,
                             "increments_s": [float(b - a) for a, b in zip(tl, tl[1:])]},
    }
    return out


def plot(path, neigh, layers, f, dilute):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    e = np.array([r["n_edges"] for r in neigh], float)
    fig, ax = plt.subplots(1, 2, figsize=(11, 4.2))
    a, _ = f["time_vs_edges_exponent"]
    b, _ = f["memory_vs_edges_exponent"]
    ax[0].loglog(e, [1e3 * r["median_s"] for r in neigh], "o-", label=f"time, ms (slope {a:.2f})")
    ax[0].loglog(e, [r["memory_bytes"] / 2**20 for r in neigh], "s--", label=f"XLA memory, MiB (slope {b:.2f})")
    ref = 1e3 * neigh[0]["median_s"] * e / e[0]
    ax[0].loglog(e, ref, ":", color="grey", label="slope 1 (from the first point)")
    c, _ = f["time_minus_dilute_vs_edges_exponent"]
    ax[0].loglog(e, [1e3 * (r["median_s"] - dilute["median_s"]) for r in neigh], "^-",
                 label=f"time − time without neighbours, ms (slope {c:.2f})")
    ax[0].set_xlabel("edges (256 atoms, density varied, r_c = 5 Å)")
    ax[0].set_title("GRACE, 2 layers: energy + forces")
    ax[0].legend(fontsize=8)
    L = [r["layers"] for r in layers]
    a, _ = f["time_vs_layers_exponent"]
    b, _ = f["memory_vs_layers_exponent"]
    ax[1].plot(L, [1e3 * r["median_s"] for r in layers], "o-", label=f"time, ms (log-log slope {a:.2f})")
    ax[1].plot(L, [r["memory_bytes"] / 2**20 for r in layers], "s--", label=f"XLA memory, MiB (slope {b:.2f})")
    ax[1].set_xlabel("layers")
    ax[1].set_xticks(L)
    ax[1].set_title(f"256 atoms, a = {LAYER_LATTICE} Å ({layers[0]['neighbours_per_atom']:.0f} neighbours/atom)")
    ax[1].legend(fontsize=8)
    for x in ax:
        x.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "grace_scaling.json"))
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--max-load", type=float, default=1.5, help="wait until the 1-minute load average is below this")
    p.add_argument("--max-wait", type=float, default=600.0, help="… for at most this many seconds")
    args = p.parse_args(argv)
    import jax

    jax.config.update("jax_enable_x64", True)

    neigh, layers = [], []
    model2 = build(2)
    dilute = prepare(model2, cell(DILUTE))
    dilute[0]["lattice_constant"] = DILUTE
    print(f"a {DILUTE:.1f} Å (reference without neighbours): {dilute[0]['n_edges']} edges", flush=True)
    for a in LATTICE:
        rec, call = prepare(model2, cell(a))
        rec["lattice_constant"] = a
        neigh.append((rec, call))
        print(f"a {a:.2f} Å: {rec['n_edges']} edges ({rec['neighbours_per_atom']:.1f}/atom), "
              f"{rec['memory_bytes'] / 2**20:.0f} MiB, compiled in {rec['compile_s']:.1f} s", flush=True)
    for n in LAYERS:
        rec, call = prepare(build(n), cell(LAYER_LATTICE))
        rec["layers"] = n
        layers.append((rec, call))
        print(f"{n} layers: {rec['memory_bytes'] / 2**20:.0f} MiB, {rec['n_params']} parameters", flush=True)
    load, waited = wait_for_quiet(args.max_load, args.max_wait)
    print(f"timing at load average {load:.2f} (waited {waited:.0f} s)", flush=True)
    timed_rounds([dilute] + neigh + layers, args.rounds)
    dilute = dilute[0]
    neigh = [r for r, _ in neigh]
    layers = [r for r, _ in layers]
    for r in neigh:
        print(f"  {r['n_edges']:6d} edges: {1e3 * r['median_s']:.1f} ms", flush=True)
    for r in layers:
        print(f"  {r['layers']} layers: {1e3 * r['median_s']:.1f} ms", flush=True)
    print(f"  {dilute['n_edges']:6d} edges (a = {DILUTE} Å): {1e3 * dilute['median_s']:.1f} ms", flush=True)
    f = fits(neigh, layers, dilute)
    print(json.dumps(f, indent=1))
    out = {"benchmark": "grace_scaling", "command": " ".join(["python", os.path.relpath(sys.argv[0])] + sys.argv[1:]),
           "neighbours": neigh, "dilute": dilute, "layers": layers, "fits": f, "load_before_timing": load, "waited_s": waited,
           "rounds": args.rounds, "jax": jax.__version__, "cpus": os.cpu_count(), "platform": platform.platform()}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1)
    plot(os.path.splitext(args.out)[0] + ".png", neigh, layers, f, dilute)
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
