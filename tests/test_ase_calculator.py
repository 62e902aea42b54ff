"""The ASE calculator: equal to the model's own predictions, consistent with finite differences, compiled a
handful of times in MD, float32 ≈ float64, relaxations converge, and bad input gives clear errors."""

import jax
import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from physics_helpers import random_cluster, random_crystal

from jace.data.graph import Bucket, graph_from_configuration, pad_graph
from jace.interfaces.ase_calculator import JaceCalculator, StructureError, choose_capacity
from jace.models.design import FitSpec, LinearACESpec, RadialSpec
from jace.models.io import ModelFileError, save_model
from jace.models.linear_ace import fit_linear_ace
from jace.models.multi_ace import MultiACEModel, preset

SPEC = LinearACESpec(
    ("Cu", "Au"), cutoff=4.5, radial=RadialSpec(n_max=6), l_max=2, correlation=2, max_degree=(8.0, 7.0)
)
BUCKET = Bucket(16, 1600, 2)


@pytest.fixture(scope="module")
def fitted(emt_configs):
    """Linear ACE fitted to EMT Cu–Au in a few seconds: a smooth, physically sensible potential."""
    iso = [c for c in emt_configs if c.config_type == "isolated_atom"]
    train = [c for c in emt_configs if c.config_type != "isolated_atom"]
    model, _ = fit_linear_ace(SPEC, FitSpec(), train, iso)
    return model


@pytest.fixture(scope="module")
def calc(fitted):
    """One float64 calculator shared by the tests that do not count compilations (compiled once per shape)."""
    return JaceCalculator(fitted)


@pytest.fixture(scope="module")
def multi_ace(tmp_path_factory):
    """A one-layer multi-ACE model with random O(1) parameters, saved to a file."""
    spec = preset("ace", ("Cu", "Au"), cutoff=4.0, l_max=1, correlation=(2,), max_degree=(6.0, 5.0),
                  radial=RadialSpec(kind="bessel", n_max=3, envelope_p=5))
    model = MultiACEModel(spec, e0=[-3.5, -2.1], scale=1.3, shift=0.2, avg_num_neighbors=8.0)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), _padded(model, _structures()[1]))
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    leaves = [x + 0.3 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
    model = model.with_params(jax.tree_util.tree_unflatten(tree, leaves))
    path = tmp_path_factory.mktemp("aseh") / "multi_ace.jace"
    save_model(path, model)
    return model, path


def _structures():
    """(molecule, skewed periodic cell that needs several images at a 4.5 Å cutoff), as Configurations."""
    rng = np.random.default_rng(7)
    return random_cluster(rng, 5, min_dist=2.0), random_crystal(rng, skew=0.3, rattle=0.1)


def _atoms(cfg):
    return Atoms(numbers=cfg.numbers, positions=cfg.positions, cell=cfg.cell, pbc=cfg.pbc)


def _padded(model, cfg):
    return pad_graph(graph_from_configuration(cfg, model.cutoff, model.species), BUCKET)


def _check_equal_to_model(model, calc, structures):
    for cfg in structures:
        ref = model.predict_graph(_padded(model, cfg))
        atoms = _atoms(cfg)
        atoms.calc = calc
        n = len(atoms)
        e = atoms.get_potential_energy()
        assert abs(e - float(ref.energy[0])) < 1e-10 * max(1.0, abs(e))
        assert atoms.get_potential_energy(force_consistent=True) == e  # free_energy
        np.testing.assert_allclose(atoms.get_forces(), np.asarray(ref.forces[:n]), atol=1e-10)
        np.testing.assert_allclose(atoms.get_potential_energies(), np.asarray(ref.site_energies[:n]), atol=1e-10)
        assert np.abs(atoms.get_forces()).max() > 1e-3  # a real test, not zeros against zeros
        if cfg.pbc.all():
            s = np.asarray(ref.stress[0])
            voigt = [s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]]
            np.testing.assert_allclose(atoms.get_stress(), voigt, atol=1e-10)
            np.testing.assert_allclose(atoms.get_stress(voigt=False), s, atol=1e-10)
            assert np.abs(voigt).max() > 1e-4
            # the cell is small and skewed: some atoms see their own periodic images
            g = graph_from_configuration(cfg, model.cutoff, model.species)
            assert np.any((g.senders == g.receivers) & np.any(g.edges["shifts"] != 0, axis=1))


def test_calculator_equals_linear_ace_predict(fitted, calc):
    _check_equal_to_model(fitted, calc, _structures())


def test_calculator_from_a_saved_multi_ace_file_equals_the_model(multi_ace):
    model, path = multi_ace
    _check_equal_to_model(model, JaceCalculator(str(path)), _structures()[1:])  # the periodic one
    assert JaceCalculator(path).potential.cutoff == model.cutoff  # a pathlib.Path works too


def test_forces_and_stress_equal_finite_differences(calc):
    mol, crystal = (_atoms(c) for c in _structures())
    for atoms in (mol, crystal):
        atoms.calc = calc
        num = calculate_numerical_forces(atoms, eps=1e-4)
        np.testing.assert_allclose(atoms.get_forces(), num, atol=1e-6)
    num_stress = calculate_numerical_stress(crystal, eps=1e-6)
    np.testing.assert_allclose(crystal.get_stress(), num_stress, atol=1e-8)
    assert np.abs(num_stress).max() > 1e-3


def test_md_compiles_a_handful_of_times(fitted):
    from ase.md.velocitydistribution import thermalize_momenta
    from ase.md.verlet import VelocityVerlet

    atoms = bulk("Cu", "fcc", a=3.6).repeat((2, 2, 2))
    atoms.symbols[[1, 6]] = "Au"
    atoms.rattle(0.05, seed=2)
    calc = JaceCalculator(fitted)
    atoms.calc = calc
    thermalize_momenta(atoms, temperature_K=2000, rng=np.random.default_rng(0))
    start = atoms.positions.copy()
    edges = []
    dyn = VelocityVerlet(atoms, 2 * units.fs)
    dyn.attach(lambda: edges.append(calc.sizes[1]), interval=1)
    dyn.run(200)
    assert len(set(edges)) > 1, "the neighbour count never changed: the test does not test growth"
    assert np.abs(atoms.positions - start).max() > 0.2
    assert 1 <= calc.n_compilations <= 3, calc.n_compilations
    # the same structure again: no new compilation
    n = calc.n_compilations
    for _ in range(3):
        calc.reset()
        atoms.get_forces()
    assert calc.n_compilations == n


def test_capacities_grow_geometrically_and_are_reused(fitted):
    calc = JaceCalculator(fitted)
    caps = []
    for rep in [(1, 1, 1), (2, 2, 1), (1, 1, 1), (2, 2, 1)]:
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(rep)
        atoms.calc = calc
        atoms.get_forces()
        caps.append(calc.capacity)
        assert calc.capacity[0] >= len(atoms) + 1 and calc.capacity[1] >= calc.sizes[1]
    # each distinct capacity compiled exactly once; a capacity seen before is reused
    assert calc.n_compilations == len(set(caps)) < len(caps)


def test_choose_capacity_ladder():
    cap, caps = 0, []
    for needed in range(1, 20_000, 7):
        new = choose_capacity(cap, needed)
        assert new >= needed and new % 8 == 0
        assert new <= max(16, 1.1 * 1.2 * needed + 8)  # never wastefully large
        cap = new
        caps.append(cap)
    assert len(set(caps)) <= 45  # geometric: about log(20000 / 8) / log(1.2) = 43 rungs
    # the first structure gets the tightest rung: 5,688 edges of a 64-atom C cell → 6,144, not 8,520
    assert choose_capacity(0, 5688) == 6144
    # once outgrown, the new capacity leaves room: a size fluctuating around it keeps one capacity
    cap = choose_capacity(choose_capacity(0, 1000), 1200)
    assert cap >= 1.1 * 1200
    assert all(choose_capacity(cap, n) == cap for n in range(1150, 1320))
    # a much smaller structure moves down the ladder
    assert choose_capacity(cap, 10) < cap


def test_float32_agrees_with_float64(fitted, calc):
    atoms = _atoms(_structures()[1])
    c64, c32 = calc, JaceCalculator(fitted, dtype="float32")
    assert c32.dtype == np.float32
    e64, f64, s64 = c64.get_potential_energy(atoms), c64.get_forces(atoms), c64.get_stress(atoms)
    e32, f32, s32 = c32.get_potential_energy(atoms), c32.get_forces(atoms), c32.get_stress(atoms)
    assert abs(e32 - e64) < 1e-5 * max(1.0, abs(e64))
    scale = np.abs(f64).max()
    np.testing.assert_allclose(f32, f64, atol=1e-4 * scale)
    np.testing.assert_allclose(s32, s64, atol=1e-4 * np.abs(s64).max())
    assert f32.dtype == np.float64  # results are returned as float64 arrays either way
    assert np.abs(f32 - f64).max() > 0  # but computed in float32


def test_float64_without_x64_is_a_clear_error(fitted):
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(ValueError, match="jax_enable_x64"):
            JaceCalculator(fitted, dtype="float64")
    finally:
        jax.config.update("jax_enable_x64", True)
    with pytest.raises(ValueError, match="float32' or 'float64"):
        JaceCalculator(fitted, dtype="float16")


def test_bfgs_relaxation_converges(calc):
    from ase.optimize import BFGS

    atoms = _atoms(_structures()[1])
    atoms.rattle(0.1, seed=4)
    atoms.calc = calc
    e0 = atoms.get_potential_energy()
    assert np.linalg.norm(atoms.get_forces(), axis=1).max() > 0.1
    assert BFGS(atoms, logfile=None).run(fmax=0.005, steps=300)
    assert np.linalg.norm(atoms.get_forces(), axis=1).max() < 0.01
    assert atoms.get_potential_energy() < e0


# --------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------


def _evaluate(calc, atoms):
    atoms.calc = calc
    return atoms.get_potential_energy()


@pytest.mark.parametrize(
    "atoms, match",
    [
        (Atoms("CuNiAu", positions=[[0, 0, 0], [2.5, 0, 0], [0, 2.5, 0]]),
         r"atom 1 is element Ni .*known elements: Cu, Au"),
        (Atoms("Cu3", positions=[[0, 0, 0], [2.5, 0, 0], [1e-4, 0, 0]]), r"atoms 0 and 2 are 0\.0001 Å apart"),
        (Atoms("Cu2", positions=[[0, 0, 0], [3.6, 0.0, 0.0]], cell=np.eye(3) * 3.6, pbc=True), r"periodic image"),
        (Atoms(), r"empty structure"),
        (Atoms("Cu2", positions=[[0, 0, 0], [1, 1, 1]], cell=[[3, 0, 0], [3, 0, 0], [0, 0, 3]], pbc=True),
         r"degenerate cell of volume 0"),
        (Atoms("Cu", cell=np.eye(3) * 0.1, pbc=True), r"neighbours per atom"),
        (Atoms("Cu2", positions=[[0, 0, 0], [np.nan, 0, 0]]), r"atoms \[1\] are NaN"),
    ],
)
def test_bad_structures_give_clear_errors(calc, atoms, match):
    with pytest.raises(StructureError, match=match) as info:
        _evaluate(calc, atoms)
    assert isinstance(info.value, ValueError)


def test_close_but_not_overlapping_atoms_give_finite_results(calc):
    atoms = _atoms(_structures()[0])
    atoms.positions[1] = atoms.positions[0] + [0.0, 0.01, 0.0]
    atoms.calc = calc
    assert np.isfinite(atoms.get_potential_energy()) and np.all(np.isfinite(atoms.get_forces()))


def test_stress_of_a_molecule_is_not_implemented(calc):
    atoms = _atoms(_structures()[0])
    atoms.calc = calc
    with pytest.raises(PropertyNotImplementedError, match="periodic"):
        atoms.get_stress()


def test_a_file_that_is_not_a_jace_model_is_a_clear_error(tmp_path):
    bad = tmp_path / "aseh_not_a_model.jace"
    bad.write_text("this is not a model\n")
    with pytest.raises(ModelFileError, match="aseh_not_a_model.jace.*not a jace model"):
        JaceCalculator(bad)
    with pytest.raises(ModelFileError, match="not found"):
        JaceCalculator(tmp_path / "aseh_missing.jace")


def test_calculator_from_a_saved_grace_file_equals_the_model(tmp_path):
    """GRACE models (two layers: messages between layers) work in the calculator like every other model."""
    from jace.models.grace import GraceModel
    from jace.models.grace import preset as grace_preset

    spec = grace_preset("grace-2l", ("Cu", "Au"), cutoff=4.0, radial=RadialSpec(kind="chebyshev", n_max=4, envelope_p=5),
                        radial_mlp=(8,), embedding_size=3, mlp_densities=2, readout_hidden=(4,), channels=(3, 3),
                        l_max=(2, 1), correlation=(2, 2), message_l_max=1, message_channels=3)
    model = GraceModel(spec, e0=[-3.5, -2.1], scale=1.3, shift=0.2, avg_num_neighbors=6.0)
    model = model.with_params(jax.jit(model.init)(jax.random.PRNGKey(0), _padded(model, _structures()[1])))
    path = tmp_path / "grace.jace"
    save_model(path, model)
    _check_equal_to_model(model, JaceCalculator(str(path)), _structures())
