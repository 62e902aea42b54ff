"""A small labelled dataset that jace makes itself, with ASE's EMT calculator (no files, no DFT).

Random fcc alloys (Cu–Au by default; EMT also knows Ni, Al, Ag, Pd, Pt), in cells of 4 to 32 atoms,
strained by up to ±3 % (shear included) and with thermal-like random displacements of amplitude
σ = sqrt(k_B T / k) per Cartesian component (an Einstein-crystal estimate with spring constant k),
labelled with EMT energies, forces and stresses. Small and skewed cells are included on purpose: with
a 5 Å cutoff they need many periodic images. One isolated atom per element (config_type
"isolated_atom", no periodic boundaries) gives E0.

Deterministic for a given seed and fast (well under a second for the default 60 configurations).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from jace.data.configuration import Configuration

__all__ = ["EMT_LATTICE_CONSTANTS", "make_emt_dataset", "make_emt_splits", "emt_isolated_atoms", "make_molecule_md_dataset"]

K_B = 8.617333262e-5  # eV/K

# fcc lattice constants (Å) that minimise ASE's EMT energy, to 0.005 Å.
EMT_LATTICE_CONSTANTS = {"Cu": 3.59, "Au": 4.055, "Ni": 3.485, "Al": 3.995, "Ag": 4.065, "Pd": 3.88, "Pt": 3.92}

# Cells cycled through, in order: (kind, repeat). "cubic" is the 4-atom conventional cell, "prim" the
# 1-atom primitive (skewed, 60° angles) cell. Atom counts: 32, 16, 4, 32, 4, 8, 16.
_CELLS = (
    ("cubic", (2, 2, 2)),
    ("cubic", (2, 2, 1)),
    ("cubic", (1, 1, 1)),
    ("cubic", (2, 2, 2)),
    ("prim", (2, 2, 1)),
    ("prim", (2, 2, 2)),
    ("cubic", (2, 1, 2)),
)


def _emt_labels(atoms) -> tuple[float, np.ndarray, np.ndarray | None]:
    from ase.calculators.emt import EMT

    atoms.calc = EMT()
    energy = float(atoms.get_potential_energy())
    forces = np.array(atoms.get_forces(), dtype=np.float64)
    stress = np.array(atoms.get_stress(voigt=False), dtype=np.float64) if atoms.pbc.all() else None
    return energy, forces, stress


def emt_isolated_atoms(elements: Sequence[str], box: float = 10.0) -> list[Configuration]:
    """One EMT-labelled isolated atom per element, at the centre of a non-periodic box."""
    from ase import Atoms

    out = []
    for el in elements:
        atoms = Atoms(el, positions=[[box / 2] * 3], cell=np.eye(3) * box, pbc=False)
        energy, forces, _ = _emt_labels(atoms)
        out.append(
            Configuration(
                positions=atoms.positions,
                numbers=atoms.numbers,
                cell=atoms.cell[:],
                pbc=atoms.pbc,
                energy=energy,
                forces=forces,
                config_type="isolated_atom",
                source=f"emt:isolated_{el}",
            )
        )
    return out


def make_emt_dataset(
    n_configs: int = 60,
    seed: int = 0,
    elements: Sequence[str] = ("Cu", "Au"),
    temperatures: Sequence[float] = (300.0, 600.0, 900.0),
    max_strain: float = 0.03,
    spring_constant: float = 8.0,
    include_isolated: bool = True,
) -> list[Configuration]:
    """``n_configs`` EMT-labelled bulk configurations, followed by one isolated atom per element.

    Args:
      n_configs: number of bulk (periodic) configurations.
      seed: seed of the random generator; the same seed gives identical data.
      elements: fcc elements that ASE's EMT knows (see ``EMT_LATTICE_CONSTANTS``).
      temperatures: K; configuration k uses ``temperatures[k % len(temperatures)]`` and is tagged
        ``config_type = f"bulk_{T:g}K"``.
      max_strain: each component of the symmetric strain tensor is uniform in ±max_strain.
      spring_constant: eV/Å², sets the displacement amplitude sqrt(k_B T / k) (≈0.06 Å at 300 K).
      include_isolated: append isolated atoms (config_type "isolated_atom") for every element.

    Every configuration has energy (eV), forces (eV/Å) and, for periodic ones, stress (eV/Å³, ASE sign).
    """
    from ase.build import bulk

    unknown = [e for e in elements if e not in EMT_LATTICE_CONSTANTS]
    if unknown or not elements:
        raise ValueError(f"EMT dataset elements must be among {sorted(EMT_LATTICE_CONSTANTS)}, got {list(elements)}")
    if n_configs < 0:
        raise ValueError(f"n_configs must be >= 0, got {n_configs}")
    elements = list(elements)
    rng = np.random.default_rng(seed)
    configs = []
    for k in range(n_configs):
        kind, repeat = _CELLS[k % len(_CELLS)]
        temperature = float(temperatures[k % len(temperatures)])
        # Composition: fractions from a flat Dirichlet, then each site drawn independently.
        fractions = rng.dirichlet(np.ones(len(elements)))
        atoms = bulk(elements[0], "fcc", a=1.0, cubic=(kind == "cubic")).repeat(repeat)
        species = rng.choice(len(elements), size=len(atoms), p=fractions)
        atoms.set_chemical_symbols([elements[s] for s in species])
        # Vegard's law for the lattice constant of this composition.
        a = float(np.mean([EMT_LATTICE_CONSTANTS[elements[s]] for s in species]))
        atoms.set_cell(atoms.cell[:] * a, scale_atoms=True)
        # Random symmetric strain, shear included.
        eps = rng.uniform(-max_strain, max_strain, size=(3, 3))
        eps = 0.5 * (eps + eps.T)
        atoms.set_cell(atoms.cell[:] @ (np.eye(3) + eps), scale_atoms=True)
        # Thermal-like displacements.
        sigma = np.sqrt(K_B * temperature / spring_constant)
        atoms.positions = atoms.positions + rng.normal(scale=sigma, size=atoms.positions.shape)
        energy, forces, stress = _emt_labels(atoms)
        configs.append(
            Configuration(
                positions=atoms.positions,
                numbers=atoms.numbers,
                cell=atoms.cell[:],
                pbc=atoms.pbc,
                energy=energy,
                forces=forces,
                stress=stress,
                config_type=f"bulk_{temperature:g}K",
                source=f"emt:seed{seed}:{k}",
            )
        )
    if include_isolated:
        configs.extend(emt_isolated_atoms(elements))
    return configs


def make_emt_splits(
    n_train: int = 40, n_test: int = 20, seed: int = 0, **kwargs
) -> tuple[list[Configuration], list[Configuration]]:
    """(train, test): ``n_train`` bulk configurations plus the isolated atoms, and ``n_test`` other bulk ones.

    Both come from one call to :func:`make_emt_dataset` (extra keyword arguments go to it), so they
    never share a configuration, and cell sizes and temperatures are spread over both.
    """
    include_isolated = kwargs.pop("include_isolated", True)
    data = make_emt_dataset(n_train + n_test, seed=seed, include_isolated=include_isolated, **kwargs)
    bulk_configs, isolated = data[: n_train + n_test], data[n_train + n_test :]
    # Interleave so that the test set sees every cell kind and temperature: a seeded permutation.
    order = np.random.default_rng([seed, 1]).permutation(n_train + n_test)
    train = [bulk_configs[k] for k in sorted(order[:n_train])]
    test = [bulk_configs[k] for k in sorted(order[n_train:])]
    return isolated + train, test


def make_molecule_md_dataset(
    name: str = "CH3COCH3",
    n_configs: int = 100,
    temperature: float = 300.0,
    seed: int = 0,
    stride: int = 20,
    timestep_fs: float = 0.5,
) -> list[Configuration]:
    """EMT-labelled frames of a small molecule from Langevin molecular dynamics (a toy molecular dataset).

    The molecule (any name ``ase.build.molecule`` knows; EMT has parameters for H, C, N, O among the
    light elements, so acetone ``CH3COCH3`` by default) is relaxed with EMT, then run at
    ``temperature`` K (Langevin, friction 0.02 fs⁻¹, ``timestep_fs``) after a warm-up of 10 × stride
    steps; every ``stride``-th step is kept. EMT is a crude model of molecules: the data set only
    stands in for DFT molecular dynamics (such as acetylacetone's) where none is available.

    Returns ``n_configs`` configurations (energy eV, forces eV/Å; not periodic), config_type
    ``md_<T>K``. Deterministic for a given seed.
    """
    from ase import units
    from ase.build import molecule
    from ase.calculators.emt import EMT
    from ase.md.langevin import Langevin
    from ase.optimize import BFGS

    try:  # ase >= 3.28
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta

    if n_configs < 0 or stride < 1:
        raise ValueError(f"n_configs must be >= 0 and stride >= 1, got {n_configs} and {stride}")
    try:
        atoms = molecule(name)
    except KeyError:
        raise ValueError(f"ase.build.molecule does not know the molecule {name!r}") from None
    bad = sorted({s for s in atoms.get_chemical_symbols() if s not in ("H", "C", "N", "O", *EMT_LATTICE_CONSTANTS)})
    if bad:
        raise ValueError(f"EMT has no parameters for {', '.join(bad)} (molecule {name!r})")
    atoms.center(vacuum=5.0)
    atoms.pbc = False
    atoms.calc = EMT()
    BFGS(atoms, logfile=None).run(fmax=0.01, steps=500)
    rng = np.random.default_rng(seed)
    thermalize_momenta(atoms, temperature_K=temperature, rng=rng)
    dyn = Langevin(atoms, timestep_fs * units.fs, temperature_K=temperature, friction=0.02 / units.fs, rng=rng, fixcm=False)
    dyn.run(10 * stride)
    configs = []
    for k in range(n_configs):
        dyn.run(stride)
        energy, forces, _ = _emt_labels(atoms.copy())
        configs.append(
            Configuration(
                positions=atoms.positions.copy(),
                numbers=atoms.numbers.copy(),
                cell=np.zeros((3, 3)),
                pbc=np.zeros(3, dtype=bool),
                energy=energy,
                forces=forces,
                config_type=f"md_{temperature:g}K",
                source=f"emt:{name}:T{temperature:g}:seed{seed}:{k}",
            )
        )
    return configs
