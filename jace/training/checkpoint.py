"""Training checkpoints: a safe, versioned, checksummed file format (msgpack, never pickle).

Layout of a ``.ckpt`` file:

  magic        16 bytes  b"JACE-CHECKPOINT\\n"
  header size   8 bytes  little-endian unsigned integer h
  header        h bytes  UTF-8 JSON: {"format": "jace-checkpoint", "format_version": 1,
                         "payload_bytes": n, "payload_sha256": "...", "created": ISO time, ...extra}
  payload       n bytes  msgpack (``flax.serialization``) of a nested dict of arrays and numbers

Files are written atomically (``jace.files.atomic_write_bytes``): a crash while saving leaves the
previous checkpoint in place. Reading checks magic, header, version, length and checksum before
decoding, and every failure raises :class:`CheckpointError` naming the file and what is wrong.

The payload written by the trainer (``jace.training.loop``) holds params, ema_params, opt_state,
step, epoch, the position in the epoch, the RNG key, the best validation loss, the stage-two flag and
the plateau state; ``load_checkpoint_params`` reads the parameters alone, without a template.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import struct
from typing import Any

import jax
import numpy as np
from flax import serialization

from jace.files import atomic_write_bytes

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "CheckpointError",
    "save_checkpoint",
    "read_checkpoint",
    "read_checkpoint_header",
    "restore_checkpoint",
    "load_checkpoint_params",
]

MAGIC = b"JACE-CHECKPOINT\n"
CHECKPOINT_FORMAT_VERSION = 1
_SIZE = struct.Struct("<Q")
_MAX_HEADER = 1 << 24


class CheckpointError(Exception):
    """A checkpoint file is missing, truncated, corrupt, foreign, or does not fit the model."""


def _to_numpy(tree):
    return jax.tree.map(lambda x: np.asarray(x) if hasattr(x, "shape") else x, jax.device_get(tree))


def save_checkpoint(path, tree: Any, header_extra: dict | None = None) -> None:
    """Write ``tree`` (a pytree of arrays/numbers: dicts, lists, NamedTuples such as optax states) to
    ``path`` atomically, with ``header_extra`` (JSON-serialisable) in the header."""
    payload = serialization.msgpack_serialize(serialization.to_state_dict(_to_numpy(tree)))
    header = {
        "format": "jace-checkpoint",
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "payload_bytes": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if header_extra:
        clash = set(header) & set(header_extra)
        if clash:
            raise ValueError(f"header_extra may not set {sorted(clash)}")
        header.update(header_extra)
    head = json.dumps(header, sort_keys=True, allow_nan=False).encode("utf-8")
    atomic_write_bytes(path, MAGIC + _SIZE.pack(len(head)) + head + payload)


def _read_bytes(path) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file") from None
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read checkpoint: {err}") from err


def _parse(path, data: bytes) -> tuple[dict, bytes]:
    if len(data) < len(MAGIC) + _SIZE.size:
        if MAGIC.startswith(data[: len(MAGIC)]) and data:
            raise CheckpointError(f"{path}: truncated checkpoint ({len(data)} bytes, shorter than its header)")
        raise CheckpointError(f"{path}: not a jace checkpoint (file has {len(data)} bytes)")
    if not data.startswith(MAGIC):
        raise CheckpointError(f"{path}: not a jace checkpoint (starts with {data[:16]!r}, expected {MAGIC!r})")
    (h,) = _SIZE.unpack_from(data, len(MAGIC))
    start = len(MAGIC) + _SIZE.size
    if h > _MAX_HEADER:
        raise CheckpointError(f"{path}: corrupt checkpoint header (claims {h} bytes)")
    if start + h > len(data):
        raise CheckpointError(f"{path}: truncated checkpoint (header needs {h} bytes, {len(data) - start} present)")
    try:
        header = json.loads(data[start : start + h].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: corrupt checkpoint header ({err})") from None
    if not isinstance(header, dict) or header.get("format") != "jace-checkpoint":
        found = header.get("format") if isinstance(header, dict) else header
        raise CheckpointError(f"{path}: not a jace checkpoint (header format {found!r})")
    version = header.get("format_version")
    if not isinstance(version, int) or version > CHECKPOINT_FORMAT_VERSION or version < 1:
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r}; this jace reads versions 1 to {CHECKPOINT_FORMAT_VERSION}"
        )
    payload = data[start + h :]
    n = header.get("payload_bytes")
    if not isinstance(n, int):
        raise CheckpointError(f"{path}: corrupt checkpoint header (no payload size)")
    if len(payload) < n:
        raise CheckpointError(f"{path}: truncated checkpoint (payload has {len(payload)} of {n} bytes)")
    if len(payload) > n:
        raise CheckpointError(f"{path}: corrupt checkpoint ({len(payload) - n} unexpected bytes after the payload)")
    if hashlib.sha256(payload).hexdigest() != header.get("payload_sha256"):
        raise CheckpointError(f"{path}: corrupt checkpoint (payload checksum does not match the header)")
    return header, payload


def read_checkpoint_header(path) -> dict:
    """The JSON header of a checkpoint, after checking the whole file."""
    return _parse(path, _read_bytes(path))[0]


def read_checkpoint(path) -> tuple[dict, dict]:
    """(header, payload) of a checkpoint; the payload as nested dicts of NumPy arrays and numbers."""
    header, payload = _parse(path, _read_bytes(path))
    try:
        state = serialization.msgpack_restore(payload)
    except Exception as err:  # msgpack raises many types on corrupt input
        raise CheckpointError(f"{path}: corrupt checkpoint payload ({type(err).__name__}: {err})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: corrupt checkpoint payload (not a mapping)")
    return header, state


def _describe(x) -> str:
    return f"{getattr(x, 'dtype', type(x).__name__)}{list(np.shape(x))}"


def restore_checkpoint(path, template: Any) -> tuple[dict, Any]:
    """(header, tree) with the structure of ``template`` and the values of the checkpoint.

    Raises CheckpointError when the stored tree does not match the template (another model, another
    optimiser) in structure, shapes or dtypes.
    """
    header, state = read_checkpoint(path)
    try:
        tree = serialization.from_state_dict(template, state)
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: checkpoint does not match this model/optimiser: {err}") from None
    want = jax.tree_util.tree_flatten_with_path(template)[0]
    got = jax.tree.leaves(tree)
    if len(want) != len(got):
        raise CheckpointError(f"{path}: checkpoint has {len(got)} arrays, this model/optimiser {len(want)}")
    for (kp, w), g in zip(want, got):
        if np.shape(w) != np.shape(g) or (hasattr(w, "dtype") and np.dtype(w.dtype) != np.asarray(g).dtype):
            raise CheckpointError(
                f"{path}: checkpoint does not match this model/optimiser at {jax.tree_util.keystr(kp)}: "
                f"stored {_describe(g)}, expected {_describe(w)}"
            )
    return header, tree


def load_checkpoint_params(path, which: str = "ema_params"):
    """The parameters stored in a trainer checkpoint (``"ema_params"`` or ``"params"``), as nested dicts
    of NumPy arrays, without needing the model to build a template."""
    _, state = read_checkpoint(path)
    if which not in state:
        raise CheckpointError(f"{path}: checkpoint has no {which!r} (has {sorted(state)})")
    return state[which]


def checkpoint_exists(path) -> bool:
    return os.path.isfile(path)
