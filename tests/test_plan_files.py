"""Plans: the plan is the whole decision (--dry-run --json lists every tensor operation and every output file), a
saved plan applies to exactly the bytes of the direct surgery, and a hand-edited or stale plan is refused with one
line naming the field, writing nothing."""

from __future__ import annotations

import importlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import vocabsurgeon
from vocabsurgeon.cli import main
from vocabsurgeon.errors import PlanError
from vocabsurgeon.plan import parse_plan

TOKENS = ("--token", "COVID", "--token", "COVID-19", "--special-token", "[special1]")


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(arg) for arg in args])


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "vocabsurgeon.json"
    }


def test_saved_plan_applies_to_the_same_bytes(bert_dir: Path, tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    dry = run("remap", bert_dir, *TOKENS, "--dry-run", "--save-plan", plan)
    assert dry.exit_code == 0, dry.output
    assert dry.output.rstrip().endswith(f"dry run: nothing written; plan saved to {plan}")
    document = json.loads(plan.read_text(encoding="utf-8"))
    assert document["vocabsurgeon_plan"] == 2
    assert document["source"] == str(bert_dir.absolute())
    assert set(document["fingerprints"]) == {p.name for p in bert_dir.iterdir()}
    assert all(value.startswith("sha256:") for value in document["fingerprints"].values())
    assert [p["token"] for p in document["placements"]] == ["COVID", "COVID-19", "[special1]"]

    applied, direct = tmp_path / "applied", tmp_path / "direct"
    assert run("apply", plan, "--out", applied).exit_code == 0
    assert run("remap", bert_dir, "--out", direct, *TOKENS).exit_code == 0
    assert tree(applied) == tree(direct)


def test_a_saved_append_plan_of_a_sharded_llama_applies_to_the_same_bytes(
    llama_sharded_dir: Path, tmp_path: Path
) -> None:
    plan = tmp_path / "plan.json"
    args = ("--token", "zqxjv", "--token", "qqwwv", "--pad-to-multiple-of", "64")
    assert run("append", llama_sharded_dir, *args, "--dry-run", "--save-plan", plan).exit_code == 0
    assert run("apply", plan, "--out", tmp_path / "applied").exit_code == 0
    assert run("append", llama_sharded_dir, *args, "--out", tmp_path / "direct").exit_code == 0
    assert tree(tmp_path / "applied") == tree(tmp_path / "direct")


def test_dry_run_json_lists_every_tensor_operation_and_output_file(llama_sharded_dir: Path, tmp_path: Path) -> None:
    result = run("append", llama_sharded_dir, "--token", "zqxjv", "--pad-to-multiple-of", "64", "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)["plan"]
    inventory = vocabsurgeon.read_inventory(llama_sharded_dir)
    weights = inventory.primary_weights
    assert weights is not None
    vocab_tensors = {"model.embed_tokens.weight", "lm_head.weight"}
    assert {op["name"] for op in plan["tensors"]} == vocab_tensors
    rows_after = plan["rows_after"]
    assert rows_after % 64 == 0
    for op in plan["tensors"]:
        assert op["file"] == weights.locations[op["name"]]
        assert (op["axis"], op["rows_before"], op["rows_after"]) == (0, plan["rows_before"], rows_after)
        written = sorted(i for ids in op["rows"].values() for i in ids)
        assert written == list(range(plan["rows_before"], rows_after))  # the token's row and every padding row
        assert op["rows"]["subword-mean"] == [plan["placements"][0]["id"]]
    files = {f["path"]: f for f in plan["files"]}
    assert set(files) == {*inventory.files, "vocabsurgeon.json"}
    changed = {op["file"] for op in plan["tensors"]}
    for name in weights.files:
        assert files[name]["action"] == ("edit" if name in changed else "copy")
    assert files["model.safetensors.index.json"]["action"] == "rewrite"
    assert files["tokenizer.json"]["action"] == "rewrite"
    assert len(files["tokenizer.json"]["sha256"]) == 64
    assert files["config.json"]["action"] == "rewrite"
    assert plan["config"] == {"vocab_size": rows_after}
    assert not list(tmp_path.glob("*out*"))

    text = run("append", llama_sharded_dir, "--token", "zqxjv", "--pad-to-multiple-of", "64", "--dry-run")
    assert "model.embed_tokens.weight" in text.stdout
    assert "1 subword-mean" in text.stdout
    assert re.search(r"^model\.safetensors\.index\.json +rewrite$", text.stdout, re.MULTILINE)


def test_a_pytorch_conversion_plan_names_the_converted_files(bert_dir: Path) -> None:
    result = run("remap", bert_dir, "--token", "covid", "--weights-format", "pytorch", "--dry-run", "--json")
    files = {f["path"]: f for f in json.loads(result.stdout)["plan"]["files"]}
    assert files["pytorch_model.bin"] == {
        "path": "pytorch_model.bin",
        "action": "convert",
        "source": "model.safetensors",
    }
    assert "model.safetensors" not in files


# ------------------------------------------------------------------------------------------------ hand edits


def _edit_placement(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(document: dict[str, Any]) -> None:
        document["placements"][0][key] = value

    return edit


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(document: dict[str, Any]) -> None:
        if value is ...:
            del document[key]
        else:
            document[key] = value

    return edit


def _edit_both(key: str, value: Any, other: str, other_value: Any) -> Callable[[dict[str, Any]], None]:
    """Edit a placement's ``key``; ``other_value`` None: recompute ``other`` (its pieces) as the planner would."""

    def edit(document: dict[str, Any]) -> None:
        document["placements"][0][key] = value
        if other_value is None:
            fresh = vocabsurgeon.plan_surgery(document["source"], "remap", tokens=[value])
            document["placements"][0][other] = list(fresh.placements[0].pieces)

    return edit


def _edit_tensor(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(document: dict[str, Any]) -> None:
        document["tensors"][0][key] = value

    return edit


def _weight_file_action(action: str) -> Callable[[dict[str, Any]], None]:
    def edit(document: dict[str, Any]) -> None:
        next(f for f in document["files"] if f["path"] == "model.safetensors")["action"] = action

    return edit


def _duplicate_id(document: dict[str, Any]) -> None:
    document["placements"][1]["id"] = document["placements"][0]["id"]


def _bogus_tensor_init(document: dict[str, Any]) -> None:
    op = document["tensors"][0]
    op["rows"] = {"bogus": [i for ids in op["rows"].values() for i in ids]}


def _drop_tensor(document: dict[str, Any]) -> None:
    document["tensors"].pop()


def _tensor_rows(document: dict[str, Any]) -> None:
    document["tensors"][0]["rows_before"] = 7


HAND_EDITS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "init bogus": (
        _edit_placement("init", "bogus"),
        "field placements[0].init must be one of subword-mean, distill, mean",
    ),
    "mode whatever": (_edit_placement("mode", "whatever"), "field placements[0].mode must be one of vocab, added"),
    "id out of range": (_edit_placement("id", 10**6), "field placements[0].id is 1000000, outside the 2000 rows"),
    "id as a string": (_edit_placement("id", "5"), "field placements[0].id must be an integer, not a string"),
    "negative id": (_edit_placement("id", -1), "field placements[0].id must be at least 0, not -1"),
    "two placements on one id": (_duplicate_id, "field placements[1].id is 1, also the id of placements[0]"),
    "replaces another token": (
        _edit_placement("replaces", "[unused77]"),
        "field placements[0].replaces is '[unused77]' but the source has '[unused0]' at id 1; make a new plan",
    ),
    "id of a real token": (
        _edit_placement("id", 1500),
        "field placements[0].id is 1500, the id of 'spring', not a free",
    ),
    "fingerprints empty": (_set("fingerprints", {}), "field fingerprints must be a non-empty object"),
    "fingerprints missing": (_set("fingerprints", ...), "field fingerprints is missing"),
    "fingerprint not sha256": (
        lambda d: d["fingerprints"].update({"vocab.txt": "quick:abc"}),
        "field fingerprints['vocab.txt'] must be 'sha256:' and 64 hex digits",
    ),
    "operation unknown": (
        _set("operation", "transplant"),
        "field operation must be one of remap, append, auto, resize",
    ),
    "plan version": (_set("vocabsurgeon_plan", 1), "not a vocabsurgeon plan of version 2 (1 vocabsurgeon_plan)"),
    "tensor init unknown": (_bogus_tensor_init, "field tensors[0].rows names an unknown initialization 'bogus'"),
    "tensor dropped": (_drop_tensor, "field tensors is not what its placements decide for the source"),
    "tensor rows edited": (_tensor_rows, "field tensors[0].rows leaves new rows of 7..1999 without an initialization"),
    "content edited": (_edit_placement("content", "covidx"), "field placements[0].pieces are not the pieces"),
    "content and pieces edited": (
        _edit_both("content", "covidx", "pieces", None),
        "field files is not what its placements decide for the source",  # the tokenizer files' recorded sha256
    ),
    "pieces changed": (_edit_placement("pieces", [5, 5]), "field placements[0].pieces are not the pieces"),
    "exclude_from_mean emptied": (_set("exclude_from_mean", []), "field exclude_from_mean is not what its placements"),
    "exclude_from_mean out of range": (_set("exclude_from_mean", [10**12]), "field exclude_from_mean is not what"),
    "init_std changed": (_set("init_std", 5.0), "field init_std is not what its placements decide"),
    "init_std not finite": (_set("init_std", float("nan")), "field init_std must be a positive finite number"),
    "init_std negative": (_set("init_std", -1), "field init_std must be a positive finite number, not -1"),
    "seed negative": (_set("seed", -7), "field seed must be at least 0, not -7"),
    "axis as a string": (_edit_tensor("axis", "0"), "field tensors[0].axis must be one of 0, 1, not '0'"),
    "axis as a float": (_edit_tensor("axis", 0.0), "field tensors[0].axis must be one of 0, 1, not 0.0"),
    "axis as a boolean": (_edit_tensor("axis", True), "field tensors[0].axis must be one of 0, 1, not True"),
    "tensor file changed": (_edit_tensor("file", "other.safetensors"), "field tensors is not what its placements"),
    "weights_format changed": (_set("weights_format", "pytorch"), "field files is not what its placements decide"),
    "a file added": (
        lambda d: d["files"].append({"path": "evil.bin", "action": "create"}),
        "field files is not what its placements decide",
    ),
    "a weight file's action changed": (_weight_file_action("copy"), "field files is not what its placements"),
    "form changed": (
        _edit_placement("form", "running-text"),
        "field placements[0].form is 'running-text' but the planner gives it 'as-is'",
    ),
    "form unknown": (
        _edit_placement("form", "sentence"),
        "field placements[0].form must be one of as-is, running-text",
    ),
    "slot changed": (_edit_placement("slot", "padding"), "field placements[0].slot is 'padding' but id 1 is"),
    "operation changed": (_set("operation", "append"), "field operation is 'append' but placements[0] takes"),
    "pad_init keep": (_set("pad_init", "keep"), "field pad_init must be one of mean, zeros, normal, not 'keep'"),
    "plan version field": (_set("version", 99), "field version must be one of 2, not 99"),
    "fingerprint not hex": (
        lambda d: d["fingerprints"].update({"vocab.txt": "sha256:" + "z" * 64}),
        "field fingerprints['vocab.txt'] must be 'sha256:' and 64 hex digits",
    ),
    "pieces as strings": (_edit_placement("pieces", ["3"]), "field placements[0].pieces[0] must be a non-negative"),
}


@pytest.mark.parametrize("case", list(HAND_EDITS))
def test_a_hand_edited_plan_is_one_line_and_writes_nothing(case: str, bert_dir: Path, tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    assert run("remap", bert_dir, *TOKENS, "--dry-run", "--save-plan", plan).exit_code == 0
    document = json.loads(plan.read_text(encoding="utf-8"))
    edit, expected = HAND_EDITS[case]
    edit(document)
    plan.write_text(json.dumps(document), encoding="utf-8")
    outs = tmp_path / "outs"
    outs.mkdir()
    result = run("apply", plan, "--out", outs / "out")
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("vocabsurgeon: error: ")
    assert "internal error" not in result.stderr
    assert expected in result.stderr
    assert os.listdir(outs) == []


def test_parse_plan_round_trips(bert_dir: Path) -> None:
    plan = vocabsurgeon.plan_surgery(bert_dir, "remap", tokens=["covid", "COVID-19"], fingerprints=True)
    assert parse_plan(json.loads(json.dumps(plan.to_json()))) == plan
    with pytest.raises(PlanError, match="field placements must be a list"):
        parse_plan({**plan.to_json(), "placements": {}})


def test_a_changed_source_is_refused(bert_dir: Path, tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    assert run("remap", bert_dir, *TOKENS, "--dry-run", "--save-plan", plan).exit_code == 0
    vocab = bert_dir / "vocab.txt"
    vocab.write_text(vocab.read_text(encoding="utf-8") + "extra\n", encoding="utf-8")
    out = tmp_path / "out"
    result = run("apply", plan, "--out", out)
    assert result.exit_code == 1
    assert result.stderr == (
        f"vocabsurgeon: error: {bert_dir.absolute()}: the source changed since this plan was made (vocab.txt);"
        " make a new plan\n"
    )
    assert not out.exists()


def test_sixteen_bytes_flipped_in_the_middle_of_a_90_mb_weight_file_are_refused(minilm: Path, tmp_path: Path) -> None:
    """A fingerprint covers every byte: not only a file's size and ends."""
    weights = minilm / "model.safetensors"
    assert weights.stat().st_size > 80 << 20
    plan = tmp_path / "plan.json"
    assert run("remap", minilm, "--token", "covid", "--dry-run", "--save-plan", plan).exit_code == 0
    data = bytearray(weights.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(b ^ 0xFF for b in data[middle : middle + 16])
    weights.unlink()  # the fixture's file may be a link to the shared copy: write a new one
    weights.write_bytes(bytes(data))
    outs = tmp_path / "outs"
    outs.mkdir()
    result = run("apply", plan, "--out", outs / "out")
    assert result.exit_code == 1
    assert result.stderr == (
        f"vocabsurgeon: error: {minilm.absolute()}: the source changed since this plan was made (model.safetensors);"
        " make a new plan\n"
    )
    assert os.listdir(outs) == []


def test_plan_file_errors(tmp_path: Path, bert_dir: Path) -> None:
    missing = run("apply", tmp_path / "nope.json", "--out", tmp_path / "out")
    assert missing.exit_code == 1
    assert missing.stderr == f"vocabsurgeon: error: {tmp_path / 'nope.json'}: plan file does not exist\n"
    other = tmp_path / "other.json"
    other.write_text('{"hello": 1}', encoding="utf-8")
    wrong = run("apply", other, "--out", tmp_path / "out")
    assert wrong.exit_code == 1
    assert wrong.stderr == (
        f"vocabsurgeon: error: {other}: not a vocabsurgeon plan of version 2 (no vocabsurgeon_plan);"
        " make the plan again with this version (--save-plan)\n"
    )
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


@pytest.mark.parametrize(
    ("fixture", "operation", "tokens"),
    [("bert_dir", "remap", ["covid", "COVID-19"]), ("llama_sharded_dir", "append", ["zqxjv", "naïveté"])],
)
def test_rendered_documents_are_what_their_bytes_parse_to(
    fixture: str, operation: str, tokens: list[str], request: pytest.FixtureRequest
) -> None:
    """The surgery's check takes the rendered JSON documents as values instead of parsing the written files again:
    they must be exactly what parsing those bytes gives."""
    plan = vocabsurgeon.plan_surgery(request.getfixturevalue(fixture), operation, tokens=tokens)  # type: ignore[arg-type]
    assert plan.documents
    for name, value in plan.documents.items():
        assert json.loads(plan.rendered[name]) == value, name


def test_a_failing_surgery_cancels_the_weight_copy(
    llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When apply fails beside the copy (here: writing the tokenizer files), the weights thread stops at its next
    range instead of copying everything before the error is reported, and nothing is left behind."""
    import time

    from vocabsurgeon.formats import safetensors_stream

    monkeypatch.setattr(safetensors_stream, "COPY_JOB_BYTES", 512)
    monkeypatch.setattr(safetensors_stream, "COPY_STREAMS", 1)
    calls: list[int] = []
    copy_range = safetensors_stream.copy_range

    def slow(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        time.sleep(0.01)
        copy_range(*args, **kwargs)

    monkeypatch.setattr(safetensors_stream, "copy_range", slow)
    apply_module = importlib.import_module("vocabsurgeon.apply")

    def broken(*args: Any, **kwargs: Any) -> None:
        time.sleep(0.05)
        raise KeyError("injected")

    monkeypatch.setattr(apply_module, "_write_other_files", broken)
    inventory = vocabsurgeon.read_inventory(llama_dir)
    total = sum(inventory.path(f).stat().st_size for ws in inventory.weights for f in ws.files) // 512
    assert total > 100
    plan = vocabsurgeon.plan_surgery(inventory, "append", tokens=["zqxjvv"])
    outs = tmp_path / "outs"
    outs.mkdir()
    with pytest.raises(KeyError, match="injected"):
        vocabsurgeon.apply_plan(plan, outs / "out", source=inventory)
    assert len(calls) < total // 4
    assert os.listdir(outs) == []


def test_a_plan_applied_to_another_checkpoint_is_checked_against_it(tmp_path: Path) -> None:
    """The library's apply_plan with another source runs the same check as a loaded plan: a plan whose every
    decision holds there (same ids, rows and pieces) applies; one made for another vocabulary layout does not."""
    from checkpoints import build_bert, wordpiece_vocab

    start, end = build_bert(tmp_path / "start"), build_bert(tmp_path / "end", vocab=wordpiece_vocab("end"))
    plan = vocabsurgeon.plan_surgery(start, "remap", tokens=["covid"])
    with pytest.raises(PlanError, match=r"field placements\[0\]\.id is 1, the id of"):
        vocabsurgeon.apply_plan(plan, tmp_path / "out", source=end)
    assert not (tmp_path / "out").exists()
    assert vocabsurgeon.apply_plan(plan, tmp_path / "out", source=vocabsurgeon.read_inventory(start)).verified
