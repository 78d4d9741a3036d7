"""``vocabsurgeon remap``: acceptance on the real all-MiniLM-L6-v2 (issue 3) and on tiny BERT / Llama fixtures.

The MiniLM remap is done once per module, through the CLI and through the library (``plan_surgery`` +
``apply_plan``); the read-only checks run on both outputs. Tests that write, fail or tamper work on their own
directories under ``tmp_path``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from checkpoints import build_bert, hf_cache_snapshot, minilm_dir
from click.testing import CliRunner, Result
from safetensors.numpy import load_file
from transformers import AutoTokenizer

import vocabsurgeon
from vocabsurgeon.cli import main
from vocabsurgeon.formats import safetensors_stream
from vocabsurgeon.free_slots import find_slots, is_placeholder
from vocabsurgeon.inventory import read_inventory
from vocabsurgeon.planner import TokenRequest
from vocabsurgeon.verification import Check, Verifier

NEW_TOKENS = ("COVID", "hospitalization", "COVID-19")
SPECIAL = "[special1]"
TOKEN_ARGS = ("--token", "COVID", "--token", "hospitalization", "--token", "COVID-19", "--special-token", SPECIAL)
SENTENCE = "COVID-19 patients need hospitalization [special1] now"
SENTENCE_PIECES = ["covid-19", "patients", "need", "hospitalization", "[special1]", "now"]
PLAIN_TEXTS = (
    "The patients were admitted to the hospital in New York last week.",
    "A quick brown fox jumps over the lazy dog, doesn't it?",
    "Numbers like 3.14, 1,000 and 2026-11-25 and symbols: @#$%^&*()!",
    "한국어 문장도 토큰화합니다. 日本語のテキスト。 Ünïcödé àccents.",
    "[CLS] the hospitals [SEP] [MASK] [unused5]",
)
MINILM_EMBEDDING = "embeddings.word_embeddings.weight"
TOKENIZER_FILES = {
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "added_tokens.json",
}
MANIFEST = "vocabsurgeon.json"


# ------------------------------------------------------------------------------------------------ helpers


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def error_line(result: Result) -> str:
    """The single stderr line of a failed command."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def files_of(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file (symlinks followed) plus the link target of every symlink."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel + " ->"] = os.readlink(path)
        if path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def dot_entries(parent: Path) -> list[str]:
    return sorted(name for name in os.listdir(parent) if name.startswith("."))


def load_tokenizer(path: Path, use_fast: bool = True) -> Any:
    return AutoTokenizer.from_pretrained(str(path), use_fast=use_fast, local_files_only=True)


def encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def manifest(out: Path) -> dict[str, Any]:
    return json.loads((out / MANIFEST).read_text(encoding="utf-8"))


def placed_ids(out: Path) -> dict[str, int]:
    return {entry["token"]: entry["id"] for entry in manifest(out)["tokens"]}


def tensor_data_offset(path: Path, name: str) -> int:
    """Absolute file offset of the first byte of tensor ``name`` in a safetensors file."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    return 8 + length + header[name]["data_offsets"][0]


def library_remap(src: Path, out: Path, requests: list[TokenRequest], **kwargs: Any) -> None:
    plan = vocabsurgeon.plan_surgery(src, "remap", tokens=requests)
    vocabsurgeon.apply_plan(plan, out, verify="full", **kwargs)


MINILM_REQUESTS = [*(TokenRequest(t) for t in NEW_TOKENS), TokenRequest(SPECIAL, special=True)]


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def cli_out(minilm_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "minilm-bio"
    result = invoke("remap", minilm_src, "--out", out, *TOKEN_ARGS)
    assert result.exit_code == 0, result.output
    assert "(verified)" in result.stdout
    return out


@pytest.fixture(scope="module")
def library_out(minilm_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lib") / "minilm-bio"
    library_remap(minilm_src, out, MINILM_REQUESTS)
    return out


@pytest.fixture(scope="module", params=["cli", "library"])
def remapped(request: pytest.FixtureRequest, minilm_src: Path) -> tuple[Path, Path]:
    """(source, output) of the issue-3 remap, made through the CLI and through the library."""
    return minilm_src, request.getfixturevalue(f"{request.param}_out")


@pytest.fixture(scope="module")
def source_embeddings(minilm_src: Path) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_src), device="cpu").encode(list(PLAIN_TEXTS), convert_to_numpy=True)


# ------------------------------------------------------------------------------------------------ MiniLM acceptance


@pytest.mark.parametrize("use_fast", [True, False], ids=["fast", "slow"])
def test_new_tokens_are_one_former_placeholder_id(remapped: tuple[Path, Path], use_fast: bool) -> None:
    src, out = remapped
    before = load_tokenizer(src, use_fast).get_vocab()
    tokenizer = load_tokenizer(out, use_fast)
    by_id = {idx: token for token, idx in before.items()}
    ids = placed_ids(out)
    assert set(ids) == {*NEW_TOKENS, SPECIAL}
    for token, idx in ids.items():
        assert encode(tokenizer, token) == [idx], token
        assert is_placeholder(by_id[idx]), (token, by_id[idx])
        assert by_id[idx].startswith("[unused"), (token, by_id[idx])
    assert len(set(ids.values())) == 4
    assert encode(tokenizer, "Covid") == [ids["COVID"]]  # uncased: any casing reaches the lowercased entry


@pytest.mark.parametrize("use_fast", [True, False], ids=["fast", "slow"])
def test_sentence_tokenizes_to_six_pieces(remapped: tuple[Path, Path], use_fast: bool) -> None:
    _, out = remapped
    tokenizer = load_tokenizer(out, use_fast)
    ids = placed_ids(out)
    assert tokenizer.tokenize(SENTENCE) == SENTENCE_PIECES
    encoded = encode(tokenizer, SENTENCE)
    assert len(encoded) == 6
    assert [encoded[0], encoded[3], encoded[4]] == [ids["COVID-19"], ids["hospitalization"], ids[SPECIAL]]


@pytest.mark.parametrize("use_fast", [True, False], ids=["fast", "slow"])
def test_texts_without_new_tokens_encode_as_before(remapped: tuple[Path, Path], use_fast: bool) -> None:
    src, out = remapped
    before, after = load_tokenizer(src, use_fast), load_tokenizer(out, use_fast)
    for text in PLAIN_TEXTS:
        assert after.encode(text) == before.encode(text), text
        assert encode(after, text) == encode(before, text), text


def test_original_tokens_keep_their_ids(remapped: tuple[Path, Path]) -> None:
    src, out = remapped
    before, after = load_tokenizer(src).get_vocab(), load_tokenizer(out).get_vocab()
    kept = {token: idx for token, idx in before.items() if not is_placeholder(token)}
    assert {token: after.get(token) for token in kept} == kept
    replaced = {token for token in before if token not in after}
    assert replaced == {"[unused0]", "[unused1]", "[unused2]", "[unused3]"}
    assert len(after) == len(before)


def test_sizes_agree(remapped: tuple[Path, Path]) -> None:
    _, out = remapped
    config = json.loads((out / "config.json").read_text())
    rows = load_file(str(out / "model.safetensors"))[MINILM_EMBEDDING].shape[0]
    assert len(load_tokenizer(out)) == config["vocab_size"] == rows == 30522
    assert len((out / "vocab.txt").read_text(encoding="utf-8").splitlines()) == rows


def test_rows_are_initialized_and_nothing_else_changes(remapped: tuple[Path, Path]) -> None:
    src, out = remapped
    before, after = load_file(str(src / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert before.keys() == after.keys()
    for name in before:
        if name != MINILM_EMBEDDING:
            assert before[name].dtype == after[name].dtype, name
            assert before[name].tobytes() == after[name].tobytes(), name
    old, new = before[MINILM_EMBEDDING], after[MINILM_EMBEDDING]
    assert old.dtype == new.dtype == np.float32
    assert old.shape == new.shape

    source_tokenizer = load_tokenizer(src)
    ids = placed_ids(out)
    for token in NEW_TOKENS:  # subword-mean: the mean of the rows the source tokenizer splits the token into
        pieces = encode(source_tokenizer, token)
        expected = old[pieces].astype(np.float64).mean(axis=0).astype(np.float32)
        assert np.array_equal(new[ids[token]], expected), token
    covid_pieces = encode(source_tokenizer, "covid")
    assert source_tokenizer.convert_ids_to_tokens(covid_pieces) == ["co", "##vid"]
    assert np.array_equal(
        new[ids["COVID"]], ((old[2522].astype(np.float64) + old[17258].astype(np.float64)) / 2).astype(np.float32)
    )

    # the special token gets the mean of the trained rows (placeholders excluded)
    trained = [
        i for i, token in sorted((i, t) for t, i in source_tokenizer.get_vocab().items()) if not is_placeholder(token)
    ]
    mean = old[trained].astype(np.float64).mean(axis=0).astype(np.float32)
    np.testing.assert_allclose(new[ids[SPECIAL]], mean, rtol=1e-5, atol=1e-7)
    assert not np.array_equal(new[ids[SPECIAL]], old[ids[SPECIAL]])

    untouched = np.ones(len(old), dtype=bool)
    untouched[list(ids.values())] = False
    assert np.array_equal(new[untouched], old[untouched])
    assert not np.array_equal(new[~untouched], old[~untouched])


def test_other_files_are_byte_identical(remapped: tuple[Path, Path]) -> None:
    src, out = remapped
    assert set(files_of(out)) == {*files_of(src), MANIFEST}
    for relative in files_of(src):
        if relative in TOKENIZER_FILES or relative == "model.safetensors":
            continue
        assert (out / relative).read_bytes() == (src / relative).read_bytes(), relative
    for relative in ("config.json", "1_Pooling/config.json", "modules.json", "sentence_bert_config.json"):
        assert (out / relative).read_bytes() == (src / relative).read_bytes(), relative


def test_sentence_transformers_embeds_as_before(remapped: tuple[Path, Path], source_embeddings: np.ndarray) -> None:
    from sentence_transformers import SentenceTransformer

    _, out = remapped
    model = SentenceTransformer(str(out), device="cpu")
    embeddings = model.encode(list(PLAIN_TEXTS), convert_to_numpy=True)
    assert np.array_equal(embeddings, source_embeddings)
    new = model.encode([SENTENCE], convert_to_numpy=True)
    assert new.shape == (1, 384)
    assert np.isfinite(new).all()


def test_source_is_unchanged(remapped: tuple[Path, Path]) -> None:
    src, _ = remapped
    assert tree_hashes(src) == tree_hashes(minilm_dir())


def test_manifest_records_the_surgery(remapped: tuple[Path, Path]) -> None:
    src, out = remapped
    document = manifest(out)
    assert document["operation"] == "remap"
    assert [(t["token"], t["content"], t["kind"], t["slot"]) for t in document["tokens"]] == [
        ("COVID", "covid", "vocab", "placeholder"),
        ("hospitalization", "hospitalization", "vocab", "placeholder"),
        ("COVID-19", "covid-19", "added", "placeholder"),
        (SPECIAL, SPECIAL, "special", "placeholder"),
    ]
    assert len(document["history"]) == 1
    assert set(document["source_files"]) == set(files_of(src))


def test_output_directory_has_the_usual_permissions(cli_out: Path, tmp_path: Path) -> None:
    """The output is a directory like any other, not a private (0700) temp dir."""
    reference = tmp_path / "made-by-mkdir"
    reference.mkdir()
    assert stat.S_IMODE(cli_out.stat().st_mode) == stat.S_IMODE(reference.stat().st_mode)


# ------------------------------------------------------------------------------------------------ CLI options


def test_init_keep_copies_the_weights(minilm_src: Path, tmp_path: Path) -> None:
    out = tmp_path / "keep"
    result = invoke("remap", minilm_src, "--out", out, *TOKEN_ARGS, "--init", "keep")
    assert result.exit_code == 0, result.output
    assert (out / "model.safetensors").read_bytes() == (minilm_src / "model.safetensors").read_bytes()
    assert encode(load_tokenizer(out), "COVID") == [placed_ids(out)["COVID"]]


def test_dry_run_writes_nothing(minilm_src: Path, tmp_path: Path) -> None:
    out = tmp_path / "outs" / "dry"
    before = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    result = invoke("remap", minilm_src, "--out", out, *TOKEN_ARGS, "--dry-run")
    assert result.exit_code == 0, result.output
    assert not out.exists()
    assert not out.parent.exists()
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == before
    lines = result.stdout.splitlines()
    assert lines[0].startswith("remap: 4 tokens placed, 0 skipped")
    header = next(line for line in lines if line.startswith("token"))
    assert header.split() == ["token", "stored", "as", "id", "slot", "mode", "init"]
    row = next(line for line in lines if line.startswith("COVID-19"))
    assert row.split()[:6] == ["COVID-19", "covid-19", "3", "placeholder", "[unused2]", "added"]
    assert "dry run: nothing written" in result.stdout
    assert tree_hashes(minilm_src) == tree_hashes(minilm_dir())


def test_dry_run_json_has_the_placements(minilm_src: Path, tmp_path: Path) -> None:
    out = tmp_path / "dry"
    result = invoke("remap", minilm_src, "--out", out, *TOKEN_ARGS, "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["dry_run"] is True
    placements = document["plan"]["placements"]
    assert [(p["token"], p["content"], p["id"], p["mode"]) for p in placements] == [
        ("COVID", "covid", 1, "vocab"),
        ("hospitalization", "hospitalization", 2, "vocab"),
        ("COVID-19", "covid-19", 3, "added"),
        (SPECIAL, SPECIAL, 4, "special"),
    ]
    assert placements[0]["pieces"] == [2522, 17258]
    assert not out.exists()


def test_present_token_is_a_reported_skip(minilm_src: Path, tmp_path: Path) -> None:
    out = tmp_path / "skip"
    result = invoke("remap", minilm_src, "--out", out, "--token", "the", "--token", "The")
    assert result.exit_code != 0  # "the" and "The" normalize to the same string
    result = invoke("remap", minilm_src, "--out", out, "--token", "The")
    assert result.exit_code == 0, result.output
    assert "skipped 'The': already in the vocabulary as id 1996" in result.stdout
    assert result.stdout.startswith("remap: 0 tokens placed, 1 skipped")
    # nothing placed: the output is the source plus a manifest
    assert (out / "model.safetensors").read_bytes() == (minilm_src / "model.safetensors").read_bytes()
    assert (out / "tokenizer.json").read_bytes() == (minilm_src / "tokenizer.json").read_bytes()
    assert manifest(out)["history"][0]["skipped"] == [
        {"token": "The", "reason": "already in the vocabulary as id 1996"}
    ]


def test_second_remap_takes_the_next_free_slots(cli_out: Path, tmp_path: Path) -> None:
    out = tmp_path / "second"
    result = invoke("remap", cli_out, "--out", out, "--token", "covid", "--token", "zqnewterm", "--token", "COVID-19")
    assert result.exit_code == 0, result.output
    assert "skipped 'covid': already in the vocabulary as id 1" in result.stdout
    assert "skipped 'COVID-19': already in the vocabulary as id 3" in result.stdout
    document = manifest(out)
    assert [(t["token"], t["id"]) for t in document["tokens"]] == [
        ("COVID", 1),
        ("hospitalization", 2),
        ("COVID-19", 3),
        (SPECIAL, 4),
        ("zqnewterm", 5),
    ]
    assert len(document["history"]) == 2
    assert find_slots(read_inventory(out)).taken == (1, 2, 3, 4, 5)
    tokenizer = load_tokenizer(out)
    assert encode(tokenizer, "zqnewterm") == [5]
    assert tokenizer.tokenize(SENTENCE) == SENTENCE_PIECES
    before = load_file(str(cli_out / "model.safetensors"))[MINILM_EMBEDDING]
    after = load_file(str(out / "model.safetensors"))[MINILM_EMBEDDING]
    assert np.array_equal(before[:5], after[:5])
    assert np.array_equal(before[6:], after[6:])


def test_too_many_tokens_fails_cleanly(minilm_src: Path, tmp_path: Path) -> None:
    tokens = tmp_path / "terms.txt"
    tokens.write_text("".join(f"zqterm{i:04d}\n" for i in range(1, 1201)), encoding="utf-8")
    parent = tmp_path / "outs"
    parent.mkdir()
    result = invoke("remap", minilm_src, "--out", parent / "many", "--tokens-file", tokens)
    assert result.exit_code == 1
    assert error_line(result) == (
        f"vocabsurgeon: error: {minilm_src}: 1200 new tokens but only 994 free slots;"
        " `vocabsurgeon append` (or remap --allow-append) adds the other 206"
    )
    assert "994" in result.stderr
    assert "append" in result.stderr
    assert os.listdir(parent) == []
    assert dot_entries(tmp_path) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--token", ""], "empty or whitespace-only token ''"),
        (["--token", "   "], "empty or whitespace-only token '   '"),
        (["--token", "zqa", "--token", "zqa"], "token 'zqa' is given 2 times"),
        (["--token", "COVID", "--token", "covid"], "tokens 'COVID' and 'covid' both normalize to 'covid'"),
        (["--special-token", "\t"], "empty or whitespace-only token"),
        (["--token", " hospitalization"], "token ' hospitalization' begins or ends with whitespace"),
        (["--token", "naïveté\u00a0"], "token 'naïveté\\xa0' begins or ends with whitespace"),
        (["--tokens-file", "{tmp}/missing.txt"], "missing.txt: tokens file does not exist"),
        ([], "no tokens given"),
    ],
    ids=[
        "empty",
        "whitespace",
        "duplicate",
        "same-normalized",
        "whitespace-special",
        "leading-space",
        "trailing-nbsp",
        "missing-file",
        "no-tokens",
    ],
)
def test_token_errors(bert_dir: Path, tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "out"
    result = invoke("remap", bert_dir, "--out", out, *(a.replace("{tmp}", str(tmp_path)) for a in args))
    assert result.exit_code == 1, result.output
    line = error_line(result)
    assert line.startswith("vocabsurgeon: error: ")
    assert message in line
    assert not out.exists()
    assert dot_entries(tmp_path) == []


def test_whitespace_line_in_tokens_file_is_an_error(bert_dir: Path, tmp_path: Path) -> None:
    tokens = tmp_path / "terms.txt"
    tokens.write_text("zqa\n  \nzqb\n", encoding="utf-8")
    result = invoke("remap", bert_dir, "--out", tmp_path / "out", "--tokens-file", tokens)
    assert result.exit_code == 1
    assert error_line(result) == f"vocabsurgeon: error: {tokens}: line 2 is whitespace only"


def test_existing_output_needs_force(bert_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    (out / "vocabsurgeon.json").write_text("{}")  # an earlier output: what --force may replace
    result = invoke("remap", bert_dir, "--out", out, "--token", "zqa")
    assert result.exit_code == 1
    assert error_line(result) == f"vocabsurgeon: error: {out}: already exists; pass --force to replace it"
    assert sorted(os.listdir(out)) == ["old.txt", "vocabsurgeon.json"]

    result = invoke("remap", bert_dir, "--out", out, "--token", "zqa", "--force")
    assert result.exit_code == 0, result.output
    assert not (out / "old.txt").exists()
    assert encode(load_tokenizer(out), "zqa") == [placed_ids(out)["zqa"]]
    assert dot_entries(tmp_path) == []


@pytest.mark.parametrize("where", ["inside", "same"])
def test_output_inside_the_source_is_refused(bert_dir: Path, where: str) -> None:
    before = tree_hashes(bert_dir)
    out = bert_dir / "sub" / "out" if where == "inside" else bert_dir
    result = invoke("remap", bert_dir, "--out", out, "--token", "zqa", "--force")
    assert result.exit_code == 1
    line = error_line(result)
    assert line.startswith("vocabsurgeon: error: ")
    assert "the output must be outside the source checkpoint" in line
    assert tree_hashes(bert_dir) == before


def test_tokens_file_pins_slots_and_skips_comments(bert_dir: Path, tmp_path: Path) -> None:
    tokens = tmp_path / "terms.txt"
    tokens.write_text("# domain terms\n\nZqPinned\t150\nzqfree\n# done\n", encoding="utf-8")
    special = tmp_path / "special.txt"
    special.write_text("<extra>\t160\n", encoding="utf-8")
    out = tmp_path / "out"
    result = invoke("remap", bert_dir, "--out", out, "--tokens-file", tokens, "--special-tokens-file", special)
    assert result.exit_code == 0, result.output
    assert placed_ids(out) == {"ZqPinned": 150, "zqfree": 1, "<extra>": 160}
    vocab_txt = (out / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert vocab_txt[150] == "zqpinned"
    assert vocab_txt[1] == "zqfree"
    tokenizer = load_tokenizer(out)
    assert encode(tokenizer, "ZqPinned") == [150]
    assert encode(tokenizer, "<extra>") == [160]


def test_pinning_a_taken_id_is_an_error(bert_dir: Path, tmp_path: Path) -> None:
    tokens = tmp_path / "terms.txt"
    tokens.write_text("zqa\t500\n", encoding="utf-8")  # 500 is an ordinary word
    result = invoke("remap", bert_dir, "--out", tmp_path / "out", "--tokens-file", tokens)
    assert result.exit_code == 1
    assert error_line(result).startswith("vocabsurgeon: error: id 500 is not a free slot")


def test_uncased_tokens_are_lowercased(bert_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = invoke("remap", bert_dir, "--out", out, "--token", "COVID", "--token", "Zq-Term")
    assert result.exit_code == 0, result.output
    entries = {t["token"]: t for t in manifest(out)["tokens"]}
    assert entries["COVID"]["content"] == "covid"
    assert entries["Zq-Term"]["content"] == "zq-term"
    vocab_txt = (out / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert vocab_txt[entries["COVID"]["id"]] == "covid"
    tokenizer = load_tokenizer(out)
    for text in ("COVID", "covid", "Covid"):
        assert encode(tokenizer, text) == [entries["COVID"]["id"]]
    assert encode(tokenizer, "ZQ-TERM") == [entries["Zq-Term"]["id"]]


def test_cased_tokens_keep_their_case(tmp_path: Path) -> None:
    src = build_bert(tmp_path / "cased", lowercase=False)
    out = tmp_path / "out"
    result = invoke("remap", src, "--out", out, "--token", "COVID", "--token", "covid")
    assert result.exit_code == 0, result.output  # distinct once the checkpoint keeps case
    entries = {t["token"]: t for t in manifest(out)["tokens"]}
    assert entries["COVID"]["content"] == "COVID"
    assert entries["covid"]["content"] == "covid"
    vocab_txt = (out / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert vocab_txt[entries["COVID"]["id"]] == "COVID"
    assert vocab_txt[entries["covid"]["id"]] == "covid"
    tokenizer = load_tokenizer(out)
    assert encode(tokenizer, "COVID") == [entries["COVID"]["id"]]
    assert encode(tokenizer, "covid") == [entries["covid"]["id"]]
    assert encode(tokenizer, "Covid") not in ([entries["COVID"]["id"]], [entries["covid"]["id"]])


def test_subword_piece_remap_passes_verification(bert_dir: Path, tmp_path: Path) -> None:
    """A ``##`` piece is a continuation entry: it is never typed on its own, it shows up inside a word."""
    out = tmp_path / "out"
    result = invoke("remap", bert_dir, "--out", out, "--token", "##zqx")
    assert result.exit_code == 0, result.output
    idx = placed_ids(out)["##zqx"]
    tokenizer = load_tokenizer(out)
    assert tokenizer.convert_tokens_to_ids("##zqx") == idx
    assert tokenizer.tokenize("xzqx") == ["x", "##zqx"]


# ------------------------------------------------------------------------------------------------ failure injection


def _failing_rename(fails: Callable[[str, str], bool]) -> Callable[[Path, Path], None]:
    """outputs._rename_no_replace, failing when ``fails(src, dst)``."""
    from vocabsurgeon import outputs

    real = outputs._rename_no_replace

    def rename(src: Path, dst: Path) -> None:
        if fails(str(src), str(dst)):
            raise OSError(errno.EXDEV, "Invalid cross-device link (injected)")
        real(src, dst)

    return rename


def test_failed_rename_leaves_nothing(minilm_src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parent = tmp_path / "outs"
    parent.mkdir()
    before = tree_hashes(minilm_src)
    monkeypatch.setattr("vocabsurgeon.outputs._rename_no_replace", _failing_rename(lambda src, dst: True))
    with pytest.raises(OSError, match="injected"):
        library_remap(minilm_src, parent / "out", MINILM_REQUESTS)
    assert os.listdir(parent) == []
    result = invoke("remap", minilm_src, "--out", parent / "out", *TOKEN_ARGS)
    assert result.exit_code == 1
    assert error_line(result).startswith("vocabsurgeon: ")
    assert "injected" in result.stderr
    assert os.listdir(parent) == []
    assert tree_hashes(minilm_src) == before


def test_failed_forced_replace_restores_the_old_output(
    bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    (out / "vocabsurgeon.json").write_text("{}")  # an earlier output: what --force may replace
    before = tree_hashes(bert_dir)
    failing = _failing_rename(lambda src, dst: src.endswith(".vocabsurgeon-tmp"))
    monkeypatch.setattr("vocabsurgeon.outputs._rename_no_replace", failing)
    result = invoke("remap", bert_dir, "--out", out, "--token", "zqa", "--force")
    assert result.exit_code == 1
    assert "injected" in result.stderr
    assert sorted(os.listdir(out)) == ["old.txt", "vocabsurgeon.json"]
    assert (out / "old.txt").read_text() == "old"
    assert dot_entries(tmp_path) == []
    assert tree_hashes(bert_dir) == before


class _DiskFillsUp:
    """``os`` as the safetensors writer sees it: writes (``pwrite``, ``copy_file_range``) fail with ENOSPC once
    ``limit`` bytes were written, as on a full disk."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.written = 0
        self.failed_at: int | None = None
        self.lock = threading.Lock()  # the writer copies in several threads

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def _account(self, count: int) -> None:
        with self.lock:
            if self.written + count > self.limit:
                self.failed_at = self.written
                raise OSError(errno.ENOSPC, "No space left on device (injected)")
            self.written += count

    def pwrite(self, fd: int, data: Any, offset: int) -> int:
        self._account(len(data))
        return os.pwrite(fd, data, offset)

    def copy_file_range(
        self, src: int, dst: int, count: int, offset_src: int | None = None, offset_dst: int | None = None
    ) -> int:
        self._account(count)
        return os.copy_file_range(src, dst, count, offset_src, offset_dst)


def test_weights_writer_failing_half_way_leaves_nothing(
    minilm_src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parent = tmp_path / "outs"
    parent.mkdir()
    before = tree_hashes(minilm_src)
    size = (minilm_src / "model.safetensors").stat().st_size
    disk = _DiskFillsUp(size // 2)
    monkeypatch.setattr(safetensors_stream, "os", disk)
    with pytest.raises(OSError, match="injected"):
        library_remap(minilm_src, parent / "out", MINILM_REQUESTS)
    assert disk.failed_at is not None
    assert 0 < disk.failed_at <= size // 2
    assert os.listdir(parent) == []
    disk.written, disk.failed_at = 0, None
    result = invoke("remap", minilm_src, "--out", parent / "out", *TOKEN_ARGS)
    assert result.exit_code == 1
    assert "injected" in result.stderr
    assert disk.failed_at is not None
    assert os.listdir(parent) == []
    assert tree_hashes(minilm_src) == before


@pytest.mark.parametrize("phase", ["tokenizer_checks", "weight_checks"])
def test_verification_failure_leaves_nothing(
    bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, phase: str
) -> None:
    monkeypatch.setattr(Verifier, phase, lambda self, output, source, tokens=None: [Check("injected", False)])
    out = tmp_path / "out"
    result = invoke("remap", bert_dir, "--out", out, "--token", "zqa")
    assert result.exit_code == 1
    assert error_line(result).startswith("vocabsurgeon: error: ")
    assert "verification failed: injected" in result.stderr
    assert not out.exists()
    assert dot_entries(tmp_path) == []


def test_verification_failure_names_the_output(bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Verifier, "weight_checks", lambda self, output, source, tokens=None: [Check("injected", False)])
    out = tmp_path / "out"
    result = invoke("remap", bert_dir, "--out", out, "--token", "zqa")
    assert error_line(result).startswith(f"vocabsurgeon: error: {out}: verification failed")


# ------------------------------------------------------------------------------------------------ HF cache source


def test_remap_from_the_hf_cache(bert_dir: Path, hf_home: Path, tmp_path: Path) -> None:
    snapshot = hf_cache_snapshot(bert_dir, hf_home, "org/tiny-bert")
    assert (snapshot / "model.safetensors").is_symlink()
    blobs = snapshot.parent.parent / "blobs"
    before = tree_hashes(blobs)
    links = tree_hashes(snapshot)
    out = tmp_path / "out"
    result = invoke("remap", "org/tiny-bert", "--out", out, "--token", "COVID", "--special-token", SPECIAL)
    assert result.exit_code == 0, result.output
    assert tree_hashes(blobs) == before
    assert tree_hashes(snapshot) == links
    paths = list(out.rglob("*"))
    assert paths
    assert not any(p.is_symlink() for p in paths)
    assert {p.relative_to(out).as_posix() for p in paths if p.is_file()} == {*files_of(bert_dir), MANIFEST}
    assert (out / "config.json").read_bytes() == (bert_dir / "config.json").read_bytes()
    ids = placed_ids(out)
    tokenizer = load_tokenizer(out)
    assert encode(tokenizer, "COVID") == [ids["COVID"]]
    assert encode(tokenizer, SPECIAL) == [ids[SPECIAL]]
    assert manifest(out)["source"] == "org/tiny-bert"


def test_unknown_model_id_is_an_error(tmp_path: Path) -> None:
    result = invoke("remap", "org/not-cached", "--out", tmp_path / "out", "--token", "zqa")
    assert result.exit_code == 1
    assert error_line(result).startswith("vocabsurgeon: error: org/not-cached: no such directory")


# ------------------------------------------------------------------------------------------------ verify


def test_verify_passes_on_a_good_output(cli_out: Path, minilm_src: Path) -> None:
    result = invoke("verify", cli_out, "--against", minilm_src)
    assert result.exit_code == 0, result.output
    assert "FAIL" not in result.stdout
    assert result.stdout.rstrip().endswith(f"{cli_out}: ok")


def test_remap_verify_full_reloads_with_transformers(bert_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = invoke("remap", bert_dir, "--out", out, "--token", "zqa", "--verify", "full", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["verified"] is True
    assert document["verification"] == "full"
    quick = invoke("remap", bert_dir, "--out", tmp_path / "quick", "--token", "zqa", "--json")
    assert json.loads(quick.stdout)["verification"] == "quick"
    none = invoke("remap", bert_dir, "--out", tmp_path / "none", "--token", "zqa", "--no-verify", "--json")
    assert json.loads(none.stdout)["verified"] is False
    assert json.loads(none.stdout)["verification"] is None


def test_quick_verify_passes_on_a_good_output(cli_out: Path, minilm_src: Path) -> None:
    result = invoke("verify", cli_out, "--against", minilm_src, "--quick")
    assert result.exit_code == 0, result.output
    assert "tokenizers tokenizer loads" in result.stdout
    assert "non-vocabulary tensors unchanged (sampled rows)" in result.stdout


def test_quick_verify_fails_on_a_shifted_tensor(tampered: Path, minilm_src: Path) -> None:
    """Data written one element off (an offset bug) changes every sampled row."""
    weights = tampered / "model.safetensors"
    name = "encoder.layer.0.attention.self.query.weight"
    start = tensor_data_offset(weights, name)
    with open(weights, "r+b") as handle:
        handle.seek(start)
        data = handle.read(384 * 384 * 4)
        handle.seek(start)
        handle.write(data[4:] + data[:4])
    result = invoke("verify", tampered, "--against", minilm_src, "--quick")
    assert result.exit_code == 1
    assert [line.split(":")[0] for line in _fail_lines(result)] == [
        "FAIL non-vocabulary tensors unchanged (sampled rows)"
    ]
    assert name in _fail_lines(result)[0]


def test_quick_verify_compares_the_rows_beside_a_placed_id(tampered: Path, minilm_src: Path) -> None:
    placed = max(placed_ids(tampered).values())  # the row after the last placed one is an untouched slot
    weights = tampered / "model.safetensors"
    _flip_byte(weights, tensor_data_offset(weights, MINILM_EMBEDDING) + (placed + 1) * 384 * 4 + 3)
    result = invoke("verify", tampered, "--against", minilm_src, "--quick")
    assert result.exit_code == 1
    assert [line.split(":")[0] for line in _fail_lines(result)] == ["FAIL old rows unchanged (sampled rows)"]


def test_quick_verify_samples_rows_and_full_verify_reads_them_all(tampered: Path, minilm_src: Path) -> None:
    """The trade-off of the quick level, pinned: a flipped bit in an unsampled row is found by the full one only."""
    weights = tampered / "model.safetensors"
    _flip_byte(weights, tensor_data_offset(weights, "encoder.layer.0.attention.self.query.weight") + 101 * 384 * 4)
    assert invoke("verify", tampered, "--against", minilm_src, "--quick").exit_code == 0
    assert invoke("verify", tampered, "--against", minilm_src).exit_code == 1


@pytest.fixture
def tampered(cli_out: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(cli_out, tmp_path / "tampered"))


def _flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        value = handle.read(1)[0]
        handle.seek(offset)
        handle.write(bytes([value ^ 0x01]))


def _fail_lines(result: Result) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith("FAIL")]


def test_verify_fails_on_a_changed_tensor(tampered: Path, minilm_src: Path) -> None:
    weights = tampered / "model.safetensors"
    _flip_byte(weights, tensor_data_offset(weights, "encoder.layer.0.attention.self.query.weight") + 101)
    result = invoke("verify", tampered, "--against", minilm_src)
    assert result.exit_code == 1
    assert [line.split(":")[0] for line in _fail_lines(result)] == ["FAIL non-vocabulary tensors unchanged"]
    assert "encoder.layer.0.attention.self.query.weight" in _fail_lines(result)[0]


def test_verify_fails_on_a_changed_old_row(tampered: Path, minilm_src: Path) -> None:
    weights = tampered / "model.safetensors"
    _flip_byte(weights, tensor_data_offset(weights, MINILM_EMBEDDING) + 2000 * 384 * 4 + 3)
    result = invoke("verify", tampered, "--against", minilm_src)
    assert result.exit_code == 1
    assert [line.split(":")[0] for line in _fail_lines(result)] == ["FAIL old rows unchanged"]


@pytest.mark.parametrize("level", [[], ["--quick"]], ids=["full", "quick"])
def test_verify_fails_on_moved_ids_in_tokenizer_json(tampered: Path, minilm_src: Path, level: list[str]) -> None:
    document = json.loads((tampered / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = document["model"]["vocab"]
    vocab["was"], vocab["he"] = vocab["he"], vocab["was"]
    (tampered / "tokenizer.json").write_text(json.dumps(document), encoding="utf-8")
    result = invoke("verify", tampered, "--against", minilm_src, *level)
    assert result.exit_code == 1
    fails = _fail_lines(result)
    assert any(line.startswith("FAIL original tokens keep their ids") for line in fails), result.stdout


@pytest.mark.parametrize("level", [[], ["--quick"]], ids=["full", "quick"])
def test_verify_fails_on_swapped_vocab_txt_lines(tampered: Path, minilm_src: Path, level: list[str]) -> None:
    lines = (tampered / "vocab.txt").read_text(encoding="utf-8").split("\n")
    lines[2000], lines[2001] = lines[2001], lines[2000]
    (tampered / "vocab.txt").write_text("\n".join(lines), encoding="utf-8")
    result = invoke("verify", tampered, "--against", minilm_src, *level)
    assert result.exit_code == 1
    assert _fail_lines(result)


# ------------------------------------------------------------------------------------------------ JSON style


def test_rewritten_tokenizer_config_keeps_its_style(cli_out: Path, minilm_src: Path) -> None:
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        text = (cli_out / name).read_text(encoding="utf-8")
        assert json.loads((minilm_src / name).read_text(encoding="utf-8")) != json.loads(text)
        assert json.dumps(json.loads(text)) == text, name  # the source's own style: one line, ", " and ": "


# ------------------------------------------------------------------------------------------------ Llama BPE


def test_llama_reserved_special_token_slots(llama_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = invoke("remap", llama_dir, "--out", out, "--special-token", "<|tool|>", "--token", "hospitalization")
    assert result.exit_code == 0, result.output
    source_tokenizer, tokenizer = load_tokenizer(llama_dir), load_tokenizer(out)
    by_id = {idx: token for token, idx in source_tokenizer.get_vocab().items()}
    entries = {t["token"]: t for t in manifest(out)["tokens"]}
    assert entries["<|tool|>"]["kind"] == "special"
    assert entries["hospitalization"]["kind"] == "vocab"  # Ġhospitalization, the word in running text
    ids = {token: entry["id"] for token, entry in entries.items()}
    assert sorted(ids.values()) == [504, 505]
    for token, idx in ids.items():
        assert by_id[idx].startswith("<|reserved_special_token_"), (token, by_id[idx])
        assert len(encode(source_tokenizer, token)) > 1
    assert encode(tokenizer, "<|tool|>") == [ids["<|tool|>"]]
    assert ids["<|tool|>"] in encode(tokenizer, "Call <|tool|> now")
    # the word in running text: one id after a space, where the source had its pieces
    sentence = "The patient's hospitalization was noted."
    assert ids["hospitalization"] in encode(tokenizer, sentence)
    assert len(encode(tokenizer, sentence)) < len(encode(source_tokenizer, sentence))
    assert len(tokenizer) == len(source_tokenizer) == 512

    before, after = source_tokenizer.get_vocab(), tokenizer.get_vocab()
    kept = {token: idx for token, idx in before.items() if not is_placeholder(token)}
    assert {token: after.get(token) for token in kept} == kept
    for text in ("The patients need a new hospital now.", "Doctors and nurses, 2019 and 2020!"):
        assert tokenizer.encode(text) == source_tokenizer.encode(text), text

    old_weights, new_weights = (
        load_file(str(llama_dir / "model.safetensors")),
        load_file(str(out / "model.safetensors")),
    )
    config = json.loads((out / "config.json").read_text())
    assert config["vocab_size"] == 512
    assert config == json.loads((llama_dir / "config.json").read_text())
    reserved = list(range(504, 512))
    placed = sorted(ids.values())
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        old, new = old_weights[name], new_weights[name]
        assert not old[reserved].any()  # the fixture's reserved rows are zero
        for idx in placed:
            assert new[idx].any(), (name, idx)  # re-initialized
        rest = np.ones(len(old), dtype=bool)
        rest[placed] = False
        assert np.array_equal(new[rest], old[rest]), name
    for name in old_weights:
        if name not in ("model.embed_tokens.weight", "lm_head.weight"):
            assert old_weights[name].tobytes() == new_weights[name].tobytes(), name


def test_a_full_disk_is_one_line_and_leaves_nothing(
    bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import vocabsurgeon.apply as apply_module

    def full(source: Path, destination: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(destination))

    monkeypatch.setattr(apply_module, "_copy", full)
    out = tmp_path / "out"
    result = invoke("remap", bert_dir, "--out", out, "--token", "zqa", "--no-verify")
    assert result.exit_code == 1
    line = error_line(result)
    assert line.startswith("vocabsurgeon: error: No space left on device: ")
    assert line.endswith("; nothing was written")
    assert not out.exists()
    assert dot_entries(tmp_path) == []


def test_only_split_words_in_slots_are_listed_in_never_split(cli_out: Path) -> None:
    """transformers 4.x's slow BertTokenizer keeps covid-19 whole only through never_split; words it keeps whole
    anyway (covid) and special tokens (handled by the special-token list) are not listed."""
    config = json.loads((cli_out / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["never_split"] == ["covid-19"]
