"""How a BPE tokenizer.json holds new words, by the shape of its pipeline: byte-level (``Ġword``: GPT-2, Llama 3,
Qwen) or SentencePiece (``▁word``: Llama 2, Mistral, Gemma). The BPE family asks :func:`word_store` once and
leaves the differences here.

Both store a word as the vocabulary entry of its running-text form, with ``ignore_merges`` on, and keep the word one
pre-token with a word group (see word_regex) where the pipeline would not:
- byte-level: a word the regex keeps whole needs nothing; a string it cuts apart (``COVID-19``, ``new york``) goes
  into a group in front of the regex of its Split step (a pipeline whose regex is inside ByteLevel, GPT-2's, has
  none: such a string stays an added token). The group ends a word only where the regex ends one too, so the rest
  of the text is cut as before;
- SentencePiece: the whole text is one pre-token, so every word goes into a group of a Split step after the others.
  The text after an isolated word becomes a pre-token of its own, which does not begin with ``▁``: the group does
  not isolate a word followed by an entry the merges do not produce whole (``<0x41>``), which ``ignore_merges``
  would otherwise turn into that entry.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Sequence
from typing import Any, Protocol

from .base import CONTEXT, METASPACE, TextPipeline, running_text_form
from .word_regex import split_group, with_words

SPACE = "\u0120"  # Ġ: the byte-level form of a space


class WordStore(Protocol):
    """What differs between the BPE pipelines in holding words."""

    def form(self, tokenizer_json: dict[str, Any], pipeline: TextPipeline, text: str) -> str | None:
        """The entry that holds ``text`` (see ``Family.word_form``)."""
        ...

    def changed_by_ignore_merges(self, unreachable: list[str], pipeline: TextPipeline) -> list[str]:
        """Which of the entries the merges do not produce whole some text without the words gives as a whole
        pre-token: turning ``ignore_merges`` on would change those texts."""
        ...

    def keep_whole(self, document: dict[str, Any], words: list[str], pipeline: TextPipeline) -> None:
        """Make each of ``words`` (entries) one pre-token wherever it stands as a word, in ``document``."""
        ...


def word_store(tokenizer_json: dict[str, Any]) -> WordStore:
    return ByteLevelWords() if _byte_level(tokenizer_json.get("pre_tokenizer")) else SentencePieceWords()


def unreachable_entries(tokenizer_json: dict[str, Any], pipeline: TextPipeline, words: Sequence[str] = ()) -> list[str]:
    """The entries of the source's BPE vocabulary that its merges do not produce whole, added tokens (split off
    before the model sees the text) and ``words`` (this surgery's) aside; computed once per pipeline."""
    cached = _UNREACHABLE.get(pipeline)  # type: ignore[arg-type]  # a Backend: weak-referenceable
    if cached is None:
        vocab = (tokenizer_json.get("model") or {}).get("vocab") or {}
        added = {t.get("content") for t in tokenizer_json.get("added_tokens", [])}
        cached = [entry for entry in vocab if entry not in added and pipeline.model_tokens(entry) != [entry]]
        _UNREACHABLE[pipeline] = cached  # type: ignore[index]
    skip = set(words)
    return [entry for entry in cached if entry not in skip]


_UNREACHABLE: weakref.WeakKeyDictionary[Any, list[str]] = weakref.WeakKeyDictionary()


class ByteLevelWords:
    def form(self, tokenizer_json: dict[str, Any], pipeline: TextPipeline, text: str) -> str | None:
        form = running_text_form(pipeline, text, SPACE)
        if form is not None or _split_step(tokenizer_json.get("pre_tokenizer")) is None:
            return form
        # a string the regex cuts apart: one pre-token once a group has it (single spaces inside, none around)
        normalized = pipeline.normalize(text)
        if not normalized or normalized != normalized.strip() or "  " in normalized:
            return None
        if any(c.isspace() and c != " " for c in normalized):
            return None
        if pipeline.normalize(f"{CONTEXT} {text}") != f"{pipeline.normalize(CONTEXT)} {normalized}":
            return None  # a normalizer that looks across words
        return _byte_level_form(f" {normalized}")

    def changed_by_ignore_merges(self, unreachable: list[str], pipeline: TextPipeline) -> list[str]:
        return unreachable  # the byte-level alphabet writes any text: every entry is some text's pre-token

    def keep_whole(self, document: dict[str, Any], words: list[str], pipeline: TextPipeline) -> None:
        step = _split_step(document.get("pre_tokenizer"))
        if step is None:
            return
        from tokenizers import Regex
        from tokenizers.pre_tokenizers import Split

        pattern = step["pattern"]["Regex"]
        current = Split(Regex(pattern), "isolated")
        texts = _byte_level_texts([w for w in words if w.startswith(SPACE)])
        apart = [t for t in texts if [p for p, _ in current.pre_tokenize_str(t)] != [t]]
        if apart:
            step["pattern"] = {**step["pattern"], "Regex": with_words(pattern, apart, separators=r"\s")}


class SentencePieceWords:
    def form(self, tokenizer_json: dict[str, Any], pipeline: TextPipeline, text: str) -> str | None:
        return running_text_form(pipeline, text, METASPACE)

    def changed_by_ignore_merges(self, unreachable: list[str], pipeline: TextPipeline) -> list[str]:
        return [entry for entry in unreachable if _is_pre_token(pipeline, entry)]

    def keep_whole(self, document: dict[str, Any], words: list[str], pipeline: TextPipeline) -> None:
        avoid = [e for e in unreachable_entries(document, pipeline, words) if not e.startswith(METASPACE)]
        pre_tokenizer = document.get("pre_tokenizer")
        step = _word_step(pre_tokenizer)
        if step is not None:
            pattern = with_words(step["pattern"]["Regex"], words, separators=rf"\s{METASPACE}", avoid=avoid)
            step["pattern"] = {**step["pattern"], "Regex": pattern}
            return
        pattern = with_words(None, words, separators=rf"\s{METASPACE}", avoid=avoid)
        new = {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False}
        if not isinstance(pre_tokenizer, dict):
            document["pre_tokenizer"] = new
        elif pre_tokenizer.get("type") == "Sequence":
            document["pre_tokenizer"] = {**pre_tokenizer, "pretokenizers": [*pre_tokenizer["pretokenizers"], new]}
        else:
            document["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [pre_tokenizer, new]}


def copy_pre_tokenizer(document: dict[str, Any]) -> None:
    """Give ``document`` its own pre-tokenizer to edit (a rendered document shares the source's)."""
    document["pre_tokenizer"] = copy.deepcopy(document.get("pre_tokenizer"))


def _byte_level(pre_tokenizer: Any) -> bool:
    """Whether a tokenizer.json pre-tokenizer is (or contains) ByteLevel."""
    if not isinstance(pre_tokenizer, dict):
        return False
    if pre_tokenizer.get("type") == "ByteLevel":
        return True
    return any(_byte_level(p) for p in pre_tokenizer.get("pretokenizers") or [])


def _split_step(pre_tokenizer: Any) -> dict[str, Any] | None:
    """The regex Split step of a byte-level pre-tokenizer (Llama 3's and Qwen's ``Sequence[Split, ByteLevel]``),
    where a word group can go; None for one whose regex is inside ByteLevel (GPT-2's ``use_regex``)."""
    if not isinstance(pre_tokenizer, dict) or pre_tokenizer.get("type") != "Sequence":
        return None
    steps = pre_tokenizer.get("pretokenizers") or []
    if any(step.get("type") == "ByteLevel" and step.get("use_regex", True) for step in steps):
        return None
    for step in steps:
        pattern = step.get("pattern")
        regex = isinstance(pattern, dict) and "Regex" in pattern
        if step.get("type") == "Split" and regex and step.get("behavior") == "Isolated" and not step.get("invert"):
            return step
    return None


def _word_step(pre_tokenizer: Any) -> dict[str, Any] | None:
    """The Split step an earlier surgery added to a SentencePiece pipeline (its pattern is a word group alone)."""
    steps = [pre_tokenizer] if isinstance(pre_tokenizer, dict) else []
    if steps and steps[0].get("type") == "Sequence":
        steps = steps[0].get("pretokenizers") or []
    for step in steps:
        pattern = (step.get("pattern") or {}).get("Regex") if step.get("type") == "Split" else None
        if isinstance(pattern, str):
            words, rest = split_group(pattern)
            if words and rest is None:
                return step
    return None


def _is_pre_token(pipeline: TextPipeline, entry: str) -> bool:
    """Whether some text gives ``entry`` as a whole pre-token: tried with the entry itself and with its ▁ as spaces
    (what a normalizer that turns spaces into ▁, and may prepend one, makes of it)."""
    spaced = entry.replace(METASPACE, " ")
    candidates = {entry, spaced, spaced[1:] if spaced.startswith(" ") else spaced}
    return any(entry in pipeline.pre_tokenize(pipeline.normalize(text)) for text in candidates if text)


def _byte_level_texts(forms: list[str]) -> list[str]:
    """The texts byte-level forms stand for (``ĠCOVID-19`` -> `` COVID-19``), by the library's own decoder."""
    from tokenizers.decoders import ByteLevel

    decoder = ByteLevel()
    return [decoder.decode([form]) for form in forms]


def _byte_level_form(text: str) -> str:
    from tokenizers.pre_tokenizers import ByteLevel

    return "".join(piece for piece, _ in ByteLevel(add_prefix_space=False, use_regex=False).pre_tokenize_str(text))
