"""Differentiable simulation: gradients of trajectory observables with respect to model parameters.

A short NVE run (JAX-MD's velocity Verlet, ``jax.lax.scan`` over the steps) is an ordinary JAX
function of the model parameters, so ``jax.grad`` differentiates an observable of the trajectory —
the mean potential energy, a smooth radial distribution function, anything written in JAX — through
every step of the integration (reverse mode through the unrolled dynamics; with ``checkpoint=True``
each step is recomputed in the backward pass instead of stored, trading time for memory). This lets a
potential be fitted to an observable rather than (or as well as) to energies and forces.

    from jace.interfaces.jax_md import from_configuration
    from jace.interfaces.differentiable import observable_loss_and_grad, fit_observable

    system = from_configuration(model, atoms)                    # any jace model
    loss, grads, aux = observable_loss_and_grad(system, system.potential.params, system.positions,
                                                target=-3.5, n_steps=200, dt=0.2, kT=0.025, key=key)

Units: eV, Å, amu; time in Å·sqrt(amu/eV) ≈ 10.18 fs; kT in eV; momenta in amu·Å/time.

Caveats. Gradients through long chaotic trajectories grow exponentially with the run length (the
Lyapunov instability), so keep runs short (≲ a few hundred steps) or average several short runs. The
neighbour list is updated inside the run; if it overflows the run is redone with a bigger list (see
:func:`observable_loss_and_grad`), so the gradient never comes from an incomplete list.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jace.interfaces.jax_md import JaxMDSystem, _overflowed, _reallocate

try:
    from jax_md import quantity, simulate, space
except ImportError as err:  # pragma: no cover
    raise ImportError("jace.interfaces.differentiable needs jax-md: pip install 'jace[md]'") from err

__all__ = [
    "Trajectory",
    "nve_trajectory",
    "mean_potential_energy",
    "smooth_rdf",
    "rdf_observable",
    "observable_loss",
    "observable_loss_and_grad",
    "fit_observable",
]


class Trajectory(NamedTuple):
    """One frame per step (after the step).

    positions: [T, N, 3] in the system's coordinates (fractional or Cartesian).
    potential_energy: [T] eV; kinetic_energy: [T] eV.
    overflow: [T] bool, True from the step whose neighbour-list update overflowed onwards (the
      frames from the next step on are NaN: see :func:`jace.interfaces.jax_md.jace_neighbor_list`).
    """

    positions: jnp.ndarray
    potential_energy: jnp.ndarray
    kinetic_energy: jnp.ndarray
    overflow: jnp.ndarray


def nve_trajectory(
    system: JaxMDSystem,
    params,
    R0,
    nbrs,
    *,
    dt: float,
    n_steps: int,
    momenta=None,
    key=None,
    kT: float = 0.0,
    checkpoint: bool = True,
):
    """A velocity-Verlet NVE trajectory as a differentiable function of ``params``.

    Args:
      system: from :func:`jace.interfaces.jax_md.from_configuration`.
      params: model parameters (a pytree like ``system.potential.params``), differentiable.
      R0: [N, 3] initial positions (the system's coordinates); nbrs: an allocated neighbour list.
      dt: time step (Å·sqrt(amu/eV) ≈ 10.18 fs); n_steps: number of steps (static).
      momenta: [N, 3] initial momenta, amu·Å/time; when ``None`` they are drawn from a
        Maxwell–Boltzmann distribution at ``kT`` (eV) with ``key`` (JAX-MD's ``initialize_momenta``).
      checkpoint: recompute each step in the backward pass (memory O(1) per step instead of the
        step's intermediates).
    Returns:
      (Trajectory, final neighbour list). Check ``final.did_buffer_overflow`` on the host (the
      helpers below do).
    """
    if momenta is None and key is None:
        raise ValueError("nve_trajectory needs initial momenta, or a PRNG key and kT to draw them")
    init_fn, apply_fn = simulate.nve(system.energy_fn, system.shift_fn, dt=dt)
    key = jax.random.PRNGKey(0) if key is None else key
    state = init_fn(key, R0, kT, mass=system.masses, momenta=momenta, neighbor=nbrs, params=params)

    def body(carry, _):
        state, nb = carry
        state = apply_fn(state, neighbor=nb, params=params)
        nb = nb.update(state.position)
        pe = system.energy_fn(state.position, neighbor=nb, params=params)
        ke = quantity.kinetic_energy(momentum=state.momentum, mass=state.mass)
        return (state, nb), (state.position, pe, ke, jnp.asarray(nb.did_buffer_overflow).astype(bool))

    if checkpoint:
        body = jax.checkpoint(body)
    (state, nb), (pos, pe, ke, over) = jax.lax.scan(body, (state, nbrs), None, length=int(n_steps))
    return Trajectory(pos, pe, ke, over), nb


# --------------------------------------------------------------------------------------------------
# Observables
# --------------------------------------------------------------------------------------------------


def mean_potential_energy(traj: Trajectory) -> jnp.ndarray:
    """Mean potential energy per atom over the frames, eV/atom."""
    return jnp.mean(traj.potential_energy) / traj.positions.shape[1]


def smooth_rdf(displacement_fn: Callable, R, r, sigma: float, volume: float, **kwargs) -> jnp.ndarray:
    """Radial distribution function g(r) with Gaussian-smeared counts, differentiable in R.

    g(r) = V / (N (N − 1)) Σ_{i≠j} G_σ(r − r_ij) / (4π r²), with G_σ a normalised Gaussian, over all
    ordered pairs by the displacement function (so, in a periodic box, meaningful for r below half
    the smallest perpendicular width).

    Args:
      displacement_fn: a JAX-MD displacement function; R: [N, 3] positions in its coordinates.
      r: [n_bins] radii, Å (> 0); sigma: smearing width, Å; volume: Å³ (the box volume; any
        reference volume in free space). kwargs go to ``displacement_fn``.
    Returns: [n_bins] g(r) (dimensionless; → 1 for an ideal gas).
    """
    n = R.shape[0]
    dR = space.map_product(functools.partial(displacement_fn, **kwargs))(R, R)  # [N, N, 3]
    off = ~jnp.eye(n, dtype=bool)
    d2 = jnp.where(off, jnp.sum(dR * dR, axis=-1), 1.0)
    d = jnp.sqrt(d2)
    r = jnp.asarray(r)
    gauss = jnp.exp(-0.5 * ((r[:, None, None] - d[None]) / sigma) ** 2) / (sigma * jnp.sqrt(2 * jnp.pi))
    counts = jnp.sum(jnp.where(off[None], gauss, 0.0), axis=(1, 2))
    return volume * counts / (n * (n - 1) * 4 * jnp.pi * r**2)


def rdf_observable(system: JaxMDSystem, r, sigma: float = 0.1, volume: float | None = None) -> Callable:
    """``observable(traj) -> [n_bins]``: :func:`smooth_rdf` averaged over the frames of a trajectory."""
    if volume is None:
        if system.box is None:
            raise ValueError("rdf_observable in free space needs a reference volume (Å³)")
        from jace.interfaces.jax_md import cell_from_box

        volume = float(abs(np.linalg.det(cell_from_box(np.asarray(system.box)))))
    r = jnp.asarray(r)

    def observable(traj: Trajectory) -> jnp.ndarray:
        frames = jax.vmap(lambda R: smooth_rdf(system.displacement_fn, R, r, sigma, volume))(traj.positions)
        return jnp.mean(frames, axis=0)

    return observable


# --------------------------------------------------------------------------------------------------
# Loss, gradient, fit
# --------------------------------------------------------------------------------------------------


def observable_loss(
    system: JaxMDSystem,
    params,
    R0,
    nbrs,
    target,
    *,
    observable: Callable = mean_potential_energy,
    n_steps: int,
    dt: float,
    burn_in: int = 0,
    momenta=None,
    key=None,
    kT: float = 0.0,
    checkpoint: bool = True,
):
    """(loss, aux): loss = mean((observable(trajectory) − target)²) of an NVE run; pure, differentiable.

    ``observable(traj)`` maps a :class:`Trajectory` (frames after ``burn_in`` steps) to an array;
    aux = {"observable": value, "overflow": bool (the list overflowed: discard the result),
    "overflow_position": [N, 3] the configuration whose list update overflowed (R0 if none),
    "nbrs": final list}.
    """
    traj, nb = nve_trajectory(
        system, params, R0, nbrs, dt=dt, n_steps=n_steps, momenta=momenta, key=key, kT=kT, checkpoint=checkpoint
    )
    over = traj.overflow
    bad_position = jnp.where(jnp.any(over), traj.positions[jnp.argmax(over)], R0)
    if burn_in:
        traj = jax.tree_util.tree_map(lambda x: x[burn_in:], traj)
    value = observable(traj)
    loss = jnp.mean((value - jnp.asarray(target)) ** 2)
    return loss, {
        "observable": value,
        "overflow": jnp.any(over),
        "overflow_position": jax.lax.stop_gradient(bad_position),
        "nbrs": nb,
    }


class _SystemKey:
    """Hashes and compares a system by the identity of its energy and shift functions (for the cache)."""

    def __init__(self, system: JaxMDSystem):
        self.system = system

    def __hash__(self):
        return hash((id(self.system.energy_fn), id(self.system.shift_fn)))

    def __eq__(self, other):
        return (
            isinstance(other, _SystemKey)
            and self.system.energy_fn is other.system.energy_fn
            and self.system.shift_fn is other.system.shift_fn
        )


@functools.lru_cache(maxsize=16)
def _compiled_loss_and_grad(system_key: _SystemKey, observable, n_steps, dt, burn_in, checkpoint):
    system = system_key.system

    def f(params, R0, nbrs, target, momenta, key, kT):
        return observable_loss(
            system, params, R0, nbrs, target, observable=observable, n_steps=n_steps, dt=dt, burn_in=burn_in,
            momenta=momenta, key=key, kT=kT, checkpoint=checkpoint,
        )

    return jax.jit(jax.value_and_grad(f, has_aux=True))


def observable_loss_and_grad(
    system: JaxMDSystem,
    params,
    R0,
    *,
    target,
    n_steps: int,
    dt: float,
    observable: Callable = mean_potential_energy,
    nbrs=None,
    burn_in: int = 0,
    momenta=None,
    key=None,
    kT: float = 0.0,
    checkpoint: bool = True,
):
    """(loss, grads, aux) of :func:`observable_loss`, jitted (compiled once per system/settings).

    ``grads`` has the structure of ``params``. ``nbrs``: an allocated list (allocated at ``R0`` when
    ``None``); if it overflows during the run, a bigger one is allocated on the host and the run is
    redone, so results never come from an incomplete list. aux additionally holds "nbrs", the list
    to reuse for the next call.
    """
    if nbrs is None:
        nbrs = system.neighbor_fn.allocate(R0)
    fn = _compiled_loss_and_grad(_SystemKey(system), observable, int(n_steps), float(dt), int(burn_in), bool(checkpoint))
    for _ in range(10):
        (loss, aux), grads = fn(params, R0, nbrs, target, momenta, key, kT)
        if not bool(aux["overflow"]):
            aux = dict(aux, nbrs=nbrs)
            return loss, grads, aux
        # Sized for the configuration that overflowed, with 25 % to spare; then rebuilt at R0.
        nbrs = _reallocate(system.neighbor_fn, aux["nbrs"], aux["overflow_position"], grow=1.25, margin=1.25)
        nbrs = nbrs.update(R0)
        if _overflowed(nbrs):
            nbrs = _reallocate(system.neighbor_fn, nbrs, R0)
    raise RuntimeError("neighbour list kept overflowing in observable_loss_and_grad")


def fit_observable(
    system: JaxMDSystem,
    params,
    R0,
    *,
    target,
    n_iterations: int,
    learning_rate: float = 1e-3,
    trainable=None,
    optimizer=None,
    **run_kwargs,
):
    """A few gradient steps that move a trajectory observable towards ``target``.

    Args:
      trainable: ``None`` (all parameters) or a pytree of booleans with the structure of ``params``
        (False leaves are frozen: their gradients are zeroed).
      optimizer: an optax ``GradientTransformation`` (default ``optax.adam(learning_rate)``).
      run_kwargs: ``n_steps``, ``dt``, ``observable``, ``momenta`` / ``key`` + ``kT``, … as for
        :func:`observable_loss_and_grad`.
    Returns:
      (params, history): history[k] = {"loss": float, "observable": np.ndarray} *before* update k,
      plus a final entry for the returned parameters.
    """
    import optax

    opt = optimizer if optimizer is not None else optax.adam(learning_rate)
    state = opt.init(params)
    history = []
    nbrs = run_kwargs.pop("nbrs", None)
    for _ in range(int(n_iterations)):
        loss, grads, aux = observable_loss_and_grad(system, params, R0, target=target, nbrs=nbrs, **run_kwargs)
        nbrs = aux["nbrs"]
        history.append({"loss": float(loss), "observable": np.asarray(aux["observable"])})
        if trainable is not None:
            grads = jax.tree_util.tree_map(lambda g, t: g * jnp.asarray(t, g.dtype), grads, trainable)
        updates, state = opt.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    loss, _, aux = observable_loss_and_grad(system, params, R0, target=target, nbrs=nbrs, **run_kwargs)
    history.append({"loss": float(loss), "observable": np.asarray(aux["observable"])})
    return params, history
