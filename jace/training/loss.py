"""The weighted training loss on energies per atom, forces, stresses and virials.

For a batch of configurations c with N_c atoms, with per-configuration weights w_c (the graph's
``globals["weight"]``) and per-observable weights w_c^E, w_c^F, w_c^S (``globals["energy_weight"]`` …,
where per-``config_type`` weights are already multiplied in on the host, see
``jace.training.loop.build_graphs``), and global weights λ (``LossWeights``):

  L = λ_E · Σ_c w_c w_c^E ρ((E_c - E_c^ref) / N_c)                  / n_E
    + λ_F · Σ_c Σ_{i∈c} Σ_a w_c w_c^F ρ(F_ia - F_ia^ref)             / n_F
    + λ_S · Σ_c Σ_ab w_c w_c^S ρ(σ_c,ab - σ_c,ab^ref)                / n_S
    + λ_W · Σ_c Σ_ab w_c w_c^S ρ((W_c,ab - W_c,ab^ref) / N_c)        / n_W

with n_E the number of configurations that have an energy label, n_F three times the number of atoms
with force labels, n_S = n_W nine times the number of configurations with a stress label (the
virial label is W^ref = -V σ^ref). Units: energies per atom eV/atom, forces eV/Å, stress eV/Å³,
virial per atom eV/atom; the loss carries the squared units times λ.

ρ is the squared error ρ(r) = r², or a Huber function scaled to agree with it near zero,
ρ(r) = r² for |r| ≤ δ and 2δ|r| - δ² beyond (continuous with a continuous derivative).

Padding (masked nodes and graphs) and missing labels contribute neither to the sums nor to the counts,
so the loss of a batch does not depend on how it is padded. The sums and counts are returned
separately (``LossTerms``) so that a loss over several batches, e.g. across devices in
``jace.training.parallel``, is normalised by the global counts: combine terms with ``+`` before
``total_loss``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import jraph
import numpy as np

from jace.data.graph import node_graph_index
from jace.models.potential import Predictions, SiteEnergyFn, predict

__all__ = ["LOSS_KINDS", "LossWeights", "LossTerms", "residual_penalty", "loss_terms", "total_loss", "batch_loss"]

LOSS_KINDS = ("squared", "huber")


class LossWeights(NamedTuple):
    """Global weights λ of the four loss terms (dimensionless multipliers)."""

    energy: float = 1.0
    forces: float = 100.0
    stress: float = 0.0
    virial: float = 0.0

    def as_array(self, dtype=np.float64) -> np.ndarray:
        """[4] in the order energy, forces, stress, virial (the array the jitted steps take)."""
        return np.asarray(tuple(self), dtype=dtype)


class LossTerms(NamedTuple):
    """Weighted sums of penalties and label counts, [4] each, ordered energy, forces, stress, virial."""

    sums: jnp.ndarray
    counts: jnp.ndarray

    def __add__(self, other: "LossTerms") -> "LossTerms":  # type: ignore[override]
        return LossTerms(self.sums + other.sums, self.counts + other.counts)


def residual_penalty(r: jnp.ndarray, kind: str = "squared", delta: float = 0.01) -> jnp.ndarray:
    """Elementwise ρ(r): ``"squared"`` r², or ``"huber"`` r² for |r| ≤ δ and 2δ|r| - δ² beyond."""
    if kind == "squared":
        return r * r
    if kind == "huber":
        a = jnp.abs(r)
        return jnp.where(a <= delta, r * r, 2.0 * delta * a - delta * delta)
    raise ValueError(f"loss kind must be one of {LOSS_KINDS}, got {kind!r}")


def loss_terms(pred: Predictions, graph: jraph.GraphsTuple, kind: str = "squared", delta: float = 0.01) -> LossTerms:
    """Weighted penalty sums and label counts of one padded batch (see the module docstring).

    Args:
      pred: predictions for ``graph`` (``jace.models.potential.predict``).
      graph: a padded batch with labels, masks and weights.
      kind, delta: the penalty ρ and the Huber threshold δ (in the unit of each residual).

    Returns:
      ``LossTerms`` with sums [4] and counts [4] in the dtype of the predictions.
    """
    dtype = pred.energy.dtype
    glob = graph.globals
    gmask = glob["mask"]  # [n_graphs] bool
    nmask = graph.nodes["mask"]  # [n_nodes] bool
    n_atoms = jnp.maximum(graph.n_node.astype(dtype), 1.0)  # [n_graphs]
    w = glob["weight"].astype(dtype)
    rho = lambda r: residual_penalty(r, kind, delta)  # noqa: E731

    has_e = jnp.where(gmask, glob["has_energy"].astype(dtype), 0.0)
    has_f = jnp.where(gmask, glob["has_forces"].astype(dtype), 0.0)
    has_s = jnp.where(gmask, glob["has_stress"].astype(dtype), 0.0)

    # Energy per atom, eV/atom.                                                   [n_graphs]
    r_e = jnp.where(has_e > 0, (pred.energy - glob["energy"].astype(dtype)) / n_atoms, 0.0)
    e_sum = jnp.sum(has_e * w * glob["energy_weight"].astype(dtype) * rho(r_e))
    e_cnt = jnp.sum(has_e)

    # Forces per component, eV/Å.                                                 [n_nodes, 3]
    node_g = node_graph_index(graph)
    f_node = jnp.where(nmask, has_f[node_g], 0.0)  # [n_nodes]
    wf_node = f_node * (w * glob["forces_weight"].astype(dtype))[node_g]
    r_f = jnp.where(f_node[:, None] > 0, pred.forces - graph.nodes["forces"].astype(dtype), 0.0)
    f_sum = jnp.sum(wf_node[:, None] * rho(r_f))
    f_cnt = 3.0 * jnp.sum(f_node)

    # Stress per component, eV/Å³, and virial per atom, eV/atom.                  [n_graphs, 3, 3]
    ws = has_s * w * glob["stress_weight"].astype(dtype)
    stress_ref = glob["stress"].astype(dtype)
    r_s = jnp.where(has_s[:, None, None] > 0, pred.stress - stress_ref, 0.0)
    s_sum = jnp.sum(ws * jnp.sum(rho(r_s), axis=(1, 2)))
    volume = jnp.abs(jnp.linalg.det(glob["cell"].astype(dtype)))  # [n_graphs] Å³
    virial_ref = -volume[:, None, None] * stress_ref
    r_v = jnp.where(has_s[:, None, None] > 0, (pred.virial - virial_ref) / n_atoms[:, None, None], 0.0)
    v_sum = jnp.sum(ws * jnp.sum(rho(r_v), axis=(1, 2)))
    s_cnt = 9.0 * jnp.sum(has_s)

    return LossTerms(jnp.stack([e_sum, f_sum, s_sum, v_sum]), jnp.stack([e_cnt, f_cnt, s_cnt, s_cnt]))


def total_loss(terms: LossTerms, weights: jnp.ndarray) -> jnp.ndarray:
    """Scalar L = Σ_k λ_k sums_k / max(counts_k, 1); ``weights`` is λ [4] (``LossWeights.as_array``)."""
    weights = jnp.asarray(weights, dtype=terms.sums.dtype)
    return jnp.sum(weights * terms.sums / jnp.maximum(terms.counts, 1.0))


def batch_loss(
    site_energy_fn: SiteEnergyFn,
    params,
    graph: jraph.GraphsTuple,
    weights: jnp.ndarray,
    kind: str = "squared",
    delta: float = 0.01,
    compute_stress: bool = True,
) -> tuple[jnp.ndarray, LossTerms]:
    """(scalar loss, LossTerms) of a padded batch, or of D stacked padded batches.

    A stacked batch has a leading axis on every array (``graph.n_node`` of shape [D, n_graphs], as made
    by ``jace.training.parallel.stack_batches``); its terms are summed over the D batches before
    normalising, so the loss equals the loss of one batch holding all their configurations.
    """
    if graph.n_node.ndim == 2:

        def one(g):
            return loss_terms(predict(site_energy_fn, params, g, compute_stress), g, kind, delta)

        per = jax.vmap(one)(graph)
        terms = LossTerms(per.sums.sum(axis=0), per.counts.sum(axis=0))
    else:
        terms = loss_terms(predict(site_energy_fn, params, graph, compute_stress), graph, kind, delta)
    return total_loss(terms, weights), terms
