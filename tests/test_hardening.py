"""Hardening: concurrent runs, kills, --force, permissions, inconsistent sources, and one clean line (or a JSON
error) for every bad input, with nothing written and the source byte-identical.

Real processes where the behaviour is the operating system's (signals, locks, a second process): ``python -m
vocabsurgeon`` in a subprocess. The rest through the CLI in this process.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from transformers import AutoTokenizer

from vocabsurgeon import interrupts
from vocabsurgeon.cli import main
from vocabsurgeon.interrupts import Interrupted
from vocabsurgeon.outputs import MARKER, stale_leftovers


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def cli_process(*args: str | Path) -> subprocess.Popen[str]:
    """The console command in a process of its own (``python -m vocabsurgeon``, through the same entry point)."""
    command = [sys.executable, "-m", "vocabsurgeon", *(str(a) for a in args)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# ------------------------------------------------------------------------------------------------- the catalogue


def _corrupt_json(name: str) -> Any:
    def edit(source: Path) -> None:
        (source / name).write_text("{not json", encoding="utf-8")

    return edit


def _set_config(key: str, value: Any) -> Any:
    def edit(source: Path) -> None:
        config = json.loads((source / "config.json").read_text(encoding="utf-8"))
        config[key] = value
        (source / "config.json").write_text(json.dumps(config), encoding="utf-8")

    return edit


def _truncate_weights(source: Path) -> None:
    path = source / "model.safetensors"
    path.write_bytes(path.read_bytes()[:200])


def _no_edit(source: Path) -> None:
    pass


#: (source edit, arguments after the source, what the one line says); {out} is the output path
CATALOGUE: dict[str, tuple[Any, list[str], str]] = {
    "empty token": (_no_edit, ["remap", "--token", ""], "empty or whitespace-only token"),
    "tab in a token": (_no_edit, ["remap", "--token", "new\tyork"], "contains a tab"),
    "newline in a token": (_no_edit, ["remap", "--token", "a\nb"], "contains a control character"),
    "NUL in a token": (_no_edit, ["remap", "--token", "a\x00b"], "contains a control character"),
    "space around a token": (_no_edit, ["remap", "--token", " covid "], "begins or ends with whitespace"),
    "duplicate token": (_no_edit, ["remap", "--token", "zqa", "--token", "zqa"], "is given 2 times"),
    "no tokens": (_no_edit, ["remap"], "no tokens given"),
    "missing tokens file": (_no_edit, ["remap", "--tokens-file", "/nonexistent/t.txt"], "does not exist"),
    "too many tokens": (_no_edit, ["remap", *(a for i in range(1200) for a in ("--token", f"zq{i}x"))], "free"),
    "bad init": (_no_edit, ["remap", "--token", "zqa", "--init", "magic"], "Invalid value for '--init'"),
    "verify and no-verify": (
        _no_edit,
        ["remap", "--token", "zqa", "--verify", "full", "--no-verify"],
        "contradict each other",
    ),
    "broken tokenizer.json": (_corrupt_json("tokenizer.json"), ["remap", "--token", "zqa"], "tokenizer.json"),
    "broken config.json": (_corrupt_json("config.json"), ["remap", "--token", "zqa"], "config.json"),
    "truncated weights": (_truncate_weights, ["append", "--token", "zqa"], "model.safetensors"),
    "tokenizer beyond the rows": (_set_config("vocab_size", 100), ["append", "--token", "zqa"], "inconsistent"),
    "pad id out of range": (_set_config("pad_token_id", 99999), ["remap", "--token", "zqa"], "inconsistent"),
}


@pytest.mark.parametrize("case", list(CATALOGUE))
def test_a_bad_input_is_one_line_and_writes_nothing(case: str, bert_dir: Path, tmp_path: Path) -> None:
    edit, args, message = CATALOGUE[case]
    edit(bert_dir)
    before = digest(bert_dir)
    out = tmp_path / "new" / "nested" / "out"  # parents that do not exist yet
    command, *rest = args
    result = invoke(command, bert_dir, "--out", out, *rest)
    assert result.exit_code in (1, 2), result.output
    assert "Traceback" not in result.output
    assert "internal error" not in result.output
    if result.exit_code == 1:
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr, result.stderr
    assert not (tmp_path / "new").exists()  # no output, no staging directory, no parent directories
    assert digest(bert_dir) == before


@pytest.mark.parametrize("case", ["no tokens", "broken config.json", "verify and no-verify"])
def test_json_errors_are_a_document_on_stdout(case: str, bert_dir: Path, tmp_path: Path) -> None:
    edit, args, message = CATALOGUE[case]
    edit(bert_dir)
    command, *rest = args
    result = invoke(command, bert_dir, "--out", tmp_path / "out", *rest, "--json")
    document = json.loads(result.stdout)
    assert set(document) == {"error", "code"}
    assert message in document["error"]
    assert document["code"] in {"token-request", "checkpoint-format", "usage", "inconsistent-checkpoint"}
    assert result.exit_code == (2 if document["code"] == "usage" else 1)


def test_an_inconsistent_source_is_refused_up_front_by_every_surgery_but_resize(
    bert_grown_dir: Path, tmp_path: Path
) -> None:
    """A tokenizer with ids past the rows: remap, append and batch refuse it before writing anything, naming the fix;
    resize is the fix."""
    for command in ("remap", "append"):
        result = invoke(command, bert_grown_dir, "--out", tmp_path / command, "--token", "zqxword")
        assert result.exit_code == 1
        assert "inconsistent checkpoint (tokenizer-exceeds-embeddings" in result.stderr
        assert "vocabsurgeon resize" in result.stderr
        assert not (tmp_path / command).exists()
    fixed = tmp_path / "fixed"
    assert invoke("resize", bert_grown_dir, "--out", fixed).exit_code == 0
    assert invoke("append", fixed, "--out", tmp_path / "appended", "--token", "zqxword").exit_code == 0


# ------------------------------------------------------------------------------------------------- --force


def test_force_replaces_only_a_vocabsurgeon_output_or_an_empty_directory(bert_dir: Path, tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work", encoding="utf-8")
    result = invoke("remap", bert_dir, "--out", precious, "--token", "zqxword", "--force")
    assert result.exit_code == 1
    assert "is not a vocabsurgeon output" in result.stderr
    assert (precious / "thesis.txt").read_text(encoding="utf-8") == "years of work"

    empty = tmp_path / "empty"
    empty.mkdir()
    assert invoke("remap", bert_dir, "--out", empty, "--token", "zqxword", "--force").exit_code == 0
    assert invoke("remap", bert_dir, "--out", empty, "--token", "zqyword", "--force").exit_code == 0
    assert AutoTokenizer.from_pretrained(empty).tokenize("zqyword") == ["zqyword"]


def test_without_force_an_empty_directory_that_appears_is_not_replaced(bert_dir: Path, tmp_path: Path) -> None:
    """rename(2) would replace an empty directory: the final rename refuses to (RENAME_NOREPLACE)."""
    from vocabsurgeon.errors import OutputExistsError
    from vocabsurgeon.outputs import move_into_place

    staging, target = tmp_path / "staging", tmp_path / "target"
    staging.mkdir()
    target.mkdir()
    with pytest.raises(OutputExistsError, match="appeared while this surgery ran"):
        move_into_place(staging, target, replace=False)
    assert staging.is_dir()
    assert target.is_dir()
    assert not any(target.iterdir())


# ------------------------------------------------------------------------------------------------- permissions


def test_a_private_source_gives_a_private_output(bert_dir: Path, tmp_path: Path) -> None:
    os.chmod(bert_dir, 0o700)
    for path in bert_dir.rglob("*"):
        os.chmod(path, 0o600)
    out = tmp_path / "out"
    assert invoke("append", bert_dir, "--out", out, "--token", "zqxword").exit_code == 0
    assert oct(out.stat().st_mode & 0o777) == oct(0o700)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in out.iterdir()}
    assert set(modes.values()) == {oct(0o600)}, modes  # the manifest, new, gets the strictest source mode


def test_each_file_keeps_its_own_mode(bert_dir: Path, tmp_path: Path) -> None:
    os.chmod(bert_dir / "config.json", 0o640)
    os.chmod(bert_dir / "vocab.txt", 0o604)
    out = tmp_path / "out"
    assert invoke("append", bert_dir, "--out", out, "--token", "zqxword").exit_code == 0
    assert (out / "config.json").stat().st_mode & 0o777 == 0o640  # rewritten (vocab_size), mode kept
    assert (out / "vocab.txt").stat().st_mode & 0o777 == 0o604
    assert (out / "vocabsurgeon.json").stat().st_mode & 0o777 == 0o604 & 0o640 & 0o644


# ------------------------------------------------------------------------------------------------- processes


def test_two_surgeries_to_one_output_exactly_one_wins(bert_dir: Path, tmp_path: Path) -> None:
    tmp_path = tmp_path / "work"
    tmp_path.mkdir()
    out = tmp_path / "out"
    for run in range(3):
        shutil.rmtree(out, ignore_errors=True)
        first = cli_process("append", bert_dir, "--out", out, "--token", f"zqa{run}word", "-q")
        second = cli_process("append", bert_dir, "--out", out, "--token", f"zqb{run}word", "-q")
        codes = sorted(p.wait(timeout=300) for p in (first, second))
        errors = [p.stderr.read() for p in (first, second)]  # type: ignore[union-attr]
        assert codes == [0, 1], errors
        assert any("is writing this output" in e or "already exists" in e for e in errors), errors
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")] == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_termination_signal_is_one_line_and_leaves_nothing(signum: int, minilm_src: Path, tmp_path: Path) -> None:
    """Sent while the surgery runs (after the interpreter is up: Python's own start is not ours to handle)."""
    tmp_path = tmp_path / "work"
    tmp_path.mkdir()
    out = tmp_path / "out"
    process = cli_process("append", minilm_src, "--out", out, "--token", "zqxword", "-q")
    deadline = time.monotonic() + 60
    while not any(p.name.endswith(".vocabsurgeon-tmp") for p in tmp_path.iterdir()):  # the surgery has begun
        assert process.poll() is None
        assert time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, stderr
    assert stderr.strip().splitlines() == [
        f"vocabsurgeon: interrupted{'' if signum == signal.SIGINT else f' ({signal.Signals(signum).name})'};"
        " nothing was written"
    ]
    assert list(tmp_path.iterdir()) == []


def test_what_a_killed_surgery_left_is_removed_by_the_next_one(minilm_src: Path, tmp_path: Path) -> None:
    tmp_path = tmp_path / "work"
    tmp_path.mkdir()
    bert_dir = minilm_src
    out = tmp_path / "out"
    process = cli_process("append", bert_dir, "--out", out, "--token", "zqxword", "-q")
    deadline = time.monotonic() + 60
    while not (staged := [p for p in tmp_path.iterdir() if p.name.endswith(".vocabsurgeon-tmp")]):
        assert process.poll() is None
        assert time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    if out.exists():  # it finished first: a complete output; make a leftover as a killed run leaves it
        pytest.skip("the surgery finished before the kill")
    assert staged[0].exists()  # its marker, or the pid in its name, says whose it is
    assert [leftover.path for leftover in stale_leftovers(tmp_path, "out")] == staged
    result = invoke("append", bert_dir, "--out", out, "--token", "zqxword")
    assert result.exit_code == 0, result.output
    assert f"removed {staged[0]}" in result.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_live_surgery_staging_directory_is_not_stale(tmp_path: Path) -> None:
    live = tmp_path / f".out.{os.getpid()}-abcd1234.vocabsurgeon-tmp"
    live.mkdir()
    from vocabsurgeon.outputs import _owner

    (live / MARKER).write_text(json.dumps(_owner()), encoding="utf-8")
    dead = tmp_path / ".out.999999999-abcd1234.vocabsurgeon-tmp"
    dead.mkdir()
    assert [leftover.path for leftover in stale_leftovers(tmp_path, "out")] == [dead]


# ------------------------------------------------------------------------------------------------- batch, messages


def _children(pid: int) -> list[int]:
    """The live processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def test_batch_workers_die_with_a_killed_parent(minilm_src: Path, tmp_path: Path) -> None:
    """SIGKILL of the batch: its workers (and so the resource tracker, whose pipe they hold) exit too, and do not
    finish writing their outputs."""
    models = tmp_path / "models"
    for name in ("a", "b", "c", "d"):
        shutil.copytree(minilm_src, models / name)
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('tokens = ["zqxword"]\nstrategy = "append"\n', encoding="utf-8")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "vocabsurgeon", "batch", str(recipe), *(str(models / n) for n in "abcd")]
    # output to files: a pipe nobody reads would block the workers (as it would any program)
    with open(tmp_path / "batch.log", "w") as log:
        batch = subprocess.Popen([*command, "--out-root", str(out), "--jobs", "2"], stdout=log, stderr=log)
    deadline = time.monotonic() + 120

    def staging() -> list[Path]:
        return [p for p in out.iterdir() if p.name.endswith(".vocabsurgeon-tmp")] if out.is_dir() else []

    def finished() -> list[str]:
        if not out.is_dir():
            return []
        return sorted(p.name for p in out.iterdir() if p.name[0] != "." and (p / "vocabsurgeon.json").exists())

    while len(staging()) < 2:  # both workers are writing an output
        assert batch.poll() is None
        assert time.monotonic() < deadline
        time.sleep(0.02)
    workers = _children(batch.pid)
    batch.send_signal(signal.SIGKILL)
    batch.wait(timeout=30)
    # what was finished by now (one of the two may have been renaming its output into place as the parent died)
    before = finished()
    deadline = time.monotonic() + 30
    while any(_state(pid) != "Z" for pid in workers):
        assert time.monotonic() < deadline, f"workers {workers} outlived the batch"
        time.sleep(0.1)
    # they stopped where they were: no output was finished after the parent died, and none is half-written
    assert finished() == before
    assert staging() == []


def test_a_signal_inside_thread_start_leaves_nothing_behind(
    bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cause of a rare leftover in the test above: a signal that lands inside ``Thread.start`` leaves a running
    thread that the pool does not know (it never joins it). Here the copy's thread is held until the interrupted
    surgery has cleaned up, the worst order: it must write nothing, not even make the staging directory again."""
    gate = threading.Event()
    held: list[threading.Thread] = []
    real_start = threading.Thread.start

    def start(thread: threading.Thread) -> None:
        if not thread.name.startswith("vocabsurgeon-build") or held:
            return real_start(thread)
        target = thread._target  # type: ignore[attr-defined]

        def after_the_gate(*args: Any, **kwargs: Any) -> None:
            gate.wait()
            target(*args, **kwargs)

        thread._target = after_the_gate  # type: ignore[attr-defined]
        held.append(thread)
        real_start(thread)
        raise Interrupted(signal.SIGTERM)

    monkeypatch.setattr(threading.Thread, "start", start)
    out = tmp_path / "out"
    result = invoke("append", bert_dir, "--out", out, "--token", "zqxword")
    gate.set()
    for thread in held:
        thread.join(timeout=60)
    assert held
    assert not any(thread.is_alive() for thread in held)
    assert result.exit_code == 143, result.output
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out")) == []
    assert not out.exists()


@pytest.fixture
def handlers() -> Any:
    """The console command's signal handlers (interrupts.install) for one test; the previous ones after."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, *interrupts.SIGNALS)}
    interrupts.install()
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def _signal_self(signum: int = signal.SIGTERM) -> None:
    os.kill(os.getpid(), signum)
    time.sleep(0.01)  # the handler runs at the next bytecode: here, not later


@pytest.mark.usefixtures("handlers")
def test_a_signal_during_cleanup_waits_for_it(bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What made the batch test above leave a staging directory: a dying multi-threaded parent sends its workers the
    parent-death SIGTERM once per exiting thread, and the second one cut the first one's cleanup short. Here
    SIGTERM interrupts the surgery, and a second SIGTERM arrives while the staging directory is being removed."""
    from vocabsurgeon import apply

    real_rmtree = shutil.rmtree
    signalled: list[Path] = []

    def rmtree_under_fire(path: Any, *args: Any, **kwargs: Any) -> None:
        signalled.append(Path(path))
        _signal_self()
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(apply, "copy_permissions", lambda source, staging: _signal_self())
    monkeypatch.setattr(apply.shutil, "rmtree", rmtree_under_fire)
    out = tmp_path / "out"
    result = invoke("append", bert_dir, "--out", out, "--token", "zqxword")
    assert result.exit_code == 143, result.output
    assert signalled
    assert all(p.name.endswith(".vocabsurgeon-tmp") for p in signalled)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def _held_in_nested_blocks(ran: list[str]) -> None:
    with interrupts.deferred():
        _signal_self(signal.SIGHUP)
        with interrupts.deferred():
            _signal_self(signal.SIGTERM)
        ran.append("the inner block ended: its signal waits for the outer one")
    ran.append("not reached")


def _held_during(signum: int, failure: BaseException) -> None:
    with interrupts.deferred():
        _signal_self(signum)
        raise failure


@pytest.mark.usefixtures("handlers")
def test_deferred_holds_a_signal_until_the_block_ends() -> None:
    ran: list[str] = []
    with pytest.raises(interrupts.Interrupted) as raised:
        _held_in_nested_blocks(ran)
    assert raised.value.signum == signal.SIGHUP  # the first one
    assert ran == ["the inner block ended: its signal waits for the outer one"]
    # a failure under way gives way to the held interruption; an interruption under way keeps its own
    with pytest.raises(KeyboardInterrupt) as interrupted:
        _held_during(signal.SIGINT, OSError("disk full"))
    assert isinstance(interrupted.value.__context__, OSError)
    with pytest.raises(interrupts.Interrupted) as kept:
        _held_during(signal.SIGINT, interrupts.Interrupted(signal.SIGTERM))
    assert kept.value.signum == signal.SIGTERM
    with interrupts.deferred():  # nothing is held any more: the next block ends quietly
        pass


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def test_verify_against_another_checkpoint_is_a_finding_not_a_crash(
    bert_dir: Path, llama_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    assert invoke("remap", bert_dir, "--out", out, "--token", "zqxword").exit_code == 0
    result = invoke("verify", out, "--against", llama_dir)
    assert result.exit_code == 1
    assert "internal error" not in result.output
    assert "FAIL the same tensors as the source" in result.output


def test_quiet_prints_the_last_line_only(bert_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = invoke("append", bert_dir, "--out", out, "--token", "zqxword", "-q")
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [f"wrote {out} (verified)"]


def test_resize_says_what_it_did(bert_grown_dir: Path, tmp_path: Path) -> None:
    result = invoke("resize", bert_grown_dir, "--out", tmp_path / "out")
    assert result.exit_code == 0
    first = result.stdout.splitlines()[0]
    assert first.startswith("resize: rows ")
    assert "tokens placed" not in result.stdout


def test_a_closed_pipe_after_the_work_is_no_false_message(bert_dir: Path, tmp_path: Path) -> None:
    """``append ... | head -0``: the output is written; the closed pipe is not reported as 'nothing was written'."""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "vocabsurgeon", "append", str(bert_dir), "--out", str(out), "--token", "zqxword"]
    reader, writer = os.pipe()
    os.close(reader)  # nobody will read stdout
    done = subprocess.run(command, stdout=writer, stderr=subprocess.PIPE, text=True, timeout=300, check=False)
    os.close(writer)
    assert "nothing was written" not in done.stderr
    assert done.stderr.strip() == ""
    assert (out / "vocabsurgeon.json").exists()


def test_a_word_longer_than_wordpiece_looks_up_is_an_added_token(bert_dir: Path, tmp_path: Path) -> None:
    """WordPiece gives a word over ``max_input_chars_per_word`` (100) ``[UNK]``: such a token is an added token,
    matched whole before the model, so it is one id in a sentence (it used to fail the check, or with --no-verify
    be written and encode to [UNK])."""
    word = "z" * 120
    out = tmp_path / "out"
    result = invoke("append", bert_dir, "--out", out, "--token", word, "--json")
    assert result.exit_code == 0, result.output
    (placement,) = json.loads(result.stdout)["plan"]["placements"]
    assert placement["mode"] == "added"
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.encode(f"a {word} b", add_special_tokens=False)[1] == placement["id"]


def test_audit_reports_what_a_killed_surgery_left_beside_a_checkpoint(bert_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert invoke("append", bert_dir, "--out", out, "--token", "zqxword").exit_code == 0
    leftover = tmp_path / ".out.999999999-abcd1234.vocabsurgeon-tmp"  # a pid that does not run
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"\0" * 1000)
    report = json.loads(invoke("audit", out, "--json").stdout)
    findings = report["models"][0]["findings"]
    assert [f["code"] for f in findings if f["code"] == "stale-staging"] == ["stale-staging"]
    assert report["models"][0]["ok"] is True  # a warning: the checkpoint itself is fine
