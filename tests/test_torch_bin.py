"""torch_bin against the real torch.save / torch.load / transformers: specs without torch, reads, edits, refusals."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vocabsurgeon.errors import (
    CheckpointFormatError,
    CheckpointNotFoundError,
    OutputExistsError,
    UnsupportedCheckpointError,
)
from vocabsurgeon.formats import torch_bin
from vocabsurgeon.formats.weights import TensorEdit

REPO_ROOT = Path(__file__).resolve().parents[1]

DTYPE_NAMES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2",
}


def torch_specs(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    return {name: (DTYPE_NAMES[tensor.dtype], tuple(tensor.shape)) for name, tensor in loaded.items()}


def our_specs(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    return {name: (spec.dtype, spec.shape) for name, spec in torch_bin.read_tensor_specs(path).items()}


def mixed_state() -> dict[str, torch.Tensor]:
    """Every kind of entry the reader must get right: dtypes, ranks, ties, views, parameters, empties."""
    generator = torch.Generator().manual_seed(0)
    embed = torch.randn(10, 4, generator=generator)
    base = torch.randn(6, 3, generator=generator)
    return {
        "embed.weight": embed,
        "head.weight": embed,  # tied: the very same tensor
        "half.weight": torch.randn(5, 3, generator=generator).half(),
        "bf16.weight": torch.randn(7, 2, generator=generator).bfloat16(),
        "bias": torch.randn(10, generator=generator),
        "position_ids": torch.arange(12, dtype=torch.int64),
        "rows_view": base[2:],  # storage offset 6
        "column_view": base[:, 1],  # strided
        "param": torch.nn.Parameter(torch.ones(3)),
        "scalar": torch.tensor(2.5, dtype=torch.float64),
        "empty": torch.zeros(0, 4),
        "mask": torch.tensor([True, False]),
    }


def tiny_bert(vocab_size: int = 99):
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37
    )
    return BertForMaskedLM(config).eval()


@pytest.fixture(scope="module")
def bert_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bert") / "pytorch_model.bin"
    torch.save(tiny_bert().state_dict(), path)
    return path


@pytest.fixture
def mixed_bin(tmp_path: Path) -> Path:
    path = tmp_path / "mixed.bin"
    torch.save(mixed_state(), path)
    return path


def rewrite_zip(src: Path, dst: Path, replace: dict[str, bytes | None]) -> None:
    """Copy the torch.save archive ``src`` to ``dst``, replacing (or with None dropping) records by suffix."""
    with zipfile.ZipFile(src) as source, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            suffix = info.filename.split("/", 1)[1]
            if suffix not in replace:
                target.writestr(info.filename, source.read(info))
            elif replace[suffix] is not None:
                target.writestr(info.filename, replace[suffix])


# --------------------------------------------------------------------------------------------------- specs


def test_specs_match_torch_for_every_kind_of_entry(mixed_bin: Path) -> None:
    assert our_specs(mixed_bin) == torch_specs(mixed_bin)
    assert list(torch_bin.read_tensor_specs(mixed_bin)) == list(mixed_state())


def test_specs_match_torch_for_a_transformers_model(bert_bin: Path) -> None:
    specs = our_specs(bert_bin)
    assert specs == torch_specs(bert_bin)
    assert specs["bert.embeddings.word_embeddings.weight"] == ("F32", (99, 32))
    assert specs["cls.predictions.decoder.weight"] == ("F32", (99, 32))


def test_float8_tensors_come_through_rebuild_tensor_v3(tmp_path: Path) -> None:
    path = tmp_path / "f8.bin"
    torch.save({"a": torch.zeros(3, 2, dtype=torch.float8_e4m3fn), "b": torch.zeros(4, dtype=torch.float8_e5m2)}, path)
    with zipfile.ZipFile(path) as archive:
        pickled = archive.read(next(name for name in archive.namelist() if name.endswith("/data.pkl")))
    assert b"_rebuild_tensor_v3" in pickled
    assert b"UntypedStorage" in pickled
    assert our_specs(path) == torch_specs(path) == {"a": ("F8_E4M3", (3, 2)), "b": ("F8_E5M2", (4,))}


@pytest.mark.parametrize("dtype", [torch.complex64, torch.uint16])
def test_dtypes_without_a_name_are_unsupported(tmp_path: Path, dtype: torch.dtype) -> None:
    path = tmp_path / "odd.bin"
    torch.save({"fine": torch.zeros(2), "odd": torch.zeros(2, dtype=dtype)}, path)
    with pytest.raises(UnsupportedCheckpointError, match=r"tensor odd has dtype torch\.(complex64|uint16)"):
        torch_bin.read_tensor_specs(path)


_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32, torch.int8]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    entries=st.dictionaries(
        st.text(alphabet="abcdefgh._", min_size=1, max_size=8),
        st.tuples(st.sampled_from(_DTYPES), st.lists(st.integers(0, 4), max_size=3), st.integers(0, 3)),
        max_size=6,
    )
)
def test_specs_match_torch_for_random_state_dicts(entries: dict) -> None:
    state = {}
    for name, (dtype, shape, skip) in entries.items():
        # Slicing off leading elements gives views with a storage offset into a bigger storage.
        state[name] = torch.zeros(skip + int(np.prod(shape)), dtype=dtype)[skip:].reshape(shape)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "random.bin"
        torch.save(state, path)
        assert our_specs(path) == torch_specs(path)


def test_reading_specs_never_imports_torch(bert_bin: Path, mixed_bin: Path) -> None:
    code = (
        "import sys\n"
        "from vocabsurgeon.formats import torch_bin\n"
        f"for path in ({str(bert_bin)!r}, {str(mixed_bin)!r}):\n"
        "    assert torch_bin.read_tensor_specs(path)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import")]
    assert "vocabsurgeon.formats.torch_bin" in imported
    assert not [name for name in imported if name == "torch" or name.startswith("torch.")]


# --------------------------------------------------------------------------------------------------- refusals


class _RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_calling_os_system_is_refused_by_both_layers(
    mixed_bin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.bin"
    rewrite_zip(mixed_bin, evil, {"data.pkl": pickle.dumps({"w": _RunsShell(marker)}, protocol=2)})

    with pytest.raises(CheckpointFormatError, match=r"refusing to unpickle (posix|os)\.system") as caught:
        torch_bin.read_tensor_specs(evil)
    assert str(evil) in str(caught.value)
    with pytest.raises(CheckpointFormatError, match="refusing to unpickle"):
        torch_bin.load_state_dict(evil)
    # Without our own check in front, torch's weights_only unpickler must still refuse it.
    monkeypatch.setattr(torch_bin, "read_tensor_specs", lambda path: {})
    with pytest.raises(CheckpointFormatError, match=r"refusing to unpickle: .*posix\.system") as caught:
        torch_bin.load_state_dict(evil)
    assert "weights_only" not in str(caught.value)  # no advice to load it unsafely
    assert not marker.exists()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([torch.zeros(2)], "found a pickled list"),
        ({"model": {"w": torch.zeros(2)}, "step": 3}, "nested dict"),
        ({"w": torch.zeros(2), "step": 3}, "'step' is a int, not a tensor"),
        ({1: torch.zeros(2)}, "not a string"),
    ],
)
def test_anything_but_a_flat_state_dict_is_refused(tmp_path: Path, payload: object, message: str) -> None:
    path = tmp_path / "other.bin"
    torch.save(payload, path)
    with pytest.raises(CheckpointFormatError, match=message):
        torch_bin.read_tensor_specs(path)


def test_truncated_file_is_a_format_error_naming_it(mixed_bin: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.bin"
    data = mixed_bin.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    for read in (torch_bin.read_tensor_specs, torch_bin.load_state_dict):
        with pytest.raises(CheckpointFormatError, match="truncated") as caught:
            read(cut)
        assert str(cut) in str(caught.value)


def test_corrupt_pickle_and_missing_or_short_records_are_format_errors(mixed_bin: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(mixed_bin) as archive:
        pickled = archive.read("mixed/data.pkl")
    garbled = tmp_path / "garbled.bin"
    rewrite_zip(mixed_bin, garbled, {"data.pkl": pickled[: len(pickled) // 2]})
    missing = tmp_path / "missing.bin"
    rewrite_zip(mixed_bin, missing, {"data/0": None})
    short = tmp_path / "short.bin"
    rewrite_zip(mixed_bin, short, {"data/0": b"\0" * 8})
    for path, message in [(garbled, "not a valid state dict pickle"), (missing, "missing"), (short, "holds 8 bytes")]:
        with pytest.raises(CheckpointFormatError, match=message):
            torch_bin.read_tensor_specs(path)

    flipped = bytearray(mixed_bin.read_bytes())
    at = flipped.index(b"embed.weight")
    flipped[at : at + 5] = b"EMBED"  # inside the stored data.pkl: the CRC no longer matches
    crc = tmp_path / "crc.bin"
    crc.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointFormatError, match=r"cannot read data\.pkl"):
        torch_bin.read_tensor_specs(crc)


def test_legacy_format_is_unsupported_with_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "legacy.bin"
    torch.save({"w": torch.zeros(2, 2)}, path, _use_new_zipfile_serialization=False)
    for read in (torch_bin.read_tensor_specs, torch_bin.load_state_dict):
        with pytest.raises(UnsupportedCheckpointError, match="legacy") as caught:
            read(path)
        assert "re-save" in str(caught.value)
        assert str(path) in str(caught.value)


def test_other_files_are_format_errors_and_missing_files_not_found(tmp_path: Path) -> None:
    text = tmp_path / "notes.bin"
    text.write_text("hello")
    with pytest.raises(CheckpointFormatError, match=r"not a torch\.save zip archive"):
        torch_bin.read_tensor_specs(text)
    plain_zip = tmp_path / "plain.zip"
    with zipfile.ZipFile(plain_zip, "w") as archive:
        archive.writestr("readme.txt", "hi")
    with pytest.raises(CheckpointFormatError, match=r"no data\.pkl"):
        torch_bin.read_tensor_specs(plain_zip)
    with pytest.raises(CheckpointNotFoundError):
        torch_bin.read_tensor_specs(tmp_path / "absent.bin")


# --------------------------------------------------------------------------------------------------- reads


@pytest.mark.parametrize("name", ["embed.weight", "half.weight", "bf16.weight", "bias", "rows_view", "column_view"])
def test_read_rows_matches_torch(mixed_bin: Path, name: str) -> None:
    tensor = torch.load(mixed_bin, weights_only=True)[name]
    rows = [tensor.shape[0] - 1, 0, 1, 0]
    got = torch_bin.read_rows(mixed_bin, name, rows)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, tensor[rows].float().numpy())
    assert torch_bin.read_rows(mixed_bin, name, []).shape == (0, *tensor.shape[1:])


def test_read_rows_refusals(mixed_bin: Path) -> None:
    with pytest.raises(IndexError):
        torch_bin.read_rows(mixed_bin, "embed.weight", [10])
    with pytest.raises(IndexError):
        torch_bin.read_rows(mixed_bin, "embed.weight", [-1])
    with pytest.raises(ValueError, match="dtype"):
        torch_bin.read_rows(mixed_bin, "position_ids", [0])
    with pytest.raises(ValueError, match="scalar"):
        torch_bin.read_rows(mixed_bin, "scalar", [0])
    with pytest.raises(KeyError):
        torch_bin.read_rows(mixed_bin, "nope", [0])


@pytest.mark.parametrize("chunk_bytes", [torch_bin.CHUNK_BYTES, 20])
@pytest.mark.parametrize("name", ["embed.weight", "half.weight", "bf16.weight", "bias", "column_view"])
def test_read_row_mean_matches_torch(
    mixed_bin: Path, monkeypatch: pytest.MonkeyPatch, name: str, chunk_bytes: int
) -> None:
    monkeypatch.setattr(torch_bin, "CHUNK_BYTES", chunk_bytes)
    tensor = torch.load(mixed_bin, weights_only=True)[name]
    exclude = {0, 3}
    keep = [i for i in range(tensor.shape[0]) if i not in exclude]
    expected = tensor[keep].double().mean(dim=0).float().numpy()
    got = torch_bin.read_row_mean(mixed_bin, name, exclude)
    assert got.dtype == np.float32
    assert got.shape == tuple(tensor.shape[1:])
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(
        torch_bin.read_row_mean(mixed_bin, name), tensor.double().mean(dim=0).float().numpy(), rtol=1e-6, atol=1e-7
    )


def test_read_row_mean_with_every_row_excluded(mixed_bin: Path) -> None:
    with pytest.raises(ValueError, match="no rows left"):
        torch_bin.read_row_mean(mixed_bin, "half.weight", range(5))


def test_load_state_dict_keeps_ties(bert_bin: Path) -> None:
    tensors = torch_bin.load_state_dict(bert_bin)
    assert (
        tensors["bert.embeddings.word_embeddings.weight"].data_ptr()
        == tensors["cls.predictions.decoder.weight"].data_ptr()
    )


# --------------------------------------------------------------------------------------------------- writes


def _rows(count: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, width)).astype(np.float32)


def test_write_edited_grows_a_tied_bert_and_transformers_loads_it(bert_bin: Path, tmp_path: Path) -> None:
    src = torch.load(bert_bin, weights_only=True)
    embed, bias = "bert.embeddings.word_embeddings.weight", "cls.predictions.bias"
    embed_values = _rows(5, 32, 1)
    bias_values = np.arange(4, dtype=np.float32)
    edits = {
        embed: TensorEdit(103, (5, 99, 100, 101, 102), embed_values),  # also overwrites old row 5
        bias: TensorEdit(103, (99, 100, 101, 102), bias_values),
    }
    dst = tmp_path / "grown.bin"
    written: list[int] = []
    torch_bin.write_edited(bert_bin, dst, edits, progress=written.append)
    assert sum(written) == dst.stat().st_size

    out = torch.load(dst, weights_only=True)
    assert list(out) == list(src)
    for name in (embed, "cls.predictions.decoder.weight"):
        assert out[name].shape == (103, 32)
        keep = [i for i in range(99) if i != 5]
        assert torch.equal(out[name][keep], src[embed][keep])
        assert torch.equal(out[name][[5, 99, 100, 101, 102]], torch.from_numpy(embed_values))
    for name in (bias, "cls.predictions.decoder.bias"):
        assert torch.equal(out[name][:99], src[bias])
        assert torch.equal(out[name][99:], torch.from_numpy(bias_values))
    assert out[embed].data_ptr() == out["cls.predictions.decoder.weight"].data_ptr()
    assert out[bias].data_ptr() == out["cls.predictions.decoder.bias"].data_ptr()
    for name, tensor in src.items():
        if name not in (embed, bias, "cls.predictions.decoder.weight", "cls.predictions.decoder.bias"):
            assert torch.equal(out[name], tensor), name
    assert out._metadata == src._metadata

    with zipfile.ZipFile(bert_bin) as before, zipfile.ZipFile(dst) as after:
        records = [sum("/data/" in name for name in archive.namelist()) for archive in (before, after)]
    assert records[0] == records[1]  # tied tensors still stored once

    assert our_specs(dst) == torch_specs(dst)
    model = tiny_bert(vocab_size=103)
    result = model.load_state_dict(torch_bin.load_state_dict(dst), strict=True)
    assert not result.missing_keys
    assert not result.unexpected_keys
    assert torch.equal(model.get_output_embeddings().weight[100], torch.from_numpy(embed_values[2]))
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[1, 100, 102]])).logits
    assert logits.shape == (1, 3, 103)


def test_write_edited_casts_through_torch_and_keeps_everything_else(mixed_bin: Path, tmp_path: Path) -> None:
    state = {"a.weight": torch.randn(6, 3).bfloat16(), "half": torch.randn(4, 3).half()}
    state["b.weight"] = state["a.weight"]
    base = torch.randn(8, 3)
    state["view"] = base[2:]
    state["other_view"] = base[:4]
    src = tmp_path / "src.bin"
    torch.save(state, src)

    values = _rows(3, 3, 2) * 1000  # large enough for bf16 rounding to matter
    edits = {"b.weight": TensorEdit(8, (0, 6, 7), values), "half": TensorEdit(5, (4,), values[:1])}
    dst = tmp_path / "dst.bin"
    torch_bin.write_edited(src, dst, edits)
    out = torch.load(dst, weights_only=True)

    expected_rows = torch.from_numpy(values).to(torch.bfloat16)
    for name in ("a.weight", "b.weight"):
        assert out[name].dtype == torch.bfloat16
        assert out[name].shape == (8, 3)
        assert torch.equal(out[name][1:6], state["a.weight"][1:6])
        assert torch.equal(out[name][[0, 6, 7]], expected_rows)
    assert out["a.weight"].data_ptr() == out["b.weight"].data_ptr()
    assert torch.equal(out["half"][:4], state["half"])
    assert torch.equal(out["half"][4], torch.from_numpy(values[0]).half())
    assert torch.equal(out["view"], state["view"])
    assert torch.equal(out["other_view"], state["other_view"])
    assert out["view"].untyped_storage().data_ptr() == out["other_view"].untyped_storage().data_ptr()


def test_write_edited_without_edits_round_trips(mixed_bin: Path, tmp_path: Path) -> None:
    dst = tmp_path / "copy.bin"
    torch_bin.write_edited(mixed_bin, dst, {})
    src, out = torch.load(mixed_bin, weights_only=True), torch.load(dst, weights_only=True)
    assert list(out) == list(src)
    for name, tensor in src.items():
        assert out[name].dtype == tensor.dtype, name
        assert torch.equal(out[name], tensor), name
    assert out["embed.weight"].data_ptr() == out["head.weight"].data_ptr()
    assert isinstance(out["param"], torch.nn.Parameter)


def test_tied_names_with_identical_edits_are_fine_and_differing_ones_refused(mixed_bin: Path, tmp_path: Path) -> None:
    values = _rows(2, 4, 3)
    same = {"embed.weight": TensorEdit(12, (10, 11), values), "head.weight": TensorEdit(12, (10, 11), values.copy())}
    torch_bin.write_edited(mixed_bin, tmp_path / "same.bin", same)
    out = torch.load(tmp_path / "same.bin", weights_only=True)
    assert out["embed.weight"].data_ptr() == out["head.weight"].data_ptr()

    differing = {"embed.weight": TensorEdit(12, (10, 11), values), "head.weight": TensorEdit(12, (10, 11), values + 1)}
    with pytest.raises(ValueError, match="tied"):
        torch_bin.write_edited(mixed_bin, tmp_path / "differing.bin", differing)
    assert not (tmp_path / "differing.bin").exists()


@pytest.mark.parametrize(
    ("edits", "message"),
    [
        ({"nope": TensorEdit(3)}, "no tensor named nope"),
        ({"embed.weight": TensorEdit(12, (10,), _rows(1, 4, 0))}, "no values"),
        ({"embed.weight": TensorEdit(9)}, "cannot shrink"),
        ({"position_ids": TensorEdit(13, (12,), np.zeros((1,), dtype=np.float32))}, "dtype I64"),
        ({"scalar": TensorEdit(1)}, "scalar"),
    ],
)
def test_write_edited_checks_edits_before_writing(
    mixed_bin: Path, tmp_path: Path, edits: dict[str, TensorEdit], message: str
) -> None:
    dst = tmp_path / "dst.bin"
    with pytest.raises(ValueError, match=message):
        torch_bin.write_edited(mixed_bin, dst, edits)
    assert not dst.exists()


def test_destinations_that_exist_or_are_symlinks_are_refused(mixed_bin: Path, tmp_path: Path) -> None:
    existing = tmp_path / "existing.bin"
    existing.write_bytes(b"keep me")
    dangling = tmp_path / "dangling.bin"
    dangling.symlink_to(tmp_path / "target.bin")
    for dst in (existing, dangling, mixed_bin):
        with pytest.raises(OutputExistsError):
            torch_bin.write_edited(mixed_bin, dst, {})
        with pytest.raises(OutputExistsError):
            torch_bin.write_state_dict({"w": torch.zeros(1)}, dst)
    assert existing.read_bytes() == b"keep me"
    assert not (tmp_path / "target.bin").exists()


def test_write_state_dict_round_trips_and_shares_storage(tmp_path: Path) -> None:
    shared = torch.randn(5, 2)
    tensors = OrderedDict([("a", shared), ("b", shared), ("c", torch.arange(3))])
    dst = tmp_path / "converted.bin"
    torch_bin.write_state_dict(tensors, dst)
    out = torch.load(dst, weights_only=True)
    assert type(out) is dict
    assert list(out) == ["a", "b", "c"]
    assert all(torch.equal(out[name], tensor) for name, tensor in tensors.items())
    assert out["a"].data_ptr() == out["b"].data_ptr()
    assert our_specs(dst) == {"a": ("F32", (5, 2)), "b": ("F32", (5, 2)), "c": ("I64", (3,))}
    with pytest.raises(ValueError, match="tensor"):
        torch_bin.write_state_dict({"a": np.zeros(2)}, tmp_path / "numpy.bin")
    assert not (tmp_path / "numpy.bin").exists()


def test_a_failed_write_leaves_no_output(mixed_bin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk(obj: object, file: object) -> None:
        file.write(b"partial")  # type: ignore[attr-defined]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    dst = tmp_path / "partial.bin"
    with pytest.raises(OSError, match="No space"):
        torch_bin.write_edited(mixed_bin, dst, {})
    assert not dst.exists()
