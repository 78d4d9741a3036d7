"""Checks that the checkpoint builders in ``tests/checkpoints.py`` produce what they claim."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import sentencepiece as spm
import torch
from checkpoints import (
    BERT_SPECIAL_TOKENS,
    DEFAULT_WORDPIECE_SIZE,
    LLAMA_BOS,
    LLAMA_EOS,
    CheckpointCache,
    build_bert,
    build_llama_bpe,
    build_sentencepiece_unigram,
    hf_cache_snapshot,
    minilm_dir,
    truncate_weights,
    wordpiece_vocab,
)
from huggingface_hub import constants as hf_constants
from huggingface_hub import snapshot_download, try_to_load_from_cache
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
)


def _safetensors_keys(path: Path) -> set[str]:
    """All tensor names of a (possibly sharded) safetensors checkpoint directory."""
    keys: set[str] = set()
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(str(file), "pt") as fh:
            keys.update(fh.keys())
    return keys


def _tensor(path: Path, name: str) -> torch.Tensor:
    """Load one tensor by name from a (possibly sharded) safetensors checkpoint directory."""
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(str(file), "pt") as fh:
            if name in set(fh.keys()):
                return fh.get_tensor(name)
    raise KeyError(name)


def _vocab_txt(path: Path) -> list[str]:
    return (path / "vocab.txt").read_text(encoding="utf-8").splitlines()


# ------------------------------------------------------------------------------------------------
# wordpiece_vocab
# ------------------------------------------------------------------------------------------------


def _unused_ids(vocab: list[str]) -> dict[str, int]:
    return {tok: i for i, tok in enumerate(vocab) if tok.startswith("[unused")}


def test_wordpiece_layout_start() -> None:
    vocab = wordpiece_vocab("start")
    assert len(vocab) == 2000 == len(set(vocab))
    assert vocab[0] == "[PAD]"
    assert vocab[1:100] == [f"[unused{i}]" for i in range(99)]
    assert vocab[100:104] == ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert vocab[104:205] == [f"[unused{i}]" for i in range(99, 200)]
    assert sorted(_unused_ids(vocab).values()) == [*range(1, 100), *range(104, 205)]


def test_wordpiece_layout_split() -> None:
    vocab = wordpiece_vocab("split")
    assert vocab[0] == "[PAD]"
    assert vocab[1:100] == [f"[unused{i}]" for i in range(1, 100)]
    assert vocab[100:106] == ["[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused100]", "[unused101]"]
    assert "[unused0]" not in vocab
    assert len(_unused_ids(vocab)) == 101


def test_wordpiece_layout_end() -> None:
    vocab = wordpiece_vocab("end")
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert vocab[-100:] == [f"[unused{i}]" for i in range(100)]
    assert sorted(_unused_ids(vocab).values()) == list(range(1900, 2000))


def test_wordpiece_layout_none_and_options() -> None:
    vocab = wordpiece_vocab("none")
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert not _unused_ids(vocab)
    natural = wordpiece_vocab("none", size=None)
    assert vocab[: len(natural)] == natural  # fillers only extend the tail
    assert len(wordpiece_vocab("start", unused=300)) == 2000
    assert wordpiece_vocab("end", 1600, unused=7)[-7:] == [f"[unused{i}]" for i in range(7)]
    for tok in (
        "co",
        "##vid",
        "hospital",
        "##ization",
        "patients",
        "need",
        "now",
        "the",
        "a",
        "new",
        "york",
        "-",
        "19",
        "1",
        "9",
        "한",
        "국",
        "##어",
    ):
        assert tok in natural, tok
    for tok in ("covid", "cov", "covi", "hospitalization"):
        assert tok not in vocab
    with pytest.raises(ValueError, match="at least 99"):
        wordpiece_vocab("start", unused=5)
    with pytest.raises(ValueError, match="smaller than"):
        wordpiece_vocab("none", size=10)
    with pytest.raises(ValueError, match="unknown layout"):
        wordpiece_vocab("bogus")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------
# BERT
# ------------------------------------------------------------------------------------------------


def test_bert_dir_files_and_loading(bert_dir: Path) -> None:
    assert {p.name for p in bert_dir.iterdir()} == {
        "config.json",
        "model.safetensors",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
    }
    vocab = _vocab_txt(bert_dir)
    assert vocab == wordpiece_vocab("start")

    tok_config = json.loads((bert_dir / "tokenizer_config.json").read_text())
    assert tok_config["tokenizer_class"] == "BertTokenizer"
    assert tok_config["do_lower_case"] is True
    assert "backend" not in tok_config
    assert "is_local" not in tok_config
    assert {tok_config[k] for k in BERT_SPECIAL_TOKENS} == set(BERT_SPECIAL_TOKENS.values())
    assert {v["content"]: int(k) for k, v in tok_config["added_tokens_decoder"].items()} == {
        "[PAD]": 0,
        "[UNK]": 100,
        "[CLS]": 101,
        "[SEP]": 102,
        "[MASK]": 103,
    }
    assert json.loads((bert_dir / "special_tokens_map.json").read_text()) == BERT_SPECIAL_TOKENS
    tok_json = json.loads((bert_dir / "tokenizer.json").read_text())
    assert tok_json["model"]["type"] == "WordPiece"
    assert tok_json["model"]["vocab"] == {t: i for i, t in enumerate(vocab)}
    assert tok_json["normalizer"]["type"] == "BertNormalizer"
    assert tok_json["normalizer"]["lowercase"] is True

    tokenizer = AutoTokenizer.from_pretrained(bert_dir)
    assert len(tokenizer) == 2000
    assert tokenizer.tokenize("COVID hospitalization") == ["co", "##vid", "hospital", "##ization"]
    ids = tokenizer("patients need it now")["input_ids"]
    assert ids[0] == 101
    assert ids[-1] == 102
    assert 100 not in ids
    assert tokenizer.convert_tokens_to_ids(["[unused0]", "[unused98]", "[unused99]"]) == [1, 99, 104]

    config = AutoConfig.from_pretrained(bert_dir)
    assert (config.vocab_size, config.hidden_size, config.num_hidden_layers) == (2000, 32, 1)
    keys = _safetensors_keys(bert_dir)
    assert "cls.predictions.bias" in keys
    assert "cls.predictions.decoder.weight" not in keys
    assert _tensor(bert_dir, "bert.embeddings.word_embeddings.weight").shape == (2000, 32)
    model = AutoModelForMaskedLM.from_pretrained(bert_dir)
    assert model.cls.predictions.decoder.weight.data_ptr() == model.bert.embeddings.word_embeddings.weight.data_ptr()
    with torch.no_grad():
        logits = model(**tokenizer("new york", return_tensors="pt")).logits
    assert logits.shape == (1, 4, 2000)


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("bert_split_dir", {"[unused1]": 1, "[unused99]": 99, "[unused100]": 104, "[unused101]": 105}),
        ("bert_end_dir", {"[unused0]": 1900, "[unused99]": 1999}),
        ("bert_none_dir", {}),
    ],
)
def test_bert_layout_fixtures(fixture: str, expected: dict[str, int], request: pytest.FixtureRequest) -> None:
    path: Path = request.getfixturevalue(fixture)
    tokenizer = AutoTokenizer.from_pretrained(path)
    vocab = _vocab_txt(path)
    assert len(tokenizer) == len(vocab) == 2000
    assert {t: i for t, i in tokenizer.get_vocab().items() if t.startswith("[unused")}.items() >= expected.items()
    assert len(_unused_ids(vocab)) == {"bert_split_dir": 101, "bert_end_dir": 100, "bert_none_dir": 0}[fixture]
    assert tokenizer.tokenize("covid") == ["co", "##vid"]
    assert AutoConfig.from_pretrained(path).vocab_size == 2000


def test_bert_pytorch_dir(bert_pytorch_dir: Path) -> None:
    assert (bert_pytorch_dir / "pytorch_model.bin").is_file()
    assert not list(bert_pytorch_dir.glob("*.safetensors"))
    state = torch.load(bert_pytorch_dir / "pytorch_model.bin", weights_only=True)
    emb = state["bert.embeddings.word_embeddings.weight"]
    assert emb.shape == (2000, 32)
    assert state["cls.predictions.decoder.weight"].data_ptr() == emb.data_ptr()  # tied, shared storage
    model = AutoModelForMaskedLM.from_pretrained(bert_pytorch_dir)
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, emb)
    assert torch.equal(model.cls.predictions.bias, state["cls.predictions.bias"])


def test_bert_sharded_dir(bert_sharded_dir: Path) -> None:
    shards = sorted(bert_sharded_dir.glob("model-*-of-*.safetensors"))
    assert len(shards) >= 2
    assert not (bert_sharded_dir / "model.safetensors").exists()
    index = json.loads((bert_sharded_dir / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {s.name for s in shards}
    assert set(index["weight_map"]) == _safetensors_keys(bert_sharded_dir)
    model = AutoModelForMaskedLM.from_pretrained(bert_sharded_dir)
    emb = _tensor(bert_sharded_dir, "bert.embeddings.word_embeddings.weight")
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, emb)


def test_bert_variants(tmp_path: Path) -> None:
    base = build_bert(tmp_path / "base", mlm=False, weights="sharded", hidden=16)
    keys = _safetensors_keys(base)
    assert "embeddings.word_embeddings.weight" in keys
    assert not any(k.startswith(("bert.", "cls.")) for k in keys)
    assert AutoModel.from_pretrained(base).embeddings.word_embeddings.weight.shape == (2000, 16)

    slow = build_bert(tmp_path / "slow", tokenizer_json=False)
    assert not (slow / "tokenizer.json").exists()
    assert AutoTokenizer.from_pretrained(slow).tokenize("hospitalization") == ["hospital", "##ization"]

    cased = build_bert(tmp_path / "cased", vocab=wordpiece_vocab("end"), lowercase=False, config_vocab_size=2010)
    assert json.loads((cased / "tokenizer_config.json").read_text())["do_lower_case"] is False
    tokenizer = AutoTokenizer.from_pretrained(cased)
    assert tokenizer.tokenize("한국어 co") == ["한", "##국", "##어", "co"]
    assert tokenizer.tokenize("Co") == ["[UNK]"]
    assert AutoConfig.from_pretrained(cased).vocab_size == 2010

    with pytest.raises(ValueError, match="lacks special tokens"):
        build_bert(tmp_path / "bad", vocab=["[PAD]", "a"])


def test_bert_grown_dir(bert_grown_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(bert_grown_dir)
    rows = AutoConfig.from_pretrained(bert_grown_dir).vocab_size
    assert rows == 2000 == len(_vocab_txt(bert_grown_dir))
    assert len(tokenizer) == rows + 2
    assert tokenizer.convert_tokens_to_ids(["newtok1", "newtok2"]) == [2000, 2001]
    assert tokenizer.tokenize("newtok1 covid") == ["newtok1", "co", "##vid"]
    assert json.loads((bert_grown_dir / "added_tokens.json").read_text()) == {"newtok1": 2000, "newtok2": 2001}
    decoder = json.loads((bert_grown_dir / "tokenizer_config.json").read_text())["added_tokens_decoder"]
    assert decoder["2000"]["content"] == "newtok1"
    assert decoder["2000"]["special"] is False
    added = json.loads((bert_grown_dir / "tokenizer.json").read_text())["added_tokens"]
    assert [a["content"] for a in added if not a["special"]] == ["newtok1", "newtok2"]
    assert _tensor(bert_grown_dir, "bert.embeddings.word_embeddings.weight").shape[0] == rows


def test_bert_padded_dir(bert_padded_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(bert_padded_dir)
    assert len(tokenizer) == 2003 == len(_vocab_txt(bert_padded_dir))
    assert not any(t.startswith("[unused") for t in _vocab_txt(bert_padded_dir))
    assert AutoConfig.from_pretrained(bert_padded_dir).vocab_size == 2048
    assert _tensor(bert_padded_dir, "bert.embeddings.word_embeddings.weight").shape == (2048, 32)
    assert _tensor(bert_padded_dir, "cls.predictions.bias").shape == (2048,)
    assert tokenizer.tokenize("covid") == ["co", "##vid"]


# ------------------------------------------------------------------------------------------------
# Llama
# ------------------------------------------------------------------------------------------------


def test_llama_dir(llama_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(llama_dir)
    assert len(tokenizer) == 512
    assert tokenizer.convert_tokens_to_ids([LLAMA_BOS, LLAMA_EOS]) == [502, 503]
    reserved = [f"<|reserved_special_token_{i}|>" for i in range(8)]
    assert tokenizer.convert_tokens_to_ids(reserved) == list(range(504, 512))
    assert (tokenizer.bos_token, tokenizer.eos_token) == (LLAMA_BOS, LLAMA_EOS)
    tok_json = json.loads((llama_dir / "tokenizer.json").read_text())
    assert tok_json["model"]["type"] == "BPE"
    assert len(tok_json["model"]["vocab"]) == 502
    assert tok_json["pre_tokenizer"]["type"] == "ByteLevel"
    assert tok_json["decoder"]["type"] == "ByteLevel"
    assert [a["id"] for a in tok_json["added_tokens"]] == list(range(502, 512))
    assert all(a["special"] for a in tok_json["added_tokens"])
    text = "The patients need a new hospital now."
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == 502
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert tokenizer(f"{reserved[3]}x", add_special_tokens=False)["input_ids"][0] == 507
    tok_config = json.loads((llama_dir / "tokenizer_config.json").read_text())
    assert (tok_config["bos_token"], tok_config["eos_token"]) == (LLAMA_BOS, LLAMA_EOS)
    assert json.loads((llama_dir / "special_tokens_map.json").read_text()) == {
        "bos_token": LLAMA_BOS,
        "eos_token": LLAMA_EOS,
    }

    config = AutoConfig.from_pretrained(llama_dir)
    assert (config.vocab_size, config.bos_token_id, config.eos_token_id) == (512, 502, 503)
    assert config.tie_word_embeddings is False
    embed = _tensor(llama_dir, "model.embed_tokens.weight")
    head = _tensor(llama_dir, "lm_head.weight")
    assert embed.shape == head.shape == (512, 32)
    assert torch.count_nonzero(embed[504:]) == 0
    assert torch.count_nonzero(head[504:]) == 0
    assert bool((embed[:504].abs().sum(dim=1) > 0).all())
    model = AutoModelForCausalLM.from_pretrained(llama_dir)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits
    assert logits.shape == (1, len(ids), 512)


def test_llama_sharded_and_tied(llama_sharded_dir: Path, tmp_path: Path) -> None:
    shards = sorted(llama_sharded_dir.glob("model-*-of-*.safetensors"))
    assert len(shards) >= 2
    assert (llama_sharded_dir / "model.safetensors.index.json").is_file()
    assert torch.count_nonzero(_tensor(llama_sharded_dir, "model.embed_tokens.weight")[504:]) == 0
    AutoModelForCausalLM.from_pretrained(llama_sharded_dir)

    tied = build_llama_bpe(tmp_path / "tied", vocab_size=600, reserved=4, tie=True, config_vocab_size=640)
    assert "lm_head.weight" not in _safetensors_keys(tied)
    tokenizer = AutoTokenizer.from_pretrained(tied)
    assert len(tokenizer) == 600
    assert tokenizer.convert_tokens_to_ids(LLAMA_BOS) == 594
    embed = _tensor(tied, "model.embed_tokens.weight")
    assert embed.shape == (640, 32)
    assert torch.count_nonzero(embed[596:600]) == 0
    model = AutoModelForCausalLM.from_pretrained(tied)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


# ------------------------------------------------------------------------------------------------
# SentencePiece unigram (T5-like)
# ------------------------------------------------------------------------------------------------


def test_unigram_dir(unigram_dir: Path) -> None:
    sp = spm.SentencePieceProcessor(model_file=str(unigram_dir / "spiece.model"))
    assert sp.get_piece_size() == 300
    assert [sp.id_to_piece(i) for i in range(3)] == ["<pad>", "</s>", "<unk>"]
    assert [sp.id_to_piece(i) for i in range(3, 13)] == [f"<unused{i}>" for i in range(10)]
    tokenizer = AutoTokenizer.from_pretrained(unigram_dir)
    assert len(tokenizer) == 300
    assert tokenizer.convert_ids_to_tokens(list(range(300))) == [sp.id_to_piece(i) for i in range(300)]
    assert tokenizer.convert_tokens_to_ids([f"<unused{i}>" for i in range(10)]) == list(range(3, 13))
    tok_json = json.loads((unigram_dir / "tokenizer.json").read_text())
    assert tok_json["model"]["type"] == "Unigram"
    assert len(tok_json["model"]["vocab"]) == 300
    text = "The patients need a new hospital now"
    assert tokenizer(text, add_special_tokens=False)["input_ids"] == sp.encode(text)
    assert tokenizer(text)["input_ids"][-1] == 1  # </s>
    assert "<unused3>" in tokenizer.tokenize("a <unused3> b")

    config = AutoConfig.from_pretrained(unigram_dir)
    assert config.model_type == "t5"
    assert config.vocab_size == 300
    assert _tensor(unigram_dir, "shared.weight").shape == (300, 32)
    model = AutoModelForSeq2SeqLM.from_pretrained(unigram_dir)
    with torch.no_grad():
        out = model(input_ids=torch.tensor([sp.encode(text)]), decoder_input_ids=torch.tensor([[0]]))
    assert out.logits.shape == (1, 1, 300)


# ------------------------------------------------------------------------------------------------
# MiniLM, truncation, hub cache, environment
# ------------------------------------------------------------------------------------------------


def test_minilm_fixture_is_a_private_copy(minilm: Path) -> None:
    installed = minilm_dir()
    assert minilm.resolve() != installed.resolve()
    assert not minilm.resolve().is_relative_to(installed.resolve())
    assert (minilm / "model.safetensors").stat().st_size == (installed / "model.safetensors").stat().st_size
    assert (minilm / "1_Pooling" / "config.json").is_file()
    tokenizer = AutoTokenizer.from_pretrained(minilm)
    assert len(tokenizer) == 30522
    assert tokenizer.convert_tokens_to_ids(["[PAD]", "[unused0]", "[UNK]", "[unused99]"]) == [0, 1, 100, 104]
    assert _tensor(minilm, "embeddings.word_embeddings.weight").shape == (30522, 384)


def test_truncate_weights(bert_dir: Path) -> None:
    target = bert_dir / "model.safetensors"
    before = target.stat().st_size
    assert truncate_weights(bert_dir) == target
    assert target.stat().st_size == before - 100
    with pytest.raises(SafetensorError):
        load_file(target)
    with pytest.raises(ValueError, match="cannot cut"):
        truncate_weights(target, nbytes=10**9)


def test_hf_cache_snapshot(bert_dir: Path, hf_home: Path) -> None:
    (bert_dir / "1_Pooling").mkdir()
    (bert_dir / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    snapshot = hf_cache_snapshot(bert_dir, hf_home, repo_id="org/model")
    repo = hf_home / "hub" / "models--org--model"
    commit = (repo / "refs" / "main").read_text()
    assert len(commit) == 40
    assert int(commit, 16) >= 0
    assert snapshot == repo / "snapshots" / commit

    files = sorted(p.relative_to(bert_dir) for p in bert_dir.rglob("*") if p.is_file())
    for rel in files:
        link = snapshot / rel
        assert link.is_symlink()
        target = os.readlink(link)
        assert not os.path.isabs(target)
        assert target.startswith("../../blobs/" if len(rel.parts) == 1 else "../../../blobs/")
        assert link.resolve().parent == (repo / "blobs").resolve()
        assert link.read_bytes() == (bert_dir / rel).read_bytes()
    blob_names = {os.readlink(snapshot / rel).rsplit("/", 1)[1]: rel for rel in files}
    assert {len(name) for name, rel in blob_names.items() if rel.suffix == ".safetensors"} == {64}  # sha256
    assert {len(name) for name, rel in blob_names.items() if rel.suffix != ".safetensors"} == {40}  # git sha1

    assert str(hf_home / "hub") == hf_constants.HF_HUB_CACHE
    assert Path(snapshot_download("org/model", local_files_only=True, cache_dir=hf_home / "hub")) == snapshot
    assert Path(snapshot_download("org/model", local_files_only=True)) == snapshot  # via the patched HF_HOME
    cached = try_to_load_from_cache("org/model", "config.json", cache_dir=hf_home / "hub")
    assert isinstance(cached, str)
    assert Path(cached) == snapshot / "config.json"
    assert AutoTokenizer.from_pretrained("org/model").tokenize("covid") == ["co", "##vid"]
    assert AutoConfig.from_pretrained("org/model").vocab_size == 2000


def test_offline_environment(hf_home: Path) -> None:
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert os.environ["TRANSFORMERS_OFFLINE"] == "1"
    assert os.environ["HF_HOME"] == str(hf_home)
    assert hf_home.is_dir()
    assert hf_constants.HF_HUB_OFFLINE is True
    with pytest.raises(OSError, match="cached files"):
        AutoConfig.from_pretrained("org/not-in-cache")


def _file_bytes(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "builder",
    [build_bert, build_llama_bpe, build_sentencepiece_unigram],
    ids=["bert", "llama", "unigram"],
)
def test_builders_are_deterministic(builder: Callable[[Path], Path], tmp_path: Path) -> None:
    assert _file_bytes(builder(tmp_path / "one")) == _file_bytes(builder(tmp_path / "two"))


def test_fixture_copies_are_private(bert_dir: Path, tmp_path: Path, checkpoint_cache: CheckpointCache) -> None:
    assert bert_dir.parent == tmp_path
    pristine = checkpoint_cache.get("bert", build_bert)  # already built this session: no rebuild
    assert pristine != bert_dir
    (bert_dir / "vocab.txt").write_text("mutated\n")
    assert len(_vocab_txt(pristine)) == DEFAULT_WORDPIECE_SIZE
