"""Diagnostics for the ablation tool: smoothness scans, sweep files, result tables.

Smoothness (:mod:`jace.diagnostics.smoothness`): scan generators ``bond_stretch``, ``dihedral_scan``,
``dimer_approach``, ``default_scans``; ``run_scan`` / ``run_scans`` against a plain
``energy_forces(list_of_atoms) -> (energies, forces)`` callable; ``roughness``; ``plot_scans``,
``plot_roughness``.

Sweeps (:mod:`jace.diagnostics.sweep`): ``load_sweep`` → ``Sweep`` → ``Sweep.expand()`` →
``DesignPoint``; ``apply_overrides``; errors are ``SweepError``.

Tables (:mod:`jace.diagnostics.tables`): ``AblationRecord``, ``ablation_table``,
``write_ablation_results``, ``load_ablation_results``.
"""

from jace.diagnostics.smoothness import (
    ScanResult,
    ScanSpec,
    bond_stretch,
    connectivity,
    default_scans,
    dihedral_scan,
    dimer_approach,
    find_rotatable_dihedral,
    fragment,
    plot_roughness,
    plot_scans,
    roughness,
    run_scan,
    run_scans,
)
from jace.diagnostics.sweep import (
    Budget,
    DesignPoint,
    ScanSettings,
    Sweep,
    SweepError,
    apply_overrides,
    load_sweep,
)
from jace.diagnostics.tables import (
    AblationRecord,
    ablation_table,
    load_ablation_results,
    write_ablation_results,
)

__all__ = [
    "AblationRecord",
    "Budget",
    "DesignPoint",
    "ScanResult",
    "ScanSettings",
    "ScanSpec",
    "Sweep",
    "SweepError",
    "ablation_table",
    "apply_overrides",
    "bond_stretch",
    "connectivity",
    "default_scans",
    "dihedral_scan",
    "dimer_approach",
    "find_rotatable_dihedral",
    "fragment",
    "load_ablation_results",
    "load_sweep",
    "plot_roughness",
    "plot_scans",
    "roughness",
    "run_scan",
    "run_scans",
    "write_ablation_results",
]
