"""Differentiable simulation: the gradient of a trajectory observable (mean potential energy and a smooth
RDF over a short NVE run) with respect to the model parameters equals central finite differences, and a
few gradient steps move the observable towards a target."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("jax_md")

from jax_md import space  # noqa: E402

from jace.data.configuration import Configuration  # noqa: E402
from jace.interfaces.differentiable import (  # noqa: E402
    mean_potential_energy,
    nve_trajectory,
    observable_loss_and_grad,
    fit_observable,
    rdf_observable,
    smooth_rdf,
)
from jace.interfaces.jax_md import from_configuration  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:scatter inputs have incompatible types")  # inside jax-md, x64

RUN = dict(n_steps=100, dt=0.2, kT=0.03)  # 100 steps ≈ 200 fs
R_BINS = np.linspace(2.0, 4.0, 9)


@pytest.fixture(scope="module")
def setup():
    """A 13-atom Cu–Au cluster in free space with a small linear ACE fitted to EMT data."""
    from ase.cluster import Icosahedron

    from jace.data.synthetic import make_emt_dataset
    from jace.models.design import FitSpec, LinearACESpec, RadialSpec
    from jace.models.linear_ace import fit_linear_ace

    data = make_emt_dataset(n_configs=21, seed=3)
    iso = [c for c in data if c.config_type == "isolated_atom"]
    train = [c for c in data if c.config_type != "isolated_atom"]
    spec = LinearACESpec(
        elements=("Cu", "Au"), cutoff=4.5, radial=RadialSpec(n_max=5), l_max=2, correlation=2, max_degree=(7.0, 7.0)
    )
    model, _ = fit_linear_ace(spec, FitSpec(lam=1e-3), train, iso)
    rng = np.random.default_rng(0)
    atoms = Icosahedron("Cu", 2)
    atoms.numbers[rng.permutation(len(atoms))[:4]] = 79
    atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
    config = Configuration(atoms.positions, atoms.numbers, np.zeros((3, 3)), [False] * 3, source="cluster")
    system = from_configuration(model, config)
    rdf = rdf_observable(system, R_BINS, sigma=0.25, volume=200.0)

    def observable(traj):  # one observable vector: [mean potential energy per atom, g(r) at R_BINS]
        return jnp.concatenate([mean_potential_energy(traj)[None], rdf(traj)])

    return model, config, system, observable


def _loss_grad(setup, params, target):
    model, config, system, observable = setup
    return observable_loss_and_grad(
        system, params, system.positions, target=target, observable=observable, key=jax.random.PRNGKey(1), **RUN
    )


def test_gradient_matches_central_finite_differences(setup):
    model, config, system, observable = setup
    params = system.potential.params
    _, _, aux = _loss_grad(setup, params, jnp.zeros(1 + len(R_BINS)))
    obs0 = np.asarray(aux["observable"])
    assert np.isfinite(obs0).all() and (obs0[1:] > 0).any()
    target = jnp.asarray(obs0 + np.concatenate([[-0.05], 0.3 * np.sin(R_BINS)]))
    loss, grads, aux = _loss_grad(setup, params, target)
    assert float(loss) > 0 and not bool(aux["overflow"])
    # ∂/∂E0_s: forces do not depend on E0, so only the energies' direct dependence remains (exact).
    counts = np.bincount(model.species.indices(config.numbers), minlength=2)
    resid = obs0 - np.asarray(target)
    np.testing.assert_allclose(np.asarray(grads["e0"]), 2 * resid[0] / len(resid) * counts / config.n_atoms, rtol=1e-9)
    # Random directions through every parameter (E0 and the ACE coefficients), central differences.
    rng = np.random.default_rng(0)
    leaves, tree = jax.tree_util.tree_flatten(params)
    for _ in range(3):
        direction = [jnp.asarray(rng.normal(size=x.shape)) * (float(jnp.abs(x).mean()) + 1e-3) for x in leaves]
        analytic = sum(float(jnp.vdot(g, d)) for g, d in zip(jax.tree_util.tree_leaves(grads), direction))
        h = 2e-5
        shifted = [jax.tree_util.tree_unflatten(tree, [x + s * h * d for x, d in zip(leaves, direction)]) for s in (1, -1)]
        lp, lm = (float(_loss_grad(setup, p, target)[0]) for p in shifted)
        fd = (lp - lm) / (2 * h)
        assert abs(analytic - fd) < 1e-6 * max(abs(fd), 1e-3), (analytic, fd)


def test_a_few_gradient_steps_move_the_observable_towards_a_target(setup):
    model, config, system, observable = setup
    params = system.potential.params
    _, _, aux = _loss_grad(setup, params, jnp.zeros(1 + len(R_BINS)))
    obs0 = np.asarray(aux["observable"])
    target = jnp.asarray(np.concatenate([[obs0[0] - 0.03], obs0[1:]]))  # lower energy, same structure
    trainable = jax.tree_util.tree_map(lambda x: True, params)
    trainable["e0"] = False  # E0 would shift the energy without changing the dynamics: freeze it
    new_params, history = fit_observable(
        system, params, system.positions, target=target, observable=observable, key=jax.random.PRNGKey(1),
        n_iterations=4, learning_rate=5e-4, trainable=trainable, **RUN,
    )
    np.testing.assert_array_equal(np.asarray(new_params["e0"]), np.asarray(params["e0"]))
    losses = [h["loss"] for h in history]
    gap0 = abs(history[0]["observable"][0] - float(target[0]))
    gap = abs(history[-1]["observable"][0] - float(target[0]))
    assert losses[-1] < 0.5 * losses[0] and gap < 0.7 * gap0, (losses, gap0, gap)


def test_nve_trajectory_conserves_energy_and_checks_inputs(setup):
    model, config, system, observable = setup
    nbrs = system.neighbor_fn.allocate(system.positions)
    traj, nb = jax.jit(
        lambda p: nve_trajectory(system, p, system.positions, nbrs, momenta=None, key=jax.random.PRNGKey(1), **RUN)
    )(system.potential.params)
    total = np.asarray(traj.potential_energy + traj.kinetic_energy)
    assert traj.positions.shape == (RUN["n_steps"], config.n_atoms, 3) and not bool(nb.did_buffer_overflow)
    assert np.ptp(total) < 2e-3 * config.n_atoms * RUN["kT"] and np.ptp(np.asarray(traj.kinetic_energy)) > 0.05
    with pytest.raises(ValueError, match="momenta"):
        nve_trajectory(system, system.potential.params, system.positions, nbrs, dt=0.2, n_steps=2)


def test_smooth_rdf_is_one_for_an_ideal_gas_and_peaks_at_the_fcc_bond():
    from ase.build import bulk

    rng = np.random.default_rng(0)
    box = 20.0
    displacement_fn, _ = space.periodic_general(jnp.eye(3) * box)  # fractional coordinates
    r = np.linspace(3.0, 9.0, 7)
    gas = jnp.asarray(rng.uniform(size=(600, 3)))
    g = np.asarray(smooth_rdf(displacement_fn, gas, r, 0.3, box**3))
    np.testing.assert_allclose(g, 1.0, atol=0.15)
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
    cell = atoms.cell[:]
    displacement_fn, _ = space.periodic_general(jnp.asarray(cell.T))
    r = np.linspace(1.5, 5.0, 71)
    g = np.asarray(smooth_rdf(displacement_fn, jnp.asarray(atoms.get_scaled_positions()), r, 0.1, atoms.get_volume()))
    assert abs(r[np.argmax(g)] - 3.61 / np.sqrt(2)) < 0.06


def test_neighbour_overflow_during_the_run_is_redone_with_a_bigger_list(setup):
    """A cluster thrown inwards with a tight list: the run overflows, is redone, and the result is finite."""
    from ase.cluster import Octahedron

    model, _, _, _ = setup
    atoms = Octahedron("Cu", 4, cutoff=1, latticeconstant=1.12 * 3.61)  # 38 atoms, expanded by 12 %
    config = Configuration(atoms.positions, atoms.numbers, np.zeros((3, 3)), [False] * 3, source="cluster")
    system = from_configuration(model, config, capacity_multiplier=1.0)
    momenta = -0.02 * (atoms.positions - atoms.positions.mean(axis=0)) * atoms.get_masses()[:, None]
    nbrs = system.neighbor_fn.allocate(system.positions)
    loss, grads, aux = observable_loss_and_grad(
        system, system.potential.params, system.positions, target=0.0, nbrs=nbrs, momenta=jnp.asarray(momenta),
        n_steps=30, dt=0.2,
    )
    assert aux["nbrs"].max_occupancy > nbrs.max_occupancy and not bool(aux["overflow"])
    assert np.isfinite(float(loss)) and all(np.isfinite(np.asarray(g)).all() for g in jax.tree_util.tree_leaves(grads))
    # Every atom is Cu: ∂loss/∂E0_Cu = 2 (observable − target) exactly (forces do not depend on E0).
    np.testing.assert_allclose(float(grads["e0"][0]), 2 * float(aux["observable"]), rtol=1e-9)
