"""Saving and loading models: one msgpack file, no pickle, loading never executes code.

File layout (``flax.serialization.msgpack_serialize`` of a plain dict)::

    {"format": "jace-model", "version": 1, "model_type": "linear_ace",
     "spec": "<JSON>", "arrays": {name: ndarray}, "metadata": "<JSON>"}

Only dicts, strings, integers and numeric arrays (shape, dtype name, raw bytes) are stored, so a
file cannot smuggle in code; ``spec`` and ``metadata`` are JSON text.

A model class takes part through a small protocol:

    class MyModel:
        model_type = "my_model"                       # class attribute
        def to_state(self) -> (spec: dict, arrays: dict[str, array], metadata: dict): ...
        @classmethod
        def from_state(cls, spec, arrays, metadata) -> "MyModel": ...

and ``register_model_type("my_model", MyModel)``. The modules of ``linear_ace``, ``multi_ace`` and
``committee`` are imported on first use.
"""

from __future__ import annotations

import importlib
import json
import os
from typing import Any, Mapping, NamedTuple

import numpy as np

FORMAT_NAME = "jace-model"
FORMAT_VERSION = 1
MODEL_SUFFIX = ".jace"


class ModelFileError(ValueError):
    """A model file that cannot be read: missing, not a jace model, corrupt, or of an unknown kind."""


_MODEL_TYPES: dict[str, type] = {}
# model types whose module registers (or defines) them; imported lazily on first use
_LAZY_MODULES = {
    "linear_ace": "jace.models.linear_ace",
    "multi_ace": "jace.models.multi_ace",
    "grace": "jace.models.grace",
    "committee": "jace.training.committee",
}


def register_model_type(name: str, cls: type) -> type:
    """Make ``cls`` loadable under ``name``. Returns ``cls`` so it can be used as a decorator helper."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"model type name must be a non-empty string, got {name!r}")
    if not (hasattr(cls, "from_state") and hasattr(cls, "to_state")):
        raise TypeError(f"{cls!r} does not implement to_state/from_state")
    _MODEL_TYPES[name] = cls
    return cls


def _lookup_model_type(name: str):
    if name not in _MODEL_TYPES and name in _LAZY_MODULES:
        try:
            module = importlib.import_module(_LAZY_MODULES[name])
        except ImportError:
            module = None
        if module is not None and name not in _MODEL_TYPES:
            # the module may define the class without registering it
            for obj in vars(module).values():
                if isinstance(obj, type) and getattr(obj, "model_type", None) == name and hasattr(obj, "from_state"):
                    _MODEL_TYPES[name] = obj
                    break
    return _MODEL_TYPES.get(name)


def known_model_types() -> tuple[str, ...]:
    return tuple(sorted(set(_MODEL_TYPES) | set(_LAZY_MODULES)))


# --------------------------------------------------------------------------------------------------
# Atomic writes


from jace.files import atomic_write_bytes  # noqa: E402,F401  (re-exported)


# --------------------------------------------------------------------------------------------------
# Save


def _as_array(name: str, value: Any) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.hasobject or arr.dtype.fields is not None or arr.dtype.kind not in "biufc":
        raise ValueError(f"cannot save array {name!r}: dtype {arr.dtype} is not a plain numeric type")
    return arr


def _to_json(what: str, value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"model {what} is not JSON-serialisable: {exc}") from None


def model_to_bytes(model) -> bytes:
    """Serialise a model (any object following the protocol) to the jace model format."""
    from flax.serialization import msgpack_serialize

    model_type = getattr(model, "model_type", None)
    if not isinstance(model_type, str) or not hasattr(model, "to_state"):
        raise TypeError(f"{type(model).__name__} is not a jace model (needs a model_type string and to_state())")
    spec, arrays, metadata = model.to_state()
    if not isinstance(arrays, Mapping):
        raise TypeError(f"{type(model).__name__}.to_state() must return a dict of arrays, got {type(arrays).__name__}")
    packed_arrays = {}
    for name, value in arrays.items():
        if not isinstance(name, str):
            raise ValueError(f"array names must be strings, got {name!r}")
        packed_arrays[name] = _as_array(name, value)
    payload = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "model_type": model_type,
        "spec": _to_json("spec", spec),
        "arrays": packed_arrays,
        "metadata": _to_json("metadata", metadata if metadata is not None else {}),
    }
    # in_place keeps the key order above (the header first), which load_model_state relies on to tell
    # a truncated model from a file of another kind; ``payload`` is ours to modify.
    return msgpack_serialize(payload, in_place=True)


def save_model(path, model) -> None:
    """Save ``model`` to ``path`` (conventionally ``*.jace``), atomically.

    The whole file is serialised in memory first; if that fails nothing is written, and if writing
    fails the previous file at ``path`` (if any) is left as it was.
    """
    data = model_to_bytes(model)
    atomic_write_bytes(path, data)


# --------------------------------------------------------------------------------------------------
# Load


class ModelState(NamedTuple):
    """The decoded content of a model file, before the model object is built."""

    model_type: str
    spec: dict
    arrays: dict
    metadata: dict


def _bad(path: str, why: str) -> ModelFileError:
    return ModelFileError(f"{path}: {why}")


def load_model_state(path) -> ModelState:
    """Read and check a model file without building the model (no model code runs)."""
    from flax.serialization import msgpack_restore

    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise _bad(path, "model file not found") from None
    except IsADirectoryError:
        raise _bad(path, "is a directory, not a model file") from None
    except OSError as exc:
        raise _bad(path, f"cannot read model file: {exc.strerror or exc}") from None
    if not data:
        raise _bad(path, "empty file, not a jace model")

    try:
        payload = msgpack_restore(data)
    except Exception as exc:  # msgpack raises many kinds on garbage or truncated input
        # Distinguish "truncated jace model" from "something else" by the header bytes.
        if FORMAT_NAME.encode() in data[:64]:
            raise _bad(path, f"corrupt or truncated jace model file ({type(exc).__name__})") from None
        raise _bad(path, "not a jace model file (cannot be decoded)") from None

    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise _bad(path, "not a jace model file (no 'jace-model' header)")
    version = payload.get("version")
    if version != FORMAT_VERSION:
        raise _bad(
            path,
            f"unsupported jace model format version {version!r}; this jace reads version {FORMAT_VERSION}",
        )
    model_type = payload.get("model_type")
    if not isinstance(model_type, str):
        raise _bad(path, "corrupt jace model file: no model_type")

    def _json_field(name: str) -> dict:
        text = payload.get(name)
        if not isinstance(text, str):
            raise _bad(path, f"corrupt jace model file: field {name!r} missing")
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise _bad(path, f"corrupt jace model file: field {name!r} is not valid JSON ({exc})") from None
        if not isinstance(value, dict):
            raise _bad(path, f"corrupt jace model file: field {name!r} is not a JSON object")
        return value

    spec = _json_field("spec")
    metadata = _json_field("metadata")
    raw_arrays = payload.get("arrays")
    if not isinstance(raw_arrays, dict):
        raise _bad(path, "corrupt jace model file: 'arrays' missing")
    arrays = {}
    for name, value in raw_arrays.items():
        if not isinstance(name, str) or not isinstance(value, np.ndarray) or value.dtype.hasobject:
            raise _bad(path, f"corrupt jace model file: entry {name!r} of 'arrays' is not a numeric array")
        arrays[name] = np.array(value, copy=True)  # writable, independent of the file buffer
    return ModelState(model_type, spec, arrays, metadata)


def model_from_state(state: ModelState, path: str = "<model>"):
    """Build the model object of a decoded file."""
    cls = _lookup_model_type(state.model_type)
    if cls is None:
        raise _bad(
            path,
            f"unknown model type {state.model_type!r}; known model types: {', '.join(known_model_types()) or '(none)'}",
        )
    try:
        return cls.from_state(state.spec, state.arrays, state.metadata)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise _bad(path, f"invalid {state.model_type} model: {type(exc).__name__}: {exc}") from None


def load_model(path):
    """Load a model saved by :func:`save_model`.

    Raises ModelFileError (a ValueError) naming ``path`` for a missing file, a file that is not a jace
    model, a truncated or corrupt file, an unknown format version or an unknown model type.
    """
    path = os.fspath(path)
    return model_from_state(load_model_state(path), path)
