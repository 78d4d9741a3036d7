"""The read-only commands as a user meets them: bad input, usage errors, no torch, HF cache ids, --help."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from checkpoints import hf_cache_snapshot, truncate_weights
from click.testing import CliRunner

from vocabsurgeon.cli import main

REPO_ROOT = Path(__file__).resolve().parents[1]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def invoke(*args: str | Path) -> tuple[int, str, str]:
    """Run in-process with CliRunner (exceptions turn into exit codes, as in a real run)."""
    result = CliRunner().invoke(main, [str(arg) for arg in args])
    return result.exit_code, result.stdout, result.stderr


def spawn(*args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> tuple[int, str, str]:
    """Run ``python -m vocabsurgeon`` in a fresh interpreter."""
    completed = subprocess.run(
        [sys.executable, "-m", "vocabsurgeon", *(str(arg) for arg in args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd or REPO_ROOT,
        timeout=120,
    )
    return completed.returncode, completed.stdout, completed.stderr


RUNNERS = {"clirunner": invoke, "subprocess": spawn}


# --------------------------------------------------------------------------------------------------
# Bad input: one line on stderr naming the file and the problem, exit 1
# --------------------------------------------------------------------------------------------------


def _missing(model: Path) -> tuple[Path, str]:
    shutil.rmtree(model)
    return model, f"{model}: no such directory"


def _no_tokenizer(model: Path) -> tuple[Path, str]:
    for name in TOKENIZER_FILES:
        (model / name).unlink()
    return model, f"{model}: no tokenizer files (tokenizer.json, vocab.txt, vocab.json or a SentencePiece model)"


def _truncated(model: Path) -> tuple[Path, str]:
    path = truncate_weights(model)
    # one validator for every command: the header reader's (tested against the library in test_safetensors_stream)
    return model, f"{path}: truncated safetensors file ("


def _config_not_json(model: Path) -> tuple[Path, str]:
    (model / "config.json").write_text('{"vocab_size": 2000,\n', encoding="utf-8")
    return (
        model,
        f"{model / 'config.json'}: not valid JSON"
        " (line 2, column 1: Expecting property name enclosed in double quotes)",
    )


def _tokenizer_not_json(model: Path) -> tuple[Path, str]:
    (model / "tokenizer.json").write_text("<html>rate limited</html>", encoding="utf-8")
    return model, f"{model / 'tokenizer.json'}: not valid JSON (line 1, column 1: Expecting value)"


def _a_file(model: Path) -> tuple[Path, str]:
    path = model / "config.json"
    return path, f"{path}: is a file, expected a checkpoint directory"


BAD_INPUTS: dict[str, Callable[[Path], tuple[Path, str]]] = {
    "missing-directory": _missing,
    "no-tokenizer-files": _no_tokenizer,
    "truncated-safetensors": _truncated,
    "config-not-json": _config_not_json,
    "tokenizer-not-json": _tokenizer_not_json,
    "file-not-directory": _a_file,
}


def _check_one_line_error(code: int, stdout: str, stderr: str, expected: str, *, prefix_only: bool) -> None:
    assert code == 1, (stdout, stderr)
    assert "Traceback" not in stdout + stderr
    assert stdout == ""
    assert stderr.endswith("\n")
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("vocabsurgeon: error: ")
    message = lines[0].removeprefix("vocabsurgeon: error: ")
    if prefix_only:
        assert message.startswith(expected)
        assert message.endswith(")")
    else:
        assert message == expected


BAD_INPUT_CASES = [(case, command) for case in BAD_INPUTS for command in ("slots", "audit")]


@pytest.mark.parametrize("runner", list(RUNNERS))
@pytest.mark.parametrize(("case", "command"), BAD_INPUT_CASES)
def test_bad_input_is_one_line(case: str, command: str, runner: str, bert_dir: Path) -> None:
    model, expected = BAD_INPUTS[case](bert_dir)
    code, stdout, stderr = RUNNERS[runner](command, model)
    _check_one_line_error(code, stdout, stderr, expected, prefix_only=case == "truncated-safetensors")


def test_empty_directory_has_no_tokenizer(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, stdout, stderr = invoke("slots", empty)
    expected = f"{empty}: no tokenizer files (tokenizer.json, vocab.txt, vocab.json or a SentencePiece model)"
    _check_one_line_error(code, stdout, stderr, expected, prefix_only=False)


def test_debug_shows_the_exception(bert_dir: Path) -> None:
    (bert_dir / "config.json").write_text("nope", encoding="utf-8")
    result = CliRunner().invoke(main, ["--debug", "slots", str(bert_dir)])
    assert result.exit_code == 1
    assert isinstance(result.exception, ValueError)
    assert "not valid JSON" in str(result.exception)


# --------------------------------------------------------------------------------------------------
# Usage errors exit 2
# --------------------------------------------------------------------------------------------------


USAGE_ERRORS = {
    "slots-no-argument": (["slots"], "Error: Missing argument 'MODEL'."),
    "audit-no-argument": (["audit"], "Error: Missing argument 'MODELS...'."),
    "slots-unknown-option": (["slots", "--zzz", "x"], "Error: No such option '--zzz'."),
    "audit-unknown-option": (["audit", "--zzz", "x"], "Error: No such option '--zzz'."),
    "slots-two-models": (["slots", "a", "b"], "Error: Got unexpected extra argument (b)"),
}


@pytest.mark.parametrize("runner", list(RUNNERS))
@pytest.mark.parametrize("case", list(USAGE_ERRORS))
def test_usage_errors_exit_2(case: str, runner: str) -> None:
    args, message = USAGE_ERRORS[case]
    code, stdout, stderr = RUNNERS[runner](*args)
    assert code == 2
    assert stdout == ""
    assert "Traceback" not in stderr
    assert stderr.rstrip("\n").splitlines()[-1] == message
    assert "Usage: " in stderr


# --------------------------------------------------------------------------------------------------
# Read-only commands never import torch
# --------------------------------------------------------------------------------------------------


def imported_modules(
    *args: str | Path, env: dict[str, str] | None = None
) -> tuple[list[str], subprocess.CompletedProcess[str]]:
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "vocabsurgeon", *(str(arg) for arg in args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=120,
    )
    modules = []
    for line in completed.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                modules.append(name)
    return modules, completed


def torch_modules(modules: list[str]) -> list[str]:
    return [name for name in modules if name == "torch" or name.startswith("torch.")]


@pytest.mark.parametrize("command", ["slots", "audit"])
@pytest.mark.parametrize("fixture", ["bert_dir", "bert_pytorch_dir"])
def test_never_imports_torch(command: str, fixture: str, request: pytest.FixtureRequest) -> None:
    model: Path = request.getfixturevalue(fixture)
    modules, completed = imported_modules(command, model)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert len(modules) > 50  # the importtime lines were really parsed
    assert "vocabsurgeon.cli.inspect" in modules
    assert torch_modules(modules) == []
    assert ("vocabsurgeon.formats.torch_bin" in modules) == (fixture == "bert_pytorch_dir")
    if command == "slots":
        assert completed.stdout.startswith(f"{model}: 200 free slots\n")
    else:
        assert completed.stdout == f"{model}: ok, 0 warnings\n"


@pytest.mark.parametrize("verify", [[], ["--verify", "full"]], ids=["quick", "full"])
def test_a_surgery_imports_transformers_only_for_the_full_check(
    bert_dir: Path, tmp_path: Path, verify: list[str]
) -> None:
    """The default check costs no torch or transformers import (seconds); --verify full is the one that reloads."""
    modules, completed = imported_modules("append", bert_dir, "--out", tmp_path / "out", "--token", "zqa", *verify)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "vocabsurgeon.verification" in modules
    heavy = torch_modules(modules) + [name for name in modules if name.split(".")[0] == "transformers"]
    assert bool(heavy) == bool(verify)


def test_model_id_never_imports_torch(bert_dir: Path, hf_home: Path) -> None:
    hf_cache_snapshot(bert_dir, hf_home, "org/model")
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    modules, completed = imported_modules("slots", "org/model", env=env)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert torch_modules(modules) == []


# --------------------------------------------------------------------------------------------------
# Model ids resolve in the local Hugging Face cache, offline
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("runner", list(RUNNERS))
def test_cached_model_id(runner: str, bert_split_dir: Path, hf_home: Path, tmp_path: Path) -> None:
    snapshot = hf_cache_snapshot(bert_split_dir, hf_home, "org/model")
    assert (snapshot / "model.safetensors").is_symlink()
    shutil.rmtree(bert_split_dir)  # only the cache is left
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    if runner == "clirunner":
        code, stdout, stderr = invoke("slots", "org/model", "--json")
    else:
        code, stdout, stderr = spawn("slots", "org/model", "--json", env=env, cwd=tmp_path)
    assert (code, stderr) == (0, "")
    document = json.loads(stdout)
    assert document["model"] == "org/model"
    assert document["vocab_size"] == {"tokenizer": 2000, "config": 2000, "embeddings": 2000}
    assert [slot["id"] for slot in document["slots"]] == [*range(1, 100), 104, 105]
    if runner == "clirunner":
        code, stdout, stderr = invoke("audit", "org/model")
    else:
        code, stdout, stderr = spawn("audit", "org/model", env=env, cwd=tmp_path)
    assert (code, stdout, stderr) == (0, "org/model: ok, 0 warnings\n", "")


@pytest.mark.parametrize("runner", list(RUNNERS))
@pytest.mark.parametrize("command", ["slots", "audit"])
def test_unknown_model_id(command: str, runner: str, bert_dir: Path, hf_home: Path, tmp_path: Path) -> None:
    hf_cache_snapshot(bert_dir, hf_home, "org/model")  # a cache that holds something else
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    if runner == "clirunner":
        code, stdout, stderr = invoke(command, "org/unknown")
    else:
        code, stdout, stderr = spawn(command, "org/unknown", env=env, cwd=tmp_path)
    expected = (
        "org/unknown: no such directory, and no model with this id in the local Hugging Face cache;"
        " pass a checkpoint directory, or download the model first (vocabsurgeon never downloads)"
    )
    _check_one_line_error(code, stdout, stderr, expected, prefix_only=False)


# --------------------------------------------------------------------------------------------------
# --help
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", sorted(main.commands))
def test_every_command_has_help_with_an_example(command: str) -> None:
    for flag in ("--help", "-h"):
        code, stdout, stderr = invoke(command, flag)
        assert (code, stderr) == (0, "")
        assert stdout.startswith(f"Usage: main {command} ")
        assert "Example" in stdout


def test_group_help_lists_the_commands() -> None:
    code, stdout, _ = spawn("--help")
    assert code == 0
    assert stdout.startswith("Usage: python -m vocabsurgeon [OPTIONS] COMMAND [ARGS]...")
    for command in ("slots", "audit", "remap", "append", "resize", "verify"):
        assert f"\n  {command} " in stdout


def test_read_only_commands_help_in_subprocess() -> None:
    for command in ("slots", "audit"):
        code, stdout, stderr = spawn(command, "--help")
        assert (code, stderr) == (0, "")
        assert stdout.startswith(f"Usage: python -m vocabsurgeon {command} [OPTIONS] ")
        assert "Example:\n" in stdout
        assert f"\n    vocabsurgeon {command} ./" in stdout
        assert "--json" in stdout


def test_version() -> None:
    from vocabsurgeon import __version__

    code, stdout, _ = invoke("--version")
    assert (code, stdout) == (0, f"vocabsurgeon, version {__version__}\n")
