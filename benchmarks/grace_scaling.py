"""How the cost of a GRACE model grows with the number of neighbours and with the number of layers.

    python benchmarks/grace_scaling.py --out benchmarks/results/grace_scaling.json

Model: ``preset("grace-2l", ["Cu"], ...)`` stretched to 1–4 layers, every layer with 16 channels,
l_max 2, product order 3, messages of L ≤ 1 with 16 channels, radial MLP [32, 32], r_c 5 Å (float64).
Structure: a 256-atom fcc Cu cell (4×4×4 conventional cells), lightly rattled.

* Neighbours: at a fixed number of atoms, the lattice constant is scaled so that the number of edges
  grows about 5×; the 2-layer model's energy+forces is timed at each density.
* Layers: at the equilibrium density (a = 3.61 Å), models of 1, 2, 3 and 4 layers.

Time: median of ``--calls`` jitted energy+forces calls (``model.predict_graph``, stress off) after one
warm-up call. Memory: XLA's memory analysis of the compiled program (temporaries + arguments +
outputs), which does not depend on other processes. Fits: least-squares slopes of log(time) and
log(memory) against log(edges) and log(layers), and a straight line time = a + b·layers (b is the
cost of one more layer). Writes the JSON and ``grace_scaling.png`` next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def build(n_layers, cutoff=5.0):
    import jax

    from jace.models.design import RadialSpec
    from jace.models.grace import GraceModel, preset

    spec = preset("grace-2l", ["Cu"], num_layers=n_layers, channels=16, l_max=2, correlation=3,
                  message_l_max=1, message_channels=16, radial_mlp=(32, 32), cutoff=cutoff,
                  radial=RadialSpec(kind="chebyshev", n_max=8, envelope="polynomial", envelope_p=5),
                  embedding_size=16, readout_hidden=(16,))
    return GraceModel(spec, e0=[0.0], avg_num_neighbors=40.0), jax


def cell(a, seed=0):
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=a, cubic=True).repeat(4)
    atoms.positions += np.random.default_rng(seed).normal(0, 0.03, atoms.positions.shape)
    return atoms


def measure(model, atoms, calls):
    import jax

    from jace.data.configuration import Configuration
    from jace.data.graph import Bucket, graph_from_configuration, pad_graph

    cfg = Configuration(atoms.positions, atoms.numbers, np.asarray(atoms.cell[:]), atoms.pbc)
    g = graph_from_configuration(cfg, model.cutoff, model.species)
    n_edges = int(len(g.senders))
    g = pad_graph(g, Bucket(len(atoms) + 8, n_edges + 8, 2))
    params = model.init(jax.random.PRNGKey(0), g)
    m = model.with_params(params)
    compiled = m._predict.lower(params, g, compute_stress=False).compile()
    mem = compiled.memory_analysis()
    memory = int(mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes)
    jax.block_until_ready(m.predict_graph(g, compute_stress=False).energy)
    ts = []
    for _ in range(calls):
        t0 = time.perf_counter()
        jax.block_until_ready(m.predict_graph(g, compute_stress=False).energy)
        ts.append(time.perf_counter() - t0)
    return {"n_atoms": len(atoms), "n_edges": n_edges, "neighbours_per_atom": n_edges / len(atoms),
            "median_s": float(np.median(ts)), "min_s": float(np.min(ts)), "memory_bytes": memory,
            "n_params": m.n_params(), "loadavg": os.getloadavg()[0]}


def slope(x, y):
    return float(np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)[0])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "grace_scaling.json"))
    p.add_argument("--calls", type=int, default=5)
    args = p.parse_args(argv)
    import jax

    jax.config.update("jax_enable_x64", True)
    model2, _ = build(2)
    neigh = []
    for a in (4.3, 4.0, 3.8, 3.61, 3.4, 3.25):  # denser → more edges at the fixed 5 Å cutoff
        r = measure(model2, cell(a), args.calls)
        r["lattice_constant"] = a
        neigh.append(r)
        print(f"a {a:.2f} Å: {r['n_edges']} edges, {1e3 * r['median_s']:.1f} ms, {r['memory_bytes'] / 2**20:.0f} MiB "
              f"(load {r['loadavg']:.2f})", flush=True)
    layers = []
    for n in (1, 2, 3, 4):
        model, _ = build(n)
        r = measure(model, cell(3.61), args.calls)
        r["layers"] = n
        layers.append(r)
        print(f"{n} layers: {1e3 * r['median_s']:.1f} ms, {r['memory_bytes'] / 2**20:.0f} MiB", flush=True)
    e = [r["n_edges"] for r in neigh]
    L = [r["layers"] for r in layers]
    lin = np.polyfit(L, [r["median_s"] for r in layers], 1)
    fits = {
        "time_vs_edges_exponent": slope(e, [r["median_s"] for r in neigh]),
        "memory_vs_edges_exponent": slope(e, [r["memory_bytes"] for r in neigh]),
        "time_vs_layers_exponent": slope(L, [r["median_s"] for r in layers]),
        "memory_vs_layers_exponent": slope(L, [r["memory_bytes"] for r in layers]),
        "time_per_layer_s": float(lin[0]),
        "time_intercept_s": float(lin[1]),
    }
    print(json.dumps(fits, indent=1))
    out = {"neighbours": neigh, "layers": layers, "fits": fits, "jax": jax.__version__, "cpus": os.cpu_count()}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    ax[0].loglog(e, [1e3 * r["median_s"] for r in neigh], "o-", label=f"time (slope {fits['time_vs_edges_exponent']:.2f})")
    ax[0].loglog(e, [r["memory_bytes"] / 2**20 for r in neigh], "s--", label=f"memory MiB (slope {fits['memory_vs_edges_exponent']:.2f})")
    ax[0].set_xlabel("edges (256 atoms, density varied)"); ax[0].set_ylabel("ms / MiB"); ax[0].legend()
    ax[0].set_title("grace, 2 layers: energy + forces")
    ax[1].plot(L, [1e3 * r["median_s"] for r in layers], "o-", label=f"time (log-log slope {fits['time_vs_layers_exponent']:.2f})")
    ax[1].plot(L, [r["memory_bytes"] / 2**20 for r in layers], "s--", label=f"memory MiB (slope {fits['memory_vs_layers_exponent']:.2f})")
    ax[1].set_xlabel("layers"); ax[1].set_ylabel("ms / MiB"); ax[1].legend(); ax[1].set_title("256 Cu atoms, a = 3.61 Å")
    fig.tight_layout()
    fig.savefig(os.path.splitext(args.out)[0] + ".png", dpi=110)
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
