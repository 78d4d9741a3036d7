"""``vocabsurgeon audit`` on inputs that transformers cannot load or reads otherwise than the files say (issue 11,
items 7, 8 and 10): two tokens on one id, a malformed ``added_tokens_decoder`` or ``vocab_size``, a repeated or
BOM-prefixed vocab.txt line. Each test shows what transformers 5 does with the input, then what audit says."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from checkpoints import build_bert
from click.testing import CliRunner, Result
from helpers import edit_json, read_lines, write_lines
from tokenizers import Tokenizer
from transformers import AutoConfig, AutoModel, AutoTokenizer
from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

from vocabsurgeon.auditing import audit
from vocabsurgeon.cli import main
from vocabsurgeon.inventory import read_inventory

BOM = "\ufeff"
ADDED = {"single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(arg) for arg in args], catch_exceptions=False)


def findings(model: Path) -> list[dict[str, Any]]:
    """The findings of one model by ``audit --json``, checked against the library API and the exit code."""
    result = run("audit", model, "--json")
    assert result.stderr == ""
    (entry,) = json.loads(result.stdout)["models"]
    report = audit(read_inventory(model))
    assert entry == report.to_json()
    assert result.exit_code == (0 if report.ok else 1)
    return entry["findings"]


def only(model: Path, code: str) -> dict[str, Any]:
    """The single finding with ``code``; fails if there are other errors or warnings."""
    found = [f for f in findings(model) if f["severity"] != "info"]
    assert [f["code"] for f in found] == [code], found
    return found[0]


def load(model: Path) -> Any:
    return AutoTokenizer.from_pretrained(str(model), local_files_only=True)


@pytest.fixture
def bert_slow_dir(tmp_path: Path) -> Path:
    """A slow-only BERT (vocab.txt, tokenizer_config.json with added_tokens_decoder, no tokenizer.json)."""
    return build_bert(tmp_path / "bert-slow", tokenizer_json=False)


# --------------------------------------------------------------------------------------------------
# Item 7: two tokens on one id
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "holder", "size"), [("bert_dir", "[unused4]", 2000), ("llama_dir", "&", 512)], ids=["wordpiece", "bpe"]
)
def test_two_model_vocab_tokens_on_one_id(fixture: str, holder: str, size: int, request: pytest.FixtureRequest) -> None:
    """transformers 5 counts both tokens: len(tokenizer) is one more than the ids (then resize_token_embeddings(len)
    grows a row nothing encodes to), and id 5 decodes as only one of them."""
    model: Path = request.getfixturevalue(fixture)
    (model / "vocab.txt").unlink(missing_ok=True)  # tokenizer.json alone: vocab.txt would disagree besides
    edit_json(model / "tokenizer.json", lambda doc: doc["model"]["vocab"].update(zzdupe=5))
    tokenizer = load(model)
    assert (len(tokenizer), tokenizer.convert_tokens_to_ids([holder, "zzdupe"])) == (size + 1, [5, 5])
    assert only(model, "duplicate-id") == {
        "severity": "error",
        "code": "duplicate-id",
        "message": f"tokenizer.json gives id 5 to two tokens, {holder!r} (model.vocab) and 'zzdupe' (model.vocab):"
        f" len(tokenizer) counts both ({size + 1} tokens for {size} ids) and id 5 decodes as only one",
    }
    result = run("audit", model)
    assert result.exit_code == 1
    assert result.stdout.startswith(f"{model}: 1 error, 0 warnings\n  error   duplicate-id: tokenizer.json gives id 5")


def test_added_token_on_a_model_vocab_id(bert_dir: Path) -> None:
    """The tokenizers library keeps '[unused4]' at 5 and moves the added '[ZZ]' to a new id, 2000: past the rows."""
    edit_json(
        bert_dir / "tokenizer.json", lambda doc: doc["added_tokens"].append({"id": 5, "content": "[ZZ]", **ADDED})
    )
    backend = Tokenizer.from_file(str(bert_dir / "tokenizer.json"))
    assert (backend.token_to_id("[unused4]"), backend.token_to_id("[ZZ]")) == (5, 2000)
    assert only(bert_dir, "duplicate-id")["message"] == (
        "tokenizer.json gives id 5 to two tokens, '[unused4]' (model.vocab) and '[ZZ]' (added_tokens):"
        " the tokenizers library moves '[ZZ]' to a new id past the others"
    )


def test_two_added_tokens_on_one_id(llama_dir: Path) -> None:
    """Two added tokens on id 502: the first keeps it, the tokenizers library moves the second to 512."""
    edit_json(
        llama_dir / "tokenizer.json", lambda doc: doc["added_tokens"].append({"id": 502, "content": "[ZZ]", **ADDED})
    )
    backend = Tokenizer.from_file(str(llama_dir / "tokenizer.json"))
    assert (backend.token_to_id("<|begin_of_text|>"), backend.token_to_id("[ZZ]")) == (502, 512)
    assert load(llama_dir).convert_tokens_to_ids("[ZZ]") == 512
    assert only(llama_dir, "duplicate-id")["message"] == (
        "tokenizer.json gives id 502 to two tokens, '<|begin_of_text|>' (added_tokens) and '[ZZ]' (added_tokens):"
        " the tokenizers library moves '[ZZ]' to a new id past the others"
    )


def test_several_ids_with_two_tokens(llama_dir: Path) -> None:
    edit_json(llama_dir / "tokenizer.json", lambda doc: doc["model"]["vocab"].update(zzdupe=5, zzother=7, zzthird=7))
    message = only(llama_dir, "duplicate-id")["message"]
    assert message.startswith(
        "tokenizer.json gives 2 ids to more than one token; the first, id 5, to two tokens, '&' (model.vocab) and"
        " 'zzdupe' (model.vocab): len(tokenizer) counts "
    )


def test_added_token_on_a_vocab_txt_id_in_a_slow_only_checkpoint(bert_slow_dir: Path) -> None:
    """Without tokenizer.json, transformers 5 moves the added_tokens_decoder entry 'zzdupe' at id 5 to id 2000."""

    def add(config: dict[str, Any]) -> None:
        config["added_tokens_decoder"]["5"] = {"content": "zzdupe", **ADDED}

    edit_json(bert_slow_dir / "tokenizer_config.json", add)
    assert load(bert_slow_dir).convert_tokens_to_ids(["[unused4]", "zzdupe"]) == [5, 2000]
    assert only(bert_slow_dir, "duplicate-id")["message"] == (
        "the vocabulary gives id 5 to two tokens, '[unused4]' (vocab.txt) and 'zzdupe' (added tokens): transformers"
        " moves 'zzdupe' to a new id past the others, ignores it or refuses to load, depending on the file and version"
    )


def test_added_tokens_mirrored_in_the_model_vocab_are_one_token(llama_dir: Path, bert_dir: Path) -> None:
    """An added token listed in model.vocab at its own id (BERT's [PAD], a byte-level BPE word) is not a duplicate."""
    assert findings(bert_dir) == []
    edit_json(llama_dir / "tokenizer.json", lambda doc: doc["model"]["vocab"].update({"<|begin_of_text|>": 502}))
    assert findings(llama_dir) == []


def test_verify_against_fails_an_output_with_two_tokens_on_one_id(llama_dir: Path, tmp_path: Path) -> None:
    """verify runs audit's errors: a surgery output whose tokenizer.json was then given a second token on id 5."""
    out = tmp_path / "out"
    assert run("append", llama_dir, "--out", out, "--token", "zqaword", "-q").exit_code == 0
    broken = Path(shutil.copytree(out, tmp_path / "broken"))
    edit_json(broken / "tokenizer.json", lambda doc: doc["model"]["vocab"].update(zzdupe=5))
    for level in ([], ["--quick"]):
        result = run("verify", broken, "--against", llama_dir, *level)
        assert result.exit_code == 1
        fails = [line for line in result.stdout.splitlines() if line.startswith("FAIL audit finds no errors")]
        assert fails == [
            "FAIL audit finds no errors: duplicate-id: tokenizer.json gives id 5 to two tokens, '&' (model.vocab) and"
            " 'zzdupe' (model.vocab): len(tokenizer) counts both (514 tokens for 513 ids) and id 5 decodes as only one"
        ], result.stdout


# --------------------------------------------------------------------------------------------------
# Item 8: what makes transformers fail to load
# --------------------------------------------------------------------------------------------------

DECODER_CASES: dict[str, tuple[Callable[[dict[str, Any]], Any], type[Exception], str]] = {
    "list": (
        lambda decoder: [{"id": int(idx), **entry} for idx, entry in decoder.items()],
        AttributeError,
        "tokenizer_config.json's added_tokens_decoder is an array, not an object of id -> token:"
        " transformers 5 fails to load the tokenizer (AttributeError)",
    ),
    "string": (
        lambda decoder: "[PAD]",
        AttributeError,
        "tokenizer_config.json's added_tokens_decoder is a string, not an object of id -> token:"
        " transformers 5 fails to load the tokenizer (AttributeError)",
    ),
    "null": (
        lambda decoder: None,
        AttributeError,
        "tokenizer_config.json's added_tokens_decoder is null, not an object of id -> token:"
        " transformers 5 fails to load the tokenizer (AttributeError)",
    ),
    "entry-string": (
        lambda decoder: {**decoder, "0": "[PAD]"},
        TypeError,
        "tokenizer_config.json's added_tokens_decoder entry '0' is a string, not an object with a string"
        " 'content': transformers 5 fails to load the tokenizer (TypeError)",
    ),
    "content-number": (
        lambda decoder: {**decoder, "0": {**decoder["0"], "content": 7}},
        TypeError,
        "tokenizer_config.json's added_tokens_decoder entry '0' has a 'content' that is an integer, not a string:"
        " transformers 5 fails to load the tokenizer (TypeError)",
    ),
    "key-word": (
        lambda decoder: {("pad" if idx == "0" else idx): entry for idx, entry in decoder.items()},
        ValueError,
        "tokenizer_config.json's added_tokens_decoder has a non-integer id 'pad':"
        " transformers 5 fails to load the tokenizer (ValueError)",
    ),
    "key-float": (
        lambda decoder: {("0.0" if idx == "0" else idx): entry for idx, entry in decoder.items()},
        ValueError,
        "tokenizer_config.json's added_tokens_decoder has a non-integer id '0.0':"
        " transformers 5 fails to load the tokenizer (ValueError)",
    ),
}


@pytest.mark.parametrize("tokenizer_json", [True, False], ids=["fast", "slow-only"])
@pytest.mark.parametrize("case", list(DECODER_CASES))
def test_added_tokens_decoder_that_transformers_cannot_load(case: str, tokenizer_json: bool, tmp_path: Path) -> None:
    """Measured with transformers 5: AutoTokenizer raises on each (transformers 4.24 ignores added_tokens_decoder)."""
    edit, raised, message = DECODER_CASES[case]
    model = build_bert(tmp_path / "bert", tokenizer_json=tokenizer_json)
    edit_json(
        model / "tokenizer_config.json",
        lambda config: config.update(added_tokens_decoder=edit(config["added_tokens_decoder"])),
    )
    with pytest.raises(raised):
        load(model)
    assert only(model, "added-tokens-decoder-invalid") == {
        "severity": "error",
        "code": "added-tokens-decoder-invalid",
        "message": message,
    }
    result = run("audit", model)
    assert (result.exit_code, result.stderr) == (1, "")
    assert result.stdout == f"{model}: 1 error, 0 warnings\n  error   added-tokens-decoder-invalid: {message}\n"


def test_several_bad_added_tokens_decoder_entries_are_one_finding(bert_dir: Path) -> None:
    def spoil(config: dict[str, Any]) -> None:
        decoder = config["added_tokens_decoder"]
        decoder["0"] = "[PAD]"
        decoder["100"] = {**decoder["100"], "content": 100}

    edit_json(bert_dir / "tokenizer_config.json", spoil)
    assert only(bert_dir, "added-tokens-decoder-invalid")["message"] == (
        "tokenizer_config.json's added_tokens_decoder entry '0' is a string, not an object with a string 'content'"
        " (and 1 more bad entry): transformers 5 fails to load the tokenizer (TypeError)"
    )


def test_added_tokens_decoder_negative_id(bert_dir: Path) -> None:
    """transformers 5 loads it, but gives the token a new id, 2000: one past the embedding rows."""

    def add(config: dict[str, Any]) -> None:
        config["added_tokens_decoder"]["-1"] = {"content": "[NEW]", **ADDED}

    edit_json(bert_dir / "tokenizer_config.json", add)
    assert load(bert_dir).convert_tokens_to_ids("[NEW]") == 2000
    assert only(bert_dir, "added-tokens-decoder-invalid")["message"] == (
        "tokenizer_config.json's added_tokens_decoder has a negative id '-1':"
        " transformers 5 gives '[NEW]' a new id past the others instead"
    )


@pytest.mark.parametrize("tokenizer_json", [True, False], ids=["fast", "slow-only"])
def test_added_tokens_decoder_entry_without_content(tokenizer_json: bool, tmp_path: Path) -> None:
    """transformers 5 loads it and ignores the entry (id 0 stays '[PAD]' from the vocabulary): a warning only."""
    model = build_bert(tmp_path / "bert", tokenizer_json=tokenizer_json)
    edit_json(model / "tokenizer_config.json", lambda config: config["added_tokens_decoder"]["0"].pop("content"))
    tokenizer = load(model)
    assert (tokenizer.convert_ids_to_tokens(0), tokenizer.pad_token_id) == ("[PAD]", 0)
    assert only(model, "added-token-ignored") == {
        "severity": "warning",
        "code": "added-token-ignored",
        "message": "tokenizer_config.json's added_tokens_decoder entry '0' has no 'content': transformers 5 ignores it",
    }


VOCAB_SIZE_CASES: dict[str, tuple[Any, str]] = {
    "string": ("2000", 'config.vocab_size is "2000" (a string), not an integer'),
    "bool": (True, "config.vocab_size is true (a boolean), not an integer"),
    "float": (2000.0, "config.vocab_size is 2000.0 (a decimal number), not an integer"),
}


@pytest.mark.parametrize("case", list(VOCAB_SIZE_CASES))
@pytest.mark.parametrize("weights", [True, False], ids=["weights", "no-weights"])
def test_config_vocab_size_of_the_wrong_type(case: str, weights: bool, bert_dir: Path) -> None:
    """transformers 5 validates the config: AutoConfig, and so AutoTokenizer and AutoModel, raise."""
    value, start = VOCAB_SIZE_CASES[case]
    edit_json(bert_dir / "config.json", lambda config: config.update(vocab_size=value))
    if not weights:
        (bert_dir / "model.safetensors").unlink()
    for loader in (AutoConfig, AutoTokenizer):
        with pytest.raises(Exception, match="vocab_size"):
            loader.from_pretrained(str(bert_dir), local_files_only=True)
    finding = only(bert_dir, "config-vocab-size-invalid")
    assert finding == {
        "severity": "error",
        "code": "config-vocab-size-invalid",
        "message": f"{start}: transformers 5 fails to load config.json (and so AutoTokenizer and AutoModel)",
    }


@pytest.mark.parametrize("value", [-1, 0])
@pytest.mark.parametrize("weights", [True, False], ids=["weights", "no-weights"])
def test_config_vocab_size_not_positive(value: int, weights: bool, bert_dir: Path) -> None:
    """transformers 5 loads the config and the tokenizer; AutoModel cannot build the embedding."""
    edit_json(bert_dir / "config.json", lambda config: config.update(vocab_size=value))
    if weights:
        with pytest.raises((RuntimeError, IndexError)):
            AutoModel.from_pretrained(str(bert_dir), local_files_only=True)
    else:
        (bert_dir / "model.safetensors").unlink()
    assert AutoConfig.from_pretrained(str(bert_dir), local_files_only=True).vocab_size == value
    assert only(bert_dir, "config-vocab-size-invalid")["message"] == (
        f"config.vocab_size is {value}, not a positive integer: transformers 5 cannot build the embedding (AutoModel)"
    )


# --------------------------------------------------------------------------------------------------
# Item 10: a repeated vocab.txt line, a byte-order mark
# --------------------------------------------------------------------------------------------------


def test_repeated_vocab_line_in_a_slow_only_checkpoint(bert_slow_dir: Path) -> None:
    """transformers 5 keeps the last line: 'the' encodes to 1999, id 303 decodes to nothing; an error (a word's
    trained row is bypassed for the last line's)."""
    lines = read_lines(bert_slow_dir / "vocab.txt")
    first = lines.index("the")
    lines[-1] = "the"
    write_lines(bert_slow_dir / "vocab.txt", lines)
    tokenizer = load(bert_slow_dir)
    assert (tokenizer.convert_tokens_to_ids("the"), tokenizer.convert_ids_to_tokens(first)) == (1999, None)
    assert [f for f in findings(bert_slow_dir) if f["code"] == "duplicate-vocab-line"] == [
        {
            "severity": "error",
            "code": "duplicate-vocab-line",
            "message": f"vocab.txt repeats 'the' (ids {first} and 1999): transformers keeps the last line,"
            f" so id {first} belongs to no token",
        }
    ]


def test_repeated_placeholder_line_is_a_warning(bert_slow_dir: Path) -> None:
    lines = read_lines(bert_slow_dir / "vocab.txt")
    lines[-1] = "[unused5]"
    write_lines(bert_slow_dir / "vocab.txt", lines)
    assert load(bert_slow_dir).convert_tokens_to_ids("[unused5]") == 1999
    assert [f for f in findings(bert_slow_dir) if f["code"] == "duplicate-vocab-line"] == [
        {
            "severity": "warning",
            "code": "duplicate-vocab-line",
            "message": "vocab.txt repeats '[unused5]' (ids 6 and 1999): transformers keeps the last line,"
            " so id 6 belongs to no token",
        }
    ]


def test_repeated_vocab_line_beside_tokenizer_json(bert_dir: Path) -> None:
    """The slow tokenizer (BertTokenizerLegacy, as 4.x's BertTokenizer) reads 'spring' as the last line's id 2000
    (past the 2000 rows), the fast one as tokenizer.json's 1500: both findings are errors."""
    lines = read_lines(bert_dir / "vocab.txt")
    token = lines[1500]
    write_lines(bert_dir / "vocab.txt", [*lines, token])
    assert load(bert_dir).convert_tokens_to_ids(token) == 1500
    slow = BertTokenizerLegacy.from_pretrained(str(bert_dir), local_files_only=True)
    assert slow.convert_tokens_to_ids(token) == 2000
    assert [(f["severity"], f["code"], f["message"]) for f in findings(bert_dir)] == [
        (
            "error",
            "duplicate-vocab-line",
            f"vocab.txt repeats {token!r} (ids 1500 and 2000): transformers keeps the last line,"
            " so id 1500 belongs to no token",
        ),
        (
            "error",
            "vocab-txt-mismatch",
            f"vocab.txt and tokenizer.json disagree on 1 tokens (first: {token!r} is id 2000 in vocab.txt,"
            " id 1500 in tokenizer.json): slow and fast tokenizers would encode differently",
        ),
    ]


def test_several_repeated_vocab_lines(bert_slow_dir: Path) -> None:
    lines = read_lines(bert_slow_dir / "vocab.txt")
    lines[-3:] = ["[unused5]", "the", "the"]
    write_lines(bert_slow_dir / "vocab.txt", lines)
    (finding,) = [f for f in findings(bert_slow_dir) if f["code"] == "duplicate-vocab-line"]
    assert finding["severity"] == "error"
    assert finding["message"] == (
        f"vocab.txt repeats 2 tokens ('[unused5]' at ids 6 and 1997; 'the' at ids {lines.index('the')}, 1998"
        " and 1999): transformers keeps the last line of each, so 3 earlier ids belong to no token"
    )


BOM_MESSAGE = (
    "vocab.txt starts with a byte-order mark (U+FEFF): the first token is read as '\\ufeff[PAD]', not '[PAD]',"
    " by transformers too; save vocab.txt as UTF-8 without the mark"
)


def _add_bom(model: Path) -> None:
    path = model / "vocab.txt"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())


def test_bom_in_a_slow_only_vocab_txt(bert_slow_dir: Path) -> None:
    """transformers 5 reads id 0 as '\\ufeff[PAD]' (it does not strip the mark) and gives '[PAD]' a new id, 2000:
    past the embedding rows. One finding, not 'pad_token missing' or 'two tokens on id 0'."""
    _add_bom(bert_slow_dir)
    tokenizer = load(bert_slow_dir)
    assert (tokenizer.convert_ids_to_tokens(0), tokenizer.pad_token_id) == (BOM + "[PAD]", 2000)
    assert read_inventory(bert_slow_dir).vocabulary.vocab_txt[0] == BOM + "[PAD]"  # type: ignore[union-attr]
    assert only(bert_slow_dir, "vocab-txt-bom") == {
        "severity": "error",
        "code": "vocab-txt-bom",
        "message": BOM_MESSAGE,
    }


def test_bom_in_a_slow_only_vocab_txt_without_added_tokens_decoder(bert_slow_dir: Path) -> None:
    """An older tokenizer_config.json without added_tokens_decoder: '[PAD]' is nowhere in the vocabulary, which the
    BOM explains: one finding."""
    _add_bom(bert_slow_dir)
    edit_json(bert_slow_dir / "tokenizer_config.json", lambda config: config.pop("added_tokens_decoder"))
    assert load(bert_slow_dir).convert_ids_to_tokens(0) == BOM + "[PAD]"
    assert only(bert_slow_dir, "vocab-txt-bom")["message"] == BOM_MESSAGE


def test_bom_in_vocab_txt_beside_tokenizer_json(bert_dir: Path) -> None:
    """The fast tokenizer reads tokenizer.json ('[PAD]' at 0); the slow one (BertTokenizerLegacy) reads vocab.txt
    with the mark: one finding, the BOM, not a vocab.txt mismatch."""
    _add_bom(bert_dir)
    assert load(bert_dir).convert_ids_to_tokens(0) == "[PAD]"
    assert BOM + "[PAD]" in BertTokenizerLegacy.from_pretrained(str(bert_dir), local_files_only=True).vocab
    assert only(bert_dir, "vocab-txt-bom")["message"] == BOM_MESSAGE
    result = run("audit", bert_dir)
    assert result.exit_code == 1
    assert result.stdout == f"{bert_dir}: 1 error, 0 warnings\n  error   vocab-txt-bom: {BOM_MESSAGE}\n"


@pytest.mark.parametrize("value", ["x", None, 5.5, True, -3])
def test_added_tokens_json_id_that_is_not_an_id(value: Any, bert_slow_dir: Path) -> None:
    """A slow-only checkpoint's added_tokens.json whose id is not a non-negative integer: one line, exit 1 (it was an
    internal error for a string or null, and silently id 5 or 1 for 5.5 or true)."""
    (bert_slow_dir / "added_tokens.json").write_text(json.dumps({"zz": value}), encoding="utf-8")
    result = run("audit", bert_slow_dir)
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == (
        f"vocabsurgeon: error: {bert_slow_dir / 'added_tokens.json'}: 'zz' has id {json.dumps(value)},"
        " not a non-negative integer\n"
    )
