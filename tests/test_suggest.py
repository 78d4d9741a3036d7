"""``suggest`` on real checkpoints and real text: the words it chooses, remapped with the real CLI, save what it
projected when the output is loaded with transformers, save tokens on held-out text too, and leave text without
them encoded as before.

Texts: ``tests/data/biomedical.txt`` (English clinical and pharmacology prose, 7,000 words) and
``tests/data/korean_medical.txt`` (Korean health text, 3,000 words), written for these tests. Each is split in
two: suggest on the first part, measure on the second.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from checkpoints import build_bert
from click.testing import CliRunner
from real_tokenizers import build_real_checkpoint
from transformers import AutoTokenizer

from vocabsurgeon.cli import main

DATA = Path(__file__).parent / "data"


def run(*args: str | Path, code: int = 0) -> Any:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result


def split_text(name: str, tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """The first half of the paragraphs (to suggest on), the second (held out), and the held-out lines."""
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    half = len(lines) // 2
    first, second = tmp_path / "corpus.txt", tmp_path / "held-out.txt"
    first.write_text("\n".join(lines[:half]) + "\n", encoding="utf-8")
    second.write_text("\n".join(lines[half:]) + "\n", encoding="utf-8")
    return first, second, lines[half:]


def count_tokens(tokenizer: Any, lines: list[str]) -> int:
    return sum(len(tokenizer(line, add_special_tokens=False)["input_ids"]) for line in lines)


def check_suggestion(src: Path, name: str, tmp_path: Path, *extra: str) -> dict[str, Any]:
    """Suggest on one half, remap with the list, and measure with transformers on both halves."""
    corpus, held_out, held_lines = split_text(name, tmp_path)
    terms = tmp_path / "terms.txt"
    report = json.loads(run("suggest", src, corpus, "--held-out", held_out, "--out", terms, "--json", *extra).stdout)
    words = [w["word"] for w in report["words"]]
    assert words, report
    assert terms.read_text(encoding="utf-8").splitlines()[-len(words) :] == words
    out = tmp_path / "out"
    run("remap", src, "--out", out, "--tokens-file", terms, "-q")
    before, after = AutoTokenizer.from_pretrained(src), AutoTokenizer.from_pretrained(out)
    corpus_lines = corpus.read_text(encoding="utf-8").splitlines()
    for part, lines in (("projection", corpus_lines), ("held_out", held_lines)):
        old, new = count_tokens(before, lines), count_tokens(after, lines)
        measured = 100.0 * (old - new) / old
        assert report[part]["tokens_before"] == old
        assert abs(measured - report[part]["saved_percent"]) <= 0.2, (part, measured, report[part])
    assert report["held_out"]["saved_percent"] > 0
    # each word is one id inside a sentence, and text without the words encodes as before
    for word in report["words"]:
        ids = after(f"We saw {word['word']} today.", add_special_tokens=False)["input_ids"]
        assert word["form"] in after.convert_ids_to_tokens(ids), word
        # at a text's start: one id where the form has no word-boundary marker (WordPiece); a byte-level word
        # without --sentence-initial keeps its pieces there, and the sentence still decodes to itself
        sentence = f"{word['word']} was noted."
        start = after(sentence, add_special_tokens=False)["input_ids"]
        if word["form"][0] in ("\u0120", "\u2581"):
            assert after.decode(start) == sentence, word
            assert start == before(sentence, add_special_tokens=False)["input_ids"], word
        else:
            assert after.convert_ids_to_tokens(start)[0] == word["form"], word
    lowered = [w.lower() for w in words]
    untouched = [line for line in held_lines if not any(w in line.lower() for w in lowered)]
    assert untouched
    for line in untouched:
        assert after(line, add_special_tokens=False)["input_ids"] == before(line, add_special_tokens=False)["input_ids"]
    return report


def test_minilm_biomedical(minilm: Path, tmp_path: Path) -> None:
    """The real all-MiniLM-L6-v2 (uncased WordPiece, 994 [unusedN] slots): words come lowercased."""
    report = check_suggestion(minilm, "biomedical.txt", tmp_path)
    assert report["budget_kind"] == "free slots"
    assert report["budget"] == 994
    assert all(w["word"] == w["word"].lower() for w in report["words"])
    assert "thrombocytopenia" in [w["word"] for w in report["words"]]


def test_minilm_biomedical_filling_the_slots(minilm: Path, tmp_path: Path) -> None:
    report = check_suggestion(minilm, "biomedical.txt", tmp_path, "--max-pieces-per-word", "0", "--min-count", "2")
    assert report["stopped"] == "no more candidates"
    assert len(report["words"]) > 50


def test_real_llama3_reserved_slots(tmp_path: Path) -> None:
    """The real Llama 3 tokenizer (byte-level BPE) in a tiny checkpoint: words go into the reserved special-token
    slots in their running-text form."""
    src = build_real_checkpoint(tmp_path / "llama3", "llama3")
    report = check_suggestion(src, "biomedical.txt", tmp_path, "--max-pieces-per-word", "0")
    assert report["budget_kind"] == "free slots"
    assert all(w["form"] == "\u0120" + w["word"] for w in report["words"])


def build_klue_like(path: Path, lines: list[str]) -> Path:
    """A klue/bert-base-like checkpoint: a cased WordPiece vocabulary (no accent stripping, so Hangul stays whole),
    trained on the Korean text with few entries so that its medical words split, and ``[unusedN]`` slots at the
    end of the vocabulary."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer.train_from_iterator(lines, trainers.WordPieceTrainer(vocab_size=900, special_tokens=specials))
    vocab = [token for token, _ in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])]
    return build_bert(path, vocab=[*vocab, *(f"[unused{i}]" for i in range(200))], lowercase=False)


def test_klue_like_korean(tmp_path: Path) -> None:
    lines = (DATA / "korean_medical.txt").read_text(encoding="utf-8").splitlines()
    src = build_klue_like(tmp_path / "klue-like", lines)
    report = check_suggestion(src, "korean_medical.txt", tmp_path, "--min-count", "2")
    assert report["budget"] == 200
    words = [w["word"] for w in report["words"]]
    assert all(any("\uac00" <= c <= "\ud7a3" for c in word) for word in words), words  # Hangul syllables, whole
    assert {"당뇨병성", "항생제"} <= set(words)


def test_a_word_found_first_in_its_bare_form_counts_in_running_text(tmp_path: Path) -> None:
    """Llama 3 writes ``thrombocytopenia`` bare after "(": that form ranks first, but the surgery stores
    ``Ġthrombocytopenia``, and the word is priced by that form's own count."""
    src = build_real_checkpoint(tmp_path / "llama3", "llama3")
    text = tmp_path / "text.txt"
    lines = [f"The finding (thrombocytopenia) was noted in case {i}." for i in range(50)]
    lines += [f"We saw thrombocytopenia again in case {i}." for i in range(10)]
    text.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = json.loads(run("suggest", src, text, "--top", "10", "--max-pieces-per-word", "0", "--json").stdout)
    words = {w["word"]: w for w in report["words"]}
    assert words["thrombocytopenia"]["form"] == "\u0120thrombocytopenia"
    assert words["thrombocytopenia"]["count"] == 10
