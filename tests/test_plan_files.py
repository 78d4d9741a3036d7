"""Saved plans: --save-plan writes a reviewable JSON plan; `apply` writes exactly what the direct run writes, and
refuses (writing nothing) when the source changed since the plan was made."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from vocabsurgeon.cli import main

TOKENS = ("--token", "COVID", "--token", "COVID-19", "--special-token", "[special1]")


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(arg) for arg in args])


def test_saved_plan_applies_to_the_same_bytes(bert_dir: Path, tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    dry = run("remap", bert_dir, *TOKENS, "--dry-run", "--save-plan", plan)
    assert dry.exit_code == 0, dry.output
    assert dry.output.rstrip().endswith(f"dry run: nothing written; plan saved to {plan}")
    document = json.loads(plan.read_text(encoding="utf-8"))
    assert document["vocabsurgeon_plan"] == 1
    assert document["source"] == str(bert_dir.absolute())
    assert set(document["fingerprints"]) >= {"tokenizer.json", "vocab.txt", "model.safetensors", "config.json"}
    assert [p["token"] for p in document["placements"]] == ["COVID", "COVID-19", "[special1]"]

    applied, direct = tmp_path / "applied", tmp_path / "direct"
    assert run("apply", plan, "--out", applied).exit_code == 0
    assert run("remap", bert_dir, "--out", direct, *TOKENS).exit_code == 0
    for name in (
        "tokenizer.json",
        "vocab.txt",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "model.safetensors",
    ):
        assert (applied / name).read_bytes() == (direct / name).read_bytes(), name


def test_a_changed_source_is_refused(bert_dir: Path, tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    assert run("remap", bert_dir, *TOKENS, "--dry-run", "--save-plan", plan).exit_code == 0
    vocab = bert_dir / "vocab.txt"
    vocab.write_text(vocab.read_text(encoding="utf-8") + "extra\n", encoding="utf-8")
    out = tmp_path / "out"
    result = run("apply", plan, "--out", out)
    assert result.exit_code == 1
    assert result.stderr == (
        f"vocabsurgeon: error: {bert_dir.absolute()}: the source changed since this plan was made; make a new plan\n"
    )
    assert not out.exists()


def test_plan_file_errors(tmp_path: Path, bert_dir: Path) -> None:
    missing = run("apply", tmp_path / "nope.json", "--out", tmp_path / "out")
    assert missing.exit_code == 1
    assert missing.stderr == f"vocabsurgeon: error: {tmp_path / 'nope.json'}: plan file does not exist\n"
    other = tmp_path / "other.json"
    other.write_text('{"hello": 1}', encoding="utf-8")
    wrong = run("apply", other, "--out", tmp_path / "out")
    assert wrong.exit_code == 1
    assert wrong.stderr == f"vocabsurgeon: error: {other}: not a vocabsurgeon plan (version 1)\n"
    plan = tmp_path / "plan.json"
    plan.write_text("{}", encoding="utf-8")
    exists = run("remap", bert_dir, *TOKENS, "--dry-run", "--save-plan", plan)
    assert exists.exit_code == 1
    assert exists.stderr == f"vocabsurgeon: error: {plan}: already exists; pass --force to replace it\n"
    assert run("remap", bert_dir, *TOKENS, "--dry-run", "--save-plan", plan, "--force").exit_code == 0


def test_out_is_required_without_dry_run(bert_dir: Path) -> None:
    result = run("remap", bert_dir, *TOKENS)
    assert result.exit_code == 2
    assert "--out is required (unless --dry-run)" in result.stderr
