"""Before/after timing of the benchmark's jace energy+forces call: an older commit against the working
tree, in alternating processes, so both see the same machine state.

  GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python benchmarks/ab_latency.py --data ../shared/data --old dab9ff9 \\
      --cases acac_32 c_64 --dtypes float64 --pairs 2

The old code is checked out with ``git worktree add`` into a temporary directory (removed after).
Each process times one case with ``multi_ace_vs_mace_torch.jace_latency`` of its own tree (jace
``mace``, the comparison's hyperparameters and padding; median of ``--repeats`` calls after 3
warm-up calls) and prints one line; the energy and largest force are printed too, so an exact
change shows the same numbers on both sides.
"""

from __future__ import annotations

import argparse
import os

from ab_worktree import ROOT, old_tree, run_child

CHILD = """
import os, sys
root, case, dtype, data, repeats = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] or None, int(sys.argv[5])
sys.path.insert(0, os.path.join(root, "benchmarks"))
import jax
jax.config.update("jax_enable_x64", dtype == "float64")
import jace
assert os.path.realpath(jace.__file__).startswith(os.path.realpath(root)), jace.__file__
import multi_ace_vs_mace_torch as bench
r = bench.jace_latency(case, dtype, data, repeats, 3)
print(f"{1e3 * r['model']['median_s']:.1f} ms  energy {r['check']['energy_sum_eV']:.12g}  max|F| {r['check']['force_abs_max']:.12g}")
"""


def time_case(root: str, case: str, dtype: str, data: str | None, repeats: int) -> str:
    return run_child(root, CHILD, case, dtype, data or "", str(repeats)).strip().splitlines()[-1]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--old", required=True, help="the commit to compare the working tree with")
    p.add_argument("--data", default=None)
    p.add_argument("--cases", nargs="+", default=["acac_32"])
    p.add_argument("--dtypes", nargs="+", default=["float64"])
    p.add_argument("--pairs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args(argv)
    data = os.path.abspath(args.data) if args.data else None  # the children run in a temp dir

    with old_tree(args.old) as old:
        for case in args.cases:
            for dtype in args.dtypes:
                for _ in range(args.pairs):
                    for label, root in ((f"old {args.old}", old), ("new (working tree)", ROOT)):
                        print(f"{case:8s} {dtype}  {label:22s} {time_case(root, case, dtype, data, args.repeats)}",
                              flush=True)

if __name__ == "__main__":
    main()
