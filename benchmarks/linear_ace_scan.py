"""Explore linear-ACE settings fast: assemble the normal equations once, then re-solve them for many settings.

``linear_ace.py`` is the benchmark: one basis, a streamed QR factorisation, a (p, λ) scan and the final fit.
This script is for choosing its settings. ``assemble`` stores the Gram blocks XᵀX and Xᵀy of the
training set's energy, force and virial rows separately (unweighted; energies and virials per √N), and
the raw validation (and test) rows. ``scan`` then tries energy and virial weights, prior exponents p
and λ without touching the basis again. Each setting costs one eigendecomposition per (p, weights),
the λ values then cost a matrix-vector product each. The datasets and splits are those of
``linear_ace.py``.

  python benchmarks/linear_ace_scan.py assemble ethanol /tmp/eth16 --n-max 16 --l-max 4 --max-degree 16,14,12,10
  python benchmarks/linear_ace_scan.py scan /tmp/eth16 --p 0.5,1 --energy-weight 10,30
  python benchmarks/linear_ace_scan.py scan /tmp/ge --p 1 --final      # Zuo: add validation rows, report test

Selection is by validation only (force MAE + 10 × energy-per-atom MAE, as in ``linear_ace.py``);
``--final`` refits with the validation rows added and also prints test errors, for the setting
already chosen. The Gram matrices are n_features² float64 each (17,970 features: 2.6 GB each), so
this tool suits bases up to about 20k features; the ethanol benchmark's 64,839 use the dual solver.

``--degrees`` / ``--centre-degrees`` solve a sub-basis of the stored one (a lower total degree per
correlation order, for all or for one centre element) without re-assembling; ``--solver cholesky``
solves each λ exactly instead of along the eigen-path (it stops at λ near the round-off floor).
``assemble --radial/--transform/--q/--r0-scale`` choose the radial basis.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise SystemExit(f"expected comma-separated numbers, got {text!r}") from None


def assemble(args) -> None:
    import jax

    jax.config.update("jax_enable_x64", True)
    import linear_ace as LA
    from jace.data.e0 import resolve_e0
    from jace.data.graph import SpeciesMap
    from jace.models.design import LinearACESpec, RadialSpec
    from jace.models.linear_ace import design_rows, gram, product_basis_for

    if args.dataset not in LA.SETTINGS:
        raise SystemExit(f"unknown dataset {args.dataset!r}; choose from {sorted(LA.SETTINGS)}")
    s = LA.SETTINGS[args.dataset]
    deg = tuple(_floats(args.max_degree))
    spec = LinearACESpec(
        elements=s["elements"], cutoff=args.cutoff or s["cutoff"],
        radial=RadialSpec(args.radial, args.n_max, "polynomial", 5, args.transform, args.r0_scale, args.q),
        l_max=args.l_max, correlation=len(deg), max_degree=deg, w_l=args.w_l,
    )
    train, val, tests, isolated = LA.load(args.dataset, args.data)
    species = SpeciesMap.from_symbols(spec.elements)
    e0 = np.asarray(resolve_e0(s["e0"], species, train, isolated))
    info = product_basis_for(spec).info[(0, 1)]
    n = len(species) * len(info["n_sum"])
    os.makedirs(args.out, exist_ok=True)
    np.save(os.path.join(args.out, "n_sum.npy"), np.asarray(info["n_sum"]))
    np.save(os.path.join(args.out, "ll_sum.npy"), np.asarray(info["ll_sum"]))
    np.save(os.path.join(args.out, "l_sum.npy"), np.asarray(info["l_sum"]))
    np.save(os.path.join(args.out, "nu.npy"), np.asarray(info["nu"]))
    print(f"{n} features", flush=True)
    iu = np.triu_indices(3)

    def blocks(configs):
        """Gram blocks per observable; rows buffered so each update is one large product."""
        kinds = "efv" if any(c.stress is not None for c in configs) else "ef"  # no virial block without stress
        g = {k: np.zeros((n, n)) for k in kinds}
        b = {k: np.zeros(n) for k in "efv"}
        yy = {k: 0.0 for k in "efv"}
        n_rows = {k: 0 for k in "efv"}
        buf = {k: ([], []) for k in "efv"}

        def flush():
            for k, (xs, ys) in buf.items():
                if xs:
                    x, y = np.vstack(xs), np.concatenate(ys)
                    g[k] += gram(x)
                    b[k] += x.T @ y
                    yy[k] += float(y @ y)
                    n_rows[k] += len(y)
                buf[k] = ([], [])

        pending = 0
        for k, x_e, x_f, x_v in design_rows(spec, configs):
            c = configs[k]
            w = 1 / np.sqrt(c.n_atoms)
            buf["e"][0].append(w * x_e[None])
            buf["e"][1].append(np.array([w * (c.energy - e0[species.indices(c.numbers)].sum())]))
            buf["f"][0].append(x_f)
            buf["f"][1].append(c.forces.reshape(-1))
            if c.stress is not None and x_v is not None:
                buf["v"][0].append(w * x_v)
                buf["v"][1].append(w * c.virial[iu])
            pending += len(x_f)
            if pending > 4000:
                flush()
                pending = 0
        flush()
        return g, b, {"yy": yy, "n_rows": n_rows}

    def raw_rows(configs, name):
        rows = list(design_rows(spec, configs))
        cfgs = [configs[k] for k, *_ in rows]
        np.savez(
            os.path.join(args.out, f"{name}.npz"),
            x_e=np.array([r[1] for r in rows]), x_f=np.vstack([r[2] for r in rows]),
            e=np.array([c.energy - e0[species.indices(c.numbers)].sum() for c in cfgs]),
            f=np.concatenate([c.forces.reshape(-1) for c in cfgs]), n_atoms=np.array([c.n_atoms for c in cfgs]),
        )

    t0 = time.perf_counter()
    meta = {"dataset": args.dataset, "n_features": n, "elements": list(spec.elements), "spec": vars(args) | {"func": None}}
    for name, configs in [("train", train)] + ([("val", val)] if args.dataset != "ethanol" else []):
        g, b, stats = blocks(configs)
        for k in g:
            np.save(os.path.join(args.out, f"{name}_G{k}.npy"), g[k])
            np.save(os.path.join(args.out, f"{name}_b{k}.npy"), b[k])
        meta[name] = stats
        del g
    raw_rows(val, "val_rows")
    if "test" in tests:
        raw_rows(tests["test"], "test_rows")
    meta["assembly_s"] = time.perf_counter() - t0
    with open(os.path.join(args.out, "meta.json"), "w") as fh:
        json.dump(meta, fh, indent=1)
    print(f"assembled in {meta['assembly_s']:.0f} s -> {args.out}", flush=True)


def _selection(args, meta, nu, n_sum, l_sum, n_species):
    """Indices of the stored features that the --degrees / --centre-degrees truncation keeps (all by default)."""
    degree = n_sum + args.w_l * l_sum  # the basis's own total degree, Σ (n + 1) + w_l Σ l
    elements = list(meta.get("elements", []))

    def keep_for(limits):
        if limits is None:
            return np.ones(len(nu), bool)
        if len(limits) != int(nu.max()):
            raise SystemExit(f"--degrees needs one value per correlation order (1 … {int(nu.max())}), got {limits}")
        return degree <= np.asarray(limits)[nu - 1] + 1e-9

    default = keep_for(_floats(args.degrees) if args.degrees else None)
    per = {}
    for item in filter(None, (args.centre_degrees or "").split(";")):
        sym, _, lim = item.partition("=")
        if sym not in elements:
            raise SystemExit(f"--centre-degrees: element {sym!r} is not one of {elements}")
        per[elements.index(sym)] = keep_for(_floats(lim))
    return np.concatenate([np.flatnonzero(per.get(s, default)) + s * len(nu) for s in range(n_species)])


def scan(args) -> None:
    import scipy.linalg

    from jace.models.linear_ace import cholesky_lower

    path = lambda name: os.path.join(args.dir, name)  # noqa: E731
    if not os.path.exists(path("meta.json")):
        raise SystemExit(f"{args.dir} has no meta.json: run `assemble` first")
    meta = json.load(open(path("meta.json")))
    load = lambda name, **kw: np.load(path(name + ".npy"), **kw)  # noqa: E731
    kinds = [k for k in "efv" if os.path.exists(path(f"train_G{k}.npy"))]
    if args.final and "val" not in meta:
        raise SystemExit("--final needs validation blocks (the Zuo datasets; ethanol keeps its 50 for validation)")
    n_sum, ll_sum = load("n_sum"), load("ll_sum")
    n_species = meta["n_features"] // len(n_sum)
    sel = _selection(args, meta, load("nu"), n_sum, load("l_sum"), n_species) if os.path.exists(path("nu.npy")) else None
    if sel is None and (args.degrees or args.centre_degrees):
        raise SystemExit(f"{args.dir} was assembled before subsets were supported: re-run `assemble`")
    sel = np.arange(meta["n_features"]) if sel is None else sel
    print(f"{len(sel)} of {meta['n_features']} features selected", flush=True)
    # Gram blocks restricted to the selection, read from memory-mapped files (the full blocks never load)
    g, b = {}, {}
    for k in kinds:
        g[k] = np.asarray(load(f"train_G{k}", mmap_mode="r")[np.ix_(sel, sel)])
        b[k] = load(f"train_b{k}")[sel]
        if args.final:
            g[k] += load(f"val_G{k}", mmap_mode="r")[np.ix_(sel, sel)]
            b[k] += load(f"val_b{k}")[sel]
    yy_f, n_f = meta["train"]["yy"]["f"], meta["train"]["n_rows"]["f"]
    sets = {"val": dict(np.load(path("val_rows.npz")))}
    if args.final and os.path.exists(path("test_rows.npz")):
        sets["test"] = dict(np.load(path("test_rows.npz")))
    for rows in sets.values():
        rows["x_e"], rows["x_f"] = rows["x_e"][:, sel], rows["x_f"][:, sel]

    def errors(c, rows):
        de = (rows["x_e"] @ c - rows["e"]) / rows["n_atoms"]
        df = rows["x_f"] @ c - rows["f"]
        return 1e3 * np.mean(np.abs(de)), 1e3 * np.mean(np.abs(df)), 1e3 * np.sqrt(np.mean(df**2))

    results = []
    for p in _floats(args.p):
        gamma = np.tile((n_sum + args.w_l * ll_sum) ** p, n_species)[sel]
        for we in _floats(args.energy_weight):
            for wv in _floats(args.virial_weight):
                t0 = time.perf_counter()
                a = g["f"] + we**2 * g["e"] + (wv**2 * g["v"] if "v" in g else 0.0)
                rhs = b["f"] + we**2 * b["e"] + (wv**2 * b["v"] if "v" in b else 0.0)
                keep = np.diag(a) > 1e-14 * np.diag(a).max()  # basis functions that never occur (e.g. O–O in ethanol)
                scaled = a[np.ix_(keep, keep)] / np.outer(gamma[keep], gamma[keep])
                del a
                rhs_k = rhs[keep] / gamma[keep]
                if args.solver == "eigh":
                    w, v = scipy.linalg.eigh(scaled, overwrite_a=True, check_finite=False, driver="evd")
                    proj = v.T @ rhs_k
                    solve = lambda lam: v @ (proj / (np.maximum(w, 0.0) + lam))  # noqa: E731
                else:  # one Cholesky factorisation per λ: exact for every λ the factorisation succeeds at
                    def solve(lam):
                        m = scaled.copy()
                        m[np.diag_indices_from(m)] += lam
                        try:  # jace's blocked Cholesky: LAPACK potrf crashes in OpenBLAS 0.3.31 at large n
                            return scipy.linalg.cho_solve((cholesky_lower(m), True), rhs_k, check_finite=False)
                        except np.linalg.LinAlgError:
                            return None
                for lam in _floats(args.lams):
                    ck = solve(lam)
                    if ck is None:
                        print(f"p={p} lam={lam:g}: not positive definite at this λ, skipped", flush=True)
                        continue
                    c = np.zeros(len(rhs))
                    c[keep] = ck / gamma[keep]
                    train_f_rmse = 1e3 * np.sqrt(max(c @ g["f"] @ c - 2 * c @ b["f"] + yy_f, 0.0) / n_f)
                    row = {"p": p, "energy_weight": we, "virial_weight": wv, "lam": lam,
                           "train_forces_rmse_meV_per_A": train_f_rmse}
                    for name, rows in sets.items():
                        e_mae, f_mae, f_rmse = errors(c, rows)
                        row[f"{name}_energy_per_atom_mae_meV"] = e_mae
                        row[f"{name}_forces_mae_meV_per_A"] = f_mae
                        row[f"{name}_forces_rmse_meV_per_A"] = f_rmse
                    row["score"] = row["val_forces_mae_meV_per_A"] + 10 * row["val_energy_per_atom_mae_meV"]
                    results.append(row)
                    print("  ".join(f"{k}={x:.4g}" for k, x in row.items()), flush=True)
                print(f"({args.solver} and scan: {time.perf_counter() - t0:.0f} s)", flush=True)
    if not results:
        raise SystemExit("no setting could be solved")
    best = min(results, key=lambda r: r["score"])
    print("best on validation:", "  ".join(f"{k}={x:.4g}" for k, x in best.items()))
    if args.final:
        print("(--final: validation rows are in the fit, so the validation errors above are not held out)")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    a = sub.add_parser("assemble", help="build the Gram blocks of one basis")
    a.add_argument("dataset")
    a.add_argument("out")
    a.add_argument("--data", default=os.path.join(HERE, "..", "..", "shared", "data"))
    a.add_argument("--n-max", type=int, required=True)
    a.add_argument("--l-max", type=int, required=True)
    a.add_argument("--max-degree", required=True, help="per correlation order, e.g. 16,14,12,10")
    a.add_argument("--cutoff", type=float, default=None)
    a.add_argument("--w-l", type=float, default=1.5)
    a.add_argument("--radial", default="bessel", choices=("bessel", "chebyshev", "gaussian"))
    a.add_argument("--transform", default="none", choices=("none", "agnesi"))
    a.add_argument("--q", type=float, default=4.0, help="Agnesi exponent q")
    a.add_argument("--r0-scale", type=float, default=1.0, help="Agnesi r0 = scale × sum of covalent radii")
    a.set_defaults(func=assemble)
    s = sub.add_parser("scan", help="re-solve stored Gram blocks for many settings")
    s.add_argument("dir")
    s.add_argument("--p", default="0.5,1,2", help="smoothness-prior exponents")
    s.add_argument("--w-l", type=float, default=1.5, help="w_l in the prior (Σ (n + 1) + w_l l(l+1))^p")
    s.add_argument("--energy-weight", default="30")
    s.add_argument("--virial-weight", default="1")
    s.add_argument("--lams", default="1e-12,1e-11,1e-10,1e-9,1e-8,1e-7,1e-6,1e-5,1e-4,1e-3,1e-2")
    s.add_argument("--final", action="store_true")
    s.add_argument("--solver", default="eigh", choices=("eigh", "cholesky"),
                   help="eigh: one eigendecomposition, then every λ is cheap; cholesky: one factorisation per λ, exact")
    s.add_argument("--degrees", default=None, help="keep only functions of total degree ≤ D_ν, e.g. 14,13,11,9")
    s.add_argument("--centre-degrees", default=None, help="per centre element, e.g. 'O=12,11,9,7;C=16,14,12,10'")
    s.set_defaults(func=scan)
    args = ap.parse_args(argv)
    if args.command == "assemble" and not os.path.isdir(args.data):
        raise SystemExit(f"data folder {args.data} not found (pass --data PATH/TO/shared/data)")
    args.func(args)


if __name__ == "__main__":
    main()
