"""Names of the labels in data files."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class DataKeys:
    """Where labels live in extxyz/ASE files. ase ≥ 3.23 puts energy/forces/stress in ``atoms.calc``;
    jace looks in ``atoms.info``/``atoms.arrays`` first, then in the calculator results."""

    energy: str = "energy"
    forces: str = "forces"
    stress: str = "stress"
    virial: str = "virial"
    weight: str = "config_weight"
    energy_weight: str = "config_energy_weight"
    forces_weight: str = "config_forces_weight"
    stress_weight: str = "config_stress_weight"
    config_type: str = "config_type"
