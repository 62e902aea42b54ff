"""Training configuration: a YAML file parsed into frozen dataclasses.

The YAML file only names things; every value lands in one of the design dataclasses of
:mod:`jace.models.design` (``LinearACESpec``, ``FitSpec``, ``DataKeys``) or in :class:`DataSpec` /
:class:`TrainConfig` below. Parsing is strict: an unknown key, a value of the wrong type, a missing
required key or an out-of-range value is a :class:`ConfigError` that names the file and the exact key
path, e.g. ``config.yaml: unknown key 'model.cuttoff' (did you mean 'cutoff'?)``.

Schema (defaults in brackets; ``model.elements`` and ``data.train`` are required)::

    seed: 0                        # [0] seeds the validation split and anything random
    precision: float64             # [float64] or float32
    output_dir: runs/example       # [runs/jace] relative to the working directory
    model:
      type: linear_ace             # [linear_ace]; see ``model_types()``
      elements: [Cu, Au]
      cutoff: 5.0
      l_max: 3
      correlation: 3
      max_degree: [12, 10, 8]      # one per correlation order, or one number for all
      w_l: 1.5
      radial: {kind: bessel, n_max: 8, envelope: polynomial, envelope_p: 5}
    data:
      train: train.xyz             # paths relative to the YAML file's directory
      validation_fraction: 0.05    # or  validation: valid.xyz  (not both)
      test: {test: test.xyz}       # or a list of paths (names from the file stems), or one path
      isolated_atoms: iso.xyz
      keys: {energy: energy, forces: forces, stress: stress, virial: virial, config_type: config_type}
    fit:
      energy_weight: 30
      forces_weight: 1
      stress_weight: 1
      config_type_weights: {isolated_atom: {energy: 1000}}
      regulariser: smoothness      # or ridge
      lam: 1.0e-3
      smoothness_p: 2
      e0: isolated                 # least_squares, zero, or {Cu: -0.1, Au: -0.2}
      chunk_size: 32

New model types register a parser with :func:`register_model_config`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from typing import Any, Callable, Mapping, Optional

from jace.models.design import (
    ENVELOPE_KINDS,
    TRANSFORMS,
    RADIAL_KINDS,
    DataKeys,
    FitSpec,
    LinearACESpec,
    RadialSpec,
)

PRECISIONS = ("float64", "float32")
E0_MODES = ("isolated", "least_squares", "zero")
REGULARISERS = ("smoothness", "ridge")
WEIGHT_OBSERVABLES = ("energy", "forces", "stress")
RESERVED_SET_NAMES = ("train", "validation", "fit")


class ConfigError(ValueError):
    """A training configuration that cannot be used; the message names the file and the key."""


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """Where the data lives. All paths are absolute after :func:`load_train_config`.

    train: the training set (extxyz or anything ASE reads).
    validation: a separate validation file, or None.
    validation_fraction: fraction of the training set held out for validation when ``validation`` is
      None (0 = no validation set).
    test: {name: path} of test sets, evaluated after the fit.
    isolated_atoms: a file of isolated-atom configurations (for E0), or None.
    keys: where the labels live in the files.
    """

    train: str
    validation: Optional[str] = None
    validation_fraction: float = 0.0
    test: Mapping[str, str] = dataclasses.field(default_factory=dict)
    isolated_atoms: Optional[str] = None
    keys: DataKeys = DataKeys()

    def __post_init__(self):
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"data.validation_fraction must be in [0, 1), got {self.validation_fraction!r}")
        if self.validation is not None and self.validation_fraction > 0:
            raise ValueError("give either data.validation or data.validation_fraction, not both")
        for name in self.test:
            if name in RESERVED_SET_NAMES:
                raise ValueError(f"data.test: a test set may not be called {name!r} (reserved names: {', '.join(RESERVED_SET_NAMES)})")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything ``jace train`` needs. ``model`` is the model type's spec (``LinearACESpec`` for
    ``model_type == "linear_ace"``); ``source`` is the YAML file it was read from, if any."""

    seed: int
    precision: str
    output_dir: str
    model: Any
    fit: FitSpec
    data: DataSpec
    model_type: str = "linear_ace"
    source: Optional[str] = None

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")


# --------------------------------------------------------------------------------------------------
# Small typed readers. Every one takes the file name (for the message) and the full key path.


def _fail(file: str, message: str) -> ConfigError:
    return ConfigError(f"{file}: {message}")


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        text = repr(list(value))
        return text if len(text) <= 60 else "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _check_keys(file: str, mapping: Mapping, prefix: str, allowed, required=()) -> None:
    allowed = list(allowed)
    for key in mapping:
        if not isinstance(key, str):
            raise _fail(file, f"keys must be strings, got {_describe(key)} under '{prefix or '<top level>'}'")
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            if close:
                hint = f" (did you mean '{close[0]}'?)"
            else:
                hint = f"; known keys here: {', '.join(allowed)}"
            raise _fail(file, f"unknown key '{_join(prefix, key)}'{hint}")
    for key in required:
        if key not in mapping:
            raise _fail(file, f"missing required key '{_join(prefix, key)}'")


def _mapping(file: str, value: Any, path: str) -> Mapping:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _fail(file, f"{path} must be a mapping (key: value pairs), got {_describe(value)}")
    return value


def _int(file: str, value: Any, path: str) -> int:
    if isinstance(value, bool):
        raise _fail(file, f"{path} must be an integer, got {_describe(value)}")
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise _fail(file, f"{path} must be an integer, got {_describe(value)}")


def _float(file: str, value: Any, path: str) -> float:
    if isinstance(value, bool):
        raise _fail(file, f"{path} must be a number, got {_describe(value)}")
    if isinstance(value, (int, float)):
        out = float(value)
    elif isinstance(value, str):
        # YAML 1.1 reads "1e-3" (no dot) as a string; accept it as the number it clearly is.
        try:
            out = float(value.strip())
        except ValueError:
            raise _fail(file, f"{path} must be a number, got {_describe(value)}") from None
    else:
        raise _fail(file, f"{path} must be a number, got {_describe(value)}")
    if not math.isfinite(out):
        raise _fail(file, f"{path} must be a finite number, got {_describe(value)}")
    return out


def _str(file: str, value: Any, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(file, f"{path} must be a non-empty string, got {_describe(value)}")
    return value


def _choice(file: str, value: Any, path: str, choices) -> str:
    if not isinstance(value, str):
        raise _fail(file, f"{path} must be one of {', '.join(choices)}; got {_describe(value)}")
    if value not in choices:
        close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise _fail(file, f"{path} must be one of {', '.join(choices)}; got {_describe(value)}{hint}")
    return value


def _element(file: str, value: Any, path: str) -> str:
    from ase.data import atomic_numbers

    if not isinstance(value, str) or value not in atomic_numbers or atomic_numbers[value] == 0:
        hint = ""
        if isinstance(value, str) and value.capitalize() in atomic_numbers and atomic_numbers[value.capitalize()]:
            hint = f" (did you mean '{value.capitalize()}'?)"
        raise _fail(file, f"{path} must be a chemical symbol, got {_describe(value)}{hint}")
    return value


def _wrap_post_init(file: str, build: Callable[[], Any], prefix: str = "") -> Any:
    """Run a dataclass constructor and turn its ValueError into a ConfigError naming the file."""
    try:
        return build()
    except ValueError as exc:
        msg = str(exc)
        if prefix and not msg.startswith(("model.", "fit.", "data.")):
            msg = f"{prefix}{msg}"
        raise _fail(file, msg) from None


# --------------------------------------------------------------------------------------------------
# Model types


@dataclasses.dataclass(frozen=True)
class ModelConfigType:
    """How one ``model.type`` is read from and written to a config mapping.

    parse(file, mapping) -> spec, where mapping is ``model`` without its ``type`` key.
    to_dict(spec) -> a plain mapping (lists, not tuples) that ``parse`` reads back to the same spec.
    """

    name: str
    parse: Callable[[str, Mapping], Any]
    to_dict: Callable[[Any], dict]


_MODEL_CONFIGS: dict[str, ModelConfigType] = {}


def register_model_config(name: str, parse: Callable[[str, Mapping], Any], to_dict: Callable[[Any], dict]) -> None:
    """Make ``model.type: name`` known to :func:`load_train_config`."""
    _MODEL_CONFIGS[name] = ModelConfigType(name, parse, to_dict)


def model_types() -> tuple[str, ...]:
    return tuple(sorted(_MODEL_CONFIGS))


_RADIAL_KEYS = ("kind", "n_max", "envelope", "envelope_p", "transform", "r0_scale", "q")
_LINEAR_ACE_KEYS = ("elements", "cutoff", "l_max", "correlation", "max_degree", "w_l", "radial")


def _parse_radial(file: str, value: Any, prefix: str) -> RadialSpec:
    m = _mapping(file, value, prefix)
    _check_keys(file, m, prefix, _RADIAL_KEYS)
    default = RadialSpec()
    kw = {
        "kind": _choice(file, m["kind"], f"{prefix}.kind", RADIAL_KINDS) if "kind" in m else default.kind,
        "n_max": _int(file, m["n_max"], f"{prefix}.n_max") if "n_max" in m else default.n_max,
        "envelope": (
            _choice(file, m["envelope"], f"{prefix}.envelope", ENVELOPE_KINDS) if "envelope" in m else default.envelope
        ),
        "envelope_p": _int(file, m["envelope_p"], f"{prefix}.envelope_p") if "envelope_p" in m else default.envelope_p,
        "transform": (
            _choice(file, m["transform"], f"{prefix}.transform", TRANSFORMS) if "transform" in m else default.transform
        ),
        "r0_scale": _float(file, m["r0_scale"], f"{prefix}.r0_scale") if "r0_scale" in m else default.r0_scale,
        "q": _float(file, m["q"], f"{prefix}.q") if "q" in m else default.q,
    }
    # RadialSpec's own messages say "radial.…"; complete them to the full key path.
    return _wrap_post_init(file, lambda: RadialSpec(**kw), prefix="model.")


def _parse_linear_ace(file: str, m: Mapping) -> LinearACESpec:
    _check_keys(file, m, "model", ("type",) + _LINEAR_ACE_KEYS, required=("elements",))
    elements = m["elements"]
    if isinstance(elements, str):
        elements = [elements]
    if not isinstance(elements, (list, tuple)) or not elements:
        raise _fail(file, f"model.elements must be a non-empty list of chemical symbols, got {_describe(elements)}")
    symbols = tuple(_element(file, e, f"model.elements[{i}]") for i, e in enumerate(elements))
    dup = sorted({s for s in symbols if symbols.count(s) > 1})
    if dup:
        raise _fail(file, f"model.elements lists {', '.join(dup)} more than once")

    default = LinearACESpec(elements=("H",))
    kw: dict[str, Any] = {"elements": symbols}
    kw["cutoff"] = _float(file, m["cutoff"], "model.cutoff") if "cutoff" in m else default.cutoff
    kw["l_max"] = _int(file, m["l_max"], "model.l_max") if "l_max" in m else default.l_max
    kw["correlation"] = _int(file, m["correlation"], "model.correlation") if "correlation" in m else default.correlation
    kw["w_l"] = _float(file, m["w_l"], "model.w_l") if "w_l" in m else default.w_l
    if "max_degree" in m:
        md = m["max_degree"]
        if isinstance(md, (list, tuple)):
            kw["max_degree"] = tuple(_float(file, d, f"model.max_degree[{i}]") for i, d in enumerate(md))
        else:  # one number for every correlation order
            kw["max_degree"] = (_float(file, md, "model.max_degree"),) * max(int(kw["correlation"]), 1)
    elif "correlation" in m:
        # the default degrees only fit the default correlation order
        d = default.max_degree
        kw["max_degree"] = tuple(d[i] if i < len(d) else d[-1] for i in range(kw["correlation"]))
    else:
        kw["max_degree"] = default.max_degree
    kw["radial"] = _parse_radial(file, m["radial"], "model.radial") if "radial" in m else default.radial
    return _wrap_post_init(file, lambda: LinearACESpec(**kw))


def _linear_ace_to_dict(spec: LinearACESpec) -> dict:
    return {
        "elements": list(spec.elements),
        "cutoff": float(spec.cutoff),
        "l_max": int(spec.l_max),
        "correlation": int(spec.correlation),
        "max_degree": [float(d) for d in spec.max_degree],
        "w_l": float(spec.w_l),
        "radial": {
            "kind": spec.radial.kind,
            "n_max": int(spec.radial.n_max),
            "envelope": spec.radial.envelope,
            "envelope_p": int(spec.radial.envelope_p),
            "transform": spec.radial.transform,
            "r0_scale": float(spec.radial.r0_scale),
            "q": float(spec.radial.q),
        },
    }


register_model_config("linear_ace", _parse_linear_ace, _linear_ace_to_dict)


# --------------------------------------------------------------------------------------------------
# fit and data sections

_FIT_KEYS = tuple(f.name for f in dataclasses.fields(FitSpec))
_DATA_KEYS = ("train", "validation", "validation_fraction", "test", "isolated_atoms", "keys")
_KEYS_KEYS = tuple(f.name for f in dataclasses.fields(DataKeys))
_TOP_KEYS = ("seed", "precision", "output_dir", "model", "data", "fit")


def _parse_fit(file: str, value: Any, elements: tuple[str, ...]) -> FitSpec:
    m = _mapping(file, value, "fit")
    _check_keys(file, m, "fit", _FIT_KEYS)
    kw: dict[str, Any] = {}
    for name in ("energy_weight", "forces_weight", "stress_weight", "lam", "smoothness_p"):
        if name in m:
            kw[name] = _float(file, m[name], f"fit.{name}")
    if "chunk_size" in m:
        kw["chunk_size"] = _int(file, m["chunk_size"], "fit.chunk_size")
    if "regulariser" in m:
        kw["regulariser"] = _choice(file, m["regulariser"], "fit.regulariser", REGULARISERS)
    if "config_type_weights" in m:
        ctw = _mapping(file, m["config_type_weights"], "fit.config_type_weights")
        out: dict[str, dict[str, float]] = {}
        for ct, w in ctw.items():
            path = f"fit.config_type_weights.{ct}"
            if not isinstance(ct, str):
                raise _fail(file, f"fit.config_type_weights keys must be config_type names, got {_describe(ct)}")
            wm = _mapping(file, w, path)
            _check_keys(file, wm, path, WEIGHT_OBSERVABLES)
            out[ct] = {}
            for obs, v in wm.items():
                x = _float(file, v, f"{path}.{obs}")
                if x < 0:
                    raise _fail(file, f"{path}.{obs} must be >= 0, got {_describe(v)}")
                out[ct][obs] = x
        kw["config_type_weights"] = out
    if "e0" in m:
        e0 = m["e0"]
        if isinstance(e0, Mapping):
            values: dict[str, float] = {}
            for sym, v in e0.items():
                _element(file, sym, f"fit.e0 key {sym!r}")
                if sym not in elements:
                    raise _fail(file, f"fit.e0.{sym}: {sym} is not in model.elements ({', '.join(elements)})")
                values[sym] = _float(file, v, f"fit.e0.{sym}")
            missing = [s for s in elements if s not in values]
            if missing:
                raise _fail(file, f"fit.e0 gives no reference energy for {', '.join(missing)}")
            kw["e0"] = values
        else:
            if not isinstance(e0, str):
                raise _fail(
                    file, f"fit.e0 must be one of {', '.join(E0_MODES)} or a mapping {{element: eV}}, got {_describe(e0)}"
                )
            kw["e0"] = _choice(file, e0, "fit.e0", E0_MODES)
    for name in ("smoothness_p",):
        if name in kw and kw[name] < 0:
            raise _fail(file, f"fit.{name} must be >= 0, got {kw[name]!r}")
    return _wrap_post_init(file, lambda: FitSpec(**kw))


def _resolve_path(base_dir: str, p: str) -> str:
    p = os.path.expanduser(p)
    if not os.path.isabs(p):
        p = os.path.join(base_dir, p)
    return os.path.normpath(p)


def _data_path(file: str, value: Any, path: str, base_dir: str, check: bool) -> str:
    p = _resolve_path(base_dir, _str(file, value, path))
    if check and not os.path.isfile(p):
        raise _fail(file, f"{path}: file not found: {p}")
    return p


def _stem(p: str) -> str:
    name = os.path.basename(p)
    for ext in (".gz", ".bz2", ".xz"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    return os.path.splitext(name)[0]


def _parse_data(file: str, value: Any, base_dir: str, check: bool) -> DataSpec:
    if value is None:
        raise _fail(file, "missing required key 'data.train'")
    m = _mapping(file, value, "data")
    _check_keys(file, m, "data", _DATA_KEYS, required=("train",))
    kw: dict[str, Any] = {"train": _data_path(file, m["train"], "data.train", base_dir, check)}
    if m.get("validation") is not None:
        kw["validation"] = _data_path(file, m["validation"], "data.validation", base_dir, check)
    if m.get("validation_fraction") is not None:
        frac = _float(file, m["validation_fraction"], "data.validation_fraction")
        if not 0.0 <= frac < 1.0:
            raise _fail(file, f"data.validation_fraction must be in [0, 1), got {_describe(m['validation_fraction'])}")
        kw["validation_fraction"] = frac
    if m.get("isolated_atoms") is not None:
        kw["isolated_atoms"] = _data_path(file, m["isolated_atoms"], "data.isolated_atoms", base_dir, check)
    if m.get("test") is not None:
        t = m["test"]
        tests: dict[str, str] = {}
        if isinstance(t, str):
            t = [t]
        if isinstance(t, Mapping):
            for name, p in t.items():
                if not isinstance(name, str) or not name:
                    raise _fail(file, f"data.test names must be strings, got {_describe(name)}")
                tests[name] = _data_path(file, p, f"data.test.{name}", base_dir, check)
        elif isinstance(t, (list, tuple)):
            for i, p in enumerate(t):
                path = _data_path(file, p, f"data.test[{i}]", base_dir, check)
                name = _stem(path)
                if name in tests:
                    raise _fail(
                        file,
                        f"data.test[{i}]: two test files are both named {name!r} by their file stem; "
                        "give data.test as a mapping {name: path} instead",
                    )
                tests[name] = path
        else:
            raise _fail(file, f"data.test must be a path, a list of paths or a mapping {{name: path}}, got {_describe(t)}")
        kw["test"] = tests
    if "keys" in m:
        km = _mapping(file, m["keys"], "data.keys")
        _check_keys(file, km, "data.keys", _KEYS_KEYS)
        kw["keys"] = DataKeys(**{k: _str(file, v, f"data.keys.{k}") for k, v in km.items()})
    return _wrap_post_init(file, lambda: DataSpec(**kw))


# --------------------------------------------------------------------------------------------------
# YAML loading


def _yaml_loader():
    import yaml

    class _StrictLoader(yaml.SafeLoader):
        """SafeLoader that refuses duplicate keys (plain YAML silently keeps the last one)."""

    def construct_mapping(loader, node, deep=False):
        loader.flatten_mapping(node)
        out = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, "found an unhashable key", key_node.start_mark
                ) from None
            if key in out:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            out[key] = loader.construct_object(value_node, deep=deep)
        return out

    _StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return _StrictLoader


def _read_yaml(path: str) -> Any:
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text (UTF-8) file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from None
    try:
        return yaml.load(text, Loader=_yaml_loader())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = exc.problem or exc.context or "syntax error"
        raise ConfigError(f"{path}: invalid YAML{where}: {what}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None


def parse_train_config(raw: Any, file: str = "<config>", base_dir: Optional[str] = None, check_paths: bool = True) -> TrainConfig:
    """Build a :class:`TrainConfig` from an already-loaded YAML document.

    file: the name used in error messages. base_dir: what relative data paths are relative to
    (default: the working directory). check_paths: fail early when a data file does not exist.
    """
    base_dir = os.path.abspath(base_dir if base_dir is not None else os.getcwd())
    if raw is None:
        raise _fail(file, "the config is empty; expected a mapping with at least 'model' and 'data'")
    if not isinstance(raw, Mapping):
        raise _fail(file, f"the top level must be a mapping (key: value pairs), got {_describe(raw)}")
    _check_keys(file, raw, "", _TOP_KEYS, required=("model", "data"))

    seed = _int(file, raw["seed"], "seed") if raw.get("seed") is not None else 0
    if seed < 0:
        raise _fail(file, f"seed must be >= 0, got {seed}")
    precision = _choice(file, raw["precision"], "precision", PRECISIONS) if "precision" in raw else "float64"
    output_dir = _str(file, raw["output_dir"], "output_dir") if "output_dir" in raw else os.path.join("runs", "jace")

    model_raw = raw["model"]
    if not isinstance(model_raw, Mapping):
        raise _fail(file, f"model must be a mapping (key: value pairs), got {_describe(model_raw)}")
    model_type = model_raw.get("type", "linear_ace")
    if not isinstance(model_type, str) or model_type not in _MODEL_CONFIGS:
        known = model_types()
        close = difflib.get_close_matches(model_type, known, n=1, cutoff=0.6) if isinstance(model_type, str) else []
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise _fail(file, f"unknown model.type {_describe(model_type)}{hint}; known model types: {', '.join(known)}")
    model_body = {k: v for k, v in model_raw.items() if k != "type"}
    spec = _MODEL_CONFIGS[model_type].parse(file, model_body)
    elements = tuple(getattr(spec, "elements", ()))

    fit = _parse_fit(file, raw.get("fit"), elements)
    data = _parse_data(file, raw["data"], base_dir, check_paths)
    return TrainConfig(
        seed=seed,
        precision=precision,
        output_dir=output_dir,
        model=spec,
        fit=fit,
        data=data,
        model_type=model_type,
        source=None if file == "<config>" else file,
    )


def load_train_config(path, check_paths: bool = True) -> TrainConfig:
    """Read and check a YAML training config. Relative data paths resolve against the file's directory.

    Raises ConfigError (a ValueError) naming the file and the key for any problem.
    """
    path = os.fspath(path)
    raw = _read_yaml(path)
    return parse_train_config(raw, file=path, base_dir=os.path.dirname(os.path.abspath(path)), check_paths=check_paths)


# --------------------------------------------------------------------------------------------------
# Writing a config back


def train_config_to_dict(cfg: TrainConfig) -> dict:
    """A plain dict (lists, floats, strings) that ``parse_train_config`` reads back to ``cfg``.

    Data paths are written as stored in ``cfg`` (absolute after loading), so the dict can be saved
    anywhere, e.g. next to the trained model.
    """
    model = {"type": cfg.model_type}
    model.update(_MODEL_CONFIGS[cfg.model_type].to_dict(cfg.model))
    f = cfg.fit
    fit = {
        "energy_weight": float(f.energy_weight),
        "forces_weight": float(f.forces_weight),
        "stress_weight": float(f.stress_weight),
        "config_type_weights": {str(ct): {str(k): float(v) for k, v in w.items()} for ct, w in f.config_type_weights.items()},
        "regulariser": f.regulariser,
        "lam": float(f.lam),
        "smoothness_p": float(f.smoothness_p),
        "e0": f.e0 if isinstance(f.e0, str) else {str(k): float(v) for k, v in f.e0.items()},
        "chunk_size": int(f.chunk_size),
    }
    d = cfg.data
    data: dict[str, Any] = {"train": d.train}
    if d.validation is not None:
        data["validation"] = d.validation
    else:
        data["validation_fraction"] = float(d.validation_fraction)
    if d.test:
        data["test"] = dict(d.test)
    if d.isolated_atoms is not None:
        data["isolated_atoms"] = d.isolated_atoms
    data["keys"] = dataclasses.asdict(d.keys)
    return {
        "seed": int(cfg.seed),
        "precision": cfg.precision,
        "output_dir": cfg.output_dir,
        "model": model,
        "data": data,
        "fit": fit,
    }


def dump_train_config(cfg: TrainConfig) -> str:
    """The config as YAML text."""
    import yaml

    return yaml.safe_dump(train_config_to_dict(cfg), sort_keys=False, default_flow_style=None, allow_unicode=True)


def write_train_config(path, cfg: TrainConfig) -> None:
    """Write the config as YAML, atomically (a crash never leaves a half-written file)."""
    from jace.files import atomic_write_bytes

    atomic_write_bytes(path, dump_train_config(cfg).encode("utf-8"))
