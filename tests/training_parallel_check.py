"""Run in a subprocess by tests/test_training.py with 4 host CPU devices:

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python tests/training_parallel_check.py

One data-parallel step over 4 stacked batches (sharded over the devices) against the single-device
step on one batch holding all their configurations, in float64; also with the last batch masked out
(a group filled up with ``masked_copy``) against the union of the other three; then a short
``train(..., data_parallel=True)``. Prints one JSON line with the largest differences.
"""

import json
import os
import sys

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from training_toy_model import ToyPairModel  # noqa: E402

from jace.data.graph import Bucket, SpeciesMap, batch_graphs, make_buckets, pad_graph  # noqa: E402
from jace.data.synthetic import make_emt_dataset  # noqa: E402
from jace.training import batching, loop, parallel, steps  # noqa: E402
from jace.training.optim import make_optimizer  # noqa: E402


def max_diff(a, b) -> float:
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b))
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in pairs)


def main():
    n_dev = len(jax.devices())
    species = SpeciesMap.from_symbols(["Cu", "Au"])
    configs = make_emt_dataset(n_configs=2 * n_dev, seed=5, include_isolated=False)
    model = ToyPairModel(species, cutoff=3.2, scale=0.5)
    settings = loop.TrainSettings(batch_size=2, forces_weight=10.0, stress_weight=1.0, clip_norm=None, ema_decay=0.9)
    graphs = loop.build_graphs(configs, model, settings)

    groups = [list(range(2 * k, 2 * k + 2)) for k in range(n_dev)]
    sizes = [batching._size(graphs, g) for g in groups]
    (bucket,) = make_buckets(sizes, 2, n_buckets=1)
    batches = [pad_graph(batch_graphs([graphs[i] for i in g]), bucket) for g in groups]
    total_n, total_e = batching._size(graphs, range(len(graphs)))
    union_bucket = Bucket(total_n + 8, total_e + 8, len(graphs) + 1)

    def union(indices):
        return pad_graph(batch_graphs([graphs[i] for i in indices]), union_bucket)

    optimizer = make_optimizer("adam", learning_rate=1e-2, weight_decay=1e-3)
    params = steps.cast_params(jax.jit(model.init)(jax.random.PRNGKey(1), batches[0]), np.float64)
    state = steps.TrainState(params, params, optimizer.init(params), jnp.asarray(0, jnp.int32))
    weights = settings.loss_weights().as_array()
    lr = np.asarray(1e-2)

    single = jax.jit(steps.make_train_step(model.site_energies, optimizer, settings, True))
    mesh = parallel.data_mesh()
    par = parallel.make_parallel_train_step(model.site_energies, optimizer, settings, mesh, compute_stress=True)
    rep = parallel.replicate(state, mesh)

    out = {"n_devices": n_dev}
    # All D batches against their union.
    s1, o1 = single(state, union(range(len(graphs))), weights, lr)
    stacked = parallel.shard_batch(parallel.stack_batches(batches), mesh)
    s2, o2 = par(rep, stacked, weights, lr)
    out["sharded_over"] = len(stacked.nodes["positions"].sharding.device_set)
    out["loss"] = [float(o1["loss"]), float(o2["loss"])]
    out["full"] = {
        "loss": abs(float(o1["loss"]) - float(o2["loss"])),
        "grad_norm": abs(float(o1["grad_norm"]) - float(o2["grad_norm"])),
        "params": max_diff(s1.params, s2.params),
        "ema": max_diff(s1.ema_params, s2.ema_params),
        "opt_state": max_diff(s1.opt_state, s2.opt_state),
    }
    # A group filled up with a masked-out batch: equals the union of the real ones.
    groups_iter = list(parallel.same_bucket_groups(batches[:-1], n_dev))
    assert len(groups_iter) == 1
    s3, o3 = single(state, union(range(2 * (n_dev - 1))), weights, lr)
    s4, o4 = par(rep, parallel.shard_batch(parallel.stack_batches(groups_iter[0]), mesh), weights, lr)
    out["filled"] = {
        "loss": abs(float(o3["loss"]) - float(o4["loss"])),
        "params": max_diff(s3.params, s4.params),
    }
    # The parameter change is not trivially small (the comparison means something).
    out["param_change"] = max_diff(s1.params, state.params)

    # The trainer with data_parallel=True: every step takes one batch per device.
    import tempfile

    run_settings = loop.TrainSettings(batch_size=1, valid_batch_size=4, max_epochs=3, lr=0.02, n_buckets=1,
                                      forces_weight=10.0, data_parallel=True, plots=False)
    with tempfile.TemporaryDirectory() as tmp:
        result = loop.train(model, configs, configs[:2], run_settings, tmp, progress=False)
    out["trainer"] = {
        "steps": result.step,
        "compilations": result.compilations["train_step"],
        "valid_loss": [r["valid_loss"] for r in result.history],
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
