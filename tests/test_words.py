"""New words behave as words on the real Llama 3 and Qwen3 tokenizer files (byte-level BPE): each word becomes the
vocabulary entry of its running-text form (``Ġword``), is one id mid-sentence with transformers 5, decodes exactly,
and text without the new words encodes exactly as before."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from real_tokenizers import build_real_checkpoint
from transformers import AutoTokenizer

from vocabsurgeon.cli import main

WORDS = ["hospitalization", "thrombocytopenia", "naïveté", "코로나바이러스"]
SENTENCE = "The patient's {} was noted."
PARAGRAPH = (
    "After the hospitalization the thrombocytopenia resolved. Her naïveté about 코로나바이러스 surprised us;"
    " a second hospitalization followed, and thrombocytopenia returned."
)
#: texts without the new words: ASCII, accents, CJK, Hangul, emoji, code, runs of whitespace
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Get the vaccine now",
    "hospital hospitals hospitalizations prehospitalization Hospitalization",  # longer forms and the initial one
    "thrombocytes and thrombocytopenias; naïve, naïvetés",
    "Ünïcödé àccents: café, résumé, façade, jalapeño, Zürich, São Paulo",
    "日本語のテキストと中文文本，还有标点。",  # noqa: RUF001 - a fullwidth comma on purpose
    "한국어 문장도 토큰화합니다. 코로나 바이러스와 독감.",
    "Emoji 👩‍⚕️💉🦠 and flags 🇰🇷🇺🇸",
    "def f(x):\n    return x ** 2  # comment\n\tif x: pass",
    "SELECT * FROM patients WHERE id = 42;",
    '{"key": [1, 2.5, null], "nested": {"a": true}}',
    "spaces    and\ttabs\t\tand\n\n\nnewlines   ",
    "   leading and trailing   ",
    "numbers 3.14159 1,000,000 2026-12-01 0x1F",
    "URLs https://example.org/a?b=c&d=e and mail a.b@example.com",
    "<|begin_of_text|> special-looking <|im_start|> text",
    "Mixed: Ελληνικά, русский, العربية, עברית, हिन्दी",
    "",
    "a",
    "\u00a0non-breaking\u200bzero-width",
] + [f"Sentence number {i} about patients, doctors and nurses in ward {i % 7}." for i in range(90)]


def run(*args: str | Path) -> Any:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module", params=["llama3", "qwen3"])
def surgery(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp(request.param)
    source = build_real_checkpoint(root / "source", request.param)
    out = root / "out"
    # Llama 3 has reserved special tokens (slots): remap; Qwen3 has padding rows past its tokenizer: remap too
    run("remap", source, "--out", out, *(a for w in [*WORDS, "vaccine"] for a in ("--token", w)))
    return source, out


def test_each_word_is_one_id_mid_sentence_and_decodes_exactly(surgery: tuple[Path, Path]) -> None:
    source, out = surgery
    before, after = AutoTokenizer.from_pretrained(source), AutoTokenizer.from_pretrained(out)
    for word in WORDS:
        text = SENTENCE.format(word)
        ids = after.encode(text, add_special_tokens=False)
        word_id = after.convert_tokens_to_ids(after.tokenize(f" {word}"))
        assert len(word_id) == 1, word
        assert word_id[0] in ids, word
        assert len(ids) < len(before.encode(text, add_special_tokens=False)), word
        assert after.decode(ids) == text, word
        # sentence-initial form: no Ġ (byte-level BPE adds no prefix space), so the pieces stay as before
        initial = f"{word} was noted."
        assert after.encode(initial, add_special_tokens=False) == before.encode(initial, add_special_tokens=False)


def test_a_paragraph_has_fewer_tokens(surgery: tuple[Path, Path]) -> None:
    source, out = surgery
    before, after = AutoTokenizer.from_pretrained(source), AutoTokenizer.from_pretrained(out)
    n_before = len(before.encode(PARAGRAPH, add_special_tokens=False))
    n_after = len(after.encode(PARAGRAPH, add_special_tokens=False))
    assert n_after < n_before
    assert after.decode(after.encode(PARAGRAPH, add_special_tokens=False)) == PARAGRAPH


def test_texts_without_the_words_encode_as_before_and_ids_are_kept(surgery: tuple[Path, Path]) -> None:
    source, out = surgery
    before, after = AutoTokenizer.from_pretrained(source), AutoTokenizer.from_pretrained(out)
    assert len(TEXTS) >= 100
    for text in TEXTS:
        assert after.encode(text, add_special_tokens=False) == before.encode(text, add_special_tokens=False), text
    old, new = before.get_vocab(), after.get_vocab()
    moved = {t: (i, new.get(t)) for t, i in old.items() if new.get(t) != i and "reserved_special_token" not in t}
    assert moved == {}
    import json

    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert len(after) <= config["vocab_size"]


def test_a_word_already_one_token_in_running_text_is_skipped(surgery: tuple[Path, Path]) -> None:
    _, out = surgery
    import json

    manifest = json.loads((out / "vocabsurgeon.json").read_text(encoding="utf-8"))
    assert [t["token"] for t in manifest["tokens"]] == WORDS
    assert {t["form"] for t in manifest["tokens"]} == {"running-text"}
    assert all(t["content"].startswith("\u0120") for t in manifest["tokens"])
    skipped = manifest["history"][-1]["skipped"]
    assert [s["token"] for s in skipped] == ["vaccine"]
    assert "'Ġvaccine' in running text" in skipped[0]["reason"]
