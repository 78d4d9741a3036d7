"""Tokenizer families behind one interface: the registry's invariants, slow-only byte-level BPE (GPT-2's
vocab.json + merges.txt, no tokenizer.json) end to end, and a Llama 3 style tiktoken ``tokenizer.model`` beside a
tokenizer.json, which is copied as it is instead of blocking the surgery."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from checkpoints import GPT2_EOS, CheckpointCache, build_gpt2_slow, write_tiktoken_model
from click.testing import CliRunner, Result
from transformers import AutoModelForCausalLM, AutoTokenizer

from vocabsurgeon.auditing import audit
from vocabsurgeon.backend import load_backend
from vocabsurgeon.cli import main
from vocabsurgeon.families import FAMILIES, Family, TokenizerFiles, family_named
from vocabsurgeon.inventory import read_inventory

PLAIN_TEXTS = (
    "The patients were admitted to the hospital in New York last week.",
    "A quick brown fox jumps over the lazy dog, doesn't it?",
    "Numbers like 3.14, 1,000 and 2026-11-25 and symbols: @#$%^&*()!",
    "Ünïcödé àccents and 日本語",
)
NEW_WORDS = ("hospitalization", "thrombocyte")


def run(*args: str | Path) -> Result:
    result = CliRunner().invoke(main, [str(arg) for arg in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def gpt2_dir(checkpoint_cache: CheckpointCache, tmp_path: Path) -> Path:
    """GPT-2 style slow-only checkpoint: 395 BPE entries, madeupword0-3 at 395-398, <|endoftext|> at 399."""
    return checkpoint_cache.copy("gpt2_slow", build_gpt2_slow, tmp_path)


# --------------------------------------------------------------------------------------------------
# the registry
# --------------------------------------------------------------------------------------------------


def _no_tokenizer(tmp_path: Path) -> TokenizerFiles:
    return TokenizerFiles(tmp_path, (), None, {}, {}, {}, None)


@pytest.mark.parametrize("family", FAMILIES, ids=lambda family: family.name)
def test_every_family_is_found_by_name_and_claims_no_empty_directory(family: Family, tmp_path: Path) -> None:
    assert family_named(family.name) is family
    assert not family.detects(_no_tokenizer(tmp_path))
    assert list(family.audit(_no_tokenizer(tmp_path))) == []


def test_family_names_are_unique() -> None:
    assert len({family.name for family in FAMILIES}) == len(FAMILIES)


def test_vocabulary_types_are_importable_from_the_inventory_as_before() -> None:
    from vocabsurgeon import inventory, vocabulary

    assert inventory.Vocabulary is vocabulary.Vocabulary
    assert inventory.AddedToken is vocabulary.AddedToken


# --------------------------------------------------------------------------------------------------
# slow-only byte-level BPE
# --------------------------------------------------------------------------------------------------


def test_slow_bpe_is_read_from_vocab_json_and_encodes_as_transformers(gpt2_dir: Path) -> None:
    inventory = read_inventory(gpt2_dir)
    assert inventory.vocabulary is not None
    assert inventory.vocabulary.family == "byte-level-bpe"
    assert inventory.vocabulary.size == 400
    assert inventory.vocabulary.token_to_id[GPT2_EOS] == 399
    backend = load_backend(inventory)
    library = AutoTokenizer.from_pretrained(str(gpt2_dir))
    for text in PLAIN_TEXTS:
        assert backend.encode(text) == library.encode(text, add_special_tokens=False)


def test_slow_bpe_slots_and_audit(gpt2_dir: Path) -> None:
    result = run("slots", gpt2_dir, "--json")
    report = json.loads(result.output)
    assert (report["free"], report["placeholder"], report["padding"]) == (4, 4, 0)
    assert [slot["token"] for slot in report["slots"]] == [f"madeupword{i}" for i in range(4)]
    assert report["vocab_size"] == {"tokenizer": 400, "config": 400, "embeddings": 400}
    assert "ok" in run("audit", gpt2_dir).output


def test_slow_bpe_refuses_an_added_token_that_would_not_decode_back(gpt2_dir: Path, tmp_path: Path) -> None:
    """The ByteLevel decoder maps an added token's Latin-1 letters as bytes (``naïveté`` -> ``na�vet�``): the
    surgery's check refuses it, one line, nothing written."""
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    result = CliRunner().invoke(main, ["append", str(gpt2_dir), "--out", str(outputs / "out"), "--token", "naïveté"])
    assert result.exit_code == 1
    assert "texts with new words decode to themselves" in result.stderr
    assert "na\ufffdvet\ufffd" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert list(outputs.iterdir()) == []


def test_slow_bpe_append(gpt2_dir: Path, tmp_path: Path) -> None:
    """Each new word is one id alone and inside a sentence. Byte-level BPE gives the space before a word to the
    word (``Ġword``); an added token ``word`` has no space, so mid-sentence the space is its own id (``Ġ``) and the
    word the added token's: what the tool guarantees is the word's one id, not the absorbed space."""
    out = tmp_path / "out"
    args = [arg for word in NEW_WORDS for arg in ("--token", word)]
    run("append", gpt2_dir, "--out", out, *args)
    assert json.loads((out / "added_tokens.json").read_text(encoding="utf-8")) == {
        "hospitalization": 400,
        "thrombocyte": 401,
    }
    assert not (out / "tokenizer.json").exists()
    assert (out / "vocab.json").read_bytes() == (gpt2_dir / "vocab.json").read_bytes()
    assert (out / "merges.txt").read_bytes() == (gpt2_dir / "merges.txt").read_bytes()

    source = AutoTokenizer.from_pretrained(str(gpt2_dir))
    for use_fast in (True, False):  # transformers 5 loads the same class for both
        tokenizer = AutoTokenizer.from_pretrained(str(out), use_fast=use_fast)
        assert len(tokenizer) == 402
        for idx, word in enumerate(NEW_WORDS, start=400):
            assert tokenizer.encode(word, add_special_tokens=False) == [idx]
            ids = tokenizer.encode(f"The patient's {word} was noted.", add_special_tokens=False)
            assert ids.count(idx) == 1
            assert tokenizer.decode(ids) == f"The patient's {word} was noted."
        for text in PLAIN_TEXTS:
            assert tokenizer.encode(text, add_special_tokens=False) == source.encode(text, add_special_tokens=False)

    model, info = AutoModelForCausalLM.from_pretrained(str(out), output_loading_info=True)
    assert info["missing_keys"] == [] or info["missing_keys"] == set()
    assert model.get_input_embeddings().weight.shape[0] == 402
    assert "ok" in run("verify", out, "--against", gpt2_dir).output


def test_slow_bpe_remap_renames_the_placeholder_in_vocab_json(gpt2_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run("remap", gpt2_dir, "--out", out, "--token", "hospitalization", "--special-token", "<|note|>")
    vocab = json.loads((out / "vocab.json").read_text(encoding="utf-8"))
    source_vocab = json.loads((gpt2_dir / "vocab.json").read_text(encoding="utf-8"))
    assert list(vocab)[395:397] == ["hospitalization", "<|note|>"]
    assert {k: v for k, v in vocab.items() if v not in (395, 396)} == {
        k: v for k, v in source_vocab.items() if v not in (395, 396)
    }
    # the renamed entries are added tokens too: a vocab.json entry alone is reachable only through merges
    assert json.loads((out / "added_tokens.json").read_text(encoding="utf-8")) == {
        "hospitalization": 395,
        "<|note|>": 396,
    }
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    assert tokenizer.encode("hospitalization <|note|>", add_special_tokens=False) == [395, 220, 396]
    assert "ok" in run("verify", out, "--against", gpt2_dir).output


def test_vocab_json_without_merges_is_still_refused(gpt2_dir: Path) -> None:
    (gpt2_dir / "merges.txt").unlink()
    result = CliRunner().invoke(main, ["slots", str(gpt2_dir)])
    assert result.exit_code == 1
    assert "no tokenizer.json" in result.output


# --------------------------------------------------------------------------------------------------
# a tiktoken tokenizer.model beside tokenizer.json (Llama 3)
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def llama_tiktoken_dir(llama_dir: Path) -> Path:
    write_tiktoken_model(llama_dir / "tokenizer.model")
    return llama_dir


def test_tiktoken_model_is_an_audit_note_not_an_error(llama_tiktoken_dir: Path) -> None:
    report = audit(read_inventory(llama_tiktoken_dir))
    assert report.ok
    notes = [f for f in report.findings if f.code == "foreign-tokenizer-model"]
    assert [(f.severity, f.message) for f in notes] == [
        (
            "info",
            "tokenizer.model is not a SentencePiece model (a tiktoken BPE file): it is copied as it is, not kept in"
            " step (transformers reads tokenizer.json)",
        )
    ]
    assert "ok" in run("audit", llama_tiktoken_dir).output


@pytest.mark.parametrize("command", ["remap", "append"])
def test_tiktoken_model_does_not_block_surgery(llama_tiktoken_dir: Path, tmp_path: Path, command: str) -> None:
    out = tmp_path / "out"
    run(command, llama_tiktoken_dir, "--out", out, "--token", "hospitalization")
    assert (out / "tokenizer.model").read_bytes() == (llama_tiktoken_dir / "tokenizer.model").read_bytes()
    tokenizer = AutoTokenizer.from_pretrained(str(out), use_fast=True)
    # a word is the vocabulary entry of its running-text form (Ġhospitalization): one id after a space
    context = tokenizer.encode("a", add_special_tokens=False)
    *head, idx = tokenizer.encode("a hospitalization", add_special_tokens=False)
    assert head == context
    ids = tokenizer.encode("The patient's hospitalization was noted.", add_special_tokens=False)
    assert ids.count(idx) == 1
    assert "ok" in run("verify", out, "--against", llama_tiktoken_dir).output


def test_a_broken_tokenizer_model_is_a_warning(llama_dir: Path) -> None:
    (llama_dir / "tokenizer.model").write_bytes(b"\xff\xff\xff\xff not a protobuf")
    findings = [f for f in audit(read_inventory(llama_dir)).findings if f.code == "foreign-tokenizer-model"]
    assert [f.severity for f in findings] == ["warning"]
