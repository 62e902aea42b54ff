"""XLA compilations of a model's jitted predict over an epoch of variable-size configurations.

``iterate_batches`` pads every batch to one of at most ``n_buckets`` static shapes, so predicting over
a whole epoch compiles at most once per bucket. Without padding every distinct raw batch shape
compiles again, which is what the buckets are there to prevent.

Compilations are counted with ``jax.monitoring``: JAX records the event
``/jax/core/compile/backend_compile_duration`` (``jax._src.dispatch.BACKEND_COMPILE_EVENT``) once per
XLA compilation, with the jitted function's name as ``fun_name`` (a persistent compilation-cache hit
is recorded too, so the count does not depend on a cache). The jitted function's own cache size is
checked as well.
"""

import contextlib

import jax
import numpy as np
import pytest

from jace.data.graph import batch_graphs, graphs_from_configurations, iterate_batches
from jace.data.synthetic import make_emt_dataset
from jace.models.design import LinearACESpec, RadialSpec
from jace.models.linear_ace import LinearACEModel, product_basis_for

BACKEND_COMPILE = "backend_compile"
BATCH_SIZE = 3
N_BUCKETS = 3


def _tiny_model(seed: int) -> LinearACEModel:
    spec = LinearACESpec(
        elements=("Cu", "Au"),
        cutoff=4.5,
        radial=RadialSpec(kind="bessel", n_max=3),
        l_max=2,
        correlation=2,
        max_degree=(6.0, 5.0),
    )
    n_b = product_basis_for(spec).n_functions()
    rng = np.random.default_rng(seed)
    return LinearACEModel(spec, np.array([-3.5, -2.1]), 0.1 * rng.normal(size=(2, n_b)))


@contextlib.contextmanager
def count_compilations(name: str):
    """Yield a list that collects the ``fun_name`` of every XLA compilation whose name contains ``name``."""
    seen: list[str] = []

    def listener(event: str, duration_secs: float, **kwargs):
        fun_name = str(kwargs.get("fun_name", ""))
        if BACKEND_COMPILE in event and name in fun_name:
            seen.append(fun_name)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield seen
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def _raw_shape(graph):
    return (int(graph.nodes["positions"].shape[0]), int(graph.senders.shape[0]), int(graph.n_node.shape[0]))


@pytest.fixture(scope="module")
def epoch():
    """Predict over one epoch padded (twice) and once unpadded with a fresh model; record compilations."""
    # EMT cells of 4, 8, 16 and 32 atoms with random strains and displacements: batches of
    # consecutive configurations have many different node and edge counts.
    configs = make_emt_dataset(n_configs=15, seed=3, include_isolated=False)
    model = _tiny_model(1)
    graphs = graphs_from_configurations(configs, model.cutoff, model.species)
    out = {"n_graphs": len(graphs)}

    padded = list(iterate_batches(graphs, BATCH_SIZE, n_buckets=N_BUCKETS))
    out["bucket_shapes"] = {_raw_shape(b) for b, _ in padded}
    energies = np.full(len(graphs), np.nan)
    with count_compilations("predict") as seen:
        for _ in range(2):  # two epochs: the second must compile nothing new
            for batch, idx in padded:
                e = np.asarray(model.predict_graph(batch).energy)
                energies[idx] = e[: len(idx)]
    out["padded_compiles"] = len(seen)
    out["padded_cache_size"] = model._predict._cache_size()
    out["padded_energies"] = energies

    # The control experiment: the same batches without padding.
    groups = [list(range(s, min(s + BATCH_SIZE, len(graphs)))) for s in range(0, len(graphs), BATCH_SIZE)]
    raw = [(batch_graphs([graphs[k] for k in grp]), np.asarray(grp)) for grp in groups]
    out["raw_shapes"] = {_raw_shape(b) for b, _ in raw}
    energies = np.full(len(graphs), np.nan)
    with count_compilations("predict") as seen:
        for batch, idx in raw:
            energies[idx] = np.asarray(model.predict_graph(batch).energy)
    out["raw_compiles"] = len(seen)
    out["total_cache_size"] = model._predict._cache_size()
    out["raw_energies"] = energies
    return out


def test_listener_sees_compilations_of_a_fresh_function():
    # The counter itself works: a new jitted function compiles once per new input shape.
    f = jax.jit(lambda x: 2.0 * x + 1.0)
    with count_compilations("lambda") as seen:
        f(np.ones(3))
        f(np.ones(3))
        f(np.ones(4))
    assert len(seen) == 2


def test_padded_epoch_compiles_at_most_once_per_bucket(epoch):
    assert 1 <= len(epoch["bucket_shapes"]) <= N_BUCKETS
    assert 0 < epoch["padded_compiles"] <= len(epoch["bucket_shapes"])
    assert epoch["padded_cache_size"] == epoch["padded_compiles"]


def test_unpadded_epoch_compiles_once_per_raw_shape(epoch):
    # Without padding there are more distinct shapes than buckets, and every one is compiled:
    # this is what the buckets save.
    assert len(epoch["raw_shapes"]) > N_BUCKETS
    assert not epoch["raw_shapes"] & epoch["bucket_shapes"]
    assert epoch["raw_compiles"] == len(epoch["raw_shapes"]) > epoch["padded_compiles"]
    assert epoch["total_cache_size"] == epoch["padded_compiles"] + epoch["raw_compiles"]


def test_padding_changes_compilations_not_predictions(epoch):
    padded, raw = epoch["padded_energies"], epoch["raw_energies"]
    assert np.all(np.isfinite(padded)) and np.all(np.isfinite(raw))
    np.testing.assert_allclose(padded, raw, rtol=1e-12, atol=1e-10)
