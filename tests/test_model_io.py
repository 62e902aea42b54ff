"""Model files: round trip, and clear errors for anything that is not an intact jace model."""

import os

import numpy as np
import pytest

from jace.models import io as mio
from jace.models.io import ModelFileError, load_model, register_model_type, save_model


class DummyModel:
    model_type = "dummy_test_model"

    def __init__(self, spec, arrays, metadata=None):
        self.spec = spec
        self.arrays = arrays
        self.metadata = metadata or {}

    def to_state(self):
        return self.spec, self.arrays, self.metadata

    @classmethod
    def from_state(cls, spec, arrays, metadata):
        if "coefficients" not in arrays:
            raise KeyError("coefficients")
        return cls(spec, arrays, metadata)


register_model_type(DummyModel.model_type, DummyModel)


def _model():
    rng = np.random.default_rng(0)
    return DummyModel(
        spec={"elements": ["Cu", "Au"], "cutoff": 5.0, "max_degree": [12.0, 10.0]},
        arrays={
            "coefficients": rng.standard_normal((2, 17)),
            "e0": np.array([-0.1234567890123456789, 1e-300]),
            "index": np.arange(12, dtype=np.int32).reshape(3, 4),
            "mask": np.array([True, False, True]),
            "single": rng.standard_normal(5).astype(np.float32),
            "scalar": np.float64(np.pi),
            "empty": np.zeros((0, 3)),
        },
        metadata={"fit": {"lam": 1e-3, "n_basis": 17}, "note": "ünïcode"},
    )


def test_round_trip_is_bit_exact(tmp_path):
    model = _model()
    path = tmp_path / "m.jace"
    save_model(path, model)
    back = load_model(path)
    assert isinstance(back, DummyModel)
    assert back.spec == model.spec and back.metadata == model.metadata
    assert set(back.arrays) == set(model.arrays)
    for name, a in model.arrays.items():
        a = np.asarray(a)
        b = back.arrays[name]
        assert b.dtype == a.dtype and b.shape == a.shape, name
        assert a.tobytes() == b.tobytes(), name
    back.arrays["coefficients"][0, 0] = 1.0  # loaded arrays are ordinary writable arrays
    assert [p.name for p in tmp_path.iterdir()] == ["m.jace"]


def test_overwrite_replaces(tmp_path):
    path = tmp_path / "m.jace"
    save_model(path, _model())
    m2 = DummyModel({"v": 2}, {"coefficients": np.ones(3)})
    save_model(path, m2)
    assert load_model(path).spec == {"v": 2}


def _expect_error(path, match):
    with pytest.raises(ModelFileError) as info:
        load_model(path)
    msg = str(info.value)
    assert str(path) in msg, msg
    assert match in msg, msg
    return msg


def test_missing_file(tmp_path):
    _expect_error(tmp_path / "absent.jace", "not found")


def test_truncated_file(tmp_path):
    path = tmp_path / "m.jace"
    save_model(path, _model())
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 1, 20):
        path.write_bytes(data[:cut])
        _expect_error(path, "corrupt or truncated")


def test_random_bytes_text_and_extxyz_are_not_models(tmp_path):
    rng = np.random.default_rng(1)
    for i in range(5):
        path = tmp_path / f"random{i}.jace"
        path.write_bytes(rng.integers(0, 256, size=300, dtype=np.uint8).tobytes())
        _expect_error(path, "not a jace model")
    text = tmp_path / "notes.txt"
    text.write_text("this is a plain text file\nwith two lines\n")
    _expect_error(text, "not a jace model")
    xyz = tmp_path / "structure.xyz"
    xyz.write_text('2\nLattice="4 0 0 0 4 0 0 0 4" Properties=species:S:1:pos:R:3 energy=-1.0 pbc="T T T"\nCu 0 0 0\nAu 2 2 2\n')
    _expect_error(xyz, "not a jace model")
    empty = tmp_path / "empty.jace"
    empty.write_bytes(b"")
    _expect_error(empty, "empty file")


def test_other_msgpack_is_not_a_model(tmp_path):
    from flax.serialization import msgpack_serialize

    path = tmp_path / "params.msgpack"
    path.write_bytes(msgpack_serialize({"params": {"w": np.ones(3)}}))
    _expect_error(path, "not a jace model")


def _payload_file(tmp_path, **changes):
    from flax.serialization import msgpack_restore, msgpack_serialize

    path = tmp_path / "m.jace"
    save_model(path, _model())
    payload = msgpack_restore(path.read_bytes())
    payload.update(changes)
    path.write_bytes(msgpack_serialize(payload))
    return path


def test_unknown_version(tmp_path):
    msg = _expect_error(_payload_file(tmp_path, version=2), "unsupported jace model format version 2")
    assert "version 1" in msg


def test_unknown_model_type_lists_known(tmp_path):
    msg = _expect_error(_payload_file(tmp_path, model_type="no_such_model"), "unknown model type 'no_such_model'")
    assert "dummy_test_model" in msg and "linear_ace" in msg


def test_corrupt_fields(tmp_path):
    _expect_error(_payload_file(tmp_path, spec="{not json"), "not valid JSON")
    _expect_error(_payload_file(tmp_path, arrays={"coefficients": "text"}), "not a numeric array")
    # from_state failing on the content is reported against the file too
    _expect_error(_payload_file(tmp_path, arrays={"other": np.ones(2)}), "invalid dummy_test_model model")


def test_failed_save_leaves_target_untouched(tmp_path):
    path = tmp_path / "m.jace"
    save_model(path, _model())
    before = path.read_bytes()

    bad = DummyModel({"v": 1}, {"coefficients": np.array([object(), 1], dtype=object)})
    with pytest.raises(ValueError, match="coefficients"):
        save_model(path, bad)
    bad_spec = DummyModel({"v": object()}, {"coefficients": np.ones(2)})
    with pytest.raises(ValueError, match="spec"):
        save_model(path, bad_spec)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jace"]


def test_crash_while_writing_leaves_target_untouched(tmp_path, monkeypatch):
    path = tmp_path / "m.jace"
    save_model(path, _model())
    before = path.read_bytes()

    def boom(src, dst):
        # the temporary file is complete at this point; fail before it replaces the target
        assert os.path.getsize(src) > 0
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(mio.os, "replace", boom)
    with pytest.raises(OSError, match="simulated"):
        save_model(path, DummyModel({"v": 2}, {"coefficients": np.ones(1000)}))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jace"]
    assert load_model(path).spec == _model().spec


def test_non_model_cannot_be_saved(tmp_path):
    with pytest.raises(TypeError, match="not a jace model"):
        save_model(tmp_path / "x.jace", object())
    assert not (tmp_path / "x.jace").exists()


def test_linear_ace_type_is_found_lazily():
    pytest.importorskip("jace.models.linear_ace")
    cls = mio._lookup_model_type("linear_ace")
    assert cls is not None and cls.model_type == "linear_ace" and hasattr(cls, "from_state")
