"""Error metrics of predictions against labelled configurations, in meV units.

Keys (each pair only when at least one configuration has that label):

  energy_mae_meV, energy_rmse_meV                    total energy per configuration, meV
  energy_per_atom_mae_meV, energy_per_atom_rmse_meV  (E_pred - E_ref) / N, meV/atom
  forces_mae_meV_per_A, forces_rmse_meV_per_A        per Cartesian component, meV/Å
  stress_mae_meV_per_A3, stress_rmse_meV_per_A3      per component of the 3×3 tensor, meV/Å³
  n_configs, n_atoms                                 size of the whole set
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from jace.data.configuration import Configuration, voigt_to_matrix

_EV_TO_MEV = 1000.0


def _mae_rmse(errors: list[np.ndarray]) -> tuple[float, float]:
    e = np.concatenate([np.asarray(x, dtype=np.float64).reshape(-1) for x in errors])
    return float(np.mean(np.abs(e)) * _EV_TO_MEV), float(np.sqrt(np.mean(e * e)) * _EV_TO_MEV)


def _per_config(values: Optional[Sequence], n: int, what: str) -> Sequence:
    if values is None:
        return [None] * n
    if len(values) != n:
        raise ValueError(f"got {len(values)} {what} predictions for {n} configurations")
    return values


def compute_metrics(
    configs: Sequence[Configuration],
    energies: Sequence[Optional[float]],
    forces: Optional[Sequence[Optional[np.ndarray]]] = None,
    stresses: Optional[Sequence[Optional[np.ndarray]]] = None,
) -> dict:
    """MAE and RMSE of predictions against the labels of ``configs``.

    energies: per configuration, total energy in eV; forces: per configuration [n_atoms, 3] eV/Å;
    stresses: per configuration [3, 3] (or 6 Voigt) eV/Å³. Any list may be None, and any entry may be
    None, meaning "not predicted". A configuration without a label (or without the prediction) is
    left out of that observable's metrics; when no configuration contributes, the keys are absent.
    """
    configs = list(configs)
    n = len(configs)
    energies = _per_config(energies, n, "energy")
    forces = _per_config(forces, n, "forces")
    stresses = _per_config(stresses, n, "stress")

    e_err, epa_err, f_err, s_err = [], [], [], []
    for c, e, f, s in zip(configs, energies, forces, stresses):
        if c.energy is not None and e is not None:
            d = float(np.asarray(e).reshape(())) - c.energy
            e_err.append(np.array([d]))
            epa_err.append(np.array([d / c.n_atoms]))
        if c.forces is not None and f is not None:
            f = np.asarray(f, dtype=np.float64)
            if f.shape != c.forces.shape:
                raise ValueError(f"{c.source}: predicted forces have shape {f.shape}, labels {c.forces.shape}")
            f_err.append(f - c.forces)
        if c.stress is not None and s is not None:
            s = voigt_to_matrix(np.asarray(s, dtype=np.float64), c.source)
            s_err.append(s - c.stress)

    out: dict[str, Any] = {}
    if e_err:
        out["energy_mae_meV"], out["energy_rmse_meV"] = _mae_rmse(e_err)
        out["energy_per_atom_mae_meV"], out["energy_per_atom_rmse_meV"] = _mae_rmse(epa_err)
    if f_err:
        out["forces_mae_meV_per_A"], out["forces_rmse_meV_per_A"] = _mae_rmse(f_err)
    if s_err:
        out["stress_mae_meV_per_A3"], out["stress_rmse_meV_per_A3"] = _mae_rmse(s_err)
    out["n_configs"] = n
    out["n_atoms"] = int(sum(c.n_atoms for c in configs))
    return out


def metrics_by_config_type(
    configs: Sequence[Configuration],
    energies: Sequence[Optional[float]],
    forces: Optional[Sequence[Optional[np.ndarray]]] = None,
    stresses: Optional[Sequence[Optional[np.ndarray]]] = None,
) -> dict[str, dict]:
    """{config_type: compute_metrics(...) of that type's configurations}, types in sorted order."""
    configs = list(configs)
    n = len(configs)
    energies = _per_config(energies, n, "energy")
    forces = _per_config(forces, n, "forces")
    stresses = _per_config(stresses, n, "stress")
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(configs):
        groups.setdefault(c.config_type, []).append(i)
    return {
        ct: compute_metrics(
            [configs[i] for i in idx],
            [energies[i] for i in idx],
            [forces[i] for i in idx],
            [stresses[i] for i in idx],
        )
        for ct, idx in sorted(groups.items())
    }


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return _jsonable(x.item())
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if hasattr(x, "__array__") and hasattr(x, "shape"):  # jax arrays
        return _jsonable(np.asarray(x).tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    return str(x)


def write_metrics_json(path, metrics: Mapping) -> None:
    """Write metrics as indented JSON, atomically. NumPy/JAX values become plain numbers; NaN
    becomes null so the file is strict JSON."""
    from jace.files import atomic_write_bytes

    text = json.dumps(_jsonable(metrics), indent=2, allow_nan=False) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))


# --------------------------------------------------------------------------------------------------
# Human-readable summary

_COLUMNS = (
    ("E/atom RMSE", "meV/atom", "energy_per_atom_rmse_meV"),
    ("E/atom MAE", "meV/atom", "energy_per_atom_mae_meV"),
    ("F RMSE", "meV/Å", "forces_rmse_meV_per_A"),
    ("F MAE", "meV/Å", "forces_mae_meV_per_A"),
    ("S RMSE", "meV/Å³", "stress_rmse_meV_per_A3"),
    ("S MAE", "meV/Å³", "stress_mae_meV_per_A3"),
)


def format_metrics_table(sets: Mapping[str, Mapping]) -> str:
    """A fixed-width table, one row per named set ({name: compute_metrics(...)}); '-' where absent."""
    name_w = max([len("set")] + [len(str(k)) for k in sets])
    head1 = f"{'set':<{name_w}}  {'configs':>7}  {'atoms':>7}" + "".join(f"  {c[0]:>11}" for c in _COLUMNS)
    head2 = f"{'':<{name_w}}  {'':>7}  {'':>7}" + "".join(f"  {c[1]:>11}" for c in _COLUMNS)
    lines = [head1, head2, "-" * len(head1)]
    for name, m in sets.items():
        row = f"{str(name):<{name_w}}  {m.get('n_configs', 0):>7d}  {m.get('n_atoms', 0):>7d}"
        for _, _, key in _COLUMNS:
            v = m.get(key)
            row += f"  {v:>11.3f}" if isinstance(v, (int, float)) else f"  {'-':>11}"
        lines.append(row)
    return "\n".join(lines)
