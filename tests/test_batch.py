"""Issue 5 acceptance: ``batch`` applies one recipe to many directories in parallel, failures isolated.

The module builds twelve directories once: seven copies of a BERT MLM, a copy of the real all-MiniLM-L6-v2, a
``pytorch_model.bin`` BERT, a sharded Llama-style BPE checkpoint, a BERT whose tokenizer grew without a resize and
a BERT whose safetensors file is truncated. The first batch run over ``models/*`` is shared by several tests; the
re-run (over the ten good directories, listed in an ``@dirs.txt`` file) must change no byte and be quicker.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from checkpoints import CheckpointCache, build_bert, build_bert_grown_without_resize, build_llama_bpe, minilm_dir
from checkpoints import truncate_weights as truncate
from click.testing import CliRunner, Result
from transformers import AutoTokenizer

from vocabsurgeon.cli import main

RECIPE = """\
# issue 5 example recipe
tokens = ["COVID-19", "hospitalization"]
special_tokens = ["[special1]"]
strategy = "auto"
"""
RECIPE_TOKENS = ("COVID-19", "hospitalization", "[special1]")
GOOD = (*(f"bert{i}" for i in range(1, 8)), "all-MiniLM-L6-v2", "bert-bin", "llama-sharded")
BAD = {"bert-grown": "tokenizer-exceeds-embeddings", "bert-truncated": "truncated"}
RECORD_KEYS = {"model", "output", "status", "tokens_placed", "slots_used", "rows_added", "seconds", "reason"}


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(arg) for arg in args], catch_exceptions=False)


def tree_digests(root: Path) -> dict[str, str]:
    """sha256 of every file below ``root`` (hidden ones included), by relative path."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def one_line_error(result: Result) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("vocabsurgeon: error: "), result.stderr
    return lines[0]


def records(result: Result) -> dict[str, dict[str, Any]]:
    """The ``--json`` records by directory name."""
    document = json.loads(result.stdout)
    return {Path(record["model"]).name: record for record in document["results"]}


@dataclass(frozen=True)
class Workspace:
    root: Path
    models: Path
    recipe: Path
    out: Path
    first: Result
    first_seconds: float
    models_before: dict[str, str]


@pytest.fixture(scope="module")
def workspace(checkpoint_cache: CheckpointCache, tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """Twelve model directories and the first ``batch recipe.toml 'models/*' --out-root out --jobs 2`` over them."""
    root = tmp_path_factory.mktemp("batch")
    models = root / "models"
    models.mkdir()
    bert = checkpoint_cache.get("bert", lambda p: build_bert(p))
    for name in GOOD[:7]:
        shutil.copytree(bert, models / name)
    shutil.copytree(minilm_dir(), models / "all-MiniLM-L6-v2")
    shutil.copytree(
        checkpoint_cache.get("bert_pytorch", lambda p: build_bert(p, weights="pytorch")), models / "bert-bin"
    )
    shutil.copytree(
        checkpoint_cache.get("llama_sharded", lambda p: build_llama_bpe(p, weights="sharded")), models / "llama-sharded"
    )
    shutil.copytree(
        checkpoint_cache.get("bert_grown", lambda p: build_bert_grown_without_resize(p)), models / "bert-grown"
    )
    truncate(shutil.copytree(bert, models / "bert-truncated"))
    assert sorted(p.name for p in models.iterdir()) == sorted([*GOOD, *BAD])

    recipe = root / "recipe.toml"
    recipe.write_text(RECIPE, encoding="utf-8")
    out = root / "out"
    models_before = tree_digests(models)
    start = time.perf_counter()
    first = run("batch", recipe, str(models / "*"), "--out-root", out, "--jobs", "2")
    seconds = time.perf_counter() - start
    return Workspace(root, models, recipe, out, first, seconds, models_before)


def test_first_run_fails_exactly_the_two_bad_directories_with_their_reasons(workspace: Workspace) -> None:
    result = workspace.first
    assert result.exit_code == 1, result.output
    for name, reason in BAD.items():
        lines = [line for line in result.stdout.splitlines() if line.startswith(name + " ")]
        assert len(lines) == 1, result.stdout
        assert " failed " in lines[0], lines[0]
        assert reason in lines[0], lines[0]
    for name in GOOD:
        lines = [line for line in result.stdout.splitlines() if line.startswith(name + " ")]
        assert len(lines) == 1, result.stdout
        assert " ok " in lines[0], lines[0]
    assert "12 directories: 10 ok, 2 failed" in result.stdout


def test_out_root_holds_exactly_the_good_outputs(workspace: Workspace) -> None:
    assert sorted(p.name for p in workspace.out.iterdir()) == sorted(GOOD)  # no temp dirs, nothing for the bad ones


def test_the_sources_are_not_modified(workspace: Workspace) -> None:
    assert tree_digests(workspace.models) == workspace.models_before


def test_every_recipe_token_is_one_id_in_every_output(workspace: Workspace) -> None:
    for name in GOOD:
        output = workspace.out / name
        tokenizer = AutoTokenizer.from_pretrained(output)
        # in running text (after "a "): a byte-level BPE word is stored as Ġword, which a text-initial word is not
        context = tokenizer.encode("a", add_special_tokens=False)
        ids = {
            token: tokenizer.encode(f"a {token}", add_special_tokens=False)[len(context) :]
            if token.isalpha()
            else tokenizer.encode(token, add_special_tokens=False)
            for token in RECIPE_TOKENS
        }
        assert all(len(found) == 1 for found in ids.values()), (name, ids)
        assert len({found[0] for found in ids.values()}) == len(RECIPE_TOKENS), (name, ids)
        source = AutoTokenizer.from_pretrained(workspace.models / name)
        assert len(tokenizer) <= len(source) + len(RECIPE_TOKENS)
    audit = run("audit", *(workspace.out / name for name in GOOD))
    assert audit.exit_code == 0, audit.output


def test_rerun_over_the_good_directories_is_a_quicker_byte_identical_no_op(workspace: Workspace) -> None:
    listing = workspace.root / "dirs.txt"
    listing.write_text(
        "# the ten directories that worked\n\n" + "".join(f"{workspace.models / name}\n" for name in GOOD),
        encoding="utf-8",
    )
    before = tree_digests(workspace.out)
    start = time.perf_counter()
    second = run("batch", workspace.recipe, f"@{listing}", "--out-root", workspace.out, "--jobs", "2", "--json")
    seconds = time.perf_counter() - start
    assert second.exit_code == 0, second.output
    assert tree_digests(workspace.out) == before
    assert sorted(p.name for p in workspace.out.iterdir()) == sorted(GOOD)
    found = records(second)
    assert sorted(found) == sorted(GOOD)  # the @file listing was read, comment and blank line skipped
    assert {record["status"] for record in found.values()} == {"skipped"}
    assert workspace.first_seconds > seconds, (workspace.first_seconds, seconds)


def test_dry_run_writes_nothing_and_reports_the_plan(workspace: Workspace) -> None:
    out = workspace.root / "dry-out"
    before = tree_digests(workspace.models)
    result = run("batch", workspace.recipe, str(workspace.models / "*"), "--out-root", out, "--dry-run", "--json")
    assert result.exit_code == 1  # the two bad directories still fail
    assert not out.exists()
    assert tree_digests(workspace.models) == before
    document = json.loads(result.stdout)
    assert (document["dry_run"], document["failed"]) == (True, 2)
    found = records(result)
    for name, record in found.items():
        assert set(record) >= RECORD_KEYS
        assert isinstance(record["seconds"], float)
        assert record["seconds"] >= 0
        if name in BAD:
            assert record["status"] == "failed"
            assert BAD[name] in record["reason"]
        else:
            assert record["status"] == "planned", record
            # every good directory has free placeholders ([unusedN], reserved specials): strategy auto needs no rows
            assert (record["tokens_placed"], record["slots_used"], record["rows_added"]) == (3, 3, 0), record


def test_json_records_of_a_run_that_writes(bert_dir: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE, encoding="utf-8")
    result = run("batch", recipe, bert_dir, "--out-root", tmp_path / "out", "--jobs", "1", "--json")
    assert result.exit_code == 0, result.output
    (record,) = json.loads(result.stdout)["results"]
    assert set(record) >= RECORD_KEYS
    assert record["status"] == "ok"
    assert (record["tokens_placed"], record["slots_used"], record["rows_added"]) == (3, 3, 0)  # [unusedN] slots
    assert isinstance(record["seconds"], float)
    assert record["seconds"] > 0
    assert record["output"] == str(tmp_path / "out" / bert_dir.name)


def test_a_recipe_change_reruns_the_directory(bert_dir: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.toml"
    out_root = tmp_path / "out"
    recipe.write_text(RECIPE, encoding="utf-8")
    first = run("batch", recipe, bert_dir, "--out-root", out_root, "--jobs", "1", "--json")
    assert first.exit_code == 0, first.output
    again = run("batch", recipe, bert_dir, "--out-root", out_root, "--jobs", "1", "--json")
    assert records(again)[bert_dir.name]["status"] == "skipped"
    manifest_before = json.loads((out_root / bert_dir.name / "vocabsurgeon.json").read_text(encoding="utf-8"))

    recipe.write_text('tokens = ["vaccination", "pandemic"]\nstrategy = "auto"\n', encoding="utf-8")
    changed = run("batch", recipe, bert_dir, "--out-root", out_root, "--jobs", "1", "--json")
    assert changed.exit_code == 0, changed.output
    record = records(changed)[bert_dir.name]
    assert (record["status"], record["tokens_placed"]) == ("ok", 2)
    assert sorted(p.name for p in out_root.iterdir()) == [bert_dir.name]
    output = out_root / bert_dir.name
    manifest = json.loads((output / "vocabsurgeon.json").read_text(encoding="utf-8"))
    assert manifest["recipe_hash"] != manifest_before["recipe_hash"]
    assert [t["token"] for t in manifest["tokens"]] == ["vaccination", "pandemic"]
    tokenizer = AutoTokenizer.from_pretrained(output)
    assert all(len(tokenizer.encode(t, add_special_tokens=False)) == 1 for t in ("vaccination", "pandemic"))
    assert len(tokenizer.encode("hospitalization", add_special_tokens=False)) > 1  # the old recipe's output is gone


@pytest.mark.parametrize(
    ("text", "key", "line"),
    [
        ('tokens = ["COVID-19"]\nstrategy = "auto"\nstratgey = "remap"\n', "stratgey", 3),
        ('tokens = ["COVID-19"]\n\n\npad_to_multiple_of = "64"\n', "pad_to_multiple_of", 4),
        ('tokens = "COVID-19"\n', "tokens", 1),
    ],
    ids=["unknown-key", "wrong-type", "string-not-list"],
)
def test_recipe_errors_name_the_key_and_line(bert_dir: Path, tmp_path: Path, text: str, key: str, line: int) -> None:
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(text, encoding="utf-8")
    result = run("batch", recipe, bert_dir, "--out-root", tmp_path / "out")
    assert result.exit_code == 1  # as for a missing recipe: the file is wrong, not the command line
    assert result.stdout == ""
    message = one_line_error(result)
    assert key in message, message
    assert f"line {line}" in message, message
    assert not (tmp_path / "out").exists()


def test_two_models_with_the_same_directory_name_is_an_error_before_any_write(
    checkpoint_cache: CheckpointCache, tmp_path: Path
) -> None:
    bert = checkpoint_cache.get("bert", lambda p: build_bert(p))
    first = Path(shutil.copytree(bert, tmp_path / "a" / "m"))
    second = Path(shutil.copytree(bert, tmp_path / "b" / "m"))
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE, encoding="utf-8")
    result = run("batch", recipe, first, second, "--out-root", tmp_path / "out", "--jobs", "1")
    assert result.exit_code != 0
    message = one_line_error(result)
    assert str(first) in message, message
    assert str(second) in message, message
    assert not (tmp_path / "out").exists()


_AFTER_TORCH_THREADS = """
import sys
from pathlib import Path

import torch

torch.set_num_threads(2)
x = torch.randn(256, 256)
for _ in range(3):  # start torch's OpenMP thread pool in this (the parent) process
    (x @ x)[torch.arange(0, 256, 2)].sum()

from vocabsurgeon.batch import Recipe, run_batch

*models, out = sys.argv[1:]
recipe = Recipe(tokens=("hospitalization",), strategy="append")
outcomes = run_batch(recipe, [Path(m) for m in models], Path(out), jobs=2)
print(" ".join(outcome.status for outcome in outcomes))
"""


def test_parallel_batch_works_in_a_process_that_already_ran_torch(
    checkpoint_cache: CheckpointCache, tmp_path: Path
) -> None:
    """Regression: forked workers inherited the parent's busy libgomp pool and hung forever in their first torch op
    (read_row_mean of a pytorch_model.bin). Run in a subprocess so that a hang is a timeout, not a stuck suite."""
    source = checkpoint_cache.get("bert_pytorch", lambda p: build_bert(p, weights="pytorch"))
    models = [Path(shutil.copytree(source, tmp_path / f"bin{i}")) for i in (1, 2)]
    process = subprocess.Popen(
        [sys.executable, "-c", _AFTER_TORCH_THREADS, *map(str, models), str(tmp_path / "out")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the workers too
        process.communicate()
        pytest.fail("batch --jobs 2 hung after torch had started its thread pool")
    assert process.returncode == 0, stderr[-3000:]
    assert stdout.split() == ["ok", "ok"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["bin1", "bin2"]
