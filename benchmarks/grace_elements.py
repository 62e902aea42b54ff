"""Does the cost of a GRACE model grow with the number of elements it knows? (It should not.)

For each preset (grace-1l, grace-2l at their default sizes) two models that differ only in their element
list, 4 elements (Cu, Au, H, O) and 89 (H … Ac), evaluate energy + forces of the same periodic Cu–Au
cell. Reported per model: parameters, XLA's flop count of the compiled energy + forces program, and
the median wall time of the jitted call (all models compiled and warmed up first, then timed round
robin, one call of each per round). Chemistry enters GRACE only through
an embedding table and element-dependent density weights, both gathered per atom, so flops and time
should be the same and the parameter counts differ by (89 − 4) × (embedding size + invariants × densities).

  python benchmarks/grace_elements.py                     # float64, 3×3×3 conventional fcc cell (108 atoms)
  python benchmarks/grace_elements.py --repeat 4 --float32 --out results/grace_elements_f32.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_timing import round_robin  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="edge repeats of the conventional fcc cell")
    ap.add_argument("--calls", type=int, default=21, help="timed rounds (median reported)")
    ap.add_argument("--float32", action="store_true")
    ap.add_argument("--presets", default="grace-1l,grace-2l")
    ap.add_argument("--out", default=None, help="JSON file for the results")
    args = ap.parse_args(argv)

    import jax

    jax.config.update("jax_enable_x64", not args.float32)
    from ase.build import bulk
    from ase.data import chemical_symbols

    from jace.data.configuration import Configuration
    from jace.data.graph import Bucket, batch_graphs, graph_from_configuration, pad_graph
    from jace.models.grace import GraceModel, preset
    from jace.models.potential import predict

    atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat(args.repeat)
    rng = np.random.default_rng(0)
    atoms.numbers = rng.choice([29, 79], size=len(atoms))
    atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
    config = Configuration(atoms.positions, atoms.numbers, atoms.cell[:], atoms.pbc)
    dtype = np.float32 if args.float32 else np.float64

    rows, calls = [], []
    for name in args.presets.split(","):
        for elements in (("Cu", "Au", "H", "O"), tuple(chemical_symbols[1:90])):
            spec = preset(name, elements)
            model = GraceModel(spec, avg_num_neighbors=40.0)
            g = graph_from_configuration(config, spec.cutoff, model.species)
            g = pad_graph(batch_graphs([g]), Bucket(len(atoms) + 1, int(g.n_edge[0]) + 8, 2))
            g = jax.tree.map(lambda x: x.astype(dtype) if np.asarray(x).dtype.kind == "f" else x, g)
            params = jax.jit(model.init)(jax.random.PRNGKey(0), g)
            fn = jax.jit(lambda p, g: predict(model.site_energies, p, g, compute_stress=False)[:2])
            compiled = fn.lower(params, g).compile()
            flops = float(compiled.cost_analysis()["flops"])
            jax.block_until_ready(compiled(params, g))
            row = {
                "preset": name, "n_elements": len(elements), "n_atoms": len(atoms), "n_edges": int(g.n_edge[0]),
                "n_params": model.n_params(params), "flops": flops, "times_ms": [],
            }
            rows.append(row)
            calls.append(lambda c=compiled, p=params, g=g: jax.block_until_ready(c(p, g)))
    # round robin: every round times every model once, so load changes hit all models alike
    times, _ = round_robin(calls, args.calls)
    for row, ts in zip(rows, times):
        row["times_ms"] = [1e3 * t for t in ts]
        row["median_ms"] = float(np.median(row["times_ms"]))
        print(json.dumps({k: v for k, v in row.items() if k != "times_ms"}), flush=True)
    out = {"device": str(jax.devices()[0]), "platform": platform.platform(), "dtype": np.dtype(dtype).name,
           "calls": args.calls, "loadavg_end": os.getloadavg()[0], "rows": rows}
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as fh:
            json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
