"""Diagnostics: smoothness scans and roughness, plots, sweep files, ablation tables."""

import json
import math
import os

import numpy as np
import pytest
from ase.build import molecule

from jace.diagnostics import (
    AblationRecord,
    SweepError,
    ablation_table,
    apply_overrides,
    bond_stretch,
    connectivity,
    default_scans,
    dihedral_scan,
    dimer_approach,
    fragment,
    load_ablation_results,
    load_sweep,
    plot_roughness,
    plot_scans,
    roughness,
    run_scan,
    run_scans,
    write_ablation_results,
)

# --------------------------------------------------------------------------------------------------
# An analytic model: a sum of Morse pair terms over all pairs, in numpy.

D_MORSE, A_MORSE, R0_MORSE = 0.8, 1.6, 1.2


def morse_curve(r):
    e = np.exp(-A_MORSE * (r - R0_MORSE))
    return D_MORSE * ((1.0 - e) ** 2 - 1.0)


def morse_energy_forces(images):
    energies, forces = [], []
    for atoms in images:
        pos = atoms.get_positions()
        diff = pos[None, :, :] - pos[:, None, :]  # r_j - r_i
        r = np.linalg.norm(diff, axis=-1)
        iu = np.triu_indices(len(atoms), 1)
        rij = r[iu]
        e = np.exp(-A_MORSE * (rij - R0_MORSE))
        energies.append(float(np.sum(D_MORSE * ((1.0 - e) ** 2 - 1.0))))
        dedr = 2.0 * D_MORSE * A_MORSE * (1.0 - e) * e
        unit = diff[iu] / rij[:, None]
        f = np.zeros_like(pos)
        np.add.at(f, iu[0], dedr[:, None] * unit)
        np.add.at(f, iu[1], -dedr[:, None] * unit)
        forces.append(f)
    return np.array(energies), forces


def _pairwise(pos):
    return np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)


# --------------------------------------------------------------------------------------------------
# Scan geometry


def test_bond_stretch_moves_fragment_to_requested_distances():
    mol = molecule("CH3CH2OH")  # C0 C1 O2 H3..H8
    adj = connectivity(mol)
    moving = fragment(adj, 1, cut=(0, 1))
    assert 2 in moving and 0 not in moving and len(moving) < len(mol)
    fixed = [k for k in range(len(mol)) if k not in moving]
    r = np.linspace(0.8, 4.0, 9)
    images, coord = bond_stretch(mol, 0, 1, r)
    np.testing.assert_allclose(coord, r)
    p0 = mol.get_positions()
    for image, value in zip(images, r):
        p = image.get_positions()
        assert np.linalg.norm(p[1] - p[0]) == pytest.approx(value, abs=1e-12)
        np.testing.assert_allclose(p[fixed], p0[fixed], atol=1e-12)  # the other side does not move
        np.testing.assert_allclose(_pairwise(p[moving]), _pairwise(p0[moving]), atol=1e-12)  # rigid shift
    np.testing.assert_allclose(mol.get_positions(), p0)  # input untouched

    images, _ = bond_stretch(mol, 0, 1, r, move_fragment=False)
    p = images[-1].get_positions()
    changed = np.flatnonzero(np.linalg.norm(p - p0, axis=1) > 1e-12)
    assert changed.tolist() == [1]

    images, coord = bond_stretch(mol, 0, 3, cutoff=4.0)
    assert coord[0] == pytest.approx(0.5) and coord[-1] == pytest.approx(5.0)
    with pytest.raises(ValueError, match="cutoff"):
        bond_stretch(mol, 0, 1)


def test_dihedral_scan_sets_angle_and_keeps_other_side():
    mol = molecule("trans-butane")
    a, b, c, d = 0, 1, 2, 3
    moving = fragment(connectivity(mol), c, cut=(b, c))
    fixed = [k for k in range(len(mol)) if k not in moving]
    angles = np.array([-170.0, -90.0, 0.0, 45.0, 120.0, 180.0])
    images, coord = dihedral_scan(mol, a, b, c, d, angles)
    p0 = mol.get_positions()
    for image, phi in zip(images, angles):
        got = image.get_dihedral(a, b, c, d)
        assert (got - phi + 180.0) % 360.0 - 180.0 == pytest.approx(0.0, abs=1e-8)
        p = image.get_positions()
        np.testing.assert_allclose(p[fixed], p0[fixed], atol=1e-10)
        np.testing.assert_allclose(_pairwise(p[moving]), _pairwise(p0[moving]), atol=1e-10)
        assert np.linalg.norm(p[c] - p[b]) == pytest.approx(np.linalg.norm(p0[c] - p0[b]))
    ring = molecule("C6H6")
    with pytest.raises(ValueError, match="ring"):
        dihedral_scan(ring, 0, 1, 2, 3, [0.0])


def test_dimer_approach():
    images, r = dimer_approach("C", "H")
    assert r[0] == pytest.approx(0.3) and r[-1] == pytest.approx(6.0)
    for image, value in zip(images, r):
        assert image.get_chemical_symbols() == ["C", "H"]
        assert not image.pbc.any()
        assert image.get_distance(0, 1) == pytest.approx(value)
    with pytest.raises(ValueError, match="chemical symbol"):
        dimer_approach("C", "Xx")


def test_default_scans_pick_ch_bond_heavy_dihedral_and_common_dimer():
    for name in ("CH3CH2OH", "trans-butane"):
        mol = molecule(name)
        symbols = mol.get_chemical_symbols()
        scans = default_scans(mol, cutoff=5.0)
        assert set(scans) == {"bond", "dihedral", "dimer"}
        i, j = scans["bond"].atoms
        assert (symbols[i], symbols[j]) == ("C", "H")
        assert scans["bond"].coordinate[-1] == pytest.approx(6.0)
        a, b, c, d = scans["dihedral"].atoms
        assert symbols[b] != "H" and symbols[c] != "H"
        adj = connectivity(mol)
        assert adj[a, b] and adj[b, c] and adj[c, d]
        assert sorted(scans["dimer"].atoms) == ["C", "H"]
    butane = default_scans(molecule("trans-butane"), cutoff=5.0)
    assert butane["dihedral"].atoms == (0, 1, 2, 3)  # the backbone, not a methyl rotor
    assert "dihedral" not in default_scans(molecule("C6H6"), cutoff=5.0)  # ring only


# --------------------------------------------------------------------------------------------------
# Running a model


def _central_difference(x, e):
    return -(e[2:] - e[:-2]) / (x[2:] - x[:-2])


def test_run_scan_generalised_force_is_minus_energy_derivative():
    mol = molecule("CH3CH2OH")
    cases = [
        bond_stretch(mol, 0, 1, np.linspace(1.0, 2.0, 201)),
        dihedral_scan(mol, 6, 0, 1, 2, np.linspace(-60.0, 60.0, 121)),
        dimer_approach("C", "O", np.linspace(0.8, 3.0, 221)),
    ]
    for images, coord in cases:
        res = run_scan(morse_energy_forces, images, coord, name="s")
        assert not res.diverged and not res.errors
        fd = _central_difference(res.coordinate, res.energies)
        scale = np.max(np.abs(res.generalised_force))
        assert scale > 0
        np.testing.assert_allclose(res.generalised_force[1:-1], fd, rtol=2e-3, atol=1e-4 * scale)
        assert np.all(res.max_force >= np.abs(res.generalised_force) / np.sqrt(len(images[0])) - 1e-12)
    # The dimer energy is exactly the Morse curve.
    images, r = dimer_approach("C", "O", np.linspace(0.5, 6.0, 50))
    res = run_scan(morse_energy_forces, images, r)
    np.testing.assert_allclose(res.energies, morse_curve(r), rtol=1e-12)


def test_run_scan_records_errors_and_nan_without_crashing():
    images, r = dimer_approach("H", "H", np.linspace(0.3, 3.0, 28))

    def fragile(batch):
        if any(atoms.get_distance(0, 1) < 0.6 for atoms in batch):
            raise RuntimeError("atoms too close")
        e, f = morse_energy_forces(batch)
        for k, atoms in enumerate(batch):
            if atoms.get_distance(0, 1) > 2.5:
                e[k] = np.nan
        return e, f

    res = run_scan(fragile, images, r)
    too_close = r < 0.6
    nan_tail = r > 2.5
    assert np.all(np.isnan(res.energies[too_close | nan_tail]))
    assert np.all(np.isfinite(res.energies[~(too_close | nan_tail)]))
    assert all("too close" in res.errors[k] for k in np.flatnonzero(too_close))
    assert all("non-finite energy" in res.errors[k] for k in np.flatnonzero(nan_tail))
    assert res.diverged and res.n_nonfinite == int(np.sum(too_close | nan_tail))
    rough = res.roughness()
    assert rough["n_nonfinite"] == res.n_nonfinite and math.isfinite(rough["roughness"])
    json.dumps(res.to_dict())  # NaN becomes null

    def broken(batch):
        return np.zeros(len(batch) + 1), []

    res = run_scan(broken, images, r)
    assert np.all(np.isnan(res.energies)) and len(res.errors) == len(images)


# --------------------------------------------------------------------------------------------------
# Roughness on analytic curves


def test_roughness_of_sine_scales_as_k_to_the_fourth():
    x = np.linspace(0.0, 4.0 * np.pi, 4001)
    h = x[1] - x[0]
    lo, hi = x[0] + h / 2, x[-1] - h / 2  # the span the interior points' cells cover
    values = {}
    for k in (1.0, 2.0, 3.0):
        out = roughness(x, np.sin(k * x))
        exact = k**4 * ((hi - lo) / 2 - (np.sin(2 * k * hi) - np.sin(2 * k * lo)) / (4 * k))
        assert out["roughness"] == pytest.approx(exact, rel=1e-3)
        values[k] = out["roughness"]
        assert out["sign_changes"] == int(4 * k)  # cos(kx) changes sign at kx = π/2 + nπ
        # Total variation of F = −k cos(kx) over 2k full periods: 4k per period · k amplitude.
        assert out["force_total_variation"] == pytest.approx(8.0 * k * k, rel=1e-3)
    assert values[2.0] / values[1.0] == pytest.approx(16.0, rel=1e-3)
    assert values[3.0] / values[1.0] == pytest.approx(81.0, rel=1e-3)


def test_roughness_exact_for_parabola_on_nonuniform_grid():
    rng = np.random.default_rng(0)
    x = np.sort(rng.uniform(-2.0, 3.0, 60))
    c = 1.7
    out = roughness(x, c * x**2 + 0.3 * x - 1.0)
    h = np.diff(x)
    span = (x[-1] - x[0]) - (h[0] + h[-1]) / 2
    assert out["roughness"] == pytest.approx((2 * c) ** 2 * span, rel=1e-10)
    assert out["sign_changes"] == 1
    # Order of the input does not matter; NaN points are skipped and counted.
    perm = rng.permutation(x.size)
    assert roughness(x[perm], (c * x**2 + 0.3 * x - 1.0)[perm])["roughness"] == pytest.approx(out["roughness"])
    e = c * x**2
    e[5] = np.nan
    assert roughness(x, e)["n_nonfinite"] == 1
    assert math.isnan(roughness([0.0, 1.0], [1.0, 2.0])["roughness"])


def test_morse_has_one_minimum_and_wiggles_add_sign_changes():
    r = np.linspace(0.6, 6.0, 541)
    clean = roughness(r, morse_curve(r))
    assert clean["sign_changes"] == 1
    wiggly_e = morse_curve(r) + 0.02 * np.sin(25.0 * r)
    wiggly = roughness(r, wiggly_e)
    assert wiggly["sign_changes"] > 5
    assert wiggly["roughness"] > clean["roughness"]
    assert wiggly["force_total_variation"] > clean["force_total_variation"]
    # With model forces the same counts come from the forces.
    images, rr = dimer_approach("C", "C", r)
    res = run_scan(morse_energy_forces, images, rr)
    assert res.roughness()["sign_changes"] == 1
    assert res.roughness()["unit"] == ""


# --------------------------------------------------------------------------------------------------
# Plots


def _is_png(path):
    with open(path, "rb") as fh:
        head = fh.read(8)
    return head == b"\x89PNG\r\n\x1a\n" and os.path.getsize(path) > 1000


def test_plots_write_png(tmp_path):
    scans = default_scans(molecule("CH3CH2OH"), cutoff=3.0, dr=0.1, dphi=15.0)
    res_a = run_scans(morse_energy_forces, scans)

    def shifted(batch):
        e, f = morse_energy_forces(batch)
        return e * 1.1 + 0.01, [x * 1.1 for x in f]

    res_b = run_scans(shifted, scans)
    for name in scans:
        path = tmp_path / "plots" / f"{name}.png"
        plot_scans({"morse": res_a[name], "morse x1.1": res_b[name]}, path)
        assert _is_png(path)
    assert not [p for p in os.listdir(tmp_path / "plots") if p.endswith(".tmp")]
    table = {
        "morse": {k: v.roughness() for k, v in res_a.items()},
        "morse x1.1": {k: v.roughness() for k, v in res_b.items()},
        "broken": {"bond": {"roughness": math.nan, "sign_changes": -1}},
    }
    path = tmp_path / "roughness.png"
    plot_roughness(table, path)
    assert _is_png(path)
    records = [AblationRecord(name=k, roughness=v) for k, v in table.items()]
    plot_roughness(records, tmp_path / "roughness2.png")
    assert _is_png(tmp_path / "roughness2.png")


# --------------------------------------------------------------------------------------------------
# Sweep files

BASE_CONFIG = """\
model:
  type: linear_ace
  elements: [Cu, Au]
  cutoff: 5.0
  correlation: 2
  radial: {kind: bessel, n_max: 6}
data:
  train: train.xyz
"""


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def sweep_dir(tmp_path):
    _write(tmp_path / "configs" / "base.yaml", BASE_CONFIG)
    _write(tmp_path / "data" / "test.xyz", "")
    _write(tmp_path / "data" / "ood.xyz", "")
    _write(tmp_path / "data" / "mol.xyz", "")
    return tmp_path


GOOD_SWEEP = """\
base: configs/base.yaml
grid:
  model.correlation: [1, 2, 3]
  model.radial.n_max: [6]
  model.nonlinearity: [true, false]
points:
  - {name: mace_like, model.correlation: 3, model.l_max: 2}
  - {model.cutoff: 4.5}
seeds: [0, 1]
budget: {max_epochs: 10}
test_sets: {in_domain: data/test.xyz, ood_600K: data/ood.xyz}
scans: {molecule: data/mol.xyz, index: 0}
out_dir: results
"""


def test_load_sweep_and_expand(sweep_dir):
    sweep = load_sweep(_write(sweep_dir / "sweep.yaml", GOOD_SWEEP))
    assert sweep.budget.max_epochs == 10 and sweep.budget.minutes is None
    assert sweep.test_sets["in_domain"] == str(sweep_dir / "data" / "test.xyz")
    assert sweep.out_dir == str(sweep_dir / "results")
    assert sweep.scans.molecule == str(sweep_dir / "data" / "mol.xyz") and sweep.scans.index == 0
    assert sweep.base_dir == str(sweep_dir / "configs")
    points = sweep.expand()
    names = [p.name for p in points[::2]]
    assert names == [
        "correlation=1,nonlinearity=on",
        "correlation=1,nonlinearity=off",
        "correlation=2,nonlinearity=on",
        "correlation=2,nonlinearity=off",
        "correlation=3,nonlinearity=on",
        "correlation=3,nonlinearity=off",
        "mace_like",
        "cutoff=4.5",
    ]
    assert [p.seed for p in points[:4]] == [0, 1, 0, 1]
    assert len({p.run_name for p in points}) == len(points) == 16
    assert points[0].overrides == {"model.correlation": 1, "model.radial.n_max": 6, "model.nonlinearity": True}
    assert points[12].overrides == {"model.correlation": 3, "model.l_max": 2}
    cfg = sweep.config_for(points[3])
    assert cfg["seed"] == 1 and cfg["model"]["correlation"] == 1 and cfg["model"]["nonlinearity"] is False
    assert sweep.base_config["model"]["correlation"] == 2  # base untouched
    assert load_sweep(sweep_dir / "sweep.yaml").expand() == points  # deterministic


def test_sweep_inline_base_and_check_configs(sweep_dir):
    text = "base_config:\n" + "".join("  " + line + "\n" for line in BASE_CONFIG.splitlines())
    ok = load_sweep(_write(sweep_dir / "inline.yaml", text + "grid: {model.correlation: [1, 2]}\n"))
    assert [p.name for p in ok.expand()] == ["correlation=1", "correlation=2"]
    ok.check_configs()
    single = load_sweep(_write(sweep_dir / "single.yaml", text + "grid: {model.correlation: [2]}\n"))
    assert [p.name for p in single.expand()] == ["base"]
    bad = load_sweep(_write(sweep_dir / "bad_leaf.yaml", text + "grid: {model.corelation: [1, 2]}\n"))
    with pytest.raises(SweepError, match="corelation.*did you mean 'correlation'"):
        bad.check_configs()


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("base: configs/base.yaml\ngird: {model.correlation: [1]}\n", r"unknown key 'gird' \(did you mean 'grid'\?\)"),
        ("base: configs/base.yaml\nbudget: {max_epoch: 3}\n", r"unknown key 'budget.max_epoch' \(did you mean 'max_epochs'\?\)"),
        ("base: configs/base.yaml\ngrid: {modle.correlation: [1]}\n", r"grid 'modle.correlation'.*no 'modle' \(did you mean 'model'\?\)"),
        ("base: configs/base.yaml\ngrid: {model.radail.n_max: [4]}\n", r"no 'model.radail' \(did you mean 'model.radial'\?\)"),
        ("base: configs/base.yaml\ngrid: {model.cutoff.x: [4]}\n", r"'model.cutoff' is not a mapping"),
        ("base: configs/base.yaml\ngrid: {model.correlation: 3}\n", r"must be a non-empty list"),
        ("base: configs/base.yaml\ngrid: {model.correlation: [1, 1]}\n", r"twice"),
        ("base: configs/base.yaml\ngrid: {seed: [1, 2]}\n", r"use 'seeds:'"),
        ("base: configs/missing.yaml\n", r"base config 'configs/missing.yaml' not found"),
        ("base: configs/base.yaml\ntest_sets: {ood: data/nope.xyz}\n", r"test_sets.ood: test set 'data/nope.xyz' not found"),
        ("base: configs/base.yaml\nseeds: [0, -1]\n", r"seeds must be >= 0"),
        ("base: configs/base.yaml\nbudget: {minutes: -5}\n", r"budget.minutes must be a positive number"),
        ("base: configs/base.yaml\npoints:\n  - {name: a, model.cutoff: 4}\n  - {name: a, model.cutoff: 5}\n", r"'a' is used more than once"),
        ("base: configs/base.yaml\nscans: {index: 0}\n", r"missing required key 'scans.molecule'"),
        ("base: configs/base.yaml\nscans: {molecule: data/mol.xyz, dimer: [C, Qq]}\n", r"scans.dimer"),
        ("grid: {model.correlation: [1]}\n", r"exactly one of 'base'"),
        ("base: configs/base.yaml\nbase: configs/base.yaml\n", r"duplicate key 'base'"),
        ("base: [configs/base.yaml\n", r"invalid YAML at line"),
    ],
)
def test_sweep_errors_name_file_and_key(sweep_dir, text, pattern):
    path = _write(sweep_dir / "bad.yaml", text)
    with pytest.raises(SweepError, match=pattern) as info:
        load_sweep(path)
    assert str(path) in str(info.value)


def test_apply_overrides():
    base = {"model": {"radial": {"n_max": 6}, "cutoff": 5.0}, "fit": {}}
    out = apply_overrides(base, {"model.radial.n_max": 8, "model.l_max": 2, "fit.lam": 0.1})
    assert out == {"model": {"radial": {"n_max": 8}, "cutoff": 5.0, "l_max": 2}, "fit": {"lam": 0.1}}
    assert base["model"]["radial"]["n_max"] == 6
    with pytest.raises(SweepError, match=r"run.yaml: 'model.radal.n_max'.*did you mean 'model.radial'"):
        apply_overrides(base, {"model.radal.n_max": 8}, source="run.yaml")
    with pytest.raises(SweepError, match="empty component"):
        apply_overrides(base, {"model..cutoff": 8})


# --------------------------------------------------------------------------------------------------
# Tables


def _records():
    rough = {"bond": {"roughness": 12.5, "force_total_variation": 3.0, "sign_changes": 1, "unit": "Å"}}
    return [
        AblationRecord("b", {"model.correlation": 2}, 0, 12000, 30.0,
                       {"in_domain": {"energy_per_atom_mae_meV": 1.5, "forces_mae_meV_per_A": 40.0},
                        "ood": {"energy_per_atom_mae_meV": 9.0, "forces_mae_meV_per_A": 120.0}}, rough),
        AblationRecord("diverging", {"model.correlation": 3}, 0, 15000, 5.0,
                       {"in_domain": {"energy_per_atom_mae_meV": math.nan, "forces_mae_meV_per_A": math.nan}}, {}),
        AblationRecord("a", {"model.correlation": 1}, 0, 800, 12.25,
                       {"in_domain": {"energy_per_atom_mae_meV": 3.0, "forces_mae_meV_per_A": 40.0}}, {}),
        AblationRecord("best", {}, 0, None, None,
                       {"in_domain": {"energy_per_atom_mae_meV": 2.0, "forces_mae_meV_per_A": 25.0}},
                       {"bond": {"roughness": 0.5, "sign_changes": 3, "unit": "Å"}}),
        AblationRecord("crashed", {}, 0, None, None, {}, {}, status="failed", message="out of memory"),
    ]


def test_ablation_table_sorting_and_format():
    text = ablation_table(_records())
    lines = text.splitlines()
    table = [line for line in lines if line.startswith("|")]
    assert len({len(line) for line in table}) == 1  # aligned columns
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header[:4] == ["design point", "status", "params", "train (s)"]
    assert "in_domain E (meV/atom)" in header and "in_domain F (meV/Å)" in header and "ood F (meV/Å)" in header
    assert "bond ∫E''² (eV²/Å³)" in header and "bond sign ch." in header
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table[2:]]
    # Force MAE first, then energy; diverged and failed runs last.
    assert [r[0] for r in rows] == ["best", "b", "a", "diverging", "crashed"]
    by_name = {r[0]: dict(zip(header, r)) for r in rows}
    assert by_name["diverging"]["status"] == "diverged"
    assert by_name["diverging"]["in_domain F (meV/Å)"] == "NaN"
    assert by_name["crashed"]["status"] == "failed"
    assert by_name["best"]["params"] == "–" and by_name["best"]["ood E (meV/atom)"] == "–"
    assert by_name["b"]["params"] == "12,000" and by_name["b"]["train (s)"] == "30.0"
    assert by_name["b"]["bond ∫E''² (eV²/Å³)"] == "1.25e+01" and by_name["b"]["bond sign ch."] == "1"
    assert by_name["a"]["in_domain E (meV/atom)"] == "3.00" and by_name["b"]["ood F (meV/Å)"] == "120.0"
    assert "crashed: out of memory" in text


def test_ablation_table_falls_back_to_energy_per_config():
    recs = [AblationRecord("x", metrics={"test": {"energy_mae_meV": 12.0, "forces_mae_meV_per_A": 1.0}})]
    text = ablation_table(recs)
    assert "test E (meV/config)" in text and "12.00" in text


def test_write_ablation_results_roundtrip(tmp_path):
    records = _records()
    results, table = write_ablation_results(records, tmp_path / "out")
    doc = json.loads(open(results).read())  # strict JSON: NaN written as null
    assert [d["name"] for d in doc["records"]] == [r.name for r in records]
    assert doc["records"][1]["metrics"]["in_domain"]["forces_mae_meV_per_A"] is None
    assert open(table).read() == ablation_table(records)
    back = load_ablation_results(results)
    assert back[0] == records[0]
    assert back[1].diverged and math.isnan(back[1].metrics["in_domain"]["forces_mae_meV_per_A"])
    assert not [p for p in os.listdir(tmp_path / "out") if p.endswith(".tmp")]
