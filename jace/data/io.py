"""Reading and writing labelled configurations (extxyz first, anything ASE can read).

Where labels are found
----------------------
For every label jace looks, in this order,

  1. in ``atoms.info`` (per-configuration values) or ``atoms.arrays`` (per-atom values) under the key
     configured in :class:`~jace.models.design.DataKeys`;
  2. in ``atoms.calc.results`` under the same key.

Step 2 matters because ase ≥ 3.23 moves the *standard* property names (``energy``, ``free_energy``,
``forces``, ``stress``, ...) out of ``info``/``arrays`` into a ``SinglePointCalculator`` when it reads
an extxyz file: a file with ``energy=-3.2`` in the comment line ends up in ``atoms.calc.results``,
while ``REF_energy=-3.2`` or ``dft_energy=...`` stays in ``atoms.info`` and a ``REF_forces`` or
``force`` column stays in ``atoms.arrays``. jace never silently substitutes one label for another:
with ``DataKeys(energy="REF_energy")`` a configuration that only has ``energy`` is an error, and the
error lists the keys that *are* present.

Stress
------
The stress is looked up under ``keys.stress`` (6 Voigt components xx yy zz yz xz xy, or 9 / 3×3,
eV/Å³, ASE sign: positive is tensile). When it is absent, a virial under ``keys.virial`` (9 or 3×3,
eV) is converted with ``stress = -virial / volume``.

Units are the file's: jace assumes Å, eV, eV/Å and eV/Å³.
"""

from __future__ import annotations

import os
from typing import Iterable, Optional, Sequence, Union

import numpy as np

from jace.data.configuration import Configuration, voigt_to_matrix
from jace.data.keys import DataKeys
from jace.files import atomic_write_bytes

__all__ = [
    "DataError",
    "read_configurations",
    "write_configurations",
    "split_isolated_atoms",
    "configuration_from_atoms",
    "configuration_to_atoms",
]


class DataError(ValueError):
    """A data file that cannot be used as it is (missing label, NaN, wrong shape, unreadable)."""


Index = Union[str, int, slice]


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------


def _index_labels(path: str, index: Index, n_read: int) -> list[str]:
    """``source`` strings "path:k" with k the index of each configuration in the file, when known."""
    from ase.io.formats import string2index

    idx = string2index(index) if isinstance(index, str) else index
    if isinstance(idx, int):
        return [f"{path}:{idx}"] * n_read
    if isinstance(idx, slice):
        start = 0 if idx.start is None else idx.start
        step = 1 if idx.step is None else idx.step
        if start >= 0 and step > 0:
            return [f"{path}:{start + k * step}" for k in range(n_read)]
    # A negative start or step: positions in the file are not known without its length.
    return [f"{path}[{index}]#{k}" for k in range(n_read)]


def _present_keys(atoms) -> str:
    info = sorted(str(k) for k in atoms.info)
    arrays = sorted(str(k) for k in atoms.arrays if k not in ("numbers", "positions"))
    calc = sorted(atoms.calc.results) if atoms.calc is not None and hasattr(atoms.calc, "results") else []
    return f"info keys {info}, per-atom arrays {arrays}, calculator results {calc}"


def _lookup(atoms, key: str, per_atom: bool):
    """The value stored under ``key`` (info/arrays first, then calculator results), or None."""
    store = atoms.arrays if per_atom else atoms.info
    if key in store and key not in ("numbers", "positions"):
        return store[key]
    calc = atoms.calc
    if calc is not None and key in getattr(calc, "results", {}):
        return calc.results[key]
    return None


def _as_float_array(value, source: str, key: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise DataError(f"{source}: label {key!r} is not numeric: {value!r}") from err
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))
        where = "" if arr.ndim == 0 else f" at index {tuple(int(i) for i in bad[0])}"
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise DataError(f"{source}: label {key!r} contains NaN or inf{where}{more}")
    return arr


def _scalar(value, source: str, key: str) -> float:
    arr = _as_float_array(value, source, key)
    if arr.size != 1:
        raise DataError(f"{source}: label {key!r} should be a single number, got shape {arr.shape}")
    return float(arr.reshape(()))


def configuration_from_atoms(
    atoms, source: str = "<atoms>", keys: DataKeys = DataKeys(), require: Sequence[str] = ()
) -> Configuration:
    """One ``ase.Atoms`` → :class:`Configuration`, with labels found as described in the module docstring.

    ``require`` names labels that must be present: any of "energy", "forces", "stress" (a virial
    counts as a stress).
    """
    unknown = set(require) - {"energy", "forces", "stress", "virial"}
    if unknown:
        raise ValueError(f"require may contain 'energy', 'forces', 'stress'; got unknown {sorted(unknown)}")

    n = len(atoms)
    if n == 0:
        raise DataError(f"{source}: configuration has no atoms")
    positions = np.asarray(atoms.get_positions(), dtype=np.float64)
    if not np.all(np.isfinite(positions)):
        bad = np.unique(np.nonzero(~np.isfinite(positions))[0])
        raise DataError(f"{source}: positions of atoms {bad.tolist()} contain NaN or inf")
    cell = np.asarray(atoms.cell[:], dtype=np.float64)
    if not np.all(np.isfinite(cell)):
        raise DataError(f"{source}: cell contains NaN or inf")
    pbc = np.asarray(atoms.pbc, dtype=bool)

    def missing(label: str, key: str, also: str = ""):
        return DataError(
            f"{source}: required label {label!r} not found under key {key!r}{also}; this configuration has "
            f"{_present_keys(atoms)}. Tell jace the names your file uses (DataKeys(energy=..., forces=..., "
            f"stress=..., virial=...))."
        )

    # Energy.
    energy = None
    value = _lookup(atoms, keys.energy, per_atom=False)
    if value is not None:
        energy = _scalar(value, source, keys.energy)
    elif "energy" in require:
        raise missing("energy", keys.energy)

    # Forces.
    forces = None
    value = _lookup(atoms, keys.forces, per_atom=True)
    if value is not None:
        forces = _as_float_array(value, source, keys.forces)
        if forces.shape != (n, 3):
            raise DataError(
                f"{source}: forces under key {keys.forces!r} have shape {forces.shape}, expected ({n}, 3) "
                f"for {n} atoms"
            )
    elif "forces" in require:
        raise missing("forces", keys.forces)

    # Stress, or a virial converted to a stress.
    stress = None
    value = _lookup(atoms, keys.stress, per_atom=False)
    if value is not None:
        arr = _as_float_array(value, source, keys.stress)
        if arr.size not in (6, 9):
            raise DataError(
                f"{source}: stress under key {keys.stress!r} has {arr.size} components; expected 6 (Voigt "
                f"xx yy zz yz xz xy) or 9"
            )
        stress = voigt_to_matrix(arr, source)
    else:
        value = _lookup(atoms, keys.virial, per_atom=False)
        if value is not None:
            arr = _as_float_array(value, source, keys.virial)
            if arr.size != 9:
                raise DataError(
                    f"{source}: virial under key {keys.virial!r} has {arr.size} components; expected 9 (3×3)"
                )
            volume = abs(float(np.linalg.det(cell)))
            if not pbc.all() or volume < 1e-8:
                raise DataError(
                    f"{source}: a virial (key {keys.virial!r}) needs a periodic cell with a volume to convert "
                    f"to a stress; this configuration has pbc={pbc.tolist()} and volume {volume:.3g} Å³"
                )
            stress = -arr.reshape(3, 3) / volume
        elif "stress" in require or "virial" in require:
            raise missing("stress", keys.stress, also=f" (nor a virial under {keys.virial!r})")

    # Weights and config_type.
    def weight(key: str) -> float:
        if key not in atoms.info:
            return 1.0
        w = _scalar(atoms.info[key], source, key)
        if w < 0:
            raise DataError(f"{source}: weight {key!r} must be >= 0, got {w}")
        return w

    config_type = atoms.info.get(keys.config_type, "default")
    if isinstance(config_type, bytes):
        config_type = config_type.decode()

    try:
        return Configuration(
            positions=positions,
            numbers=np.asarray(atoms.get_atomic_numbers()),
            cell=cell,
            pbc=pbc,
            energy=energy,
            forces=forces,
            stress=stress,
            weight=weight(keys.weight),
            energy_weight=weight(keys.energy_weight),
            forces_weight=weight(keys.forces_weight),
            stress_weight=weight(keys.stress_weight),
            config_type=str(config_type),
            source=source,
        )
    except DataError:
        raise
    except ValueError as err:
        raise DataError(str(err)) from err


def read_configurations(
    path: Union[str, os.PathLike],
    keys: DataKeys = DataKeys(),
    index: Index = ":",
    require: Sequence[str] = (),
    format: Optional[str] = None,
) -> list[Configuration]:
    """Read labelled configurations from any file ``ase.io.read`` understands (extxyz first).

    Args:
      path: the file.
      keys: where the labels live (see the module docstring).
      index: which configurations, in ASE's syntax (":" all, "-1" last, "10:20", or an int / slice).
      require: labels every configuration must have, e.g. ("energy", "forces").
      format: an ASE format name, when it cannot be guessed from the file name.

    Returns:
      the configurations, each with ``source = "path:k"`` (k its index in the file).

    Raises:
      FileNotFoundError: the file does not exist.
      DataError (a ValueError): the file cannot be parsed, a required label is missing, a label or a
        position is NaN/inf, or a label has the wrong shape. The message names the file, the
        configuration index and the key.
    """
    import ase.io

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"data file not found: {path!r}")
    if os.path.isdir(path):
        raise DataError(f"{path!r} is a directory, not a data file")
    try:
        images = ase.io.read(path, index=index, format=format)
    except FileNotFoundError:
        raise
    except Exception as err:  # ASE raises many kinds for a malformed file
        raise DataError(
            f"{path}: could not read configurations {index!r} with ASE: {type(err).__name__}: {err}"
        ) from err
    if not isinstance(images, list):
        images = [images]
    if not images:
        raise DataError(f"{path}: no configurations found (index {index!r})")
    sources = _index_labels(path, index, len(images))
    return [configuration_from_atoms(atoms, src, keys, require) for atoms, src in zip(images, sources)]


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------


def _matrix_to_voigt(s: np.ndarray) -> np.ndarray:
    return np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])


def configuration_to_atoms(config: Configuration, keys: DataKeys = DataKeys()):
    """:class:`Configuration` → ``ase.Atoms``.

    Labels under the standard names (``energy``, ``forces``, ``stress``) go into a
    ``SinglePointCalculator``, as ase expects; labels configured under other names go into
    ``info``/``arrays`` under those names, so that ``read_configurations(path, keys)`` reads them back.
    A stress is stored in Voigt form: its symmetric part is kept.
    """
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    atoms = Atoms(numbers=config.numbers, positions=config.positions, cell=config.cell, pbc=config.pbc)
    results = {}
    if config.energy is not None:
        if keys.energy == "energy":
            results["energy"] = float(config.energy)
        else:
            atoms.info[keys.energy] = float(config.energy)
    if config.forces is not None:
        if keys.forces == "forces":
            results["forces"] = np.array(config.forces, dtype=np.float64)
        else:
            atoms.arrays[keys.forces] = np.array(config.forces, dtype=np.float64)
    if config.stress is not None:
        s = np.asarray(config.stress, dtype=np.float64)
        voigt = _matrix_to_voigt(0.5 * (s + s.T))
        if keys.stress == "stress":
            results["stress"] = voigt
        else:
            atoms.info[keys.stress] = voigt
    atoms.info[keys.config_type] = str(config.config_type)
    for attr in ("weight", "energy_weight", "forces_weight", "stress_weight"):
        value = float(getattr(config, attr))
        if value != 1.0:
            atoms.info[getattr(keys, attr)] = value
    if results:
        atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def write_configurations(
    path: Union[str, os.PathLike], configs: Iterable[Configuration], keys: DataKeys = DataKeys()
) -> None:
    """Write configurations as extxyz with their labels, config_type and (non-default) weights.

    The file is written to a temporary file in the same directory and moved into place with
    ``os.replace``, so an existing file is never left half-written if anything fails.
    Positions and forces are written with 8 decimals (ASE's extxyz format), energies in full.
    """
    import ase.io

    import io as _io

    atoms_list = [configuration_to_atoms(c, keys) for c in configs]
    buffer = _io.StringIO()
    ase.io.write(buffer, atoms_list, format="extxyz")
    atomic_write_bytes(os.fspath(path), buffer.getvalue().encode("utf-8"))


def split_isolated_atoms(configs: Iterable[Configuration]) -> tuple[list[Configuration], list[Configuration]]:
    """Split into (isolated-atom configurations, everything else), keeping the order of each."""
    isolated, rest = [], []
    for c in configs:
        (isolated if c.is_isolated_atom() else rest).append(c)
    return isolated, rest
