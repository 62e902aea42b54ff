"""The research-script API: any model (or model file) as a pure ``site_energy_fn(params, graph)`` plus
parameters, which users jit, vmap and grad themselves."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from physics_helpers import random_crystal

from jace.data.graph import Bucket, SpeciesMap, graph_from_configuration, pad_graph
from jace.models.design import RadialSpec
from jace.models.io import save_model
from jace.models.multi_ace import MultiACEModel, preset
from jace.models.potential import Potential, as_potential, cast_params

SPECIES = SpeciesMap.from_symbols(["Cu", "Au"])
CUTOFF = 4.0
BUCKET = Bucket(16, 800, 2)


@pytest.fixture(scope="module")
def model_and_graph():
    spec = preset(
        "mace", ("Cu", "Au"), cutoff=CUTOFF, channels=4, l_max=2, hidden_l_max=1, correlation=(2, 2),
        radial_mlp=(8,), radial=RadialSpec(kind="bessel", n_max=4, envelope_p=5),
    )
    model = MultiACEModel(spec, e0=[-3.5, -2.1], scale=1.3, shift=0.2, avg_num_neighbors=8.0)
    cfg = random_crystal(np.random.default_rng(3))
    graph = pad_graph(graph_from_configuration(cfg, CUTOFF, SPECIES), BUCKET)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), graph)
    params = jax.tree_util.tree_map(lambda x: x + 0.2 * jnp.sin(jnp.arange(x.size).reshape(x.shape)), params)
    return model.with_params(params), graph


def test_potential_energy_and_predict_equal_the_model(model_and_graph, tmp_path):
    model, graph = model_and_graph
    ref = model.predict_graph(graph)
    for pot in (as_potential(model), as_potential(_saved(model, tmp_path))):
        assert isinstance(pot, Potential) and pot.cutoff == CUTOFF and pot.species == SPECIES
        e = jax.jit(pot.energy)(pot.params, graph)
        np.testing.assert_allclose(np.asarray(e), np.asarray(ref.energy), rtol=1e-12, atol=1e-12)
        out = jax.jit(pot.predict)(pot.params, graph)  # eager equals jit: tests/test_multi_ace.py
        np.testing.assert_allclose(np.asarray(out.forces), np.asarray(ref.forces), atol=1e-12)
        np.testing.assert_allclose(np.asarray(out.stress), np.asarray(ref.stress), atol=1e-12)


def _saved(model, tmp_path):
    path = tmp_path / "m.jace"
    save_model(path, model)
    return path


def test_parameter_gradient_matches_finite_difference(model_and_graph):
    model, graph = model_and_graph
    pot = as_potential(model)
    loss = lambda p: pot.energy(p, graph)[0]  # noqa: E731
    grads = jax.jit(jax.grad(loss))(pot.params)
    rng = np.random.default_rng(0)
    direction = jax.tree_util.tree_map(lambda x: jnp.asarray(rng.normal(size=x.shape)), pot.params)
    h = 1e-5
    plus = jax.tree_util.tree_map(lambda x, d: x + h * d, pot.params, direction)
    minus = jax.tree_util.tree_map(lambda x, d: x - h * d, pot.params, direction)
    loss_jit = jax.jit(loss)
    fd = (float(loss_jit(plus)) - float(loss_jit(minus))) / (2 * h)
    analytic = sum(float(jnp.vdot(g, d)) for g, d in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(direction)))
    assert abs(fd - analytic) < 1e-6 * max(1.0, abs(analytic)), (fd, analytic)


def test_vmap_over_positions_equals_a_loop(model_and_graph):
    model, graph = model_and_graph
    pot = as_potential(model)
    rng = np.random.default_rng(1)
    pos = np.asarray(graph.nodes["positions"])
    stack = jnp.asarray(pos[None] + 0.02 * rng.normal(size=(3,) + pos.shape))

    def energy_at(p):
        return pot.energy(pot.params, graph._replace(nodes={**graph.nodes, "positions": p}))[0]

    batched = jax.vmap(energy_at)(stack)
    one = jax.jit(energy_at)
    looped = jnp.stack([one(p) for p in stack])
    np.testing.assert_allclose(np.asarray(batched), np.asarray(looped), rtol=1e-12)
    assert len(set(np.round(np.asarray(looped), 10))) == 3  # the perturbations change the energy


def test_float32_potential_is_close_to_float64(model_and_graph):
    model, graph = model_and_graph
    pot = as_potential(model)
    pot32 = pot.with_dtype(jnp.float32)
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(pot32.params))
    g32 = graph._replace(nodes={**graph.nodes, "positions": jnp.asarray(graph.nodes["positions"], jnp.float32)},
                         edges={**graph.edges, "shifts": jnp.asarray(graph.edges["shifts"], jnp.float32)},
                         globals={**graph.globals, "cell": jnp.asarray(graph.globals["cell"], jnp.float32)})
    e64 = float(jax.jit(pot.energy)(pot.params, graph)[0])
    e32 = jax.jit(pot32.energy)(pot32.params, g32)[0]
    assert e32.dtype == jnp.float32
    assert abs(float(e32) - e64) < 1e-4 * max(1.0, abs(e64))
    assert cast_params({"i": jnp.arange(3)}, jnp.float32)["i"].dtype == jnp.arange(3).dtype


def test_a_model_without_parameters_is_refused():
    spec = preset("mace", ("Cu",), cutoff=CUTOFF, channels=2, l_max=1, hidden_l_max=0, radial_mlp=(4,))
    with pytest.raises(ValueError, match="no parameters"):
        as_potential(MultiACEModel(spec, avg_num_neighbors=4.0))
