"""Corpus input of ``suggest``: every format gives the same words, and every bad corpus is one line, exit 1, with
nothing written; also the counting's bounded memory, the filters, and the same bytes for the same inputs."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from vocabsurgeon import corpus as corpus_module
from vocabsurgeon.cli import main
from vocabsurgeon.corpus import find_corpus, read_blocks
from vocabsurgeon.word_counts import ChunkCounter

LINES = [
    "The patient developed thrombocytopenia after methotrexate.",
    "Thrombocytopenia and hepatosplenomegaly were noted; methotrexate was stopped.",
    "Repeat echocardiography excluded cardiomyopathy, and thrombocytopenia resolved.",
    "Methotrexate-induced hepatosplenomegaly is rare: see https://example.org/zzqcasereport or zzqdoctor@example.org.",
    "Cardiomyopathy, hepatosplenomegaly and echocardiography findings in 2024 and 2025 (n = 12345).",
] * 4


def invoke(*args: str | Path, stdin: str | None = None) -> Any:
    return CliRunner().invoke(main, [str(a) for a in args], input=stdin)


def suggested(model: Path, *corpus: str | Path, extra: tuple[str, ...] = (), stdin: str | None = None) -> list[str]:
    result = invoke("suggest", model, *corpus, "--json", "--max-pieces-per-word", "0", *extra, stdin=stdin)
    assert result.exit_code == 0, result.output
    return [w["word"] for w in json.loads(result.stdout)["words"]]


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return path


def test_every_format_gives_the_same_words(minilm: Path, text_file: Path, tmp_path: Path) -> None:
    expected = suggested(minilm, text_file)
    assert {"thrombocytopenia", "hepatosplenomegaly", "methotrexate"} <= set(expected)
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes("\r\n\r\n".join(LINES).encode("utf-8"))  # Windows line ends and blank lines
    compressed = tmp_path / "notes.txt.gz"
    compressed.write_bytes(gzip.compress(text_file.read_bytes()))
    records = tmp_path / "notes.jsonl"
    records.write_text("".join(json.dumps({"id": i, "text": line}) + "\n" for i, line in enumerate(LINES)), "utf-8")
    records_gz = tmp_path / "records.jsonl.gz"
    records_gz.write_bytes(gzip.compress(records.read_bytes()))
    folder = tmp_path / "folder"
    (folder / "a").mkdir(parents=True)
    (folder / "a" / "part1.txt").write_text("\n".join(LINES[:7]), encoding="utf-8")
    (folder / "part2.txt").write_text("\n".join(LINES[7:]), encoding="utf-8")
    (folder / ".hidden.txt").write_bytes(b"\0binary that is skipped")
    assert suggested(minilm, crlf) == expected
    assert suggested(minilm, compressed) == expected
    assert suggested(minilm, records, extra=("--field", "text")) == expected
    assert suggested(minilm, records_gz, extra=("--field", "text")) == expected
    assert suggested(minilm, folder) == expected
    assert suggested(minilm, "-", stdin=text_file.read_text(encoding="utf-8")) == expected
    # stdin: JSON Lines with --field, and refused as prose without it
    assert suggested(minilm, "-", stdin=records.read_text(encoding="utf-8"), extra=("--field", "text")) == expected
    as_prose = invoke("suggest", minilm, "-", stdin=records.read_text(encoding="utf-8"))
    assert as_prose.exit_code == 1
    assert as_prose.stderr.strip() == (
        "vocabsurgeon: error: <stdin>: holds JSON records, not text: pass --field NAME (the field with the text)"
    )


def bad_corpus(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    ("name", "content", "extra", "message"),
    [
        ("empty.txt", b"", (), "empty.txt: the corpus is empty (no text in it)"),
        ("blank.txt", b"\n  \n\t\n", (), "blank.txt: the corpus is empty (no text in it)"),
        ("binary.txt", b"text\x00\x01\x02", (), "binary.txt: is binary, not text (a NUL byte at byte 4)"),
        ("latin1.txt", "café au lait".encode("latin-1"), (), "latin1.txt: is not UTF-8 text (byte 3)"),
        ("cut.txt", "caf\u00e9".encode()[:-1], (), "cut.txt: is not UTF-8 text (it ends inside a character, byte 4)"),
        ("records.jsonl", b'{"text": "a"}\n', (), "records.jsonl: is a JSON Lines file: pass --field NAME to say"),
        ("bad.jsonl", b'{"text": "ok"}\nnot json\n', ("--field", "text"), "bad.jsonl: line 2 is not a JSON record"),
        ("list.jsonl", b"[1, 2]\n", ("--field", "text"), "list.jsonl: line 1 is not a JSON object"),
        ("nofield.jsonl", b'{"body": "x"}\n', ("--field", "text"), "nofield.jsonl: line 1 has no field 'text'"),
        ("number.jsonl", b'{"text": 5}\n', ("--field", "text"), "line 1 has a int, not a string, in field 'text'"),
        ("fake.txt.gz", b"\x1f\x8bnot really gzip", (), "fake.txt.gz: cannot be decompressed"),
        ("records.txt", b'\n{"text": "a"}\n', (), "records.txt: holds JSON records, not text: pass --field NAME"),
        ("prose.txt", b"some prose\n", ("--field", "text"), "--field text is for JSON Lines, and none of the corpus"),
    ],
)
def test_a_bad_corpus_is_one_line_and_exit_1(
    minilm: Path, tmp_path: Path, name: str, content: bytes, extra: tuple[str, ...], message: str
) -> None:
    path = bad_corpus(tmp_path, name, content)
    out = tmp_path / "terms.txt"
    result = invoke("suggest", minilm, path, "--out", out, *extra)
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert message in lines[0]
    assert lines[0].startswith("vocabsurgeon: error: ")
    assert not out.exists()
    as_json = invoke("suggest", minilm, path, "--json", *extra)
    assert as_json.exit_code == 1
    error = json.loads(as_json.stdout)
    assert message in error["error"]
    assert error["code"] in ("corpus", "corpus-not-found")


def test_missing_corpus_and_usage_errors(minilm: Path, text_file: Path, tmp_path: Path) -> None:
    missing = invoke("suggest", minilm, tmp_path / "nope.txt")
    assert missing.exit_code == 1
    assert missing.stderr.strip() == f"vocabsurgeon: error: {tmp_path / 'nope.txt'}: does not exist"
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    assert "is an empty directory" in invoke("suggest", minilm, empty_dir).stderr
    both = invoke("suggest", minilm, text_file, "--top", "5", "--fit-slots")
    assert both.exit_code == 2
    assert "--top and --fit-slots are exclusive" in both.stderr
    existing = tmp_path / "terms.txt"
    existing.write_text("mine\n", encoding="utf-8")
    refused = invoke("suggest", minilm, text_file, "--out", existing)
    assert refused.exit_code == 1
    assert refused.stderr.strip() == f"vocabsurgeon: error: {existing}: already exists; pass --force to replace it"
    assert existing.read_text(encoding="utf-8") == "mine\n"
    nowhere = invoke("suggest", minilm, text_file, "--out", tmp_path / "no" / "terms.txt")
    assert nowhere.exit_code == 1
    assert "the directory for --out does not exist" in nowhere.stderr
    held_missing = invoke("suggest", minilm, text_file, "--held-out", tmp_path / "nope.txt")
    assert held_missing.exit_code == 1
    assert "nope.txt: does not exist" in held_missing.stderr


def test_no_free_slots_needs_top(bert_none_dir: Path, text_file: Path) -> None:
    result = invoke("suggest", bert_none_dir, text_file)
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"vocabsurgeon: error: {bert_none_dir}: has no free slots; pass --top N to choose N words to append"
    )
    assert suggested(bert_none_dir, text_file, extra=("--top", "3"))


def test_filters_and_their_flags(minilm: Path, text_file: Path, tmp_path: Path) -> None:
    words = suggested(minilm, text_file, extra=("--min-count", "1", "--min-length", "1"))
    assert not any(w.isdigit() for w in words)
    assert not any("example" in w or "https" in w for w in words)  # the URL and e-mail chunks are left out
    with_numbers = suggested(minilm, text_file, extra=("--min-count", "1", "--keep-numbers"))
    assert "12345" in with_numbers
    assert not {"zzqcasereport", "zzqdoctor"} & set(words)
    with_urls = suggested(minilm, text_file, extra=("--min-count", "1", "--keep-urls"))
    assert {"zzqcasereport", "zzqdoctor"} <= set(with_urls)  # words inside the URL and the address
    exclude = tmp_path / "exclude.txt"
    exclude.write_text("# words I do not want\nThrombocytopenia\n", encoding="utf-8")
    without = suggested(minilm, text_file, extra=("--exclude", exclude))
    assert "thrombocytopenia" not in without  # normalized like the checkpoint: the uncased model lowercases
    assert "hepatosplenomegaly" in without


def test_same_inputs_same_bytes(minilm: Path, text_file: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    for out in (first, second):
        assert invoke("suggest", minilm, text_file, "--out", out, "-q").exit_code == 0
    assert first.read_bytes() == second.read_bytes()
    header = [line for line in first.read_text(encoding="utf-8").splitlines() if line.startswith("#")]
    assert header[0].startswith("# vocabsurgeon suggest ")
    # the file is a tokens file that remap, append and batch take as it is
    words = [line for line in first.read_text(encoding="utf-8").splitlines() if not line.startswith("#")]
    for command in ("remap", "append"):
        out = tmp_path / command
        assert invoke(command, minilm, "--out", out, "--tokens-file", first, "-q").exit_code == 0
        manifest = json.loads((out / "vocabsurgeon.json").read_text(encoding="utf-8"))
        assert [t["token"] for t in manifest["tokens"]] == words
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'tokens_file = "{first.name}"\nstrategy = "remap"\n', encoding="utf-8")
    batch = invoke("batch", recipe, minilm, "--out-root", tmp_path / "batch", "--jobs", "1", "-q")
    assert batch.exit_code == 0, batch.output


def test_counting_memory_is_bounded() -> None:
    counter = ChunkCounter(max_distinct=1000)
    counter.add("\n".join(f"common rare{i}" for i in range(5000)))
    assert len(counter.chunks) <= 1000
    assert counter.running()["rare4999"] in (0, 1)  # the rarest went, the counts say by how much at most
    assert counter.initial["common"] == 5000
    assert counter.count_error >= 1


def test_the_count_error_bounds_what_was_dropped() -> None:
    """A chunk can be dropped, come back and be dropped again: the bound adds up every drop's threshold."""
    counter = ChunkCounter(max_distinct=1000)
    for k in range(1, 51):
        counter.add("\n".join([f"unique{k}-{i}" for i in range(1200)] + ["a term"] * k))
    true = sum(range(1, 51))
    assert 0 < true - counter.running()["term"] <= counter.count_error


def test_a_huge_line_is_read_in_pieces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(corpus_module, "LONGEST_LINE", 50)
    monkeypatch.setattr(corpus_module, "BLOCK_BYTES", 16)
    path = tmp_path / "one-line.txt"
    words = [f"word{i}" for i in range(100)]
    path.write_text(" ".join(words), encoding="utf-8")
    documents = [line for block in read_blocks(find_corpus([path])) for line in block.split("\n")]
    assert len(documents) > 5
    assert all(len(d) <= 50 for d in documents[:-1])
    assert all(d.startswith(" ") for d in documents[1:])  # a piece after a cut is running text
    assert "".join(documents).split() == words


@pytest.mark.parametrize("fixture", ["bert_dir", "bert_pytorch_dir"])
def test_suggest_never_imports_torch(fixture: str, text_file: Path, request: pytest.FixtureRequest) -> None:
    from test_cli_inspect import imported_modules, torch_modules

    model: Path = request.getfixturevalue(fixture)
    modules, completed = imported_modules("suggest", model, text_file, "--top", "3")
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "vocabsurgeon.suggestions" in modules
    assert torch_modules(modules) == []


def test_counting_in_worker_processes_counts_the_same(
    minilm: Path, text_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past PARALLEL_ABOVE characters two worker processes count: the report is the same as counted here."""
    from vocabsurgeon import corpus, word_counts

    big = tmp_path / "big.txt"
    big.write_text((text_file.read_text(encoding="utf-8")) * 50, encoding="utf-8")
    args = ("suggest", minilm, big, "--json", "--top", "20", "--max-pieces-per-word", "0")
    alone = invoke(*args)
    monkeypatch.setattr(word_counts, "PARALLEL_ABOVE", 1000)
    monkeypatch.setattr(corpus, "BLOCK_BYTES", 4096)  # many blocks, so both workers get some
    started: list[Any] = []
    real_start = word_counts.CorpusCounter._start
    monkeypatch.setattr(word_counts.CorpusCounter, "_start", lambda self: (started.append(self), real_start(self)))
    together = invoke(*args)
    assert started
    assert alone.exit_code == together.exit_code == 0, together.output
    assert json.loads(together.stdout) == json.loads(alone.stdout)


def test_the_sample_is_the_same_however_the_corpus_is_cut() -> None:
    """The sample keeps the lowest-priority lines that fit: by blocks, or by parts merged (the worker processes'),
    it is the same lines; blank lines are never in it. Line lengths vary widely, so that a long line left out
    must not shut out shorter ones after it."""
    import random

    from vocabsurgeon.word_counts import Sample

    rng = random.Random(5)
    for trial in range(200):
        lines = [("" if rng.random() < 0.02 else "w" * rng.choice([1, 5, 40, 300, 2000])) for _ in range(500)]
        budget = rng.choice([100, 1000, 5000, 20000])
        whole = Sample(budget)
        whole.add(lines, 0)
        parts = [Sample(budget) for _ in range(3)]
        cut = sorted(rng.sample(range(1, 500), 8))
        for index, (start, end) in enumerate(zip([0, *cut], [*cut, 500], strict=True)):
            parts[index % 3].add(lines[start:end], start)
        merged = parts[0]
        merged.merge(parts[1])
        merged.merge(parts[2])
        assert merged.documents() == whole.documents(), trial
        assert sum(map(len, whole.documents())) <= budget
        assert "" not in whole.documents()
    everything = Sample(10**9)
    everything.add(lines, 0)
    assert everything.documents() == [line for line in lines if line]


def test_a_long_record_is_parsed_whole_and_a_long_line_still_sampled(
    minilm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(corpus_module, "LONGEST_LINE", 200)
    record = " ".join(LINES)  # far over LONGEST_LINE
    records = tmp_path / "long.jsonl"
    records.write_text(json.dumps({"text": "short one"}) + "\n" + json.dumps({"text": record}) + "\n", "utf-8")
    assert "thrombocytopenia" in suggested(minilm, records, extra=("--field", "text", "--min-count", "1"))
    one_line = tmp_path / "one-line.txt"
    one_line.write_text(" ".join(LINES * 20), encoding="utf-8")
    report = json.loads(invoke("suggest", minilm, one_line, "--json", "--sample-size", "100000").stdout)
    assert report["projection"] is not None
    assert report["projection"]["saved_percent"] > 0


def test_a_script_without_a_main_guard_can_count_in_workers(minilm: Path, text_file: Path, tmp_path: Path) -> None:
    """The counting workers are their own program, not multiprocessing's spawn (which runs the caller's main
    module again): a library user's script without ``if __name__ == "__main__"`` counts a corpus past
    PARALLEL_ABOVE in worker processes and gets what the CLI gets."""
    from vocabsurgeon.word_counts import PARALLEL_ABOVE

    big = tmp_path / "big.txt"
    text = text_file.read_text(encoding="utf-8")
    big.write_text(text * (PARALLEL_ABOVE // len(text) + 2), encoding="utf-8")
    assert big.stat().st_size > PARALLEL_ABOVE
    script = tmp_path / "script.py"
    script.write_text(
        "import json, vocabsurgeon\n"
        f"found = vocabsurgeon.suggest({str(minilm)!r}, [{str(big)!r}], top=10, max_pieces_per_word=None)\n"
        "print(json.dumps([w.word for w in found.words]))\n",
        encoding="utf-8",
    )
    import subprocess
    import sys

    completed = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    words = json.loads(completed.stdout)
    assert words == suggested(minilm, big, extra=("--top", "10"))
    assert {"thrombocytopenia", "hepatosplenomegaly"} <= set(words)


def test_words_the_model_cannot_see_are_reported_not_chosen(minilm: Path, tmp_path: Path) -> None:
    """MiniLM's WordPiece reads these Hangul words as [UNK]: one piece, no saving. They are reported (count and
    word, as the uncased normalizer leaves it: decomposed into jamo) and never chosen."""
    import unicodedata

    path = tmp_path / "mixed.txt"
    path.write_text("\n".join(LINES + ["환자는 있다 그리고 thrombocytopenia 있다"] * 6) + "\n", encoding="utf-8")
    result = invoke("suggest", minilm, path, "--json", "--top", "10", "--max-pieces-per-word", "0")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    unknown = {unicodedata.normalize("NFC", word): count for word, count in report["unknown"]["top"]}
    assert unknown["있다"] == 12
    assert report["unknown"]["occurrences"] >= 12
    assert "있다" not in [unicodedata.normalize("NFC", w["word"]) for w in report["words"]]
    table = invoke("suggest", minilm, path, "--top", "10", "--max-pieces-per-word", "0")
    assert "the model's unknown token" in table.stdout
    assert "있다 (12)" in unicodedata.normalize("NFC", table.stdout)


def test_slow_only_added_words_that_would_match_inside_longer_words_are_left_out(
    checkpoint_cache: Any, tmp_path: Path
) -> None:
    """A slow-only GPT-2 checkpoint (vocab.json, merges.txt, no tokenizer.json) stores words as added tokens
    that transformers matches anywhere: ``hosp`` would split ``hospitalized`` anew. suggest leaves such words
    out and says how many occurrences it left out for it."""
    from checkpoints import build_gpt2_slow
    from transformers import AutoTokenizer

    model = checkpoint_cache.copy("gpt2_slow", build_gpt2_slow, tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(str(model))
    text = tmp_path / "notes.txt"
    text.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    result = invoke("suggest", model, text, "--json", "--top", "10", "--max-pieces-per-word", "0")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["words"] == []
    assert report["excluded"]["inside-longer-words"] > 0
    assert len(tokenizer.tokenize("thrombocytopenia")) > 1  # they were candidates: the source splits them
