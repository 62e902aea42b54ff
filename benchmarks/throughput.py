"""Linear ACE evaluation throughput on a 512-atom periodic silicon cell (atom-environments per second).

Usage:
  python benchmarks/throughput.py                 # float64 and float32, each in its own process
  python benchmarks/throughput.py --only float32  # one precision

Measures, after compilation, the median wall time of (a) the site energies only and (b) energy, forces and
stress (one reverse pass) for a rattled 4x4x4 diamond Si supercell (512 atoms, cutoff 5.5 Å), with the
Zuo-Si basis of benchmarks/linear_ace.py and random coefficients (the cost does not depend on their values).
Results: benchmarks/results/throughput.json.
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
RESULTS = os.path.join(HERE, "results", "throughput.json")


def run(precision: str, repeats: int) -> dict:
    import jax

    jax.config.update("jax_enable_x64", precision == "float64")
    import jax.numpy as jnp
    from ase.build import bulk

    from jace.data.configuration import Configuration
    from jace.data.graph import Bucket, batch_graphs, graph_from_configuration, pad_graph
    from jace.models.design import LinearACESpec, RadialSpec
    from jace.models.linear_ace import LinearACEModel, product_basis_for, site_energies

    sys.path.insert(0, HERE)
    from linear_ace import SETTINGS

    s = SETTINGS["Si"]
    spec = LinearACESpec(
        elements=("Si",), cutoff=s["cutoff"], radial=RadialSpec("bessel", s["n_max"], "polynomial", 5),
        l_max=s["l_max"], correlation=s["correlation"], max_degree=tuple(float(x) for x in s["max_degree"]), w_l=s["w_l"],
    )
    n_b = product_basis_for(spec).n_functions()
    model = LinearACEModel(spec, np.zeros(1), np.random.default_rng(0).normal(size=(1, n_b)) * 1e-2)
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((4, 4, 4))
    atoms.positions += np.random.default_rng(1).normal(0, 0.05, atoms.positions.shape)
    cfg = Configuration(atoms.positions, atoms.numbers, atoms.cell[:], atoms.pbc)
    g = graph_from_configuration(cfg, spec.cutoff, model.species)
    n_edge = int(g.n_edge[0])
    graph = pad_graph(batch_graphs([g]), Bucket(cfg.n_atoms + 8, n_edge + 8, 2))
    dtype = jnp.float64 if precision == "float64" else jnp.float32
    graph = jax.tree.map(lambda x: jnp.asarray(x, dtype) if np.issubdtype(np.asarray(x).dtype, np.floating) else jnp.asarray(x), graph)
    params = model.params

    energy_fn = jax.jit(lambda p, gr: site_energies(spec, p, gr).sum())

    def timed(fn):
        jax.block_until_ready(fn())  # compile
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            jax.block_until_ready(fn())
            ts.append(time.perf_counter() - t)
        return float(np.median(ts)), float(np.min(ts))

    t_e, t_e_min = timed(lambda: energy_fn(params, graph))
    t_ef, t_ef_min = timed(lambda: model.predict_graph(graph))
    out = model.predict_graph(graph)
    assert out.forces.dtype == dtype
    n = cfg.n_atoms
    return {
        "precision": precision,
        "n_atoms": n,
        "n_edges": n_edge,
        "n_basis": n_b,
        "n_monomials": product_basis_for(spec).n_monomials,
        "energy_ms": 1e3 * t_e,
        "energy_forces_stress_ms": 1e3 * t_ef,
        "energy_atoms_per_s": n / t_e,
        "energy_forces_atoms_per_s": n / t_ef,
        "repeats": repeats,
        "device": str(jax.devices()[0]),
        "jax": jax.__version__,
        "cpu": platform.processor() or platform.machine(),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=["float32", "float64"])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--out", default=RESULTS)
    args = p.parse_args(argv)
    if args.only:
        res = run(args.only, args.repeats)
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        allres = json.load(open(args.out)) if os.path.exists(args.out) else {}
        allres[args.only] = res
        with open(args.out + ".tmp", "w") as fh:
            json.dump(allres, fh, indent=1)
        os.replace(args.out + ".tmp", args.out)
        print(json.dumps(res, indent=1))
        return
    for prec in ("float64", "float32"):
        subprocess.run([sys.executable, __file__, "--only", prec, "--repeats", str(args.repeats), "--out", args.out], check=True)


if __name__ == "__main__":
    main()
