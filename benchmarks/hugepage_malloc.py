"""Energy+forces latency and page faults with and without huge-page malloc (``jace.hugepage_malloc``).

Each setting runs in its own fresh process (glibc reads ``GLIBC_TUNABLES`` only at start-up), the
settings alternating, ``--rounds`` times each: the multi-ACE ``mace`` model of the mace-torch comparison
(``HP`` in ``multi_ace_vs_mace_torch.py``) on the rattled 512-atom silicon cell, median of ``--calls``
jitted energy+forces calls after 3 warm-up calls, with the minor page faults and the user and system
CPU time per call from ``getrusage``.

  python benchmarks/hugepage_malloc.py --out benchmarks/results/hugepage_malloc.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

CHILD = r"""
import json, resource, sys, time
import numpy as np
import jax
dtype = sys.argv[1]
jax.config.update("jax_enable_x64", dtype == "float64")
sys.path.insert(0, sys.argv[3])
import structures
from multi_ace_vs_mace_torch import HP
from jace.data.configuration import Configuration
from jace.data.graph import Bucket, SpeciesMap, batch_graphs, graph_from_configuration, pad_graph
from jace.models.design import RadialSpec
from jace.models.multi_ace import MultiACEModel, preset
from jace.training.batching import cast_graph
from jace import hugepage_malloc

atoms = structures.silicon_cell(512)
cfg = Configuration(atoms.positions, atoms.numbers, np.array(atoms.cell), [True] * 3)
g0 = graph_from_configuration(cfg, HP["cutoff"], SpeciesMap.from_symbols(["Si"]))
g = cast_graph(pad_graph(batch_graphs([g0]), Bucket(520, int(g0.n_edge[0]) + 8, 2)), np.dtype(dtype))
spec = preset("mace", ["Si"], cutoff=HP["cutoff"], channels=HP["channels"], l_max=HP["l_max"],
              hidden_l_max=HP["hidden_l_max"], correlation=(HP["correlation"],) * HP["layers"],
              radial_mlp=tuple(HP["radial_mlp"]),
              radial=RadialSpec(kind="bessel", n_max=HP["n_rad"], envelope_p=HP["envelope_p"]))
model = MultiACEModel(spec, e0=[0.0], avg_num_neighbors=HP["avg_num_neighbors"])
model = model.with_params(model.init(jax.random.PRNGKey(0), g))
f = jax.jit(lambda gr: model.predict_graph(gr, compute_stress=False))
for _ in range(3):
    jax.block_until_ready(f(g))
n = int(sys.argv[2])
r0, ts = resource.getrusage(resource.RUSAGE_SELF), []
for _ in range(n):
    t = time.perf_counter(); jax.block_until_ready(f(g)); ts.append(time.perf_counter() - t)
r1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"median_ms": 1e3 * float(np.median(ts)), "min_ms": 1e3 * min(ts),
                  "minor_faults_per_call": (r1.ru_minflt - r0.ru_minflt) / n,
                  "user_s_per_call": (r1.ru_utime - r0.ru_utime) / n,
                  "system_s_per_call": (r1.ru_stime - r0.ru_stime) / n,
                  "n_edges": int(g0.n_edge[0]), "setting": hugepage_malloc.describe()}))
"""


def run(dtype: str, calls: int, hugepages: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if hugepages:
        env["GLIBC_TUNABLES"] = "glibc.malloc.hugetlb=1"
    out = subprocess.run([sys.executable, "-c", CHILD, dtype, str(calls), HERE], env=env, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--out", default=os.path.join(HERE, "results", "hugepage_malloc.json"))
    args = p.parse_args(argv)
    records = []
    for dtype in args.dtypes:
        for r in range(args.rounds):
            for hugepages in (False, True):
                rec = {"dtype": dtype, "round": r, "hugepage_malloc": hugepages, **run(dtype, args.calls, hugepages)}
                records.append(rec)
                print(f"{dtype} round {r} hugepages {'on ' if hugepages else 'off'}: {rec['median_ms']:.1f} ms "
                      f"(min {rec['min_ms']:.1f}), {rec['minor_faults_per_call']:.0f} faults, "
                      f"user {rec['user_s_per_call']:.3f} s, system {rec['system_s_per_call']:.3f} s per call",
                      flush=True)
    with open(args.out, "w") as fh:
        json.dump({"benchmark": "hugepage_malloc", "command": " ".join(["python"] + sys.argv),
                   "platform": platform.platform(), "cpu_count": os.cpu_count(), "records": records}, fh, indent=1)


if __name__ == "__main__":
    main()
