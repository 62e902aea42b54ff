"""PNG plots of a training run (matplotlib, Agg backend): learning curves and parity plots.

Every figure is rendered to memory and written with ``jace.files.atomic_write_bytes``.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Optional, Sequence

import numpy as np

from jace.data.configuration import Configuration
from jace.files import atomic_write_bytes

__all__ = ["read_metrics_csv", "plot_learning_curves", "plot_parity"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    _pyplot().close(fig)
    atomic_write_bytes(path, buf.getvalue())


def read_metrics_csv(path) -> list[dict]:
    """Rows of a trainer metrics CSV, numbers as floats (empty cells as NaN)."""
    out = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            rec = {}
            for k, v in row.items():
                try:
                    rec[k] = float(v) if v != "" else math.nan
                except ValueError:
                    rec[k] = v
            out.append(rec)
    return out


def plot_learning_curves(rows: Sequence[dict], path) -> None:
    """Loss (train and validation) and validation RMSEs against the step, log scale."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    step = np.array([r["step"] for r in rows], dtype=float)

    def col(key):
        return np.array([r.get(key, math.nan) for r in rows], dtype=float)

    ax = axes[0]
    for key, label in (("train_loss", "train"), ("valid_loss", "validation")):
        y = col(key)
        ok = np.isfinite(y) & (y > 0)
        if ok.any():
            ax.plot(step[ok], y[ok], marker=".", label=label)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if ax.lines:
        ax.legend()
    ax.set_title("loss")

    ax = axes[1]
    for key, label in (
        ("energy_per_atom_rmse_meV", "E RMSE (meV/atom)"),
        ("forces_rmse_meV_per_A", "F RMSE (meV/Å)"),
        ("stress_rmse_meV_per_A3", "σ RMSE (meV/Å³)"),
    ):
        y = col(key)
        ok = np.isfinite(y) & (y > 0)
        if ok.any():
            ax.plot(step[ok], y[ok], marker=".", label=label)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_title("validation errors")
    if ax.lines:
        ax.legend()
    _save(fig, path)


def plot_parity(
    configs: Sequence[Configuration],
    energies: Sequence[float],
    forces: Optional[Sequence[np.ndarray]],
    path,
    title: str = "validation",
) -> None:
    """Predicted against reference energy per atom (eV/atom) and force components (eV/Å)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    ref_e = [c.energy / c.n_atoms for c, e in zip(configs, energies) if c.energy is not None]
    pred_e = [float(e) / c.n_atoms for c, e in zip(configs, energies) if c.energy is not None]
    _parity(axes[0], np.asarray(ref_e), np.asarray(pred_e), "energy (eV/atom)")
    if forces is not None:
        rf = [c.forces.reshape(-1) for c, f in zip(configs, forces) if c.forces is not None and f is not None]
        pf = [np.asarray(f).reshape(-1) for c, f in zip(configs, forces) if c.forces is not None and f is not None]
        if rf:
            _parity(axes[1], np.concatenate(rf), np.concatenate(pf), "force component (eV/Å)")
    fig.suptitle(title)
    _save(fig, path)


def _parity(ax, ref: np.ndarray, pred: np.ndarray, what: str) -> None:
    if ref.size == 0:
        ax.set_title(f"{what}: no labels")
        return
    ax.scatter(ref, pred, s=6, alpha=0.6)
    lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    rmse = float(np.sqrt(np.mean((pred - ref) ** 2)))
    ax.set_xlabel(f"reference {what}")
    ax.set_ylabel(f"predicted {what}")
    ax.set_title(f"{what}: RMSE {rmse:.4g}")
