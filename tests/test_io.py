"""Reading/writing configurations, reference energies E0, and the synthetic EMT dataset."""

import os
import textwrap
import time

import numpy as np
import pytest

from jace.data.configuration import Configuration
from jace.data.e0 import E0Warning, e0_from_isolated, e0_least_squares, resolve_e0
from jace.data.graph import SpeciesMap
from jace.data.io import (
    DataError,
    read_configurations,
    split_isolated_atoms,
    write_configurations,
)
from jace.data.synthetic import make_emt_dataset, make_emt_splits
from jace.models.design import DataKeys

CELL = 'Lattice="4.0 0.0 0.0 0.0 4.0 0.0 0.0 0.0 4.0" pbc="T T T"'


def write_text(tmp_path, text, name="data.xyz"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return str(path)


# ----------------------------------------------------------------------------------------------
# Round trip.
# ----------------------------------------------------------------------------------------------


def test_write_read_round_trip(tmp_path, emt_configs):
    configs = [c for c in emt_configs]
    configs[0] = Configuration(**{**configs[0].__dict__, "weight": 2.5, "forces_weight": 0.5, "config_type": "hot"})
    unlabelled = Configuration(positions=[[0, 0, 0], [1.1, 0, 0]], numbers=[29, 79], cell=np.zeros((3, 3)), pbc=False)
    configs.append(unlabelled)
    path = tmp_path / "out.xyz"
    write_configurations(path, configs)
    back = read_configurations(path)
    assert len(back) == len(configs)
    for k, (a, b) in enumerate(zip(configs, back)):
        assert b.source == f"{path}:{k}"
        np.testing.assert_array_equal(a.numbers, b.numbers)
        np.testing.assert_allclose(b.positions, a.positions, atol=1e-7)
        np.testing.assert_allclose(b.cell, a.cell, atol=1e-12)
        np.testing.assert_array_equal(a.pbc, b.pbc)
        assert (a.energy is None) == (b.energy is None)
        if a.energy is not None:
            assert b.energy == pytest.approx(a.energy, abs=1e-12)
        assert (a.forces is None) == (b.forces is None)
        if a.forces is not None:
            np.testing.assert_allclose(b.forces, a.forces, atol=1e-7)
        assert (a.stress is None) == (b.stress is None)
        if a.stress is not None:
            np.testing.assert_allclose(b.stress, a.stress, atol=1e-12)
        assert b.config_type == a.config_type
        assert (b.weight, b.energy_weight, b.forces_weight, b.stress_weight) == (
            a.weight, a.energy_weight, a.forces_weight, a.stress_weight)
    assert back[0].weight == 2.5 and back[0].forces_weight == 0.5 and back[0].config_type == "hot"


def test_round_trip_with_custom_keys(tmp_path, emt_configs):
    keys = DataKeys(energy="REF_energy", forces="REF_forces", stress="REF_stress")
    path = tmp_path / "ref.xyz"
    write_configurations(path, emt_configs[:3], keys=keys)
    text = path.read_text()
    assert "REF_energy=" in text and "REF_forces:R:3" in text
    back = read_configurations(path, keys=keys, require=("energy", "forces", "stress"))
    for a, b in zip(emt_configs[:3], back):
        assert b.energy == pytest.approx(a.energy, abs=1e-12)
        np.testing.assert_allclose(b.stress, a.stress, atol=1e-12)
    # With the default keys the same file has no labels: jace does not substitute REF_* silently.
    plain = read_configurations(path)
    assert plain[0].energy is None and plain[0].forces is None and plain[0].stress is None


def test_write_is_atomic(tmp_path, emt_configs, monkeypatch):
    import ase.io

    path = tmp_path / "keep.xyz"
    write_configurations(path, emt_configs[:2])
    before = path.read_bytes()

    def broken_write(fileobj, images, **kwargs):
        fileobj.write("3\npartial\n")
        raise RuntimeError("disk full")

    monkeypatch.setattr(ase.io, "write", broken_write)
    with pytest.raises(RuntimeError, match="disk full"):
        write_configurations(path, emt_configs[:5])
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["keep.xyz"]  # no temporary file left behind


# ----------------------------------------------------------------------------------------------
# Key variants.
# ----------------------------------------------------------------------------------------------


def test_energy_in_calculator_and_ref_energy_in_info(tmp_path):
    path = write_text(tmp_path, f"""
        2
        {CELL} Properties=species:S:1:pos:R:3:forces:R:3 energy=-1.5 REF_energy=-2.5 dft_energy=-3.5
        Cu 0.0 0.0 0.0 0.1 0.2 0.3
        Au 2.0 2.0 2.0 -0.1 -0.2 -0.3
        """)
    assert read_configurations(path)[0].energy == -1.5  # ase moved it into atoms.calc
    assert read_configurations(path, DataKeys(energy="REF_energy"))[0].energy == -2.5  # stays in info
    assert read_configurations(path, DataKeys(energy="dft_energy"))[0].energy == -3.5
    np.testing.assert_allclose(read_configurations(path)[0].forces, [[0.1, 0.2, 0.3], [-0.1, -0.2, -0.3]])


def test_force_column_and_ref_forces(tmp_path):
    path = write_text(tmp_path, f"""
        2
        {CELL} Properties=species:S:1:pos:R:3:force:R:3:REF_forces:R:3 REF_energy=-2.0
        Cu 0.0 0.0 0.0 0.1 0.2 0.3 1.0 2.0 3.0
        Au 2.0 2.0 2.0 -0.1 -0.2 -0.3 -1.0 -2.0 -3.0
        """)
    c = read_configurations(path, DataKeys(energy="REF_energy", forces="force"), require=("energy", "forces"))[0]
    np.testing.assert_allclose(c.forces[0], [0.1, 0.2, 0.3])
    c = read_configurations(path, DataKeys(forces="REF_forces"))[0]
    np.testing.assert_allclose(c.forces[1], [-1.0, -2.0, -3.0])


def test_stress_variants_and_virial(tmp_path):
    volume = 64.0
    s9 = "0.01 0.004 0.005 0.004 0.02 0.006 0.005 0.006 0.03"
    expected = np.array([[0.01, 0.004, 0.005], [0.004, 0.02, 0.006], [0.005, 0.006, 0.03]])
    voigt = "0.01 0.02 0.03 0.006 0.005 0.004"  # xx yy zz yz xz xy
    virial = " ".join(str(-v * volume) for v in expected.reshape(-1))
    path = write_text(tmp_path, f"""
        1
        {CELL} Properties=species:S:1:pos:R:3 energy=1.0 stress="{s9}"
        Cu 0.0 0.0 0.0
        1
        {CELL} Properties=species:S:1:pos:R:3 energy=1.0 REF_stress="{voigt}"
        Cu 0.0 0.0 0.0
        1
        {CELL} Properties=species:S:1:pos:R:3 energy=1.0 virial="{virial}"
        Cu 0.0 0.0 0.0
        1
        {CELL} Properties=species:S:1:pos:R:3 energy=1.0 REF_virial="{virial}"
        Cu 0.0 0.0 0.0
        """)
    c = read_configurations(path)
    np.testing.assert_allclose(c[0].stress, expected)  # 9 values under the standard key (via atoms.calc)
    assert c[1].stress is None  # REF_stress is not the configured key
    np.testing.assert_allclose(c[2].stress, expected)  # virial → -virial / V
    np.testing.assert_allclose(c[2].virial, -volume * expected)
    custom = read_configurations(path, DataKeys(stress="REF_stress", virial="REF_virial"))
    np.testing.assert_allclose(custom[1].stress, expected)  # 6 Voigt values
    np.testing.assert_allclose(custom[3].stress, expected)
    assert custom[0].stress is None


def test_config_type_weights_and_index(tmp_path):
    path = write_text(tmp_path, f"""
        1
        {CELL} Properties=species:S:1:pos:R:3 energy=1.0 config_type=liquid config_weight=3.0 config_stress_weight=0.0
        Cu 0.0 0.0 0.0
        1
        {CELL} Properties=species:S:1:pos:R:3 energy=2.0
        Au 0.0 0.0 0.0
        1
        Properties=species:S:1:pos:R:3 energy=3.0 pbc="F F F"
        Au 0.0 0.0 0.0
        """)
    c = read_configurations(path)
    assert (c[0].config_type, c[0].weight, c[0].stress_weight, c[0].energy_weight) == ("liquid", 3.0, 0.0, 1.0)
    assert (c[1].config_type, c[1].weight) == ("default", 1.0)
    last = read_configurations(path, index="1:")
    assert [x.energy for x in last] == [2.0, 3.0]
    assert [x.source for x in last] == [f"{path}:1", f"{path}:2"]
    assert read_configurations(path, index=2)[0].source == f"{path}:2"
    isolated, rest = split_isolated_atoms(c)
    assert [x.energy for x in isolated] == [3.0] and [x.energy for x in rest] == [1.0, 2.0]


# ----------------------------------------------------------------------------------------------
# Errors.
# ----------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    missing = str(tmp_path / "nope.xyz")
    with pytest.raises(FileNotFoundError, match="nope.xyz"):
        read_configurations(missing)


def test_unreadable_file(tmp_path):
    path = write_text(tmp_path, "this is not\nan xyz file\n", name="bad.xyz")
    with pytest.raises(DataError, match="bad.xyz") as err:
        read_configurations(path)
    assert isinstance(err.value, ValueError)


def test_missing_required_key_lists_present_keys(tmp_path):
    path = write_text(tmp_path, f"""
        1
        {CELL} Properties=species:S:1:pos:R:3:REF_forces:R:3 energy=1.0 REF_energy=-7.0
        Cu 0.0 0.0 0.0 0.0 0.0 0.0
        1
        {CELL} Properties=species:S:1:pos:R:3:REF_forces:R:3 REF_energy=-7.0
        Cu 0.0 0.0 0.0 0.0 0.0 0.0
        """)
    with pytest.raises(DataError) as err:
        read_configurations(path, require=("energy",))
    msg = str(err.value)
    assert f"{path}:1" in msg and "'energy'" in msg and "REF_energy" in msg
    with pytest.raises(DataError) as err:
        read_configurations(path, require=("forces",))
    msg = str(err.value)
    assert f"{path}:0" in msg and "'forces'" in msg and "REF_forces" in msg
    with pytest.raises(DataError, match="stress"):
        read_configurations(path, require=("stress",))
    # Without require, a missing label is simply absent.
    assert read_configurations(path)[1].energy is None


@pytest.mark.parametrize(
    "line, match",
    [
        ("energy=nan", "'energy' contains NaN"),
        ("REF_energy=inf", "'REF_energy' contains NaN"),
        ('stress="0 0 0 0 nan 0 0 0 0"', "'stress' contains NaN"),
        ("config_weight=nan", "'config_weight' contains NaN"),
        ("config_weight=-1", "must be >= 0"),
    ],
)
def test_non_finite_labels(tmp_path, line, match):
    path = write_text(tmp_path, f"""
        1
        {CELL} Properties=species:S:1:pos:R:3 energy=0.5
        Cu 0.0 0.0 0.0
        1
        {CELL} Properties=species:S:1:pos:R:3 {line}
        Cu 0.0 0.0 0.0
        """)
    keys = DataKeys(energy="REF_energy") if "REF_energy" in line else DataKeys()
    with pytest.raises(DataError, match=match) as err:
        read_configurations(path, keys)
    assert f"{path}:1" in str(err.value)


def test_nan_forces_positions_and_bad_shapes(tmp_path):
    path = write_text(tmp_path, f"""
        2
        {CELL} Properties=species:S:1:pos:R:3:forces:R:3
        Cu 0.0 0.0 0.0 0.0 nan 0.0
        Cu 1.0 0.0 0.0 0.0 0.0 0.0
        """, name="f.xyz")
    with pytest.raises(DataError, match=r"f\.xyz:0: label 'forces' contains NaN"):
        read_configurations(path)
    path = write_text(tmp_path, f"""
        2
        {CELL} Properties=species:S:1:pos:R:3
        Cu 0.0 0.0 0.0
        Cu nan 0.0 0.0
        """, name="p.xyz")
    with pytest.raises(DataError, match=r"p\.xyz:0: positions of atoms \[1\]"):
        read_configurations(path)
    path = write_text(tmp_path, f"""
        2
        {CELL} Properties=species:S:1:pos:R:3:force:R:2
        Cu 0.0 0.0 0.0 1.0 1.0
        Cu 1.0 0.0 0.0 1.0 1.0
        """, name="s.xyz")
    with pytest.raises(DataError, match=r"s\.xyz:0: forces under key 'force' have shape \(2, 2\)"):
        read_configurations(path, DataKeys(forces="force"))
    path = write_text(tmp_path, """
        1
        Properties=species:S:1:pos:R:3 pbc="F F F" REF_virial="1 0 0 0 1 0 0 0 1"
        Cu 0.0 0.0 0.0
        """, name="v.xyz")
    with pytest.raises(DataError, match=r"v\.xyz:0: a virial .* needs a periodic cell"):
        read_configurations(path, DataKeys(virial="REF_virial"))


# ----------------------------------------------------------------------------------------------
# E0.
# ----------------------------------------------------------------------------------------------


def _atom(symbol_z, energy, config_type="isolated_atom", source="iso"):
    return Configuration(positions=[[0, 0, 0]], numbers=[symbol_z], cell=np.zeros((3, 3)), pbc=False,
                         energy=energy, config_type=config_type, source=source)


def test_e0_from_isolated(emt_configs, cuau_species):
    isolated, rest = split_isolated_atoms(emt_configs)
    assert len(isolated) == 2 and len(rest) == 20
    e0 = e0_from_isolated(isolated, cuau_species)
    np.testing.assert_allclose(e0, [3.51, 3.80], atol=1e-12)  # EMT's isolated Cu and Au
    np.testing.assert_allclose(resolve_e0("isolated", cuau_species, rest, isolated), e0)
    # Order follows the species map.
    np.testing.assert_allclose(e0_from_isolated(isolated, SpeciesMap.from_symbols(["Au", "Cu"])), e0[::-1])
    # Agreeing duplicates are fine; disagreeing ones are an error naming the element.
    e0_from_isolated(isolated + [_atom(29, 3.51 + 1e-9)], cuau_species)
    with pytest.raises(DataError, match="isolated-atom energies of Cu disagree"):
        e0_from_isolated(isolated + [_atom(29, 3.0, source="b.xyz:4")], cuau_species)
    with pytest.raises(DataError, match="no isolated-atom configuration for element.*Ni"):
        e0_from_isolated(isolated, SpeciesMap.from_symbols(["Cu", "Au", "Ni"]))
    with pytest.raises(DataError, match="least_squares"):
        resolve_e0("isolated", cuau_species, rest, [])
    with pytest.raises(DataError, match="has no energy"):
        e0_from_isolated([_atom(29, None), _atom(79, 1.0)], cuau_species)


def test_e0_dict_and_zero(cuau_species):
    np.testing.assert_array_equal(resolve_e0({"Au": -2.0, "Cu": -1.0, "Ni": 5.0}, cuau_species), [-1.0, -2.0])
    np.testing.assert_array_equal(resolve_e0("zero", cuau_species), [0.0, 0.0])
    with pytest.raises(ValueError, match="no energy for element.*Au"):
        resolve_e0({"Cu": -1.0}, cuau_species)
    with pytest.raises(ValueError, match="'cu'"):
        resolve_e0({"cu": -1.0, "Cu": 1.0, "Au": 1.0}, cuau_species)
    with pytest.raises(ValueError, match="e0 for Au must be finite"):
        resolve_e0({"Cu": -1.0, "Au": float("nan")}, cuau_species)
    with pytest.raises(ValueError, match="got 'median'"):
        resolve_e0("median", cuau_species)


def test_e0_least_squares_exact_on_linear_energies(cuau_species):
    rng = np.random.default_rng(3)
    true = np.array([-3.7, -1.25])
    configs = []
    for k in range(12):
        n = int(rng.integers(2, 9))
        numbers = rng.choice([29, 79], size=n)
        counts = np.array([np.sum(numbers == 29), np.sum(numbers == 79)])
        configs.append(Configuration(positions=rng.normal(size=(n, 3)), numbers=numbers, cell=np.eye(3) * 9,
                                     pbc=True, energy=float(counts @ true), source=f"lin:{k}"))
    configs.append(Configuration(positions=[[0, 0, 0]], numbers=[29], cell=np.eye(3) * 9, pbc=True))  # no energy
    np.testing.assert_allclose(e0_least_squares(configs, cuau_species), true, rtol=0, atol=1e-10)
    np.testing.assert_allclose(resolve_e0("least_squares", cuau_species, configs, []), true, atol=1e-10)


def test_e0_least_squares_warns_when_undetermined(cuau_species):
    # Every configuration is CuAu: only E0(Cu) + E0(Au) is determined.
    same = [Configuration(positions=np.arange(6.0 * m).reshape(-1, 3), numbers=[29, 79] * m, cell=np.eye(3) * 9,
                          pbc=True, energy=-5.0 * m) for m in (1, 2, 3)]
    with pytest.warns(E0Warning, match="collinear") as rec:
        e0 = e0_least_squares(same, cuau_species)
    assert "Cu" in str(rec[0].message) and "Au" in str(rec[0].message)
    assert e0.sum() == pytest.approx(-5.0)
    # Au never appears.
    only_cu = [Configuration(positions=np.zeros((m, 3)) + np.arange(m)[:, None], numbers=[29] * m,
                             cell=np.eye(3) * 9, pbc=True, energy=-2.0 * m) for m in (1, 2)]
    with pytest.warns(E0Warning, match="Au appear in no configuration"):
        e0 = e0_least_squares(only_cu, cuau_species)
    np.testing.assert_allclose(e0, [-2.0, 0.0], atol=1e-12)
    with pytest.raises(DataError, match="none of the given ones has one"):
        e0_least_squares([Configuration(positions=[[0, 0, 0]], numbers=[29], cell=np.zeros((3, 3)), pbc=False)],
                         cuau_species)


# ----------------------------------------------------------------------------------------------
# Synthetic EMT data.
# ----------------------------------------------------------------------------------------------


def test_synthetic_dataset_is_deterministic_and_fast():
    t0 = time.perf_counter()
    a = make_emt_dataset(seed=7)
    elapsed = time.perf_counter() - t0
    assert elapsed < 10.0
    b = make_emt_dataset(seed=7)
    c = make_emt_dataset(seed=8)
    assert len(a) == 62
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.positions, y.positions)
        np.testing.assert_array_equal(x.numbers, y.numbers)
        assert x.energy == y.energy and x.config_type == y.config_type
    assert not np.allclose(a[0].positions, c[0].positions)


def test_synthetic_dataset_contents(emt_configs):
    from ase import Atoms
    from ase.calculators.emt import EMT

    isolated, bulk = split_isolated_atoms(emt_configs)
    assert sorted(int(c.numbers[0]) for c in isolated) == [29, 79]
    assert all(c.config_type == "isolated_atom" and not c.pbc.any() for c in isolated)
    assert {c.config_type for c in bulk} == {"bulk_300K", "bulk_600K", "bulk_900K"}
    assert all(c.pbc.all() and c.stress is not None for c in bulk)
    assert all(4 <= c.n_atoms <= 32 for c in bulk)
    assert {29, 79} <= set(np.concatenate([c.numbers for c in bulk]).tolist())
    # Some cell is narrower than a 5 Å cutoff in some direction, so it needs periodic images.
    widths = [c.volume / np.linalg.norm(np.cross(c.cell[[1, 2, 0]], c.cell[[2, 0, 1]]), axis=1).max() for c in bulk]
    assert min(widths) < 2.5
    # Strains include shear: some cells are not orthogonal.
    assert any(abs(c.cell[0] @ c.cell[1]) > 1e-3 for c in bulk)
    # Labels are EMT's.
    for c in emt_configs[::5] + isolated:
        atoms = Atoms(numbers=c.numbers, positions=c.positions, cell=c.cell, pbc=c.pbc)
        atoms.calc = EMT()
        assert c.energy == pytest.approx(atoms.get_potential_energy(), abs=1e-10)
        np.testing.assert_allclose(c.forces, atoms.get_forces(), atol=1e-10)
        if c.stress is not None:
            np.testing.assert_allclose(c.stress, atoms.get_stress(voigt=False), atol=1e-10)
        assert np.all(np.isfinite(c.forces)) and np.abs(c.forces).max() < 20.0


def test_synthetic_splits_are_disjoint():
    train, test = make_emt_splits(n_train=10, n_test=5, seed=1)
    isolated, train_bulk = split_isolated_atoms(train)
    assert len(isolated) == 2 and len(train_bulk) == 10 and len(test) == 5
    assert not split_isolated_atoms(test)[0]
    assert not {c.source for c in train_bulk} & {c.source for c in test}
    train2, test2 = make_emt_splits(n_train=10, n_test=5, seed=1)
    assert [c.source for c in test2] == [c.source for c in test]
    assert [c.energy for c in train2] == [c.energy for c in train]


def test_molecule_md_dataset_is_emt_labelled_and_hotter_is_wider():
    from ase import Atoms
    from ase.calculators.emt import EMT

    from jace.data.synthetic import make_molecule_md_dataset

    cold = make_molecule_md_dataset("CH3COCH3", n_configs=12, temperature=100.0, seed=0, stride=10)
    hot = make_molecule_md_dataset("CH3COCH3", n_configs=12, temperature=1200.0, seed=0, stride=10)
    assert len(cold) == 12 and all(c.config_type == "md_100K" and not c.pbc.any() for c in cold)
    assert sorted(set(cold[0].numbers.tolist())) == [1, 6, 8]
    for c in cold[::4]:
        atoms = Atoms(numbers=c.numbers, positions=c.positions, pbc=False)
        atoms.calc = EMT()
        assert c.energy == pytest.approx(atoms.get_potential_energy(), abs=1e-10)
        np.testing.assert_allclose(c.forces, atoms.get_forces(), atol=1e-10)
    # frames differ, and a hotter run explores a wider energy range
    assert len({round(c.energy, 8) for c in cold}) == 12
    assert np.std([c.energy for c in hot]) > np.std([c.energy for c in cold])
    again = make_molecule_md_dataset("CH3COCH3", n_configs=3, temperature=100.0, seed=0, stride=10)
    np.testing.assert_array_equal(again[2].positions, cold[2].positions)
    with pytest.raises(ValueError, match="does not know the molecule"):
        make_molecule_md_dataset("not-a-molecule", n_configs=1)
