"""Ablation results: one record per design point, a Markdown table, and ``results.json``.

The table is meant to be read without plots: one row per design point, sorted by the in-domain
force MAE (then the in-domain energy MAE); finished runs first, diverged and failed runs last.
Columns, left to right:

  design point | status | params | train (s) |
  for each test set:  <set> E (meV/atom)   <set> F (meV/Å)
  for each scan:      <scan> ∫E''² (eV²/<unit>³)   <scan> sign ch.

Energies use ``energy_per_atom_mae_meV`` (falling back to ``energy_mae_meV``, per configuration, with
the header saying so when no record has the per-atom number); forces ``forces_mae_meV_per_A``.
Missing values are "–"; a non-finite number is "NaN", and a run with any non-finite metric or
roughness number (or whose status says so) has the status "diverged".
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Iterable, Optional, Sequence

from jace.files import atomic_write_bytes

MISSING = "–"
ENERGY_KEY = "energy_per_atom_mae_meV"
ENERGY_FALLBACK_KEY = "energy_mae_meV"
FORCES_KEY = "forces_mae_meV_per_A"
IN_DOMAIN = "in_domain"


@dataclasses.dataclass
class AblationRecord:
    """The outcome of one design point.

    overrides: dotted key → value applied to the base config; n_params: trainable parameters;
    train_seconds: wall time of training; metrics: test set name → metrics dict (keys as in
    :mod:`jace.training.metrics`); roughness: scan name → :func:`jace.diagnostics.smoothness.roughness`
    dict; status: "ok", "diverged" (NaN loss or predictions) or "failed"; message: what went wrong.
    """

    name: str
    overrides: dict = dataclasses.field(default_factory=dict)
    seed: int = 0
    n_params: Optional[int] = None
    train_seconds: Optional[float] = None
    metrics: dict = dataclasses.field(default_factory=dict)
    roughness: dict = dataclasses.field(default_factory=dict)
    status: str = "ok"
    message: Optional[str] = None

    def to_dict(self) -> dict:
        """A JSON-safe dict; non-finite numbers become null."""
        return _json_safe(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict) -> "AblationRecord":
        """Inverse of :meth:`to_dict`; null numbers in metrics and roughness come back as NaN."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown AblationRecord field(s): {', '.join(unknown)}")
        kw = dict(d)
        kw["metrics"] = {k: _nulls_to_nan(v) for k, v in (d.get("metrics") or {}).items()}
        kw["roughness"] = {k: _nulls_to_nan(v) for k, v in (d.get("roughness") or {}).items()}
        return cls(**kw)

    @property
    def diverged(self) -> bool:
        """Status "diverged", or any non-finite number among the metrics or roughness values."""
        if self.status == "diverged":
            return True
        for group in (self.metrics, self.roughness):
            for values in group.values():
                for v in (values or {}).values():
                    if isinstance(v, float) and not math.isfinite(v):
                        return True
        return False

    @property
    def effective_status(self) -> str:
        if self.status not in ("ok", "diverged"):
            return self.status
        return "diverged" if self.diverged else self.status


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()  # numpy scalars
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int):
        return int(value)
    if hasattr(value, "tolist"):
        return _json_safe(value.tolist())
    return str(value)


def _nulls_to_nan(values: Any) -> Any:
    if not isinstance(values, dict):
        return values
    return {k: (math.nan if v is None else v) for k, v in values.items()}


# --------------------------------------------------------------------------------------------------
# Formatting


def _number(value: Any) -> Optional[float]:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _fmt(value: Any, kind: str = "mae") -> str:
    v = _number(value)
    if v is None:
        return MISSING
    if not math.isfinite(v):
        return "NaN"
    if kind == "int":
        return f"{int(round(v)):,}"
    if kind == "seconds":
        return f"{v:.1f}"
    if kind == "sci":
        return "0" if v == 0 else f"{v:.2e}"
    a = abs(v)
    if a >= 100:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def _ordered_union(dicts: Iterable[dict]) -> list[str]:
    out: list[str] = []
    for d in dicts:
        for k in d or {}:
            if k not in out:
                out.append(k)
    return out


def _sort_key(record: AblationRecord, in_domain: Optional[str], energy_key: str, index: int):
    status = record.effective_status
    rank = 0 if status == "ok" else (1 if status == "diverged" else 2)
    m = record.metrics.get(in_domain, {}) if in_domain else {}
    f, e = _number(m.get(FORCES_KEY)), _number(m.get(energy_key))
    f = f if f is not None and math.isfinite(f) else math.inf
    e = e if e is not None and math.isfinite(e) else math.inf
    return (rank, f, e, index)


def ablation_table(records: Sequence[AblationRecord], in_domain: Optional[str] = None,
                   test_sets: Optional[Sequence[str]] = None, scans: Optional[Sequence[str]] = None) -> str:
    """A Markdown table of the records, aligned for reading as plain text (see the module docstring).

    in_domain: the test set to sort by (default "in_domain" if present, else the first test set);
    test_sets / scans: which columns and in what order (default: all, in order of appearance).
    """
    records = list(records)
    if test_sets is None:
        test_sets = _ordered_union(r.metrics for r in records)
    if scans is None:
        scans = _ordered_union(r.roughness for r in records)
    if in_domain is None:
        in_domain = IN_DOMAIN if IN_DOMAIN in test_sets else (test_sets[0] if test_sets else None)

    per_atom = any(ENERGY_KEY in (r.metrics.get(t) or {}) for r in records for t in test_sets)
    energy_key, energy_unit = (ENERGY_KEY, "meV/atom") if per_atom else (ENERGY_FALLBACK_KEY, "meV/config")

    header = ["design point", "status", "params", "train (s)"]
    align = ["l", "l", "r", "r"]
    for t in test_sets:
        header += [f"{t} E ({energy_unit})", f"{t} F (meV/Å)"]
        align += ["r", "r"]
    for s in scans:
        unit = next((str(r.roughness[s]["unit"]) for r in records
                     if isinstance(r.roughness.get(s), dict) and r.roughness[s].get("unit")), "")
        header += [f"{s} ∫E''² (eV²/{unit}³)" if unit else f"{s} ∫E''²", f"{s} sign ch."]
        align += ["r", "r"]

    order = sorted(range(len(records)), key=lambda k: _sort_key(records[k], in_domain, energy_key, k))
    rows = []
    for k in order:
        r = records[k]
        row = [r.name, r.effective_status, _fmt(r.n_params, "int"), _fmt(r.train_seconds, "seconds")]
        for t in test_sets:
            m = r.metrics.get(t) or {}
            row += [_fmt(m.get(energy_key)), _fmt(m.get(FORCES_KEY))]
        for s in scans:
            rough = r.roughness.get(s) or {}
            sc = _number(rough.get("sign_changes"))
            row += [_fmt(rough.get("roughness"), "sci"),
                    MISSING if sc is None or not math.isfinite(sc) or sc < 0 else str(int(sc))]
        rows.append([c.replace("|", "\\|") for c in row])

    widths = [max(len(h), *(len(row[c]) for row in rows)) if rows else len(h) for c, h in enumerate(header)]

    def line(cells):
        padded = [cell.ljust(w) if a == "l" else cell.rjust(w) for cell, w, a in zip(cells, widths, align)]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join((":" + "-" * (w + 1)) if a == "l" else ("-" * (w + 1) + ":") for w, a in zip(widths, align)) + "|"
    lines = [line(header), rule] + [line(row) for row in rows]
    notes = []
    if in_domain:
        notes.append(f"Sorted by {in_domain} force MAE, then energy MAE; diverged and failed runs last.")
    if scans:
        notes.append("∫E''²: roughness ∫(d²E/dq²)² dq along the scan; sign ch.: sign changes of dE/dq "
                     "(1 for a clean bond curve; more are spurious oscillations).")
    failed = [records[k] for k in order if records[k].message]
    for r in failed:
        notes.append(f"{r.name}: {r.message}")
    return "\n".join(lines) + ("\n\n" + "\n".join(notes) if notes else "") + "\n"


def write_ablation_results(records: Sequence[AblationRecord], out_dir, **table_kwargs) -> tuple[str, str]:
    """Write ``results.json`` (``{"records": [...]}``, non-finite numbers as null) and ``table.md``
    into ``out_dir``, each atomically. Returns their paths."""
    records = list(records)
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    results_path = os.path.join(out_dir, "results.json")
    table_path = os.path.join(out_dir, "table.md")
    doc = {"records": [r.to_dict() for r in records]}
    atomic_write_bytes(results_path, (json.dumps(doc, indent=2, allow_nan=False) + "\n").encode("utf-8"))
    atomic_write_bytes(table_path, ablation_table(records, **table_kwargs).encode("utf-8"))
    return results_path, table_path


def load_ablation_results(path) -> list[AblationRecord]:
    """Read the records of a ``results.json`` written by :func:`write_ablation_results`."""
    with open(os.fspath(path), encoding="utf-8") as fh:
        doc = json.load(fh)
    if not isinstance(doc, dict) or not isinstance(doc.get("records"), list):
        raise ValueError(f"{path}: not an ablation results file (expected {{'records': [...]}})")
    return [AblationRecord.from_dict(d) for d in doc["records"]]
