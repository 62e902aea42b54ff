"""Before/after MD steps per second of jace's ASE calculator: an older commit against the working tree,
in alternating processes, so both see the same machine state.

  GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python benchmarks/ase_md_ab.py --old 390f094 --pairs 2

Each process runs ASE ``VelocityVerlet`` (0.5 fs, from rest, after two warm-up steps; ``bench_timing``)
with ``JaceCalculator`` (float64, default settings) on rattled diamond Si 64, C 64 and Si 512 cells,
with the MACE of ``md_throughput.py`` (random weights), and prints the calculator's padded capacity
(nodes, edges), the structure's own sizes and the steps per second. The old code is checked out with
``git worktree add`` into a temporary directory (removed after).
"""

from __future__ import annotations

import argparse

from ab_worktree import ROOT, old_tree, run_child

CHILD = """
import os, sys
root, cases = sys.argv[1], sys.argv[2:]
sys.path.insert(0, root); sys.path.insert(0, os.path.join(root, "benchmarks"))
import jax
jax.config.update("jax_enable_x64", True)
import jace
assert os.path.realpath(jace.__file__).startswith(os.path.realpath(root)), jace.__file__
from ase import units
from ase.md.verlet import VelocityVerlet
import md_throughput as md, structures
from bench_timing import time_dynamics
from jace.interfaces.ase_calculator import JaceCalculator
for case in cases:
    name, steps = case.split(":")
    atoms = structures.LATENCY_CASES[name][1](None)[0]
    atoms.calc = JaceCalculator(md.model_for(atoms, "float64"), dtype="float64")
    warm, sec = time_dynamics(VelocityVerlet(atoms, 0.5 * units.fs), int(steps))
    print(f"{name:7s} capacity {atoms.calc.capacity} for {atoms.calc.sizes}: {int(steps) / sec:.2f} steps/s", flush=True)
"""


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--old", required=True, help="the commit to compare the working tree with")
    p.add_argument("--cases", nargs="+", default=["si_64:30", "c_64:15", "si_512:6"], help="CASE:STEPS")
    p.add_argument("--pairs", type=int, default=2)
    args = p.parse_args(argv)
    unknown = [c for c in args.cases if c.split(":")[0] not in ("si_64", "si_512", "c_64", "c_512")]
    if unknown or any(":" not in c for c in args.cases):
        p.error(f"cases are CASE:STEPS with CASE one of si_64 si_512 c_64 c_512, got {args.cases}")
    with old_tree(args.old) as old:
        for _ in range(args.pairs):
            for label, root in ((f"old {args.old}", old), ("new (working tree)", ROOT)):
                for line in run_child(root, CHILD, *args.cases).strip().splitlines():
                    print(f"{label:22s} {line}", flush=True)

if __name__ == "__main__":
    main()
