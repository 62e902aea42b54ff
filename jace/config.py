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
      solver: auto                 # qr, or dual (kernel form: for more basis functions than rows)

Neural (multi-ACE) models: ``model.type`` is one of ``ace``, ``nequip``, ``botnet``, ``mace`` (named
points of the design space, :func:`jace.models.multi_ace.preset`) or ``multi_ace`` (a user-defined
point starting from the ``MultiACESpec`` defaults). Every ``MultiACESpec`` field is a key under
``model``; the preset supplies the defaults and the YAML overrides them. They are trained by gradient
descent, so they take a ``training:`` section instead of ``fit:``::

    seed: 0                        # also seeds parameter initialisation and data order
    precision: float64             # or training.precision (not both, unless equal)
    model:
      type: mace                   # ace | nequip | botnet | mace | multi_ace
      elements: [H, C, O]
      cutoff: 5.0
      radial: {kind: bessel, n_max: 8, envelope_p: 5}
      radial_mlp: [64, 64, 64]     # [] only with one_particle: outer
      num_layers: 2
      hidden_irreps: 32x0e+32x1o   # = channels: 32, hidden_l_max: 1 (give one form, not both)
      l_max: 3
      correlation: 3               # one number for every layer, or one per layer: [3, 3]
      avg_num_neighbors: auto      # auto (from the training data), a number, or null
      # ... and any other MultiACESpec field: radial_element_dependent, one_particle, product,
      # max_degree, w_l, product_element_dependent, embedding, residual, first_layer_residual,
      # update_element_dependent, atomic_basis_element_dependent, nonlinearity (none | gate, or false | true), readout,
      # last_readout, readout_hidden, readout_all_layers, last_layer_scalars_only, normalisation,
      # zbl (ZBL core repulsion, off by default), zbl_cutoff_scale
    data:                          # as for linear ACE; a validation set is required, and isolated
      train: train.xyz             # atoms of elements the model does not list are left out
      validation_fraction: 0.1
    training:                      # every TrainSettings field but seed and dtype, plus e0 and precision
      max_epochs: 100
      batch_size: 8
      optimizer: amsgrad
      lr: 0.01
      schedule: plateau
      energy_weight: 1
      forces_weight: 100
      stage_two: {start_fraction: 0.75, energy_weight: 1000, forces_weight: 100, lr: 1.0e-3}
      max_minutes: null            # a wall-clock budget: stop after it (stage two at start_fraction of it)
      e0: isolated                 # least_squares, zero, or {H: -13.6, C: -1026.9, O: -2037.8}
      committee:                   # optional: train N members in one vmapped program (jace.training.committee)
        n_members: 4               # a positive integer
        subsample: bootstrap       # [null] null, bootstrap, or a fraction in (0, 1]
        seeds: [0, 1, 2, 3]        # [seed, seed + 1, ...] one initialisation seed per member

Graph ACE models: ``model.type`` is ``grace-1l``, ``grace-2l``, ``fs-ace`` (named points,
:func:`jace.models.grace.preset`) or ``grace`` (the ``GraceSpec`` defaults); every ``GraceSpec`` field
is a key under ``model`` (channels, l_max and correlation: one number or one per layer), with the same
``training:`` section as the multi-ACE models::

    model:
      type: grace-2l
      elements: [H, C, O]
      cutoff: 5.0
      channels: [16, 16]           # per layer (GRACE's n_rad)
      l_max: [3, 2]
      correlation: 3
      message_l_max: 1
      readout: mlp                 # linear | fs | mlp | fs_mlp
      zbl: false                   # ZBL core repulsion (also a key of the multi-ACE models)

New model types register a parser with :func:`register_model_config`.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
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
    SOLVERS,
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
    ``model_type == "linear_ace"``, ``MultiACESpec`` for the neural types); ``source`` is the YAML file
    it was read from, if any. Linear ACE has ``fit`` (and ``training`` None); the neural models have
    ``training`` (and ``fit`` None)."""

    seed: int
    precision: str
    output_dir: str
    model: Any
    fit: Optional[FitSpec]
    data: DataSpec
    model_type: str = "linear_ace"
    source: Optional[str] = None
    training: Optional["TrainingSpec"] = None

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")


@dataclasses.dataclass(frozen=True)
class TrainingSpec:
    """The ``training:`` section of a neural model: the trainer's settings and how to get E0.

    settings: a :class:`jace.training.TrainSettings` (its ``seed`` is the config's ``seed`` and its
      ``dtype`` the config's ``precision``).
    e0: "isolated", "least_squares", "zero" or {symbol: eV}.
    committee: a :class:`jace.training.committee.CommitteeSettings` to train a committee, or None.
    """

    settings: Any
    e0: Any = "isolated"
    committee: Any = None


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


def _bool(file: str, value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(file, f"{path} must be true or false, got {_describe(value)}")
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


SECTIONS = ("fit", "training")


@dataclasses.dataclass(frozen=True)
class ModelConfigType:
    """How one ``model.type`` is read from and written to a config mapping.

    parse(file, mapping) -> spec, where mapping is ``model`` without its ``type`` key.
    to_dict(spec) -> a plain mapping (lists, not tuples) that ``parse`` reads back to the same spec.
    section: "fit" (fitted by linear least squares, ``FitSpec``) or "training" (trained by gradient
      descent, ``TrainingSpec``): which of the two sections the config may have.
    """

    name: str
    parse: Callable[[str, Mapping], Any]
    to_dict: Callable[[Any], dict]
    section: str = "fit"


_MODEL_CONFIGS: dict[str, ModelConfigType] = {}


def register_model_config(
    name: str, parse: Callable[[str, Mapping], Any], to_dict: Callable[[Any], dict], section: str = "fit"
) -> None:
    """Make ``model.type: name`` known to :func:`load_train_config`; ``section`` as in ModelConfigType."""
    if section not in SECTIONS:
        raise ValueError(f"section must be one of {SECTIONS}, got {section!r}")
    _MODEL_CONFIGS[name] = ModelConfigType(name, parse, to_dict, section)


def model_section(model_type: str) -> str:
    """"fit" or "training": the section a model type is configured by."""
    return _MODEL_CONFIGS[model_type].section


def model_types() -> tuple[str, ...]:
    return tuple(sorted(_MODEL_CONFIGS))


_RADIAL_KEYS = ("kind", "n_max", "envelope", "envelope_p", "transform", "r0_scale", "q")
_LINEAR_ACE_KEYS = ("elements", "cutoff", "l_max", "correlation", "max_degree", "w_l", "radial")


def _parse_radial(file: str, value: Any, prefix: str, default: Optional[RadialSpec] = None) -> RadialSpec:
    m = _mapping(file, value, prefix)
    _check_keys(file, m, prefix, _RADIAL_KEYS)
    default = RadialSpec() if default is None else default
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


def _parse_elements(file: str, elements: Any) -> tuple[str, ...]:
    if isinstance(elements, str):
        elements = [elements]
    if not isinstance(elements, (list, tuple)) or not elements:
        raise _fail(file, f"model.elements must be a non-empty list of chemical symbols, got {_describe(elements)}")
    symbols = tuple(_element(file, e, f"model.elements[{i}]") for i, e in enumerate(elements))
    dup = sorted({s for s in symbols if symbols.count(s) > 1})
    if dup:
        raise _fail(file, f"model.elements lists {', '.join(dup)} more than once")
    return symbols


def _radial_to_dict(radial: RadialSpec) -> dict:
    return {
        "kind": radial.kind,
        "n_max": int(radial.n_max),
        "envelope": radial.envelope,
        "envelope_p": int(radial.envelope_p),
        "transform": radial.transform,
        "r0_scale": float(radial.r0_scale),
        "q": float(radial.q),
    }


def _parse_linear_ace(file: str, m: Mapping) -> LinearACESpec:
    _check_keys(file, m, "model", ("type",) + _LINEAR_ACE_KEYS, required=("elements",))
    symbols = _parse_elements(file, m["elements"])

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
        "radial": _radial_to_dict(spec.radial),
    }


register_model_config("linear_ace", _parse_linear_ace, _linear_ace_to_dict)


# --------------------------------------------------------------------------------------------------
# Multi-ACE models (ace, nequip, botnet, mace, multi_ace)

# The named points of jace.models.multi_ace (MODEL_NAMES there; a test checks they agree).
MULTI_ACE_TYPES = ("ace", "nequip", "botnet", "mace", "multi_ace")

_ONE_PARTICLE = ("channelwise", "outer")
_PRODUCT = ("channelwise", "full")
_EMBEDDING = ("learned", "one_hot")
_RESIDUAL = ("none", "linear", "element")
_NONLINEARITY = ("none", "gate")
_READOUT = ("linear", "mlp")
_NORMALISATION = ("e0", "scale_shift")

# MultiACESpec field -> how its YAML value is read (a test checks that every field is listed)
_MULTI_ACE_FIELDS: dict[str, Any] = {
    "elements": "elements",
    "cutoff": "float",
    "radial": "radial",
    "radial_mlp": "int_list",
    "radial_element_dependent": "bool",
    "num_layers": "int",
    "channels": "int",
    "l_max": "int",
    "hidden_l_max": "int",
    "correlation": "correlation",
    "one_particle": _ONE_PARTICLE,
    "product": _PRODUCT,
    "max_degree": "max_degree",
    "w_l": "float",
    "product_element_dependent": "bool",
    "embedding": _EMBEDDING,
    "residual": _RESIDUAL,
    "first_layer_residual": "bool",
    "update_element_dependent": "bool",
    "atomic_basis_element_dependent": "bool",
    "nonlinearity": "nonlinearity",
    "readout": _READOUT,
    "last_readout": _READOUT,
    "readout_hidden": "int",
    "readout_all_layers": "bool",
    "last_layer_scalars_only": "bool",
    "normalisation": _NORMALISATION,
    "avg_num_neighbors": "avg_num_neighbors",
    "zbl": "bool",
    "zbl_cutoff_scale": "float",
}
_MULTI_ACE_KEYS = tuple(_MULTI_ACE_FIELDS) + ("hidden_irreps",)


def parse_hidden_irreps(file: str, value: Any, path: str = "model.hidden_irreps") -> tuple[int, int]:
    """(channels, hidden_l_max) of an irreps string such as ``"32x0e+32x1o"``.

    Multi-ACE hidden features have the same number of channels for every L = 0 … L_max, each with
    natural parity (-1)^L (0e, 1o, 2e, 3o, …); anything else is a ConfigError that says why.
    """
    example = "e.g. '32x0e+32x1o' (32 channels, L = 0 and 1)"
    if not isinstance(value, str) or not value.strip():
        raise _fail(file, f"{path} must be an irreps string, {example}; got {_describe(value)}")
    import e3nn_jax as e3nn

    try:
        irreps = e3nn.Irreps(value)
    except (ValueError, TypeError, AssertionError):
        raise _fail(file, f"{path}: {value!r} is not an irreps string; write it as {example}") from None
    mult: dict[int, int] = {}
    for mul, ir in irreps:
        if mul == 0:
            continue
        if ir.p != (-1) ** ir.l:
            natural = f"{ir.l}{'e' if ir.l % 2 == 0 else 'o'}"
            raise _fail(
                file,
                f"{path}: {value!r} has {ir}, which is not of natural parity: multi-ACE features with L = {ir.l} "
                f"are {natural} (parity (-1)^L: 0e, 1o, 2e, 3o, ...)",
            )
        mult[ir.l] = mult.get(ir.l, 0) + int(mul)
    if not mult:
        raise _fail(file, f"{path}: {value!r} is empty (no channels); write it as {example}")
    l_top = max(mult)
    missing = [l for l in range(l_top + 1) if l not in mult]
    if missing:
        raise _fail(
            file,
            f"{path}: {value!r} has no features with L = {', '.join(map(str, missing))}; multi-ACE hidden "
            f"features have every L from 0 to their L_max ({l_top})",
        )
    if len(set(mult.values())) > 1:
        counts = ", ".join(f"{m} for L = {l}" for l, m in sorted(mult.items()))
        raise _fail(
            file,
            f"{path}: {value!r} has unequal multiplicities ({counts}); multi-ACE hidden features have the "
            f"same number of channels for every L, {example}",
        )
    return mult[0], l_top


def _int_list(file: str, value: Any, path: str) -> tuple[int, ...]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise _fail(file, f"{path} must be a list of integers, got {_describe(value)}")
    return tuple(_int(file, v, f"{path}[{i}]") for i, v in enumerate(value))


def _multi_ace_value(file: str, key: str, value: Any) -> Any:
    path = f"model.{key}"
    kind = _MULTI_ACE_FIELDS[key]
    if isinstance(kind, tuple):
        return _choice(file, value, path, kind)
    if kind == "float":
        return _float(file, value, path)
    if kind == "int":
        return _int(file, value, path)
    if kind == "bool":
        return _bool(file, value, path)
    if kind == "int_list":
        return _int_list(file, value, path)
    if kind == "correlation":  # one number for every layer, or one per layer
        if isinstance(value, (list, tuple)):
            if not value:
                raise _fail(file, f"{path} must be one integer or a list with one per layer, got []")
            return _int_list(file, value, path)
        return _int(file, value, path)
    if kind == "max_degree":  # one number for every correlation order, or a list
        if isinstance(value, (list, tuple)):
            return tuple(_float(file, d, f"{path}[{i}]") for i, d in enumerate(value))
        return _float(file, value, path)
    if kind == "nonlinearity":  # none | gate, or false | true
        if isinstance(value, bool):
            return "gate" if value else "none"
        return _choice(file, value, path, _NONLINEARITY)
    if kind == "avg_num_neighbors":
        if value is None or value == "auto":
            return value
        if isinstance(value, str):
            try:
                float(value)
            except ValueError:
                hint = " (did you mean 'auto'?)" if difflib.get_close_matches(value, ["auto"], n=1, cutoff=0.5) else ""
                raise _fail(file, f"{path} must be a number, null or 'auto', got {_describe(value)}{hint}") from None
        out = _float(file, value, path)
        if not out > 0:
            raise _fail(file, f"{path} must be positive, got {_describe(value)}")
        return out
    raise AssertionError(f"no reader for {key}")  # pragma: no cover


def _parse_multi_ace(model_type: str, file: str, m: Mapping):
    """The MultiACESpec of ``model.type: model_type``: the preset with the YAML's keys overriding it."""
    from jace.models.design import MultiACESpec
    from jace.models.multi_ace import _PRESETS, preset

    _check_keys(file, m, "model", ("type",) + _MULTI_ACE_KEYS, required=("elements",))
    elements = _parse_elements(file, m["elements"])
    base = dict(_PRESETS.get(model_type, {}))
    overrides: dict[str, Any] = {}
    for key, value in m.items():
        if key in ("type", "elements", "hidden_irreps", "radial"):
            continue
        overrides[key] = _multi_ace_value(file, key, value)
    if "radial" in m:
        default_radial = base.get("radial", MultiACESpec.radial)
        overrides["radial"] = _parse_radial(file, m["radial"], "model.radial", default=default_radial)
    if "hidden_irreps" in m:
        both = [k for k in ("channels", "hidden_l_max") if k in m]
        if both:
            raise _fail(
                file,
                f"give either model.hidden_irreps or model.{' and model.'.join(both)}, not both "
                "(hidden_irreps sets channels and hidden_l_max)",
            )
        overrides["channels"], overrides["hidden_l_max"] = parse_hidden_irreps(file, m["hidden_irreps"])
    if isinstance(overrides.get("max_degree"), float):
        corr = overrides.get("correlation", base.get("correlation", MultiACESpec.correlation))
        nu = corr if isinstance(corr, int) else max(corr)
        overrides["max_degree"] = (overrides["max_degree"],) * max(int(nu), 1)
    try:
        return preset(model_type, elements, **overrides)
    except ValueError as exc:
        msg = str(exc)
        if not msg.startswith("model."):
            msg = f"model: {msg}"
        raise _fail(file, msg) from None


def _multi_ace_to_dict(spec) -> dict:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(spec):
        v = getattr(spec, f.name)
        if f.name == "radial":
            out["radial"] = _radial_to_dict(v)
        elif f.name == "elements":
            out["elements"] = list(v)
        elif f.name == "max_degree":
            out["max_degree"] = [float(d) for d in v]
        elif isinstance(v, tuple):
            out[f.name] = [int(x) for x in v]
        elif isinstance(v, bool) or isinstance(v, str) or v is None:
            out[f.name] = v
        elif isinstance(v, int):
            out[f.name] = int(v)
        else:
            out[f.name] = float(v)
    return out


for _name in MULTI_ACE_TYPES:
    register_model_config(_name, functools.partial(_parse_multi_ace, _name), _multi_ace_to_dict, section="training")
del _name


# --------------------------------------------------------------------------------------------------
# Graph ACE models (grace-1l, grace-2l, fs-ace, grace)

# The named points of jace.models.grace (MODEL_NAMES there; a test checks they agree).
GRACE_TYPES = ("grace-1l", "grace-2l", "fs-ace", "grace")

# GraceSpec field -> how its YAML value is read (a test checks that every field is listed)
_GRACE_FIELDS: dict[str, Any] = {
    "elements": "elements",
    "cutoff": "float",
    "radial": "radial",
    "radial_mlp": "int_list",
    "num_layers": "int",
    "embedding_size": "int",
    "channels": "per_layer",
    "l_max": "per_layer",
    "correlation": "per_layer",
    "message_l_max": "int",
    "message_channels": "int",
    "readout": ("linear", "fs", "mlp", "fs_mlp"),
    "fs_exponents": "float_list",
    "mlp_densities": "int",
    "readout_hidden": "int_list",
    "normalisation": _NORMALISATION,
    "avg_num_neighbors": "avg_num_neighbors",
    "zbl": "bool",
    "zbl_cutoff_scale": "float",
}


def _grace_value(file: str, key: str, value: Any) -> Any:
    path = f"model.{key}"
    kind = _GRACE_FIELDS[key]
    if kind == "per_layer":  # one number for every layer, or one per layer
        if isinstance(value, (list, tuple)):
            if not value:
                raise _fail(file, f"{path} must be one integer or a list with one per layer, got []")
            return _int_list(file, value, path)
        return _int(file, value, path)
    if kind == "float_list":
        items = value if isinstance(value, (list, tuple)) else [value]
        return tuple(_float(file, v, f"{path}[{i}]") for i, v in enumerate(items))
    if kind == "avg_num_neighbors":
        return _multi_ace_value(file, "avg_num_neighbors", value)
    if isinstance(kind, tuple):
        return _choice(file, value, path, kind)
    return {"float": _float, "int": _int, "bool": _bool, "int_list": _int_list}[kind](file, value, path)


def _parse_grace(model_type: str, file: str, m: Mapping):
    """The GraceSpec of ``model.type: model_type``: the preset with the YAML's keys overriding it."""
    from jace.models.grace import _PRESETS, GraceSpec, preset

    _check_keys(file, m, "model", ("type",) + tuple(_GRACE_FIELDS), required=("elements",))
    elements = _parse_elements(file, m["elements"])
    overrides: dict[str, Any] = {}
    for key, value in m.items():
        if key in ("type", "elements", "radial"):
            continue
        overrides[key] = _grace_value(file, key, value)
    if "radial" in m:
        default_radial = _PRESETS.get(model_type, {}).get("radial", GraceSpec.radial)
        overrides["radial"] = _parse_radial(file, m["radial"], "model.radial", default=default_radial)
    try:
        return preset(model_type, elements, **overrides)
    except ValueError as exc:
        msg = str(exc)
        if not msg.startswith("model."):
            msg = f"model: {msg}"
        raise _fail(file, msg) from None


def _grace_to_dict(spec) -> dict:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(spec):
        v = getattr(spec, f.name)
        if f.name == "radial":
            out["radial"] = _radial_to_dict(v)
        elif f.name == "elements":
            out["elements"] = list(v)
        elif f.name == "fs_exponents":
            out[f.name] = [float(x) for x in v]
        elif isinstance(v, tuple):
            out[f.name] = [int(x) for x in v]
        elif isinstance(v, bool) or isinstance(v, str) or v is None:
            out[f.name] = v
        elif isinstance(v, int):
            out[f.name] = int(v)
        else:
            out[f.name] = float(v)
    return out


for _name in GRACE_TYPES:
    register_model_config(_name, functools.partial(_parse_grace, _name), _grace_to_dict, section="training")
del _name


# --------------------------------------------------------------------------------------------------
# fit and data sections

_FIT_KEYS = tuple(f.name for f in dataclasses.fields(FitSpec))
_DATA_KEYS = ("train", "validation", "validation_fraction", "test", "isolated_atoms", "keys")
_KEYS_KEYS = tuple(f.name for f in dataclasses.fields(DataKeys))
_TOP_KEYS = ("seed", "precision", "output_dir", "model", "data", "fit", "training")


def _parse_e0(file: str, e0: Any, path: str, elements: tuple[str, ...]):
    if isinstance(e0, Mapping):
        values: dict[str, float] = {}
        for sym, v in e0.items():
            _element(file, sym, f"{path} key {sym!r}")
            if sym not in elements:
                raise _fail(file, f"{path}.{sym}: {sym} is not in model.elements ({', '.join(elements)})")
            values[sym] = _float(file, v, f"{path}.{sym}")
        missing = [s for s in elements if s not in values]
        if missing:
            raise _fail(file, f"{path} gives no reference energy for {', '.join(missing)}")
        return values
    if not isinstance(e0, str):
        raise _fail(
            file, f"{path} must be one of {', '.join(E0_MODES)} or a mapping {{element: eV}}, got {_describe(e0)}"
        )
    return _choice(file, e0, path, E0_MODES)


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
    if "solver" in m:
        kw["solver"] = _choice(file, m["solver"], "fit.solver", SOLVERS)
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
        kw["e0"] = _parse_e0(file, m["e0"], "fit.e0", elements)
    for name in ("smoothness_p",):
        if name in kw and kw[name] < 0:
            raise _fail(file, f"fit.{name} must be >= 0, got {kw[name]!r}")
    return _wrap_post_init(file, lambda: FitSpec(**kw))


# TrainSettings field -> how its YAML value is read. ``seed`` and ``dtype`` are not keys of the section:
# they come from the top-level ``seed`` and ``precision`` (a test checks every other field is listed).
_TRAINING_FIELDS: dict[str, Any] = {
    "max_epochs": "int",
    "batch_size": "int",
    "valid_batch_size": "int",
    "eval_every": "int",
    "eval_unit": ("epoch", "step"),
    "optimizer": "optimizer",
    "lr": "float",
    "b1": "float",
    "b2": "float",
    "eps": "float",
    "schedule": "schedule",
    "warmup_steps": "int",
    "decay_rate": "float",
    "decay_steps": "int",
    "final_lr_factor": "float",
    "plateau_factor": "float",
    "plateau_patience": "int",
    "plateau_threshold": "float",
    "plateau_min_factor": "float",
    "weight_decay": "float",
    "weight_decay_patterns": "str_list",
    "clip_norm": "float_or_null",
    "ema_decay": "float_or_null",
    "loss": "loss",
    "huber_delta": "float",
    "energy_weight": "float",
    "forces_weight": "float",
    "stress_weight": "float",
    "virial_weight": "float",
    "config_type_weights": "config_type_weights",
    "stage_two": "stage_two",
    "patience": "int_or_null",
    "max_minutes": "float_or_null",
    "n_buckets": "int",
    "data_parallel": "bool",
    "plots": "bool",
}
_TRAINING_KEYS = tuple(_TRAINING_FIELDS) + ("e0", "precision", "committee")
_COMMITTEE_KEYS = ("n_members", "subsample", "seeds")


def _parse_committee(file: str, value: Any, path: str = "training.committee"):
    """``training.committee`` → CommitteeSettings, or None for null / false."""
    from jace.training.committee import SUBSAMPLE_MODES, CommitteeSettings

    if value is None or value is False:
        return None
    m = _mapping(file, value, path)
    _check_keys(file, m, path, _COMMITTEE_KEYS, required=("n_members",))
    kw: dict[str, Any] = {"n_members": _int(file, m["n_members"], f"{path}.n_members")}
    sub = m.get("subsample")
    if isinstance(sub, str):
        try:
            kw["subsample"] = float(sub)  # "8e-1" (YAML 1.1 reads it as a string)
        except ValueError:
            kw["subsample"] = _choice(file, sub, f"{path}.subsample", SUBSAMPLE_MODES)
    elif sub is not None:
        kw["subsample"] = _float(file, sub, f"{path}.subsample")
    if m.get("seeds") is not None:
        seeds = m["seeds"]
        if not isinstance(seeds, (list, tuple)):
            raise _fail(file, f"{path}.seeds must be a list of integers, got {_describe(seeds)}")
        kw["seeds"] = tuple(_int(file, x, f"{path}.seeds[{i}]") for i, x in enumerate(seeds))
    try:
        return CommitteeSettings(**kw)
    except ValueError as exc:
        msg = str(exc)
        raise _fail(file, f"training.{msg}" if msg.startswith("committee.") else f"{path}: {msg}") from None
_STAGE_TWO_KEYS = ("start_fraction", "energy_weight", "forces_weight", "stress_weight", "virial_weight", "lr")


def _parse_stage_two(file: str, value: Any, path: str):
    from jace.training.optim import StageTwo

    if value is None or value is False:
        return None
    if value is True:
        return StageTwo()
    m = _mapping(file, value, path)
    _check_keys(file, m, path, _STAGE_TWO_KEYS)
    kw: dict[str, Any] = {}
    for key, v in m.items():
        if key in ("start_fraction", "lr"):
            kw[key] = _float(file, v, f"{path}.{key}")
        else:  # a loss weight; null keeps stage one's
            kw[key] = None if v is None else _float(file, v, f"{path}.{key}")
    try:
        return StageTwo(**kw)
    except ValueError as exc:
        msg = str(exc)
        raise _fail(file, f"training.{msg}" if msg.startswith("stage_two.") else f"{path}: {msg}") from None


def _training_value(file: str, key: str, value: Any) -> Any:
    from jace.training.loss import LOSS_KINDS
    from jace.training.optim import OPTIMIZERS, SCHEDULES

    path = f"training.{key}"
    kind = _TRAINING_FIELDS[key]
    if isinstance(kind, tuple):
        return _choice(file, value, path, kind)
    if kind == "optimizer":
        return _choice(file, value, path, OPTIMIZERS)
    if kind == "schedule":
        return _choice(file, value, path, SCHEDULES)
    if kind == "loss":
        return _choice(file, value, path, LOSS_KINDS)
    if kind == "int":
        return _int(file, value, path)
    if kind == "float":
        return _float(file, value, path)
    if kind == "bool":
        return _bool(file, value, path)
    if kind == "int_or_null":
        return None if value is None else _int(file, value, path)
    if kind == "float_or_null":
        return None if value is None else _float(file, value, path)
    if kind == "str_list":
        import re

        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise _fail(file, f"{path} must be a list of regular expressions, got {_describe(value)}")
        out = []
        for i, item in enumerate(items):
            pattern = _str(file, item, f"{path}[{i}]")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise _fail(file, f"{path}[{i}]: {pattern!r} is not a regular expression ({exc})") from None
            out.append(pattern)
        return tuple(out)
    if kind == "config_type_weights":
        ctw = _mapping(file, value, path)
        out_w: dict[str, Any] = {}
        for ct, w in ctw.items():
            where = f"{path}.{ct}"
            if not isinstance(ct, str):
                raise _fail(file, f"{path} keys must be config_type names, got {_describe(ct)}")
            if isinstance(w, Mapping):
                _check_keys(file, w, where, WEIGHT_OBSERVABLES)
                out_w[ct] = {obs: _float(file, v, f"{where}.{obs}") for obs, v in w.items()}
                bad = [obs for obs, v in out_w[ct].items() if v < 0]
                if bad:
                    raise _fail(file, f"{where}.{bad[0]} must be >= 0, got {out_w[ct][bad[0]]!r}")
            else:
                out_w[ct] = _float(file, w, where)
                if out_w[ct] < 0:
                    raise _fail(file, f"{where} must be >= 0, got {_describe(w)}")
        return out_w
    if kind == "stage_two":
        return _parse_stage_two(file, value, path)
    raise AssertionError(f"no reader for {key}")  # pragma: no cover


def _parse_training(file: str, value: Any, elements: tuple[str, ...], seed: int, precision: str) -> TrainingSpec:
    from jace.training.settings import TrainSettings

    m = _mapping(file, value, "training")
    for key, hint in (("dtype", "use 'precision' (float64 or float32)"), ("seed", "use the top-level 'seed'")):
        if key in m:
            raise _fail(file, f"unknown key 'training.{key}': {hint}")
    _check_keys(file, m, "training", _TRAINING_KEYS)
    kw = {key: _training_value(file, key, v) for key, v in m.items() if key not in ("e0", "precision", "committee")}
    e0 = _parse_e0(file, m["e0"], "training.e0", elements) if "e0" in m else "isolated"
    try:
        settings = TrainSettings(seed=seed, dtype=precision, **kw)
    except ValueError as exc:
        msg = str(exc)
        raise _fail(file, msg if msg.startswith("training.") else f"training.{msg}") from None
    committee = _parse_committee(file, m.get("committee"))
    if committee is not None and settings.data_parallel:
        raise _fail(file, "training.committee cannot be combined with training.data_parallel (the members are "
                          "vmapped on one device); set data_parallel: false")
    return TrainingSpec(settings=settings, e0=e0, committee=committee)


def _training_to_dict(spec: TrainingSpec) -> dict:
    s = spec.settings
    out: dict[str, Any] = {}
    for key in _TRAINING_FIELDS:
        v = getattr(s, key)
        if key == "stage_two":
            out[key] = None if v is None else {
                f.name: (None if getattr(v, f.name) is None else float(getattr(v, f.name)))
                for f in dataclasses.fields(v)
            }
        elif key == "weight_decay_patterns":
            out[key] = [str(x) for x in v]
        elif key == "config_type_weights":
            out[key] = {
                str(ct): ({str(k): float(x) for k, x in w.items()} if isinstance(w, Mapping) else float(w))
                for ct, w in v.items()
            }
        elif v is None or isinstance(v, (bool, str)):
            out[key] = v
        elif isinstance(v, int):
            out[key] = int(v)
        else:
            out[key] = float(v)
    out["e0"] = spec.e0 if isinstance(spec.e0, str) else {str(k): float(v) for k, v in spec.e0.items()}
    if getattr(spec, "committee", None) is not None:
        out["committee"] = spec.committee.to_dict()
    return out


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


def read_strict_yaml(path: str, error: type = None, what: str = "config file") -> Any:
    """Load a YAML file with duplicate keys refused; every failure is ``error`` (default ConfigError)
    with a message that starts with the path (and gives line and column for syntax errors)."""
    import yaml

    error = ConfigError if error is None else error
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise error(f"{path}: is a directory, not a {what}") from None
    except UnicodeDecodeError:
        raise error(f"{path}: not a text (UTF-8) file") from None
    except OSError as exc:
        raise error(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    try:
        return yaml.load(text, Loader=_yaml_loader())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "syntax error"
        raise error(f"{path}: invalid YAML{where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise error(f"{path}: invalid YAML: {exc}") from None


def _read_yaml(path: str) -> Any:
    return read_strict_yaml(path)


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
        raise _fail(
            file, f"model.type: unknown model type {_describe(model_type)}{hint}; known model types: {', '.join(known)}"
        )
    section = _MODEL_CONFIGS[model_type].section
    other = "training" if section == "fit" else "fit"
    if other in raw:
        if section == "fit":
            why = (f"model type '{model_type}' is fitted by linear least squares, configured by a 'fit:' section; "
                   f"'training:' is for the neural models ({', '.join(MULTI_ACE_TYPES + GRACE_TYPES)})")
        else:
            why = (f"model type '{model_type}' is trained by gradient descent, configured by a 'training:' "
                   "section (TrainSettings fields, e0, precision); 'fit:' is for linear_ace")
        raise _fail(file, f"unexpected section '{other}': {why}")
    model_body = {k: v for k, v in model_raw.items() if k != "type"}
    spec = _MODEL_CONFIGS[model_type].parse(file, model_body)
    elements = tuple(getattr(spec, "elements", ()))

    fit, training = None, None
    if section == "fit":
        fit = _parse_fit(file, raw.get("fit"), elements)
    else:
        training_raw = _mapping(file, raw.get("training"), "training")
        if "precision" in training_raw:
            inner = _choice(file, training_raw["precision"], "training.precision", PRECISIONS)
            if "precision" in raw and inner != precision:
                raise _fail(
                    file,
                    f"precision is {precision} but training.precision is {inner}; give the precision once",
                )
            precision = inner
        training = _parse_training(file, training_raw, elements, seed, precision)
    data = _parse_data(file, raw["data"], base_dir, check_paths)
    if section == "training" and data.validation is None and data.validation_fraction <= 0:
        raise _fail(
            file,
            f"data: model type '{model_type}' needs a validation set (for the best parameters and early "
            "stopping): give data.validation (a file) or data.validation_fraction (e.g. 0.1)",
        )
    return TrainConfig(
        seed=seed,
        precision=precision,
        output_dir=output_dir,
        model=spec,
        fit=fit,
        data=data,
        model_type=model_type,
        source=None if file == "<config>" else file,
        training=training,
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
    if cfg.training is not None:
        section = ("training", _training_to_dict(cfg.training))
    else:
        f = cfg.fit
        section = ("fit", {
            "energy_weight": float(f.energy_weight),
            "forces_weight": float(f.forces_weight),
            "stress_weight": float(f.stress_weight),
            "config_type_weights": {
                str(ct): {str(k): float(v) for k, v in w.items()} for ct, w in f.config_type_weights.items()
            },
            "regulariser": f.regulariser,
            "lam": float(f.lam),
            "smoothness_p": float(f.smoothness_p),
            "e0": f.e0 if isinstance(f.e0, str) else {str(k): float(v) for k, v in f.e0.items()},
            "chunk_size": int(f.chunk_size),
            "solver": f.solver,
        })
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
        section[0]: section[1],
    }


def dump_train_config(cfg: TrainConfig) -> str:
    """The config as YAML text."""
    import yaml

    return yaml.safe_dump(train_config_to_dict(cfg), sort_keys=False, default_flow_style=None, allow_unicode=True)


def write_train_config(path, cfg: TrainConfig) -> None:
    """Write the config as YAML, atomically (a crash never leaves a half-written file)."""
    from jace.files import atomic_write_bytes

    atomic_write_bytes(path, dump_train_config(cfg).encode("utf-8"))
