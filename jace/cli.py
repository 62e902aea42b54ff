"""The ``jace`` command line: ``jace train``, ``jace eval``, ``jace ablate`` and ``jace demo``.

JAX and the model code are imported inside the commands, after the precision is set, so that
``jace --help`` is fast and ``jax_enable_x64`` is decided before any array exists.

``jace train CONFIG.yaml`` fits linear ACE (``fit:``) or trains a neural model (``training:``; ace,
nequip, botnet, mace, multi_ace, and the graph-ACE grace-1l, grace-2l, fs-ace, grace) into
``output_dir``: model.jace, config.yaml, metrics.json (train,
validation and test sets, same keys for every model type) and, for the neural models, the trainer's
train.log, metrics.csv, checkpoints/ and plots. ``--resume`` continues a stopped neural run.
With ``training.committee`` the neural model is a committee trained in one vmapped program
(``jace.training.committee``): model.jace holds every member, and metrics.json adds the committee's
uncertainty statistics; ``jace eval`` reports them too and ``--predictions`` writes the spreads.
``jace ablate SWEEP.yaml`` trains every design point of a sweep (``jace.diagnostics.ablation``).
``jace info`` prints versions, devices and the memory settings. The ``jace`` command restarts itself
once with huge-page malloc where the host allows it (``jace.hugepage_malloc``; 1.4–1.9× faster
energy+forces on the development CPU); ``JACE_HUGEPAGE_MALLOC=0`` turns that off.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import sys
import time
from typing import Callable, Optional, Sequence

EXIT_USAGE = 2


class CommandError(ValueError):
    """A command cannot go on (training diverged, a run directory is in the way, ...); printed as
    ``jace: error: ...`` with exit code 2."""


# --------------------------------------------------------------------------------------------------
# helpers


def _log(msg: str) -> None:
    print(msg, flush=True)


class _EchoHandler(logging.Handler):
    def __init__(self, log: Callable[[str], None]):
        super().__init__(logging.INFO)
        self._echo = log

    def emit(self, record: logging.LogRecord) -> None:
        self._echo(record.getMessage())


@contextlib.contextmanager
def echo_training_log(log: Callable[[str], None] = _log):
    """Print the trainer's log lines (``jace.training`` logger) while the block runs.

    The lines do not propagate to the root logger meanwhile: where an imported library has configured
    it (``logging.basicConfig``), every line was printed twice, once as ``INFO:jace.training:...``.
    """
    logger = logging.getLogger("jace.training")
    handler = _EchoHandler(log)
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate


def _show_progress() -> bool:
    """A live progress bar only on a terminal (never in logs or captured output)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def set_precision(precision: str) -> None:
    """Switch JAX to 64-bit (``float64``) or 32-bit (``float32``) floats; call before any array work."""
    if precision not in ("float64", "float32"):
        raise ValueError(f"precision must be float64 or float32, got {precision!r}")
    import jax

    jax.config.update("jax_enable_x64", precision == "float64")


# model type -> (module, fit function, evaluate function); a neural model is trained, not fitted
_MODEL_FUNCTIONS = {
    "linear_ace": ("jace.models.linear_ace", "fit_linear_ace", "evaluate"),
    "multi_ace": ("jace.models.multi_ace", None, "evaluate"),
    "grace": ("jace.models.grace", None, "evaluate"),
}


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
    from jace.training.pipeline import check_elements

    check_elements(configs, elements, what)


def _set_metrics(configs, predictions) -> dict:
    from jace.training.pipeline import set_metrics

    return set_metrics(configs, predictions)


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


def run_training(cfg, log: Callable[[str], None] = _log, resume: bool = False, progress: bool = False) -> dict:
    """Fit or train the model a TrainConfig describes, save it with its config, and return the metrics
    dict ({"train": …, "validation": …, <test name>: …, "fit": info}) also written to metrics.json.

    resume: continue the neural training run in ``output_dir`` (an error for linear ACE).
    progress: show the trainer's progress bar (neural models).
    """
    from jace.config import model_section

    if model_section(cfg.model_type) == "training":
        return _run_neural_training(cfg, log, resume, progress)
    if resume:
        raise CommandError(
            f"--resume is for the neural model types; {cfg.model_type} is fitted in one linear solve, "
            "run it again without --resume"
        )
    set_precision(cfg.precision)

    from jace.config import write_train_config
    from jace.models.io import save_model
    from jace.training.pipeline import read_datasets

    out_dir = os.path.abspath(cfg.output_dir)
    cfg = dataclasses.replace(cfg, output_dir=out_dir)
    os.makedirs(out_dir, exist_ok=True)
    # the config first, so that even a failed run records what it was asked to do
    write_train_config(os.path.join(out_dir, "config.yaml"), cfg)

    t0 = time.perf_counter()
    data = read_datasets(cfg)
    train, validation, isolated, tests = data.train, data.validation, data.isolated, data.tests
    log(f"data: {data.summary()} ({time.perf_counter() - t0:.1f} s)")

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
    _report(metrics, info, out_dir, model_path, time.perf_counter() - t2, log)
    return metrics


def _report(metrics: dict, info: dict, out_dir: str, model_path: str, eval_seconds: float, log) -> None:
    """Write metrics.json (with the fit/training info) and print the metrics table and output paths."""
    from jace.training.metrics import format_metrics_table, write_metrics_json

    metrics["fit"] = info
    write_metrics_json(os.path.join(out_dir, "metrics.json"), metrics)
    log(f"evaluation: {eval_seconds:.1f} s")
    log("")
    log(format_metrics_table({k: v for k, v in metrics.items() if k != "fit"}))
    log("")
    log(f"model:   {model_path}")
    log(f"config:  {os.path.join(out_dir, 'config.yaml')}")
    log(f"metrics: {os.path.join(out_dir, 'metrics.json')}")


def _run_neural_training(cfg, log: Callable[[str], None], resume: bool, progress: bool) -> dict:
    set_precision(cfg.precision)

    from jace.config import write_train_config
    from jace.models.io import save_model
    from jace.training.checkpoint import CheckpointError
    from jace.training.loop import TrainingError
    from jace.training.pipeline import evaluate_sets, has_checkpoint, read_datasets, train_multi_ace

    out_dir = os.path.abspath(cfg.output_dir)
    cfg = dataclasses.replace(cfg, output_dir=out_dir)
    if has_checkpoint(out_dir) and not resume:
        raise CommandError(
            f"{out_dir} already holds a training run (checkpoints/last.ckpt): pass --resume to continue it, "
            "or choose another output_dir (--output-dir)"
        )
    os.makedirs(out_dir, exist_ok=True)
    write_train_config(os.path.join(out_dir, "config.yaml"), cfg)

    t0 = time.perf_counter()
    data = read_datasets(cfg)
    log(f"data: {data.summary()} ({time.perf_counter() - t0:.1f} s)")

    committee = getattr(cfg.training, "committee", None)
    try:
        with echo_training_log(log):
            if committee is not None:
                from jace.training.committee import train_multi_ace_committee

                model, result, info = train_multi_ace_committee(cfg, data, out_dir, resume=resume,
                                                                progress=progress, log=log)
            else:
                model, result, info = train_multi_ace(cfg, data, out_dir, resume=resume, progress=progress, log=log)
    except TrainingError as exc:  # the message says where the last good checkpoint is
        raise CommandError(f"{cfg.source or 'training'}: {exc}") from None
    except CheckpointError as exc:
        raise CommandError(f"cannot resume the run in {out_dir}: {exc}") from None
    log(
        f"training: {info['train_seconds']:.1f} s, {info['epochs']} epochs ({info['steps']} steps, "
        f"{info['stop_reason']}); best validation loss {info['best_valid_loss']:.5g} at step {info['best_step']}; "
        f"{info['n_params']:,} parameters"
    )
    model_path = os.path.join(out_dir, "model.jace")
    save_model(model_path, model)

    t2 = time.perf_counter()
    sets = {"train": data.train, "validation": data.validation, **data.tests}
    if committee is not None:
        from jace.training.committee import evaluate_committee_sets

        metrics = evaluate_committee_sets(model, sets, batch_size=cfg.training.settings.valid_batch_size)
    else:
        metrics = evaluate_sets(model, sets, batch_size=cfg.training.settings.valid_batch_size)
    _report(metrics, info, out_dir, model_path, time.perf_counter() - t2, log)
    log(f"log:     {os.path.join(out_dir, 'train.log')}")
    return metrics


def cmd_train(args) -> int:
    from jace.config import load_train_config

    cfg = load_train_config(args.config)
    if args.output_dir:
        cfg = dataclasses.replace(cfg, output_dir=args.output_dir)
    run_training(cfg, resume=args.resume, progress=_show_progress())
    return 0


# --------------------------------------------------------------------------------------------------
# ablate


def cmd_ablate(args) -> int:
    from jace.diagnostics.ablation import run_ablation
    from jace.diagnostics.sweep import load_sweep

    sweep = load_sweep(args.sweep)
    if args.output_dir:
        sweep = dataclasses.replace(sweep, out_dir=os.path.abspath(args.output_dir))
    run_ablation(sweep, log=_log, progress=_show_progress())
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
    spread = {}
    if getattr(model, "model_type", None) == "committee":
        cpred = model.predict(configs, batch_size=args.batch_size)
        preds = cpred.mean()
        spread = {"energy_std": cpred.energy_std, "forces_std": cpred.forces_std, "stress_std": cpred.stress_std}
        metrics = _set_metrics(configs, preds)
        metrics.update(cpred.uncertainty_metrics(configs))
    else:
        preds = _evaluate(model, configs, batch_size=args.batch_size)
        metrics = _set_metrics(configs, preds)
    _log(f"evaluated {len(configs)} configurations in {time.perf_counter() - t0:.1f} s")
    rows = {os.path.basename(os.fspath(args.data)): metrics}
    if "by_config_type" in metrics:
        rows.update({f"  {ct}": m for ct, m in metrics_by_config_type(configs, *preds).items()})
    _log(format_metrics_table(rows))
    if spread:
        _log(f"committee of {model.n_members}: mean energy std {metrics['energy_std_per_atom_mean_meV']:.3f} meV/atom"
             + (f", mean force std {metrics['forces_std_mean_meV_per_A']:.3f} meV/Å"
                if "forces_std_mean_meV_per_A" in metrics else ""))
    if args.out:
        write_metrics_json(args.out, metrics)
        _log(f"metrics: {args.out}")
    if args.predictions:
        from jace.training.committee import write_predictions

        write_predictions(args.predictions, configs, *preds, **spread)
        _log(f"predictions: {args.predictions}")
    return 0


# --------------------------------------------------------------------------------------------------
# demo


def cmd_demo(args) -> int:
    from jace.demo import run_demo

    run_demo(args.output_dir, model=args.model, quick=args.quick, seed=args.seed, md_steps=args.md_steps,
             progress=_show_progress(), log=_log)
    return 0


# --------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jace", description="ACE interatomic potentials in JAX.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    t = sub.add_parser("train", help="fit a model described by a YAML config", description="Fit a model described by a YAML config.")
    t.add_argument("config", help="training config (YAML)")
    t.add_argument("--output-dir", help="where to write model.jace, config.yaml and metrics.json (overrides output_dir)")
    t.add_argument("--resume", action="store_true",
                   help="continue the stopped training run in the output directory (neural models)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="errors of a saved model on a labelled data file", description="Errors of a saved model on a labelled data file.")
    e.add_argument("model", help="a model file written by jace train (model.jace)")
    e.add_argument("data", help="labelled configurations (extxyz or any format ASE reads)")
    e.add_argument("--out", help="write the metrics as JSON to this file")
    e.add_argument("--predictions", metavar="OUT.xyz",
                   help="write the configurations with the predictions (info jace_energy, jace_stress; arrays "
                        "jace_forces) as extxyz; a committee adds energy_std (info) and forces_std (per atom)")
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--precision", choices=("float64", "float32"), help="default: that of the model's arrays")
    e.add_argument("--keys-energy", metavar="K", help="info key of the reference energy (default: energy)")
    e.add_argument("--keys-forces", metavar="K", help="arrays key of the reference forces (default: forces)")
    e.add_argument("--keys-stress", metavar="K", help="info key of the reference stress (default: stress)")
    e.add_argument("--keys-virial", metavar="K", help="info key of the reference virial (default: virial)")
    e.add_argument("--keys-config-type", metavar="K", help="info key of the config type (default: config_type)")
    e.set_defaults(func=cmd_eval)

    a = sub.add_parser(
        "ablate",
        help="train every design point of a sweep; tables, scans and plots",
        description="Train every design point of a sweep file (same data, seeds and budget), evaluate the test "
        "sets, run smoothness scans, and write results.json, table.md and plots. Points whose result is "
        "already in the output directory are skipped, so an interrupted sweep continues where it stopped.",
    )
    a.add_argument("sweep", help="sweep file (YAML); see jace/diagnostics/sweep.py")
    a.add_argument("--output-dir", help="where to write the results (overrides the sweep's out_dir)")
    a.set_defaults(func=cmd_ablate)

    i = sub.add_parser("info", help="versions, devices and memory settings of this host",
                       description="Versions, devices and memory settings of this host (for bug reports).")
    i.set_defaults(func=cmd_info)

    d = sub.add_parser(
        "demo",
        help="the whole path on synthetic EMT data: train a small MACE, evaluate, simulate with jax-md, plot",
        description="Make a Cu-Au data set with ASE's EMT, train a small MACE on it (or fit linear ACE), evaluate "
        "it on a test set, run Langevin MD with jax-md (the md extra) and write PNG plots.",
    )
    d.add_argument("--output-dir", default="demo_run", help="(default: demo_run)")
    d.add_argument("--model", choices=("mace", "linear_ace"), default="mace", help="(default: mace)")
    d.add_argument("--quick", action="store_true", help="less data, a smaller model and a shorter run, for a fast check")
    d.add_argument("--md-steps", type=int, default=None, help="MD steps (default: 2000, or 200 with --quick)")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=cmd_demo)
    return p


def cmd_info(args) -> int:
    import platform

    import jax

    import jace
    from jace import hugepage_malloc

    print(f"jace {getattr(jace, '__version__', '?')}, jax {jax.__version__}, python {platform.python_version()}")
    print(f"platform: {platform.platform()}, {os.cpu_count()} CPUs")
    print(f"devices: {', '.join(str(d) for d in jax.devices())}")
    print(hugepage_malloc.describe())
    return 0


def entry() -> None:
    """The ``jace`` console script: restart once with huge-page malloc where it helps
    (``jace.hugepage_malloc``), then run :func:`main`."""
    from jace import hugepage_malloc

    env = hugepage_malloc.reexec_environment(os.environ, hugepage_malloc.thp_mode(), hugepage_malloc.glibc_version())
    if env is not None:
        code = "import sys; from jace.cli import main; sys.argv[0] = 'jace'; sys.exit(main())"
        try:
            os.execve(sys.executable, [sys.executable, "-c", code, *sys.argv[1:]], env)
        except OSError:  # cannot restart: go on without huge pages
            pass
    sys.exit(main())


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
