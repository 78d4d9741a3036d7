"""Draft plans: a surgery starts copying the weights with a draft's rows (ids, modes and rows from the normalizer and
pre-tokenizer alone) while the plan is completed with the pieces a subword-mean row averages."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from checkpoints import minilm_dir

from vocabsurgeon.apply import apply_plan
from vocabsurgeon.backend import load_backend
from vocabsurgeon.formats import safetensors_stream
from vocabsurgeon.inventory import read_inventory
from vocabsurgeon.plan import Plan
from vocabsurgeon.planner import Options, TokenRequest, plan_surgery

TOKENS = ["COVID", "hospitalization", "COVID-19", "new york", "##itis", "zzqxw", "the", "한국어"]
SPECIAL = ["[special1]", "<|marker|>"]


def _requests(tokens: list[str]) -> list[TokenRequest]:
    return [TokenRequest(t) for t in tokens] + [TokenRequest(t, special=True) for t in SPECIAL]


def _layout(plan: Plan) -> tuple[object, ...]:
    return (
        [(p.token, p.content, p.id, p.mode, p.slot, p.replaces, p.init != "keep") for p in plan.placements],
        plan.skipped,
        plan.rows_before,
        plan.rows_after,
        plan.config_vocab_size,
        plan.tokenizer_size_after,
    )


@pytest.mark.parametrize("fixture", ["bert_dir", "llama_dir", "unigram_dir", "bert_padded_dir"])
@pytest.mark.parametrize("operation", ["append", "auto"])
@pytest.mark.parametrize("pad", [None, 64])
def test_a_draft_has_the_rows_of_its_plan(
    request: pytest.FixtureRequest, fixture: str, operation: str, pad: int | None
) -> None:
    inventory = read_inventory(request.getfixturevalue(fixture))
    tokens = [t for t in TOKENS if not (t.startswith("##") and fixture != "bert_dir")]
    options = Options(pad_to_multiple_of=pad)
    draft = plan_surgery(inventory, _requests(tokens), operation, options, pieces=False)  # type: ignore[arg-type]
    plan = plan_surgery(inventory, _requests(tokens), operation, options)  # type: ignore[arg-type]
    assert _layout(draft) == _layout(plan)
    assert all(not p.pieces for p in draft.placements)
    assert any(p.pieces for p in plan.placements)


def test_a_draft_of_a_remap_on_minilm_has_the_rows_of_its_plan() -> None:
    inventory = read_inventory(minilm_dir())
    draft = plan_surgery(inventory, _requests(TOKENS), "remap", pieces=False)
    plan = plan_surgery(inventory, _requests(TOKENS), "remap")
    assert _layout(draft) == _layout(plan)
    assert {p.init for p in plan.placements} >= {"subword-mean", "mean"}


def test_the_light_backend_normalizes_and_splits_like_the_full_one(bert_dir: Path, llama_dir: Path) -> None:
    for directory in (bert_dir, llama_dir):
        inventory = read_inventory(directory)
        light, full = load_backend(inventory, model=False), load_backend(inventory)
        assert light is not full
        for text in ["COVID-19 Patients", "Ünïcödé àccents, 한국어!", "  new   york  "]:
            assert light.normalize(text) == full.normalize(text)
            assert light.pre_tokenize(light.normalize(text)) == full.pre_tokenize(full.normalize(text))
        with pytest.raises(RuntimeError, match="model=True"):
            light.encode("covid")
        assert load_backend(inventory) is full  # kept for the verification of the same surgery


def test_a_draft_is_never_applied(bert_dir: Path, tmp_path: Path) -> None:
    outs = tmp_path / "outs"
    outs.mkdir()
    inventory = read_inventory(bert_dir)
    draft = plan_surgery(inventory, _requests(["hospitalization"]), "append", pieces=False)
    with pytest.raises(ValueError, match="draft"):
        apply_plan(inventory, draft, outs / "out")
    assert os.listdir(outs) == []


def test_a_plan_that_does_not_match_its_draft_writes_nothing(bert_dir: Path, tmp_path: Path) -> None:
    outs = tmp_path / "outs"
    outs.mkdir()
    inventory = read_inventory(bert_dir)
    draft = plan_surgery(inventory, _requests(["hospitalization"]), "append", pieces=False)
    other = plan_surgery(inventory, _requests(["hospitalization", "zzqxw"]), "append")
    with pytest.raises(RuntimeError, match="differ from its draft"):
        apply_plan(inventory, lambda: other, outs / "out", draft=draft)
    assert os.listdir(outs) == []


def test_a_plan_function_that_fails_writes_nothing(bert_dir: Path, tmp_path: Path) -> None:
    outs = tmp_path / "outs"
    outs.mkdir()
    inventory = read_inventory(bert_dir)
    draft = plan_surgery(inventory, _requests(["hospitalization"]), "append", pieces=False)

    def broken() -> Plan:
        raise KeyError("injected")

    with pytest.raises(KeyError, match="injected"):
        apply_plan(inventory, broken, outs / "out", draft=draft)
    assert os.listdir(outs) == []


def test_a_plan_function_and_a_plan_write_the_same_bytes(llama_dir: Path, tmp_path: Path) -> None:
    inventory = read_inventory(llama_dir)
    requests = _requests(TOKENS[:6])
    plan = plan_surgery(inventory, requests, "append", Options(pad_to_multiple_of=64))
    draft = plan_surgery(inventory, requests, "append", Options(pad_to_multiple_of=64), pieces=False)
    apply_plan(inventory, plan, tmp_path / "direct")
    result = apply_plan(inventory, lambda: plan, tmp_path / "pipelined", draft=draft)
    assert result.plan == plan
    for path in sorted((tmp_path / "direct").rglob("*")):
        if path.is_file() and path.name != "vocabsurgeon.json":
            twin = tmp_path / "pipelined" / path.relative_to(tmp_path / "direct")
            assert twin.read_bytes() == path.read_bytes(), path.name


def test_a_failing_plan_cancels_the_copy(llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The weights thread stops at its next range instead of copying everything before the error is reported."""
    monkeypatch.setattr(safetensors_stream, "COPY_JOB_BYTES", 512)
    monkeypatch.setattr(safetensors_stream, "COPY_STREAMS", 1)
    calls: list[int] = []
    copy_range = safetensors_stream.copy_range

    def slow(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        time.sleep(0.01)
        copy_range(*args, **kwargs)

    monkeypatch.setattr(safetensors_stream, "copy_range", slow)
    inventory = read_inventory(llama_dir)
    total = sum(inventory.path(f).stat().st_size for ws in inventory.weights for f in ws.files) // 512
    assert total > 100
    draft = plan_surgery(inventory, _requests(["hospitalization"]), "append", pieces=False)

    def broken() -> Plan:
        time.sleep(0.05)
        raise KeyError("injected")

    outs = tmp_path / "outs"
    outs.mkdir()
    with pytest.raises(KeyError, match="injected"):
        apply_plan(inventory, broken, outs / "out", draft=draft)
    assert len(calls) < total // 4
    assert os.listdir(outs) == []
