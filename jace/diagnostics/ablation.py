"""The ablation runner behind ``jace ablate SWEEP.yaml``.

For every design point of a sweep (:mod:`jace.diagnostics.sweep`), with the same data, seeds and
budget:

1. its training config (base config + overrides + seed) is parsed and its output directory is
   ``<out_dir>/<point dirname>``;
2. the model is trained (neural types, ``jace.training.pipeline.train_multi_ace``) or fitted
   (``linear_ace``), and the wall time of that is recorded. The budget: ``budget.max_epochs``
   replaces ``training.max_epochs``; ``budget.minutes`` stops training at the first evaluation
   after that much wall time (through the trainer's callback; evaluations happen every
   ``training.eval_every`` epochs or steps);
3. every test set is evaluated: the sweep's ``test_sets`` (in-domain and out-of-domain files), or the
   config's ``data.test`` when the sweep names none;
4. the parameters are counted, and the smoothness scans (:func:`jace.diagnostics.smoothness.default_scans`
   of ``scans.molecule``, or the bond / dihedral / dimer the sweep names) are run with the trained
   model; the scan curves are saved in the point's ``scans.json``;
5. the record (:class:`jace.diagnostics.tables.AblationRecord`) joins ``results.json`` and ``table.md``
   (rewritten after every point), and one PNG per scan type shows every model (``scan_<name>.png``),
   plus ``roughness.png``.

A point whose training diverges (``TrainingError``: NaN loss) is recorded as "diverged", one that
fails otherwise as "failed" (with the message), and the sweep goes on. Points whose record is already
in ``results.json`` (status ok or diverged) are skipped, so an interrupted sweep continues where it
stopped; a point stopped mid-training resumes from its checkpoint. A point whose stored config
differs from the sweep's is an error (delete its directory, or choose another out_dir).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Callable

import numpy as np

from jace.diagnostics.smoothness import (
    ScanResult,
    ScanSpec,
    bond_stretch,
    default_scans,
    dihedral_scan,
    dimer_approach,
    plot_roughness,
    plot_scans,
    run_scans,
)
from jace.diagnostics.sweep import DesignPoint, Sweep, SweepError
from jace.diagnostics.tables import AblationRecord, ablation_table, load_ablation_results, write_ablation_results

__all__ = ["run_ablation", "build_scans", "point_config", "scan_result_from_dict"]


# --------------------------------------------------------------------------------------------------
# Configs of the points


def point_config(sweep: Sweep, point: DesignPoint, check_paths: bool = True):
    """The parsed TrainConfig of one point: output directory ``<out_dir>/<dirname>``, and for a neural
    model ``training.max_epochs`` from ``budget.max_epochs`` when the sweep gives one."""
    from jace.config import parse_train_config

    raw = sweep.config_for(point)
    try:
        cfg = parse_train_config(raw, file=sweep.base_source or sweep.source, base_dir=sweep.base_dir,
                                 check_paths=check_paths)
    except ValueError as exc:
        raise SweepError(f"{sweep.source}: design point '{point.name}': {exc}") from None
    if cfg.training is not None and sweep.budget.max_epochs is not None:
        settings = dataclasses.replace(cfg.training.settings, max_epochs=int(sweep.budget.max_epochs))
        cfg = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, settings=settings))
    return dataclasses.replace(cfg, output_dir=os.path.join(sweep.out_dir, point.dirname))


def _record_name(sweep: Sweep, point: DesignPoint) -> str:
    return point.run_name if len(sweep.seeds) > 1 else point.name


# --------------------------------------------------------------------------------------------------
# Scans


def build_scans(sweep: Sweep, cutoff: float) -> dict[str, ScanSpec]:
    """The scans of the sweep's molecule: ``default_scans``, with the bond / dihedral / dimer the sweep
    names replacing the automatic choices. ``cutoff`` sets the range of the bond and dimer scans."""
    import ase.io

    s = sweep.scans
    try:
        molecule = ase.io.read(s.molecule, index=s.index)
    except FileNotFoundError:
        raise SweepError(f"{sweep.source}: scans.molecule: file not found: {s.molecule}") from None
    except Exception as exc:  # ASE raises many kinds for an unreadable file
        raise SweepError(f"{sweep.source}: scans.molecule: cannot read frame {s.index} of {s.molecule}: {exc}") from None
    try:
        scans = default_scans(molecule, cutoff)
        symbols = molecule.get_chemical_symbols()
        if s.bond is not None:
            i, j = s.bond
            images, r = bond_stretch(molecule, i, j, cutoff=cutoff)
            scans["bond"] = ScanSpec("bond", "bond", images, r, "Å", f"r({symbols[i]}{i}–{symbols[j]}{j}) (Å)", (i, j))
        if s.dihedral is not None:
            phi = np.arange(-180.0, 180.0 + 2.5, 5.0)
            images, phi = dihedral_scan(molecule, *s.dihedral, phi)
            label = "dihedral " + "–".join(f"{symbols[k]}{k}" for k in s.dihedral) + " (deg)"
            scans["dihedral"] = ScanSpec("dihedral", "dihedral", images, phi, "deg", label, tuple(s.dihedral))
        if s.dimer is not None:
            a, b = s.dimer
            images, r = dimer_approach(a, b, np.arange(0.3, max(6.0, cutoff + 1.0) + 0.025, 0.05))
            scans["dimer"] = ScanSpec("dimer", "dimer", images, r, "Å", f"r({a}–{b}) (Å)", (a, b))
    except ValueError as exc:
        raise SweepError(f"{sweep.source}: scans: {exc}") from None
    return scans


def _scan_elements(scans: dict[str, ScanSpec]) -> set:
    return {sym for spec in scans.values() for image in spec.images for sym in image.get_chemical_symbols()}


def scan_result_from_dict(d: dict) -> ScanResult:
    """Inverse of ``ScanResult.to_dict`` (nulls back to NaN)."""
    def arr(key):
        return np.asarray([math.nan if v is None else float(v) for v in d.get(key, [])], dtype=np.float64)

    return ScanResult(
        name=d["name"], coordinate=arr("coordinate"), energies=arr("energies"),
        generalised_force=arr("generalised_force"), max_force=arr("max_force"), unit=d.get("unit", ""),
        label=d.get("label", ""), errors={int(k): v for k, v in (d.get("errors") or {}).items()},
    )


def _energy_forces(model, scans: dict):
    if getattr(model, "model_type", None) in ("multi_ace", "grace"):
        from jace.models.multi_ace import energy_forces_fn  # works for any model with predict_graph

        return energy_forces_fn(model, image_sets=[spec.images for spec in scans.values()])
    from jace.data.configuration import Configuration
    from jace.training.pipeline import evaluate_model

    def energy_forces(images):
        configs = [Configuration(positions=a.get_positions(), numbers=a.numbers, cell=np.asarray(a.cell[:]),
                                 pbc=np.asarray(a.pbc), source=f"image {k}") for k, a in enumerate(images)]
        energies, forces, _ = evaluate_model(model, configs, batch_size=max(len(configs), 1))
        return np.asarray(energies, dtype=np.float64), forces

    return energy_forces


def _plot(out_dir: str, records, curves: dict, log) -> list[str]:
    """scan_<name>.png (every model) and roughness.png; returns the paths written."""
    import importlib.util

    written: list[str] = []
    if importlib.util.find_spec("matplotlib") is None:
        log("matplotlib is not installed: no plots")
        return written
    for scan, per_model in curves.items():
        if per_model:
            path = os.path.join(out_dir, f"scan_{scan}.png")
            plot_scans(per_model, path, title=f"{scan} scan")
            written.append(path)
    if any(r.roughness for r in records):
        path = os.path.join(out_dir, "roughness.png")
        plot_roughness([r for r in records if r.roughness], path)
        written.append(path)
    return written


# --------------------------------------------------------------------------------------------------
# One point


def _metrics_sets(sweep: Sweep, cfg) -> dict:
    tests = dict(sweep.test_sets) if sweep.test_sets else dict(cfg.data.test)
    if "in_domain" in tests:  # the set the table sorts by comes first
        tests = {"in_domain": tests.pop("in_domain"), **tests}
    return tests


def _time_budget(seconds: float) -> Callable[[dict], bool]:
    """A trainer callback that asks to stop at the first evaluation ``seconds`` after its creation."""
    start = time.perf_counter()

    def callback(row: dict) -> bool:
        return time.perf_counter() - start >= seconds

    return callback


def _run_point(sweep: Sweep, point: DesignPoint, cfg, scans, progress: bool, log) -> tuple[AblationRecord, dict]:
    """Train, evaluate and scan one point; returns (record, {scan name: ScanResult})."""
    from jace.cli import echo_training_log, set_precision
    from jace.config import write_train_config
    from jace.models.io import save_model
    from jace.training.loop import TrainingError
    from jace.training.metrics import write_metrics_json
    from jace.training.pipeline import evaluate_sets, has_checkpoint, read_datasets, train_multi_ace

    name = _record_name(sweep, point)
    record = AblationRecord(name=name, overrides=dict(point.overrides), seed=point.seed)
    out_dir = cfg.output_dir
    os.makedirs(out_dir, exist_ok=True)
    set_precision(cfg.precision)
    write_train_config(os.path.join(out_dir, "config.yaml"), cfg)
    data = read_datasets(cfg, tests=_metrics_sets(sweep, cfg))

    t0 = time.perf_counter()
    if cfg.training is not None:
        callback = None if sweep.budget.minutes is None else _time_budget(60.0 * sweep.budget.minutes)
        try:
            with echo_training_log(log):
                model, _, info = train_multi_ace(cfg, data, out_dir, resume=has_checkpoint(out_dir),
                                                 progress=progress, callback=callback, log=log)
        except TrainingError as exc:
            record.train_seconds = time.perf_counter() - t0
            record.status = "diverged"
            record.message = str(exc).split(". Try")[0]
            return record, {}
        record.n_params = int(info["n_params"])
    else:
        from jace.models.linear_ace import fit_linear_ace

        model, info = fit_linear_ace(cfg.model, cfg.fit, data.train, data.isolated)
        record.n_params = int(np.size(model.coefficients))
    record.train_seconds = time.perf_counter() - t0
    save_model(os.path.join(out_dir, "model.jace"), model)

    record.metrics = evaluate_sets(model, data.tests)
    write_metrics_json(os.path.join(out_dir, "metrics.json"), {**record.metrics, "fit": dict(info or {})})

    results: dict = {}
    if scans:
        results = run_scans(_energy_forces(model, scans), scans)
        record.roughness = {scan: res.roughness() for scan, res in results.items()}
        write_metrics_json(os.path.join(out_dir, "scans.json"), {k: r.to_dict() for k, r in results.items()})
    if record.diverged:
        record.status = "diverged"
        record.message = "non-finite test-set errors or scan energies"
    return record, results


# --------------------------------------------------------------------------------------------------
# The sweep


def _same_config(path: str, cfg) -> bool:
    from jace.config import load_train_config, train_config_to_dict

    try:
        old = load_train_config(path, check_paths=False)
    except ValueError:
        return False
    return train_config_to_dict(old) == train_config_to_dict(cfg)


def _load_curves(out_dir: str) -> dict:
    import json

    path = os.path.join(out_dir, "scans.json")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as fh:
        return {k: scan_result_from_dict(v) for k, v in json.load(fh).items()}


def run_ablation(sweep: Sweep, log: Callable[[str], None] = print, progress: bool = False,
                 resume: bool = True) -> list[AblationRecord]:
    """Run every design point of ``sweep`` (see the module docstring) and return the records, in sweep
    order. Writes ``results.json``, ``table.md``, ``scan_<name>.png`` and ``roughness.png`` in
    ``sweep.out_dir`` and prints the table.

    resume: skip points whose record (ok or diverged) is already in ``results.json``.
    """
    points = sweep.expand()
    configs = {p.run_name: point_config(sweep, p) for p in points}  # every config is checked up front
    os.makedirs(sweep.out_dir, exist_ok=True)

    scans: dict = {}
    if sweep.scans is not None:
        cutoff = max(float(c.model.cutoff) for c in configs.values())
        scans = build_scans(sweep, cutoff)
        missing = {
            p.name: sorted(_scan_elements(scans) - set(configs[p.run_name].model.elements)) for p in points
        }
        bad = {k: v for k, v in missing.items() if v}
        if bad:
            name, elems = next(iter(bad.items()))
            raise SweepError(
                f"{sweep.source}: scans.molecule {sweep.scans.molecule} has element(s) {', '.join(elems)} that "
                f"design point '{name}' does not know (model.elements)"
            )

    results_path = os.path.join(sweep.out_dir, "results.json")
    previous: dict[str, AblationRecord] = {}
    if resume and os.path.isfile(results_path):
        previous = {r.name: r for r in load_ablation_results(results_path)}

    records: list[AblationRecord] = []
    curves: dict[str, dict] = {name: {} for name in scans}
    test_names = list(_metrics_sets(sweep, next(iter(configs.values()))))
    for k, point in enumerate(points):
        cfg = configs[point.run_name]
        name = _record_name(sweep, point)
        old = previous.get(name)
        if old is not None and old.status in ("ok", "diverged"):
            if not _same_config(os.path.join(cfg.output_dir, "config.yaml"), cfg):
                raise SweepError(
                    f"{sweep.source}: design point '{name}' in {cfg.output_dir} was run with a different config; "
                    "delete that directory (or its record) or choose another out_dir"
                )
            log(f"[{k + 1}/{len(points)}] {name}: done before ({old.effective_status}), skipped")
            records.append(old)
            for scan, res in _load_curves(cfg.output_dir).items():
                if scan in curves:
                    curves[scan][name] = res
            continue
        log(f"[{k + 1}/{len(points)}] {name}")
        t0 = time.perf_counter()
        try:
            record, results = _run_point(sweep, point, cfg, scans, progress, log)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001  one failing point must not end the sweep
            record, results = AblationRecord(name=name, overrides=dict(point.overrides), seed=point.seed,
                                             status="failed", message=f"{type(exc).__name__}: {exc}"), {}
        for scan, res in results.items():
            curves.setdefault(scan, {})[name] = res
        records.append(record)
        log(f"[{k + 1}/{len(points)}] {name}: {record.effective_status} in {time.perf_counter() - t0:.1f} s"
            + (f" ({record.message})" if record.message else ""))
        kept = records + [previous[n] for n in previous if n not in {r.name for r in records}
                          and n in {_record_name(sweep, p) for p in points}]
        write_ablation_results(kept, sweep.out_dir, test_sets=test_names)

    write_ablation_results(records, sweep.out_dir, test_sets=test_names)
    plots = _plot(sweep.out_dir, records, curves, log)
    log("")
    log(ablation_table(records, test_sets=test_names))
    log(f"results: {results_path}")
    log(f"table:   {os.path.join(sweep.out_dir, 'table.md')}")
    for p in plots:
        log(f"plot:    {p}")
    return records
