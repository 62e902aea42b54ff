"""An ASE calculator for any jace model or model file, and clear errors for bad structures.

    from jace.interfaces.ase_calculator import JaceCalculator
    atoms.calc = JaceCalculator("model.jace")            # or a model object, dtype="float32", ...
    atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress(), atoms.get_potential_energies()

Properties (ASE units and conventions): ``energy`` and ``free_energy`` (eV, equal: jace models have no
electronic entropy), ``forces`` ([N, 3] eV/Å), ``energies`` ([N] site energies, eV) and, for structures
with periodic boundary conditions, ``stress`` (Voigt xx yy zz yz xz xy, eV/Å³, positive = tensile).
Asking for the stress of a structure without periodic boundary conditions raises ASE's
``PropertyNotImplementedError``.

Compilation. The neighbour list is built on the host (``jace.data.neighbours``, matscipy), and the
graph is padded to a node and an edge *capacity* taken from a geometric ladder (×``growth``, multiples
of 8). The first structure gets the smallest rung that holds it; when a structure outgrows its
capacity, the new one is chosen with ``headroom`` to spare, so sizes that fluctuate near a rung cost
one extra compilation, not a permanent margin on every step. A capacity only changes when the
structure outgrows it (or needs less than 1/growth² of it), and ``jax.jit`` keeps the function
compiled for every capacity seen, so an MD run or a relaxation compiles a handful of times, not every
step. ``calc.n_compilations`` counts the real traces (a Python counter incremented inside the traced
function). Padding edges cost as much as real ones; the defaults (growth 1.2, headroom 0.1 on
regrowth) pad a 64-atom C cell's 5,688 edges to 6,144, where growth 1.5 with headroom from the
first call (sessions before 13) padded them to 8,520 (``benchmarks/README.md``, "The ASE calculator's
padding").

Precision. ``dtype="float64"`` (default) needs 64-bit JAX, enabled before any array is made::

    import jax; jax.config.update("jax_enable_x64", True)

otherwise the calculator raises a ``ValueError`` that says so. ``dtype="float32"`` casts the model's
parameters and the positions/cell to float32 (faster; forces good to ~1e-5 relative). Results are
always returned as float64 numpy arrays.

Bad structures raise :class:`StructureError` (a ``ValueError``) naming the problem: no atoms, an
element the model does not know (atom index and element), two atoms closer than ``min_distance``
(both indices and the distance; default ``DEFAULT_MIN_DISTANCE`` = 1e-3 Å), a periodic structure with a
degenerate cell (zero volume), NaN positions, or a density so high that the neighbour list would
explode. A model file that is not a jace model raises ``jace.models.io.ModelFileError`` naming the file.
"""

from __future__ import annotations

import math

import jax
import jraph
import numpy as np
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from jace.data.configuration import Configuration
from jace.data.graph import Bucket, SpeciesMap, graph_from_configuration, pad_graph
from jace.models.potential import Potential, as_potential, predict

__all__ = [
    "DEFAULT_MIN_DISTANCE",
    "MAX_NEIGHBOURS_PER_ATOM",
    "StructureError",
    "JaceCalculator",
    "atoms_to_graph",
    "choose_capacity",
    "pad_to_capacity",
    "resolve_dtype",
    "load_potential",
]

DEFAULT_MIN_DISTANCE = 1e-3  # Å: two atoms (or an atom and its periodic image) closer than this are an error
MAX_NEIGHBOURS_PER_ATOM = 10_000  # expected neighbours per atom above which a periodic structure is rejected


class StructureError(ValueError):
    """A structure a jace model cannot evaluate: empty, unknown element, overlapping atoms, bad cell."""


# --------------------------------------------------------------------------------------------------
# Functional core: structure → checked graph → padded graph
# --------------------------------------------------------------------------------------------------


def describe_atoms(atoms) -> str:
    """A short name for error messages, e.g. ``Atoms(Cu3Au, 4 atoms)`` (cheap: called every MD step)."""
    from ase.data import chemical_symbols

    numbers, counts = np.unique(np.asarray(atoms.numbers), return_counts=True)
    formula = "".join(
        (chemical_symbols[z] if 0 <= z < len(chemical_symbols) else f"Z{z}") + (str(c) if c > 1 else "")
        for z, c in zip(numbers.tolist(), counts.tolist())
    )
    return f"Atoms({formula or 'empty'}, {len(atoms)} atoms)"


def atoms_to_graph(
    atoms,
    cutoff: float,
    species: SpeciesMap,
    min_distance: float = DEFAULT_MIN_DISTANCE,
    source: str | None = None,
    backend: str = "matscipy",
) -> jraph.GraphsTuple:
    """One ``ase.Atoms`` → one checked, unpadded numpy graph (float64), or a :class:`StructureError`.

    Args:
      atoms: the structure (positions Å, cell Å, pbc).
      cutoff: the model's cutoff, Å.
      species: the model's elements.
      min_distance: Å; any pair (periodic images included) closer than this is an error.
      source: the name used in error messages (default: formula and atom count).
      backend: neighbour-list backend (``jace.data.neighbours.BACKENDS``).
    """
    source = describe_atoms(atoms) if source is None else source
    n = len(atoms)
    if n == 0:
        raise StructureError(f"{source}: empty structure (no atoms); a jace model needs at least one atom")
    positions = np.asarray(atoms.get_positions(), dtype=np.float64)
    cell = np.asarray(atoms.cell[:], dtype=np.float64)
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if not np.all(np.isfinite(positions)):
        bad = np.unique(np.nonzero(~np.isfinite(positions))[0])
        raise StructureError(f"{source}: positions of atoms {bad[:10].tolist()} are NaN or inf")
    if not np.all(np.isfinite(cell)):
        raise StructureError(f"{source}: cell {cell.tolist()} contains NaN or inf")
    volume = abs(float(np.linalg.det(cell)))
    if pbc.any() and volume < 1e-8:
        raise StructureError(
            f"{source}: periodic structure (pbc={pbc.tolist()}) has a degenerate cell of volume {volume:.3g} Å³: "
            f"cell = {np.round(cell, 6).tolist()} Å"
        )
    if pbc.any():
        # Without this guard a tiny cell would make a neighbour list of billions of pairs (a hang).
        expected = n / volume * 4.0 / 3.0 * math.pi * cutoff**3
        if expected > MAX_NEIGHBOURS_PER_ATOM:
            raise StructureError(
                f"{source}: {n} atoms in a cell of {volume:.3g} Å³ would give about {expected:.3g} neighbours per "
                f"atom within the {cutoff} Å cutoff (limit {MAX_NEIGHBOURS_PER_ATOM}); the cell is too small or "
                f"atoms overlap"
            )
    config = Configuration(positions, atoms.numbers, cell, pbc, source=source)
    try:
        graph = graph_from_configuration(config, cutoff, species, backend=backend)
    except ValueError as exc:  # neighbours.py and SpeciesMap.indices name the problem already
        raise StructureError(str(exc)) from None
    check_min_distance(graph, min_distance, source)
    return graph


def check_min_distance(graph: jraph.GraphsTuple, min_distance: float, source: str = "<structure>") -> None:
    """Raise :class:`StructureError` if an edge of ``graph`` (one structure, numpy) is shorter than ``min_distance`` Å.

    Every pair closer than the cutoff is an edge, so this finds every close pair when
    ``min_distance`` < cutoff.
    """
    if graph.senders.shape[0] == 0 or not min_distance > 0:
        return
    pos, S, cell = graph.nodes["positions"], graph.edges["shifts"], graph.globals["cell"][0]
    i, j = graph.receivers, graph.senders
    # S @ cell written out: a [n_edges, 3] @ [3, 3] matmul is several times slower in numpy
    r = pos[j] - pos[i] + S[:, 0:1] * cell[0] + S[:, 1:2] * cell[1] + S[:, 2:3] * cell[2]
    d2 = np.einsum("ea,ea->e", r, r)
    k = int(np.argmin(d2))
    if d2[k] >= min_distance**2:
        return
    d = np.sqrt(d2)
    a, b, shift = int(i[k]), int(j[k]), S[k].astype(int).tolist()
    if a == b:
        raise StructureError(
            f"{source}: atom {a} is {d[k]:.3g} Å from its own periodic image (cell shift {shift}), closer than "
            f"min_distance = {min_distance} Å; the cell is too small"
        )
    a, b = min(a, b), max(a, b)
    where = "" if not any(shift) else f" (periodic image, cell shift {shift})"
    raise StructureError(
        f"{source}: atoms {a} and {b} are {d[k]:.3g} Å apart{where}, closer than min_distance = {min_distance} Å "
        f"(atoms on top of each other)"
    )


def _round_up(x: float, multiple: int) -> int:
    return int(math.ceil(x / multiple) * multiple)


def choose_capacity(current: int, needed: int, growth: float = 1.2, headroom: float = 0.1, multiple: int = 8) -> int:
    """The padded size to use for ``needed`` entries, given the ``current`` capacity (0: none yet).

    The capacity is kept while ``needed`` fits and is not below ``current / growth**2`` (hysteresis, so
    a size fluctuating around a boundary does not flip between two capacities). Otherwise the new
    capacity is the smallest rung of the ladder ``multiple · ⌈growth^k⌉`` (rounded to ``multiple``) that
    holds ``needed``, or ``needed · (1 + headroom)`` when ``needed`` outgrew ``current`` (the size is
    moving, so leave room). Rungs are fixed, so capacities seen before (and their compiled functions)
    are reused.
    """
    if needed < 0:
        raise ValueError(f"needed must be >= 0, got {needed}")
    if current >= needed and needed * growth**2 >= current:
        return current
    target = needed * (1.0 + headroom) if 0 < current < needed else needed
    rung = multiple
    while rung < target:
        rung = _round_up(rung * growth, multiple)
    return max(rung, _round_up(max(needed, 1), multiple))


def pad_to_capacity(graph: jraph.GraphsTuple, n_node: int, n_edge: int, dtype) -> jraph.GraphsTuple:
    """Pad one graph to ``n_node`` nodes (one reserved for padding) and ``n_edge`` edges, two graphs, and
    cast its floating-point arrays to ``dtype``; integer and boolean arrays keep fixed dtypes so that
    the jitted function sees the same input types every call."""
    padded = pad_graph(graph, Bucket(n_node, n_edge, 2))

    def cast(x):
        x = np.asarray(x)
        if np.issubdtype(x.dtype, np.floating):
            return x.astype(dtype)
        if np.issubdtype(x.dtype, np.integer):
            return x.astype(np.int32)
        return x

    return jax.tree_util.tree_map(cast, padded)


def resolve_dtype(dtype) -> np.dtype:
    """float32 or float64 as a numpy dtype; float64 requires ``jax_enable_x64``."""
    try:
        d = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}") from None
    if d not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    if d == np.float64 and not jax.config.read("jax_enable_x64"):
        raise ValueError(
            "dtype='float64' needs 64-bit JAX, which is off: call jax.config.update('jax_enable_x64', True) "
            "at the start of the script (before any JAX array is made), or use dtype='float32'"
        )
    return d


def load_potential(model) -> Potential:
    """A :class:`Potential` from a Potential, a model object or a model file path."""
    return model if isinstance(model, Potential) else as_potential(model)


def _stress_voigt(s: np.ndarray) -> np.ndarray:
    return np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]], dtype=np.float64)


# --------------------------------------------------------------------------------------------------
# The calculator
# --------------------------------------------------------------------------------------------------


class JaceCalculator(Calculator):
    """ASE calculator for a jace model (a path to a saved model, a model object or a ``Potential``).

    Args:
      model: path of a ``.jace`` file, a model object (linear ACE, multi-ACE, …) or a ``Potential``.
      dtype: "float64" (default; needs ``jax_enable_x64``) or "float32".
      min_distance: Å; pairs closer than this raise :class:`StructureError` (default 1e-3 Å).
      growth, headroom: the capacity ladder (see :func:`choose_capacity`).
      neighbour_backend: "matscipy" (default), "vesin" or "ase".
      **kwargs: passed to ``ase.calculators.calculator.Calculator``.

    Attributes:
      potential: the model as a ``Potential`` with parameters cast to ``dtype``.
      n_compilations: how many times the energy/forces/stress function was traced (compiled).
      capacity: (nodes, edges) of the padded graph used last.
      sizes: (atoms, edges) of the structure evaluated last.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies"]

    def __init__(
        self,
        model,
        dtype="float64",
        min_distance: float = DEFAULT_MIN_DISTANCE,
        growth: float = 1.2,
        headroom: float = 0.1,
        neighbour_backend: str = "matscipy",
        **kwargs,
    ):
        Calculator.__init__(self, **kwargs)
        self.dtype = resolve_dtype(dtype)
        if not growth > 1.0 or not headroom >= 0.0:
            raise ValueError(f"growth must be > 1 and headroom >= 0, got growth={growth!r}, headroom={headroom!r}")
        self._source_potential = load_potential(model)
        self.potential = self._source_potential.with_dtype(self.dtype)
        self.min_distance = float(min_distance)
        self.growth, self.headroom = float(growth), float(headroom)
        self.neighbour_backend = neighbour_backend
        self.capacity = (0, 0)
        self.sizes = (0, 0)
        self._n_traces = 0
        self._compiled = jax.jit(self._evaluate, static_argnames=("compute_stress",))

    @property
    def cutoff(self) -> float:
        return self.potential.cutoff

    @property
    def species(self) -> SpeciesMap:
        return self.potential.species

    @property
    def n_compilations(self) -> int:
        """Number of traces of the compiled function so far (one per new capacity / stress setting)."""
        return self._n_traces

    def _evaluate(self, params, graph, compute_stress: bool):
        self._n_traces += 1  # runs only while tracing: counts real compilations
        out = predict(self.potential.site_energy_fn, params, graph, compute_stress)
        return out.energy[0], out.forces, out.stress[0], out.site_energies

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        Calculator.calculate(self, atoms, properties, system_changes)
        atoms = self.atoms
        resolve_dtype(self.dtype)  # x64 may have been switched off since construction
        periodic = bool(np.any(atoms.pbc))
        if "stress" in properties and not periodic:
            raise PropertyNotImplementedError(
                f"{describe_atoms(atoms)}: stress needs periodic boundary conditions (pbc={atoms.pbc.tolist()})"
            )
        source = describe_atoms(atoms)
        graph = atoms_to_graph(atoms, self.cutoff, self.species, self.min_distance, source, self.neighbour_backend)
        n_atoms, n_edges = len(atoms), int(graph.n_edge[0])
        n_cap = choose_capacity(self.capacity[0], n_atoms + 1, self.growth, self.headroom)
        e_cap = choose_capacity(self.capacity[1], max(n_edges, 1), self.growth, self.headroom)
        self.capacity, self.sizes = (n_cap, e_cap), (n_atoms, n_edges)
        padded = pad_to_capacity(graph, n_cap, e_cap, self.dtype)
        energy, forces, stress, site = jax.device_get(
            self._compiled(self.potential.params, padded, compute_stress=periodic)
        )
        energy = float(energy)
        forces = np.asarray(forces[:n_atoms], dtype=np.float64)
        site = np.asarray(site[:n_atoms], dtype=np.float64)
        if not (np.isfinite(energy) and np.all(np.isfinite(forces))):
            raise FloatingPointError(
                f"{source}: the model gave a non-finite energy or forces (energy = {energy}); "
                f"check the structure (closest pair, cell) and the model parameters"
            )
        self.results = {"energy": energy, "free_energy": energy, "forces": forces, "energies": site}
        if periodic:
            self.results["stress"] = _stress_voigt(np.asarray(stress, dtype=np.float64))

    def get_hessian(self, atoms=None, **kwargs) -> np.ndarray:
        """[3N, 3N] ∂²E/∂r_a∂r_b in eV/Å², in float64 (see :func:`jace.interfaces.hessian.hessian`)."""
        from jace.interfaces.hessian import hessian

        atoms = self.atoms if atoms is None else atoms
        if atoms is None:
            raise ValueError("get_hessian needs atoms: pass them or attach this calculator to an Atoms object")
        kwargs.setdefault("min_distance", self.min_distance)
        return hessian(self._source_potential, atoms, **kwargs)

    def get_vibrations(self, atoms=None, **kwargs):
        """Normal modes (molecules) or Γ-point phonons (periodic cells) as ASE ``VibrationsData``."""
        from jace.interfaces.hessian import vibrations

        atoms = self.atoms if atoms is None else atoms
        if atoms is None:
            raise ValueError("get_vibrations needs atoms: pass them or attach this calculator to an Atoms object")
        kwargs.setdefault("min_distance", self.min_distance)
        return vibrations(self._source_potential, atoms, **kwargs)
