"""Time jace's neighbour-list backends (matscipy, vesin, ase) on a few typical structures.

    python benchmarks/neighbours.py [--repeats 7] [--out benchmarks/results/neighbours.json]

Each time is a full ``jace.data.neighbours.neighbour_list`` call (input checks, library call, exact
cutoff filter and sort), i.e. what jace pays per configuration. Reported: best and median of
``--repeats`` runs after one warm-up, the number of edges, and the ratio of each backend's best time
to ase's (smaller is faster). All backends are also checked to give the same edges.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from jace.data.neighbours import BACKENDS, neighbour_list  # noqa: E402

CUTOFF = 5.0


def si_diamond(repeat: int):
    from ase.build import bulk

    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(repeat)
    atoms.rattle(0.05, seed=1)
    return atoms.positions, atoms.cell[:], np.array([True] * 3)


def skewed_small_cell():
    """2 atoms in a triclinic cell with 2.2–2.9 Å vectors: a 5 Å sphere spans many images."""
    cell = np.array([[2.5, 0.0, 0.0], [1.1, 2.3, 0.0], [0.7, -0.6, 2.6]])
    positions = np.array([[0.1, 0.2, 0.3], [1.6, 1.1, 1.4]])
    return positions, cell, np.array([True] * 3)


def molecule15():
    """A compact 15-atom cluster (no cell, no periodicity), spacing ≥ 1.1 Å, fixed seed."""
    rng = np.random.default_rng(0)
    pos = []
    while len(pos) < 15:
        p = rng.uniform(-3.0, 3.0, size=3)
        if np.linalg.norm(p) < 3.0 and all(np.linalg.norm(p - q) >= 1.1 for q in pos):
            pos.append(p)
    return np.array(pos), np.zeros((3, 3)), np.array([False] * 3)


CASES = {
    "Si diamond 512 atoms": lambda: si_diamond(4),
    "Si diamond 4096 atoms": lambda: si_diamond(8),
    "skewed 2-atom cell (many images)": skewed_small_cell,
    "15-atom molecule": molecule15,
}


def time_call(fn, repeats: int) -> list[float]:
    fn()  # warm-up (imports, caches)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    default_out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "neighbours.json")
    parser.add_argument("--out", default=default_out)
    args = parser.parse_args(argv)

    import ase
    import matscipy
    import vesin

    results = []
    for name, make in CASES.items():
        positions, cell, pbc = make()
        reference = None
        row = {"case": name, "n_atoms": int(len(positions)), "cutoff": CUTOFF, "backends": {}}
        for backend in BACKENDS:
            i, j, S = neighbour_list(positions, cell, pbc, CUTOFF, backend=backend)
            edges = np.column_stack([i, j, S])
            if reference is None:
                reference = edges
            elif not np.array_equal(edges, reference):
                raise SystemExit(f"{name}: backend {backend} disagrees with {BACKENDS[0]}")
            times = time_call(lambda: neighbour_list(positions, cell, pbc, CUTOFF, backend=backend), args.repeats)
            row["backends"][backend] = {"best_s": min(times), "median_s": statistics.median(times)}
        row["n_edges"] = int(len(reference))
        ase_best = row["backends"]["ase"]["best_s"]
        for backend in BACKENDS:
            row["backends"][backend]["ratio_to_ase"] = row["backends"][backend]["best_s"] / ase_best
        results.append(row)

    # Table.
    columns = " ".join(f"{b + ' best ms':>15s} {'/ase':>6s}" for b in BACKENDS)
    header = f"{'case':36s} {'atoms':>6s} {'edges':>8s} {columns}"
    print(header)
    print("-" * len(header))
    for row in results:
        cells = " ".join(
            f"{1e3 * row['backends'][b]['best_s']:15.3f} {row['backends'][b]['ratio_to_ase']:6.2f}" for b in BACKENDS
        )
        print(f"{row['case']:36s} {row['n_atoms']:6d} {row['n_edges']:8d} {cells}")

    meta = {
        "command": "python " + " ".join([os.path.relpath(__file__)] + list(argv if argv is not None else sys.argv[1:])),
        "repeats": args.repeats,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "versions": {"ase": ase.__version__, "matscipy": matscipy.__version__, "vesin": vesin.__version__,
                     "numpy": np.__version__},
        "time_unit": "seconds per full jace.data.neighbours.neighbour_list call",
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=2)
    os.replace(tmp, args.out)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
