"""``resize``: the fix for "the tokenizer grew, the model did not" and for a config that disagrees with the rows."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner, Result
from helpers import error_codes
from safetensors.torch import load_file
from transformers import AutoModelForMaskedLM, AutoTokenizer

from vocabsurgeon.cli import main
from vocabsurgeon.inventory import TOKENIZER_FILES

EMBEDDING = "bert.embeddings.word_embeddings.weight"
BIAS = "cls.predictions.bias"
LOAD_KEYS = ("missing_keys", "unexpected_keys", "mismatched_keys")


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(arg) for arg in args], catch_exceptions=False)


def audit_json(model: Path) -> tuple[int, dict[str, Any]]:
    result = run("audit", model, "--json")
    document = json.loads(result.stdout)
    return result.exit_code, document


def config_vocab_size(model: Path) -> int:
    return json.loads((model / "config.json").read_text(encoding="utf-8"))["vocab_size"]


def load_mlm(model: Path) -> tuple[Any, dict[str, Any]]:
    """AutoModelForMaskedLM with its loading info, quietly (transformers' logging state is restored)."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        return AutoModelForMaskedLM.from_pretrained(model, output_loading_info=True)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_audit_fails_on_the_grown_checkpoint(bert_grown_dir: Path) -> None:
    code, document = audit_json(bert_grown_dir)
    assert code == 1
    assert "tokenizer-exceeds-embeddings" in error_codes(document)
    result = run("audit", bert_grown_dir)
    assert result.exit_code == 1
    assert "tokenizer-exceeds-embeddings" in result.output


@pytest.mark.parametrize(("pad", "rows"), [(None, 2002), (64, 2048)])
def test_resize_turns_the_grown_checkpoint_into_one_audit_passes(
    bert_grown_dir: Path, tmp_path: Path, pad: int | None, rows: int
) -> None:
    out = tmp_path / "out"
    extra = ["--pad-to-multiple-of", str(pad)] if pad else []
    result = run("resize", bert_grown_dir, "--out", out, "--quiet", *extra)
    assert result.exit_code == 0, result.output

    code, document = audit_json(out)
    assert code == 0, document
    assert error_codes(document) == set()
    assert run("audit", out).exit_code == 0

    assert config_vocab_size(out) == rows
    model, info = load_mlm(out)
    assert {key: sorted(info[key]) for key in LOAD_KEYS} == {key: [] for key in LOAD_KEYS}
    assert model.config.vocab_size == model.get_input_embeddings().weight.shape[0] == rows
    assert model.get_output_embeddings().weight.shape[0] == rows

    before, after = load_file(bert_grown_dir / "model.safetensors"), load_file(out / "model.safetensors")
    assert set(after) == set(before)
    vocab = (bert_grown_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
    trained = [i for i, token in enumerate(vocab) if not re.fullmatch(r"\[unused\d+\]", token)]
    for name, tensor in before.items():
        if name in (EMBEDDING, BIAS):
            assert after[name].shape[0] == rows
            assert torch.equal(after[name][:2000], tensor), name
            # new rows get the default init, the mean of the trained (non-placeholder) rows
            expected = tensor[trained].double().mean(0).float()
            for row in after[name][2000:]:
                torch.testing.assert_close(row, expected, atol=1e-6, rtol=0)
        else:
            assert torch.equal(after[name], tensor), name

    tokenizer = AutoTokenizer.from_pretrained(out)
    assert len(tokenizer) == 2002
    ids = tokenizer("newtok1 newtok2", return_tensors="pt")
    assert ids["input_ids"][0, 1:3].tolist() == [2000, 2001]
    with torch.no_grad():
        logits = model(**ids).logits  # ids 2000/2001 used to crash with 'index out of range in self'
    assert logits.shape[-1] == rows


def test_resize_leaves_the_tokenizer_files_alone(bert_grown_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run("resize", bert_grown_dir, "--out", out, "--quiet").exit_code == 0
    present = [name for name in TOKENIZER_FILES if (bert_grown_dir / name).exists()]
    assert "vocab.txt" in present
    for name in present:
        assert (out / name).read_bytes() == (bert_grown_dir / name).read_bytes(), name


def test_resize_to_fewer_rows_is_a_one_line_error_and_writes_nothing(bert_grown_dir: Path, tmp_path: Path) -> None:
    before = listing(tmp_path)
    result = run("resize", bert_grown_dir, "--out", tmp_path / "out", "--to", "1000")
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("vocabsurgeon: error: "), result.stderr
    assert "shrink" in lines[0]
    assert listing(tmp_path) == before


def test_resize_to_a_row_count_grows_to_it(bert_grown_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run("resize", bert_grown_dir, "--out", out, "--to", "2100", "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)["plan"]
    assert (plan["rows_before"], plan["rows_after"], plan["config"]) == (2000, 2100, {"vocab_size": 2100})
    assert config_vocab_size(out) == 2100
    after = load_file(out / "model.safetensors")
    assert (after[EMBEDDING].shape, after[BIAS].shape) == ((2100, 32), (2100,))
    assert run("audit", out).exit_code == 0
    model, info = load_mlm(out)
    assert not info["mismatched_keys"]
    assert model.get_input_embeddings().weight.shape[0] == 2100


def test_resize_to_a_non_number_is_a_usage_error(bert_grown_dir: Path, tmp_path: Path) -> None:
    result = run("resize", bert_grown_dir, "--out", tmp_path / "out", "--to", "lots")
    assert result.exit_code == 2
    assert "--to" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("config_rows", [1990, 2100])
def test_resize_fixes_a_config_only_mismatch(bert_dir: Path, tmp_path: Path, config_rows: int) -> None:
    config_path = bert_dir / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    assert config["vocab_size"] == 2000
    config["vocab_size"] = config_rows
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    code, document = audit_json(bert_dir)
    assert code == 1, document

    out = tmp_path / "out"
    result = run("resize", bert_dir, "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    assert config_vocab_size(out) == 2000  # the config follows the rows, not the other way round
    assert (out / "model.safetensors").read_bytes() == (bert_dir / "model.safetensors").read_bytes()
    assert run("audit", out).exit_code == 0
    _, info = load_mlm(out)
    assert {key: sorted(info[key]) for key in LOAD_KEYS} == {key: [] for key in LOAD_KEYS}
