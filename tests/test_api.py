"""The library API: README's example runs as written, and the functions are the CLI's code path (same bytes)."""

from __future__ import annotations

import contextlib
import importlib
import io
import re
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

import vocabsurgeon
from vocabsurgeon.errors import NotEnoughSlotsError

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None
    return match.group(1)


def test_the_readme_example_runs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    printed = io.StringIO()
    namespace: dict[str, object] = {}
    with contextlib.redirect_stdout(printed):
        exec(compile(readme_example(), str(README), "exec"), namespace)
    lines = printed.getvalue().splitlines()
    assert lines[0] == "994 free slots"
    assert lines[1] == "COVID -> 1 [unused0] subword-mean"
    assert lines[-1] == "30522 -> 30528"
    out = namespace["out"]
    assert isinstance(out, Path)
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    ids = tokenizer.encode("The patient's hospitalization was noted.", add_special_tokens=False)
    assert tokenizer.convert_tokens_to_ids("hospitalization") in ids
    assert len(ids) == len(tokenizer.tokenize("The patient's hospitalization was noted."))


def test_the_api_writes_what_the_cli_writes(bert_dir: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from vocabsurgeon.cli import main

    vocabsurgeon.remap(bert_dir, tmp_path / "api", tokens=["covid", "COVID-19"], special_tokens=["[special1]"])
    result = CliRunner().invoke(
        main,
        [
            "remap",
            str(bert_dir),
            "--out",
            str(tmp_path / "cli"),
            "--token",
            "covid",
            "--token",
            "COVID-19",
            "--special-token",
            "[special1]",
        ],
    )
    assert result.exit_code == 0, result.output
    for path in sorted((tmp_path / "api").iterdir()):
        if path.name != "vocabsurgeon.json":
            assert path.read_bytes() == (tmp_path / "cli" / path.name).read_bytes(), path.name


def test_api_errors_are_the_cli_messages(bert_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(NotEnoughSlotsError, match="free slots; `vocabsurgeon append`"):
        vocabsurgeon.remap(bert_dir, tmp_path / "out", tokens=[f"zz{i}" for i in range(500)])
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="resize takes no tokens"):
        vocabsurgeon.plan_surgery(bert_dir, "resize", tokens=["x"])


class _Spawned:
    """Every process a surgery starts, through a wrapper of subprocess.Popen."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import subprocess

        self.processes: list[subprocess.Popen[str]] = []
        popen = subprocess.Popen

        def spy(args: list[str], **kwargs: object) -> subprocess.Popen[str]:
            process = popen(args, **kwargs)  # type: ignore[call-overload]
            self.processes.append(process)
            return process  # type: ignore[no-any-return]

        monkeypatch.setattr(subprocess, "Popen", spy)


@pytest.fixture
def in_child(monkeypatch: pytest.MonkeyPatch) -> _Spawned:
    """Every tokenizer is 'large': the quick check runs in a child process."""

    # the module, not the function vocabsurgeon.verification that shadows it as a package attribute
    monkeypatch.setattr(importlib.import_module("vocabsurgeon.verification"), "CHECK_IN_CHILD_ABOVE_BYTES", 0)
    return _Spawned(monkeypatch)


def test_a_large_tokenizer_is_checked_in_a_child_process(in_child: _Spawned, llama_dir: Path, tmp_path: Path) -> None:
    """Above the size threshold the quick check loads the written tokenizer in a child (vocabsurgeon.checks)
    while the weights are copied; its findings come back as the in-process ones do."""
    result = vocabsurgeon.append(llama_dir, tmp_path / "out", tokens=["zqxjvv", "naïveté"])
    assert result.verification == "quick"
    assert len(in_child.processes) == 1
    assert "vocabsurgeon.checks" in in_child.processes[0].args[2]
    assert in_child.processes[0].returncode == 0


def test_a_failing_child_is_replaced_by_the_check_in_this_process(
    in_child: _Spawned, llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    verify_module = importlib.import_module("vocabsurgeon.verification")
    monkeypatch.setattr(verify_module, "_CHILD_PROGRAM", "import sys; sys.exit(3)")
    calls: list[int] = []
    in_process = verify_module.Verifier.tokenizer_checks

    def counted(self: Any, *args: Any) -> Any:
        calls.append(1)
        return in_process(self, *args)

    monkeypatch.setattr(verify_module.Verifier, "tokenizer_checks", counted)
    assert vocabsurgeon.append(llama_dir, tmp_path / "out", tokens=["zqxjvv"]).verified
    assert calls == [1]
    assert in_child.processes[0].returncode == 3


def test_a_hanging_child_is_stopped(
    in_child: _Spawned, llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    verify_module = importlib.import_module("vocabsurgeon.verification")
    monkeypatch.setattr(verify_module, "_CHILD_PROGRAM", "import time; time.sleep(60)")
    monkeypatch.setattr(verify_module, "CHILD_TIMEOUT_S", 0.5)
    start = time.perf_counter()
    assert vocabsurgeon.append(llama_dir, tmp_path / "out", tokens=["zqxjvv"]).verified
    assert time.perf_counter() - start < 30
    assert in_child.processes[0].poll() is not None  # killed and reaped


def test_a_failing_surgery_stops_its_child(
    in_child: _Spawned, llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    verify_module = importlib.import_module("vocabsurgeon.verification")
    monkeypatch.setattr(verify_module, "_CHILD_PROGRAM", "import time; time.sleep(60)")
    apply_module = importlib.import_module("vocabsurgeon.apply")

    def broken(self: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(apply_module._WeightWriter, "run", broken)
    with pytest.raises(OSError, match="No space left"):
        vocabsurgeon.append(llama_dir, tmp_path / "outs" / "out", tokens=["zqxjvv"])
    assert in_child.processes[0].poll() is not None
    assert not (tmp_path / "outs").exists()  # the parent it created for the output is gone again


def test_the_child_check_reports_a_wrong_encoding(llama_dir: Path) -> None:
    import json
    import subprocess
    import sys

    request = {
        "tokenizer_json": str(llama_dir / "tokenizer.json"),
        "tokens": [{"token": "zqxjvv", "id": 5, "kind": "added"}],
        "expected": [["hello world", [1, 2, 3]]],
    }
    done = subprocess.run(
        [sys.executable, "-m", "vocabsurgeon.checks"], input=json.dumps(request), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    checks = {c["name"]: c for c in json.loads(done.stdout)}
    assert checks["tokenizers tokenizer loads"]["ok"]
    assert not checks["tokenizers: each new token is one id"]["ok"]
    assert checks["tokenizers: texts without new tokens encode as before"]["detail"] == (
        "1 of 1 differ, e.g. 'hello world'"
    )
