"""Render benchmarks/results/*.json as the markdown tables of benchmarks/README.md.

Usage: python benchmarks/make_tables.py   (prints markdown; paste between the markers in README.md)
"""

from __future__ import annotations

import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def _load(name):
    path = os.path.join(HERE, "results", name)
    return json.load(open(path)) if os.path.exists(path) else {}


def _mib(x) -> str:
    return "–" if x is None else f"{x:.0f} MiB"


def linear_ace_tables() -> str:
    res = _load("linear_ace.json")
    lines = []
    if "ethanol" in res:
        r = res["ethanol"]
        v = r["errors"]["validation"]
        lines += [
            "**rMD17 ethanol** (950 train, 50 validation; MAE, meV and meV/Å):",
            "",
            "| model | E MAE | F MAE | basis functions | solver | prior p, λ, energy weight | fit time | peak memory: anonymous / all resident |",
            "|---|---|---|---|---|---|---|---|",
            f"| jace linear ACE (ν={r['settings']['correlation']}) | {v['energy_mae_meV']:.2f} | {v['forces_mae_meV_per_A']:.2f} "
            f"| {r['n_basis']} × {len(r['settings']['elements'])} elements = {r['n_features']} "
            f"| {r['settings'].get('solver', 'qr')} "
            f"| {r.get('prior_p', 2.0):g}, {r['lambda']:.0e}, {r.get('energy_weight', r['settings']['energy_weight']):g} "
            f"| {r['fit_time_s']:.0f} s | {_mib(r.get('peak_anon_MiB'))} / {r['peak_rss_MiB']:.0f} MiB |",
            "| linear ACE, published (MACE paper, Table 1) | 1.2 | 7.3 | | | | | |",
            "| MACE, published | 0.4 | 2.1 | | | | | |",
            "",
        ]
    pub = {
        "Li": (0.49, 0.49, 0.01, 0.01), "Mo": (2.24, 2.83, 0.09, 0.09),
        "Si": (2.91, 2.21, 0.07, 0.06), "Ge": (2.06, 1.79, 0.05, 0.05),
    }
    zuo = [d for d in ("Si", "Ge", "Li", "Mo") if d in res]
    if zuo:
        lines += [
            "**Zuo et al. 2020** (MAE; energy meV/atom, forces eV/Å; GAP and MTP as quoted by ACEpotentials.jl):",
            "",
            "| element | evaluated on | jace E | GAP E | MTP E | jace F | GAP F | MTP F | stress MAE meV/Å³ | basis | prior p, λ | fit time | peak memory |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for d in zuo:
            r = res[d]
            name = "test" if "test" in r["errors"] else "validation"
            e = r["errors"][name]
            g_e, m_e, g_f, m_f = pub[d]
            where = "test file" if name == "test" else "every 10th training config (no test file)"
            stress = f"{e['stress_mae_meV_per_A3']:.2f}" if "stress_mae_meV_per_A3" in e else "–"
            lines.append(
                f"| {d} | {where} | {e['energy_per_atom_mae_meV']:.2f} | {g_e} | {m_e} | "
                f"{e['forces_mae_meV_per_A'] / 1000:.3f} | {g_f} | {m_f} | {stress} | {r['n_basis']} | "
                f"{r.get('prior_p', 2.0):g}, {r['lambda']:.0e} | {r['fit_time_s']:.0f} s | {r['peak_rss_MiB']:.0f} MiB |"
            )
        lines.append("")
    grouped = [d for d in zuo if "test" in res[d].get("errors_by_group", {})]
    if grouped:
        lines += [
            "Test errors per Zuo `group` (MAE; energy meV/atom, forces eV/Å):",
            "",
            "| element | group | configurations | E | F |",
            "|---|---|---|---|---|",
        ]
        for d in grouped:
            for grp, e in res[d]["errors_by_group"]["test"].items():
                lines.append(
                    f"| {d} | {grp} | {e['n_configs']} | {e['energy_per_atom_mae_meV']:.2f} | "
                    f"{e['forces_mae_meV_per_A'] / 1000:.3f} |"
                )
        lines.append("")
    return "\n".join(lines)


def throughput_table() -> str:
    res = _load("throughput.json")
    if not res:
        return ""
    lines = [
        "**Evaluation throughput**, 512-atom periodic Si cell, cutoff 5.5 Å, Zuo-Si basis (CPU, 2 cores):",
        "",
        "| precision | basis | energy: ms | energy: atoms/s | energy+forces+stress: ms | energy+forces+stress: atoms/s |",
        "|---|---|---|---|---|---|",
    ]
    for prec in ("float64", "float32"):
        if prec in res:
            r = res[prec]
            lines.append(
                f"| {prec} | {r['n_basis']} | {r['energy_ms']:.1f} | {r['energy_atoms_per_s']:.0f} | "
                f"{r['energy_forces_stress_ms']:.1f} | {r['energy_forces_atoms_per_s']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def neighbours_table() -> str:
    res = _load("neighbours.json")
    if not res:
        return ""
    lines = [
        f"**Neighbour lists** (`{res['meta']['command']}`; best of {res['meta']['repeats']}, ms per full call; ratio to ase):",
        "",
        "| case | atoms | edges | matscipy | vesin | ase |",
        "|---|---|---|---|---|---|",
    ]
    for r in res["results"]:
        b = r["backends"]
        cell = lambda k: f"{1e3 * b[k]['best_s']:.2f} ({b[k]['ratio_to_ase']:.2f})"  # noqa: E731
        lines.append(f"| {r['case']} | {r['n_atoms']} | {r['n_edges']} | {cell('matscipy')} | {cell('vesin')} | {cell('ase')} |")
    return "\n".join(lines) + "\n"


def md_throughput_table(name: str = "md_throughput.json") -> str:
    res = _load(name)
    if not res:
        return ""
    lines = [
        "| structure | atoms | dtype | jax-md steps/s | jax-md atom-steps/s | jace ASE steps/s | mace-torch ASE steps/s "
        "| mace-torch atom-steps/s | jax-md / mace-torch | jace ASE / mace-torch | jax-md first chunk (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    num = lambda x: f"{x:.1f}" if x >= 10 else f"{x:.2f}"  # noqa: E731
    for r in res["records"]:
        j, a, t = r["jax_md"], r["ase"], r.get("mace_torch_ase") or {}
        ok = "steps_per_s" in t
        lines.append(
            f"| {'acac' if r['case'].startswith('acac') else 'Si'} | {r['n_atoms']:,} | {r['dtype']} | {num(j['steps_per_s'])} "
            f"| {j['atom_steps_per_s']:,.0f} | {num(a['steps_per_s'])} | {num(t['steps_per_s']) if ok else '–'} "
            f"| {format(t['atom_steps_per_s'], ',.0f') if ok else '–'} "
            f"| {format(r['ratio_jaxmd_over_torch_steps_per_s'], '.2f') if ok else '–'} "
            f"| {format(r['ratio_ase_over_torch_steps_per_s'], '.2f') if ok else '–'} | {j['first_chunk_seconds']:.1f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(linear_ace_tables())
    print(throughput_table())
    print(neighbours_table())
    print(md_throughput_table())
    print(md_throughput_table("md_throughput_session13.json"))
