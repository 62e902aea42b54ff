"""Smoothness far from the data: one-dimensional scans, their roughness, and plots.

A scan is a list of ``ase.Atoms`` images along one coordinate q (a bond length in Å, a dihedral
angle in degrees, a dimer distance in Å). Every image made here carries, in
``atoms.arrays["scan_tangent"]``, the derivative of each atom's position with respect to q
(``∂r_a/∂q``, Å per coordinate unit; zero for atoms that do not move), so that the generalised
force along the scan is

    F_q = −dE/dq = Σ_a F_a · ∂r_a/∂q

(eV/Å for distances, eV/deg for angles). A model enters only through the plain callable

    energy_forces(list_of_atoms) -> (energies [n] eV, forces: list of [n_atoms, 3] eV/Å)

so any model, trained or analytic, can be scanned. :func:`run_scan` never raises because of what the
model returns: exceptions and non-finite numbers are recorded per image as NaN plus a message.

Roughness numbers (:func:`roughness`), on the finite points of a scan sorted by x, with spacings
``h_i = x_{i+1} − x_i`` (any non-uniform grid):

* slopes at the interval midpoints ``s_i = (E_{i+1} − E_i) / h_i``;
* second derivative at interior points ``E''_i = 2 (s_i − s_{i−1}) / (h_{i−1} + h_i)`` (the standard
  three-point formula on a non-uniform grid, exact for quadratics);
* ``roughness = Σ_i (E''_i)² (h_{i−1} + h_i) / 2 ≈ ∫ (d²E/dx²)² dx`` (eV²/Å³ or eV²/deg³);
* ``force_total_variation = Σ_k |F_{k+1} − F_k|`` of the force curve F = −dE/dx (the model's
  generalised forces when given, else the slopes ``−s_i``);
* ``sign_changes``: how often dE/dx changes sign along the scan (a clean bond or dimer curve has
  one, at the minimum; more are spurious oscillations). Values with
  ``|dE/dx| <= atol + rtol · max|dE/dx|`` count as zero and are skipped, so a flat tail beyond the
  cutoff does not count rounding noise.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import math
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from jace.files import atomic_write_bytes

TANGENT_KEY = "scan_tangent"

EnergyForces = Callable[[Sequence], tuple]

# Usual valences, used to decide whether a bond is single: a bond is taken as single when one of its
# atoms has as many neighbours as its valence (it is saturated, e.g. an sp3 carbon with 4 neighbours).
_VALENCE = {"H": 1, "B": 3, "C": 4, "N": 3, "O": 2, "F": 1, "Si": 4, "P": 3, "S": 2, "Cl": 1, "Br": 1, "I": 1}


# --------------------------------------------------------------------------------------------------
# Connectivity


def connectivity(atoms, mult: float = 1.0) -> np.ndarray:
    """Boolean adjacency matrix [n, n] from ``ase.neighborlist``: atoms i and j are bonded when their
    distance is below the sum of their ``natural_cutoffs`` (covalent radii, scaled by ``mult``) plus
    ase's default skin of 0.3 Å (what ``ase.neighborlist.build_neighbor_list`` does).

    Periodicity is ignored (the positions are taken as given): scans are meant for molecules and
    clusters.
    """
    from ase.neighborlist import build_neighbor_list, natural_cutoffs

    mol = atoms.copy()
    mol.pbc = False
    nl = build_neighbor_list(mol, cutoffs=natural_cutoffs(mol, mult=mult), self_interaction=False, bothways=True)
    adj = np.zeros((len(mol), len(mol)), dtype=bool)
    for a in range(len(mol)):
        neighbours, _ = nl.get_neighbors(a)
        adj[a, neighbours] = True
    adj |= adj.T
    np.fill_diagonal(adj, False)
    return adj


def fragment(adjacency: np.ndarray, start: int, cut: Optional[tuple[int, int]] = None) -> list[int]:
    """Indices of the atoms connected to ``start`` (sorted, including ``start``), walking the bond
    graph without crossing the bond ``cut = (i, j)`` if given."""
    adj = np.array(adjacency, dtype=bool, copy=True)
    if cut is not None:
        i, j = cut
        adj[i, j] = adj[j, i] = False
    seen = {int(start)}
    queue = collections.deque([int(start)])
    while queue:
        a = queue.popleft()
        for b in np.flatnonzero(adj[a]):
            b = int(b)
            if b not in seen:
                seen.add(b)
                queue.append(b)
    return sorted(seen)


def _check_index(atoms, index, what: str) -> int:
    n = len(atoms)
    if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
        raise ValueError(f"{what} must be an atom index, got {index!r}")
    if not -n <= int(index) < n:
        raise ValueError(f"{what} = {index} is out of range for {n} atoms")
    return int(index) % n


def _with_tangent(atoms, tangent: np.ndarray):
    atoms.arrays.pop(TANGENT_KEY, None)
    atoms.new_array(TANGENT_KEY, np.asarray(tangent, dtype=np.float64).reshape(len(atoms), 3))
    return atoms


def _grid(values, what: str) -> np.ndarray:
    out = np.asarray(values, dtype=np.float64).reshape(-1)
    if out.size == 0:
        raise ValueError(f"{what}: no scan values given")
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{what}: scan values must be finite numbers")
    return out


# --------------------------------------------------------------------------------------------------
# Scan generators. Each returns (images, coordinate) with coordinate a float array, one per image.


def bond_stretch(atoms, i: int, j: int, r_values=None, *, cutoff: Optional[float] = None,
                 move_fragment: bool = True, dr: float = 0.05, mult: float = 1.0):
    """Stretch (or compress) the bond i–j: atom j is moved along the i→j direction so that |r_ij|
    takes each value of ``r_values`` (Å).

    move_fragment: also move everything attached to j once the bond i–j is cut (connectivity from
      natural cutoffs, see :func:`connectivity`); if that fragment contains i (the bond is in a
      ring), only j moves.
    r_values: default ``0.5 Å … cutoff + 1 Å`` in steps of ``dr`` (then ``cutoff`` is required).

    Returns (images, r) — the images are copies; ``atoms`` is not changed.
    """
    i = _check_index(atoms, i, "bond_stretch: i")
    j = _check_index(atoms, j, "bond_stretch: j")
    if i == j:
        raise ValueError("bond_stretch: i and j must be different atoms")
    if r_values is None:
        if cutoff is None or not cutoff > 0:
            raise ValueError("bond_stretch: give r_values, or a positive cutoff for the default range 0.5 Å … cutoff + 1 Å")
        r_values = np.arange(0.5, cutoff + 1.0 + 0.5 * dr, dr)
    r = _grid(r_values, "bond_stretch")
    if np.any(r <= 0):
        raise ValueError("bond_stretch: distances must be positive")
    pos = np.asarray(atoms.get_positions(), dtype=np.float64)
    vec = pos[j] - pos[i]
    r0 = float(np.linalg.norm(vec))
    if r0 < 1e-8:
        raise ValueError(f"bond_stretch: atoms {i} and {j} sit on top of each other; no direction to stretch along")
    u = vec / r0
    moving = [j]
    if move_fragment:
        frag = fragment(connectivity(atoms, mult), j, cut=(i, j))
        if i not in frag:
            moving = frag
    mask = np.zeros(len(atoms), dtype=bool)
    mask[moving] = True
    tangent = np.where(mask[:, None], u[None, :], 0.0)
    images = []
    for value in r:
        image = atoms.copy()
        new = pos.copy()
        new[mask] += (value - r0) * u
        image.set_positions(new)
        images.append(_with_tangent(image, tangent))
    return images, r


def dihedral_scan(atoms, a: int, b: int, c: int, d: int, angles_deg=None, *, move_fragment: bool = True,
                  mult: float = 1.0):
    """Rotate about the bond b–c so that the dihedral a–b–c–d takes each angle (degrees), with
    ``ase.Atoms.set_dihedral``.

    move_fragment: rotate everything on c's side of the bond b–c (found with that bond cut); it is
      an error when b–c is in a ring. Otherwise only d moves.
    angles_deg: default −180° … 180° in steps of 5°.

    Returns (images, angles) — the requested angles (the image's ``get_dihedral`` equals them
    modulo 360°).
    """
    idx = [_check_index(atoms, k, f"dihedral_scan: {name}") for k, name in zip((a, b, c, d), "abcd")]
    a, b, c, d = idx
    if len(set(idx)) != 4:
        raise ValueError(f"dihedral_scan: the four atoms must be different, got {idx}")
    if angles_deg is None:
        angles_deg = np.linspace(-180.0, 180.0, 73)
    phi = _grid(angles_deg, "dihedral_scan")
    pos = np.asarray(atoms.get_positions(), dtype=np.float64)
    axis = pos[c] - pos[b]
    if np.linalg.norm(axis) < 1e-8:
        raise ValueError(f"dihedral_scan: atoms {b} and {c} sit on top of each other; no axis to rotate about")
    if move_fragment:
        moving = fragment(connectivity(atoms, mult), c, cut=(b, c))
        if b in moving:
            raise ValueError(f"dihedral_scan: the bond {b}–{c} is in a ring; its dihedral cannot be rotated freely")
        if d not in moving:
            raise ValueError(f"dihedral_scan: atom {d} is not bonded on {c}'s side of the bond {b}–{c}")
    else:
        moving = [d]
    mask = np.zeros(len(atoms), dtype=bool)
    mask[moving] = True
    images = []
    for value in phi:
        image = atoms.copy()
        image.set_dihedral(a, b, c, d, float(value), indices=list(moving))
        p = np.asarray(image.get_positions(), dtype=np.float64)
        # set_dihedral turns the fragment by (target − current) about the axis b→c through c
        # (right-handed), so ∂r/∂φ = (π/180) n̂ × (r − r_c) for the moving atoms.
        n = p[c] - p[b]
        n = n / np.linalg.norm(n)
        tangent = np.where(mask[:, None], np.cross(n[None, :], p - p[c]) * (math.pi / 180.0), 0.0)
        images.append(_with_tangent(image, tangent))
    return images, phi


def dimer_approach(symbol_a: str, symbol_b: str, r_values=None, *, dr: float = 0.05,
                   r_min: float = 0.3, r_max: float = 6.0):
    """Two isolated atoms in vacuum (no cell, no periodicity): A at the origin, B at (r, 0, 0) for
    each r in ``r_values`` (Å; default ``r_min … r_max`` in steps of ``dr``). Returns (images, r)."""
    from ase import Atoms
    from ase.data import atomic_numbers

    for s in (symbol_a, symbol_b):
        if not isinstance(s, str) or atomic_numbers.get(s, 0) == 0:
            raise ValueError(f"dimer_approach: {s!r} is not a chemical symbol")
    if r_values is None:
        r_values = np.arange(r_min, r_max + 0.5 * dr, dr)
    r = _grid(r_values, "dimer_approach")
    if np.any(r <= 0):
        raise ValueError("dimer_approach: distances must be positive")
    tangent = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    images = []
    for value in r:
        image = Atoms([symbol_a, symbol_b], positions=[[0.0, 0.0, 0.0], [float(value), 0.0, 0.0]], pbc=False)
        images.append(_with_tangent(image, tangent))
    return images, r


# --------------------------------------------------------------------------------------------------
# Picking scans for a molecule


@dataclasses.dataclass
class ScanSpec:
    """A ready scan: ``images`` along ``coordinate``; ``kind`` is "bond", "dihedral" or "dimer";
    ``atoms`` the indices (bond, dihedral) or symbols (dimer) that define it; ``label`` an axis label."""

    name: str
    kind: str
    images: list
    coordinate: np.ndarray
    unit: str
    label: str
    atoms: tuple


def _saturated(symbol: str, n_neighbours: int) -> bool:
    valence = _VALENCE.get(symbol)
    return n_neighbours >= (valence if valence is not None else 4)


def find_rotatable_dihedral(atoms, mult: float = 1.0) -> Optional[tuple[int, int, int, int]]:
    """The first rotatable dihedral (a, b, c, d), or None.

    A rotatable bond b–c is not in a ring, both ends have another neighbour, and it is single (one
    end is saturated: as many neighbours as its usual valence). Bonds between two heavy atoms come
    first, and among those, bonds whose outer atoms a and d can both be heavy; ties go by index.
    a and d are the lowest-index heavy neighbours (else the lowest-index neighbours).
    """
    adj = connectivity(atoms, mult)
    symbols = atoms.get_chemical_symbols()
    numbers = atoms.get_atomic_numbers()
    degree = adj.sum(axis=1)
    candidates = []
    for b in range(len(atoms)):
        for c in np.flatnonzero(adj[b]):
            c = int(c)
            if c <= b or degree[b] < 2 or degree[c] < 2:
                continue
            if not (_saturated(symbols[b], degree[b]) or _saturated(symbols[c], degree[c])):
                continue
            if b in fragment(adj, c, cut=(b, c)):
                continue  # ring bond

            def outer(x, y):
                others = [int(k) for k in np.flatnonzero(adj[x]) if k != y]
                heavy = [k for k in others if numbers[k] > 1]
                return (heavy or others)[0], bool(heavy)

            a, a_heavy = outer(b, c)
            d, d_heavy = outer(c, b)
            both_heavy_bond = numbers[b] > 1 and numbers[c] > 1
            rank = (not both_heavy_bond, not (a_heavy and d_heavy), b, c)
            candidates.append((rank, (a, b, c, d)))
    if not candidates:
        return None
    return min(candidates)[1]


def default_scans(molecule, cutoff: float, *, dr: float = 0.05, dphi: float = 5.0,
                  mult: float = 1.0) -> dict[str, ScanSpec]:
    """Scans for one molecule, keyed by name:

    * ``"bond"``: stretch a C–H bond if there is one (else the first bond), H (or the second atom)
      moving with its fragment, 0.5 Å … cutoff + 1 Å;
    * ``"dihedral"``: the first rotatable dihedral (see :func:`find_rotatable_dihedral`), −180° … 180°
      (left out when the molecule has none);
    * ``"dimer"``: the two most common elements (the same element twice for a one-element molecule)
      approaching in vacuum, 0.3 Å … max(6 Å, cutoff + 1 Å).
    """
    if not cutoff > 0:
        raise ValueError(f"default_scans: cutoff must be positive, got {cutoff!r}")
    mol = molecule.copy()
    symbols = mol.get_chemical_symbols()
    adj = connectivity(mol, mult)
    bonds = [(int(i), int(j)) for i, j in zip(*np.nonzero(np.triu(adj)))]
    out: dict[str, ScanSpec] = {}
    if bonds:
        ch = [(i, j) if symbols[i] == "C" else (j, i) for i, j in bonds if {symbols[i], symbols[j]} == {"C", "H"}]
        i, j = ch[0] if ch else bonds[0]
        images, r = bond_stretch(mol, i, j, np.arange(0.5, cutoff + 1.0 + 0.5 * dr, dr), mult=mult)
        label = f"r({symbols[i]}{i}–{symbols[j]}{j}) (Å)"
        out["bond"] = ScanSpec("bond", "bond", images, r, "Å", label, (i, j))
    dih = find_rotatable_dihedral(mol, mult)
    if dih is not None:
        phi = np.arange(-180.0, 180.0 + 0.5 * dphi, dphi)
        images, phi = dihedral_scan(mol, *dih, phi, mult=mult)
        label = "dihedral " + "–".join(f"{symbols[k]}{k}" for k in dih) + " (deg)"
        out["dihedral"] = ScanSpec("dihedral", "dihedral", images, phi, "deg", label, tuple(dih))
    counts = collections.Counter(symbols)
    first_seen = {s: symbols.index(s) for s in counts}
    common = sorted(counts, key=lambda s: (-counts[s], first_seen[s]))
    sa, sb = (common[0], common[1]) if len(common) > 1 else (common[0], common[0])
    images, r = dimer_approach(sa, sb, np.arange(0.3, max(6.0, cutoff + 1.0) + 0.5 * dr, dr))
    out["dimer"] = ScanSpec("dimer", "dimer", images, r, "Å", f"r({sa}–{sb}) (Å)", (sa, sb))
    return out


# --------------------------------------------------------------------------------------------------
# Running a model along a scan


@dataclasses.dataclass
class ScanResult:
    """One model along one scan.

    coordinate [m]; energies [m] eV; generalised_force [m] = −dE/dq (eV per coordinate unit, NaN
    where the images carry no tangent); max_force [m] = max_a |F_a| (eV/Å); errors: image index →
    what went wrong there (exception or non-finite output). Non-finite values are NaN.
    """

    name: str
    coordinate: np.ndarray
    energies: np.ndarray
    generalised_force: np.ndarray
    max_force: np.ndarray
    unit: str = ""
    label: str = ""
    errors: dict = dataclasses.field(default_factory=dict)

    @property
    def n_nonfinite(self) -> int:
        return int(np.sum(~np.isfinite(self.energies)))

    @property
    def diverged(self) -> bool:
        """Any image without a finite energy (model error, NaN or inf)."""
        return self.n_nonfinite > 0

    def relative_energies(self) -> np.ndarray:
        """Energies minus the lowest finite energy (all NaN when none is finite)."""
        finite = np.isfinite(self.energies)
        if not finite.any():
            return np.full_like(self.energies, np.nan)
        return self.energies - np.min(self.energies[finite])

    def roughness(self, **kwargs) -> dict:
        """:func:`roughness` of this curve (with the model's generalised forces), plus ``unit``."""
        forces = self.generalised_force if np.any(np.isfinite(self.generalised_force)) else None
        out = roughness(self.coordinate, self.energies, forces=forces, **kwargs)
        out["unit"] = self.unit
        return out

    def to_dict(self) -> dict:
        def floats(x):
            return [float(v) if np.isfinite(v) else None for v in np.asarray(x, dtype=np.float64)]

        return {
            "name": self.name,
            "unit": self.unit,
            "label": self.label,
            "coordinate": floats(self.coordinate),
            "energies": floats(self.energies),
            "generalised_force": floats(self.generalised_force),
            "max_force": floats(self.max_force),
            "errors": {str(k): v for k, v in self.errors.items()},
        }


def _one_call(energy_forces, images):
    """Call the model; return (energies [k], forces list) or raise with a readable message."""
    energies, forces = energy_forces(list(images))
    energies = np.asarray(energies, dtype=np.float64).reshape(-1)
    if energies.shape[0] != len(images):
        raise ValueError(f"energy_forces returned {energies.shape[0]} energies for {len(images)} images")
    forces = list(forces)
    if len(forces) != len(images):
        raise ValueError(f"energy_forces returned {len(forces)} force arrays for {len(images)} images")
    out = []
    for atoms, f in zip(images, forces):
        f = np.asarray(f, dtype=np.float64)
        if f.shape != (len(atoms), 3):
            raise ValueError(f"energy_forces returned forces of shape {f.shape} for {len(atoms)} atoms")
        out.append(f)
    return energies, out


def run_scan(energy_forces: EnergyForces, images: Sequence, coordinate, *, name: str = "scan",
             unit: str = "", label: str = "", tangents: Optional[Sequence] = None) -> ScanResult:
    """Evaluate ``energy_forces`` on every image (one batched call; image by image if that fails).

    tangents: per image [n_atoms, 3] ``∂r/∂q``; default ``image.arrays["scan_tangent"]`` (set by the
    generators here). Never raises because of the model: an exception or a non-finite energy or force
    makes that image NaN and is recorded in ``errors``.
    """
    images = list(images)
    q = np.asarray(coordinate, dtype=np.float64).reshape(-1)
    m = len(images)
    if q.shape[0] != m:
        raise ValueError(f"run_scan: {m} images but {q.shape[0]} coordinate values")
    if tangents is not None and len(tangents) != m:
        raise ValueError(f"run_scan: {m} images but {len(tangents)} tangents")
    energies = np.full(m, np.nan)
    gforce = np.full(m, np.nan)
    fmax = np.full(m, np.nan)
    errors: dict[int, str] = {}
    per_image: list = [None] * m
    try:
        e, f = _one_call(energy_forces, images) if m else (np.zeros(0), [])
        per_image = list(zip(e, f))
    except Exception:  # the model failed on the batch: go image by image to find where
        for k, atoms in enumerate(images):
            try:
                e, f = _one_call(energy_forces, [atoms])
                per_image[k] = (e[0], f[0])
            except Exception as exc:
                errors[k] = f"{type(exc).__name__}: {exc}"
    for k, item in enumerate(per_image):
        if item is None:
            continue
        e, f = item
        bad = []
        if np.isfinite(e):
            energies[k] = e
        else:
            bad.append("energy")
        if np.all(np.isfinite(f)):
            fmax[k] = float(np.max(np.linalg.norm(f, axis=1))) if len(f) else 0.0
            t = tangents[k] if tangents is not None else images[k].arrays.get(TANGENT_KEY)
            if t is not None:
                t = np.asarray(t, dtype=np.float64).reshape(f.shape)
                gforce[k] = float(np.sum(f * t))
        else:
            bad.append("forces")
        if bad:
            errors[k] = "non-finite " + " and ".join(bad)
    return ScanResult(name=name, coordinate=q, energies=energies, generalised_force=gforce, max_force=fmax,
                      unit=unit, label=label, errors=errors)


def run_scans(energy_forces: EnergyForces, scans: Mapping[str, ScanSpec]) -> dict[str, ScanResult]:
    """:func:`run_scan` for every :class:`ScanSpec` of e.g. :func:`default_scans`."""
    return {
        name: run_scan(energy_forces, s.images, s.coordinate, name=name, unit=s.unit, label=s.label)
        for name, s in scans.items()
    }


# --------------------------------------------------------------------------------------------------
# Roughness


def _sign_changes(values: np.ndarray, atol: float, rtol: float) -> int:
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return 0
    tol = atol + rtol * float(np.max(np.abs(v)))
    signs = np.sign(v[np.abs(v) > tol])
    return int(np.sum(signs[1:] != signs[:-1]))


def roughness(coordinate, energies, *, forces=None, window: Optional[tuple[float, float]] = None,
              atol: float = 1e-8, rtol: float = 1e-6) -> dict:
    """Roughness numbers of the curve E(x); formulas in the module docstring.

    forces: optionally the model's −dE/dx at the same points; then ``force_total_variation`` and
      ``sign_changes`` use them instead of finite differences.
    window: only points with lo <= x <= hi.
    Non-finite points are left out (counted in ``n_nonfinite``); with fewer than 3 finite points the
    numbers are NaN (sign changes −1).

    Returns {"roughness", "force_total_variation", "sign_changes", "n_points", "n_nonfinite"}.
    """
    x = np.asarray(coordinate, dtype=np.float64).reshape(-1)
    e = np.asarray(energies, dtype=np.float64).reshape(-1)
    if x.shape != e.shape:
        raise ValueError(f"roughness: {x.size} coordinates but {e.size} energies")
    f = None if forces is None else np.asarray(forces, dtype=np.float64).reshape(-1)
    if f is not None and f.shape != x.shape:
        raise ValueError(f"roughness: {x.size} coordinates but {f.size} forces")
    keep = np.isfinite(x)
    if window is not None:
        keep &= (x >= window[0]) & (x <= window[1])
    finite = keep & np.isfinite(e) & (np.isfinite(f) if f is not None else True)
    n_nonfinite = int(np.sum(keep & ~finite))
    x, e = x[finite], e[finite]
    f = None if f is None else f[finite]
    order = np.argsort(x, kind="stable")
    x, e = x[order], e[order]
    f = None if f is None else f[order]
    # Repeated coordinates carry no curvature information; keep the first of each.
    unique = np.concatenate([[True], np.diff(x) > 0]) if x.size else np.zeros(0, dtype=bool)
    x, e = x[unique], e[unique]
    f = None if f is None else f[unique]
    out = {"roughness": math.nan, "force_total_variation": math.nan, "sign_changes": -1,
           "n_points": int(x.size), "n_nonfinite": n_nonfinite}
    if x.size < 3:
        return out
    h = np.diff(x)
    s = np.diff(e) / h
    second = 2.0 * np.diff(s) / (h[:-1] + h[1:])
    weights = 0.5 * (h[:-1] + h[1:])
    out["roughness"] = float(np.sum(second * second * weights))
    if f is not None:
        out["force_total_variation"] = float(np.sum(np.abs(np.diff(f))))
        out["sign_changes"] = _sign_changes(-f, atol, rtol)
    else:
        out["force_total_variation"] = float(np.sum(np.abs(np.diff(s))))
        out["sign_changes"] = _sign_changes(s, atol, rtol)
    return out


# --------------------------------------------------------------------------------------------------
# Plots (matplotlib Figure objects without pyplot: no global state, Agg rendering)


def _save_png(fig, path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    atomic_write_bytes(path, buf.getvalue())


def plot_scans(results: Mapping[str, ScanResult], path, title: Optional[str] = None) -> None:
    """One scan, several models: energy (relative to each model's minimum) and generalised force
    against the coordinate, one curve per model (``results``: model name → ScanResult). Models with
    non-finite points are marked "(diverged)" in the legend. Written atomically as PNG."""
    from matplotlib.figure import Figure

    if not results:
        raise ValueError("plot_scans: no results to plot")
    first = next(iter(results.values()))
    fig = Figure(figsize=(6.4, 6.4))
    ax_e, ax_f = fig.subplots(2, 1, sharex=True)
    for model, res in results.items():
        tag = f"{model} (diverged)" if res.diverged else model
        order = np.argsort(res.coordinate, kind="stable")
        ax_e.plot(res.coordinate[order], res.relative_energies()[order], label=tag, lw=1.3)
        ax_f.plot(res.coordinate[order], res.generalised_force[order], label=tag, lw=1.3)
    unit = first.unit or "coordinate unit"
    ax_e.set_ylabel("E − E_min (eV)")
    ax_f.set_ylabel(f"−dE/dq (eV/{unit})")
    ax_f.axhline(0.0, color="0.6", lw=0.6)
    ax_f.set_xlabel(first.label or (f"q ({first.unit})" if first.unit else "q"))
    ax_e.legend(fontsize="small")
    # Short-range walls dwarf everything else: show at most a few eV above the minimum.
    finite = [r.relative_energies()[np.isfinite(r.energies)] for r in results.values()]
    finite = np.concatenate(finite) if finite else np.zeros(0)
    if finite.size and np.max(finite) > 10.0:
        ax_e.set_ylim(-0.5, 10.0)
    ax_e.set_title(title if title is not None else first.name)
    fig.tight_layout()
    _save_png(fig, path)


def plot_roughness(table, path, key: str = "roughness") -> None:
    """Bar figure of one roughness number (default ``"roughness"``) per model, one panel per scan.

    table: model name → {scan name → roughness dict}, or a list of records with ``name`` and
    ``roughness`` attributes (:class:`jace.diagnostics.tables.AblationRecord`). Non-finite values
    are drawn as a labelled empty slot ("diverged"). Log scale when the positive values span more
    than a factor 30.
    """
    from matplotlib.figure import Figure

    if isinstance(table, Mapping):
        rows = {str(k): dict(v or {}) for k, v in table.items()}
    else:
        rows = {str(r.name): dict(r.roughness or {}) for r in table}
    scans: list[str] = []
    for per_model in rows.values():
        for s in per_model:
            if s not in scans:
                scans.append(s)
    if not rows or not scans:
        raise ValueError("plot_roughness: no roughness numbers to plot")
    models = list(rows)
    width = min(18.0, len(scans) * max(3.5, 1.0 + 0.45 * len(models)))
    fig = Figure(figsize=(width, 4.2))
    axes = fig.subplots(1, len(scans), squeeze=False)[0]
    for ax, scan in zip(axes, scans):
        values = []
        for m in models:
            v = rows[m].get(scan, {}).get(key) if isinstance(rows[m].get(scan), Mapping) else None
            values.append(math.nan if v is None else float(v))
        values = np.asarray(values)
        ok = np.isfinite(values)
        pos = np.arange(len(models))
        ax.bar(pos[ok], values[ok], color="C0")
        # Log scale only when the values span more than a decade and a half (and are positive); the
        # bars then start a factor 3 below the smallest so that no bar looks empty.
        if ok.any() and np.all(values[ok] > 0) and np.max(values[ok]) > 30.0 * np.min(values[ok]):
            ax.set_yscale("log")
            ax.set_ylim(bottom=np.min(values[ok]) / 3.0)
        for p in pos[~ok]:
            ax.text(p, 0.5, "diverged" if scan in rows[models[p]] else "not run", rotation=90, ha="center",
                    va="center", transform=ax.get_xaxis_transform(), color="C3", fontsize="small")
        ax.set_xticks(pos)
        ax.set_xticklabels(models, rotation=45, ha="right", fontsize="small")
        ax.set_xlim(-0.6, len(models) - 0.4)
        unit = next((rows[m][scan].get("unit") for m in models if isinstance(rows[m].get(scan), Mapping)
                     and rows[m][scan].get("unit")), "")
        ylabel = key
        if key == "roughness":
            ylabel = f"∫(E'')² (eV²/{unit}³)" if unit else "∫(E'')²"
        ax.set_ylabel(ylabel)
        ax.set_title(scan)
    fig.tight_layout()
    _save_png(fig, path)
