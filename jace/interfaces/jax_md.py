"""Any jace model as a JAX-MD energy function, on JAX-MD's own spaces and neighbour lists.

Needs the optional extra ``md`` (``pip install 'jace[md]'``, which brings jax-md and its pymatgen
dependency); nothing else in jace imports this module.

Quick start (units: eV, Å, amu, so the time unit is Å·sqrt(amu/eV) ≈ 10.18 fs; kT in eV)::

    from jax_md import simulate
    from jace.interfaces.jax_md import from_configuration, neighbor_step, run_in_chunks

    system = from_configuration(model, atoms)  # (alias jace.jax_md_system) a model, Potential or model
                                               # file; ASE Atoms or a jace Configuration
    nbrs = system.neighbor_fn.allocate(system.positions)
    init_fn, apply_fn = simulate.nve(system.energy_fn, system.shift_fn, dt=0.2)
    state = init_fn(key, system.positions, kT=0.025, mass=system.masses, neighbor=nbrs)
    state, nbrs, info = run_in_chunks(neighbor_step(apply_fn), state, nbrs, system.neighbor_fn,
                                      n_steps=10_000, chunk_steps=100)

or, in JAX-MD's own style, with a space you made yourself::

    displacement_fn, shift_fn = space.periodic_general(box)          # fractional_coordinates=True
    neighbor_fn, energy_fn = jace_neighbor_list(displacement_fn, box, model, numbers)
    energy_fn(R, neighbor=nbrs)                       # eV
    quantity.force(energy_fn)(R, neighbor=nbrs)       # eV/Å, real-space, also for fractional R
    quantity.stress(energy_fn, R, box, neighbor=nbrs) # eV/Å³, JAX-MD's sign (see below)

Conventions
  * ``box`` is JAX-MD's affine transformation T: real positions are x = T u for fractional u, so the
    *columns* of T are the lattice vectors; an ASE/jace cell (lattice vectors as *rows*) is
    ``box = cell.T`` (:func:`box_from_cell`). A scalar or a length-3 vector is an orthorhombic box.
  * ``fractional_coordinates`` must match the space: ``True`` (JAX-MD's default for
    ``space.periodic_general``) means ``R`` holds fractional coordinates in [0, 1); ``False`` means
    ``R`` is Cartesian (Å). Either way JAX-MD's displacement function returns Cartesian vectors and
    its custom derivative makes ``grad(energy_fn)(R)`` a Cartesian gradient (eV/Å), so forces are
    real-space forces and ``shift_fn(R, dt * p / m)`` integrates correctly. In free space
    (``box=None``, ``space.free()``) coordinates are Cartesian.
  * ``energy_fn(R, neighbor=..., box=..., perturbation=..., params=...)``: ``box`` (or ``new_box``)
    is forwarded to the displacement function (a deformed or time-dependent cell), ``perturbation``
    (a 3×3 matrix, 1 + ε) multiplies every displacement vector, which is how
    ``jax_md.quantity.stress`` and ``quantity.pressure`` differentiate with respect to strain, and
    ``params`` replaces the model's parameters (for gradients with respect to them).
  * Stress: ``jax_md.quantity.stress`` returns (1/V)(Σ m v⊗v − ∂U/∂ε), which is **minus** the ASE /
    jace stress (positive = tensile); ``-quantity.stress(...)`` with no velocities equals
    ``Potential.predict(...).stress``.

Neighbour lists
  JAX-MD's ``partition.neighbor_list`` in the ``OrderedSparse`` (default) or ``Sparse`` format. The
  former stores each pair once; the energy function appends every pair's reverse edge (vector −r), so
  edge k + K is the reverse of edge k and multi-ACE's radial MLPs run on half the edges, as on jace's
  own graphs (``edges["pair_order"]``). MD of a 512-atom Si cell (``benchmarks/jaxmd_format.py``, the
  benchmark MACE, float64): 5.8–6.0 steps/s against 4.6–4.8 with ``Sparse`` (session 13). The list
  is allocated with spare room (``capacity_multiplier``, default 1.25) and skin ``dr_threshold``. When atoms
  crowd together the buffer can overflow inside a jitted loop; JAX-MD then sets
  ``nbrs.did_buffer_overflow`` and the list is missing pairs. This module never lets that pass
  silently: the energy of an overflowed list is NaN (so forces and trajectories become NaN too), and
  the host-side helpers :func:`update_or_reallocate` and :func:`run_in_chunks` reallocate outside jit.
  The pattern for simulation loops (what :func:`run_in_chunks` does)::

      for each chunk:                              # e.g. 100 steps
          new_state, new_nbrs = chunk(state, nbrs)  # jit(lax.fori_loop(step)), nbrs.update inside
          if new_nbrs.did_buffer_overflow:          # checked on the host, once per chunk
              nbrs = neighbor_fn.allocate(...)      # bigger buffer (recompiles the chunk once)
              redo the chunk from the saved state
          else:
              state, nbrs = new_state, new_nbrs

Small periodic cells (several images)
  JAX-MD's displacement functions use the minimum image: a pair is seen at most once, which is only
  correct when the cutoff is at most half of every perpendicular width of the cell (the distance
  between opposite faces). For smaller cells (a 2-atom primitive cell with a 5 Å cutoff, …) this
  module detects the situation on the host and switches to an *image list*
  (:class:`ImageNeighborList`): a static set of candidates (i, j, n) — every ordered pair, i = j
  included, with every lattice translation n in a box [-m_k, m_k] large enough to hold all neighbours
  within the cutoff, m_k = ceil(r_c / h_k + 1/2) — enumerated once outside jit. Each evaluation takes
  the minimum-image vector of every candidate, adds T n (cheap: vectors and distances only) and
  compacts those within the cutoff (``jnp.nonzero(..., size=capacity)``) into ``capacity`` model
  edges, so the model costs what jace's own matscipy list costs (≈ 1,350 edges, capacity ≈ 1,700,
  for 32 fcc atoms at 4.5 Å, not the ≈ 128,000 candidates) and gives the same energy.
  ``allocate(R)`` sizes the static ``capacity`` from the count within the cutoff at R ×
  ``capacity_multiplier`` (+ ``extra_capacity`` × N); ``update(R)`` recounts and sets ``did_buffer_overflow`` when the count exceeds it, and the
  energy of a list too small for R is NaN, so :func:`update_or_reallocate` and :func:`run_in_chunks`
  reallocate exactly as for JAX-MD's lists. ``images=True`` forces it, ``images=False`` refuses small
  cells with an error. When a later ``box=`` argument makes the cell too small for the translations
  (or the mode) chosen at construction, the energy is NaN rather than silently wrong;
  ``image_margin`` (Å) enlarges the translation box for a cell that may shrink. The candidate count
  is N² · Π_k (2 m_k + 1), so the list is meant for small cells; beyond a few tens of atoms a cell
  wide enough for the minimum image is cheaper.

Free space (molecules, clusters): ``space.free()`` with Cartesian coordinates and JAX-MD's all-pairs
candidate search (no cell list), fine up to a few hundred atoms.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import jraph
import numpy as np

try:
    from jax_md import dataclasses as jmd_dataclasses
    from jax_md import partition, space
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "jace.interfaces.jax_md needs jax-md, an optional dependency: pip install 'jace[md]' (or jax-md>=0.2.8)"
    ) from err

from jace.models.potential import Potential, as_potential, total_energies

__all__ = [
    "ImageNeighborList",
    "ImageNeighborFns",
    "JaxMDSystem",
    "box_from_cell",
    "cell_from_box",
    "perpendicular_widths",
    "needs_images",
    "image_neighbor_list",
    "jace_neighbor_list",
    "from_configuration",
    "jax_md_system",
    "update_or_reallocate",
    "neighbor_step",
    "run_in_chunks",
]

_FORMATS = {
    "sparse": partition.NeighborListFormat.Sparse,
    "ordered_sparse": partition.NeighborListFormat.OrderedSparse,
}


# --------------------------------------------------------------------------------------------------
# Boxes and cells (host side)
# --------------------------------------------------------------------------------------------------


def cell_from_box(box) -> np.ndarray:
    """[3, 3] cell, Å, lattice vectors as rows (ASE), from a JAX-MD box (scalar, [3] or [3, 3] T)."""
    b = np.asarray(box, dtype=np.float64)
    if b.ndim == 0 or b.size == 1:
        return np.eye(3) * float(b.reshape(()))
    if b.shape == (3,):
        return np.diag(b)
    if b.shape == (3, 3):
        return b.T.copy()
    raise ValueError(f"box must be a scalar, a [3] vector or a [3, 3] matrix (JAX-MD's T), got shape {b.shape}")


def box_from_cell(cell) -> np.ndarray:
    """JAX-MD's box T = cell.T ([3, 3], columns are the lattice vectors) from an ASE/jace cell (rows)."""
    c = np.asarray(cell, dtype=np.float64)
    if c.shape != (3, 3):
        raise ValueError(f"cell must be a [3, 3] matrix with the lattice vectors as rows, got shape {c.shape}")
    return c.T.copy()


def perpendicular_widths(box) -> np.ndarray:
    """[3] distances between opposite faces of the cell, Å: h_k = V / |a_l × a_m| (1 / |row k of T⁻¹|)."""
    cell = cell_from_box(box)
    volume = abs(np.linalg.det(cell))
    if not volume > 1e-12:
        raise ValueError(f"box {np.asarray(box).tolist()} has zero volume")
    return 1.0 / np.linalg.norm(np.linalg.inv(cell), axis=0)


def needs_images(box, cutoff: float) -> bool:
    """True when the minimum image misses neighbours: cutoff > half the smallest perpendicular width."""
    return bool(cutoff > 0.5 * perpendicular_widths(box).min())


def _widths_traced(box) -> jnp.ndarray:
    """[3] perpendicular widths of a (traced) JAX-MD box T; the same as :func:`perpendicular_widths`."""
    box = jnp.asarray(box)
    if box.ndim == 0 or box.size == 1:
        return jnp.full((3,), jnp.abs(box.reshape(())))
    if box.ndim == 1:
        return jnp.abs(box)
    return 1.0 / jnp.linalg.norm(jnp.linalg.inv(box), axis=1)  # rows of T⁻¹ = columns of inv(cell)


def _is_upper_triangular(box) -> bool:
    b = np.asarray(box)
    return b.ndim < 2 or bool(np.all(np.triu(b) == b))


# --------------------------------------------------------------------------------------------------
# Image lists for small periodic cells
# --------------------------------------------------------------------------------------------------


@jmd_dataclasses.dataclass
class ImageNeighborList:
    """A static candidate set (all pairs × lattice images) compacted to ``capacity`` model edges.

    For cells smaller than twice the cutoff. The candidates never change; which of them lie within the
    cutoff is recomputed at every evaluation, and only those (at most ``capacity``) reach the model.

    idx: [2, E] int32 candidates, row 0 the neighbour j, row 1 the centre i (JAX-MD's sparse layout);
      every ordered pair (i, j), i = j included.
    shifts: [E, 3] the integer lattice translation n of each candidate (float, fractional units).
    overflow: [] bool, sticky: True once an update found more candidates within the cutoff than
      ``capacity`` (the list must then be reallocated, e.g. by :func:`update_or_reallocate`).
    images: [3] the m_k of the translation box, static (for the coverage check of a new box).
    capacity: number of model edges, static (sized by ``allocate``).
    update_fn: ``update_fn(position, nbrs, **kwargs) -> nbrs``, static (from :func:`image_neighbor_list`).
    """

    idx: jnp.ndarray
    shifts: jnp.ndarray
    overflow: jnp.ndarray
    images: tuple = jmd_dataclasses.static_field()
    capacity: int = jmd_dataclasses.static_field()
    update_fn: Callable = jmd_dataclasses.static_field()

    def update(self, position, **kwargs) -> "ImageNeighborList":
        """The list with ``overflow`` recomputed at ``position`` (jittable; ``box=`` as for energy_fn)."""
        return self.update_fn(position, self, **kwargs)

    @property
    def did_buffer_overflow(self):
        return self.overflow

    @property
    def max_occupancy(self) -> int:
        return int(self.capacity)

    @property
    def n_candidates(self) -> int:
        return int(self.idx.shape[1])


@dataclasses.dataclass(frozen=True)
class ImageNeighborFns:
    """``allocate(R)`` and ``update(R, nbrs)``, as JAX-MD's ``NeighborListFns``."""

    allocate: Callable
    update: Callable

    def __iter__(self):
        return iter((self.allocate, self.update))


def _image_vectors(displacement_fn, box0, nbrs, R, kwargs, perturbation=None):
    """[E, 3] Cartesian vectors r_j − r_i + T n (Å) of every candidate of an image list.

    ``kwargs`` may hold ``box``/``new_box`` (passed to ``displacement_fn``, and T); ``perturbation``
    (3×3) multiplies every vector.
    """
    dkw = {k: v for k, v in kwargs.items() if k in ("box", "new_box")}
    if perturbation is not None:
        dkw["perturbation"] = perturbation
    senders, receivers = nbrs.idx[0], nbrs.idx[1]
    vec = jax.vmap(lambda ra, rb: displacement_fn(ra, rb, **dkw))(R[senders], R[receivers])
    T = kwargs.get("new_box", kwargs.get("box", box0))
    offsets = space.raw_transform(T, nbrs.shifts.astype(R.dtype))
    if perturbation is not None:
        offsets = space.raw_transform(perturbation, offsets)
    return vec + offsets


def image_neighbor_list(
    box,
    cutoff: float,
    n_atoms: int,
    margin: float = 0.0,
    *,
    displacement_fn: Callable | None = None,
    fractional_coordinates: bool = True,
    capacity_multiplier: float = 1.25,
) -> ImageNeighborFns:
    """Neighbour functions for the compacted image list of an ``n_atoms`` cell.

    Args:
      box: JAX-MD box T (scalar, [3] or [3, 3]), Å.
      cutoff: Å. margin: extra length (Å) covered, so that the cell may shrink a little later.
      n_atoms: number of atoms.
      displacement_fn: the space's displacement function (default: ``space.periodic_general(box,
        fractional_coordinates=fractional_coordinates)``).
      capacity_multiplier: spare room of the model-edge capacity, as JAX-MD's lists.
    The translations n_k run over [-m_k, m_k], m_k = ceil((cutoff + margin) / h_k + 1/2): every vector
    shorter than the cutoff is (minimum-image vector) + T n for one of them. ``allocate(R,
    extra_capacity=0, box=...)`` counts the candidates within the cutoff at R, C, and sets
    ``capacity = min(E, ceil(C · capacity_multiplier) + extra_capacity · n_atoms)``; ``update(R, nbrs)``
    (jittable) recounts and sets ``overflow`` when the count exceeds the capacity.
    """
    if n_atoms < 1:
        raise ValueError(f"image_neighbor_list needs at least one atom, got n_atoms={n_atoms}")
    if not capacity_multiplier >= 1.0:
        raise ValueError(f"capacity_multiplier must be >= 1, got {capacity_multiplier}")
    widths = perpendicular_widths(box)
    m = tuple(int(math.ceil((cutoff + margin) / h + 0.5)) for h in widths)
    grid = np.stack(
        np.meshgrid(*[np.arange(-mk, mk + 1) for mk in m], indexing="ij"), axis=-1
    ).reshape(-1, 3)
    i, j, n = np.meshgrid(np.arange(n_atoms), np.arange(n_atoms), np.arange(len(grid)), indexing="ij")
    i, j, n = i.ravel(), j.ravel(), n.ravel()
    keep = ~((i == j) & np.all(grid[n] == 0, axis=1))
    idx = np.stack([j[keep], i[keep]]).astype(np.int32)
    shifts = grid[n[keep]].astype(np.float64)
    n_cand = int(idx.shape[1])
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    box0 = jnp.asarray(box, dtype=dtype)
    if displacement_fn is None:
        displacement_fn, _ = space.periodic_general(box0, fractional_coordinates=fractional_coordinates)
    cutoff_sq = float(cutoff) ** 2

    def count(position, nbrs, **kwargs):
        vec = _image_vectors(displacement_fn, box0, nbrs, jnp.asarray(position), kwargs)
        return jnp.sum(jnp.sum(vec * vec, axis=-1) < cutoff_sq)

    def update(position, neighbors, **kwargs):
        over = count(position, neighbors, **kwargs) > neighbors.capacity
        return dataclasses.replace(neighbors, overflow=neighbors.overflow | over)

    def allocate(position, extra_capacity: int = 0, capacity: int | None = None, **kwargs):
        """The list at ``position`` (host side); ``capacity`` overrides the sizing (e.g. E: never overflows)."""
        if np.ndim(position) != 2 or np.shape(position)[0] != n_atoms:
            raise ValueError(f"image list was built for {n_atoms} atoms, got positions of shape {np.shape(position)}")
        pos = jnp.asarray(position)
        nbrs = ImageNeighborList(
            jnp.asarray(idx), jnp.asarray(shifts, dtype=pos.dtype), jnp.zeros((), bool), m, n_cand, update
        )
        if capacity is None:
            c = int(count(pos, nbrs, **kwargs))
            capacity = int(math.ceil(c * capacity_multiplier)) + int(extra_capacity) * n_atoms
        capacity = max(1, min(n_cand, int(capacity)))
        return dataclasses.replace(nbrs, capacity=capacity)

    return ImageNeighborFns(allocate, update)


# --------------------------------------------------------------------------------------------------
# The energy function
# --------------------------------------------------------------------------------------------------


def _species_indices(potential: Potential, numbers) -> np.ndarray:
    nums = np.asarray(numbers)
    if nums.ndim != 1 or nums.size == 0:
        raise ValueError(f"numbers must be a non-empty 1-d array of atomic numbers or symbols, got shape {nums.shape}")
    if nums.dtype.kind in "UO":
        from ase.data import atomic_numbers

        bad = [s for s in nums if str(s) not in atomic_numbers]
        if bad:
            raise ValueError(f"unknown chemical element(s) {bad} in numbers")
        nums = np.asarray([atomic_numbers[str(s)] for s in nums])
    return potential.species.indices(nums.astype(np.int64), source="jax-md system")


def _graph_energy(site_energy_fn, params, species_padded, receivers, senders, vectors, valid, paired=False) -> jnp.ndarray:
    """Total energy, eV, of one structure given its edges as Cartesian vectors.

    The graph has the structure's N nodes plus one padding node (index N), which owns every invalid
    edge; the edge vectors enter as Cartesian shifts with an identity cell and all positions at the
    origin, so r_ij = shifts (jace's graph convention r_ij = r_j − r_i + S·cell). ``paired``: edge
    k + E/2 is the reverse of edge k (same length, same validity), so the graph gets the identity as
    its ``pair_order`` and models that use it (multi-ACE) run their radial MLPs on half the edges.
    """
    n_pad = species_padded.shape[0]
    n = n_pad - 1
    dtype = vectors.dtype
    pad = jnp.asarray(n, dtype=jnp.int32)
    edges = {"shifts": jnp.where(valid[:, None], vectors, 0.0), "mask": valid}
    if paired:
        edges["pair_order"] = jnp.arange(receivers.shape[0], dtype=jnp.int32)
    graph = jraph.GraphsTuple(
        nodes={
            "positions": jnp.zeros((n_pad, 3), dtype),
            "species": species_padded,
            "forces": jnp.zeros((n_pad, 3), dtype),
            "mask": jnp.arange(n_pad) < n,
        },
        edges=edges,
        senders=jnp.where(valid, senders, pad).astype(jnp.int32),
        receivers=jnp.where(valid, receivers, pad).astype(jnp.int32),
        n_node=jnp.asarray([n, 1], dtype=jnp.int32),
        n_edge=jnp.asarray([receivers.shape[0], 0], dtype=jnp.int32),
        globals={"cell": jnp.broadcast_to(jnp.eye(3, dtype=dtype), (2, 3, 3)), "mask": jnp.asarray([True, False])},
    )
    return total_energies(site_energy_fn, params, graph)[0][0]


def _with_hashable_metadata(fns):
    """JAX-MD's ``NeighborListFns`` whose lists keep ``cell_size`` (a static field) as a Python float.

    With fractional coordinates JAX-MD 0.2.x stores ``cell_size`` as a JAX array in a static
    (metadata) field; two separately allocated lists then cannot be compared by ``jax.jit``'s cache
    (``bool`` of a traced comparison) and a second jitted function call fails. A float compares fine.
    """

    def fix(nbrs):
        cs = nbrs.cell_size
        if cs is not None and not isinstance(cs, (int, float)) and np.size(cs) == 1:
            nbrs = dataclasses.replace(nbrs, cell_size=float(np.asarray(cs).reshape(())))
        return nbrs

    def allocate(position, extra_capacity: int = 0, **kwargs):
        return fix(fns.allocate(position, extra_capacity, **kwargs))

    return partition.NeighborListFns(allocate, fns.update)


def jace_neighbor_list(
    displacement_fn: Callable,
    box,
    model,
    numbers,
    *,
    fractional_coordinates: bool | None = None,
    dr_threshold: float = 0.0,
    capacity_multiplier: float = 1.25,
    format: str = "ordered_sparse",
    disable_cell_list: bool | None = None,
    images: bool | None = None,
    image_margin: float = 0.0,
    params=None,
):
    """``(neighbor_fn, energy_fn)`` for a jace model on a JAX-MD space, in JAX-MD's own style.

    Args:
      displacement_fn: from ``space.periodic_general(box, fractional_coordinates=...)``,
        ``space.periodic(side)`` or ``space.free()``.
      box: the JAX-MD box T of that space (scalar, [3] or [3, 3]; columns are lattice vectors, Å), or
        ``None`` in free space.
      model: a jace model object, a :class:`~jace.models.potential.Potential` or a model file path.
      numbers: [N] atomic numbers (or chemical symbols) of the atoms, in the order of ``R``.
      fractional_coordinates: must match the space; ``None`` means True with a box (JAX-MD's default
        for ``periodic_general``) and False in free space.
      dr_threshold: neighbour-list skin, Å (0 rebuilds every update).
      capacity_multiplier: spare room of the neighbour buffer (also of the image list's edge capacity).
      format: "ordered_sparse" (default: each pair stored once, half the buffer; the energy function
        appends the reverse edges so that multi-ACE's radial MLPs run on half of them) or "sparse"
        (JAX-MD's default: both directions stored).
      disable_cell_list: ``None`` chooses: JAX-MD's cell list is used only where it is valid (an
        orthorhombic box, or an upper-triangular box with fractional coordinates) and the cell is
        large enough for it; free space never uses one.
      images: ``None`` detects whether the cell needs several images (see module docstring); True
        forces the image list; False raises for cells that need it.
      image_margin: Å the image list covers beyond the cutoff (for a cell that may shrink later).
      params: default parameters of ``energy_fn`` (the model's own when ``None``).

    Returns:
      neighbor_fn: JAX-MD ``NeighborListFns`` (or :class:`ImageNeighborFns`): ``allocate(R)`` outside
        jit, ``update(R, nbrs)`` inside.
      energy_fn(R, neighbor, *, params=None, perturbation=None, **kwargs) -> scalar energy, eV; NaN
        when the neighbour buffer overflowed or a ``box`` argument makes the cell too small for the
        chosen mode. R: [N, 3]. ``kwargs`` (box, new_box) go to ``displacement_fn``.
    """
    pot = as_potential(model) if not isinstance(model, Potential) else model
    species = _species_indices(pot, numbers)
    n_atoms = len(species)
    species_padded = jnp.asarray(np.concatenate([species, [0]]), dtype=jnp.int32)
    cutoff = float(pot.cutoff)
    default_params = pot.params if params is None else params
    if format not in _FORMATS:
        raise ValueError(f"format must be one of {sorted(_FORMATS)}, got {format!r}")
    fmt = _FORMATS[format]
    free = box is None
    if fractional_coordinates is None:
        fractional_coordinates = not free
    if free and fractional_coordinates:
        raise ValueError("fractional_coordinates=True needs a periodic box; free space (box=None) is Cartesian")

    if free:
        use_images = False
        if images:
            raise ValueError("images=True needs a periodic box; got box=None (free space)")
        box0 = None
    else:
        box0 = jnp.asarray(box, dtype=jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
        small = needs_images(box, cutoff)
        if images is False and small:
            raise ValueError(
                f"cutoff {cutoff} Å is larger than half the smallest perpendicular width "
                f"{perpendicular_widths(box).min():.4f} Å of the box: the minimum image misses neighbours; "
                "use images=True (or None)"
            )
        use_images = bool(small) if images is None else bool(images)

    if use_images:
        neighbor_fn = image_neighbor_list(
            box, cutoff, n_atoms, margin=image_margin, displacement_fn=displacement_fn,
            capacity_multiplier=capacity_multiplier,
        )
        # neighbor=None: every candidate is a model edge (never overflows, slow; pass a list for speed).
        static_list = neighbor_fn.allocate(np.zeros((n_atoms, 3)), capacity=2**62)
    else:
        if disable_cell_list is None:
            b = None if free else np.asarray(box)
            ok_box = (not free) and (b.ndim < 2 or (fractional_coordinates and _is_upper_triangular(b)))
            disable_cell_list = not ok_box
        elif not disable_cell_list and (free or (np.asarray(box).ndim == 2 and not (
            fractional_coordinates and _is_upper_triangular(box)))):
            raise ValueError(
                "JAX-MD's cell list needs an orthorhombic box, or an upper-triangular box with fractional "
                "coordinates; use disable_cell_list=None or True for this box"
            )
        neighbor_fn = _with_hashable_metadata(
            partition.neighbor_list(
                displacement_fn,
                1.0 if free else box,
                cutoff,
                dr_threshold=dr_threshold,
                capacity_multiplier=capacity_multiplier,
                disable_cell_list=bool(disable_cell_list),
                fractional_coordinates=bool(fractional_coordinates),
                format=fmt,
            )
        )
        static_list = None

    site_energy_fn = pot.site_energy_fn
    displacement_pairs = jax.vmap(lambda ra, rb, kw: displacement_fn(ra, rb, **kw), in_axes=(0, 0, None))

    def energy_fn(R, neighbor=None, *, params=None, perturbation=None, **kwargs):
        p = default_params if params is None else params
        if R.ndim != 2 or R.shape != (n_atoms, 3):
            raise ValueError(f"energy_fn was built for {n_atoms} atoms: R must have shape ({n_atoms}, 3), got {R.shape}")
        dkw = {k: v for k, v in kwargs.items() if k in ("box", "new_box")}
        if perturbation is not None:
            dkw["perturbation"] = perturbation
        nbrs = neighbor if neighbor is not None else static_list
        if nbrs is None:
            raise ValueError("energy_fn needs neighbor=... (a list from neighbor_fn.allocate / update)")
        bad = jnp.asarray(nbrs.did_buffer_overflow).astype(bool)
        paired = False
        if use_images:
            if not isinstance(nbrs, ImageNeighborList):
                raise ValueError("this energy_fn uses an image list (small cell); pass the list from its own neighbor_fn")
            cand = _image_vectors(displacement_fn, box0, nbrs, R, kwargs, perturbation)
            within = jnp.sum(cand * cand, axis=-1) < cutoff * cutoff
            n_within = jnp.sum(within)
            if nbrs.capacity >= nbrs.n_candidates:  # every candidate is a model edge
                senders, receivers, vec = nbrs.idx[0], nbrs.idx[1], cand
            else:  # compact: the (at most capacity) candidates within the cutoff become the model's edges
                (sel,) = jnp.nonzero(within, size=nbrs.capacity, fill_value=0)
                senders, receivers, vec = nbrs.idx[0][sel], nbrs.idx[1][sel], cand[sel]
                inside = jnp.arange(nbrs.capacity) < n_within
                bad = bad | (n_within > nbrs.capacity)  # edges lost: NaN, never silently wrong
            if "box" in kwargs or "new_box" in kwargs:  # coverage of the static translations
                T = kwargs.get("new_box", kwargs.get("box", box0))
                need = jnp.ceil(cutoff / _widths_traced(T) + 0.5)
                bad = bad | jnp.any(need > jnp.asarray(nbrs.images, dtype=need.dtype))
        else:
            if not isinstance(nbrs, partition.NeighborList):
                raise ValueError(f"neighbor must be a JAX-MD NeighborList from this neighbor_fn, got {type(nbrs).__name__}")
            idx = nbrs.idx
            if idx.ndim != 2 or idx.shape[0] != 2:
                raise ValueError("jace_neighbor_list needs a Sparse or OrderedSparse neighbour list (idx of shape [2, K])")
            senders, receivers = idx[0], idx[1]
            inside = (senders < n_atoms) & (receivers < n_atoms)
            s_safe, r_safe = jnp.where(inside, senders, 0), jnp.where(inside, receivers, 0)
            vec = displacement_pairs(R[s_safe], R[r_safe], dkw)
            if nbrs.format is partition.NeighborListFormat.OrderedSparse:
                # each pair once: append the reverse edges, whose vectors are exactly −vec, so that
                # edge k + K is the reverse of edge k (the model's radial MLPs then run on half)
                s_safe, r_safe = jnp.concatenate([s_safe, r_safe]), jnp.concatenate([r_safe, s_safe])
                vec, inside = jnp.concatenate([vec, -vec]), jnp.concatenate([inside, inside])
                paired = True
            if not free and ("box" in kwargs or "new_box" in kwargs):  # minimum image still valid?
                T = kwargs.get("new_box", kwargs.get("box"))
                bad = bad | (cutoff > 0.5 * jnp.min(_widths_traced(T)))
            senders, receivers = s_safe, r_safe
            vec = jnp.where(inside[:, None], vec, 0.0)
        r2 = jnp.sum(vec * vec, axis=-1)
        valid = r2 < cutoff * cutoff
        if not use_images or nbrs.capacity < nbrs.n_candidates:
            valid = valid & inside
        energy = _graph_energy(site_energy_fn, p, species_padded, receivers, senders, vec, valid, paired)
        # NaN energy *and* NaN forces (a where() would give zero forces) when the list is incomplete.
        # The second term reaches every atom: an atom whose pairs were all cut from an overflowed
        # list has no edge to carry the NaN back to it.
        return energy * jnp.where(bad, jnp.nan, 1.0) + jnp.where(bad, jnp.nan, 0.0) * jnp.sum(R)

    return neighbor_fn, energy_fn


# --------------------------------------------------------------------------------------------------
# A structure as a ready-made JAX-MD system
# --------------------------------------------------------------------------------------------------


class JaxMDSystem(NamedTuple):
    """A structure and a jace model on a JAX-MD space (see :func:`from_configuration`).

    positions: [N, 3] R in the space's coordinates (fractional in [0, 1) or Cartesian Å).
    box: JAX-MD box T ([3, 3], columns lattice vectors, Å) or None (free space).
    numbers: [N] atomic numbers; masses: [N] amu (ASE's standard atomic masses).
    displacement_fn, shift_fn: the JAX-MD space; neighbor_fn, energy_fn: from :func:`jace_neighbor_list`.
    rotation: [3, 3] Q with x_here = x_original @ Q.T (the structure is rotated so that T is upper
      triangular, as JAX-MD's fractional cell list wants; identity when not rotated). Forces and
      stresses map back with F_original = F_here @ Q, σ_original = Qᵀ σ_here Q.
    fractional_coordinates: whether ``positions`` are fractional.
    uses_images: True when the image list (small cell) is in use.
    cutoff: Å; potential: the jace Potential.
    """

    positions: jnp.ndarray
    box: object
    numbers: np.ndarray
    masses: jnp.ndarray
    displacement_fn: Callable
    shift_fn: Callable
    neighbor_fn: object
    energy_fn: Callable
    rotation: np.ndarray
    fractional_coordinates: bool
    uses_images: bool
    cutoff: float
    potential: Potential

    def cartesian(self, R=None) -> jnp.ndarray:
        """[N, 3] Cartesian positions (Å, in this system's orientation) of R (default: ``positions``)."""
        R = self.positions if R is None else R
        if self.box is None or not self.fractional_coordinates:
            return R
        return space.raw_transform(self.box, R)


def _upper_triangular_rotation(cell: np.ndarray) -> np.ndarray:
    """Orthogonal Q with Q cellᵀ upper triangular with a positive diagonal.

    det Q = +1 for a right-handed cell; for a left-handed one Q includes an inversion, which jace
    energies are invariant under (forces and stresses map back the same way).
    """
    q0, r0 = np.linalg.qr(cell.T)
    d = np.sign(np.diag(r0))
    d[d == 0] = 1.0
    return (q0 * d).T  # Q = D Q0ᵀ ⇒ Q cellᵀ = D R0


def from_configuration(
    model,
    structure,
    *,
    fractional_coordinates: bool = True,
    upper_triangular: bool = True,
    **kwargs,
) -> JaxMDSystem:
    """A :class:`JaxMDSystem` for one structure (ASE ``Atoms`` or jace ``Configuration``).

    Fully periodic structures use ``space.periodic_general`` (``fractional_coordinates`` as given,
    positions wrapped into the cell); structures without periodic boundaries use ``space.free()``
    with Cartesian positions. Mixed boundary conditions (slabs) are refused: JAX-MD's spaces are
    periodic in all directions or in none. With ``upper_triangular`` the structure is rotated so that
    the box is upper triangular (``rotation`` records how). Other keyword arguments go to
    :func:`jace_neighbor_list`.
    """
    from ase.data import atomic_masses

    from jace.data.configuration import Configuration

    if not isinstance(structure, Configuration):
        from jace.data.io import configuration_from_atoms

        structure = configuration_from_atoms(structure)
    pot = as_potential(model) if not isinstance(model, Potential) else model
    pbc = np.asarray(structure.pbc, dtype=bool)
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    numbers = np.asarray(structure.numbers)
    masses = jnp.asarray(atomic_masses[numbers], dtype=dtype)
    if pbc.all():
        cell = np.asarray(structure.cell, dtype=np.float64)
        q = _upper_triangular_rotation(cell) if upper_triangular else np.eye(3)
        cell_r = cell @ q.T
        pos_r = np.asarray(structure.positions, dtype=np.float64) @ q.T
        box = box_from_cell(cell_r)
        if upper_triangular:
            box = np.triu(box)  # remove round-off below the diagonal
        frac = np.mod(pos_r @ np.linalg.inv(cell_r), 1.0)
        frac = np.where(frac >= 1.0, 0.0, frac)
        R = frac if fractional_coordinates else frac @ cell_r
        box_j = jnp.asarray(box, dtype=dtype)
        displacement_fn, shift_fn = space.periodic_general(box_j, fractional_coordinates=fractional_coordinates)
        neighbor_fn, energy_fn = jace_neighbor_list(
            displacement_fn, box_j, pot, numbers, fractional_coordinates=fractional_coordinates, **kwargs
        )
        uses_images = isinstance(neighbor_fn, ImageNeighborFns)
    elif not pbc.any():
        q = np.eye(3)
        R = np.asarray(structure.positions, dtype=np.float64)
        box_j = None
        displacement_fn, shift_fn = space.free()
        neighbor_fn, energy_fn = jace_neighbor_list(displacement_fn, None, pot, numbers, **kwargs)
        fractional_coordinates = False
        uses_images = False
    else:
        raise ValueError(
            f"{structure.source}: JAX-MD spaces are periodic in all directions or in none; got pbc={pbc.tolist()}"
        )
    return JaxMDSystem(
        jnp.asarray(R, dtype=dtype),
        box_j,
        numbers,
        masses,
        displacement_fn,
        shift_fn,
        neighbor_fn,
        energy_fn,
        q,
        bool(fractional_coordinates),
        uses_images,
        float(pot.cutoff),
        pot,
    )


jax_md_system = from_configuration  # the name exported at the top level (``jace.jax_md_system``)


# --------------------------------------------------------------------------------------------------
# Overflow handling outside jit
# --------------------------------------------------------------------------------------------------


def _overflowed(nbrs) -> bool:
    return bool(jax.device_get(jnp.asarray(nbrs.did_buffer_overflow)).any())


def _reallocate(neighbor_fn, nbrs, R, grow: float = 1.0, margin: float = 1.0, **kwargs):
    """A fresh list allocated at R, with capacity at least ``grow`` × that of ``nbrs`` and ``margin`` ×
    what R itself needs (on top of the list's own ``capacity_multiplier``)."""
    new = neighbor_fn.allocate(R, **kwargs)
    want = max(
        int(math.ceil(grow * int(getattr(nbrs, "max_occupancy", 0) or 0))),
        int(math.ceil(margin * int(new.max_occupancy))),
    )
    if int(new.max_occupancy) < want:
        n = int(np.shape(R)[0])
        new = neighbor_fn.allocate(R, extra_capacity=-(-(want - int(new.max_occupancy)) // n), **kwargs)
    return new


def update_or_reallocate(neighbor_fn, nbrs, R, **kwargs):
    """(nbrs, reallocated): ``nbrs.update(R)``, or, if that overflows, a new list allocated at R.

    Host-side (not jittable: a reallocated list has a new static capacity). ``kwargs`` (e.g.
    ``box=``) go to update/allocate.
    """
    new = nbrs.update(R, **kwargs)
    if not _overflowed(new):
        return new, False
    new = _reallocate(neighbor_fn, nbrs, R, **kwargs)
    if _overflowed(new):  # pragma: no cover - allocate sizes the buffer from R itself
        raise RuntimeError("neighbour list still overflows after reallocation")
    return new, True


def neighbor_step(apply_fn: Callable, **step_kwargs) -> Callable:
    """``step(state, nbrs) -> (state, nbrs)``: one JAX-MD integrator step, then ``nbrs.update``.

    ``apply_fn`` is the second function of ``simulate.nve`` / ``simulate.nvt_langevin`` / …; extra
    keyword arguments (``kT=…``, ``params=…``) are passed to it every step.
    """

    def step(state, nbrs):
        state = apply_fn(state, neighbor=nbrs, **step_kwargs)
        return state, nbrs.update(state.position)

    return step


class ChunkInfo(NamedTuple):
    """What :func:`run_in_chunks` did.

    n_chunks: chunks accepted; n_reallocations: chunks redone after an overflow; capacity: the final
    list's capacity; records: the stacked output of ``record`` after every step (leading axis
    n_steps), or None.
    """

    n_chunks: int
    n_reallocations: int
    capacity: int
    records: object = None


@functools.lru_cache(maxsize=32)
def _chunk_fn(step_fn, record):
    """A jitted chunk of ``length`` steps (static), compiled once per step function and capacity.

    Returns ((state, nbrs), overflow_position, records): overflow_position is ``state.position`` right
    after the first step whose list update overflowed (finite: that step still used a complete list),
    the configuration a bigger list must be sized for.
    """

    def advance(c):
        state, nbrs, bad_position, seen = c
        state, nbrs = step_fn(state, nbrs)
        over = jnp.asarray(nbrs.did_buffer_overflow).astype(bool)
        bad_position = jnp.where(over & ~seen, state.position, bad_position)
        return state, nbrs, bad_position, seen | over

    @functools.partial(jax.jit, static_argnums=2)
    def chunk(state, nbrs, length):
        init = (state, nbrs, state.position, jnp.zeros((), dtype=bool))
        if record is None:
            state, nbrs, bad_position, _ = jax.lax.fori_loop(0, length, lambda _, c: advance(c), init)
            return (state, nbrs), bad_position, None

        def body(c, _):
            c = advance(c)
            return c, record(c[0], c[1])

        (state, nbrs, bad_position, _), rec = jax.lax.scan(body, init, None, length=length)
        return (state, nbrs), bad_position, rec

    return chunk


def run_in_chunks(
    step_fn: Callable,
    state,
    nbrs,
    neighbor_fn,
    n_steps: int,
    chunk_steps: int = 100,
    record: Callable | None = None,
    callback: Callable | None = None,
    max_retries: int = 10,
):
    """Run ``n_steps`` of ``step_fn`` in jitted ``lax.fori_loop`` chunks, reallocating on overflow.

    After each chunk the overflow flag is read on the host; if the list overflowed, a bigger list is
    allocated (sized for the configuration whose update overflowed, with 25 % to spare beyond it and
    beyond the old capacity) and the chunk is redone from its starting state, so no accepted step ever
    used an incomplete list. A chunk is compiled once per (length, list capacity, step function).

    Args:
      step_fn: ``(state, nbrs) -> (state, nbrs)``, e.g. :func:`neighbor_step` (apply_fn).
      state, nbrs: the integrator state (with ``.position``) and an allocated list.
      neighbor_fn: the list's ``allocate``/``update`` functions.
      n_steps, chunk_steps: total steps and steps per chunk (the last chunk may be shorter).
      record: optional ``record(state, nbrs) -> pytree`` evaluated inside the loop after every step
        (the chunk then uses ``lax.scan``); the results come back stacked in ``info.records``.
      callback: called on the host after every accepted chunk as ``callback(state, nbrs, steps_done)``.
    Returns:
      (state, nbrs, ChunkInfo).
    """
    if n_steps < 0 or chunk_steps < 1:
        raise ValueError(f"need n_steps >= 0 and chunk_steps >= 1, got {n_steps}, {chunk_steps}")

    chunk = _chunk_fn(step_fn, record)
    done, n_chunks, n_realloc, records = 0, 0, 0, []
    while done < n_steps:
        length = min(chunk_steps, n_steps - done)
        for attempt in range(max_retries + 1):
            (new_state, new_nbrs), bad_position, rec = chunk(state, nbrs, length)
            if not _overflowed(new_nbrs):
                break
            if attempt == max_retries:
                raise RuntimeError(f"neighbour list kept overflowing after {max_retries} reallocations")
            # Sized for the configuration that overflowed, with 25 % to spare beyond it and beyond the old one.
            nbrs = _reallocate(neighbor_fn, new_nbrs, bad_position, grow=1.25, margin=1.25)
            nbrs = nbrs.update(state.position)  # rebuild at the chunk's start with the bigger buffer
            if _overflowed(nbrs):
                nbrs = _reallocate(neighbor_fn, nbrs, state.position)
            n_realloc += 1
        state, nbrs = new_state, new_nbrs
        if rec is not None:
            records.append(rec)
        done += length
        n_chunks += 1
        if callback is not None:
            callback(state, nbrs, done)
    stacked = None
    if records:
        stacked = jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs, axis=0), *records)
    return state, nbrs, ChunkInfo(n_chunks, n_realloc, int(getattr(nbrs, "max_occupancy", 0) or 0), stacked)
