"""Tiny SentencePiece checkpoints for the tests of words in SentencePiece families (test_words_sentencepiece.py).

Each builder trains a SentencePiece model in memory (``num_threads=1``: deterministic) on :func:`sp_corpus`, which
covers apostrophes, accented Latin letters (ï, é, ...) and Hangul syllables (코, 로, 나, 바, 이, 러, 스 ...) but
none of the test words (``hospitalization``, ``thrombocytopenia``, ``naïveté``, ``코로나바이러스``), so each of them
is several pieces while sentences with them round-trip. Every builder writes a complete checkpoint directory and
returns it:

* :func:`build_spbpe_llama2`: SentencePiece BPE with byte fallback, ``<unk>`` 0, ``<s>`` 1, ``</s>`` 2, user-defined
  ``<unused0..9>`` at 3-12 (free slots), ``tokenizer.model``, ``tokenizer_class`` LlamaTokenizer and a
  ``tokenizer.json`` in the style of the Llama 2 repositories (transformers 4.x's legacy LlamaConverter): normalizer
  Prepend("▁") + Replace(" ", "▁"), no pre-tokenizer. The builder checks that it encodes as SentencePiece does.
* :func:`build_spbpe_metaspace`: the same model with transformers 5's own conversion kept (pre-tokenizer Metaspace,
  ``prepend_scheme`` "always", ``split`` false, no normalizer).
* :func:`build_spbpe_llama2_no_slots`: as :func:`build_spbpe_llama2` with no user-defined pieces (nothing free).
* :func:`build_unigram_t5`: a T5-like SentencePiece Unigram (``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, ``<unused0..9>``
  at 3-12), ``spiece.model``, ``tokenizer.json`` from transformers' conversion with its Metaspace written as 4.x
  wrote it (``add_prefix_space``), as the T5 repositories have it and as tokenizers 0.13 (transformers 4.24) reads.

The models are tiny and seeded: an untied ``LlamaForCausalLM`` (hidden 32) or a tied ``T5ForConditionalGeneration``
(d_model 32), with ``config.vocab_size`` the number of pieces.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import sentencepiece as spm
import torch
from checkpoints import (
    Builder,
    _added_tokens_decoder,
    _iter_corpus,
    _save_tokenizer_json,
    _save_weights,
    _write_json,
    english_corpus,
    tiny_llama,
)
from tokenizers import Tokenizer
from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

__all__ = [
    "CHECK_TEXTS",
    "LLAMA2_NORMALIZER",
    "SP_BUILDERS",
    "SP_VOCAB_SIZE",
    "build_spbpe_llama2",
    "build_spbpe_llama2_no_slots",
    "build_spbpe_metaspace",
    "build_unigram_t5",
    "check_encodes_like_sentencepiece",
    "sp_corpus",
]

#: pieces of every fixture's SentencePiece model (and its config.vocab_size)
SP_VOCAB_SIZE = 1500
UNUSED = 10

#: the Llama 2 repositories' tokenizer.json normalizer (transformers 4.x LlamaConverter, legacy): the text gets a
#: leading "▁" and every space becomes "▁"; there is no pre-tokenizer, the whole text is one BPE word
LLAMA2_NORMALIZER: dict[str, Any] = {
    "type": "Sequence",
    "normalizers": [
        {"type": "Prepend", "prepend": "\u2581"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
    ],
}

# The corpus has what the test words are made of (apostrophes, ï and é, the Hangul syllables of 코로나바이러스),
# never the words themselves; english_corpus's "Hospitalization rates ..." sentence is left out.
_ABSENT = ("hospitalization", "thrombocytopenia", "naïveté", "코로나바이러스", "코로나", "바이러스")
_EXTRA_SENTENCES = [
    "The patient's chart lists the doctor's notes and the nurse's orders.",
    "It's the children's ward, isn't it? We don't know; they're sure it's fine.",
    "A naïve café owner sent her résumé to the protégé.",
    "Noël and Zoë met the fiancée at a café in Zürich; the soirée was naïve.",
    "Déjà vu: the élite coöperate at the crème brûlée stand.",
    "Thrombocytes and platelets were counted; cytology showed open lesions.",
    "The hospital admitted patients; hospitals, organizations and the realization of plans.",
    "코끼리는 바다에 가고 로마는 나라이다.",
    "이름은 러시아 스키 선수이다. 바나나와 라면을 먹는다.",
    "한국어 문장도 토큰화합니다. 서울의 대학교에 사람이 많다.",
    "Numbers 3.14 and 2026-12-01; code: def f(x): return x ** 2",
]

#: varied texts a builder encodes with SentencePiece and with tokenizer.json to check they agree (no user-defined
#: piece in them: tokenizer.json splits added tokens off before the normalizer, SentencePiece after)
CHECK_TEXTS = [
    "The patient's hospitalization was noted.",
    "The patient's thrombocytopenia was noted.",
    "The patient's naïveté was noted.",
    "The patient's 코로나바이러스 was noted.",
    "hospitalization was noted.",
    "thrombocytopenias and hospitalizations; prehospitalization",
    "It's the children's ward, isn't it?",
    "Ünïcödé àccents: café, résumé, façade, jalapeño, Zürich",
    "한국어 문장도 토큰화합니다. 코로나 바이러스와 독감.",
    "日本語のテキストと中文文本，还有标点。",  # noqa: RUF001 - a fullwidth comma on purpose
    "Emoji 👩‍⚕️💉🦠 and flags 🇰🇷🇺🇸",
    "def f(x):\n    return x ** 2  # comment\n\tif x: pass",
    '{"key": [1, 2.5, null], "nested": {"a": true}}',
    "spaces    and\ttabs\t\tand\n\n\nnewlines   ",
    "   leading and trailing   ",
    " one leading space",
    "numbers 3.14159 1,000,000 2026-12-01 0x1F",
    "URLs https://example.org/a?b=c&d=e and mail a.b@example.com",
    "Mixed: Ελληνικά, русский, العربية, עברית, हिन्दी",
    "\u00a0non-breaking\u200bzero-width",
    "a",
    "",
]


def sp_corpus() -> list[str]:
    """The training corpus: :func:`english_corpus` (1,500 generated sentences) without the sentences that hold a
    test word, plus sentences with apostrophes, accents and Hangul, ten times each."""
    corpus = [s for s in english_corpus(1500) if not any(word in s.lower() for word in _ABSENT)]
    corpus += _EXTRA_SENTENCES * 10
    if any(word in s.lower() for s in corpus for word in _ABSENT):  # pragma: no cover - guard
        raise RuntimeError("the SentencePiece corpus holds a test word")
    return corpus


def _train(**options: Any) -> bytes:
    """A SentencePiece model trained in memory on :func:`sp_corpus` (one thread: the same bytes on every run)."""
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=_iter_corpus(sp_corpus()),
        model_writer=buffer,
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
        **options,
    )
    return buffer.getvalue()


def check_encodes_like_sentencepiece(path: Path, model_name: str, texts: list[str] = CHECK_TEXTS) -> None:
    """Raise RuntimeError unless ``path/tokenizer.json`` encodes each text to the ids SentencePiece gives."""
    processor = spm.SentencePieceProcessor(model_file=str(path / model_name))
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    for text in texts:
        expected = processor.encode(text)
        got = tokenizer.encode(text, add_special_tokens=False).ids
        if got != expected:
            raise RuntimeError(
                f"tokenizer.json encodes {text!r} as {[processor.id_to_piece(i) for i in got]}, SentencePiece as"
                f" {[processor.id_to_piece(i) for i in expected]}"
            )


# --------------------------------------------------------------------------------------------------
# SentencePiece BPE (Llama 2)
# --------------------------------------------------------------------------------------------------

_LLAMA_SPECIALS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


def _build_spbpe(path: Path, *, unused: int, llama2_style: bool) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    # Llama 2's trainer options: byte fallback, digits split, no normalization, whitespace kept as it is
    model = _train(
        model_type="bpe",
        vocab_size=SP_VOCAB_SIZE,
        byte_fallback=True,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        user_defined_symbols=[f"<unused{i}>" for i in range(unused)],
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
    )
    (path / "tokenizer.model").write_bytes(model)
    pieces = spm.SentencePieceProcessor(model_proto=model).get_piece_size()

    config: dict[str, Any] = {
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "legacy": True,
        "model_max_length": 2048,
        "tokenizer_class": "LlamaTokenizer",
        **_LLAMA_SPECIALS,
    }
    _write_json(path / "tokenizer_config.json", config)
    _save_tokenizer_json(AutoTokenizer.from_pretrained(path), path)  # transformers 5's LlamaConverter
    if llama2_style:
        document = json.loads((path / "tokenizer.json").read_text(encoding="utf-8"))
        document["normalizer"] = LLAMA2_NORMALIZER
        document["pre_tokenizer"] = None
        Tokenizer.from_str(json.dumps(document)).save(str(path / "tokenizer.json"))
        check_encodes_like_sentencepiece(path, "tokenizer.model")
    config["added_tokens_decoder"] = _added_tokens_decoder(path / "tokenizer.json")
    _write_json(path / "tokenizer_config.json", config)
    _write_json(path / "special_tokens_map.json", _LLAMA_SPECIALS)

    _save_weights(tiny_llama(pieces, bos_token_id=1, eos_token_id=2), path, "safetensors")
    return path


def build_spbpe_llama2(path: Path) -> Path:
    """A tiny Llama-2-like checkpoint: SentencePiece BPE ``tokenizer.model`` (1,500 pieces, byte fallback,
    ``<unused0..9>`` at 3-12), tokenizer.json in the Llama 2 repositories' style (normalizer Prepend + Replace, no
    pre-tokenizer, checked to encode as SentencePiece), ``tokenizer_class`` LlamaTokenizer, an untied tiny Llama."""
    return _build_spbpe(path, unused=UNUSED, llama2_style=True)


def build_spbpe_metaspace(path: Path) -> Path:
    """As :func:`build_spbpe_llama2`, with the tokenizer.json transformers 5 converts (Metaspace, no normalizer)."""
    return _build_spbpe(path, unused=UNUSED, llama2_style=False)


def build_spbpe_llama2_no_slots(path: Path) -> Path:
    """As :func:`build_spbpe_llama2` with no user-defined pieces: no free slot, new tokens are appended."""
    return _build_spbpe(path, unused=0, llama2_style=True)


# --------------------------------------------------------------------------------------------------
# SentencePiece Unigram (T5)
# --------------------------------------------------------------------------------------------------

_T5_SPECIALS = {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}


def _legacy_metaspace(node: Any) -> Any:
    """``node`` with each Metaspace written as tokenizers < 0.14 wrote and reads it (``add_prefix_space``)."""
    if isinstance(node, list):
        return [_legacy_metaspace(item) for item in node]
    if not isinstance(node, dict):
        return node
    if node.get("type") == "Metaspace":
        if node.get("prepend_scheme", "always") != "always":  # pragma: no cover - guard
            raise RuntimeError(f"no 4.x form for the Metaspace {node}")
        return {"type": "Metaspace", "replacement": node["replacement"], "add_prefix_space": True}
    return {key: _legacy_metaspace(value) for key, value in node.items()}


def build_unigram_t5(path: Path) -> Path:
    """A tiny T5-like checkpoint: SentencePiece Unigram ``spiece.model`` (1,500 pieces, ``<pad>`` 0, ``</s>`` 1,
    ``<unk>`` 2, ``<unused0..9>`` at 3-12, every corpus character a piece), tokenizer.json from transformers'
    conversion (Metaspace as 4.x wrote it, which tokenizers 0.13 reads), ``tokenizer_class`` T5Tokenizer and a tiny
    tied T5ForConditionalGeneration."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model = _train(
        model_type="unigram",
        vocab_size=SP_VOCAB_SIZE,
        user_defined_symbols=[f"<unused{i}>" for i in range(UNUSED)],
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        pad_piece="<pad>",
        eos_piece="</s>",
        unk_piece="<unk>",
    )
    (path / "spiece.model").write_bytes(model)
    pieces = spm.SentencePieceProcessor(model_proto=model).get_piece_size()

    config: dict[str, Any] = {
        "clean_up_tokenization_spaces": True,
        "extra_ids": 0,
        "legacy": True,
        "model_max_length": 512,
        "tokenizer_class": "T5Tokenizer",
        **_T5_SPECIALS,
    }
    _write_json(path / "tokenizer_config.json", config)
    _save_tokenizer_json(AutoTokenizer.from_pretrained(path), path)  # transformers 5's T5Converter
    document = json.loads((path / "tokenizer.json").read_text(encoding="utf-8"))
    for key in ("pre_tokenizer", "decoder"):
        document[key] = _legacy_metaspace(document[key])
    (path / "tokenizer.json").write_text(json.dumps(document, indent=2, ensure_ascii=False), encoding="utf-8")
    check_encodes_like_sentencepiece(path, "spiece.model")
    config["added_tokens_decoder"] = _added_tokens_decoder(path / "tokenizer.json")
    _write_json(path / "tokenizer_config.json", config)
    _write_json(path / "special_tokens_map.json", _T5_SPECIALS)

    torch.manual_seed(0)
    # decoder_start_token_id is no declared T5Config field in transformers 5 but is accepted and saved (as t5-small's)
    extra: dict[str, Any] = {"decoder_start_token_id": 0}
    t5 = T5Config(
        vocab_size=pieces,
        d_model=32,
        d_kv=16,
        d_ff=64,
        num_layers=1,
        num_decoder_layers=1,
        num_heads=2,
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=1,
        **extra,
    )
    _save_weights(T5ForConditionalGeneration(t5).eval(), path, "safetensors")
    return path


#: name -> builder, for ``CheckpointCache.get(name, builder)`` (each fixture is built once per session)
SP_BUILDERS: dict[str, Builder] = {
    "spbpe_llama2": build_spbpe_llama2,
    "spbpe_metaspace": build_spbpe_metaspace,
    "spbpe_llama2_no_slots": build_spbpe_llama2_no_slots,
    "unigram_t5": build_unigram_t5,
}
