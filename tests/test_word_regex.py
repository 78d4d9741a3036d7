"""The word group that keeps new words whole in a Split pre-tokenizer step, run by the tokenizers library."""

from __future__ import annotations

import pytest
from tokenizers import Regex
from tokenizers.pre_tokenizers import Split

from vocabsurgeon.families.word_regex import split_group, with_words, word_group

#: words with regex metacharacters, a space and ▁, and one a prefix of another
WORDS = ["new york", "C++", "a|b", "(R)-warfarin", "\u2581new\u2581york", "COVID", "COVID-19", "x\\y", "1.5"]
SEPARATORS = r"\s"
#: Llama 3's Split regex
LLAMA3 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
    r"\s+(?!\S)|\s+"
)


def pieces(pattern: str, text: str) -> list[str]:
    return [piece for piece, _ in Split(Regex(pattern), "isolated").pre_tokenize_str(text)]


def test_a_group_round_trips_its_words() -> None:
    pattern = with_words(LLAMA3, WORDS, separators=SEPARATORS)
    words, rest = split_group(pattern)
    assert sorted(words) == sorted(WORDS)
    assert rest == LLAMA3
    assert split_group(word_group(WORDS, separators=SEPARATORS)) == (sorted(WORDS, key=lambda w: (-len(w), w)), None)
    assert split_group(LLAMA3) == ([], LLAMA3)


@pytest.mark.parametrize("word", WORDS)
def test_each_word_is_one_piece_where_it_ends_as_a_word(word: str) -> None:
    """A word ending in a letter or digit: before a space, punctuation, a line break or the end, not before a letter,
    digit or combining mark. A word ending in punctuation: before a space, a digit or the end, not before more
    punctuation, a letter or a line break (the byte-level regex would take them into the same run)."""
    pattern = with_words(LLAMA3, WORDS, separators=SEPARATORS)
    wordlike = word[-1].isalnum()
    matched = [word, f"{word} then", f"{word}1" if not wordlike else f"{word}.", f"{word}\n" if wordlike else word]
    unmatched = [f"{word}s", f"{word}\u0301"] + ([f"{word}9"] if wordlike else [f"{word}.", f"{word}\n", f"{word}+"])
    for text in matched:
        assert pieces(pattern, text)[0] == word, text
    for text in unmatched:
        assert pieces(pattern, text) == pieces(LLAMA3, text), text


def test_text_without_the_words_splits_as_before() -> None:
    pattern = with_words(LLAMA3, WORDS, separators=SEPARATORS)
    texts = [
        "The quick brown fox, doesn't it? 3.14159 and 1,000,000",
        "new yorker and COVIDs, C+ +, a | b, R-warfarin, x/y, 1.50",
        "한국어 문장도 토큰화합니다. 日本語 Ünïcödé\n\n\ttabs   spaces",
    ]
    for text in texts:
        assert pieces(pattern, text) == pieces(LLAMA3, text), text


def test_a_later_surgery_merges_into_the_group_longest_first() -> None:
    """``COVID`` added after ``COVID-19`` must not cut it short (a group of its own in front would)."""
    first = with_words(LLAMA3, ["COVID-19"], separators=SEPARATORS)
    second = with_words(first, ["COVID"], separators=SEPARATORS)
    assert split_group(second) == (["COVID-19", "COVID"], LLAMA3)
    assert pieces(second, "COVID-19 and COVID.") == ["COVID-19", " and", " COVID", "."]
    assert pieces(second, "COVID, then")[0] == "COVID"
    naive = f"{word_group(['COVID'], separators=SEPARATORS)}|{first}"  # what a second group in front would do
    assert pieces(naive, "COVID-19 and")[0] == "COVID"
