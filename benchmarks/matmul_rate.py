"""XLA's matrix-product rate on this CPU against numpy's (OpenBLAS), for the radial MLP's shapes.

The radial MLP's output layer is one [n_pairs, 64] @ [64, n_paths · channels] product per layer (C 64:
2,848 pairs; mace layer 1: 7 paths × 32 channels = 224 columns). This times that product alone, as
jitted XLA and as numpy, and a few layouts of it, in float64 by default::

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python benchmarks/matmul_rate.py --rows 2848 20000 --cols 224
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _median_ms(fn, *args, repeats: int) -> float:
    import jax

    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1e3


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, nargs="+", default=[2848, 20000])
    p.add_argument("--inner", type=int, default=64)
    p.add_argument("--cols", type=int, default=224)
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--repeats", type=int, default=50)
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", args.dtype == "float64")
    rng = np.random.default_rng(0)
    k, n = args.inner, args.cols
    for m in args.rows:
        x = jnp.asarray(rng.normal(size=(m, k)), args.dtype)
        w = jnp.asarray(rng.normal(size=(k, n)), args.dtype)
        gflop = 2 * m * k * n / 1e9
        variants = {
            "x @ w": lambda x, w: x @ w,
            "(w.T @ x.T).T": lambda x, w: (w.T @ x.T).T,
            "rows in 2 batches": lambda x, w: jnp.einsum("bmk,kn->bmn", x.reshape(2, -1, k), w).reshape(-1, n),
            "columns in 2 halves": lambda x, w: jnp.concatenate([x @ w[:, : n // 2], x @ w[:, n // 2 :]], 1),
        }
        for name, fn in variants.items():
            ms = _median_ms(jax.jit(fn), x, w, repeats=args.repeats)
            print(f"[{m}, {k}] @ [{k}, {n}] {args.dtype}  XLA {name:20s} {ms:7.2f} ms  {gflop / ms * 1e3:5.1f} GFLOP/s")
        xn, wn = np.asarray(x), np.asarray(w)
        ms = _median_ms(lambda a, b: a @ b, xn, wn, repeats=args.repeats)
        print(f"[{m}, {k}] @ [{k}, {n}] {args.dtype}  numpy {'x @ w':18s} {ms:7.2f} ms  {gflop / ms * 1e3:5.1f} GFLOP/s")


if __name__ == "__main__":
    main()
