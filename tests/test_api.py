"""The library API: README's example runs as written, and the functions are the CLI's code path (same bytes)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

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


def test_a_large_tokenizer_is_checked_in_a_child_process(
    llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above the size threshold the quick check loads the written tokenizer in `python -m vocabsurgeon.checks`
    while the weights are copied; its findings come back as the in-process ones do."""
    import subprocess
    import sys

    # the module, not the function vocabsurgeon.verify that shadows it as a package attribute
    monkeypatch.setattr(sys.modules["vocabsurgeon.verify"], "CHECK_IN_CHILD_ABOVE_BYTES", 0)
    started: list[list[str]] = []
    popen = subprocess.Popen

    def spy(args: list[str], **kwargs: object) -> subprocess.Popen[str]:
        started.append(list(args))
        return popen(args, **kwargs)  # type: ignore[call-overload,no-any-return]

    monkeypatch.setattr(subprocess, "Popen", spy)
    result = vocabsurgeon.append(llama_dir, tmp_path / "out", tokens=["zqxjvv", "naïveté"])
    assert result.verification == "quick"
    assert [args[1:] for args in started] == [["-m", "vocabsurgeon.checks"]]


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
