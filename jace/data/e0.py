"""Reference energies E0 per element (eV), subtracted before fitting: E = Σ_i E0(z_i) + E_ACE.

Three ways to get them:
  * ``e0_from_isolated``: the energies of isolated-atom configurations (the usual choice with DFT data);
  * ``e0_least_squares``: the least-squares fit of total energies on element counts;
  * a ``{symbol: eV}`` mapping, or all zeros.

``resolve_e0`` turns a :data:`~jace.models.design.E0Spec` into an array in species order.
"""

from __future__ import annotations

import warnings
from typing import Mapping, Sequence, Union

import numpy as np

from jace.data.configuration import Configuration
from jace.data.graph import SpeciesMap
from jace.data.io import DataError

__all__ = ["E0Warning", "e0_from_isolated", "e0_least_squares", "resolve_e0", "element_counts"]


class E0Warning(UserWarning):
    """E0 could be computed, but part of it is not determined by the data."""


def _symbol(z: int) -> str:
    from ase.data import chemical_symbols

    return chemical_symbols[z] if 0 < z < len(chemical_symbols) else f"Z={z}"


def element_counts(configs: Sequence[Configuration], species: SpeciesMap) -> np.ndarray:
    """[n_configs, n_species] number of atoms of each element (error for an element the map lacks)."""
    out = np.zeros((len(configs), len(species)), dtype=np.float64)
    for k, c in enumerate(configs):
        idx = species.indices(c.numbers, c.source)
        out[k] = np.bincount(idx, minlength=len(species))
    return out


def e0_from_isolated(
    isolated_configs: Sequence[Configuration], species: SpeciesMap, atol: float = 1e-6
) -> np.ndarray:
    """E0 per species from single-atom configurations.

    Every element of ``species`` needs at least one isolated-atom configuration with an energy;
    several for one element must agree within ``atol`` eV. Isolated atoms of elements the model does
    not know are ignored.
    """
    found: dict[int, tuple[float, str]] = {}
    for c in isolated_configs:
        if c.n_atoms != 1:
            raise DataError(f"{c.source}: an isolated-atom configuration must have exactly one atom, has {c.n_atoms}")
        if c.energy is None:
            raise DataError(f"{c.source}: isolated-atom configuration ({_symbol(int(c.numbers[0]))}) has no energy")
        z = int(c.numbers[0])
        if z in found:
            e_prev, src_prev = found[z]
            if not np.isclose(c.energy, e_prev, rtol=0.0, atol=atol):
                raise DataError(
                    f"isolated-atom energies of {_symbol(z)} disagree: {e_prev!r} eV ({src_prev}) vs "
                    f"{c.energy!r} eV ({c.source}); keep one, or give E0 explicitly as {{symbol: eV}}"
                )
            continue
        found[z] = (float(c.energy), c.source)
    missing = [_symbol(z) for z in species.atomic_numbers if z not in found]
    if missing:
        have = sorted(_symbol(z) for z in found)
        raise DataError(
            f"no isolated-atom configuration for element(s) {', '.join(missing)} (found isolated atoms of "
            f"{have or 'no element'}); add them to the data, or use e0: least_squares, zero, or {{symbol: eV}}"
        )
    return np.array([found[z][0] for z in species.atomic_numbers], dtype=np.float64)


def e0_least_squares(configs: Sequence[Configuration], species: SpeciesMap, rcond: float = 1e-10) -> np.ndarray:
    """E0 per species minimising Σ_c (E_c - Σ_s n_cs E0_s)² over configurations with an energy.

    When the element counts do not determine every E0 (an element absent from the data, or counts
    that are proportional, e.g. every configuration has the same composition) the minimum-norm
    solution is returned and an :class:`E0Warning` names the elements concerned.
    """
    labelled = [c for c in configs if c.energy is not None]
    if not labelled:
        raise DataError("least-squares E0 needs configurations with energies; none of the given ones has one")
    counts = element_counts(labelled, species)
    energies = np.array([c.energy for c in labelled], dtype=np.float64)
    e0 = np.linalg.lstsq(counts, energies, rcond=rcond)[0]
    # The rank, with the same relative tolerance, and the undetermined directions from the SVD.
    _, s, vt = np.linalg.svd(counts, full_matrices=True)
    tol = rcond * (s[0] if s.size else 0.0)
    rank = int(np.sum(s > tol))
    if rank < len(species):
        null = vt[rank:]  # rows span the null space of the count matrix
        involved = np.nonzero(np.any(np.abs(null) > 1e-8, axis=0))[0]
        absent = [species.symbols[k] for k in involved if not counts[:, k].any()]
        collinear = [species.symbols[k] for k in involved if counts[:, k].any()]
        parts = []
        if absent:
            parts.append(f"element(s) {', '.join(absent)} appear in no configuration with an energy")
        if collinear:
            parts.append(
                f"the counts of {', '.join(collinear)} are collinear (proportional across all configurations), "
                f"so only their combination is determined"
            )
        warnings.warn(
            "least-squares E0 is not unique: " + "; ".join(parts) + ". Using the minimum-norm solution; "
            "consider isolated-atom data or an explicit {symbol: eV} E0.",
            E0Warning,
            stacklevel=2,
        )
    return np.asarray(e0, dtype=np.float64)


def resolve_e0(
    spec: Union[str, Mapping[str, float]],
    species: SpeciesMap,
    train_configs: Sequence[Configuration] = (),
    isolated_configs: Sequence[Configuration] = (),
) -> np.ndarray:
    """E0 [n_species] eV, in species order, from a spec: "isolated", "least_squares", "zero" or {symbol: eV}."""
    if isinstance(spec, str):
        if spec == "zero":
            return np.zeros(len(species), dtype=np.float64)
        if spec == "isolated":
            if not isolated_configs:
                raise DataError(
                    "e0: isolated needs isolated-atom configurations (one atom, config_type isolated_atom or no "
                    "periodic boundaries), but the data has none; use e0: least_squares (fit on the training "
                    "energies), zero, or give {symbol: eV}"
                )
            return e0_from_isolated(isolated_configs, species)
        if spec == "least_squares":
            return e0_least_squares(train_configs, species)
        raise ValueError(f"e0 must be 'isolated', 'least_squares', 'zero' or a {{symbol: eV}} mapping, got {spec!r}")
    if not isinstance(spec, Mapping):
        raise ValueError(f"e0 must be 'isolated', 'least_squares', 'zero' or a {{symbol: eV}} mapping, got {spec!r}")
    from ase.data import atomic_numbers

    unknown = [s for s in spec if not isinstance(s, str) or atomic_numbers.get(s, 0) == 0]
    if unknown:
        raise ValueError(f"e0 mapping has key(s) {unknown} that are not chemical element symbols (e.g. 'Cu', 'Au')")
    missing = [s for s in species.symbols if s not in spec]
    if missing:
        raise ValueError(
            f"e0 mapping gives no energy for element(s) {', '.join(missing)}; the model's elements are "
            f"{', '.join(species.symbols)}"
        )
    out = np.empty(len(species), dtype=np.float64)
    for k, s in enumerate(species.symbols):
        try:
            out[k] = float(spec[s])
        except (TypeError, ValueError) as err:
            raise ValueError(f"e0 for {s} must be a number of eV, got {spec[s]!r}") from err
        if not np.isfinite(out[k]):
            raise ValueError(f"e0 for {s} must be finite, got {spec[s]!r}")
    return out
