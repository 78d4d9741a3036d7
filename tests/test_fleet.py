"""batch at fleet scale: task shares (``--task-index/--task-count``, or a Slurm array task's environment), JSON-lines
reports merged by ``batch-report``, and the two examples (examples/slurm_array.sh run with the array variables set
by hand, examples/ray_batch.py on a local Ray)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from vocabsurgeon.cli import main

REPO_ROOT = Path(__file__).resolve().parent.parent
DIRECTORIES = 7


def invoke(*args: str | Path, env: dict[str, str] | None = None) -> Any:
    return CliRunner(env=env).invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def fleet(bert_dir: Path, tmp_path: Path) -> tuple[Path, Path, list[Path]]:
    """A recipe, a directory list (dirs.txt) and seven tiny BERT directories."""
    models = [Path(shutil.copytree(bert_dir, tmp_path / "models" / f"m{i}")) for i in range(DIRECTORIES)]
    listing = tmp_path / "dirs.txt"
    listing.write_text("".join(f"{m}\n" for m in models), encoding="utf-8")
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('tokens = ["hospitalization"]\nstrategy = "remap"\n', encoding="utf-8")
    return recipe, listing, models


def test_tasks_share_the_directories_and_their_reports_merge(fleet: tuple[Path, Path, list[Path]], tmp_path: Path):
    recipe, listing, models = fleet
    out, reports = tmp_path / "out", tmp_path / "reports"
    shares = []
    for index in range(3):
        result = invoke(
            "batch", recipe, f"@{listing}", "--out-root", out, "--jobs", "1", "--json",
            "--task-index", index, "--task-count", 3, "--report", reports / f"task{index}.jsonl",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        document = json.loads(result.stdout)
        assert document["task"] == [index, 3]
        shares.append([r["model"] for r in document["results"]])
    assert shares == [[str(m) for m in models[i::3]] for i in range(3)]  # round robin, disjoint, complete
    assert sorted(p.name for p in out.iterdir()) == sorted(m.name for m in models)

    merged = invoke("batch-report", *sorted(reports.iterdir()), "--json")
    assert merged.exit_code == 0, merged.output
    summary = json.loads(merged.stdout)
    assert summary["directories"] == DIRECTORIES
    assert summary["counts"] == {"ok": DIRECTORIES}
    # a re-run of one task: its directories are skipped, and their latest record says so
    again = invoke("batch", recipe, f"@{listing}", "--out-root", out, "--task-index", 1, "--task-count", 3,
                   "--report", reports / "task1.jsonl", "-q")  # fmt: skip
    assert again.exit_code == 0, again.output
    assert "(task 1 of 3: 2 of 7)" in again.output
    text = invoke("batch-report", *sorted(reports.iterdir()))
    assert text.exit_code == 0
    assert "7 directories in 3 report files (9 lines): 5 ok, 2 skipped" in text.output


def test_a_failed_directory_fails_the_merged_report(fleet: tuple[Path, Path, list[Path]], tmp_path: Path) -> None:
    recipe, listing, models = fleet
    (models[2] / "config.json").write_text("{not json", encoding="utf-8")
    report = tmp_path / "report.jsonl"
    result = invoke("batch", recipe, f"@{listing}", "--out-root", tmp_path / "out", "--jobs", "1", "--report", report)
    assert result.exit_code == 1
    merged = invoke("batch-report", report)
    assert merged.exit_code == 1
    assert "m2" in merged.output
    assert "7 directories in 1 report file (7 lines): 1 failed, 6 ok" in merged.output


def test_task_options_and_reports_refuse_bad_input(fleet: tuple[Path, Path, list[Path]], tmp_path: Path) -> None:
    recipe, listing, _ = fleet
    base = ("batch", recipe, f"@{listing}", "--out-root", tmp_path / "out")
    alone = invoke(*base, "--task-index", "1")
    assert alone.exit_code == 2
    assert "--task-index and --task-count go together" in alone.output
    beyond = invoke(*base, "--task-index", "3", "--task-count", "3")
    assert beyond.exit_code == 2
    assert "must be below --task-count 3" in beyond.output
    env = {"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "2"}
    slurm = invoke(*base, env=env)
    assert slurm.exit_code == 1
    assert "SLURM_ARRAY_TASK_ID 'x'" in slurm.output
    assert not (tmp_path / "out").exists()
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"model": "a", "status": "ok"}\nnot json\n', encoding="utf-8")
    result = invoke("batch-report", broken)
    assert result.exit_code == 1
    assert result.stderr.strip() == f"vocabsurgeon: error: {broken}: line 2 is not a JSON record"


def test_the_slurm_example_runs_as_an_array(fleet: tuple[Path, Path, list[Path]], tmp_path: Path) -> None:
    """examples/slurm_array.sh as two array tasks (ids 1-2, as ``--array=1-2`` sets them), run by hand."""
    recipe, listing, models = fleet
    out, reports = tmp_path / "patched", tmp_path / "reports"
    for task_id in ("1", "2"):
        env = {
            **os.environ,
            "SLURM_ARRAY_TASK_ID": task_id, "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "2",
            "RECIPE": str(recipe), "DIRS": str(listing), "OUT_ROOT": str(out), "REPORTS": str(reports),
            "VOCABSURGEON": f"{sys.executable} -m vocabsurgeon",
        }  # fmt: skip
        completed = subprocess.run(
            ["bash", str(REPO_ROOT / "examples" / "slurm_array.sh")], env=env, cwd=tmp_path, capture_output=True,
            text=True, timeout=300,
        )  # fmt: skip
        assert completed.returncode == 0, completed.stderr[-2000:]
    assert sorted(p.name for p in reports.iterdir()) == ["task-1.jsonl", "task-2.jsonl"]
    first = [json.loads(line)["model"] for line in (reports / "task-1.jsonl").read_text().splitlines()]
    assert first == [str(m) for m in models[0::2]]
    merged = invoke("batch-report", *sorted(reports.iterdir()), "--json")
    assert json.loads(merged.stdout)["counts"] == {"ok": DIRECTORIES}


def test_the_ray_example_runs_on_a_local_ray(fleet: tuple[Path, Path, list[Path]], tmp_path: Path) -> None:
    if os.environ.get("CI") != "true":
        pytest.importorskip("ray")  # CI installs it ([dev]): there, a missing ray fails
    recipe, listing, models = fleet
    (models[4] / "config.json").write_text("{not json", encoding="utf-8")  # one failure, isolated to its directory
    report = tmp_path / "ray.jsonl"
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "examples" / "ray_batch.py"), str(recipe), f"@{listing}",
         "--out-root", str(tmp_path / "patched"), "--report", str(report), "--num-cpus", "2", "--memory-gib", "0.5"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert completed.returncode == 1, completed.stderr[-3000:]  # the one failed directory
    assert f"{DIRECTORIES} directories, 1 failed" in completed.stdout
    merged = json.loads(invoke("batch-report", report, "--json").stdout)
    assert merged["counts"] == {"ok": DIRECTORIES - 1, "failed": 1}
    assert merged["failed"][0]["model"] == str(models[4])
    assert sorted(p.name for p in (tmp_path / "patched").iterdir()) == sorted(m.name for m in models if m != models[4])


def _inode(path: Path) -> int:
    return path.resolve().stat().st_ino


def test_unchanged_shards_are_linked_with_link_unchanged_and_copied_without(
    llama_sharded_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM

    index = json.loads((llama_sharded_dir / "model.safetensors.index.json").read_text(encoding="utf-8"))
    vocabulary = {index["weight_map"][n] for n in ("model.embed_tokens.weight", "lm_head.weight")}
    shards = sorted(set(index["weight_map"].values()))
    unchanged = [s for s in shards if s not in vocabulary]
    assert unchanged, shards  # the fixture has a shard without a vocabulary tensor
    before = {s: (llama_sharded_dir / s).read_bytes() for s in shards}
    for flag, out in (("--link-unchanged", tmp_path / "linked"), (None, tmp_path / "copied")):
        extra = [flag] if flag else []
        result = invoke("remap", llama_sharded_dir, "--out", out, "--token", "hospitalization", "-q", *extra)
        assert result.exit_code == 0, result.output
        for shard in unchanged:
            assert (out / shard).read_bytes() == before[shard]
            assert (_inode(out / shard) == _inode(llama_sharded_dir / shard)) == (flag is not None)
        for shard in vocabulary:
            assert _inode(out / shard) != _inode(llama_sharded_dir / shard)
        _, info = AutoModelForCausalLM.from_pretrained(str(out), output_loading_info=True)
        assert not info["missing_keys"]
    assert {s: (llama_sharded_dir / s).read_bytes() for s in shards} == before  # the source, untouched


def test_link_unchanged_is_refused_across_filesystems(llama_sharded_dir: Path, tmp_path: Path) -> None:
    other = Path("/dev/shm")
    if not other.is_dir() or other.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second filesystem here (/dev/shm)")
    out = other / f"vocabsurgeon-test-{os.getpid()}" / "out"
    try:
        result = invoke("remap", llama_sharded_dir, "--out", out, "--token", "hospitalization", "--link-unchanged")
        assert result.exit_code == 1
        assert result.stderr.count("\n") == 1
        assert "--link-unchanged needs the output on the filesystem of the source's weights" in result.stderr
        assert not out.parent.exists()
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)


def test_a_clone_is_the_same_bytes_or_nothing(tmp_path: Path) -> None:
    """A reflink where the filesystem makes one (then the bytes are the source's), else no file at all: the
    caller copies."""
    from vocabsurgeon.apply import _clone

    source = tmp_path / "shard.bin"
    source.write_bytes(os.urandom(1 << 16))
    destination = tmp_path / "clone.bin"
    if _clone(source, destination, link=False):
        assert destination.read_bytes() == source.read_bytes()
        assert _inode(destination) != _inode(source)
    else:
        assert not destination.exists()


def test_a_rerun_skips_without_parsing_but_redoes_a_changed_source(
    fleet: tuple[Path, Path, list[Path]], tmp_path: Path
) -> None:
    """The up-to-date check hashes the source's files before reading anything of it: a byte flipped in the middle
    of a weight file, or a file added, makes the directory run again; the others stay skipped."""
    recipe, listing, models = fleet
    out = tmp_path / "out"
    args = ("batch", recipe, f"@{listing}", "--out-root", out, "--jobs", "1", "--json")
    assert invoke(*args).exit_code == 0
    weights = models[1] / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    (models[3] / "notes.txt").write_text("a new file\n", encoding="utf-8")
    statuses = {Path(r["model"]).name: r["status"] for r in json.loads(invoke(*args).stdout)["results"]}
    assert statuses == {m.name: ("ok" if m in (models[1], models[3]) else "skipped") for m in models}


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_batch_links_unchanged_shards_when_asked(llama_sharded_dir: Path, tmp_path: Path, jobs: str) -> None:
    """A fleet of 8B fine-tunes shares every shard without a vocabulary tensor with its source, in both the
    in-process and the worker-process paths."""
    index = json.loads((llama_sharded_dir / "model.safetensors.index.json").read_text(encoding="utf-8"))
    vocabulary = {index["weight_map"][n] for n in ("model.embed_tokens.weight", "lm_head.weight")}
    unchanged = sorted(set(index["weight_map"].values()) - vocabulary)
    models = [Path(shutil.copytree(llama_sharded_dir, tmp_path / "models" / f"l{i}")) for i in range(2)]
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('tokens = ["hospitalization"]\nstrategy = "remap"\n', encoding="utf-8")
    out = tmp_path / "out"
    result = invoke("batch", recipe, *models, "--out-root", out, "--jobs", jobs, "--link-unchanged", "-q")
    assert result.exit_code == 0, result.output
    for model in models:
        for shard in unchanged:
            assert _inode(out / model.name / shard) == _inode(model / shard)
        for shard in vocabulary:
            assert _inode(out / model.name / shard) != _inode(model / shard)


def test_linked_shards_are_not_read_and_the_manifest_says_so(
    llama_sharded_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --link-unchanged, the shards the output shares with the source are never hashed: the manifest records
    their inode, size and time (``linked:``); every other file gets its content hash, as without the flag."""
    import hashlib

    from vocabsurgeon import fingerprints

    index = json.loads((llama_sharded_dir / "model.safetensors.index.json").read_text(encoding="utf-8"))
    vocabulary = {index["weight_map"][n] for n in ("model.embed_tokens.weight", "lm_head.weight")}
    unchanged = sorted(set(index["weight_map"].values()) - vocabulary)
    hashed: list[str] = []
    real = fingerprints.fingerprint
    monkeypatch.setattr(fingerprints, "fingerprint", lambda path, cancel=None: hashed.append(path.name) or real(path))
    for flag, out in (("--link-unchanged", tmp_path / "linked"), (None, tmp_path / "copied")):
        hashed.clear()
        extra = [flag] if flag else []
        result = invoke("remap", llama_sharded_dir, "--out", out, "--token", "hospitalization", "-q", *extra)
        assert result.exit_code == 0, result.output
        recorded = json.loads((out / "vocabsurgeon.json").read_text(encoding="utf-8"))["source_files"]
        assert set(recorded) == {p.name for p in llama_sharded_dir.iterdir()}
        for name, value in recorded.items():
            if flag and name in unchanged:
                status = (llama_sharded_dir / name).stat()
                assert value == f"linked:{status.st_dev}:{status.st_ino}:{status.st_size}:{status.st_mtime_ns}"
                assert _inode(out / name) == status.st_ino
                assert name not in hashed
            else:
                assert value == "sha256:" + hashlib.sha256((llama_sharded_dir / name).read_bytes()).hexdigest()
                assert hashed.count(name) == 1  # hashed once, while planning or beside the copy


def test_a_linked_rerun_is_up_to_date_until_a_shared_shard_changes(llama_sharded_dir: Path, tmp_path: Path) -> None:
    """batch's up-to-date check reads a ``linked:`` record by inode, size and time: a re-run skips; a shared shard
    written in place (the output's too: they are one file) or replaced makes the directory run again."""
    index = json.loads((llama_sharded_dir / "model.safetensors.index.json").read_text(encoding="utf-8"))
    vocabulary = {index["weight_map"][n] for n in ("model.embed_tokens.weight", "lm_head.weight")}
    shard = sorted(set(index["weight_map"].values()) - vocabulary)[0]
    model = Path(shutil.copytree(llama_sharded_dir, tmp_path / "models" / "l0"))
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('tokens = ["hospitalization"]\nstrategy = "remap"\n', encoding="utf-8")
    args = ("batch", recipe, model, "--out-root", tmp_path / "out", "--link-unchanged", "--json")

    def status() -> str:
        result = invoke(*args)
        assert result.exit_code == 0, result.output
        return str(json.loads(result.stdout)["results"][0]["status"])

    assert status() == "ok"
    assert status() == "skipped"
    replaced = model / f"{shard}.new"
    shutil.copyfile(model / shard, replaced)  # the same bytes in a new file (a download replacing it)
    os.replace(replaced, model / shard)
    assert status() == "ok"
    assert status() == "skipped"
    data = bytearray((model / shard).read_bytes())
    data[-1] ^= 0xFF
    with open(model / shard, "r+b") as handle:  # in place: the output's shard is this very file
        handle.seek(len(data) - 1)
        handle.write(bytes(data[-1:]))
    assert status() == "ok"


def test_hashing_ahead_gives_the_same_fingerprints_and_stops_on_failure(
    llama_sharded_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hashing begun while planning gives what hashing afterwards gives; a surgery that fails while planning
    stops it (the block's exit waits for the thread, which ends at its next chunk)."""
    import threading
    import time

    from vocabsurgeon import fingerprints
    from vocabsurgeon.inventory import read_inventory

    inventory = read_inventory(llama_sharded_dir)
    expected = fingerprints.fingerprint_files(inventory)
    with fingerprints.hashing_ahead(inventory):
        assert fingerprints.fingerprint_files(inventory) == expected

    def slow(path: Path, cancel: threading.Event | None = None) -> str:  # a file that takes 60 s to hash
        assert cancel is not None
        if cancel.wait(60):
            raise fingerprints.Cancelled(f"hashing {path} was cancelled")
        return "sha256:" + "0" * 64

    monkeypatch.setattr(fingerprints, "fingerprint", slow)
    started = time.monotonic()
    jobs = []

    def fail_while_hashing() -> None:
        with fingerprints.hashing_ahead(inventory):
            jobs.append(fingerprints._AHEAD[id(inventory)])
            raise RuntimeError("planning failed")

    with pytest.raises(RuntimeError, match="planning failed"):
        fail_while_hashing()
    assert time.monotonic() - started < 10
    job = jobs[0]
    assert isinstance(job.error, fingerprints.Cancelled)
    assert job.done.is_set()
    assert not job.thread.is_alive()
    assert id(inventory) not in fingerprints._AHEAD
    assert not [t for t in threading.enumerate() if t.name == "vocabsurgeon-hash-ahead"]


def test_a_surgery_sharing_hashing_with_another_survives_its_end(
    llama_sharded_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two surgeries of one Inventory object at once (threads of a library caller): the second block rides on the
    first's job; when the first ends and stops that job, the second hashes by itself rather than fail."""
    import threading

    from vocabsurgeon import fingerprints
    from vocabsurgeon.inventory import read_inventory

    inventory = read_inventory(llama_sharded_dir)
    expected = fingerprints.fingerprint_files(inventory)
    real = fingerprints.fingerprint
    release = threading.Event()

    def stalled_ahead(path: Path, cancel: threading.Event | None = None) -> str:
        if threading.current_thread().name == "vocabsurgeon-hash-ahead":  # only the job begun ahead is slow
            assert cancel is not None
            if cancel.wait(60):
                raise fingerprints.Cancelled(f"hashing {path} was cancelled")
        return real(path, cancel)

    monkeypatch.setattr(fingerprints, "fingerprint", stalled_ahead)
    inside = threading.Event()

    def first() -> None:
        with fingerprints.hashing_ahead(inventory):
            inside.set()
            release.wait(60)

    thread = threading.Thread(target=first)
    thread.start()
    assert inside.wait(30)
    got: list[dict[str, str]] = []
    with fingerprints.hashing_ahead(inventory):  # the first's job is under way: this block starts none
        assert len([t for t in threading.enumerate() if t.name == "vocabsurgeon-hash-ahead"]) == 1
        waiter = threading.Thread(target=lambda: got.append(fingerprints.fingerprint_files(inventory)))
        waiter.start()
        release.set()  # the first surgery ends: its block stops the job this one waits on
        thread.join(30)
        waiter.join(30)
    assert got == [expected]
