"""Issue 4 acceptance: ``append`` grows every vocabulary tensor of real checkpoints, streaming and loadable.

Three sources are appended to once per module (tokens ``COVID-19``, ``hospitalization``, ``vaccination`` and the
special token ``[special1]``): a BERT MLM in safetensors (tied decoder, ``cls.predictions.bias``), the same BERT as
``pytorch_model.bin`` and a sharded, untied Llama-style checkpoint with ``--pad-to-multiple-of 64``. Each output is
reloaded with transformers and compared with its source: keys, sizes, old rows, logits, tying, token ids, shards.
The other tests cover weight-format conversion (also with transformers 4.24), the tokenizer files, ``--init``,
padding slots, ``remap --allow-append`` and the progress bar.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from checkpoints import CheckpointCache, build_bert, build_llama_bpe
from click.testing import CliRunner, Result
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer, PreTrainedModel

from vocabsurgeon.cli import main
from vocabsurgeon.formats.safetensors_stream import read_header

TOKENS = ("COVID-19", "hospitalization", "vaccination")
SPECIAL = ("[special1]",)
OLD_TEXT = "The patients need a new hospital now. The quick brown fox jumps over the lazy dog."
BERT_EMBEDDING = "bert.embeddings.word_embeddings.weight"
BERT_BIAS = "cls.predictions.bias"
PLACEHOLDER = re.compile(r"\[unused\d+\]")


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(arg) for arg in args], catch_exceptions=False)


def one_line_error(result: Result) -> list[str]:
    """stderr as its lines, after checking it is exactly one ``vocabsurgeon: error: ...`` line."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("vocabsurgeon: error: "), result.stderr
    return lines


def token_args(tokens: tuple[str, ...] = TOKENS, special: tuple[str, ...] = SPECIAL) -> list[str]:
    return [arg for t in tokens for arg in ("--token", t)] + [arg for t in special for arg in ("--special-token", t)]


def file_digests(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` by relative path."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def state_dict(root: Path) -> dict[str, torch.Tensor]:
    """Every tensor saved in a checkpoint directory, as stored (shards merged)."""
    if (root / "pytorch_model.bin").exists():
        return torch.load(root / "pytorch_model.bin", map_location="cpu", weights_only=True)
    tensors: dict[str, torch.Tensor] = {}
    for path in sorted(root.glob("*.safetensors")):
        tensors.update(load_file(path))
    return tensors


def saved_keys(root: Path) -> set[str]:
    keys: set[str] = set()
    for path in root.glob("*.safetensors"):
        with safe_open(path, "pt") as handle:
            keys.update(handle.keys())
    if (root / "pytorch_model.bin").exists():
        keys.update(state_dict(root))
    return keys


def loading_problems(info: dict[str, Any]) -> dict[str, list[Any]]:
    return {key: sorted(value) for key, value in info.items() if value}


def quiet_load(auto: Any, path: Path, **kwargs: Any) -> Any:
    """``auto.from_pretrained`` without load reports and progress bars (transformers' logging state is restored)."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        return auto.from_pretrained(path, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def old_text_logits(model: PreTrainedModel, source: Path) -> torch.Tensor:
    """Logits of :data:`OLD_TEXT` encoded by the *source* tokenizer (so only old ids are fed)."""
    encoded = AutoTokenizer.from_pretrained(source)(OLD_TEXT, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        return model(**encoded).logits


# --------------------------------------------------------------------------------------------------
# The three appended checkpoints, built once per module
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    builder: Callable[[Path], Path]  # the same builder conftest uses for this cache name
    auto: Any
    tied: bool
    pad: int | None
    vocab_tensors: tuple[str, ...]  # vocabulary-sized tensors as saved in the source
    expected_ids: dict[str, int]


CASES: dict[str, Case] = {
    "bert": Case(
        lambda p: build_bert(p),
        AutoModelForMaskedLM,
        tied=True,
        pad=None,
        vocab_tensors=(BERT_EMBEDDING, BERT_BIAS),
        # vocabulary entries first (vocab.txt stays gap-free), then added and special tokens
        expected_ids={"hospitalization": 2000, "vaccination": 2001, "COVID-19": 2002, "[special1]": 2003},
    ),
    "bert_pytorch": Case(
        lambda p: build_bert(p, weights="pytorch"),
        AutoModelForMaskedLM,
        tied=True,
        pad=None,
        vocab_tensors=(BERT_EMBEDDING, BERT_BIAS, "cls.predictions.decoder.weight", "cls.predictions.decoder.bias"),
        expected_ids={"hospitalization": 2000, "vaccination": 2001, "COVID-19": 2002, "[special1]": 2003},
    ),
    "llama_sharded": Case(
        lambda p: build_llama_bpe(p, weights="sharded"),
        AutoModelForCausalLM,
        tied=False,
        pad=64,
        vocab_tensors=("model.embed_tokens.weight", "lm_head.weight"),
        # byte-level BPE holds no whole words: every token is an added token, in request order
        # words are vocabulary entries in their running-text form (Ġhospitalization), placed before added tokens
        expected_ids={"hospitalization": 512, "vaccination": 513, "COVID-19": 514, "[special1]": 515},
    ),
}


@dataclass
class Appended:
    name: str
    case: Case
    source: Path
    out: Path
    source_digests_before: dict[str, str]
    plan: dict[str, Any]
    _cache: dict[str, Any] = field(default_factory=dict)

    def model(self, which: str) -> tuple[PreTrainedModel, dict[str, Any]]:
        """The output (``"out"``) or source (``"source"``) model and its loading info, loaded once."""
        if which not in self._cache:
            path = self.out if which == "out" else self.source
            model, info = quiet_load(self.case.auto, path, output_loading_info=True)
            model.eval()
            self._cache[which] = (model, info)
        return self._cache[which]


class AppendCache:
    def __init__(self, cache: CheckpointCache, root: Path) -> None:
        self._checkpoints = cache
        self._root = root
        self._done: dict[str, Appended] = {}

    def get(self, name: str) -> Appended:
        if name not in self._done:
            case = CASES[name]
            work = self._root / name
            source = Path(shutil.copytree(self._checkpoints.get(name, case.builder), work / "source"))
            before = file_digests(source)
            pad = ["--pad-to-multiple-of", str(case.pad)] if case.pad else []
            result = run("append", source, "--out", work / "out", *token_args(), *pad, "--json")
            assert result.exit_code == 0, result.output
            document = json.loads(result.stdout)
            assert document["verified"] is True
            self._done[name] = Appended(name, case, source, work / "out", before, document["plan"])
        return self._done[name]


@pytest.fixture(scope="module")
def append_cache(checkpoint_cache: CheckpointCache, tmp_path_factory: pytest.TempPathFactory) -> AppendCache:
    return AppendCache(checkpoint_cache, tmp_path_factory.mktemp("appended"))


@pytest.fixture(params=list(CASES))
def appended(request: pytest.FixtureRequest, append_cache: AppendCache) -> Appended:
    return append_cache.get(request.param)


def test_output_loads_without_missing_unexpected_or_mismatched_keys(appended: Appended) -> None:
    _, info = appended.model("out")
    assert loading_problems(info) == {}
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        assert not info[key], key


def test_config_input_and_output_rows_agree_and_hold_the_tokenizer(appended: Appended) -> None:
    model, _ = appended.model("out")
    tokenizer = AutoTokenizer.from_pretrained(appended.out)
    rows_in = model.get_input_embeddings().weight.shape[0]
    rows_out = model.get_output_embeddings().weight.shape[0]
    assert model.config.vocab_size == rows_in == rows_out >= len(tokenizer)
    config = json.loads((appended.out / "config.json").read_text(encoding="utf-8"))
    assert config["vocab_size"] == rows_in
    saved = state_dict(appended.out)
    assert {saved[name].shape[0] for name in appended.case.vocab_tensors} == {rows_in}
    old_size = len(AutoTokenizer.from_pretrained(appended.source))
    assert len(tokenizer) == old_size + len(TOKENS) + len(SPECIAL)
    if appended.case.pad:
        assert rows_in % appended.case.pad == 0
        assert rows_in == -(-len(tokenizer) // appended.case.pad) * appended.case.pad
    else:
        assert rows_in == len(tokenizer)


def test_old_rows_and_other_tensors_are_bit_identical(appended: Appended) -> None:
    before, after = state_dict(appended.source), state_dict(appended.out)
    assert set(after) == set(before)
    for name, tensor in before.items():
        if name in appended.case.vocab_tensors:
            old = tensor.shape[0]
            assert after[name].shape[0] > old, name
            assert after[name].dtype == tensor.dtype
            assert torch.equal(after[name][:old], tensor), name
        else:
            assert torch.equal(after[name], tensor), name


def test_logits_of_old_tokens_match_the_source_on_the_old_columns(appended: Appended) -> None:
    out_model, _ = appended.model("out")
    src_model, _ = appended.model("source")
    expected = old_text_logits(src_model, appended.source)
    actual = old_text_logits(out_model, appended.source)
    old = expected.shape[-1]
    assert actual.shape[-1] > old
    torch.testing.assert_close(actual[..., :old], expected, atol=1e-5, rtol=0)


def test_tying_is_as_in_the_source(appended: Appended) -> None:
    model, _ = appended.model("out")
    inputs, outputs = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    keys_before, keys_after = saved_keys(appended.source), saved_keys(appended.out)
    assert keys_after == keys_before
    if appended.case.tied:
        assert outputs.data_ptr() == inputs.data_ptr()
        assert "lm_head.weight" not in keys_after
        if (appended.out / "pytorch_model.bin").exists():
            # transformers 4.x style: the decoder is saved under its own name but shares the embedding's storage
            saved = state_dict(appended.out)
            decoder, embedding = saved["cls.predictions.decoder.weight"], saved[BERT_EMBEDDING]
            assert decoder.untyped_storage().data_ptr() == embedding.untyped_storage().data_ptr()
        else:
            assert "cls.predictions.decoder.weight" not in keys_after
    else:
        assert "lm_head.weight" in keys_after
        assert outputs.data_ptr() != inputs.data_ptr()
        assert not torch.equal(outputs[: len(inputs) // 2], inputs[: len(inputs) // 2])


def test_each_new_token_is_one_new_id(appended: Appended) -> None:
    tokenizer = AutoTokenizer.from_pretrained(appended.out)
    old_size = len(AutoTokenizer.from_pretrained(appended.source))
    # words in running text (after "a "): byte-level BPE stores them as Ġword; added and special tokens alone
    context = tokenizer.encode("a", add_special_tokens=False)
    words = [t for t in TOKENS if t.isalpha()]
    ids = {t: tokenizer.encode(f"a {t}", add_special_tokens=False)[len(context) :] for t in words}
    ids |= {t: tokenizer.encode(t, add_special_tokens=False) for t in (*TOKENS, *SPECIAL) if t not in words}
    assert ids == {token: [idx] for token, idx in appended.case.expected_ids.items()}
    assert sorted(appended.case.expected_ids.values()) == list(range(old_size, old_size + len(ids)))
    placements = {p["token"]: (p["id"], p["slot"]) for p in appended.plan["placements"]}
    assert placements == {token: (idx, "new") for token, idx in appended.case.expected_ids.items()}


def test_source_is_not_modified(appended: Appended) -> None:
    assert file_digests(appended.source) == appended.source_digests_before


def test_slots_of_the_output_list_pad_rows_as_padding_and_new_ids_as_taken(appended: Appended) -> None:
    result = run("slots", appended.out, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    size = report["vocab_size"]["tokenizer"]
    rows = report["vocab_size"]["embeddings"]
    padding = [slot["id"] for slot in report["slots"] if slot["kind"] == "padding"]
    assert padding == list(range(size, rows))
    assert report["taken"] == sorted(appended.case.expected_ids.values())
    assert not set(report["taken"]) & {slot["id"] for slot in report["slots"]}
    if appended.case.pad:
        assert padding  # 516 ids in 576 rows


def test_sharded_index_is_kept_and_the_shard_without_vocabulary_is_byte_identical(append_cache: AppendCache) -> None:
    appended = append_cache.get("llama_sharded")
    index_name = "model.safetensors.index.json"
    before = json.loads((appended.source / index_name).read_text(encoding="utf-8"))
    after = json.loads((appended.out / index_name).read_text(encoding="utf-8"))
    assert after["weight_map"] == before["weight_map"]
    shards = sorted(set(before["weight_map"].values()))
    assert len(shards) >= 2
    assert sorted(p.name for p in appended.out.glob("*.safetensors")) == shards
    vocab_shards = {before["weight_map"][name] for name in appended.case.vocab_tensors}
    untouched = [shard for shard in shards if shard not in vocab_shards]
    assert untouched
    for shard in untouched:
        assert (appended.out / shard).read_bytes() == (appended.source / shard).read_bytes(), shard
    tensor_bytes = 0
    parameters = 0
    for shard in shards:
        for entry in read_header(appended.out / shard).entries:
            tensor_bytes += entry.end - entry.begin
            parameters += math.prod(entry.spec.shape)
    assert after["metadata"]["total_size"] == tensor_bytes
    if "total_parameters" in before["metadata"]:  # written by transformers 5
        assert after["metadata"]["total_parameters"] == parameters


# --------------------------------------------------------------------------------------------------
# Tokenizer files of an append
# --------------------------------------------------------------------------------------------------


def test_vocab_words_get_vocab_txt_lines_and_added_tokens_come_after_them(append_cache: AppendCache) -> None:
    appended = append_cache.get("bert")
    old_vocab = (appended.source / "vocab.txt").read_text(encoding="utf-8").splitlines()
    new_vocab = (appended.out / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert new_vocab == [*old_vocab, "hospitalization", "vaccination"]  # dense: line number == id
    ids = appended.case.expected_ids
    assert min(ids["COVID-19"], ids["[special1]"]) > ids["vaccination"]

    tokenizer_json = json.loads((appended.out / "tokenizer.json").read_text(encoding="utf-8"))
    assert tokenizer_json["model"]["vocab"]["hospitalization"] == 2000
    assert tokenizer_json["model"]["vocab"]["vaccination"] == 2001
    assert len(tokenizer_json["model"]["vocab"]) == len(new_vocab)
    added = {t["content"]: t for t in tokenizer_json["added_tokens"] if t["id"] >= 2000}
    assert set(added) == {"covid-19", "[special1]"}  # stored as the normalizer (lowercasing) produces it
    covid, special = added["covid-19"], added["[special1]"]
    assert (covid["id"], covid["special"], covid["normalized"]) == (2002, False, True)
    assert (special["id"], special["special"]) == (2003, True)

    added_tokens_json = json.loads((appended.out / "added_tokens.json").read_text(encoding="utf-8"))
    assert added_tokens_json == {"covid-19": 2002, "[special1]": 2003}
    config = json.loads((appended.out / "tokenizer_config.json").read_text(encoding="utf-8"))
    decoder = config["added_tokens_decoder"]
    assert {key: decoder[key]["content"] for key in decoder if int(key) >= 2000} == {
        "2002": "covid-19",
        "2003": "[special1]",
    }
    special_map = json.loads((appended.out / "special_tokens_map.json").read_text(encoding="utf-8"))
    assert "[special1]" in special_map["additional_special_tokens"]

    tokenizer = AutoTokenizer.from_pretrained(appended.out)
    assert tokenizer.encode("covid-19 hospitalization [special1]", add_special_tokens=False) == [2002, 2000, 2003]
    assert "[special1]" in tokenizer.all_special_tokens


# --------------------------------------------------------------------------------------------------
# --weights-format pytorch from safetensors
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def converted(checkpoint_cache: CheckpointCache, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(source, output) of an append that also converts safetensors to ``pytorch_model.bin``."""
    root = tmp_path_factory.mktemp("converted")
    source = Path(shutil.copytree(checkpoint_cache.get("bert", CASES["bert"].builder), root / "source"))
    out = root / "out"
    result = run("append", source, "--out", out, *token_args(), "--weights-format", "pytorch", "--quiet")
    assert result.exit_code == 0, result.output
    return source, out


def test_weights_format_pytorch_writes_a_bin_that_transformers_5_loads(converted: tuple[Path, Path]) -> None:
    source, out = converted
    assert (out / "pytorch_model.bin").is_file()
    assert not list(out.glob("*.safetensors"))

    base, info = quiet_load(AutoModel, out, output_loading_info=True)
    assert not info["mismatched_keys"]
    assert base.get_input_embeddings().weight.shape[0] == base.config.vocab_size == 2004

    model, info = quiet_load(AutoModelForMaskedLM, out, output_loading_info=True)
    assert loading_problems(info) == {}
    source_model = quiet_load(AutoModelForMaskedLM, source)
    expected = old_text_logits(source_model, source)
    torch.testing.assert_close(old_text_logits(model, source)[..., : expected.shape[-1]], expected, atol=1e-5, rtol=0)

    saved, original = state_dict(out), state_dict(source)
    assert torch.equal(saved[BERT_EMBEDDING][:2000], original[BERT_EMBEDDING])


def test_weights_format_pytorch_restores_tied_aliases_as_one_storage(converted: tuple[Path, Path]) -> None:
    """transformers 4.x wrote a tied MLM decoder under its own name too; the .bin gets it back, sharing storage."""
    source, out = converted
    assert "cls.predictions.decoder.weight" not in state_dict(source)
    saved = state_dict(out)
    decoder = saved["cls.predictions.decoder.weight"]
    assert decoder.untyped_storage().data_ptr() == saved[BERT_EMBEDDING].untyped_storage().data_ptr()
    assert decoder.shape == saved[BERT_EMBEDDING].shape


def test_weights_format_pytorch_from_sharded_safetensors_keeps_shards_and_index_totals(
    llama_sharded_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    pad = ("--pad-to-multiple-of", "64")
    result = run("append", llama_sharded_dir, "--out", out, *token_args(), *pad, "--weights-format", "pytorch", "-q")
    assert result.exit_code == 0, result.output
    source_index = json.loads((llama_sharded_dir / "model.safetensors.index.json").read_text(encoding="utf-8"))
    index = json.loads((out / "pytorch_model.bin.index.json").read_text(encoding="utf-8"))
    shards = sorted(out.glob("pytorch_model-*.bin"))
    assert len(shards) == len(set(source_index["weight_map"].values()))
    assert not list(out.glob("*.safetensors"))
    assert set(index["weight_map"]) == set(source_index["weight_map"])
    tensors = {}
    for shard in shards:
        loaded = torch.load(shard, map_location="cpu", weights_only=True)
        assert {name for name, file in index["weight_map"].items() if file == shard.name} == set(loaded)
        tensors.update(loaded)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in tensors.values())
    assert index["metadata"]["total_parameters"] == sum(t.numel() for t in tensors.values())
    model, info = quiet_load(AutoModelForCausalLM, out, output_loading_info=True)
    assert loading_problems(info) == {}
    assert model.config.vocab_size == model.get_input_embeddings().weight.shape[0] == 576


_TF424_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch, transformers
    from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer
    from transformers.utils import logging
    logging.set_verbosity_error()
    out, ids_file, logits_file = sys.argv[1:4]
    base, base_info = AutoModel.from_pretrained(out, output_loading_info=True)
    mlm, mlm_info = AutoModelForMaskedLM.from_pretrained(out, output_loading_info=True)
    mlm.eval()
    ids = torch.tensor(json.load(open(ids_file)))
    with torch.no_grad():
        torch.save(mlm(input_ids=ids).logits, logits_file)
    tokens = {"fast": AutoTokenizer.from_pretrained(out), "slow": AutoTokenizer.from_pretrained(out, use_fast=False)}
    words = ["COVID-19", "hospitalization", "vaccination", "[special1]"]
    print(json.dumps({
        "version": transformers.__version__,
        "base_rows": base.get_input_embeddings().weight.shape[0],
        "base_mismatched": base_info["mismatched_keys"],
        "mlm_rows": mlm.get_output_embeddings().weight.shape[0],
        "mlm_tied": mlm.get_output_embeddings().weight.data_ptr() == mlm.get_input_embeddings().weight.data_ptr(),
        "mlm_missing": mlm_info["missing_keys"],
        "mlm_unexpected": mlm_info["unexpected_keys"],
        "mlm_mismatched": mlm_info["mismatched_keys"],
        "vocab_size": base.config.vocab_size,
        "ids": {k: {w: t.encode(w, add_special_tokens=False) for w in words} for k, t in tokens.items()},
    }))
    """
)


@pytest.fixture(scope="module")
def tf424(converted: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """What transformers 4.24 (in its own interpreter) sees of the converted output, and its logits file."""
    python = os.environ.get("VOCABSURGEON_TF424_PYTHON")
    if not python:
        pytest.skip("VOCABSURGEON_TF424_PYTHON is not set")
    source, out = converted
    work = tmp_path_factory.mktemp("tf424")
    ids = AutoTokenizer.from_pretrained(source)(OLD_TEXT)["input_ids"]
    (work / "ids.json").write_text(json.dumps([ids]), encoding="utf-8")
    logits_file = work / "logits.pt"
    completed = subprocess.run(
        [python, "-c", _TF424_SCRIPT, str(out), str(work / "ids.json"), str(logits_file)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1]), logits_file


@pytest.mark.compat
def test_weights_format_pytorch_loads_with_transformers_424(
    converted: tuple[Path, Path], tf424: tuple[dict[str, Any], Path]
) -> None:
    source, _ = converted
    report, logits_file = tf424
    assert report["version"].startswith("4.24")
    assert report["base_rows"] == report["mlm_rows"] == report["vocab_size"] == 2004
    assert (report["base_mismatched"], report["mlm_mismatched"], report["mlm_unexpected"]) == ([], [], [])
    assert report["mlm_tied"] is True
    expected_ids = {"hospitalization": [2000], "vaccination": [2001], "COVID-19": [2002], "[special1]": [2003]}
    assert report["ids"] == {"fast": expected_ids, "slow": expected_ids}

    source_model = quiet_load(AutoModelForMaskedLM, source)
    expected = old_text_logits(source_model, source)
    actual = torch.load(logits_file, weights_only=True)
    torch.testing.assert_close(actual[..., : expected.shape[-1]], expected, atol=1e-5, rtol=0)


@pytest.mark.compat
def test_converted_bin_has_no_missing_keys_for_transformers_424(tf424: tuple[dict[str, Any], Path]) -> None:
    report, _ = tf424
    assert report["mlm_missing"] == []


# --------------------------------------------------------------------------------------------------
# --init
# --------------------------------------------------------------------------------------------------


def _init_rows(bert: Path, tmp_path: Path, init: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    out = tmp_path / f"out-{init}"
    result = run("append", bert, "--out", out, *token_args(), "--init", init, "--quiet")
    assert result.exit_code == 0, result.output
    return state_dict(bert), state_dict(out)


def test_init_zeros_gives_exact_zero_rows(bert_dir: Path, tmp_path: Path) -> None:
    _, after = _init_rows(bert_dir, tmp_path, "zeros")
    assert torch.count_nonzero(after[BERT_EMBEDDING][2000:]) == 0
    assert torch.count_nonzero(after[BERT_BIAS][2000:]) == 0
    assert after[BERT_EMBEDDING].shape[0] == 2004


def test_init_normal_draws_small_random_rows(bert_dir: Path, tmp_path: Path) -> None:
    _, after = _init_rows(bert_dir, tmp_path, "normal")
    rows = after[BERT_EMBEDDING][2000:]
    assert torch.isfinite(rows).all()
    assert all(torch.count_nonzero(row) == row.numel() for row in rows)
    assert len({tuple(row.tolist()) for row in rows}) == len(rows)  # four different draws
    std = float(rows.std())
    assert 0.01 < std < 0.04, std  # N(0, initializer_range=0.02)
    assert torch.count_nonzero(after[BERT_BIAS][2000:]) == 0  # biases start at zero, as in transformers


def test_init_mean_is_the_mean_of_the_non_placeholder_rows(bert_dir: Path, tmp_path: Path) -> None:
    before, after = _init_rows(bert_dir, tmp_path, "mean")
    vocab = (bert_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
    trained = [i for i, token in enumerate(vocab) if not PLACEHOLDER.fullmatch(token)]
    assert 1500 < len(trained) < len(vocab)
    for name in (BERT_EMBEDDING, BERT_BIAS):
        expected = before[name][trained].double().mean(0).float()
        for row in after[name][2000:]:
            torch.testing.assert_close(row, expected, atol=1e-6, rtol=0)
    # ... and not the mean over every row, placeholders included
    everything = before[BERT_EMBEDDING].double().mean(0).float()
    assert not torch.allclose(after[BERT_EMBEDDING][2000], everything, atol=1e-6, rtol=0)


def test_init_subword_mean_is_the_mean_of_the_source_pieces(bert_dir: Path, tmp_path: Path) -> None:
    before, after = _init_rows(bert_dir, tmp_path, "subword-mean")
    tokenizer = AutoTokenizer.from_pretrained(bert_dir)
    ids = CASES["bert"].expected_ids
    for token in (*TOKENS, *SPECIAL):
        pieces = tokenizer.encode(token, add_special_tokens=False)
        assert len(pieces) >= 2, (token, pieces)
        assert tokenizer.unk_token_id not in pieces, (token, pieces)
        for name in (BERT_EMBEDDING, BERT_BIAS):
            expected = before[name][pieces].double().mean(0).float()
            torch.testing.assert_close(after[name][ids[token]], expected, atol=1e-6, rtol=0)


def test_init_keep_is_not_a_choice_of_append(bert_dir: Path, tmp_path: Path) -> None:
    """The --init choices come from the registry of initializations: append offers no init it then refuses."""
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run("append", bert_dir, "--out", tmp_path / "out", "--token", "hospitalization", "--init", "keep")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "'keep' is not one of 'subword-mean', 'distill', 'mean', 'zeros', 'normal'." in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert "keep" not in run("append", "--help").stdout.split("--init")[1].split("--")[0]
    assert "keep:" in run("remap", "--help").stdout


# --------------------------------------------------------------------------------------------------
# Padding rows, remap --allow-append
# --------------------------------------------------------------------------------------------------


def test_append_to_a_padded_checkpoint_fills_padding_rows(bert_padded_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    tokens = ("hospitalization", "vaccination", "COVID-19")
    result = run("append", bert_padded_dir, "--out", out, *token_args(tokens, ()), "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)["plan"]
    assert (plan["rows_before"], plan["rows_after"]) == (2048, 2048)
    assert plan["config"] == {}
    assert sorted((p["id"], p["slot"]) for p in plan["placements"]) == [(i, "padding") for i in (2003, 2004, 2005)]

    tokenizer = AutoTokenizer.from_pretrained(out)
    assert len(tokenizer) == 2006
    assert sorted(tokenizer.encode(t, add_special_tokens=False)[0] for t in tokens) == [2003, 2004, 2005]
    assert all(len(tokenizer.encode(t, add_special_tokens=False)) == 1 for t in tokens)
    model, info = quiet_load(AutoModelForMaskedLM, out, output_loading_info=True)
    assert loading_problems(info) == {}
    assert model.config.vocab_size == model.get_input_embeddings().weight.shape[0] == 2048
    before, after = state_dict(bert_padded_dir), state_dict(out)
    for name in (BERT_EMBEDDING, BERT_BIAS):
        assert after[name].shape[0] == 2048
        assert torch.equal(after[name][:2003], before[name][:2003])
        assert torch.equal(after[name][2006:], before[name][2006:])  # the padding rows nobody took stay as they were


def test_remap_allow_append_fills_slots_first_then_appends(llama_dir: Path, tmp_path: Path) -> None:
    tokens = tuple(f"medword{i}" for i in range(10))  # 8 reserved placeholders (504-511) for 10 tokens
    out = tmp_path / "out"
    result = run("remap", llama_dir, "--out", out, *token_args(tokens, ()), "--allow-append", "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)["plan"]
    placed = [(p["token"], p["id"], p["slot"]) for p in plan["placements"]]
    assert placed == [
        *[(f"medword{i}", 504 + i, "placeholder") for i in range(8)],
        ("medword8", 512, "new"),
        ("medword9", 513, "new"),
    ]
    assert (plan["rows_before"], plan["rows_after"]) == (512, 514)

    tokenizer = AutoTokenizer.from_pretrained(out)
    assert [tokenizer.encode(t, add_special_tokens=False) for t in tokens] == [[504 + i] for i in range(10)]
    model, info = quiet_load(AutoModelForCausalLM, out, output_loading_info=True)
    assert loading_problems(info) == {}
    assert model.config.vocab_size == model.get_input_embeddings().weight.shape[0] == 514


def test_plain_remap_with_more_tokens_than_slots_fails_and_writes_nothing(llama_dir: Path, tmp_path: Path) -> None:
    tokens = tuple(f"medword{i}" for i in range(10))
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run("remap", llama_dir, "--out", tmp_path / "out", *token_args(tokens, ()))
    assert result.exit_code == 1
    lines = one_line_error(result)
    assert "8 free slots" in lines[0]
    assert "--allow-append" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


# --------------------------------------------------------------------------------------------------
# Progress bar
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def fake_tty(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Make CliRunner's streams claim to be a terminal (call the returned function to switch it on)."""
    import click.testing

    def switch_on() -> None:
        monkeypatch.setattr(click.testing._NamedTextIOWrapper, "isatty", lambda self: True)

    return switch_on


def _append_output(bert: Path, out: Path, *extra: str) -> Result:
    result = run("append", bert, "--out", out, "--token", "hospitalization", "--no-verify", *extra)
    assert result.exit_code == 0, result.output
    return result


def test_no_progress_bar_when_stderr_is_not_a_terminal(bert_dir: Path, tmp_path: Path) -> None:
    result = _append_output(bert_dir, tmp_path / "out")
    assert "writing weights" not in result.output
    assert result.stderr == ""


def test_no_progress_bar_with_quiet_even_on_a_terminal(
    bert_dir: Path, tmp_path: Path, fake_tty: Callable[[], None]
) -> None:
    fake_tty()
    result = _append_output(bert_dir, tmp_path / "quiet", "--quiet")
    assert "writing weights" not in result.output
    assert result.stderr == ""
    # control: the same terminal without --quiet does draw the bar, so the check above means something
    shown = _append_output(bert_dir, tmp_path / "shown")
    assert "writing weights" in shown.stderr
