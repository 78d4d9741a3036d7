"""safetensors_stream checked against the real safetensors library (files it writes, files it reads back)."""

from __future__ import annotations

import io
import json
import os
import struct
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open

from vocabsurgeon.errors import CheckpointFormatError, OutputExistsError, UnsupportedCheckpointError
from vocabsurgeon.formats import safetensors_stream as sts
from vocabsurgeon.formats.weights import TensorEdit, decode, encode

TORCH_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def raw_header(path: Path) -> bytes:
    data = path.read_bytes()
    return data[: 8 + struct.unpack("<Q", data[:8])[0]]


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    return tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""


def bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and tensor_bytes(a) == tensor_bytes(b)


def library_rejects(path: Path) -> bool:
    try:
        with safe_open(str(path), "np") as file:
            names = file.keys()
            for name in names:
                file.get_slice(name)
    except Exception:
        return True
    return False


@pytest.fixture
def mixed_file(tmp_path: Path) -> Path:
    """A file with every dtype numpy can write, an empty tensor, a scalar and metadata."""
    rng = np.random.default_rng(0)
    tensors: dict[str, np.ndarray] = {
        "embed.weight": rng.standard_normal((7, 5)).astype(np.float32),
        "half": rng.standard_normal((4, 3)).astype(np.float16),
        "double": rng.standard_normal((3,)).astype(np.float64),
        "ids": np.arange(6, dtype=np.int64).reshape(2, 3),
        "i32": np.arange(5, dtype=np.int32),
        "i8": np.arange(-3, 3, dtype=np.int8),
        "u8": np.arange(9, dtype=np.uint8).reshape(3, 3),
        "mask": np.array([True, False, True]),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "scalar": np.array(3.5, dtype=np.float32),
        "ünï.cödé": np.ones((2,), dtype=np.float32),
    }
    path = tmp_path / "mixed.safetensors"
    safetensors.numpy.save_file(tensors, str(path), metadata={"format": "np", "nötë": 'quote " and \n newline'})
    return path


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    """A small model-like checkpoint with F32, F16 and BF16 embeddings, a bias and untouched tensors."""
    torch.manual_seed(0)
    tensors = {
        "embed_f32": torch.randn(6, 4),
        "embed_f16": torch.randn(5, 3).to(torch.float16),
        "embed_bf16": torch.randn(6, 8).to(torch.bfloat16),
        "bias": torch.randn(6),
        "layer.weight": torch.randn(4, 4).to(torch.bfloat16),
        "positions": torch.arange(10, dtype=torch.int64),
        "scale": torch.tensor(2.0, dtype=torch.float64),
    }
    path = tmp_path / "model.safetensors"
    safetensors.torch.save_file(tensors, str(path), metadata={"format": "pt", "author": "tests"})
    return path


# ------------------------------------------------------------------------------------------------ header


@pytest.mark.parametrize("fixture", ["mixed_file", "model_file"])
def test_header_agrees_with_library(fixture: str, request: pytest.FixtureRequest) -> None:
    path: Path = request.getfixturevalue(fixture)
    specs = sts.read_tensor_specs(path)
    with safe_open(str(path), "np") as file:
        names = file.keys()
        expected = {name: (file.get_slice(name).get_dtype(), tuple(file.get_slice(name).get_shape())) for name in names}
        metadata = file.metadata()
    assert {name: (spec.dtype, spec.shape) for name, spec in specs.items()} == expected
    header = sts.read_header(path)
    assert header.metadata == metadata
    assert header.file_size == path.stat().st_size
    assert header.data_start == len(raw_header(path))
    assert [entry.begin for entry in header.entries] == sorted(entry.begin for entry in header.entries)


@pytest.mark.parametrize("fixture", ["mixed_file", "model_file"])
def test_dump_header_reproduces_library_bytes(fixture: str, request: pytest.FixtureRequest) -> None:
    path: Path = request.getfixturevalue(fixture)
    header = sts.read_header(path)
    assert sts.dump_header(header.entries, header.metadata) == raw_header(path)


def test_dump_header_without_metadata_matches_library(tmp_path: Path) -> None:
    path = tmp_path / "plain.safetensors"
    safetensors.numpy.save_file({"a": np.zeros((3,), np.float16)}, str(path))
    header = sts.read_header(path)
    assert header.metadata is None
    dumped = sts.dump_header(header.entries, None)
    assert dumped == raw_header(path)
    assert len(dumped) % 8 == 0


def test_read_header_reads_no_data(mixed_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    read: list[int] = []

    class CountingFile(io.FileIO):
        def readinto(self, buffer: bytearray | memoryview) -> int | None:  # type: ignore[override]
            count = super().readinto(buffer)
            read.append(count or 0)
            return count

    def counting_open(path: str | Path, mode: str = "r", buffering: int = -1) -> CountingFile:
        # unbuffered reading is part of the contract: a buffered reader would read ahead into the data
        assert (mode, buffering) == ("rb", 0)
        return CountingFile(path, "rb")

    with monkeypatch.context() as patch:
        patch.setattr("builtins.open", counting_open)
        header = sts.read_header(mixed_file)
    assert sum(read) == header.data_start < header.file_size


# ------------------------------------------------------------------------------------------------ corrupt files


def _write_raw(path: Path, header: bytes | dict[str, object], data: bytes, length: int | None = None) -> Path:
    text = header if isinstance(header, bytes) else json.dumps(header, separators=(",", ":")).encode()
    path.write_bytes(struct.pack("<Q", len(text) if length is None else length) + text + data)
    return path


def _tensor(begin: int, end: int, shape: list[int], dtype: str = "F32") -> dict[str, object]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def test_truncated_file_is_named_and_called_truncated(model_file: Path) -> None:
    data = model_file.read_bytes()
    model_file.write_bytes(data[:-10])
    assert library_rejects(model_file)
    with pytest.raises(CheckpointFormatError) as raised:
        sts.read_header(model_file)
    assert str(model_file) in str(raised.value)
    assert "truncated" in str(raised.value)
    assert raised.value.path == model_file


CORRUPT: dict[str, tuple[bytes | dict[str, object], bytes, int | None]] = {
    "not json": (b"this is not json at all!", b"", None),
    "length beyond file": ({"a": _tensor(0, 8, [2])}, b"\0" * 8, 10**6),
    "gap": ({"a": _tensor(4, 12, [2])}, b"\0" * 12, None),
    "overlap": ({"a": _tensor(0, 4, [1]), "b": _tensor(0, 4, [1])}, b"\0" * 4, None),
    "size mismatch": ({"a": _tensor(0, 8, [3])}, b"\0" * 8, None),
    "trailing data": ({"a": _tensor(0, 8, [2])}, b"\0" * 10, None),
    "unknown dtype": ({"a": _tensor(0, 8, [2], "F33")}, b"\0" * 8, None),
    "missing offsets": ({"a": {"dtype": "F32", "shape": [2]}}, b"\0" * 8, None),
    "negative dim": ({"a": _tensor(0, 8, [-2])}, b"\0" * 8, None),
    "float offset": (b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0.0,8]}}', b"\0" * 8, None),
    "three offsets": ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8, 8]}}, b"\0" * 8, None),
    "metadata not strings": ({"__metadata__": {"a": 1}, "a": _tensor(0, 8, [2])}, b"\0" * 8, None),
    "array header": (b"[]", b"", None),
    "invalid utf-8": (b'{"\xff":1}', b"", None),
    "trailing junk": (b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}x', b"\0" * 8, None),
    "NaN constant": (b'{"a":{"dtype":"F32","shape":[NaN],"data_offsets":[0,8]}}', b"\0" * 8, None),
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_corrupt_files_are_rejected_like_the_library(case: str, tmp_path: Path) -> None:
    header, data, length = CORRUPT[case]
    path = _write_raw(tmp_path / "bad.safetensors", header, data, length)
    assert library_rejects(path)
    with pytest.raises(CheckpointFormatError) as raised:
        sts.read_header(path)
    assert str(path) in str(raised.value)


def test_too_short_file(tmp_path: Path) -> None:
    path = tmp_path / "tiny.safetensors"
    path.write_bytes(b"\x01\x00\x00")
    assert library_rejects(path)
    with pytest.raises(CheckpointFormatError, match=r"tiny\.safetensors"):
        sts.read_header(path)


def test_dtype_known_to_library_only_is_unsupported(tmp_path: Path) -> None:
    path = _write_raw(tmp_path / "u32.safetensors", {"a": _tensor(0, 8, [2], "U32")}, b"\0" * 8)
    assert not library_rejects(path)
    with pytest.raises(UnsupportedCheckpointError, match="U32"):
        sts.read_header(path)


ODD_BUT_VALID: dict[str, tuple[bytes | dict[str, object], bytes]] = {
    "unpadded": ({"a": _tensor(0, 8, [2])}, b"\0" * 8),
    "leading space": (b' {"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', b"\0" * 8),
    "keys not in offset order": ({"b": _tensor(4, 8, [1]), "a": _tensor(0, 4, [1])}, b"\0" * 8),
    "extra field": ({"a": {**_tensor(0, 8, [2]), "extra": 1}}, b"\0" * 8),
    "null metadata": ({"__metadata__": None, "a": _tensor(0, 8, [2])}, b"\0" * 8),
    "no tensors": ({}, b""),
}


@pytest.mark.parametrize("case", sorted(ODD_BUT_VALID))
def test_odd_but_valid_files_are_accepted_like_the_library(case: str, tmp_path: Path) -> None:
    header, data = ODD_BUT_VALID[case]
    path = _write_raw(tmp_path / "odd.safetensors", header, data)
    assert not library_rejects(path)
    header_ = sts.read_header(path)
    with safe_open(str(path), "np") as file:
        assert sorted(header_.specs()) == sorted(file.keys())
        # the library lists tensors by offset too
        assert list(header_.specs()) == list(file.offset_keys())


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.safetensors"):
        sts.read_header(tmp_path / "nope.safetensors")


# ------------------------------------------------------------------------------------------------ reading rows


@pytest.mark.parametrize("name", ["embed_f32", "embed_f16", "embed_bf16", "bias"])
def test_read_rows_matches_library(model_file: Path, name: str) -> None:
    expected = safetensors.torch.load_file(str(model_file))[name].float().numpy()
    rows = [3, 0, 4, 3]
    got = sts.read_rows(model_file, name, rows)
    assert got.dtype == np.float32
    assert got.shape == (4, *expected.shape[1:])
    np.testing.assert_array_equal(got, expected[rows])
    assert sts.read_rows(model_file, name, []).shape == (0, *expected.shape[1:])


def test_read_rows_rejects_bad_requests(model_file: Path) -> None:
    with pytest.raises(IndexError):
        sts.read_rows(model_file, "embed_f32", [6])
    with pytest.raises(IndexError):
        sts.read_rows(model_file, "embed_f32", [-1])
    with pytest.raises(KeyError):
        sts.read_rows(model_file, "nope", [0])
    with pytest.raises(ValueError, match="I64"):
        sts.read_rows(model_file, "positions", [0])


@pytest.mark.parametrize("name", ["embed_f32", "embed_f16", "embed_bf16", "bias", "layer.weight"])
@pytest.mark.parametrize("exclude", [(), (0,), (3, 1)])
def test_read_row_mean_matches_library(model_file: Path, name: str, exclude: tuple[int, ...]) -> None:
    loaded = safetensors.torch.load_file(str(model_file))[name].double().numpy()
    keep = [row for row in range(loaded.shape[0]) if row not in exclude]
    expected = loaded[keep].mean(axis=0)
    got = sts.read_row_mean(model_file, name, exclude)
    assert got.dtype == np.float32
    assert got.shape == loaded.shape[1:]
    np.testing.assert_allclose(got, expected.astype(np.float32), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", ["F32", "BF16"])
def test_read_row_mean_streams_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dtype: str) -> None:
    torch.manual_seed(1)
    tensor = torch.randn(103, 16).to(TORCH_DTYPES[dtype])
    path = tmp_path / "big.safetensors"
    safetensors.torch.save_file({"w": tensor}, str(path))
    # 7 rows per chunk, so excluded rows fall at chunk starts, ends and middles
    monkeypatch.setattr(sts, "CHUNK_BYTES", 7 * tensor[0].numel() * tensor.element_size())
    exclude = {0, 6, 7, 13, 50, 102}
    loaded = tensor.double().numpy()
    expected = loaded[[row for row in range(103) if row not in exclude]].mean(axis=0)
    np.testing.assert_allclose(sts.read_row_mean(path, "w", exclude), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", ["F32", "F16", "BF16"])
def test_read_row_mean_ignores_nan_and_inf_in_excluded_rows(tmp_path: Path, dtype: str) -> None:
    tensor = torch.randn(9, 4).to(TORCH_DTYPES[dtype])
    tensor[2] = float("nan")
    tensor[7] = float("inf")
    path = tmp_path / "bad_rows.safetensors"
    safetensors.torch.save_file({"w": tensor}, str(path))
    expected = tensor.double().numpy()[[0, 1, 3, 4, 5, 6, 8]].mean(axis=0)
    np.testing.assert_allclose(sts.read_row_mean(path, "w", {2, 7}), expected, rtol=1e-6, atol=1e-7)


def test_read_row_mean_rejects_bad_requests(model_file: Path) -> None:
    with pytest.raises(ValueError, match="no rows"):
        sts.read_row_mean(model_file, "bias", range(6))
    with pytest.raises(IndexError):
        sts.read_row_mean(model_file, "bias", [6])


# ------------------------------------------------------------------------------------------------ bf16 conversion


@settings(max_examples=300)
@given(st.lists(st.floats(width=32, allow_nan=True, allow_infinity=True), min_size=1, max_size=64))
def test_bf16_encode_matches_torch(values: list[float]) -> None:
    array = np.array(values, dtype=np.float32)
    expected = torch.from_numpy(array).to(torch.bfloat16).view(torch.int16).numpy().view("<u2")
    got = np.frombuffer(encode(array, "BF16"), dtype="<u2")
    finite = ~np.isnan(array)
    np.testing.assert_array_equal(got[finite], expected[finite])
    # NaN keeps being NaN (torch may keep the sign bit; we write the canonical quiet NaN)
    assert np.isnan(decode(got[~finite].tobytes(), "BF16")).all()


@settings(max_examples=300)
@given(st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=64))
def test_bf16_decode_matches_torch(bits: list[int]) -> None:
    raw = np.array(bits, dtype="<u2")
    expected = torch.from_numpy(raw.view(np.int16)).view(torch.bfloat16).float().numpy()
    got = decode(raw.tobytes(), "BF16")
    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))


# ------------------------------------------------------------------------------------------------ writing


def _grow_edits(model: dict[str, torch.Tensor], rng: np.random.Generator) -> dict[str, TensorEdit]:
    edits = {}
    for name, grow, overwrite in [
        ("embed_f32", 3, (1,)),
        ("embed_f16", 2, ()),
        ("embed_bf16", 4, (0, 5)),
        ("bias", 3, (2,)),
    ]:
        old = model[name].shape[0]
        indices = (*overwrite, *range(old, old + grow))
        values = rng.standard_normal((len(indices), *model[name].shape[1:])).astype(np.float32)
        edits[name] = TensorEdit(new_rows=old + grow, indices=indices, values=values)
    return edits


def _reference(model_file: Path, tmp_path: Path, seed: int) -> tuple[dict[str, TensorEdit], Path]:
    """Growing edits of ``model_file`` and the file write_edited makes of them with the default settings."""
    edits = _grow_edits(safetensors.torch.load_file(str(model_file)), np.random.default_rng(seed))
    reference = tmp_path / f"reference-{seed}.safetensors"
    sts.write_edited(model_file, reference, edits)
    return edits, reference


def test_write_edited_grows_tensors(model_file: Path, tmp_path: Path) -> None:
    source = safetensors.torch.load_file(str(model_file))
    edits = _grow_edits(source, np.random.default_rng(2))
    out = tmp_path / "out.safetensors"
    written: list[int] = []
    sts.write_edited(model_file, out, edits, progress=written.append)

    result = safetensors.torch.load_file(str(out))
    assert list(result) == list(source)
    for name, tensor in source.items():
        edit = edits.get(name)
        if edit is None:
            assert torch.equal(result[name], tensor)
            assert bits_equal(result[name], tensor)
            continue
        old = tensor.shape[0]
        assert result[name].shape == (edit.new_rows, *tensor.shape[1:])
        assert result[name].dtype == tensor.dtype
        expected = torch.cat([tensor, torch.zeros((edit.new_rows - old, *tensor.shape[1:]), dtype=tensor.dtype)])
        expected[list(edit.indices)] = torch.from_numpy(edit.values).to(tensor.dtype)
        assert bits_equal(result[name], expected)
        untouched = [row for row in range(old) if row not in edit.indices]
        assert bits_equal(result[name][untouched], tensor[untouched])

    with safe_open(str(out), "np") as file:
        assert file.metadata() == {"format": "pt", "author": "tests"}
    assert sum(written) == out.stat().st_size
    assert all(0 < count <= sts.CHUNK_BYTES for count in written)


def test_write_edited_bytes_outside_edited_tensors_unchanged(model_file: Path, tmp_path: Path) -> None:
    source = safetensors.torch.load_file(str(model_file))
    edits = _grow_edits(source, np.random.default_rng(3))
    out = tmp_path / "out.safetensors"
    sts.write_edited(model_file, out, edits)
    before, after = sts.read_header(model_file), sts.read_header(out)
    old_bytes, new_bytes = model_file.read_bytes(), out.read_bytes()
    for old, new in zip(before.entries, after.entries, strict=True):
        assert old.spec.name == new.spec.name
        old_data = old_bytes[before.data_start + old.begin : before.data_start + old.end]
        new_data = new_bytes[after.data_start + new.begin : after.data_start + new.end]
        edit = edits.get(old.spec.name)
        if edit is None:
            assert new_data == old_data
        else:
            row = old.spec.row_bytes
            kept_rows = [r for r in range(old.spec.shape[0]) if r not in edit.indices]
            for r in kept_rows:
                assert new_data[r * row : (r + 1) * row] == old_data[r * row : (r + 1) * row]
    assert after.metadata == before.metadata


def test_overwrite_only_changes_just_those_rows(model_file: Path, tmp_path: Path) -> None:
    rows = {"embed_f32": (0, 2, 3), "embed_bf16": (5,), "bias": (4, 1)}
    header = sts.read_header(model_file)
    specs = header.specs()
    edits = {
        name: TensorEdit(
            new_rows=specs[name].shape[0],
            indices=indices,
            values=np.full((len(indices), *specs[name].shape[1:]), 100.0 + i, dtype=np.float32),
        )
        for i, (name, indices) in enumerate(rows.items())
    }
    out = tmp_path / "out.safetensors"
    sts.write_edited(model_file, out, edits)

    old_bytes, new_bytes = model_file.read_bytes(), out.read_bytes()
    assert len(new_bytes) == len(old_bytes)
    assert raw_header(out) == raw_header(model_file)
    allowed = np.zeros(len(old_bytes), dtype=bool)
    for name, indices in rows.items():
        entry = header.entry(name)
        for r in indices:
            start = header.data_start + entry.begin + r * entry.spec.row_bytes
            allowed[start : start + entry.spec.row_bytes] = True
    differ = np.frombuffer(old_bytes, np.uint8) != np.frombuffer(new_bytes, np.uint8)
    assert differ.any()
    assert not (differ & ~allowed).any()

    result = safetensors.torch.load_file(str(out))
    for i, (name, indices) in enumerate(rows.items()):
        assert (result[name][list(indices)].float() == 100.0 + i).all()


def test_empty_edits_copy_identical_bytes(mixed_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.safetensors"
    sts.write_edited(mixed_file, out, {})
    assert out.read_bytes() == mixed_file.read_bytes()


@pytest.mark.parametrize("how", ["raises", "missing"])
def test_copy_falls_back_without_copy_file_range(
    model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    edits, normal = _reference(model_file, tmp_path, 4)
    attempts: list[int] = []

    def unsupported(*args: object, **kwargs: object) -> int:
        attempts.append(1)
        raise OSError(18, "Invalid cross-device link")

    fallback, copy = tmp_path / "fallback.safetensors", tmp_path / "copy.safetensors"
    with monkeypatch.context() as patch:
        if how == "raises":
            patch.setattr(os, "copy_file_range", unsupported)
        else:
            patch.delattr(os, "copy_file_range", raising=False)
        sts.write_edited(model_file, fallback, edits)
        sts.write_edited(model_file, copy, {})
    assert (how == "raises") == bool(attempts)
    assert fallback.read_bytes() == normal.read_bytes()
    assert copy.read_bytes() == model_file.read_bytes()


def test_progress_moves_in_bounded_steps(model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sts, "CHUNK_BYTES", 16)
    monkeypatch.setattr(sts, "COPY_JOB_BYTES", 16)
    written: list[int] = []
    out = tmp_path / "out.safetensors"
    source = safetensors.torch.load_file(str(model_file))
    sts.write_edited(model_file, out, _grow_edits(source, np.random.default_rng(5)), progress=written.append)
    assert sum(written) == out.stat().st_size
    header_size = sts.read_header(out).data_start
    assert max(written) <= max(16, header_size)
    assert len(written) > out.stat().st_size // 16 // 2


def test_write_edited_refuses_existing_symlink_and_source(model_file: Path, tmp_path: Path) -> None:
    existing = tmp_path / "existing.safetensors"
    existing.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError):
        sts.write_edited(model_file, existing, {})
    assert existing.read_bytes() == b"keep me"

    target = tmp_path / "target.safetensors"
    link = tmp_path / "link.safetensors"
    link.symlink_to(target)
    with pytest.raises(OutputExistsError, match="symlink"):
        sts.write_edited(model_file, link, {})
    assert not target.exists()

    with pytest.raises(OutputExistsError, match="source"):
        sts.write_edited(model_file, model_file, {})
    with pytest.raises(OutputExistsError, match="source"):
        sts.write_edited(model_file, tmp_path / ".." / tmp_path.name / model_file.name, {})


def test_write_edited_checks_edits_before_creating_output(model_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.safetensors"
    with pytest.raises(ValueError, match="no tensor named nope"):
        sts.write_edited(model_file, out, {"nope": TensorEdit(new_rows=1)})
    with pytest.raises(ValueError, match="have no values"):
        sts.write_edited(model_file, out, {"embed_f32": TensorEdit(new_rows=7)})
    with pytest.raises(ValueError, match="I64"):
        sts.write_edited(model_file, out, {"positions": TensorEdit(new_rows=11, indices=(10,), values=np.zeros(1))})
    assert not out.exists()


def test_failed_write_removes_partial_output(model_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.safetensors"

    def interrupt(count: int) -> None:
        raise KeyboardInterrupt

    source = safetensors.torch.load_file(str(model_file))
    with pytest.raises(KeyboardInterrupt):
        sts.write_edited(model_file, out, _grow_edits(source, np.random.default_rng(6)), progress=interrupt)
    assert not out.exists()


# ------------------------------------------------------------------------------------------------ property test

shapes = st.lists(st.integers(0, 5), min_size=1, max_size=3).map(tuple)
tensor_specs = st.dictionaries(
    st.text(alphabet="abcdefgh._", min_size=1, max_size=6),
    st.tuples(st.sampled_from(sorted(TORCH_DTYPES)), shapes | st.just(())),
    min_size=1,
    max_size=4,
)


@st.composite
def edit_cases(draw: st.DrawFn) -> tuple[dict[str, torch.Tensor], str, TensorEdit]:
    specs = draw(tensor_specs)
    candidates = sorted(name for name, (_, shape) in specs.items() if shape)
    if not candidates:
        name = "extra"
        specs[name] = ("F32", (2, 3))
    else:
        name = draw(st.sampled_from(candidates))
    seed = draw(st.integers(0, 2**32 - 1))
    generator = torch.Generator().manual_seed(seed)
    tensors = {
        key: torch.randn(shape, generator=generator, dtype=torch.float64).to(TORCH_DTYPES[dtype])
        for key, (dtype, shape) in specs.items()
    }
    old = tensors[name].shape[0]
    grow = draw(st.integers(0, 3))
    overwrite = draw(st.lists(st.integers(0, max(0, old - 1)), unique=True, max_size=old))
    appended = list(range(old, old + grow))
    indices = tuple(draw(st.permutations(overwrite + appended)))
    values = np.random.default_rng(seed).standard_normal((len(indices), *tensors[name].shape[1:])).astype(np.float32)
    return tensors, name, TensorEdit(new_rows=old + grow, indices=indices, values=values)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edit_cases())
def test_random_edit_matches_torch_expectation(case: tuple[dict[str, torch.Tensor], str, TensorEdit]) -> None:
    tensors, name, edit = case
    with tempfile.TemporaryDirectory() as directory:
        src, dst = Path(directory) / "src.safetensors", Path(directory) / "dst.safetensors"
        safetensors.torch.save_file(tensors, str(src), metadata={"k": "v"})
        sts.write_edited(src, dst, {name: edit})
        result = safetensors.torch.load_file(str(dst))
        with safe_open(str(dst), "np") as file:
            assert file.metadata() == {"k": "v"}
        if edit.new_rows == tensors[name].shape[0]:
            assert raw_header(dst) == raw_header(src)

    original = tensors[name]
    extra = torch.zeros((edit.new_rows - original.shape[0], *original.shape[1:]), dtype=original.dtype)
    expected = torch.cat([original, extra])
    if edit.indices:
        expected[list(edit.indices)] = torch.from_numpy(edit.values).to(original.dtype)
    assert set(result) == set(tensors)
    assert bits_equal(result[name], expected)
    for key, tensor in tensors.items():
        if key != name:
            assert bits_equal(result[key], tensor)


def test_a_full_disk_is_not_mistaken_for_a_missing_copy_file_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno as errno_module

    source = tmp_path / "src.bin"
    source.write_bytes(b"x" * 1000)

    def full(*_: object) -> int:
        raise OSError(errno_module.ENOSPC, "No space left on device")

    monkeypatch.setattr(sts.os, "copy_file_range", full)
    with (
        open(source, "rb") as src,
        open(tmp_path / "dst.bin", "wb") as dst,
        pytest.raises(OSError, match="No space left") as raised,
    ):
        sts.copy_range(src.fileno(), dst.fileno(), 0, 1000, dst_offset=0)
    assert raised.value.errno == errno_module.ENOSPC


@pytest.mark.parametrize("streams", [1, 8])
def test_copy_streams_write_the_same_bytes(
    model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, streams: int
) -> None:
    """Jobs finish in any order, each at its own offset: many small jobs on many threads give the same file."""
    edits, reference = _reference(model_file, tmp_path, 6)
    monkeypatch.setattr(sts, "COPY_JOB_BYTES", 4096)
    monkeypatch.setattr(sts, "COPY_STREAMS", streams)
    out = tmp_path / "out.safetensors"
    sts.write_edited(model_file, out, edits)
    assert out.read_bytes() == reference.read_bytes()
    unchanged = tmp_path / "unchanged.safetensors"
    sts.write_edited(model_file, unchanged, {})
    assert unchanged.read_bytes() == model_file.read_bytes()


def test_placeholder_rows_then_write_rows_equals_one_pass(model_file: Path, tmp_path: Path) -> None:
    """What a surgery does: copy with placeholder rows first, compute the rows, write them in place."""
    edits, one_pass = _reference(model_file, tmp_path, 7)
    placeholders = {
        name: TensorEdit(edit.new_rows, edit.indices, np.broadcast_to(np.float32(0), edit.values.shape), edit.axis)
        for name, edit in edits.items()
    }
    two_pass = tmp_path / "two.safetensors"
    sts.write_edited(model_file, two_pass, placeholders)
    assert two_pass.read_bytes() != one_pass.read_bytes()
    sts.write_rows(two_pass, edits)
    assert two_pass.read_bytes() == one_pass.read_bytes()


def test_write_rows_refuses_a_file_of_another_shape(model_file: Path, tmp_path: Path) -> None:
    source = safetensors.torch.load_file(str(model_file))
    edits = _grow_edits(source, np.random.default_rng(8))
    copy = tmp_path / "copy.safetensors"
    sts.write_edited(model_file, copy, {})
    before = copy.read_bytes()
    with pytest.raises(ValueError, match="rows"):
        sts.write_rows(copy, edits)
    assert copy.read_bytes() == before


def test_a_cancelled_write_starts_no_range_and_leaves_no_file(model_file: Path, tmp_path: Path) -> None:
    cancel = threading.Event()
    cancel.set()
    out = tmp_path / "out.safetensors"
    with pytest.raises(sts.Cancelled):
        sts.write_edited(model_file, out, {}, cancel=cancel)
    assert not out.exists()
