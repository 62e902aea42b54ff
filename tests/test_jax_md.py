"""jace models on JAX-MD: energy, forces and stress equal jace's own (matscipy) results; NVE conserves
energy with an error that shrinks as dt²; Langevin NVT thermalises; neighbour-list overflow is detected
and repaired; small triclinic cells that need several periodic images are handled."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("jax_md")

from jax_md import partition, quantity, simulate, space  # noqa: E402
from physics_helpers import random_crystal  # noqa: E402

from jace.data.configuration import Configuration  # noqa: E402
from jace.data.graph import Bucket, graph_from_configuration, pad_graph  # noqa: E402
from jace.interfaces.jax_md import (  # noqa: E402
    ImageNeighborList,
    from_configuration,
    jace_neighbor_list,
    needs_images,
    neighbor_step,
    perpendicular_widths,
    run_in_chunks,
    update_or_reallocate,
)

pytestmark = pytest.mark.filterwarnings("ignore:scatter inputs have incompatible types")  # inside jax-md, x64

CUTOFF = 4.5
A_CU = 3.61


@pytest.fixture(scope="module")
def model():
    """A small linear ACE fitted in ~3 s to EMT Cu–Au data: smooth and physically sensible."""
    from jace.data.synthetic import make_emt_dataset
    from jace.models.design import FitSpec, LinearACESpec, RadialSpec
    from jace.models.linear_ace import fit_linear_ace

    data = make_emt_dataset(n_configs=21, seed=3)
    iso = [c for c in data if c.config_type == "isolated_atom"]
    train = [c for c in data if c.config_type != "isolated_atom"]
    spec = LinearACESpec(
        elements=("Cu", "Au"), cutoff=CUTOFF, radial=RadialSpec(n_max=5), l_max=2, correlation=2, max_degree=(7.0, 7.0)
    )
    fitted, _ = fit_linear_ace(spec, FitSpec(lam=1e-3), train, iso)
    return fitted


def _bulk(rng, repeat=3, rattle=0.05, shear=0.03, au_fraction=0.25):
    """A rattled, sheared Cu–Au fcc supercell (108 atoms for repeat 3), widths well above 2 × cutoff."""
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=A_CU, cubic=True).repeat(repeat)
    numbers = np.where(rng.uniform(size=len(atoms)) < au_fraction, 79, 29)
    eps = shear * rng.uniform(-1, 1, (3, 3))
    cell = atoms.cell[:] @ (np.eye(3) + eps)
    pos = atoms.get_scaled_positions() @ cell + rng.normal(0, rattle, (len(atoms), 3))
    return Configuration(pos, numbers, cell, [True] * 3, source="bulk")


REF_BUCKET = Bucket(112, 8192, 2)  # every reference structure of a model in one shape: one compile


def _reference(model, config):
    """jace's own result from a matscipy neighbour list: energy, forces [N, 3], stress [3, 3] (ASE sign)."""
    g = graph_from_configuration(config, model.cutoff, model.species)
    out = model.predict_graph(pad_graph(g, REF_BUCKET))
    return float(out.energy[0]), np.asarray(out.forces[: config.n_atoms]), np.asarray(out.stress[0])


@functools.lru_cache(maxsize=None)
def _efs_fn(energy_fn, periodic):
    """jit(R, nbrs, box) -> energy, forces (−∇E) and ASE stress (−quantity.stress) through JAX-MD."""

    def efs(R, nbrs, box):
        kw = {"box": box} if periodic else {}
        e, g = jax.value_and_grad(energy_fn)(R, neighbor=nbrs, **kw)
        s = -quantity.stress(energy_fn, R, box, neighbor=nbrs) if periodic else jnp.zeros((3, 3))
        return e, -g, s

    return jax.jit(efs)


def _check_against_reference(model, config, system, tol=1e-10, min_force=1e-3):
    nbrs = system.neighbor_fn.allocate(system.positions)
    e, f, s = _efs_fn(system.energy_fn, system.box is not None)(system.positions, nbrs, system.box)
    e0, f0, s0 = _reference(model, config)
    q = system.rotation  # x_here = x_original @ q.T
    assert abs(float(e) - e0) < tol * max(1.0, abs(e0)), (float(e), e0)
    np.testing.assert_allclose(np.asarray(f) @ q, f0, atol=tol)
    if system.box is not None:
        np.testing.assert_allclose(q.T @ np.asarray(s) @ q, s0, atol=tol)
        assert np.abs(s0).max() > 1e-4  # a sheared, rattled cell: the stress comparison is not 0 = 0
    assert np.abs(f0).max() > min_force  # not a trivial 0 = 0 comparison
    return nbrs


@pytest.fixture(scope="module")
def bulk(model):
    """(configuration, system): 108 sheared, rattled Cu–Au atoms, fractional coordinates, OrderedSparse list."""
    config = _bulk(np.random.default_rng(0))
    return config, from_configuration(model, config, dr_threshold=0.5)


def test_periodic_cell_matches_jace(model, bulk):
    config, system = bulk
    assert not system.uses_images and system.fractional_coordinates
    # The box is upper triangular (JAX-MD's fractional cell list) and the positions follow the rotation.
    assert np.allclose(np.tril(np.asarray(system.box), -1), 0.0)
    wrapped = np.mod(config.positions @ np.linalg.inv(config.cell), 1.0) @ config.cell @ system.rotation.T
    np.testing.assert_allclose(np.asarray(system.cartesian()), wrapped, atol=1e-9)
    nbrs = _check_against_reference(model, config, system)
    assert isinstance(nbrs, partition.NeighborList) and nbrs.format is partition.NeighborListFormat.OrderedSparse
    # Cartesian coordinates and the Sparse format (both directions stored) give the same.
    real = from_configuration(model, config, fractional_coordinates=False, format="sparse")
    assert not real.fractional_coordinates
    np.testing.assert_allclose(np.asarray(real.positions), wrapped, atol=1e-9)
    nbrs = _check_against_reference(model, config, real)
    assert nbrs.format is partition.NeighborListFormat.Sparse


def test_cell_list_on_a_sheared_box_finds_every_neighbour(model):
    """Big enough for JAX-MD's fractional cell list (widths ≥ 4 × cutoff): the same pairs as matscipy."""
    from jace.data.neighbours import neighbour_list

    config = _bulk(np.random.default_rng(10), repeat=6, shear=0.04)  # 864 atoms, widths ≈ 21 Å
    system = from_configuration(model, config)
    nbrs = system.neighbor_fn.allocate(system.positions)
    assert nbrs.cell_list_fn is not None and isinstance(nbrs.cell_size, float)
    i, j, _ = neighbour_list(config.positions, config.cell, config.pbc, CUTOFF)
    ref = set(zip(i.tolist(), j.tolist()))
    idx = np.asarray(nbrs.idx)
    idx = idx[:, idx[0] < config.n_atoms]
    assert nbrs.format is partition.NeighborListFormat.OrderedSparse  # each pair once
    found = set(zip(idx[1].tolist(), idx[0].tolist())) | set(zip(idx[0].tolist(), idx[1].tolist()))
    assert 2 * idx.shape[1] == len(found)  # no pair twice
    assert ref <= found and len(found) == len(ref)  # dr_threshold = 0: exactly the pairs within the cutoff


def test_molecule_in_free_space_matches_jace(model):
    from ase.cluster import Icosahedron

    rng = np.random.default_rng(1)
    atoms = Icosahedron("Cu", 2)
    atoms.numbers[rng.permutation(len(atoms))[:4]] = 79
    atoms.positions += rng.normal(0, 0.08, atoms.positions.shape)
    config = Configuration(atoms.positions, atoms.numbers, np.zeros((3, 3)), [False] * 3, source="cluster")
    system = from_configuration(model, config)
    assert system.box is None and not system.fractional_coordinates
    _check_against_reference(model, config, system)


def test_small_triclinic_cells_need_images_and_match_jace(model):
    rng = np.random.default_rng(2)
    config = random_crystal(rng, skew=0.25)  # 8 atoms, skewed, widths ~3 Å: many images at 4.5 Å
    assert perpendicular_widths(config.cell.T).min() < CUTOFF
    system = from_configuration(model, config)
    assert system.uses_images
    nbrs = _check_against_reference(model, config, system)
    assert isinstance(nbrs, ImageNeighborList) and nbrs.max_occupancy < nbrs.n_candidates  # compacted
    again = nbrs.update(system.positions)  # recounted at the same positions: still fits
    assert not bool(again.did_buffer_overflow) and again.max_occupancy == nbrs.max_occupancy
    # The translations cover this cell; shrunk by 40 % through box= they no longer do: NaN, not a wrong number.
    shrunk = system.box * 0.6
    need = np.ceil(CUTOFF / perpendicular_widths(np.asarray(shrunk)) + 0.5)
    assert (need > np.asarray(nbrs.images)).any()
    e, f, _ = _efs_fn(system.energy_fn, True)(system.positions, nbrs, shrunk)
    assert np.isnan(float(e)) and np.isnan(np.asarray(f)).all()
    # A 2 × 2 × 1 primitive fcc cell (4 atoms, ~60° angles), sheared, Cartesian coordinates, not rotated.
    from ase.build import bulk as ase_bulk

    prim = ase_bulk("Cu", "fcc", a=A_CU).repeat((2, 2, 1))
    prim.numbers[[1, 2]] = 79
    cell = prim.cell[:] @ (np.eye(3) + 0.03 * rng.uniform(-1, 1, (3, 3)))
    pos = prim.get_scaled_positions() @ cell + rng.normal(0, 0.05, (len(prim), 3))
    pc = Configuration(pos, prim.numbers, cell, [True] * 3, source="prim")
    sys2 = from_configuration(model, pc, fractional_coordinates=False, upper_triangular=False)
    assert sys2.uses_images
    np.testing.assert_allclose(sys2.rotation, np.eye(3))
    _check_against_reference(model, pc, sys2)


def _small_fcc(rng, rattle=0.05):
    """32 atoms of Cu–Au fcc in a cubic 7.22 Å cell (widths < 2 × cutoff: the image list)."""
    from ase.build import bulk as ase_bulk

    atoms = ase_bulk("Cu", "fcc", a=A_CU, cubic=True).repeat(2)
    numbers = np.where(rng.uniform(size=len(atoms)) < 0.25, 79, 29)
    pos = atoms.positions + rng.normal(0, rattle, (len(atoms), 3))
    return Configuration(pos, numbers, atoms.cell[:], [True] * 3, source="small fcc")


def test_image_list_capacity_is_close_to_the_true_edge_count(model):
    """The model sees about as many edges as matscipy finds, not every (pair, image) candidate."""
    from jace.data.neighbours import neighbour_list

    config = _small_fcc(np.random.default_rng(11))
    system = from_configuration(model, config)
    assert system.uses_images
    nbrs = system.neighbor_fn.allocate(system.positions)
    n_true = len(neighbour_list(config.positions, config.cell, config.pbc, CUTOFF)[0])
    assert n_true <= nbrs.max_occupancy <= int(np.ceil(1.25 * n_true))  # default capacity_multiplier 1.25
    assert nbrs.n_candidates > 50 * nbrs.max_occupancy
    bigger = system.neighbor_fn.allocate(system.positions, extra_capacity=2)
    assert bigger.max_occupancy == nbrs.max_occupancy + 2 * config.n_atoms
    _check_against_reference(model, config, system)


def test_image_list_overflow_is_detected_and_reallocated(model):
    """Compress a small cell by 13 % (through box=): the 4th shell enters, more edges than the tight capacity."""
    config = _small_fcc(np.random.default_rng(12), rattle=0.02)
    system = from_configuration(model, config, capacity_multiplier=1.0, image_margin=1.0)
    R = system.positions
    nbrs = system.neighbor_fn.allocate(R)
    box = system.box * 0.87
    need = np.ceil(CUTOFF / perpendicular_widths(np.asarray(box)) + 0.5)
    assert (need <= np.asarray(nbrs.images)).all()  # the margin covers the compressed cell
    efs = _efs_fn(system.energy_fn, True)
    # Not updated: the energy itself counts the edges and refuses; updated: the list says so too.
    e_bad, f_bad, _ = efs(R, nbrs, box)
    assert np.isnan(float(e_bad)) and np.isnan(np.asarray(f_bad)).all()
    stale = nbrs.update(R, box=box)
    assert bool(stale.did_buffer_overflow)
    assert np.isnan(float(efs(R, stale, box)[0]))
    fresh, reallocated = update_or_reallocate(system.neighbor_fn, nbrs, R, box=box)
    assert reallocated and fresh.max_occupancy > nbrs.max_occupancy and not bool(fresh.did_buffer_overflow)
    e, f, s = efs(R, fresh, box)
    q = system.rotation
    cell = np.asarray(box).T @ q
    compressed = Configuration(np.asarray(R) @ np.asarray(box).T @ q, config.numbers, cell, config.pbc)
    e0, f0, s0 = _reference(model, compressed)
    assert abs(float(e) - e0) < 1e-10 * abs(e0)
    np.testing.assert_allclose(np.asarray(f) @ q, f0, atol=1e-10)
    np.testing.assert_allclose(q.T @ np.asarray(s) @ q, s0, atol=1e-10)
    assert np.abs(f0).max() > 1e-3
    same, again = update_or_reallocate(system.neighbor_fn, fresh, R, box=box)
    assert not again and same.max_occupancy == fresh.max_occupancy


def test_minimum_image_mode_refuses_small_cells_and_flags_shrunk_boxes(model, bulk):
    with pytest.raises(ValueError, match="images=True"):
        from_configuration(model, random_crystal(np.random.default_rng(3)), images=False)
    # A cell large enough at construction but shrunk later through box=: NaN, never a wrong number.
    config, system = bulk
    nbrs = system.neighbor_fn.allocate(system.positions)
    efs = _efs_fn(system.energy_fn, True)
    assert np.isfinite(float(efs(system.positions, nbrs, system.box)[0]))
    small_box = system.box * (1.9 * CUTOFF / float(perpendicular_widths(np.asarray(system.box)).min()))
    assert needs_images(np.asarray(small_box), CUTOFF)
    e, f, _ = efs(system.positions, nbrs, small_box)
    assert np.isnan(float(e)) and np.isnan(np.asarray(f)).all()


def test_bad_input_gives_clear_errors(model, bulk):
    config, system = bulk
    with pytest.raises(ValueError, match="Ni"):
        from_configuration(model, Configuration(config.positions, np.full(config.n_atoms, 28), config.cell, config.pbc))
    with pytest.raises(ValueError, match="periodic in all directions or in none"):
        from_configuration(model, Configuration(config.positions, config.numbers, config.cell, [True, True, False]))
    displacement_fn, _ = space.free()
    with pytest.raises(ValueError, match="fractional_coordinates=True needs a periodic box"):
        jace_neighbor_list(displacement_fn, None, model, config.numbers, fractional_coordinates=True)
    with pytest.raises(ValueError, match="format"):
        from_configuration(model, config, format="dense")
    nbrs = system.neighbor_fn.allocate(system.positions)
    with pytest.raises(ValueError, match="shape"):
        system.energy_fn(system.positions[:-1], neighbor=nbrs)


def test_overflow_is_detected_and_reallocated(model):
    """Compress the cell by 13 % (through box=): the 4th neighbour shell enters the cutoff."""
    config = _bulk(np.random.default_rng(6), rattle=0.02, shear=0.0)
    system = from_configuration(model, config, capacity_multiplier=1.0)
    R = system.positions
    nbrs = system.neighbor_fn.allocate(R)
    box = system.box * 0.87
    assert not needs_images(np.asarray(box), CUTOFF)
    stale = nbrs.update(R, box=box)
    assert bool(stale.did_buffer_overflow)
    efs = _efs_fn(system.energy_fn, True)
    e_bad, f_bad, _ = efs(R, stale, box)
    assert np.isnan(float(e_bad)) and np.isnan(np.asarray(f_bad)).all()  # never silently wrong
    fresh, reallocated = update_or_reallocate(system.neighbor_fn, nbrs, R, box=box)
    assert reallocated and fresh.max_occupancy > nbrs.max_occupancy and not bool(fresh.did_buffer_overflow)
    e, f, s = efs(R, fresh, box)
    q = system.rotation
    cell = np.asarray(box).T @ q  # back in the original orientation
    compressed = Configuration(np.asarray(R) @ np.asarray(box).T @ q, config.numbers, cell, config.pbc)
    e0, f0, s0 = _reference(model, compressed)
    assert abs(float(e) - e0) < 1e-10 * abs(e0)
    np.testing.assert_allclose(np.asarray(f) @ q, f0, atol=1e-10)
    np.testing.assert_allclose(q.T @ np.asarray(s) @ q, s0, atol=1e-10)
    same, again = update_or_reallocate(system.neighbor_fn, fresh, R, box=box)
    assert not again and same.max_occupancy == fresh.max_occupancy


def test_run_in_chunks_redoes_overflowing_chunks(model):
    """A cluster thrown inwards compresses; a tight list overflows mid-run and is reallocated."""
    from ase.cluster import Octahedron

    atoms = Octahedron("Cu", 4, cutoff=1, latticeconstant=1.12 * A_CU)  # expanded by 12 %
    config = Configuration(atoms.positions, atoms.numbers, np.zeros((3, 3)), [False] * 3, source="cluster")
    centre = atoms.positions.mean(axis=0)
    momenta = -0.02 * (atoms.positions - centre) * atoms.get_masses()[:, None]  # amu·Å/time, inwards
    system = from_configuration(model, config, capacity_multiplier=1.0)
    nbrs = system.neighbor_fn.allocate(system.positions)
    init_fn, apply_fn = simulate.nve(system.energy_fn, system.shift_fn, dt=0.2)
    state = init_fn(jax.random.PRNGKey(0), system.positions, 0.0, mass=system.masses, momenta=jnp.asarray(momenta), neighbor=nbrs)
    radius = lambda x: np.linalg.norm(x - x.mean(axis=0), axis=1).mean()  # noqa: E731
    seen = []
    state, nbrs_end, info = run_in_chunks(
        neighbor_step(apply_fn), state, nbrs, system.neighbor_fn, n_steps=60, chunk_steps=30,
        record=lambda st, nb: system.energy_fn(st.position, neighbor=nb),
        callback=lambda st, nb, done: seen.append((done, radius(np.asarray(st.position)))),
    )
    assert info.n_reallocations >= 1 and info.n_chunks == 2 and [d for d, _ in seen] == [30, 60]
    assert min(r for _, r in seen) < 0.95 * radius(atoms.positions)  # it did compress
    assert nbrs_end.max_occupancy > nbrs.max_occupancy and not bool(nbrs_end.did_buffer_overflow)
    energies = np.asarray(info.records)
    assert energies.shape == (60,) and np.isfinite(energies).all()  # no accepted step used a bad list
    final = np.asarray(state.position)
    e0, _, _ = _reference(model, Configuration(final, config.numbers, config.cell, config.pbc))
    assert abs(energies[-1] - e0) < 1e-10 * abs(e0)


def test_nve_conserves_energy_with_dt_squared_error(model):
    """1,000 steps at dt = 0.2 (≈ 2 fs) and 500 at dt = 0.4 over the same time: fluctuation ∝ dt².

    A 38-atom Cu–Au truncated octahedron in free space (cheap per step; the periodic list is exercised
    by the Langevin test).
    """
    from ase.cluster import Octahedron

    rng = np.random.default_rng(7)
    atoms = Octahedron("Cu", 4, cutoff=1, latticeconstant=A_CU)
    atoms.numbers[rng.permutation(len(atoms))[:10]] = 79
    config = Configuration(atoms.positions, atoms.numbers, np.zeros((3, 3)), [False] * 3, source="cluster")
    system = from_configuration(model, config, dr_threshold=0.5, capacity_multiplier=1.5)
    nbrs0 = system.neighbor_fn.allocate(system.positions)
    init_fn, apply_fn = simulate.nve(system.energy_fn, system.shift_fn, dt=0.2)

    @jax.jit
    def chunk(state, nbrs, dt):  # 250 steps, total energy every 5th; dt traced: one compilation for both
        def five(carry, _):
            state, nbrs = jax.lax.fori_loop(0, 5, lambda _, c: step(*c, dt), carry)
            pe = system.energy_fn(state.position, neighbor=nbrs)
            return (state, nbrs), pe + quantity.kinetic_energy(momentum=state.momentum, mass=state.mass)

        return jax.lax.scan(five, (state, nbrs), None, length=50)

    def step(state, nbrs, dt):
        state = apply_fn(state, neighbor=nbrs, dt=dt)
        return state, nbrs.update(state.position)

    fluct = {}
    for dt, n_steps in ((0.2, 1000), (0.4, 500)):
        state = init_fn(jax.random.PRNGKey(1), system.positions, 0.05, mass=system.masses, neighbor=nbrs0)
        nbrs, energies = nbrs0, []
        for _ in range(n_steps // 250):
            (state, nbrs), e = chunk(state, nbrs, dt)
            energies.append(np.asarray(e))
        assert not bool(nbrs.did_buffer_overflow)
        e = np.concatenate(energies)
        assert np.isfinite(e).all() and len(e) == n_steps // 5
        temperature = float(quantity.temperature(momentum=state.momentum, mass=state.mass))
        assert 0.005 < temperature < 0.1  # it moved and shares energy between kinetic and potential
        fluct[dt] = e.std()
        assert fluct[dt] < 1e-4 * config.n_atoms  # ≪ the ≈ 0.04 eV/atom kinetic energy
        assert abs(e[-20:].mean() - e[:20].mean()) < 3 * fluct[dt]  # no drift beyond the fluctuation
    ratio = fluct[0.4] / fluct[0.2]
    assert 3.0 < ratio < 5.0, ratio


def test_langevin_nvt_in_fori_loop_reaches_target_temperature(bulk):
    config, system = bulk
    nbrs = system.neighbor_fn.allocate(system.positions)
    kT = 0.03
    init_fn, apply_fn = simulate.nvt_langevin(system.energy_fn, system.shift_fn, dt=0.4, kT=kT, gamma=0.2)
    state = init_fn(jax.random.PRNGKey(2), system.positions, mass=system.masses, kT=3 * kT, neighbor=nbrs)

    @functools.partial(jax.jit, static_argnums=2)
    def run(state, nbrs, n):
        def body(k, carry):
            state, nbrs, acc = carry
            state = apply_fn(state, neighbor=nbrs)
            nbrs = nbrs.update(state.position)
            t = quantity.temperature(momentum=state.momentum, mass=state.mass)
            return state, nbrs, acc + jnp.where(k >= n // 2, t, 0.0)

        return jax.lax.fori_loop(0, n, body, (state, nbrs, 0.0))

    t0 = float(quantity.temperature(momentum=state.momentum, mass=state.mass))
    state, nbrs, acc = run(state, nbrs, 400)
    assert not bool(nbrs.did_buffer_overflow)
    mean_t = float(acc) / 200
    assert t0 > 2 * kT and abs(mean_t - kT) < 0.2 * kT, (t0, mean_t)


def test_any_jace_model_multi_ace():
    """A multi-ACE model (the one-layer "ace" preset, random O(1) parameters) through the same interface."""
    from ase.cluster import Icosahedron

    from jace.data.graph import SpeciesMap
    from jace.models.design import RadialSpec
    from jace.models.multi_ace import MultiACEModel, preset

    spec = preset(
        "ace", ("Cu", "Au"), cutoff=4.0, l_max=2, correlation=(2,), max_degree=(8.0, 7.0),
        radial=RadialSpec(kind="bessel", n_max=4),
    )
    net = MultiACEModel(spec, e0=[-3.5, -2.1], scale=1.3, shift=0.2, avg_num_neighbors=8.0)
    rng = np.random.default_rng(9)
    atoms = Icosahedron("Cu", 2)
    atoms.numbers[rng.permutation(len(atoms))[:5]] = 79
    atoms.positions += rng.normal(0, 0.08, atoms.positions.shape)
    config = Configuration(atoms.positions, atoms.numbers, np.zeros((3, 3)), [False] * 3, source="cluster")
    g = graph_from_configuration(config, 4.0, SpeciesMap.from_symbols(["Cu", "Au"]))
    params = jax.jit(net.init)(jax.random.PRNGKey(0), pad_graph(g, REF_BUCKET))
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    leaves = [x + 0.3 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
    net = net.with_params(jax.tree_util.tree_unflatten(tree, leaves))
    _check_against_reference(net, config, from_configuration(net, config))


def test_jax_md_and_the_ase_calculator_agree(model, bulk):
    """The same structure through JAX-MD and through jace's ASE calculator: same energy, forces, stress."""
    from ase import Atoms

    from jace.interfaces.ase_calculator import JaceCalculator

    config, system = bulk
    atoms = Atoms(numbers=config.numbers, positions=config.positions, cell=config.cell, pbc=True)
    atoms.calc = JaceCalculator(model)
    nbrs = system.neighbor_fn.allocate(system.positions)
    e, f, s = _efs_fn(system.energy_fn, True)(system.positions, nbrs, system.box)
    q = system.rotation
    assert abs(float(e) - atoms.get_potential_energy()) < 1e-10 * abs(float(e))
    np.testing.assert_allclose(np.asarray(f) @ q, atoms.get_forces(), atol=1e-10)
    np.testing.assert_allclose(q.T @ np.asarray(s) @ q, atoms.get_stress(voigt=False), atol=1e-10)


def test_ordered_sparse_pairs_the_edges_of_a_multi_ace_model():
    """OrderedSparse stores each pair once; the energy function appends the reverse edges as −vec, so
    edge k + K is the reverse of edge k and multi-ACE's radial MLPs run on half of them. Same energy,
    forces and stress as the Sparse list and as jace's own graph; fewer XLA flops than Sparse."""
    from jace.data.graph import SpeciesMap
    from jace.models.design import RadialSpec
    from jace.models.multi_ace import MultiACEModel, preset

    spec = preset(
        "mace", ("Cu", "Au"), cutoff=CUTOFF, channels=8, l_max=2, hidden_l_max=1, correlation=(2, 2),
        num_layers=2, radial_mlp=(16, 16), radial=RadialSpec(kind="bessel", n_max=4),
    )
    net = MultiACEModel(spec, e0=[-3.5, -2.1], scale=0.7, shift=0.1, avg_num_neighbors=40.0)
    config = _bulk(np.random.default_rng(21))
    g = graph_from_configuration(config, CUTOFF, SpeciesMap.from_symbols(["Cu", "Au"]))
    net = net.with_params(jax.jit(net.init)(jax.random.PRNGKey(3), pad_graph(g, REF_BUCKET)))
    flops = {}
    for fmt in ("sparse", "ordered_sparse"):
        system = from_configuration(net, config, format=fmt)
        nbrs = _check_against_reference(net, config, system)
        compiled = jax.jit(lambda R, n, e=system.energy_fn: e(R, neighbor=n)).lower(system.positions, nbrs).compile()
        cost = compiled.cost_analysis()
        flops[fmt] = (cost[0] if isinstance(cost, list) else cost)["flops"]
    assert flops["ordered_sparse"] < 0.9 * flops["sparse"], flops
