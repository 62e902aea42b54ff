"""A labelled atomic configuration, as read from a file or made by jace itself.

Units throughout: Å for lengths, eV for energies, eV/Å for forces, eV/Å³ for stress.
Stress uses ASE's sign convention (positive = tensile) and ASE's definition
``stress = (1/V) ∂E/∂ε``; the virial is ``W = -V · stress = -∂E/∂ε``.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np


@dataclasses.dataclass
class Configuration:
    """One structure with optional labels and fitting weights.

    Attributes:
      positions: [n_atoms, 3] Cartesian positions, Å.
      numbers: [n_atoms] atomic numbers (int).
      cell: [3, 3] lattice vectors as rows, Å (zeros for a molecule without a cell).
      pbc: [3] periodicity per lattice direction (bool).
      energy: total energy, eV, or None when unlabelled.
      forces: [n_atoms, 3] forces, eV/Å, or None.
      stress: [3, 3] stress, eV/Å³ (ASE sign), or None.
      weight: overall weight of this configuration in a fit.
      energy_weight, forces_weight, stress_weight: per-observable weight multipliers.
      config_type: a free-form tag ("bulk", "isolated_atom", ...), used for per-type weights.
      source: where it came from, e.g. "train.xyz:17", for error messages.
    """

    positions: np.ndarray
    numbers: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    energy: Optional[float] = None
    forces: Optional[np.ndarray] = None
    stress: Optional[np.ndarray] = None
    weight: float = 1.0
    energy_weight: float = 1.0
    forces_weight: float = 1.0
    stress_weight: float = 1.0
    config_type: str = "default"
    source: str = "<memory>"

    def __post_init__(self):
        self.positions = np.asarray(self.positions, dtype=np.float64).reshape(-1, 3)
        self.numbers = np.asarray(self.numbers, dtype=np.int64).reshape(-1)
        self.cell = np.asarray(self.cell, dtype=np.float64).reshape(3, 3)
        self.pbc = np.broadcast_to(np.asarray(self.pbc, dtype=bool), (3,)).copy()
        if self.positions.shape[0] != self.numbers.shape[0]:
            raise ValueError(
                f"{self.source}: {self.positions.shape[0]} positions but {self.numbers.shape[0]} atomic numbers"
            )
        if self.forces is not None:
            self.forces = np.asarray(self.forces, dtype=np.float64).reshape(-1, 3)
            if self.forces.shape[0] != self.n_atoms:
                raise ValueError(f"{self.source}: forces have {self.forces.shape[0]} rows for {self.n_atoms} atoms")
        if self.stress is not None:
            self.stress = voigt_to_matrix(np.asarray(self.stress, dtype=np.float64), self.source)
        if self.energy is not None:
            self.energy = float(self.energy)

    @property
    def n_atoms(self) -> int:
        return int(self.numbers.shape[0])

    @property
    def volume(self) -> float:
        """Cell volume in Å³ (0 for a molecule without a cell)."""
        return float(abs(np.linalg.det(self.cell)))

    @property
    def virial(self) -> Optional[np.ndarray]:
        """[3, 3] virial W = -V · stress, eV, or None."""
        if self.stress is None:
            return None
        return -self.volume * self.stress

    def is_isolated_atom(self) -> bool:
        tag = self.config_type.lower().replace("_", "").replace(" ", "")
        return self.n_atoms == 1 and (tag in ("isolatedatom", "iso", "isolated") or not self.pbc.any())


def voigt_to_matrix(stress: np.ndarray, source: str = "<memory>") -> np.ndarray:
    """Accept a stress as [3, 3], 9 values, or 6 Voigt values (xx, yy, zz, yz, xz, xy) and return [3, 3]."""
    s = np.asarray(stress, dtype=np.float64)
    if s.shape == (3, 3):
        return s
    s = s.reshape(-1)
    if s.size == 9:
        return s.reshape(3, 3)
    if s.size == 6:
        xx, yy, zz, yz, xz, xy = s
        return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    raise ValueError(f"{source}: stress/virial must have 6 or 9 components, got {s.size}")
