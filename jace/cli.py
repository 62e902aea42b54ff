"""The ``jace`` command line: ``jace train``, ``jace eval`` and ``jace demo``.

JAX and the model code are imported inside the commands, after the precision is set, so that
``jace --help`` is fast and ``jax_enable_x64`` is decided before any array exists.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from typing import Callable, Optional, Sequence

EXIT_USAGE = 2


# --------------------------------------------------------------------------------------------------
# helpers


def _log(msg: str) -> None:
    print(msg, flush=True)


def set_precision(precision: str) -> None:
    """Switch JAX to 64-bit (``float64``) or 32-bit (``float32``) floats; call before any array work."""
    if precision not in ("float64", "float32"):
        raise ValueError(f"precision must be float64 or float32, got {precision!r}")
    import jax

    jax.config.update("jax_enable_x64", precision == "float64")


# model type -> (module, fit function, evaluate function)
_MODEL_FUNCTIONS = {"linear_ace": ("jace.models.linear_ace", "fit_linear_ace", "evaluate")}


def _model_function(model_type: str, which: int) -> Callable:
    import importlib

    if model_type not in _MODEL_FUNCTIONS:
        raise ValueError(f"no training/evaluation code for model type {model_type!r}; known: {', '.join(_MODEL_FUNCTIONS)}")
    module_name, *names = _MODEL_FUNCTIONS[model_type]
    module = importlib.import_module(module_name)
    return getattr(module, names[which])


def _evaluate(model, configs, batch_size: int = 16):
    model_type = getattr(model, "model_type", None)
    if model_type in _MODEL_FUNCTIONS:
        return _model_function(model_type, 1)(model, configs, batch_size=batch_size)
    if hasattr(model, "evaluate"):
        return model.evaluate(configs, batch_size=batch_size)
    raise ValueError(f"do not know how to evaluate a model of type {model_type!r}")


def _check_elements(configs, elements: Sequence[str], what: str) -> None:
    """Fail early, naming the file, when data contains an element the model does not know."""
    from ase.data import atomic_numbers, chemical_symbols

    known = {atomic_numbers[s] for s in elements}
    for c in configs:
        for z in set(int(v) for v in c.numbers):
            if z not in known:
                sym = chemical_symbols[z] if 0 < z < len(chemical_symbols) else f"Z={z}"
                raise ValueError(
                    f"{c.source}: {what} contains element {sym}, which model.elements ({', '.join(elements)}) does not list"
                )


def _split_validation(configs: list, fraction: float, seed: int) -> tuple[list, list]:
    """(train, validation): a random ``fraction`` of ``configs`` held out, reproducibly from ``seed``."""
    import numpy as np

    if fraction <= 0 or not configs:
        return configs, []
    n = len(configs)
    n_val = int(round(fraction * n))
    n_val = min(max(n_val, 1), n - 1)
    if n_val < 1:
        raise ValueError(f"cannot hold out a validation fraction of {fraction} from {n} training configuration(s)")
    order = np.random.default_rng(seed).permutation(n)
    val_idx = set(order[:n_val].tolist())
    train = [c for i, c in enumerate(configs) if i not in val_idx]
    val = [c for i, c in enumerate(configs) if i in val_idx]
    return train, val


def _set_metrics(configs, predictions) -> dict:
    from jace.training.metrics import compute_metrics, metrics_by_config_type

    energies, forces, stresses = predictions
    out = compute_metrics(configs, energies, forces, stresses)
    if len({c.config_type for c in configs}) > 1:
        out["by_config_type"] = metrics_by_config_type(configs, energies, forces, stresses)
    return out


def _scalar_items(info) -> list[str]:
    import numbers

    out = []
    if isinstance(info, dict):
        for k, v in info.items():
            if isinstance(v, bool) or isinstance(v, str):
                out.append(f"{k}={v}")
            elif isinstance(v, numbers.Integral):
                out.append(f"{k}={int(v)}")
            elif isinstance(v, numbers.Real):
                out.append(f"{k}={float(v):.4g}")
    return out


# --------------------------------------------------------------------------------------------------
# train


def run_training(cfg, log: Callable[[str], None] = _log) -> dict:
    """Fit the model a TrainConfig describes, save it with its config, and return the metrics dict
    ({"train": …, "validation": …, <test name>: …, "fit": info}) also written to metrics.json."""
    set_precision(cfg.precision)

    from jace.config import write_train_config
    from jace.data import io as dio
    from jace.models.io import save_model
    from jace.training.metrics import format_metrics_table, write_metrics_json

    out_dir = os.path.abspath(cfg.output_dir)
    cfg = dataclasses.replace(cfg, output_dir=out_dir)
    os.makedirs(out_dir, exist_ok=True)
    # the config first, so that even a failed run records what it was asked to do
    write_train_config(os.path.join(out_dir, "config.yaml"), cfg)
    keys = cfg.data.keys
    elements = tuple(getattr(cfg.model, "elements", ()))

    t0 = time.perf_counter()
    train_all = dio.read_configurations(cfg.data.train, keys, require=("energy",))
    isolated, train = dio.split_isolated_atoms(train_all)
    isolated = list(isolated)
    train = list(train)
    if cfg.data.isolated_atoms is not None:
        iso_file = list(dio.read_configurations(cfg.data.isolated_atoms, keys, require=("energy",)))
        isolated = iso_file + isolated
    if cfg.data.validation is not None:
        validation = list(dio.read_configurations(cfg.data.validation, keys, require=("energy",)))
    else:
        train, validation = _split_validation(train, cfg.data.validation_fraction, cfg.seed)
    tests = {name: list(dio.read_configurations(p, keys, require=("energy",))) for name, p in cfg.data.test.items()}
    if not train:
        raise ValueError(f"{cfg.data.train}: no training configurations (other than isolated atoms)")
    if elements:
        _check_elements(isolated + train, elements, "the training data")
        _check_elements(validation, elements, "the validation data")
        for name, cs in tests.items():
            _check_elements(cs, elements, f"test set {name!r}")
    log(
        f"data: {len(train)} training, {len(validation)} validation, {len(isolated)} isolated-atom configurations"
        + "".join(f", {len(cs)} in test set {name!r}" for name, cs in tests.items())
        + f" ({time.perf_counter() - t0:.1f} s)"
    )

    t1 = time.perf_counter()
    fit_fn = _model_function(cfg.model_type, 0)
    model, info = fit_fn(cfg.model, cfg.fit, train, isolated)
    info = dict(info or {})
    log(f"fit: {time.perf_counter() - t1:.1f} s" + ("; " + ", ".join(_scalar_items(info)) if _scalar_items(info) else ""))

    model_path = os.path.join(out_dir, "model.jace")
    save_model(model_path, model)

    t2 = time.perf_counter()
    metrics: dict = {}
    for name, cs in [("train", train), ("validation", validation)] + list(tests.items()):
        if cs:
            metrics[name] = _set_metrics(cs, _evaluate(model, cs, batch_size=16))
    metrics["fit"] = info
    write_metrics_json(os.path.join(out_dir, "metrics.json"), metrics)
    log(f"evaluation: {time.perf_counter() - t2:.1f} s")
    log("")
    log(format_metrics_table({k: v for k, v in metrics.items() if k != "fit"}))
    log("")
    log(f"model:   {model_path}")
    log(f"config:  {os.path.join(out_dir, 'config.yaml')}")
    log(f"metrics: {os.path.join(out_dir, 'metrics.json')}")
    return metrics


def cmd_train(args) -> int:
    from jace.config import load_train_config

    cfg = load_train_config(args.config)
    if args.output_dir:
        cfg = dataclasses.replace(cfg, output_dir=args.output_dir)
    run_training(cfg)
    return 0


# --------------------------------------------------------------------------------------------------
# eval


def _precision_of_arrays(arrays) -> str:
    import numpy as np

    dtypes = {np.asarray(a).dtype for a in arrays.values()}
    if any(d == np.float64 or d == np.complex128 for d in dtypes):
        return "float64"
    if any(d == np.float32 for d in dtypes):
        return "float32"
    return "float64"


def cmd_eval(args) -> int:
    from jace.models.design import DataKeys
    from jace.models.io import load_model_state, model_from_state

    state = load_model_state(args.model)  # numpy only: no JAX array exists yet
    set_precision(args.precision or _precision_of_arrays(state.arrays))
    model = model_from_state(state, os.fspath(args.model))

    from jace.data import io as dio
    from jace.training.metrics import format_metrics_table, metrics_by_config_type, write_metrics_json

    overrides = {
        "energy": args.keys_energy,
        "forces": args.keys_forces,
        "stress": args.keys_stress,
        "virial": args.keys_virial,
        "config_type": args.keys_config_type,
    }
    keys = DataKeys(**{k: v for k, v in overrides.items() if v})
    configs = list(dio.read_configurations(args.data, keys, require=()))
    if not configs:
        raise ValueError(f"{args.data}: no configurations")
    elements = getattr(getattr(model, "spec", None), "elements", None)
    if elements:
        _check_elements(configs, tuple(elements), "the data")
    t0 = time.perf_counter()
    preds = _evaluate(model, configs, batch_size=args.batch_size)
    metrics = _set_metrics(configs, preds)
    _log(f"evaluated {len(configs)} configurations in {time.perf_counter() - t0:.1f} s")
    rows = {os.path.basename(os.fspath(args.data)): metrics}
    if "by_config_type" in metrics:
        rows.update({f"  {ct}": m for ct, m in metrics_by_config_type(configs, *preds).items()})
    _log(format_metrics_table(rows))
    if args.out:
        write_metrics_json(args.out, metrics)
        _log(f"metrics: {args.out}")
    return 0


# --------------------------------------------------------------------------------------------------
# demo


def _demo_config(train_path: str, test_path: str, output_dir: str, elements, e0, quick: bool, seed: int) -> dict:
    model = {
        "type": "linear_ace",
        "elements": list(elements),
        "cutoff": 5.0,
        "l_max": 2 if quick else 3,
        "correlation": 2 if quick else 3,
        "max_degree": [10, 7] if quick else [14, 11, 8],
        "w_l": 1.5,
        "radial": {"kind": "bessel", "n_max": 6 if quick else 8, "envelope": "polynomial", "envelope_p": 5},
    }
    return {
        "seed": seed,
        "precision": "float64",
        "output_dir": output_dir,
        "model": model,
        "data": {
            "train": os.path.relpath(train_path, output_dir),
            "validation_fraction": 0.1,
            "test": {"test": os.path.relpath(test_path, output_dir)},
        },
        "fit": {
            "energy_weight": 30.0,
            "forces_weight": 1.0,
            "stress_weight": 1.0,
            "config_type_weights": {"isolated_atom": {"energy": 1000.0}},
            "regulariser": "smoothness",
            "lam": 1.0e-3,
            "smoothness_p": 2.0,
            "e0": e0,
            "chunk_size": 32,
        },
    }


def cmd_demo(args) -> int:
    set_precision("float64")
    import yaml

    from jace.config import load_train_config
    from jace.data import io as dio
    from jace.data import synthetic
    from jace.files import atomic_write_bytes

    out_dir = os.path.abspath(args.output_dir)
    data_dir = os.path.join(out_dir, "data")
    os.makedirs(data_dir, exist_ok=True)
    t0 = time.perf_counter()
    if args.quick:
        train, test = synthetic.make_emt_splits(n_train=24, n_test=12, seed=args.seed)
    else:
        train, test = synthetic.make_emt_splits(seed=args.seed)
    train, test = list(train), list(test)
    train_path = os.path.join(data_dir, "train.xyz")
    test_path = os.path.join(data_dir, "test.xyz")
    dio.write_configurations(train_path, train)
    dio.write_configurations(test_path, test)
    _log(f"demo: {len(train)} training and {len(test)} test configurations (EMT) in {data_dir} "
         f"({time.perf_counter() - t0:.1f} s)")

    from ase.data import chemical_symbols

    zs = sorted({int(z) for c in train + test for z in c.numbers})
    elements = [chemical_symbols[z] for z in zs]
    isolated, _ = dio.split_isolated_atoms(train)
    have_iso = {int(c.numbers[0]) for c in isolated}
    e0 = "isolated" if set(zs) <= have_iso else "least_squares"

    config = _demo_config(train_path, test_path, out_dir, elements, e0, args.quick, args.seed)
    config_path = os.path.join(out_dir, "demo.yaml")
    atomic_write_bytes(config_path, yaml.safe_dump(config, sort_keys=False, default_flow_style=None).encode())
    _log(f"demo: config {config_path}")
    cfg = load_train_config(config_path)
    run_training(cfg)
    return 0


# --------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jace", description="ACE interatomic potentials in JAX.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    t = sub.add_parser("train", help="fit a model described by a YAML config", description="Fit a model described by a YAML config.")
    t.add_argument("config", help="training config (YAML)")
    t.add_argument("--output-dir", help="where to write model.jace, config.yaml and metrics.json (overrides output_dir)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="errors of a saved model on a labelled data file", description="Errors of a saved model on a labelled data file.")
    e.add_argument("model", help="a model file written by jace train (model.jace)")
    e.add_argument("data", help="labelled configurations (extxyz or any format ASE reads)")
    e.add_argument("--out", help="write the metrics as JSON to this file")
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--precision", choices=("float64", "float32"), help="default: that of the model's arrays")
    e.add_argument("--keys-energy", metavar="K", help="info key of the reference energy (default: energy)")
    e.add_argument("--keys-forces", metavar="K", help="arrays key of the reference forces (default: forces)")
    e.add_argument("--keys-stress", metavar="K", help="info key of the reference stress (default: stress)")
    e.add_argument("--keys-virial", metavar="K", help="info key of the reference virial (default: virial)")
    e.add_argument("--keys-config-type", metavar="K", help="info key of the config type (default: config_type)")
    e.set_defaults(func=cmd_eval)

    d = sub.add_parser("demo", help="fit a linear ACE model to a synthetic EMT data set", description="Make a synthetic EMT data set, write it and a config, and run jace train on it.")
    d.add_argument("--output-dir", default="demo_run", help="(default: demo_run)")
    d.add_argument("--quick", action="store_true", help="a smaller basis, for a fast check")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:  # ConfigError and ModelFileError are ValueErrors
        if os.environ.get("JACE_TRACEBACK"):
            raise
        print(f"jace: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("jace: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
