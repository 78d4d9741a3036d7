"""``vocabsurgeon slots``: placeholders and padding rows of real checkpoints, manifests, ``compress_ranges``."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from checkpoints import build_bert, wordpiece_vocab
from click.testing import CliRunner, Result
from hypothesis import given
from hypothesis import strategies as st

from vocabsurgeon.cli import main
from vocabsurgeon.errors import CheckpointFormatError
from vocabsurgeon.free_slots import PLACEHOLDER_PATTERNS, Slot, SlotReport, compress_ranges, find_slots, is_placeholder
from vocabsurgeon.inventory import read_inventory


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(arg) for arg in args], catch_exceptions=False)


def slots_json(model: str | Path) -> dict[str, Any]:
    result = run("slots", model, "--json")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    return json.loads(result.stdout)


def slot_ids(document: dict[str, Any], kind: str | None = None) -> list[int]:
    return [slot["id"] for slot in document["slots"] if kind is None or slot["kind"] == kind]


def write_manifest(model: Path, ids: list[int]) -> None:
    """A manifest as ``remap`` writes it (only ``tokens`` matters to ``slots``)."""
    tokens = [
        {"token": f"tok{i}", "content": f"tok{i}", "id": i, "kind": "vocab", "slot": "placeholder", "init": "mean"}
        for i in ids
    ]
    document = {"tool": "vocabsurgeon", "version": "0.1.0", "operation": "remap", "tokens": tokens, "history": []}
    (model / "vocabsurgeon.json").write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------------------
# compress_ranges
# --------------------------------------------------------------------------------------------------


def parse_ranges(text: str) -> set[int]:
    """The inverse of compress_ranges: "1-3, 7" -> {1, 2, 3, 7}."""
    ids: set[int] = set()
    if not text:
        return ids
    for part in text.split(", "):
        if "-" in part:
            low, high = part.split("-")
            ids.update(range(int(low), int(high) + 1))
        else:
            ids.add(int(part))
    return ids


@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        ([], ""),
        ([5], "5"),
        ([1, 2], "1, 2"),
        ([1, 2, 3], "1-3"),
        ([1, 2, 3, 7, 9, 10], "1-3, 7, 9, 10"),
        ([10, 3, 2, 1, 2, 3], "1-3, 10"),
        ([0, 1, 2, 3, 5, 6, 7, 8, 10], "0-3, 5-8, 10"),
        ([*range(1, 100), *range(104, 999)], "1-99, 104-998"),
        ([*range(1, 100), 104, 105], "1-99, 104, 105"),
        (range(2003, 2048), "2003-2047"),
    ],
)
def test_compress_ranges_examples(ids: list[int], expected: str) -> None:
    assert compress_ranges(ids) == expected


@given(st.sets(st.integers(min_value=0, max_value=300)))
def test_compress_ranges_round_trips(ids: set[int]) -> None:
    text = compress_ranges(ids)
    assert parse_ranges(text) == ids


@given(st.lists(st.integers(min_value=0, max_value=200), max_size=80))
def test_compress_ranges_is_canonical(ids: list[int]) -> None:
    """Order and repeats do not matter; parts ascend, never touch, and only runs of three or more are ranges."""
    text = compress_ranges(ids)
    assert text == compress_ranges(sorted(set(ids)))
    bounds = []
    for part in text.split(", ") if text else []:
        low, _, high = part.partition("-")
        if high:
            assert int(high) - int(low) >= 2, part
        bounds.append((int(low), int(high or low)))
    for (_, previous_high), (low, high) in itertools.pairwise(bounds):
        assert low > previous_high
        if low == previous_high + 1:  # adjacent parts are only allowed for two separate ids of a run of two
            assert low == high


# --------------------------------------------------------------------------------------------------
# Placeholder patterns
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        "[unused0]",
        "[unused993]",
        "<unused0>",
        "<unused98>",
        "<|reserved_special_token_0|>",
        "<|reserved_special_token_250|>",
        "madeupword0000",
        "<madeupword12>",
    ],
)
def test_placeholder_patterns_match(token: str) -> None:
    assert is_placeholder(token)


NEAR_MISSES = [
    "[unused]",
    "[UNUSED7]",
    "[unused7",
    "unused7",
    "[unused7]x",
    "[unused 7]",
    "<unused>",
    "<unused_7>",
    "<Unused7>",
    "<|reserved_special_token_|>",
    "<|reserved_special_token_7>",
    "<reserved_special_token_7>",
    "<|reserved_token_7|>",
    "madeupword",
    "[PAD]",
]


@pytest.mark.parametrize("token", NEAR_MISSES)
def test_placeholder_patterns_reject_near_misses(token: str) -> None:
    assert not is_placeholder(token)


def test_placeholder_patterns_are_anchored() -> None:
    """A placeholder embedded in a longer token is not one (fullmatch, not search)."""
    assert any(pattern.search("x[unused1]") for pattern in PLACEHOLDER_PATTERNS)
    assert not is_placeholder("x[unused1]")
    assert not is_placeholder("<unused1>x")


# --------------------------------------------------------------------------------------------------
# The real all-MiniLM-L6-v2
# --------------------------------------------------------------------------------------------------


def test_minilm_slots_json(minilm: Path) -> None:
    document = slots_json(minilm)
    expected = list(range(1, 100)) + list(range(104, 999))
    assert document["model"] == str(minilm)
    assert document["vocab_size"] == {"tokenizer": 30522, "config": 30522, "embeddings": 30522}
    assert document["free"] == 994
    assert document["placeholder"] == 994
    assert document["padding"] == 0
    assert document["taken"] == []
    assert slot_ids(document) == expected
    assert {slot["kind"] for slot in document["slots"]} == {"placeholder"}
    # bert-base-uncased numbering: [unused0..98] at 1-99, [unused99..993] at 104-998
    assert document["slots"][0] == {"id": 1, "token": "[unused0]", "kind": "placeholder"}
    assert document["slots"][99] == {"id": 104, "token": "[unused99]", "kind": "placeholder"}
    assert document["slots"][-1] == {"id": 998, "token": "[unused993]", "kind": "placeholder"}


def test_minilm_slots_human(minilm: Path) -> None:
    result = run("slots", minilm)
    assert result.exit_code == 0
    assert result.stdout == (
        f"{minilm}: 994 free slots\n"
        "vocab size: tokenizer 30522, config 30522, embeddings 30522\n"
        "\n"
        "kind         count  ids\n"
        "placeholder    994  1-99, 104-998\n"
    )
    assert "1-99, 104-998" in result.stdout


def test_find_slots_library_api(minilm: Path) -> None:
    report = find_slots(read_inventory(minilm))
    assert isinstance(report, SlotReport)
    assert len(report.slots) == 994
    assert report.slots[0] == Slot(1, "[unused0]", "placeholder")
    assert report.vocab_size.tokenizer == report.vocab_size.config == report.vocab_size.embeddings == 30522


# --------------------------------------------------------------------------------------------------
# WordPiece layouts
# --------------------------------------------------------------------------------------------------


def test_bert_base_cased_layout(bert_split_dir: Path) -> None:
    document = slots_json(bert_split_dir)
    assert slot_ids(document) == [*range(1, 100), 104, 105]
    tokens = {slot["id"]: slot["token"] for slot in document["slots"]}
    assert tokens[1] == "[unused1]"
    assert tokens[99] == "[unused99]"
    assert tokens[104] == "[unused100]"
    assert tokens[105] == "[unused101]"
    assert 100 not in tokens  # [UNK]
    result = run("slots", bert_split_dir)
    assert result.stdout == (
        f"{bert_split_dir}: 101 free slots\n"
        "vocab size: tokenizer 2000, config 2000, embeddings 2000\n"
        "\n"
        "kind         count  ids\n"
        "placeholder    101  1-99, 104, 105\n"
    )


def test_uncased_layout_placeholders_at_start(bert_dir: Path) -> None:
    document = slots_json(bert_dir)
    assert slot_ids(document) == [*range(1, 100), *range(104, 205)]
    assert document["free"] == document["placeholder"] == 200
    assert "placeholder    200  1-99, 104-204\n" in run("slots", bert_dir).stdout


def test_klue_layout_placeholders_at_end(bert_end_dir: Path) -> None:
    document = slots_json(bert_end_dir)
    assert slot_ids(document) == list(range(1900, 2000))
    assert document["slots"][0]["token"] == "[unused0]"
    assert document["slots"][-1]["token"] == "[unused99]"
    assert "placeholder    100  1900-1999\n" in run("slots", bert_end_dir).stdout


def test_no_placeholders_points_at_append(bert_none_dir: Path) -> None:
    document = slots_json(bert_none_dir)
    assert document["slots"] == []
    assert document["free"] == 0
    result = run("slots", bert_none_dir)
    assert result.exit_code == 0
    assert result.stdout == (
        f"{bert_none_dir}: 0 free slots\n"
        "vocab size: tokenizer 2000, config 2000, embeddings 2000\n"
        "\n"
        "no free slots: `vocabsurgeon append` adds tokens by growing the vocabulary\n"
    )


@pytest.mark.parametrize("fixture", ["bert_pytorch_dir", "bert_sharded_dir"])
def test_weight_formats_give_the_same_slots(fixture: str, bert_dir: Path, request: pytest.FixtureRequest) -> None:
    other = request.getfixturevalue(fixture)
    expected = slots_json(bert_dir)
    document = slots_json(other)
    assert document["vocab_size"] == expected["vocab_size"]
    assert document["slots"] == expected["slots"]


# --------------------------------------------------------------------------------------------------
# Padding rows
# --------------------------------------------------------------------------------------------------


def test_padding_rows_are_slots(bert_padded_dir: Path) -> None:
    document = slots_json(bert_padded_dir)
    assert document["vocab_size"] == {"tokenizer": 2003, "config": 2048, "embeddings": 2048}
    assert document["padding"] == document["free"] == 45
    assert document["placeholder"] == 0
    assert document["slots"] == [{"id": i, "token": None, "kind": "padding"} for i in range(2003, 2048)]
    result = run("slots", bert_padded_dir)
    assert result.stdout == (
        f"{bert_padded_dir}: 45 free slots\n"
        "vocab size: tokenizer 2003, config 2048, embeddings 2048\n"
        "\n"
        "kind     count  ids\n"
        "padding     45  2003-2047\n"
    )


def test_padding_from_config_without_weights(bert_padded_dir: Path) -> None:
    """Without weights the capacity is config.vocab_size."""
    (bert_padded_dir / "model.safetensors").unlink()
    document = slots_json(bert_padded_dir)
    assert document["vocab_size"] == {"tokenizer": 2003, "config": 2048, "embeddings": None}
    assert slot_ids(document, "padding") == list(range(2003, 2048))


def test_tokenizer_only_directory(bert_padded_dir: Path) -> None:
    """No config and no weights: no capacity is known, so no padding slots; sizes print as '-'."""
    (bert_padded_dir / "model.safetensors").unlink()
    (bert_padded_dir / "config.json").unlink()
    document = slots_json(bert_padded_dir)
    assert document["vocab_size"] == {"tokenizer": 2003, "config": None, "embeddings": None}
    assert document["slots"] == []
    assert "vocab size: tokenizer 2003, config -, embeddings -\n" in run("slots", bert_padded_dir).stdout


def test_placeholders_and_padding_together(tmp_path: Path) -> None:
    model = build_bert(tmp_path / "both", vocab=wordpiece_vocab("split"), config_vocab_size=2016)
    document = slots_json(model)
    assert slot_ids(document, "placeholder") == [*range(1, 100), 104, 105]
    assert slot_ids(document, "padding") == list(range(2000, 2016))
    assert slot_ids(document) == [*range(1, 100), 104, 105, *range(2000, 2016)]
    stdout = run("slots", model).stdout
    assert "placeholder    101  1-99, 104, 105\n" in stdout
    assert "padding         16  2000-2015\n" in stdout


# --------------------------------------------------------------------------------------------------
# Other families' placeholders
# --------------------------------------------------------------------------------------------------


def test_llama3_reserved_special_tokens(llama_dir: Path) -> None:
    document = slots_json(llama_dir)
    assert document["vocab_size"] == {"tokenizer": 512, "config": 512, "embeddings": 512}
    assert document["slots"] == [
        {"id": 504 + i, "token": f"<|reserved_special_token_{i}|>", "kind": "placeholder"} for i in range(8)
    ]


def test_gemma_style_unused(unigram_dir: Path) -> None:
    document = slots_json(unigram_dir)
    assert document["slots"] == [{"id": 3 + i, "token": f"<unused{i}>", "kind": "placeholder"} for i in range(10)]


def test_near_miss_tokens_are_not_slots(tmp_path: Path) -> None:
    vocab = wordpiece_vocab("none")
    real = ["[unused7]", "<unused7>", "<|reserved_special_token_7|>", "madeupword0007"]
    tail = NEAR_MISSES[:-1] + real  # [PAD] is already in the vocabulary
    vocab[-len(tail) :] = tail
    model = build_bert(tmp_path / "near", vocab=vocab)
    document = slots_json(model)
    first_real = len(vocab) - len(real)
    assert document["slots"] == [
        {"id": first_real + i, "token": token, "kind": "placeholder"} for i, token in enumerate(real)
    ]


# --------------------------------------------------------------------------------------------------
# Ids taken by an earlier surgery (vocabsurgeon.json)
# --------------------------------------------------------------------------------------------------


def test_remap_manifest_ids_are_taken(bert_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "remapped"
    result = run("remap", bert_dir, "--out", out, "--token", "covid", "--token", "hospitalization", "-q")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "vocabsurgeon.json").read_text(encoding="utf-8"))
    placed = sorted(entry["id"] for entry in manifest["tokens"])
    assert placed == [1, 2]
    document = slots_json(out)
    assert document["taken"] == [1, 2]
    assert slot_ids(document) == [*range(3, 100), *range(104, 205)]
    stdout = run("slots", out).stdout
    assert "placeholder    198  3-99, 104-204\n" in stdout
    assert stdout.endswith("\ntaken by earlier surgery: 2 ids (1, 2)\n")


def test_manifest_ids_are_not_free_even_if_still_placeholders(bert_dir: Path) -> None:
    write_manifest(bert_dir, [150, 5, 6, 7])
    document = slots_json(bert_dir)
    assert document["taken"] == [5, 6, 7, 150]
    ids = slot_ids(document)
    assert not {5, 6, 7, 150} & set(ids)
    assert ids == [*range(1, 5), *range(8, 100), *range(104, 150), *range(151, 205)]
    assert document["free"] == 196
    stdout = run("slots", bert_dir).stdout
    assert "placeholder    196  1-4, 8-99, 104-149, 151-204\n" in stdout
    assert "\ntaken by earlier surgery: 4 ids (5-7, 150)\n" in stdout


def test_manifest_ids_in_padding_are_taken(bert_padded_dir: Path) -> None:
    write_manifest(bert_padded_dir, [2003, 2004, 2010])
    document = slots_json(bert_padded_dir)
    assert document["taken"] == [2003, 2004, 2010]
    assert slot_ids(document, "padding") == [*range(2005, 2010), *range(2011, 2048)]


def test_manifest_with_malformed_tokens(bert_dir: Path) -> None:
    (bert_dir / "vocabsurgeon.json").write_text('{"tokens": {"id": 5}}\n', encoding="utf-8")
    with pytest.raises(CheckpointFormatError) as raised:
        find_slots(read_inventory(bert_dir))
    assert str(raised.value) == f"{bert_dir / 'vocabsurgeon.json'}: 'tokens' is not a list"
    result = CliRunner().invoke(main, ["slots", str(bert_dir)])
    assert result.exit_code == 1
    assert result.stderr == f"vocabsurgeon: error: {bert_dir / 'vocabsurgeon.json'}: 'tokens' is not a list\n"


# --------------------------------------------------------------------------------------------------
# Slow-only (vocab.txt) checkpoints
# --------------------------------------------------------------------------------------------------


def test_slow_only_checkpoint(tmp_path: Path) -> None:
    model = build_bert(tmp_path / "slow", vocab=wordpiece_vocab("split"), tokenizer_json=False)
    assert not (model / "tokenizer.json").exists()
    document = slots_json(model)
    assert document["vocab_size"] == {"tokenizer": 2000, "config": 2000, "embeddings": 2000}
    assert slot_ids(document) == [*range(1, 100), 104, 105]


def test_duplicated_vocab_line_keeps_the_id_transformers_uses(tmp_path: Path) -> None:
    """BertTokenizer maps a repeated vocab.txt token to its last line, so that id is not a free padding row."""
    from transformers import AutoTokenizer

    model = build_bert(tmp_path / "slow", tokenizer_json=False)
    lines = (model / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
    first = lines.index("the")
    lines[-1] = "the"
    (model / "vocab.txt").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    assert AutoTokenizer.from_pretrained(model).convert_tokens_to_ids("the") == 1999
    vocabulary = read_inventory(model).vocabulary
    assert vocabulary is not None
    assert vocabulary.token_to_id["the"] == 1999
    assert first not in vocabulary.id_to_token
    document = slots_json(model)
    assert slot_ids(document, "padding") == []
    assert slot_ids(document) == [*range(1, 100), *range(104, 205)]
