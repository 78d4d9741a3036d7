"""``vocabsurgeon audit``: each disagreement between tokenizer, config and weights, on real files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner, Result
from helpers import edit_json, read_lines, write_lines
from safetensors.torch import load_file, save_file

from vocabsurgeon.auditing import AuditReport, Finding, audit
from vocabsurgeon.cli import main
from vocabsurgeon.inventory import read_inventory

EMBEDDING = "bert.embeddings.word_embeddings.weight"


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(arg) for arg in args], catch_exceptions=False)


def audit_json(*models: Path, strict: bool = False) -> tuple[int, dict[str, Any]]:
    result = run("audit", *models, "--json", *(["--strict"] if strict else []))
    assert result.stderr == ""
    return result.exit_code, json.loads(result.stdout)


def findings(model: Path) -> list[dict[str, Any]]:
    """The findings of one model, checked against the library API on the way."""
    code, document = audit_json(model)
    (entry,) = document["models"]
    report = audit(read_inventory(model))
    assert entry == report.to_json()
    assert code == (0 if report.ok else 1)
    return entry["findings"]


def codes(model: Path) -> list[tuple[str, str]]:
    return [(finding["severity"], finding["code"]) for finding in findings(model)]


def only(model: Path, code: str) -> dict[str, Any]:
    """The single finding with ``code``; fails if there are others of severity error or warning."""
    found = findings(model)
    relevant = [f for f in found if f["severity"] != "info"]
    assert [f["code"] for f in relevant] == [code], found
    return relevant[0]


def edit_tensors(path: Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> None:
    """Rewrite a safetensors file after ``edit`` changed its state dict in place (a real, valid file)."""
    tensors = load_file(path)
    edit(tensors)
    save_file({name: tensor.contiguous() for name, tensor in tensors.items()}, path, metadata={"format": "pt"})


# --------------------------------------------------------------------------------------------------
# Healthy checkpoints
# --------------------------------------------------------------------------------------------------


def test_minilm_is_ok(minilm: Path) -> None:
    result = run("audit", minilm)
    assert result.exit_code == 0
    assert result.stdout == f"{minilm}: ok, 0 warnings\n"
    assert result.stderr == ""


@pytest.mark.parametrize(
    "fixture", ["bert_dir", "bert_pytorch_dir", "bert_sharded_dir", "llama_dir", "llama_sharded_dir", "unigram_dir"]
)
def test_fixtures_are_ok(fixture: str, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(fixture)
    assert findings(model) == []
    result = run("audit", model)
    assert (result.exit_code, result.stdout) == (0, f"{model}: ok, 0 warnings\n")


def test_padding_rows_are_info_only(bert_padded_dir: Path) -> None:
    assert findings(bert_padded_dir) == [
        {
            "severity": "info",
            "code": "padding-rows",
            "message": "embedding rows (2048) exceed the tokenizer (2003 ids): 45 padding rows are free slots",
        }
    ]
    result = run("audit", bert_padded_dir)
    assert result.exit_code == 0
    assert result.stdout == (
        f"{bert_padded_dir}: ok, 0 warnings\n"
        "  info    padding-rows: embedding rows (2048) exceed the tokenizer (2003 ids):"
        " 45 padding rows are free slots\n"
    )


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


def test_tokenizer_grown_without_resize(bert_grown_dir: Path) -> None:
    tokenizer = json.loads((bert_grown_dir / "tokenizer.json").read_text(encoding="utf-8"))
    assert [t["content"] for t in tokenizer["added_tokens"][-2:]] == ["newtok1", "newtok2"]
    message = (
        "the tokenizer has 2002 tokens (highest id 2001) but embedding rows is 2000:"
        " ids 2000-2001 crash with 'index out of range in self'; run `vocabsurgeon resize` to grow the model"
    )
    assert only(bert_grown_dir, "tokenizer-exceeds-embeddings") == {
        "severity": "error",
        "code": "tokenizer-exceeds-embeddings",
        "message": message,
    }
    result = run("audit", bert_grown_dir)
    assert result.exit_code == 1
    assert result.stdout == (
        f"{bert_grown_dir}: 1 error, 0 warnings\n  error   tokenizer-exceeds-embeddings: {message}\n"
    )
    assert "has 2002 tokens" in result.stdout
    assert "is 2000" in result.stdout


def test_tokenizer_exceeds_config_without_weights(bert_grown_dir: Path) -> None:
    (bert_grown_dir / "model.safetensors").unlink()
    finding = only(bert_grown_dir, "tokenizer-exceeds-embeddings")
    assert finding["message"].startswith(
        "the tokenizer has 2002 tokens (highest id 2001) but config.vocab_size is 2000:"
    )


def test_config_vocab_size_differs_from_embeddings(bert_dir: Path) -> None:
    edit_json(bert_dir / "config.json", lambda config: config.update(vocab_size=2001))
    assert only(bert_dir, "config-embedding-mismatch")["message"] == (
        f"config.vocab_size is 2001 but {EMBEDDING} has 2000 rows (loading fails with 'size mismatch');"
        " run `vocabsurgeon resize` to bring them in line"
    )


def test_untied_lm_head_with_other_rows(llama_dir: Path) -> None:
    edit_tensors(llama_dir / "model.safetensors", lambda t: t.update({"lm_head.weight": t["lm_head.weight"][:510]}))
    assert only(llama_dir, "output-embedding-mismatch") == {
        "severity": "error",
        "code": "output-embedding-mismatch",
        "message": "lm_head.weight has 510 rows but model.embed_tokens.weight has 512",
    }


def test_prediction_bias_of_wrong_size(bert_dir: Path) -> None:
    edit_tensors(
        bert_dir / "model.safetensors",
        lambda t: t.update({"cls.predictions.bias": torch.zeros(1999, dtype=torch.float32)}),
    )
    assert (
        only(bert_dir, "bias-mismatch")["message"] == f"cls.predictions.bias has 1999 entries but {EMBEDDING} has 2000"
    )


def test_untied_causal_lm_without_lm_head(llama_dir: Path) -> None:
    edit_tensors(llama_dir / "model.safetensors", lambda t: t.pop("lm_head.weight"))
    assert only(llama_dir, "missing-output-embedding")["message"] == (
        "config.tie_word_embeddings is false but the weights have no output embedding (lm_head):"
        " transformers would initialize it randomly"
    )


def test_tied_causal_lm_without_lm_head_is_fine(llama_dir: Path) -> None:
    edit_tensors(llama_dir / "model.safetensors", lambda t: t.pop("lm_head.weight"))
    edit_json(llama_dir / "config.json", lambda config: config.update(tie_word_embeddings=True))
    assert findings(llama_dir) == []


def test_vocab_txt_lines_swapped(bert_dir: Path) -> None:
    lines = read_lines(bert_dir / "vocab.txt")
    first, second = lines[500], lines[501]
    lines[500], lines[501] = second, first
    write_lines(bert_dir / "vocab.txt", lines)
    assert only(bert_dir, "vocab-txt-mismatch")["message"] == (
        f"vocab.txt and tokenizer.json disagree on 2 tokens (first: {second!r} is id 500 in vocab.txt,"
        " id 501 in tokenizer.json): slow and fast tokenizers would encode differently"
    )


def test_vocab_txt_missing_a_token(bert_dir: Path) -> None:
    lines = read_lines(bert_dir / "vocab.txt")
    write_lines(bert_dir / "vocab.txt", lines[:-1])
    assert only(bert_dir, "vocab-txt-mismatch")["message"] == (
        "tokenizer.json's vocabulary has 1 tokens that vocab.txt lacks: slow and fast tokenizers differ"
    )


def test_special_token_not_in_vocabulary(bert_dir: Path) -> None:
    edit_json(bert_dir / "tokenizer_config.json", lambda config: config.update(mask_token="[FOO]"))
    edit_json(bert_dir / "special_tokens_map.json", lambda config: config.update(mask_token="[FOO]"))
    assert only(bert_dir, "special-token-missing")["message"] == "mask_token '[FOO]' is not in the vocabulary"


def test_special_token_map_only(bert_dir: Path) -> None:
    """special_tokens_map.json is read when tokenizer_config.json does not name the role."""
    edit_json(bert_dir / "tokenizer_config.json", lambda config: config.pop("mask_token"))
    edit_json(bert_dir / "special_tokens_map.json", lambda config: config.update(mask_token={"content": "[FOO]"}))
    assert only(bert_dir, "special-token-missing")["message"] == "mask_token '[FOO]' is not in the vocabulary"


def test_additional_special_token_not_in_vocabulary(bert_dir: Path) -> None:
    edit_json(bert_dir / "tokenizer_config.json", lambda config: config.update(additional_special_tokens=["[BAR]"]))
    assert only(bert_dir, "special-token-missing")["message"] == (
        "additional special token '[BAR]' is not in the vocabulary"
    )


def test_config_pad_token_id_out_of_range(bert_dir: Path) -> None:
    edit_json(bert_dir / "config.json", lambda config: config.update(pad_token_id=2000))
    assert (
        only(bert_dir, "config-token-id-out-of-range")["message"]
        == "config.pad_token_id = 2000 is outside the 2000 rows"
    )


def test_config_eos_list_out_of_range(llama_dir: Path) -> None:
    edit_json(llama_dir / "config.json", lambda config: config.update(eos_token_id=[503, -1]))
    assert only(llama_dir, "config-token-id-out-of-range")["message"] == (
        "config.eos_token_id[1] = -1 is outside the 512 rows"
    )


def test_added_tokens_decoder_disagrees(bert_dir: Path) -> None:
    def move_mask(config: dict[str, Any]) -> None:
        config["added_tokens_decoder"]["104"] = config["added_tokens_decoder"].pop("103")

    edit_json(bert_dir / "tokenizer_config.json", move_mask)
    assert only(bert_dir, "added-token-mismatch")["message"] == (
        "tokenizer_config.json's added_tokens_decoder has '[MASK]' at id 104, the vocabulary has '[unused99]'"
    )


# --------------------------------------------------------------------------------------------------
# Warnings
# --------------------------------------------------------------------------------------------------


def test_duplicated_placeholder_vocab_line(tmp_path: Path) -> None:
    """A repeated placeholder only loses a slot: a warning (any other repeated token is an error, see
    test_audit_hardening.py)."""
    from checkpoints import build_bert

    model = build_bert(tmp_path / "slow", tokenizer_json=False)
    lines = read_lines(model / "vocab.txt")
    lines[-1] = "[unused5]"
    write_lines(model / "vocab.txt", lines)
    assert findings(model) == [
        {"severity": "warning", "code": "sparse-ids", "message": "1 ids below 1999 belong to no token"},
        {
            "severity": "warning",
            "code": "duplicate-vocab-line",
            "message": "vocab.txt repeats '[unused5]' (ids 6 and 1999): transformers keeps the last line,"
            " so id 6 belongs to no token",
        },
    ]
    result = run("audit", model)
    assert result.exit_code == 0
    assert result.stdout.startswith(f"{model}: ok, 2 warnings\n  warning sparse-ids: ")


def test_extra_special_tokens_list(bert_dir: Path) -> None:
    edit_json(bert_dir / "tokenizer_config.json", lambda config: config.update(extra_special_tokens=["[unused5]"]))
    assert only(bert_dir, "extra-special-tokens-list") == {
        "severity": "warning",
        "code": "extra-special-tokens-list",
        "message": "tokenizer_config.json lists extra_special_tokens (transformers 5 format) without"
        " additional_special_tokens: transformers 4.x loses these special tokens, and 4.47-4.57 fail to load",
    }


def test_extra_special_tokens_with_additional_is_fine(bert_dir: Path) -> None:
    edit_json(
        bert_dir / "tokenizer_config.json",
        lambda config: config.update(extra_special_tokens=["[unused5]"], additional_special_tokens=["[unused5]"]),
    )
    assert findings(bert_dir) == []


def test_strict_makes_warnings_fail(bert_dir: Path) -> None:
    edit_json(bert_dir / "tokenizer_config.json", lambda config: config.update(extra_special_tokens=["[unused5]"]))
    assert run("audit", bert_dir).exit_code == 0
    result = run("audit", bert_dir, "--strict")
    assert result.exit_code == 1
    assert result.stdout.startswith(f"{bert_dir}: ok, 1 warning\n  warning extra-special-tokens-list: ")
    code, document = audit_json(bert_dir, strict=True)
    assert code == 1
    assert document["failed"] == 1
    assert document["models"][0]["ok"] is True
    assert document["models"][0]["warnings"] == 1


def test_directory_without_tokenizer_is_an_audit_error(bert_dir: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        (bert_dir / name).unlink()
    from vocabsurgeon.auditing import audit
    from vocabsurgeon.inventory import read_inventory

    report = audit(read_inventory(bert_dir))  # the library reports it as a finding
    assert [(f.severity, f.code) for f in report.findings] == [("error", "no-tokenizer")]
    result = run("audit", bert_dir)  # the command treats it as bad input: one line on stderr
    assert result.exit_code == 1
    assert result.stderr == (
        f"vocabsurgeon: error: {bert_dir}: no tokenizer files"
        " (tokenizer.json, vocab.txt, vocab.json or a SentencePiece model)\n"
    )


# --------------------------------------------------------------------------------------------------
# Several findings, several models, the JSON document
# --------------------------------------------------------------------------------------------------


def test_several_findings_in_check_order(bert_dir: Path) -> None:
    edit_json(bert_dir / "config.json", lambda config: config.update(vocab_size=2001, pad_token_id=5000))
    edit_json(bert_dir / "tokenizer_config.json", lambda config: config.update(mask_token="[FOO]"))
    write_lines(bert_dir / "vocab.txt", [*read_lines(bert_dir / "vocab.txt"), "the"])
    assert codes(bert_dir) == [
        ("error", "config-embedding-mismatch"),
        ("error", "duplicate-vocab-line"),
        ("error", "vocab-txt-mismatch"),
        ("error", "special-token-missing"),
        ("error", "config-token-id-out-of-range"),
    ]
    result = run("audit", bert_dir)
    assert result.exit_code == 1
    assert result.stdout.startswith(f"{bert_dir}: 5 errors, 0 warnings\n")
    assert result.stdout.count("\n") == 6


def test_json_document_structure(bert_dir: Path, bert_grown_dir: Path) -> None:
    code, document = audit_json(bert_dir, bert_grown_dir)
    assert code == 1
    assert set(document) == {"models", "failed"}
    assert document["failed"] == 1
    ok, grown = document["models"]
    assert ok == {"model": str(bert_dir), "ok": True, "errors": 0, "warnings": 0, "findings": []}
    assert set(grown) == {"model", "ok", "errors", "warnings", "findings"}
    assert (grown["model"], grown["ok"], grown["errors"], grown["warnings"]) == (str(bert_grown_dir), False, 1, 0)
    for finding in grown["findings"]:
        assert set(finding) == {"severity", "code", "message"}
        assert finding["severity"] in {"error", "warning", "info"}
    assert [f["code"] for f in grown["findings"]] == ["tokenizer-exceeds-embeddings"]


def test_several_directories_summary(minilm: Path, bert_dir: Path, bert_grown_dir: Path) -> None:
    result = run("audit", minilm, bert_dir, bert_grown_dir)
    assert result.exit_code == 1
    lines = result.stdout.split("\n")
    assert lines[0] == f"{minilm}: ok, 0 warnings"
    assert lines[1] == f"{bert_dir}: ok, 0 warnings"
    assert lines[2] == f"{bert_grown_dir}: 1 error, 0 warnings"
    assert result.stdout.endswith("\n\n3 checkpoints: 2 ok, 1 with errors\n")


def test_several_directories_all_ok(bert_dir: Path, llama_dir: Path) -> None:
    result = run("audit", bert_dir, llama_dir)
    assert result.exit_code == 0
    assert result.stdout == (
        f"{bert_dir}: ok, 0 warnings\n{llama_dir}: ok, 0 warnings\n\n2 checkpoints: 2 ok, 0 with errors\n"
    )


def test_several_directories_with_an_unreadable_one(bert_dir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    result = CliRunner().invoke(main, ["audit", str(bert_dir), str(missing)])
    assert result.exit_code == 1
    assert result.stdout == f"{bert_dir}: ok, 0 warnings\n\n2 checkpoints: 1 ok, 1 with errors\n"
    assert result.stderr == f"{missing}: unreadable: {missing}: no such directory\n"
    result = CliRunner().invoke(main, ["audit", str(bert_dir), str(missing), "--json"])
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document["failed"] == 1
    assert document["models"][1] == {"model": str(missing), "ok": False, "unreadable": f"{missing}: no such directory"}


def test_strict_with_several_directories(bert_dir: Path, llama_dir: Path) -> None:
    edit_json(bert_dir / "tokenizer_config.json", lambda config: config.update(extra_special_tokens=["[unused5]"]))
    assert run("audit", bert_dir, llama_dir).stdout.endswith("\n2 checkpoints: 2 ok, 0 with errors\n")
    result = run("audit", bert_dir, llama_dir, "--strict")
    assert result.exit_code == 1
    assert result.stdout.endswith("\n2 checkpoints: 1 ok, 1 with errors\n")


def test_library_report(bert_grown_dir: Path) -> None:
    report = audit(read_inventory(bert_grown_dir))
    assert isinstance(report, AuditReport)
    assert (report.ok, report.errors, report.warnings) == (False, 1, 0)
    assert isinstance(report.findings[0], Finding)
    assert report.findings[0].code == "tokenizer-exceeds-embeddings"


def test_duplicated_vocab_line_in_slow_only_checkpoint(tmp_path: Path) -> None:
    """Without tokenizer.json the last duplicate wins (as in BertTokenizer); the earlier id belongs to no token.
    A repeated word is an error: it now encodes to the last line's row."""
    from checkpoints import build_bert

    model = build_bert(tmp_path / "slow", tokenizer_json=False)
    assert findings(model) == []
    lines = read_lines(model / "vocab.txt")
    lines[-1] = "the"
    write_lines(model / "vocab.txt", lines)
    assert findings(model) == [
        {"severity": "warning", "code": "sparse-ids", "message": "1 ids below 1999 belong to no token"},
        {
            "severity": "error",
            "code": "duplicate-vocab-line",
            "message": "vocab.txt repeats 'the' (ids 303 and 1999): transformers keeps the last line,"
            " so id 303 belongs to no token",
        },
    ]
