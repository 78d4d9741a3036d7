"""Property tests: remap invariants on a tiny BERT for generated token sets, and format round trips."""

from __future__ import annotations

import dataclasses
import json
import string
import tempfile
from pathlib import Path
from typing import Any

import pytest
from checkpoints import build_bert
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from transformers import AutoTokenizer

from vocabsurgeon import apply_plan, plan_surgery
from vocabsurgeon.backend import load_backend
from vocabsurgeon.formats.json_file import JsonStyle, dump_json, parse_json, parse_style
from vocabsurgeon.formats.vocab_txt import dump_vocab_txt, parse_vocab_txt, read_vocab_txt
from vocabsurgeon.free_slots import is_placeholder
from vocabsurgeon.inventory import Inventory, read_inventory
from vocabsurgeon.verification import verify_checkpoint

# Every word is a whole entry of the fixture vocabulary and no letter touches punctuation, so no new token can
# change how it is split.
FIXED_SENTENCE = "The patients need a new hospital now , 2019 and 2020 ."
EMBEDDING = "bert.embeddings.word_embeddings.weight"

SETTINGS = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class Source:
    """The tiny BERT checkpoint and what every example compares against."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.inventory: Inventory = read_inventory(root)
        self.backend = load_backend(self.inventory)
        self.tokenizer = AutoTokenizer.from_pretrained(str(root), local_files_only=True)
        self.vocab: dict[str, int] = self.tokenizer.get_vocab()
        self.sentence_ids = list(self.tokenizer.encode(FIXED_SENTENCE))


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    return Source(build_bert(tmp_path_factory.mktemp("prop") / "bert"))


lower_word = st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=8)
ascii_word = st.text(alphabet=string.ascii_letters, min_size=1, max_size=10)
hangul = st.text(alphabet=st.characters(min_codepoint=0xAC00, max_codepoint=0xD7A3), min_size=1, max_size=4)
punctuated = st.builds(lambda a, p, b: a + p + b, lower_word, st.sampled_from("-./:&'"), lower_word)
piece = st.builds(lambda body: "##" + body, lower_word)
token_sets = st.lists(st.one_of(ascii_word, hangul, punctuated, piece), min_size=1, max_size=6)


def _usable(source: Source, tokens: list[str]) -> list[str]:
    """Drop tokens already in the vocabulary after normalization, and later duplicates after normalization."""
    seen: set[str] = set()
    kept = []
    for token in tokens:
        content = source.backend.normalize(token)
        if content in source.vocab or content in seen:
            continue
        seen.add(content)
        kept.append(token)
    return kept


def _carrier(vocab: dict[str, int], body: str) -> str | None:
    """A one-letter word ``c`` that WordPiece keeps as the first piece of ``c + body`` (no longer entry is a
    prefix of it), so that ``c + body`` tokenizes to ``[c, "##" + body]``."""
    for letter in "x" + string.ascii_lowercase:
        word = letter + body
        if not any(t != letter and not t.startswith("##") and word.startswith(t) for t in vocab if t[:1] == letter):
            return letter
    return None


@SETTINGS
@given(drawn=token_sets)
def test_remap_invariants(source: Source, drawn: list[str]) -> None:
    tokens = _usable(source, drawn)
    assume(tokens)
    plan = plan_surgery(source.inventory, "remap", tokens=tokens)
    assert [p.token for p in plan.placements] == tokens
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        apply_plan(plan, out, source=source.inventory)
        tokenizer = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
        vocab = tokenizer.get_vocab()

        for placement in plan.placements:
            event(f"mode {placement.mode}" + (" piece" if placement.content.startswith("##") else ""))
            event("hangul" if any("\uac00" <= ch <= "\ud7a3" for ch in placement.token) else "no hangul")
            assert is_placeholder(source.tokenizer.convert_ids_to_tokens(placement.id)), placement
            if placement.content.startswith("##"):
                # a continuation piece is reached inside a word, never as a word of its own
                assert placement.mode == "vocab"
                assert tokenizer.convert_tokens_to_ids(placement.content) == placement.id
                letter = _carrier(vocab, placement.content[2:])
                if letter is not None:
                    assert tokenizer.tokenize(letter + placement.content[2:]) == [letter, placement.content]
            else:
                assert list(tokenizer.encode(placement.token, add_special_tokens=False)) == [placement.id], placement

        kept = {token: idx for token, idx in source.vocab.items() if not is_placeholder(token)}
        assert {token: vocab.get(token) for token in kept} == kept
        assert list(tokenizer.encode(FIXED_SENTENCE)) == source.sentence_ids

        config = json.loads((out / "config.json").read_text(encoding="utf-8"))
        with safe_open(str(out / "model.safetensors"), "np") as handle:
            rows = handle.get_slice(EMBEDDING).get_shape()[0]
        assert len(tokenizer) == config["vocab_size"] == rows

        failed = [check for check in verify_checkpoint(out, source.inventory) if not check.ok]
        assert failed == []


# ------------------------------------------------------------------------------------------------ round trips

vocab_token = st.text(st.characters(blacklist_characters="\n\r", blacklist_categories=("Cs",)), max_size=12)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(tokens=st.lists(vocab_token, max_size=20))
def test_vocab_txt_round_trip(tokens: list[str]) -> None:
    text = dump_vocab_txt(tokens)
    assert parse_vocab_txt(text) == tokens
    assert dump_vocab_txt(parse_vocab_txt(text)) == text


def test_crlf_vocab_txt_reads_as_transformers_reads_it(tmp_path: Path) -> None:
    from transformers.models.bert.tokenization_bert import load_vocab

    path = tmp_path / "vocab.txt"
    path.write_bytes(b"[PAD]\r\n[UNK]\r\nthe\r\n")
    assert read_vocab_txt(path) == list(load_vocab(str(path)))


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)
json_styles = st.builds(
    JsonStyle,
    indent=st.sampled_from([None, 0, 1, 2, 4]),
    ensure_ascii=st.booleans(),
    final_newline=st.booleans(),
    spaced=st.booleans(),
)


def _has_separator(value: Any) -> bool:
    if isinstance(value, dict):
        return bool(value)
    if isinstance(value, list):
        return len(value) > 1 or any(_has_separator(item) for item in value)
    return False


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(value=json_values, style=json_styles)
def test_json_round_trip(value: Any, style: JsonStyle) -> None:
    if style.spaced and not _has_separator(value):
        style = dataclasses.replace(style, spaced=False)  # no separator at all: nothing tells the styles apart
    text = dump_json(value, style)
    parsed = parse_json(text, "generated.json")
    assert parsed == value
    assert dump_json(parsed, parse_style(text)) == text


@pytest.mark.parametrize(
    ("value", "spaced"),
    [([None, None], True), (['x": y', 1], False), ({'a": b': 1, "c": 2}, False)],
    ids=["spaced-list", "string-in-list", "string-in-key"],
)
def test_json_spaced_style_detection(value: Any, spaced: bool) -> None:
    text = dump_json(value, JsonStyle(indent=None, spaced=spaced))
    assert dump_json(value, parse_style(text)) == text
