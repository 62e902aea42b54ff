"""jax-md MD steps per second of jace's energy function with JAX-MD's Sparse or OrderedSparse list.

  GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python benchmarks/jaxmd_format.py si_512 ordered_sparse [float64]

The MACE of ``md_throughput.py`` (random weights) on a rattled diamond Si or C cell (``si_64``,
``si_512``, ``c_64``), ``from_configuration(..., format=FORMAT)``, NVE with 0.5 fs steps from rest,
``run_in_chunks`` (50 steps per chunk for 64 atoms, 10 for 512): one chunk to compile, then 3 chunks
timed. Prints the list's shape, steps per second and the final energy (equal for both formats). Run
the formats in alternating processes to compare them.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main(case: str, fmt: str, dtype: str = "float64") -> None:
    import jax

    jax.config.update("jax_enable_x64", dtype == "float64")
    import md_throughput as md
    import structures
    from jax_md import simulate

    from jace.interfaces.jax_md import from_configuration, neighbor_step, run_in_chunks

    cells = ("si_64", "si_512", "c_64", "c_512")
    if case not in cells or fmt not in ("sparse", "ordered_sparse"):
        raise SystemExit(f"usage: jaxmd_format.py CASE FORMAT [DTYPE] with CASE in {cells}, FORMAT sparse or "
                         f"ordered_sparse; got {case!r} {fmt!r}")
    atoms = structures.LATENCY_CASES[case][1](None)[0]
    n = len(atoms)
    system = from_configuration(md.model_for(atoms, dtype), atoms, format=fmt)
    nbrs = system.neighbor_fn.allocate(system.positions)
    init_fn, apply_fn = simulate.nve(system.energy_fn, system.shift_fn, md.DT_FS / md.TIME_UNIT_FS)
    state = init_fn(jax.random.PRNGKey(0), system.positions, 0.0, mass=system.masses, neighbor=nbrs)
    step = neighbor_step(apply_fn)
    chunk = 50 if n <= 64 else 10
    state, nbrs, _ = run_in_chunks(step, state, nbrs, system.neighbor_fn, chunk, chunk_steps=chunk)
    jax.block_until_ready(state.position)
    t0 = time.perf_counter()
    state, nbrs, _ = run_in_chunks(step, state, nbrs, system.neighbor_fn, 3 * chunk, chunk_steps=chunk)
    jax.block_until_ready(state.position)
    seconds = time.perf_counter() - t0
    energy = float(system.energy_fn(state.position, neighbor=nbrs))
    print(f"{case} {dtype} {fmt}: idx {tuple(nbrs.idx.shape)} {3 * chunk / seconds:.2f} steps/s, E {energy:.10f}")


if __name__ == "__main__":
    main(*sys.argv[1:])
