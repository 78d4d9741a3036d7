"""New words behave as words in SentencePiece families (SentencePiece BPE as in Llama 2, Unigram as in T5).

A word is stored as the vocabulary entry of its running-text form, ``▁word``, so the tokenizer produces it in running
text: one id mid-sentence and at the start of a text (both normalizers prepend ``▁``), decoding exactly, while text
without the new words encodes as before. The fixtures are built by ``sp_fixtures`` (each word is several pieces
there, checked below); each surgery runs once per module through the CLI.

What "as before" is compared with: the source's tokenizer.json as written (the tokenizers library). For the Llama 2
style fixture that is what SentencePiece and transformers 4.x do; transformers 5 loads a ``LlamaTokenizer`` by
rebuilding a Metaspace pipeline from the vocabulary and merges, which drops the file's normalizer and encodes a text
that starts with spaces differently (one ``▁`` fewer), so ``AutoTokenizer`` on the source is not the reference. The
outputs are loaded the way a user loads them, with ``AutoTokenizer.from_pretrained``.

transformers 5 ignores ``use_fast=False`` (every tokenizer is tokenizers-backed), so the slow tokenizer is checked
with ``sentencepiece`` on the .model, which is what transformers 4.x's slow tokenizers call; the transformers 4.24
checks (fast and slow T5) run in the interpreter named by ``VOCABSURGEON_TF424_PYTHON``.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import pytest
import sentencepiece as spm
from checkpoints import CheckpointCache
from click.testing import CliRunner, Result
from safetensors import safe_open
from sp_fixtures import CHECK_TEXTS, LLAMA2_NORMALIZER, SP_BUILDERS, SP_VOCAB_SIZE, check_encodes_like_sentencepiece
from test_words import PARAGRAPH, SENTENCE, TEXTS, WORDS
from tokenizers import Tokenizer
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from vocabsurgeon.cli import main

SPACE = "\u2581"  # ▁: SentencePiece's form of a space
#: a word whose running-text form ``▁hospital`` is one piece in every fixture: skipped
ONE_TOKEN = "hospital"
#: longer words that hold a new word (or start with it)
LONGER = ["thrombocytopenias", "prehospitalization", "hospitalizations", "naïvetés"]
#: texts in which no new word (nor a longer form of one) occurs
PLAIN_TEXTS = [text for text in TEXTS if not any(word in text for word in WORDS)]

TF424_PYTHON = os.environ.get("VOCABSURGEON_TF424_PYTHON")
needs_424 = pytest.mark.skipif(
    not TF424_PYTHON, reason="VOCABSURGEON_TF424_PYTHON is unset (set it to the python of a transformers==4.24.0 venv)"
)

Family = Literal["bpe", "unigram"]
#: surgery name -> (fixture, command)
SURGERIES: dict[str, tuple[str, str]] = {
    "llama2-remap": ("spbpe_llama2", "remap"),
    "metaspace-remap": ("spbpe_metaspace", "remap"),
    "llama2-no-slots-append": ("spbpe_llama2_no_slots", "append"),
    "t5-remap": ("unigram_t5", "remap"),
    "t5-append": ("unigram_t5", "append"),
}
BPE_SURGERIES = [name for name, (fixture, _) in SURGERIES.items() if fixture.startswith("spbpe")]
UNIGRAM_SURGERIES = [name for name, (fixture, _) in SURGERIES.items() if fixture.startswith("unigram")]


def run(*args: str | Path) -> Result:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def model_file(path: Path) -> str:
    return "spiece.model" if (path / "spiece.model").exists() else "tokenizer.model"


def encode(tokenizer: Tokenizer | PreTrainedTokenizerBase, text: str) -> list[int]:
    if isinstance(tokenizer, Tokenizer):
        return list(tokenizer.encode(text, add_special_tokens=False).ids)
    return list(tokenizer.encode(text, add_special_tokens=False))


def joins_words(before: list[int], after: list[int], words: dict[int, str], piece: Callable[[int], str]) -> bool:
    """Whether ``after`` is ``before`` with some runs of pieces replaced by a new word's id, each run spelling that
    word's stored form (``words``: id -> form; ``piece``: the source's piece of an id). Every other id is kept."""
    i = 0
    for idx in after:
        if idx in words:
            spelled, k = "", i
            while k < len(before) and len(spelled) < len(words[idx]):
                spelled += piece(before[k])
                k += 1
            if spelled != words[idx]:
                return False
            i = k
        elif i < len(before) and before[i] == idx:
            i += 1
        else:
            return False
    return i == len(before)


def test_joins_words_accepts_only_the_word_pieces_joined() -> None:
    pieces = {1: "▁a", 2: "▁hos", 3: "pital", 4: "s", 5: "."}.__getitem__
    words = {9: "▁hospital"}
    assert joins_words([1, 2, 3, 5], [1, 9, 5], words, pieces)
    assert joins_words([1, 2, 3, 4], [1, 9, 4], words, pieces)
    assert joins_words([1, 2, 3, 5], [1, 2, 3, 5], words, pieces)
    assert not joins_words([1, 2, 3, 5], [1, 9, 3, 5], words, pieces)  # a piece dropped twice
    assert not joins_words([1, 2, 3, 5], [1, 9], words, pieces)  # a piece lost
    assert not joins_words([1, 2, 5], [1, 9, 5], words, pieces)  # the run does not spell the word
    assert not joins_words([1, 2, 3, 5], [1, 2, 3, 4], words, pieces)  # another id changed


@dataclass(frozen=True)
class Surgery:
    """One surgery's source, output and ``--json`` document, with the tokenizers the tests compare."""

    name: str
    family: Family
    source: Path
    out: Path
    document: dict[str, Any]

    @cached_property
    def manifest(self) -> dict[str, Any]:
        return read_json(self.out / "vocabsurgeon.json")

    @cached_property
    def word_ids(self) -> dict[str, int]:
        """The id each word got, as the manifest records it."""
        return {entry["token"]: entry["id"] for entry in self.manifest["tokens"]}

    @cached_property
    def forms(self) -> dict[int, str]:
        return {idx: SPACE + word for word, idx in self.word_ids.items()}

    @cached_property
    def before(self) -> Tokenizer:
        """The source's tokenizer.json as written (see the module docstring)."""
        return Tokenizer.from_file(str(self.source / "tokenizer.json"))

    @cached_property
    def after(self) -> PreTrainedTokenizerBase:
        return AutoTokenizer.from_pretrained(str(self.out))

    @cached_property
    def sp_before(self) -> spm.SentencePieceProcessor:
        return spm.SentencePieceProcessor(model_file=str(self.source / model_file(self.source)))

    @cached_property
    def sp_after(self) -> spm.SentencePieceProcessor:
        return spm.SentencePieceProcessor(model_file=str(self.out / model_file(self.out)))

    def joins(self, before: list[int], after: list[int]) -> bool:
        return joins_words(before, after, self.forms, self.sp_before.id_to_piece)


@pytest.fixture(scope="module")
def sources(checkpoint_cache: CheckpointCache) -> Callable[[str], Path]:
    """The pristine session build of a fixture of ``sp_fixtures`` (read only)."""
    return lambda name: checkpoint_cache.get(name, SP_BUILDERS[name])


@pytest.fixture(scope="module")
def surgeries(sources: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Surgery]:
    """Each surgery of SURGERIES, run once per module: the four words and ONE_TOKEN, through the CLI with --json."""
    done: dict[str, Surgery | str] = {}  # a failed surgery keeps its output, so that it is not run again

    def get(name: str) -> Surgery:
        if name not in done:
            fixture, command = SURGERIES[name]
            source = sources(fixture)
            out = tmp_path_factory.mktemp(name) / "out"
            tokens = (arg for word in [*WORDS, ONE_TOKEN] for arg in ("--token", word))
            result = CliRunner().invoke(main, [command, str(source), "--out", str(out), "--json", *tokens])
            family: Family = "unigram" if fixture.startswith("unigram") else "bpe"
            ok = result.exit_code == 0
            done[name] = Surgery(name, family, source, out, json.loads(result.stdout)) if ok else result.output
        surgery = done[name]
        if isinstance(surgery, str):
            pytest.fail(f"{name}: {surgery}", pytrace=False)
        return surgery

    return get


@pytest.fixture(scope="module", params=list(SURGERIES))
def surgery(request: pytest.FixtureRequest, surgeries: Callable[[str], Surgery]) -> Surgery:
    return surgeries(request.param)


@pytest.fixture(scope="module", params=BPE_SURGERIES)
def bpe_surgery(request: pytest.FixtureRequest, surgeries: Callable[[str], Surgery]) -> Surgery:
    return surgeries(request.param)


@pytest.fixture(scope="module", params=UNIGRAM_SURGERIES)
def unigram_surgery(request: pytest.FixtureRequest, surgeries: Callable[[str], Surgery]) -> Surgery:
    return surgeries(request.param)


# --------------------------------------------------------------------------------------------------
# The fixtures: what the tests below rely on in the sources
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SP_BUILDERS))
def test_fixture_sizes_and_special_pieces(name: str, sources: Callable[[str], Path]) -> None:
    source = sources(name)
    processor = spm.SentencePieceProcessor(model_file=str(source / model_file(source)))
    tokenizer_json = read_json(source / "tokenizer.json")
    config = read_json(source / "config.json")
    with safe_open(str(source / "model.safetensors"), "np") as weights:
        rows = {key: weights.get_slice(key).get_shape()[0] for key in weights.keys()}  # noqa: SIM118 - no __iter__
    assert processor.get_piece_size() == SP_VOCAB_SIZE == config["vocab_size"]
    assert Tokenizer.from_file(str(source / "tokenizer.json")).get_vocab_size() == SP_VOCAB_SIZE
    unused = [processor.id_to_piece(i) for i in range(3, 13)]
    if name.startswith("unigram"):
        assert tokenizer_json["model"]["type"] == "Unigram"
        assert [processor.id_to_piece(i) for i in range(3)] == ["<pad>", "</s>", "<unk>"]
        assert read_json(source / "tokenizer_config.json")["tokenizer_class"] == "T5Tokenizer"
        assert rows["shared.weight"] == SP_VOCAB_SIZE
    else:
        assert tokenizer_json["model"]["type"] == "BPE"
        assert tokenizer_json["model"]["byte_fallback"] is True
        assert [processor.id_to_piece(i) for i in range(3)] == ["<unk>", "<s>", "</s>"]
        assert read_json(source / "tokenizer_config.json")["tokenizer_class"] == "LlamaTokenizer"
        assert rows["model.embed_tokens.weight"] == rows["lm_head.weight"] == SP_VOCAB_SIZE  # untied
    if name.endswith("no_slots"):
        assert not any(piece.startswith("<unused") for piece in tokenizer_json["model"]["vocab"])
    else:
        assert unused == [f"<unused{i}>" for i in range(10)]


def test_llama2_fixture_has_the_legacy_pipeline_and_encodes_like_sentencepiece(sources: Callable[[str], Path]) -> None:
    for name in ("spbpe_llama2", "spbpe_llama2_no_slots"):
        source = sources(name)
        tokenizer_json = read_json(source / "tokenizer.json")
        assert tokenizer_json["normalizer"] == LLAMA2_NORMALIZER
        assert tokenizer_json["pre_tokenizer"] is None
        decoders = tokenizer_json["decoder"]["decoders"]
        assert [d["type"] for d in decoders] == ["Replace", "ByteFallback", "Fuse", "Strip"]
        assert (decoders[3]["start"], decoders[3]["stop"]) == (1, 0)
        check_encodes_like_sentencepiece(source, "tokenizer.model", [*CHECK_TEXTS, *TEXTS, PARAGRAPH])


def test_transformers_5_loads_a_llama_tokenizer_as_metaspace(sources: Callable[[str], Path]) -> None:
    """Why the tests compare with the source's tokenizer.json, not with AutoTokenizer on the source: transformers 5
    rebuilds a LlamaTokenizer (Metaspace, prepend only when the text does not start with ▁), which is not what the
    Llama 2 file (and SentencePiece) do with leading spaces."""
    source = sources("spbpe_llama2")
    text = "   leading and trailing   "
    rebuilt = AutoTokenizer.from_pretrained(str(source))
    as_written = Tokenizer.from_file(str(source / "tokenizer.json"))
    processor = spm.SentencePieceProcessor(model_file=str(source / "tokenizer.model"))
    assert encode(as_written, text) == processor.encode(text)
    assert encode(rebuilt, text) != encode(as_written, text)
    assert all(encode(rebuilt, t) == encode(as_written, t) for t in PLAIN_TEXTS if not t.startswith(" "))


def test_metaspace_fixture_keeps_the_transformers_5_conversion(sources: Callable[[str], Path]) -> None:
    tokenizer_json = read_json(sources("spbpe_metaspace") / "tokenizer.json")
    assert tokenizer_json["normalizer"] is None
    assert tokenizer_json["pre_tokenizer"] == {
        "type": "Metaspace",
        "replacement": SPACE,
        "prepend_scheme": "always",
        "split": False,
    }


def test_unigram_fixture_encodes_like_sentencepiece(sources: Callable[[str], Path]) -> None:
    source = sources("unigram_t5")
    tokenizer_json = read_json(source / "tokenizer.json")
    assert tokenizer_json["pre_tokenizer"]["pretokenizers"][1] == {
        "type": "Metaspace",
        "replacement": SPACE,
        "add_prefix_space": True,
    }
    check_encodes_like_sentencepiece(source, "spiece.model", [*CHECK_TEXTS, *TEXTS, PARAGRAPH])
    rebuilt = AutoTokenizer.from_pretrained(str(source))
    as_written = Tokenizer.from_file(str(source / "tokenizer.json"))
    assert all(encode(rebuilt, t) == encode(as_written, t) for t in TEXTS)


@pytest.mark.parametrize("name", list(SP_BUILDERS))
def test_each_word_is_several_pieces_in_the_source(name: str, sources: Callable[[str], Path]) -> None:
    source = sources(name)
    tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))
    loaded = AutoTokenizer.from_pretrained(str(source))
    vocab = tokenizer.get_vocab()
    for word in WORDS:
        assert SPACE + word not in vocab
        text = SENTENCE.format(word)
        ids = encode(tokenizer, text)
        assert len(ids) > len(encode(tokenizer, SENTENCE.format(ONE_TOKEN))), word  # the word is several pieces
        assert loaded.decode(encode(loaded, text), skip_special_tokens=True) == text  # the sentence round-trips
    assert encode(tokenizer, SENTENCE.format(ONE_TOKEN)).count(vocab[SPACE + ONE_TOKEN]) == 1


# --------------------------------------------------------------------------------------------------
# Every family: a word is one id in running text, nothing else changes
# --------------------------------------------------------------------------------------------------


def test_each_word_is_the_vocabulary_entry_of_its_running_text_form(surgery: Surgery) -> None:
    tokens = surgery.manifest["tokens"]
    assert [entry["token"] for entry in tokens] == WORDS
    assert [entry["content"] for entry in tokens] == [SPACE + word for word in WORDS]
    assert {entry["form"] for entry in tokens} == {"running-text"}
    tokenizer_json = read_json(surgery.out / "tokenizer.json")
    vocab = tokenizer_json["model"]["vocab"]
    for word, idx in surgery.word_ids.items():
        if surgery.family == "unigram":
            assert vocab[idx][0] == SPACE + word
        else:
            assert vocab[SPACE + word] == idx
        assert surgery.after.convert_tokens_to_ids(SPACE + word) == idx
    assert not {SPACE + word for word in WORDS} & {entry["content"] for entry in tokenizer_json["added_tokens"]}


def test_each_word_is_one_id_mid_sentence_and_at_the_start(surgery: Surgery) -> None:
    for word, idx in surgery.word_ids.items():
        for text in (SENTENCE.format(word), f"{word} was noted."):
            before, after = encode(surgery.before, text), encode(surgery.after, text)
            assert after.count(idx) == 1, (word, text)
            assert surgery.joins(before, after), (text, after)  # the word's pieces, joined; the rest as before
            assert len(after) < len(before), text
            assert surgery.after.decode(after, skip_special_tokens=True) == text


def test_each_word_before_punctuation_is_one_id(surgery: Surgery) -> None:
    """After a space and before punctuation the word is its running-text form too; elsewhere (after ``(``, a newline
    or a tab) only the word's own pieces may join, and the rest encodes as before."""
    for word, idx in surgery.word_ids.items():
        text = f"Notes: {word}, {word}. {word}; {word}'s {word}-related"
        before, after = encode(surgery.before, text), encode(surgery.after, text)
        assert after.count(idx) == 5, (text, after)
        assert surgery.joins(before, after), (text, after)
        assert surgery.after.decode(after, skip_special_tokens=True) == text
        for other in (f"({word})", f"line\n{word}", f"tab\t{word}", f"two  {word}  spaces", word):
            before, after = encode(surgery.before, other), encode(surgery.after, other)
            assert surgery.joins(before, after), (other, after)


def test_a_longer_form_encodes_as_before_or_starts_with_the_word(surgery: Surgery) -> None:
    """SentencePiece BPE: a longer word encodes exactly as before. Unigram can change only a longer word whose old
    best split already broke right after the new word (``▁thr o mb o cyt ope nia | s``): it may become the word's id
    followed by the same tail pieces (``▁thrombocytopenia s``)."""
    for word in LONGER:
        for text in (SENTENCE.format(word), f"{word} was noted."):
            before, after = encode(surgery.before, text), encode(surgery.after, text)
            if surgery.family == "bpe":
                assert after == before, text
            else:
                assert surgery.joins(before, after), (text, after)
    prefixed = SENTENCE.format("prehospitalization")  # no ▁ before the word inside it: never changes
    assert encode(surgery.after, prefixed) == encode(surgery.before, prefixed)


def test_texts_without_the_words_encode_as_before(surgery: Surgery) -> None:
    assert len(TEXTS) >= 100
    for text in PLAIN_TEXTS:
        assert encode(surgery.after, text) == encode(surgery.before, text), text
    for text in TEXTS:  # with longer forms: as before in BPE, by the rule above in Unigram
        before, after = encode(surgery.before, text), encode(surgery.after, text)
        if surgery.family == "bpe":
            assert after == before, text
        else:
            assert surgery.joins(before, after), text


def test_original_tokens_keep_their_ids_and_sizes_agree(surgery: Surgery) -> None:
    placed = set(surgery.word_ids.values())
    moved = {
        token: (idx, surgery.after.convert_tokens_to_ids(token))
        for token, idx in surgery.before.get_vocab().items()
        if idx not in placed and surgery.after.convert_tokens_to_ids(token) != idx
    }
    assert moved == {}
    config = read_json(surgery.out / "config.json")
    with safe_open(str(surgery.out / "model.safetensors"), "np") as weights:
        rows = {key: weights.get_slice(key).get_shape()[0] for key in weights.keys()}  # noqa: SIM118
    embeddings = ["shared.weight"] if surgery.family == "unigram" else ["model.embed_tokens.weight", "lm_head.weight"]
    assert len(surgery.after) <= config["vocab_size"]
    assert {rows[key] for key in embeddings} == {config["vocab_size"]}
    assert surgery.sp_after.get_piece_size() <= config["vocab_size"]


def test_a_word_already_one_token_in_running_text_is_skipped(surgery: Surgery) -> None:
    skipped = surgery.manifest["history"][-1]["skipped"]
    assert [entry["token"] for entry in skipped] == [ONE_TOKEN]
    assert f"{SPACE}{ONE_TOKEN}" in skipped[0]["reason"]
    assert [entry["token"] for entry in surgery.document["plan"]["skipped"]] == [ONE_TOKEN]
    assert ONE_TOKEN not in surgery.word_ids
    for text in (SENTENCE.format(ONE_TOKEN), f"{ONE_TOKEN.capitalize()} and {ONE_TOKEN}s", f"{ONE_TOKEN} was noted."):
        assert encode(surgery.after, text) == encode(surgery.before, text), text


def test_verify_against_the_source(surgery: Surgery) -> None:
    run("verify", surgery.out, "--against", surgery.source)


def test_a_paragraph_has_fewer_tokens(surgery: Surgery) -> None:
    n_before = len(encode(surgery.before, PARAGRAPH))
    ids = encode(surgery.after, PARAGRAPH)
    print(f"\n{surgery.name}: paragraph {n_before} -> {len(ids)} tokens")  # quoted in README (pytest -s)
    assert len(ids) < n_before
    assert surgery.joins(encode(surgery.before, PARAGRAPH), ids)
    assert surgery.after.decode(ids, skip_special_tokens=True) == PARAGRAPH


# --------------------------------------------------------------------------------------------------
# SentencePiece BPE: the slow tokenizer's tokenizer.model
# --------------------------------------------------------------------------------------------------


def test_slow_sentencepiece_bpe_encodes_each_word_as_its_piece(bpe_surgery: Surgery) -> None:
    """What LlamaTokenizer 4.x does with text (``sp_model.encode``): each word is its piece ``▁word``, at the id the
    fast tokenizer gives it, mid-sentence and at the start. Longer forms are not checked: SentencePiece BPE cannot
    reach ``▁thrombocytopenia`` by merges (no chain of pieces leads there), so the piece is matched whole in the text,
    also inside ``▁thrombocytopenias`` (source: ``... en i as``), which the fast tokenizer keeps as before."""
    processor = bpe_surgery.sp_after
    for word, idx in bpe_surgery.word_ids.items():
        assert processor.id_to_piece(idx) == SPACE + word
        for text in (SENTENCE.format(word), f"{word} was noted."):
            ids = processor.encode(text)
            assert ids.count(idx) == 1, text
            assert ids == encode(bpe_surgery.after, text), text
            assert processor.decode(ids) == text
    for text in PLAIN_TEXTS:
        assert processor.encode(text) == bpe_surgery.sp_before.encode(text), text


@pytest.mark.parametrize("name", ["spbpe_llama2", "spbpe_metaspace"])
def test_a_multi_word_string_becomes_a_vocabulary_entry(
    name: str, sources: Callable[[str], Path], tmp_path: Path
) -> None:
    """SentencePiece BPE keeps the whole text one pre-token: ``new york`` is a vocabulary entry ``▁new▁york`` kept
    whole by the same word group, not an added token (which would leave a stray ``▁`` before it)."""
    source, out = sources(name), tmp_path / "out"
    run("remap", source, "--out", out, "--token", "new york")
    entry = read_json(out / "vocabsurgeon.json")["tokens"][0]
    assert entry["content"] == f"{SPACE}new{SPACE}york"
    before, after = Tokenizer.from_file(str(source / "tokenizer.json")), AutoTokenizer.from_pretrained(str(out))
    piece = spm.SentencePieceProcessor(model_file=str(source / "tokenizer.model")).id_to_piece
    text = "I love new york ."
    ids = encode(after, text)
    assert ids.count(entry["id"]) == 1
    assert joins_words(encode(before, text), ids, {entry["id"]: entry["content"]}, piece)
    assert after.decode(ids, skip_special_tokens=True) == text
    for plain in ("new yorker", "I love new yorker.", *PLAIN_TEXTS):
        assert encode(after, plain) == encode(before, plain), plain


# --------------------------------------------------------------------------------------------------
# Unigram: the score, the slow tokenizer, transformers 4.24
# --------------------------------------------------------------------------------------------------


def test_unigram_word_scores_above_its_old_best_segmentation(unigram_surgery: Surgery) -> None:
    source_vocab = read_json(unigram_surgery.source / "tokenizer.json")["model"]["vocab"]
    vocab = read_json(unigram_surgery.out / "tokenizer.json")["model"]["vocab"]
    for word, idx in unigram_surgery.word_ids.items():
        old = encode(unigram_surgery.before, word)
        assert len(old) > 1
        assert vocab[idx][0] == SPACE + word
        assert vocab[idx][1] > sum(source_vocab[i][1] for i in old), word


def test_unigram_slow_sentencepiece_encodes_each_word_as_its_piece(unigram_surgery: Surgery) -> None:
    """transformers 5 ignores use_fast=False, so the slow tokenizer is SentencePiece on spiece.model (what 4.x's
    T5Tokenizer calls): the same ids as the fast tokenizer for the words, and the same rule for longer forms."""
    processor = unigram_surgery.sp_after
    for word, idx in unigram_surgery.word_ids.items():
        assert processor.id_to_piece(idx) == SPACE + word
        for text in (SENTENCE.format(word), f"{word} was noted."):
            ids = processor.encode(text)
            assert ids.count(idx) == 1, text
            assert ids == encode(unigram_surgery.after, text), text
            assert processor.decode(ids) == text
    for text in PLAIN_TEXTS:
        assert processor.encode(text) == unigram_surgery.sp_before.encode(text), text
    for text in [*TEXTS, *(SENTENCE.format(word) for word in LONGER)]:
        assert unigram_surgery.joins(unigram_surgery.sp_before.encode(text), processor.encode(text)), text


SCRIPT_424 = textwrap.dedent(
    """
    import json, sys, warnings
    warnings.simplefilter("ignore")
    import transformers
    from transformers import AutoTokenizer
    args = json.loads(sys.argv[1])
    report = {"transformers": transformers.__version__}
    for label in ("out", "src"):
        for fast in (True, False):
            tokenizer = AutoTokenizer.from_pretrained(args[label], use_fast=fast, local_files_only=True)
            ids = [tokenizer.encode(text, add_special_tokens=False) for text in args["texts"]]
            report[f"{label}-{'fast' if fast else 'slow'}"] = {
                "class": type(tokenizer).__name__,
                "ids": ids,
                "decoded": [tokenizer.decode(i, skip_special_tokens=True) for i in ids],
            }
    print(json.dumps(report))
    """
)


def run_424(out: Path, src: Path, texts: list[str]) -> dict[str, Any]:
    assert TF424_PYTHON is not None
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    args = json.dumps({"out": str(out), "src": str(src), "texts": texts})
    done = subprocess.run(
        [TF424_PYTHON, "-c", SCRIPT_424, args], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def _word_texts() -> Iterator[tuple[str, str]]:
    for word in WORDS:
        yield word, SENTENCE.format(word)
        yield word, f"{word} was noted."


@pytest.mark.compat
@needs_424
def test_424_fast_and_slow_t5_encode_each_word_as_one_id(unigram_surgery: Surgery) -> None:
    word_texts = list(_word_texts())
    longer = [SENTENCE.format(word) for word in LONGER]
    texts = [text for _, text in word_texts] + longer + TEXTS + [PARAGRAPH]
    report = run_424(unigram_surgery.out, unigram_surgery.source, texts)
    assert report["transformers"] == "4.24.0"
    for kind in ("fast", "slow"):
        out, src = report[f"out-{kind}"], report[f"src-{kind}"]
        assert out["class"] == ("T5TokenizerFast" if kind == "fast" else "T5Tokenizer")
        ids, before = dict(zip(texts, out["ids"], strict=True)), dict(zip(texts, src["ids"], strict=True))
        decoded = dict(zip(texts, out["decoded"], strict=True))
        assert before == {text: encode(unigram_surgery.before, text) for text in texts}, kind  # the source as in 5
        for word, text in word_texts:
            assert ids[text].count(unigram_surgery.word_ids[word]) == 1, (kind, text)
            assert ids[text] == encode(unigram_surgery.after, text), (kind, text)
            assert decoded[text] == text, (kind, text)
        for text in PLAIN_TEXTS:
            assert ids[text] == before[text], (kind, text)
        for text in [*longer, *TEXTS, PARAGRAPH]:
            assert unigram_surgery.joins(before[text], ids[text]), (kind, text)
        assert decoded[PARAGRAPH] == PARAGRAPH, kind


@pytest.mark.compat
@needs_424
def test_424_reads_the_unigram_fixture(sources: Callable[[str], Path]) -> None:
    """The T5 fixture's tokenizer.json (Metaspace as 4.x wrote it) loads in tokenizers 0.13, and 4.24's fast and slow
    T5 tokenizers encode as transformers 5 does."""
    source = sources("unigram_t5")
    texts = [text for _, text in _word_texts()] + TEXTS
    report = run_424(source, source, texts)
    as_written = Tokenizer.from_file(str(source / "tokenizer.json"))
    for kind in ("fast", "slow"):
        assert report[f"src-{kind}"]["ids"] == [encode(as_written, text) for text in texts], kind


# --------------------------------------------------------------------------------------------------
# a pipeline with no ▁ before the text (Gemma's normalizer: Replace alone): words stay added tokens
# --------------------------------------------------------------------------------------------------


def test_without_a_prefix_marker_words_stay_added_tokens_and_the_plan_says_why(
    sources: Callable[[str], Path], tmp_path: Path
) -> None:
    """Turning ignore_merges on would make the literal text ``<0x41>`` (a whole pre-token here) the byte piece: the
    planner keeps words as added tokens instead, single_word so that they never match inside a longer word."""
    import shutil

    source = tmp_path / "gemma-style"
    shutil.copytree(sources("spbpe_llama2"), source)
    document = read_json(source / "tokenizer.json")
    document["normalizer"] = {"type": "Replace", "pattern": {"String": " "}, "content": SPACE}
    document["decoder"] = {"type": "Sequence", "decoders": document["decoder"]["decoders"][:-1]}  # no Strip
    Tokenizer.from_str(json.dumps(document)).save(str(source / "tokenizer.json"))
    before = Tokenizer.from_file(str(source / "tokenizer.json"))
    assert encode(before, "<0x41>") != [before.token_to_id("<0x41>")]

    plan = json.loads(run("remap", source, "--dry-run", "--json", "--token", "hospitalization").output)["plan"]
    assert [(p["content"], p["mode"]) for p in plan["placements"]] == [("hospitalization", "added")]
    assert any("words are added tokens here" in note and "'<0x00>'" in note for note in plan["notes"])

    out = tmp_path / "out"
    run("remap", source, "--out", out, "--token", "hospitalization")
    after = Tokenizer.from_file(str(out / "tokenizer.json"))
    word = after.token_to_id("hospitalization")
    sentence = SENTENCE.format("hospitalization")
    # an added token: the space before it stays a ▁ of its own (the degraded form this fallback documents)
    assert word in encode(after, sentence)
    assert after.decode(encode(after, sentence)) == sentence
    for text in ("<0x41>", "hospitalizations", "prehospitalization", *TEXTS):
        assert encode(after, text) == encode(before, text), text


@pytest.mark.parametrize("name", ["spbpe_llama2", "spbpe_metaspace"])
def test_what_follows_an_isolated_word_is_never_turned_into_a_byte_piece(
    name: str, sources: Callable[[str], Path], tmp_path: Path
) -> None:
    """The text after an isolated word is a pre-token that does not begin with ▁: if it were exactly ``<0x41>``,
    ignore_merges would make it the byte piece (decoding as ``A``). The group does not isolate a word followed by
    such an entry, and a word ending in punctuation only before a space, a digit or the end."""
    source, out = sources(name), tmp_path / "out"
    run("remap", source, "--out", out, "--token", "hospitalization", "--token", "C++")
    before, after = (
        Tokenizer.from_file(str(source / "tokenizer.json")),
        Tokenizer.from_file(str(out / "tokenizer.json")),
    )
    for text in ("a hospitalization<0x41>", "a hospitalization<0x41> b", "a C+++", "a C++x", "a C++.", "x C+"):
        assert encode(after, text) == encode(before, text), text
        assert after.decode(encode(after, text)) == before.decode(encode(before, text)), text
    for text in ("a C++ b", "a C++1", "a hospitalization, yes"):
        assert len(encode(after, text)) < len(encode(before, text)), text
        assert after.decode(encode(after, text)) == text
