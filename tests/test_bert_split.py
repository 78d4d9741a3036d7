"""The Split rewrite of BertPreTokenizer: identical on every code point, and it keeps slot tokens whole."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from tokenizers import Regex, Tokenizer
from tokenizers.pre_tokenizers import BertPreTokenizer, Split

from vocabsurgeon.cli import main
from vocabsurgeon.families.bert_split import is_replaceable, kept_tokens, split_pre_tokenizer

KEEP = ["covid-19", "new york", "c++", "한국-어"]


def as_split(document: dict) -> Split:
    return Split(Regex(document["pattern"]["Regex"]), behavior="removed", invert=True)


def every_code_point_text() -> list[str]:
    return ["a" + chr(cp) + "b" for cp in range(0x110000) if not 0xD800 <= cp < 0xE000]


def test_identical_to_bert_pre_tokenizer_on_every_code_point() -> None:
    bert, ours = BertPreTokenizer(), as_split(split_pre_tokenizer(KEEP))
    different = [text for text in every_code_point_text() if bert.pre_tokenize_str(text) != ours.pre_tokenize_str(text)]
    assert different == []


def test_identical_on_sentences_without_kept_tokens() -> None:
    bert, ours = BertPreTokenizer(), as_split(split_pre_tokenizer(KEEP))
    for text in (
        "The patients (n=12) were admitted; 3.5% died!",
        "  leading and trailing\tspaces\n\n",
        "한국어 문장도, 日本語のテキスト。 Ünïcödé àccents — “quotes” …",
        "covid 19 and new  york are not the kept tokens",
    ):
        assert ours.pre_tokenize_str(text) == bert.pre_tokenize_str(text)


def test_kept_tokens_are_whole_pieces_longest_first() -> None:
    ours = as_split(split_pre_tokenizer([*KEEP, "new"]))
    pieces = [piece for piece, _ in ours.pre_tokenize_str("covid-19 in new york, new c++ 한국-어!")]
    assert pieces == ["covid-19", "in", "new york", ",", "new", "c++", "한국-어", "!"]


def test_kept_tokens_round_trip() -> None:
    assert kept_tokens(split_pre_tokenizer(KEEP)) == sorted(KEEP, key=lambda t: (-len(t), t))
    assert kept_tokens({"type": "BertPreTokenizer"}) is None
    assert kept_tokens({"type": "Split", "pattern": {"Regex": "\\s+"}, "behavior": "Removed", "invert": True}) is None
    assert is_replaceable({"type": "BertPreTokenizer"})
    assert is_replaceable(split_pre_tokenizer(["x-y"]))
    assert not is_replaceable({"type": "Whitespace"})


def test_a_second_remap_keeps_both_tokens_whole(bert_dir: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    assert CliRunner().invoke(main, ["remap", str(bert_dir), "--out", str(first), "--token", "COVID-19"]).exit_code == 0
    result = CliRunner().invoke(main, ["remap", str(first), "--out", str(second), "--token", "new york"])
    assert result.exit_code == 0, result.output
    document = json.loads((second / "tokenizer.json").read_text(encoding="utf-8"))
    assert kept_tokens(document["pre_tokenizer"]) == ["covid-19", "new york"]
    tokenizer = Tokenizer.from_file(str(second / "tokenizer.json"))
    tokenizer.no_padding()
    manifest = json.loads((second / "vocabsurgeon.json").read_text(encoding="utf-8"))
    ids = {entry["token"]: entry["id"] for entry in manifest["tokens"]}
    assert tokenizer.encode("COVID-19 new york", add_special_tokens=False).ids == [ids["COVID-19"], ids["new york"]]


def test_a_custom_pre_tokenizer_is_left_alone(bert_dir: Path, tmp_path: Path) -> None:
    path = bert_dir / "tokenizer.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    document["pre_tokenizer"] = {"type": "Whitespace"}
    path.write_text(json.dumps(document), encoding="utf-8")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["remap", str(bert_dir), "--out", str(out), "--token", "COVID-19"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))["pre_tokenizer"] == {"type": "Whitespace"}


@pytest.mark.compat
def test_identical_under_tokenizers_0_13(tmp_path: Path) -> None:
    """The same pattern in transformers 4.24's tokenizers (0.13): equal to its BertPreTokenizer everywhere."""
    interpreter = os.environ.get("VOCABSURGEON_TF424_PYTHON")
    if not interpreter:
        pytest.skip("VOCABSURGEON_TF424_PYTHON is not set (the python of a transformers 4.24.0 virtualenv)")
    pattern = tmp_path / "pattern.txt"
    pattern.write_text(split_pre_tokenizer(KEEP)["pattern"]["Regex"], encoding="utf-8")
    script = textwrap.dedent(
        """
        import sys, tokenizers
        from tokenizers import Regex
        from tokenizers.pre_tokenizers import BertPreTokenizer, Split
        ours = Split(Regex(open(sys.argv[1], encoding="utf-8").read()), behavior="removed", invert=True)
        bert = BertPreTokenizer()
        texts = ["a" + chr(cp) + "b" for cp in range(0x110000) if not 0xD800 <= cp < 0xE000]
        bad = [t for t in texts if bert.pre_tokenize_str(t) != ours.pre_tokenize_str(t)]
        pieces = [p for p, _ in ours.pre_tokenize_str("covid-19 in new york")]
        print(tokenizers.__version__, len(bad), pieces)
        """
    )
    output = subprocess.run(
        [interpreter, "-c", script, str(pattern)], capture_output=True, text=True, check=True, timeout=300
    ).stdout.split(maxsplit=2)
    assert output[0].startswith("0.13")
    assert output[1] == "0"
    assert output[2].strip() == "['covid-19', 'in', 'new york']"
