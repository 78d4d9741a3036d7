"""(1, V) vocabulary buffers (BART's ``final_logits_bias``): found, grown along axis 1, audited and verified.

The unit tests check the finder and the three writers (safetensors streaming, ``pytorch_model.bin``, conversion)
with a ``(1, V)`` tensor against the libraries themselves. The end-to-end tests append to (and resize) a tiny BART
built by :func:`checkpoints.build_bart`, whose ``final_logits_bias`` holds random values, in every weight layout,
and reload the output with ``AutoModelForSeq2SeqLM``.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.torch
import torch
from checkpoints import CheckpointCache, WeightsFormat, build_bart
from click.testing import CliRunner, Result
from helpers import error_codes
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from vocabsurgeon.cli import main
from vocabsurgeon.convert import apply_edit
from vocabsurgeon.formats import safetensors_stream, torch_bin
from vocabsurgeon.formats.weights import TensorEdit, TensorSpec, grown_shape, rows_shape
from vocabsurgeon.inventory import read_inventory
from vocabsurgeon.verification import verify_checkpoint
from vocabsurgeon.vocab_tensors import find_vocab_biases, find_vocab_tensors

BIAS = "final_logits_bias"
SHARED = "model.shared.weight"
ROWS = 403  # build_bart's default vocabulary
TOKENS = ("COVID-19", "hospitalization", "vaccination")
SPECIAL = "[special1]"
PAD = 8
NEW_ROWS = math.ceil((ROWS + len(TOKENS) + 1) / PAD) * PAD  # 408
OLD_TEXT = "The patients need a new hospital now. The quick brown fox jumps over the lazy dog."
DECODER_TEXT = "Doctors and nurses at the hospital."
LOAD_KEYS = ("missing_keys", "unexpected_keys", "mismatched_keys")


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(arg) for arg in args], catch_exceptions=False)


def state_dict(root: Path) -> dict[str, torch.Tensor]:
    """Every tensor saved in a checkpoint directory, as stored (shards merged)."""
    tensors: dict[str, torch.Tensor] = {}
    for path in sorted(root.glob("*.bin")):
        tensors.update(torch.load(path, map_location="cpu", weights_only=True))
    for path in sorted(root.glob("*.safetensors")):
        tensors.update(safetensors.torch.load_file(path))
    return tensors


def quiet_load(path: Path) -> tuple[Any, dict[str, Any]]:
    """AutoModelForSeq2SeqLM with its loading info, without reports (transformers' logging state is restored)."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        model, info = AutoModelForSeq2SeqLM.from_pretrained(path, output_loading_info=True)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    model.eval()
    return model, info


def old_inputs(source: Path) -> dict[str, torch.Tensor]:
    """Encoder and decoder inputs made of old ids only (encoded by the *source* tokenizer)."""
    tokenizer = AutoTokenizer.from_pretrained(source)
    encoded = tokenizer(OLD_TEXT, return_tensors="pt")
    decoder = tokenizer(DECODER_TEXT, return_tensors="pt").input_ids
    return {"input_ids": encoded.input_ids, "attention_mask": encoded.attention_mask, "decoder_input_ids": decoder}


def audit_json(model: Path) -> tuple[int, dict[str, Any]]:
    result = run("audit", model, "--json")
    return result.exit_code, json.loads(result.stdout)


# --------------------------------------------------------------------------------------------------
# The finder
# --------------------------------------------------------------------------------------------------


def _specs(*items: tuple[str, str, tuple[int, ...]]) -> dict[str, TensorSpec]:
    return {name: TensorSpec(name, dtype, shape) for name, dtype, shape in items}


def test_finder_takes_a_float_one_by_v_buffer_outside_the_layer_stack_on_axis_1() -> None:
    specs = _specs(
        ("final_logits_bias", "F32", (1, 10)),
        ("model.shared.weight", "F32", (10, 4)),
        ("lm_head.weight", "F32", (10, 4)),
        ("cls.bias", "F32", (10,)),
        ("embeddings.position_ids", "I64", (1, 10)),  # an integer buffer of the same shape is not vocabulary
        ("layers.0.scale", "F32", (1, 10)),  # inside the layer stack
        ("other_bias", "F32", (1, 9)),  # not the vocabulary's size
        ("norm.weight", "F32", (4,)),
    )
    tensors = find_vocab_tensors(specs)
    assert tensors is not None
    assert [spec.name for spec in tensors.buffers] == ["final_logits_bias"]
    assert [spec.name for spec in tensors.outputs] == ["lm_head.weight"]
    assert [spec.name for spec in tensors.biases] == ["cls.bias"]
    assert "final_logits_bias" in {spec.name for spec in tensors.all}
    assert {spec.name: tensors.axis(spec) for spec in tensors.all} == {
        "model.shared.weight": 0,
        "lm_head.weight": 0,
        "cls.bias": 0,
        "final_logits_bias": 1,
    }
    assert {tensors.vocab_rows(spec) for spec in tensors.all} == {10}


def test_finder_is_name_agnostic_and_audit_names_logits_biases_of_any_size() -> None:
    specs = _specs(("embed_tokens.weight", "BF16", (10, 4)), ("whatever_buffer", "BF16", (1, 10)))
    tensors = find_vocab_tensors(specs)
    assert tensors is not None
    assert [spec.name for spec in tensors.buffers] == ["whatever_buffer"]
    wrong = _specs(("final_logits_bias", "F32", (1, 7)), ("lm_head.bias", "F32", (7,)), ("x.bias", "F32", (1, 7)))
    assert [spec.name for spec in find_vocab_biases(wrong)] == ["final_logits_bias", "lm_head.bias"]


def test_rows_shape_only_gives_axis_1_to_one_by_v_tensors() -> None:
    assert rows_shape((1, 7), 1) == (7,)
    assert rows_shape((7, 3), 0) == (7, 3)
    assert grown_shape((1, 7), 9, 1) == (1, 9)
    assert grown_shape((7, 3), 9, 0) == (9, 3)
    assert TensorSpec("b", "F32", (1, 7)).rows_view(1) == TensorSpec("b", "F32", (7,))
    for shape, axis in (((2, 7), 1), ((7,), 1), ((1, 7), 2), ((1, 7, 1), 1), ((), 0)):
        with pytest.raises(ValueError, match="no vocabulary axis"):
            rows_shape(shape, axis)


@pytest.mark.parametrize(
    ("spec", "edit", "message"),
    [
        (TensorSpec("b", "F32", (2, 5)), TensorEdit(6, (5,), np.zeros((1,), np.float32), axis=1), "no vocabulary axis"),
        (TensorSpec("b", "F32", (1, 5)), TensorEdit(6, (5,), np.zeros((1,), np.float32), axis=2), "no vocabulary axis"),
        (TensorSpec("b", "F32", (1, 5)), TensorEdit(6, (5,), np.zeros((1, 1), np.float32), axis=1), "values have"),
        (TensorSpec("b", "F32", (1, 5)), TensorEdit(4, axis=1), "cannot shrink"),
        (TensorSpec("b", "F32", (1, 5)), TensorEdit(7, (5,), np.zeros((1,), np.float32), axis=1), "no values"),
    ],
)
def test_edit_check_refuses_what_does_not_fit_a_buffer(spec: TensorSpec, edit: TensorEdit, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        edit.check(spec)


# --------------------------------------------------------------------------------------------------
# The writers, against the libraries
# --------------------------------------------------------------------------------------------------


def _tensors() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "embed": torch.randn(5, 3, generator=generator),
        "final_logits_bias": torch.randn(1, 5, generator=generator),
        "half_bias": torch.randn(1, 5, generator=generator).to(torch.bfloat16),
        "norm": torch.randn(3, generator=generator),
    }


def _edits() -> dict[str, TensorEdit]:
    values = np.array([10.5, 11.25, 12.0, 13.75], dtype=np.float32)
    return {
        # overwrites old element 1, appends 5..7
        "final_logits_bias": TensorEdit(8, (1, 5, 6, 7), values, axis=1),
        "half_bias": TensorEdit(7, (5, 6), values[:2] + 0.001, axis=1),
        "embed": TensorEdit(8, (5, 6, 7), np.full((3, 3), 2.0, dtype=np.float32)),
    }


def _expected(tensors: dict[str, torch.Tensor], edits: dict[str, TensorEdit]) -> dict[str, torch.Tensor]:
    """What each tensor must become, built with plain torch indexing."""
    out = {}
    for name, tensor in tensors.items():
        edit = edits.get(name)
        if edit is None:
            out[name] = tensor
            continue
        values = torch.from_numpy(edit.values).to(tensor.dtype)
        if edit.axis == 1:
            grown = torch.cat([tensor, torch.zeros(1, edit.new_rows - tensor.shape[1], dtype=tensor.dtype)], dim=1)
            grown[0, list(edit.indices)] = values
        else:
            grown = torch.cat([tensor, torch.zeros(edit.new_rows - tensor.shape[0], *tensor.shape[1:])])
            grown[list(edit.indices)] = values
        out[name] = grown
    return out


def _assert_same(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert set(actual) == set(expected)
    for name, tensor in expected.items():
        assert actual[name].dtype == tensor.dtype, name
        assert actual[name].shape == tensor.shape, name
        assert torch.equal(actual[name], tensor), name


def test_safetensors_writer_grows_a_buffer_along_axis_1(tmp_path: Path) -> None:
    tensors, edits = _tensors(), _edits()
    src, dst = tmp_path / "in.safetensors", tmp_path / "out.safetensors"
    safetensors.torch.save_file(tensors, str(src), metadata={"format": "pt"})
    safetensors_stream.write_edited(src, dst, edits)
    _assert_same(safetensors.torch.load_file(str(dst)), _expected(tensors, edits))
    specs = safetensors_stream.read_tensor_specs(dst)
    assert specs["final_logits_bias"].shape == (1, 8)
    assert specs["half_bias"].shape == (1, 7)


def test_torch_bin_writer_grows_a_buffer_along_axis_1(tmp_path: Path) -> None:
    tensors, edits = _tensors(), _edits()
    src, dst = tmp_path / "in.bin", tmp_path / "out.bin"
    torch.save(tensors, src)
    torch_bin.write_edited(src, dst, edits)
    _assert_same(torch.load(dst, map_location="cpu", weights_only=True), _expected(tensors, edits))
    assert torch_bin.read_tensor_specs(dst)["final_logits_bias"].shape == (1, 8)


def test_conversion_grows_a_buffer_like_the_writers() -> None:
    tensors, edits = _tensors(), _edits()
    expected = _expected(tensors, edits)
    for name, edit in edits.items():
        grown = apply_edit(tensors[name], edit)
        assert grown.shape == expected[name].shape
        assert torch.equal(grown, expected[name]), name


@pytest.mark.parametrize("fmt", ["safetensors", "pytorch"])
def test_readers_take_a_buffers_rows_along_axis_1(tmp_path: Path, fmt: str) -> None:
    tensors = _tensors()
    path = tmp_path / "weights"
    if fmt == "safetensors":
        safetensors.torch.save_file(tensors, str(path))
        module: Any = safetensors_stream
    else:
        torch.save(tensors, path)
        module = torch_bin
    for name in ("final_logits_bias", "half_bias"):
        flat = tensors[name].float()[0].numpy()
        rows = module.read_rows(path, name, [4, 0, 4], axis=1)
        assert rows.shape == (3,)
        np.testing.assert_array_equal(rows, flat[[4, 0, 4]])
        mean = module.read_row_mean(path, name, [1, 3], axis=1)
        assert mean.shape == ()
        np.testing.assert_allclose(mean, flat[[0, 2, 4]].astype(np.float64).mean(), rtol=1e-6)
        with pytest.raises(IndexError):
            module.read_rows(path, name, [5], axis=1)
    with pytest.raises(ValueError, match="no vocabulary axis"):
        module.read_rows(path, "embed", [0], axis=1)


# --------------------------------------------------------------------------------------------------
# End to end: append to a tiny BART
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    build: WeightsFormat  # the source's weights layout
    args: tuple[str, ...] = ()  # extra append options


CASES: dict[str, Case] = {
    "safetensors": Case("safetensors"),
    "pytorch": Case("pytorch"),
    "sharded": Case("sharded"),
    "normal_init": Case("safetensors", ("--init", "normal")),
    "to_pytorch": Case("safetensors", ("--weights-format", "pytorch")),
    "to_safetensors": Case("pytorch", ("--weights-format", "safetensors")),
    "sharded_to_pytorch": Case("sharded", ("--weights-format", "pytorch")),
}


@dataclass
class Appended:
    case: Case
    source: Path
    out: Path
    plan: dict[str, Any]
    _models: dict[str, tuple[Any, dict[str, Any]]] = field(default_factory=dict)

    def model(self, which: str) -> tuple[Any, dict[str, Any]]:
        if which not in self._models:
            self._models[which] = quiet_load(self.out if which == "out" else self.source)
        return self._models[which]


class AppendCache:
    def __init__(self, cache: CheckpointCache, root: Path) -> None:
        self._checkpoints = cache
        self._root = root
        self._done: dict[str, Appended] = {}

    def source(self, layout: WeightsFormat) -> Path:
        return self._checkpoints.get(f"bart_{layout}", lambda p: build_bart(p, weights=layout))

    def get(self, name: str) -> Appended:
        if name not in self._done:
            case = CASES[name]
            work = self._root / name
            source = Path(shutil.copytree(self.source(case.build), work / "source"))
            tokens = [arg for token in TOKENS for arg in ("--token", token)]
            result = run(
                "append", source, "--out", work / "out", *tokens, "--special-token", SPECIAL,
                "--pad-to-multiple-of", str(PAD), *case.args, "--json",
            )  # fmt: skip
            assert result.exit_code == 0, result.output
            document = json.loads(result.stdout)
            assert document["verified"] is True
            self._done[name] = Appended(case, source, work / "out", document["plan"])
        return self._done[name]


@pytest.fixture(scope="module")
def append_cache(checkpoint_cache: CheckpointCache, tmp_path_factory: pytest.TempPathFactory) -> AppendCache:
    return AppendCache(checkpoint_cache, tmp_path_factory.mktemp("bart-appended"))


@pytest.fixture(params=list(CASES))
def appended(request: pytest.FixtureRequest, append_cache: AppendCache) -> Appended:
    return append_cache.get(request.param)


def test_source_has_a_random_one_by_v_final_logits_bias(append_cache: AppendCache) -> None:
    saved = state_dict(append_cache.source("safetensors"))
    assert saved[BIAS].shape == (1, ROWS)
    assert saved[BIAS].abs().min() > 0  # not transformers' zeros: old values can be told from new ones


def test_output_loads_without_missing_unexpected_or_mismatched_keys(appended: Appended) -> None:
    model, info = appended.model("out")
    assert {key: info[key] for key in LOAD_KEYS if info[key]} == {}
    # final_logits_bias is in _keys_to_ignore_on_load_missing: check it was loaded, not re-created as zeros
    torch.testing.assert_close(model.final_logits_bias, state_dict(appended.out)[BIAS], atol=0, rtol=0)
    assert model.config.vocab_size == NEW_ROWS == model.get_input_embeddings().weight.shape[0]
    assert model.get_output_embeddings().weight.shape[0] == NEW_ROWS


def test_final_logits_bias_grows_along_axis_1_keeping_old_values_bit_identical(appended: Appended) -> None:
    before, after = state_dict(appended.source), state_dict(appended.out)
    assert after[BIAS].shape == (1, NEW_ROWS)
    assert after[BIAS].dtype == before[BIAS].dtype
    assert torch.equal(after[BIAS][:, :ROWS], before[BIAS])
    for name, tensor in before.items():
        if name not in after:  # safetensors drops the tied duplicates a .bin keeps
            assert appended.case.args == ("--weights-format", "safetensors"), name
            assert tensor.shape[0] == ROWS, name
            continue
        if tensor.shape[0] == ROWS:
            assert torch.equal(after[name][:ROWS], tensor), name
        elif name != BIAS:
            assert torch.equal(after[name], tensor), name


def test_new_bias_entries_are_what_a_1d_bias_gets(appended: Appended) -> None:
    """Default init: subword-mean of the pieces' entries for tokens, the mean for the special token and padding;
    with ``--init normal`` (embeddings drawn at random) a bias gets zeros, as transformers' resize gives."""
    old = state_dict(appended.source)[BIAS][0].double()
    new = state_dict(appended.out)[BIAS][0]
    if appended.case.args[:2] == ("--init", "normal"):
        assert torch.equal(new[ROWS:], torch.zeros(NEW_ROWS - ROWS))
        shared = state_dict(appended.out)[SHARED]
        assert shared[ROWS:].abs().sum(dim=1).min() > 0
        return
    exclude = set(appended.plan["exclude_from_mean"])
    mean = old[[i for i in range(ROWS) if i not in exclude]].mean()
    expected = {idx: mean for idx in range(ROWS, NEW_ROWS)}
    for placement in appended.plan["placements"]:
        if placement["init"] == "subword-mean":
            expected[placement["id"]] = old[placement["pieces"]].mean()
        else:
            assert placement["init"] == "mean"
    for idx, value in expected.items():
        assert new[idx].item() == pytest.approx(value.item(), abs=1e-6), idx


def test_logits_of_old_tokens_match_the_source_on_the_old_columns(appended: Appended) -> None:
    inputs = old_inputs(appended.source)
    out_model, _ = appended.model("out")
    src_model, _ = appended.model("source")
    with torch.no_grad():
        expected = src_model(**inputs).logits
        actual = out_model(**inputs).logits
    assert expected.shape[-1] == ROWS
    assert actual.shape[-1] == NEW_ROWS
    torch.testing.assert_close(actual[..., :ROWS], expected, atol=1e-5, rtol=0)


def test_generate_on_old_tokens_matches_the_source(appended: Appended) -> None:
    inputs = old_inputs(appended.source)
    del inputs["decoder_input_ids"]
    out_model, _ = appended.model("out")
    src_model, _ = appended.model("source")
    options: dict[str, Any] = {
        "max_new_tokens": 6,
        "do_sample": False,
        "num_beams": 1,
        "output_scores": True,
        "return_dict_in_generate": True,
    }
    with torch.no_grad():
        expected = src_model.generate(**inputs, **options)
        actual = out_model.generate(**inputs, **options, suppress_tokens=list(range(ROWS, NEW_ROWS)))
    assert torch.equal(actual.sequences, expected.sequences)
    for got, want in zip(actual.scores, expected.scores, strict=True):
        torch.testing.assert_close(got[..., :ROWS], want, atol=1e-5, rtol=0)


def test_audit_passes_on_the_output(appended: Appended) -> None:
    code, document = audit_json(appended.out)
    assert error_codes(document) == set()
    assert code == 0


@pytest.mark.parametrize(
    ("name", "index_name"), [("sharded", "model.safetensors"), ("sharded_to_pytorch", "pytorch_model.bin")]
)
def test_sharded_index_sizes_count_the_buffer_growth(append_cache: AppendCache, name: str, index_name: str) -> None:
    """total_size counts every byte, the buffer's new entries too; total_parameters is transformers'
    num_parameters(), which counts no buffer: it grows by the new embedding rows only."""
    appended = append_cache.get(name)
    index = json.loads((appended.out / f"{index_name}.index.json").read_text(encoding="utf-8"))
    source = json.loads((appended.source / "model.safetensors.index.json").read_text(encoding="utf-8"))
    tensors = state_dict(appended.out)
    stored = {(t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape)): t for t in tensors.values()}
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in stored.values())
    assert index["metadata"]["total_size"] == source["metadata"]["total_size"] + (NEW_ROWS - ROWS) * (16 + 1) * 4
    assert index["metadata"]["total_parameters"] == source["metadata"]["total_parameters"] + (NEW_ROWS - ROWS) * 16
    model, _ = appended.model("out")
    assert index["metadata"]["total_parameters"] == model.num_parameters()
    assert set(index["weight_map"]) == set(tensors)


# --------------------------------------------------------------------------------------------------
# resize, audit and verify of a mis-sized buffer
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["safetensors", "pytorch"])
def test_resize_grows_the_buffer_too(append_cache: AppendCache, tmp_path: Path, layout: WeightsFormat) -> None:
    source = Path(shutil.copytree(append_cache.source(layout), tmp_path / "source"))
    out = tmp_path / "out"
    result = run("resize", source, "--out", out, "--to", "410", "--pad-to-multiple-of", "8", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["verified"] is True
    before, after = state_dict(source), state_dict(out)
    assert after[BIAS].shape == (1, 416)
    assert torch.equal(after[BIAS][:, :ROWS], before[BIAS])
    mean = before[BIAS].double().mean().item()
    assert after[BIAS][0, ROWS:].double().sub(mean).abs().max().item() < 1e-6  # new rows: the mean, as for biases
    model, info = quiet_load(out)
    assert {key: info[key] for key in LOAD_KEYS if info[key]} == {}
    src_model, _ = quiet_load(source)
    inputs = old_inputs(source)
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits[..., :ROWS], src_model(**inputs).logits, atol=1e-5, rtol=0)
    code, document = audit_json(out)
    assert (code, error_codes(document)) == (0, set())


@pytest.mark.parametrize("entries", [ROWS - 3, ROWS + 5])
def test_audit_and_verify_report_a_mis_sized_final_logits_bias(
    append_cache: AppendCache, tmp_path: Path, entries: int
) -> None:
    model = Path(shutil.copytree(append_cache.source("safetensors"), tmp_path / "model"))
    code, document = audit_json(model)
    assert (code, error_codes(document)) == (0, set())
    tensors = safetensors.torch.load_file(str(model / "model.safetensors"))
    tensors[BIAS] = torch.zeros(1, entries)
    (model / "model.safetensors").unlink()
    safetensors.torch.save_file(tensors, str(model / "model.safetensors"), metadata={"format": "pt"})

    code, document = audit_json(model)
    assert code != 0
    assert "bias-mismatch" in error_codes(document)
    assert f"{BIAS} has {entries} entries" in json.dumps(document)

    checks = {check.name: check for check in verify_checkpoint(model, slow=False)}
    agree = checks["vocabulary tensors agree (model.safetensors)"]
    assert not agree.ok
    assert f"'{BIAS}': {entries}" in agree.detail
    assert not checks["audit finds no errors"].ok
    assert find_vocab_tensors(read_inventory(model).weights[0].specs) is not None
