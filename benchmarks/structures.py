"""Deterministic structures shared by the side-by-side benchmarks (jace and mace-torch).

This module needs only ``numpy`` and ``ase``, so it imports from both the project's virtual environment
(``.venv``) and the separate mace-torch one (``benchmarks/_work/torch-venv``). Both sides of a
comparison therefore evaluate exactly the same atoms.

Structures
----------
``acac_molecule(data_dir)``
    The first frame of ``<data_dir>/acac/train_300K.xyz``: one acetylacetone molecule, 15 atoms
    (H, C, O), not periodic (the file writes a 50 Å cell, but ``pbc`` is false).
``acac_batch(data_dir, n=32)``
    The first ``n`` frames of the same file (``n = 32`` gives 480 atoms in 32 separate graphs).
``silicon_cell(n_atoms, seed=1, stdev=0.05)``
    Diamond silicon, lattice constant 5.43 Å, built from the 8-atom conventional cubic cell repeated
    2×2×2 (64 atoms, edge 10.86 Å), 4×4×4 (512 atoms, edge 21.72 Å) or 8×8×8 (4,096 atoms, edge 43.44 Å);
    periodic in all three directions;
    every Cartesian coordinate is displaced by an independent normal deviate with standard deviation
    ``stdev`` Å drawn from ``numpy.random.default_rng(seed)``.
``carbon_cell(n_atoms, seed=1, stdev=0.05)``
    The same construction for diamond carbon, lattice constant 3.567 Å (edges 7.134 Å and 14.268 Å).
    Carbon is much denser than silicon, so at the same cutoff each atom has about 3.2 times as many
    neighbours (about 89 against 28 within 5 Å; acac has about 12): the C cells are the edge-heavy cases.
``acac_training_set(data_dir)``
    All 500 frames of ``acac/train_300K.xyz``, with their DFT labels.
``acac_test_set(data_dir)``
    All 650 frames of ``acac/test_MD_300K.xyz``, with their DFT labels.
``acac_isolated_atom_energies(data_dir)``
    ``{atomic number: energy in eV}`` read from ``acac/isolated_atoms.xyz`` (H, C, O).

Labels: the data files are extended XYZ with energies in eV and forces in eV/Å (see
``<data_dir>/README.md``). With ase 3.23 or newer they are returned through ``atoms.calc``
(``atoms.get_potential_energy()``, ``atoms.get_forces()``), not ``atoms.info``; ``labels(atoms)``
returns them as plain floats and arrays whichever way they are stored.

The default data folder is ``../shared/data`` relative to the repository root (``/work/shared/data``
on the development machine). It is not part of the project; functions that read it raise
``FileNotFoundError`` with the path when it is missing. The crystal cells need no data.
"""

from __future__ import annotations

import os
from typing import Dict, List, Tuple

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.io import read

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA_DIR = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "data"))

# Lattice constants (Å) of the diamond-structure crystals.
SI_LATTICE = 5.43
C_LATTICE = 3.567
# Conventional cubic diamond cell: 8 atoms; repeats giving the supported cell sizes.
_REPEATS = {64: 2, 512: 4, 4096: 8}


def _data_file(data_dir: str | None, *parts: str) -> str:
    path = os.path.join(data_dir or DEFAULT_DATA_DIR, *parts)
    if not os.path.exists(path):
        raise FileNotFoundError(f"benchmark data file not found: {path}")
    return path


def acac_molecule(data_dir: str | None = None) -> Atoms:
    """First frame of ``acac/train_300K.xyz`` (15 atoms, non-periodic), with its DFT labels."""
    return read(_data_file(data_dir, "acac", "train_300K.xyz"), index=0)


def acac_batch(data_dir: str | None = None, n: int = 32) -> List[Atoms]:
    """First ``n`` frames of ``acac/train_300K.xyz`` (each 15 atoms, non-periodic)."""
    frames = read(_data_file(data_dir, "acac", "train_300K.xyz"), index=f":{int(n)}")
    if len(frames) != n:
        raise ValueError(f"asked for {n} acac frames, the file has only {len(frames)}")
    return frames


def acac_training_set(data_dir: str | None = None) -> List[Atoms]:
    """All 500 frames of ``acac/train_300K.xyz`` with their labels (eV, eV/Å)."""
    return read(_data_file(data_dir, "acac", "train_300K.xyz"), index=":")


def acac_test_set(data_dir: str | None = None) -> List[Atoms]:
    """All 650 frames of ``acac/test_MD_300K.xyz`` with their labels (eV, eV/Å)."""
    return read(_data_file(data_dir, "acac", "test_MD_300K.xyz"), index=":")


def acac_isolated_atom_energies(data_dir: str | None = None) -> Dict[int, float]:
    """``{Z: E0}`` in eV from ``acac/isolated_atoms.xyz`` (one single-atom frame per element)."""
    e0s: Dict[int, float] = {}
    for atoms in read(_data_file(data_dir, "acac", "isolated_atoms.xyz"), index=":"):
        if len(atoms) != 1:
            raise ValueError("isolated_atoms.xyz should hold single-atom frames")
        e0s[int(atoms.numbers[0])] = labels(atoms)[0]
    return e0s


def _rattled_diamond(symbol: str, a: float, n_atoms: int, seed: int, stdev: float) -> Atoms:
    if n_atoms not in _REPEATS:
        raise ValueError(f"n_atoms must be one of {sorted(_REPEATS)}, got {n_atoms}")
    r = _REPEATS[n_atoms]
    atoms = bulk(symbol, "diamond", a=a, cubic=True).repeat((r, r, r))
    rng = np.random.default_rng(seed)
    atoms.positions = atoms.positions + rng.normal(0.0, stdev, atoms.positions.shape)
    assert len(atoms) == n_atoms and all(atoms.pbc)
    return atoms


def silicon_cell(n_atoms: int = 512, seed: int = 1, stdev: float = 0.05) -> Atoms:
    """Rattled periodic diamond Si (a = 5.43 Å), 64 (2×2×2), 512 (4×4×4) or 4096 (8×8×8 conventional cells) atoms."""
    return _rattled_diamond("Si", SI_LATTICE, n_atoms, seed, stdev)


def carbon_cell(n_atoms: int = 512, seed: int = 1, stdev: float = 0.05) -> Atoms:
    """Rattled periodic diamond C (a = 3.567 Å), 64 (2×2×2) or 512 (4×4×4 conventional cells) atoms."""
    return _rattled_diamond("C", C_LATTICE, n_atoms, seed, stdev)


def labels(atoms: Atoms) -> Tuple[float, np.ndarray]:
    """``(energy in eV, forces in eV/Å as an (n, 3) array)`` of a labelled frame.

    Reads ``atoms.calc`` (ase ≥ 3.23) and falls back to ``atoms.info["energy"]`` /
    ``atoms.arrays["forces"]`` (older ase). Forces are zeros when the frame has none (isolated atoms).
    """
    energy = forces = None
    if atoms.calc is not None:
        results = getattr(atoms.calc, "results", {})
        energy = results.get("energy")
        forces = results.get("forces")
    if energy is None:
        energy = atoms.info.get("energy")
    if forces is None:
        forces = atoms.arrays.get("forces")
    if energy is None:
        raise ValueError("frame has no energy label")
    if forces is None:
        forces = np.zeros((len(atoms), 3))
    return float(energy), np.asarray(forces, dtype=float)


# The latency cases of the side-by-side benchmark: name -> (description, builder). Each builder takes
# the data folder and returns a list of ase.Atoms that form one batch (one graph per Atoms).
LATENCY_CASES = {
    "acac_1": ("one acetylacetone molecule (15 atoms)", lambda d: [acac_molecule(d)]),
    "acac_32": ("32 acetylacetone molecules in one batch (480 atoms)", lambda d: acac_batch(d, 32)),
    "si_64": ("rattled diamond Si, 64 atoms, periodic", lambda d: [silicon_cell(64)]),
    "si_512": ("rattled diamond Si, 512 atoms, periodic", lambda d: [silicon_cell(512)]),
    "c_64": ("rattled diamond C, 64 atoms, periodic", lambda d: [carbon_cell(64)]),
    "c_512": ("rattled diamond C, 512 atoms, periodic", lambda d: [carbon_cell(512)]),
}


if __name__ == "__main__":
    # Quick summary: atom counts and mean neighbour counts within 5 Å (needs only ase).
    from ase.neighborlist import neighbor_list

    for name, (desc, build) in LATENCY_CASES.items():
        try:
            frames = build(None)
        except FileNotFoundError as exc:
            print(f"{name:8s} skipped: {exc}")
            continue
        n_at = sum(len(a) for a in frames)
        n_edges = sum(len(neighbor_list("i", a, 5.0)) for a in frames)
        print(f"{name:8s} {n_at:5d} atoms  {n_edges / n_at:6.1f} neighbours/atom within 5 Å  ({desc})")
