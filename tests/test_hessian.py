"""Hessians of jace models (float64): symmetric, equal to finite differences of forces (periodic images
included), molecular frequencies equal to ASE's finite-difference Vibrations, Γ-phonons with three zero
acoustic modes."""

import jax
import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk
from physics_helpers import random_cluster, random_crystal

from jace.data.graph import Bucket, graph_from_configuration, pad_graph
from jace.interfaces.ase_calculator import JaceCalculator, StructureError
from jace.interfaces.hessian import gamma_phonons, hessian, vibrations
from jace.models.design import FitSpec, LinearACESpec, RadialSpec
from jace.models.linear_ace import fit_linear_ace
from jace.models.multi_ace import MultiACEModel, preset

SPEC = LinearACESpec(
    ("Cu", "Au"), cutoff=4.5, radial=RadialSpec(n_max=6), l_max=2, correlation=2, max_degree=(8.0, 7.0)
)


@pytest.fixture(scope="module")
def fitted(emt_configs):
    """Linear ACE fitted to EMT Cu–Au: smooth, with physically sensible minima."""
    iso = [c for c in emt_configs if c.config_type == "isolated_atom"]
    train = [c for c in emt_configs if c.config_type != "isolated_atom"]
    return fit_linear_ace(SPEC, FitSpec(), train, iso)[0]


@pytest.fixture(scope="module")
def calc(fitted):
    return JaceCalculator(fitted)


@pytest.fixture(scope="module")
def molecule(calc):
    """A Cu/Au cluster of 4 atoms relaxed to a minimum (fmax 1e-6 eV/Å)."""
    from ase.optimize import BFGS

    c = random_cluster(np.random.default_rng(0), 4, min_dist=2.2, box=3.5)
    atoms = Atoms(numbers=c.numbers, positions=c.positions)
    atoms.calc = calc
    assert BFGS(atoms, logfile=None).run(fmax=1e-6, steps=500)
    atoms.calc = None
    return atoms


def _crystal(seed=5):
    c = random_crystal(np.random.default_rng(seed), skew=0.3, rattle=0.1)
    return Atoms(numbers=c.numbers, positions=c.positions, cell=c.cell, pbc=True)


def _fd_hessian(calc, atoms, delta=1e-4):
    """-(F(r + δ e_k) - F(r - δ e_k)) / 2δ, column by column (central differences), eV/Å²."""
    atoms = atoms.copy()
    atoms.calc = calc
    x0 = atoms.positions.copy()
    cols = []
    for k in range(3 * len(atoms)):
        f = []
        for sign in (1, -1):
            x = x0.copy()
            x.reshape(-1)[k] += sign * delta
            atoms.positions = x
            f.append(atoms.get_forces().reshape(-1))
        cols.append(-(f[0] - f[1]) / (2 * delta))
    return np.array(cols).T


def test_hessian_symmetric_and_equal_to_finite_differences(fitted, calc, molecule):
    for atoms in (molecule, _crystal()):
        h = hessian(fitted, atoms, symmetrize=False)
        n = len(atoms)
        assert h.shape == (3 * n, 3 * n)
        scale = np.abs(h).max()
        assert scale > 0.1
        np.testing.assert_allclose(h, h.T, atol=1e-12 * scale)
        np.testing.assert_allclose(h, _fd_hessian(calc, atoms), atol=1e-6 * scale)
        if atoms.pbc.all():
            # uniform translations (images moving with their atoms) cost no energy: H · t = 0
            t = np.tile(np.eye(3), (n, 1))
            np.testing.assert_allclose(h @ t, 0.0, atol=1e-10 * scale)


def test_batched_hessian_and_calculator_hessian_agree(fitted, calc):
    atoms = _crystal()
    full = hessian(fitted, atoms, batch_size=None)
    np.testing.assert_allclose(hessian(fitted, atoms, batch_size=5), full, atol=1e-12 * np.abs(full).max())
    np.testing.assert_allclose(calc.get_hessian(atoms), full, atol=0)
    atoms.calc = calc
    atoms.get_forces()
    np.testing.assert_allclose(calc.get_hessian(), full, atol=0)  # the structure of the last calculation


def test_molecular_frequencies_equal_ase_vibrations(fitted, calc, molecule, tmp_path):
    from ase.vibrations import Vibrations

    ours = vibrations(fitted, molecule)
    atoms = molecule.copy()
    atoms.calc = calc
    fd = Vibrations(atoms, name=str(tmp_path / "aseh_vib"), delta=1e-3, nfree=4)
    fd.run()
    ref = fd.get_vibrations()
    scale = np.abs(ours.get_hessian_2d()).max()
    np.testing.assert_allclose(ours.get_hessian_2d(), ref.get_hessian_2d(), atol=1e-6 * scale)
    f, f_ref = ours.get_frequencies(), ref.get_frequencies()
    assert f.dtype == complex and f.shape == (12,)
    # six zero modes (translations and rotations at a minimum), six real vibrations
    assert np.all(np.abs(f[:6]) < 0.1) and np.all(np.abs(f_ref[:6]) < 0.1)
    np.testing.assert_allclose(f[6:], f_ref[6:], rtol=1e-6)
    assert np.all(f[6:].real > 20.0) and np.all(f[6:].imag == 0)
    np.testing.assert_allclose(ours.get_energies(), f * units.invcm, rtol=1e-12, atol=1e-15)  # ħω in eV
    assert calc.get_vibrations(molecule).get_frequencies()[6:] == pytest.approx(f[6:], rel=1e-12)


def test_gamma_phonons_of_a_cell(fitted, calc, tmp_path):
    from ase.vibrations import Vibrations

    # L1_2 Cu3Au: every atom is a centre of inversion, so forces vanish at any lattice constant
    atoms = bulk("Cu", "fcc", a=3.75, cubic=True)
    atoms.symbols[0] = "Au"
    atoms.calc = calc
    assert np.abs(atoms.get_forces()).max() < 1e-10
    ph = gamma_phonons(fitted, atoms)
    f = ph.get_frequencies()
    order = np.argsort(np.abs(f))
    assert np.all(np.abs(f[order[:3]]) < 1e-3), f  # the three acoustic modes
    assert np.all(np.abs(f[order[3:]]) > 20.0) and np.all(f[order[3:]].imag == 0), f  # optical, stable
    # their displacement patterns are uniform translations: every atom moves by the same vector
    modes = ph.get_modes(all_atoms=True)[order[:3]]  # [3, n_atoms, 3]
    np.testing.assert_allclose(modes, np.broadcast_to(modes[:, :1], modes.shape), atol=1e-6 * np.abs(modes).max())
    assert np.linalg.matrix_rank(modes[:, 0], tol=1e-3 * np.abs(modes).max()) == 3
    # finite differences in the periodic cell (each displaced atom drags its images) agree
    fd = Vibrations(atoms, name=str(tmp_path / "aseh_phonon"), delta=1e-3, nfree=4)
    fd.run()
    np.testing.assert_allclose(fd.get_frequencies()[order[3:]], f[order[3:]], rtol=1e-6)


def test_multilayer_hessian_equals_finite_differences():
    """Two message-passing layers (e3nn) on a small skewed cell: second derivatives through every layer,
    periodic images included, against mixed central differences of the energy (Richardson-extrapolated)."""
    from jace.data.io import configuration_from_atoms
    from jace.models.potential import as_potential

    spec = preset("nequip", ("Cu", "Au"), cutoff=4.0, num_layers=2, channels=2, l_max=1, hidden_l_max=1,
                  radial_mlp=(4,), radial=RadialSpec(kind="bessel", n_max=3, envelope_p=5))
    model = MultiACEModel(spec, e0=[-3.5, -2.1], scale=1.3, shift=0.2, avg_num_neighbors=8.0)
    atoms = _crystal(seed=9)[:6]
    graph = pad_graph(graph_from_configuration(configuration_from_atoms(atoms), 4.0, model.species), Bucket(8, 512, 2))
    assert np.any(graph.edges["shifts"] != 0)
    model = model.with_params(jax.jit(model.init)(jax.random.PRNGKey(0), graph))
    h = hessian(model, atoms, symmetrize=False)
    scale = np.abs(h).max()
    assert scale > 1e-2
    np.testing.assert_allclose(h, h.T, atol=1e-12 * scale)

    pot = as_potential(model)
    energy_fn = jax.jit(pot.energy)
    x0, pad = np.asarray(graph.nodes["positions"][:6]), np.asarray(graph.nodes["positions"][6:])

    def energy(x):
        g = graph._replace(nodes={**graph.nodes, "positions": np.concatenate([x, pad])})
        return float(energy_fn(pot.params, g)[0])

    def mixed(u, v, d):  # ∂²E/∂u∂v by central differences with step d
        return sum(s * t * energy(x0 + s * d * u + t * d * v) for s in (1, -1) for t in (1, -1)) / (4 * d * d)

    rng = np.random.default_rng(0)
    for _ in range(4):
        u, v = rng.normal(size=(2, 6, 3))
        fd = (4 * mixed(u, v, 5e-4) - mixed(u, v, 1e-3)) / 3
        assert abs(u.reshape(-1) @ h @ v.reshape(-1) - fd) < 1e-7 * scale * 18, (u.reshape(-1) @ h @ v.reshape(-1), fd)


def test_hessian_bad_input(fitted, molecule):
    bad = molecule.copy()
    bad.positions[2] = bad.positions[0] + 1e-5
    with pytest.raises(StructureError, match="atoms 0 and 2 are"):
        hessian(fitted, bad)
    with pytest.raises(StructureError, match="need periodic boundary conditions"):
        gamma_phonons(fitted, molecule)
    unknown = molecule.copy()
    unknown.symbols[1] = "Ni"
    with pytest.raises(StructureError, match="element Ni"):
        vibrations(fitted, unknown)
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(ValueError, match="float64.*jax_enable_x64"):
            hessian(fitted, molecule)
    finally:
        jax.config.update("jax_enable_x64", True)
