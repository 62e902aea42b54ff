"""Where the time of one jitted jace energy+forces call goes, per XLA operation, with the jace source
operation each one came from.

  pip install xprof   # reads the trace; not a jace dependency
  python benchmarks/profile_call.py --data ../shared/data --case acac_32 --dtype float64 --top 25

The call is the one ``multi_ace_vs_mace_torch.py`` times (jace ``mace``, same hyperparameters and
padding). It is traced with ``jax.profiler`` for ``--repeats`` calls; the trace's XLA CPU events are
summed by name, and each name is joined to the ``op_name`` metadata of the optimised HLO (dumped with
``--xla_dump_to``), which says which jax operation (and which Flax module) the fusion came from.
Prints a table of milliseconds per call, largest first, and writes it as JSON with ``--out``.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def hlo_op_names(dump_dir: str, module: str) -> dict[str, str]:
    """instruction name → op_name metadata, from the optimised HLO of one jitted function (``jit_predict``)."""
    names: dict[str, str] = {}
    pat = re.compile(r'^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=.*?metadata=\{[^}]*op_name="([^"]+)"')
    for path in glob.glob(os.path.join(dump_dir, f"*.{module}.cpu_after_optimizations.txt")):
        with open(path) as fh:
            for line in fh:
                m = pat.match(line)
                if m:
                    names.setdefault(m.group(1), m.group(2))
    return names


def part_of(op_name: str) -> str:
    """'fwd layer_0/product' from an op_name such as jit(predict)/jvp(MultiACENetwork)/layer_0/product/mul."""
    direction = "bwd" if "transpose(" in op_name else "fwd"
    path = [s for s in op_name.split("/") if not s.startswith(("jit(", "jvp(", "transpose("))]
    return f"{direction} {'/'.join(path[:2]) if path and path[0].startswith('layer_') else (path[0] if path else '?')}"


def trace_events(trace_dir: str) -> list[dict]:
    """Complete ("X") events of the newest xplane in a jax.profiler trace directory."""
    try:
        from xprof.convert import raw_to_tool_data
    except ImportError as err:
        raise SystemExit(f"profile_call.py reads the trace with xprof: pip install xprof ({err})") from err

    planes = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True), key=os.path.getmtime)
    if not planes:
        raise FileNotFoundError(f"no *.xplane.pb under {trace_dir}")
    data, _ = raw_to_tool_data.xspace_to_tool_data([planes[-1]], "trace_viewer", {})
    trace = json.loads(data)
    return [e for e in trace.get("traceEvents", []) if e.get("ph") == "X"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=None)
    p.add_argument("--case", default="acac_32", choices=["acac_1", "acac_32", "si_64", "si_512", "c_64", "c_512"])
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--stress", action="store_true", help="also the stress (periodic cells)")
    p.add_argument("--work", default=None, help="keep the trace and HLO dump here (default: a temp dir)")
    p.add_argument("--out", default=None, help="write the table as JSON")
    args = p.parse_args(argv)

    work = args.work or tempfile.mkdtemp(prefix="jace_profile_")
    dump = os.path.join(work, "hlo")
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" --xla_dump_to={dump} --xla_dump_hlo_as_text").strip()

    import jax

    jax.config.update("jax_enable_x64", args.dtype == "float64")
    import multi_ace_vs_mace_torch as bench

    model, prep = bench.jace_setup(args.case, args.dtype, args.data)
    g, n_node, n_edge = prep()
    params = jax.jit(model.init)(jax.random.PRNGKey(0), g)

    def call():
        return jax.block_until_ready(model.predict_graph(g, compute_stress=args.stress, params=params))

    for _ in range(3):
        call()
    trace_dir = os.path.join(work, "trace")
    with jax.profiler.trace(trace_dir):
        for _ in range(args.repeats):
            call()

    names = hlo_op_names(dump, "jit_predict")
    total = collections.Counter()
    count = collections.Counter()
    for e in trace_events(trace_dir):
        total[e["name"]] += float(e.get("dur", 0.0))
        count[e["name"]] += 1
    # XLA CPU kernels are the events whose names are HLO instructions; the rest are host/python spans
    rows = [(name, us / args.repeats / 1e3, count[name] / args.repeats, names.get(name, ""))
            for name, us in total.items() if name in names]
    rows.sort(key=lambda r: -r[1])
    kernel_ms = sum(r[1] for r in rows)
    print(f"{args.case} {args.dtype}: {n_node} atoms, {n_edge} edges; XLA kernels {kernel_ms:.1f} ms per call "
          f"(sum over threads); trace and HLO in {work}")
    print(f"{'ms/call':>8} {'n/call':>6}  {'instruction':32s} op_name")
    for name, ms, n, op in rows[: args.top]:
        print(f"{ms:8.2f} {n:6.1f}  {name:32s} {op}")
    by_part = collections.Counter()
    for _, ms, _, op in rows:
        by_part[part_of(op)] += ms
    print(f"\n{'ms/call':>8}  part (fwd: energy, bwd: its gradient)")
    for part, ms in by_part.most_common():
        print(f"{ms:8.2f}  {part}")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"case": args.case, "dtype": args.dtype, "n_atoms": n_node, "n_edges": n_edge,
                       "kernel_ms_per_call": kernel_ms,
                       "rows": [{"instruction": r[0], "ms_per_call": r[1], "per_call": r[2], "op_name": r[3]}
                                for r in rows]}, fh, indent=1)


if __name__ == "__main__":
    main()
