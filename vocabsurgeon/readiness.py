"""``readiness``: how well a patched checkpoint already understands its new words, before any training.

Per new word, on held-out contexts: the source model reads the word as its pieces, the output reads it as its one
new id (each with its own tokenizer), and the two are compared where they must agree (the positions
:mod:`vocabsurgeon.distill` matches):

- **states**: the mean cosine of the last hidden states at the compared positions (an encoder: every position,
  the word's against the mean of its pieces'; a decoder: from the word on);
- **sentence**: the cosine of the pooled sentence embeddings (a sentence-transformers directory's own pooling,
  mean or CLS; mean pooling for any other encoder; none for a decoder).

Contexts come from ``corpus`` after the ones a distillation of the output fitted on (its manifest says how many),
and are filled from the held-out templates, which fitting never uses. The tool to compare initializations.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import CheckpointFormatError
from .inits import DistillSettings
from .inventory import Inventory

READINESS_CONTEXTS = 8


@dataclass(frozen=True)
class WordReadiness:
    word: str
    id: int
    contexts: int
    generated: int
    states: float | None
    sentence: float | None
    sentence_min: float | None


@dataclass(frozen=True)
class Readiness:
    output: str
    source: str
    pooling: str | None
    words: tuple[WordReadiness, ...]
    sentence_mean: float | None = None
    sentence_min: float | None = None
    states_mean: float | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["words"] = [asdict(w) for w in self.words]
        return document


def new_words(output: Inventory, source: Inventory) -> list[tuple[str, int]]:
    """``(word, id)`` of the non-special tokens the output's manifest has and the source's has not."""
    known = {t.get("id") for t in (source.manifest or {}).get("tokens", []) if isinstance(t, dict)}
    if output.manifest is None:
        raise CheckpointFormatError("has no vocabsurgeon.json: not an output of vocabsurgeon", path=output.root)
    return [
        (str(t["token"]), int(t["id"]))
        for t in output.manifest.get("tokens", [])
        if isinstance(t, dict) and t.get("id") not in known and t.get("kind") != "special"
        and t.get("form") != "sentence-initial"
    ]  # fmt: skip


def pooling_of(root: Path) -> str | None:
    """A sentence-transformers directory's pooling (``mean``, ``cls``), from its modules.json; None otherwise."""
    modules = root / "modules.json"
    if not modules.is_file():
        return None
    for module in json.loads(modules.read_text(encoding="utf-8")):
        if str(module.get("type", "")).endswith("Pooling"):
            config = root / module.get("path", "") / "config.json"
            if config.is_file():
                settings = json.loads(config.read_text(encoding="utf-8"))
                if settings.get("pooling_mode_cls_token"):
                    return "cls"
            return "mean"
    return None


def measure_readiness(
    output: Inventory,
    source: Inventory,
    corpus: tuple[str, ...] = (),
    field: str | None = None,
    contexts: int = READINESS_CONTEXTS,
    skip: int | None = None,
) -> Readiness:
    """The readiness of every new word of ``output`` (see the module docstring). ``skip``: each word's first
    corpus contexts left out; None: those a distillation of the output fitted on, when it read this corpus
    (compare initializations with the same ``skip``)."""
    import torch

    from .backend import load_backend
    from .distill import gather_contexts, load_model

    words = new_words(output, source)
    distilled = (output.manifest or {}).get("distill", {}).get("settings", {})
    same_corpus = bool(corpus) and [str(Path(c).absolute()) for c in corpus] == [
        str(Path(c).absolute()) for c in distilled.get("corpus", [])
    ]
    if skip is None:
        skip = int(distilled.get("contexts", 0)) if same_corpus else 0
    ignore_case = load_backend(source, model=False).normalize("Ab") == "ab"
    settings = DistillSettings(tuple(corpus), field, contexts)
    by_word = gather_contexts([w for w, _ in words], settings, ignore_case=ignore_case, skip=skip, held_out=True)
    teacher, teacher_tokenizer, causal = load_model(source.root)
    student, student_tokenizer, _ = load_model(output.root)
    pooling = pooling_of(output.root) or (None if causal else "mean")
    results = []
    all_sentences: list[float] = []
    all_states: list[float] = []
    with torch.no_grad():
        for word, token_id in words:
            states, sentences, generated = [], [], 0
            for context in by_word[word]:
                compared = _compare(
                    teacher, teacher_tokenizer, student, student_tokenizer, context, token_id, causal, pooling
                )
                if compared is None:
                    continue
                states.append(compared[0])
                if compared[1] is not None:
                    sentences.append(compared[1])
                generated += context.generated
            all_states += states
            all_sentences += sentences
            results.append(
                WordReadiness(
                    word, token_id, len(states), generated, _mean(states), _mean(sentences),
                    min(sentences) if sentences else None,
                )
            )  # fmt: skip
    return Readiness(
        output=str(output.root),
        source=str(source.root),
        pooling=pooling,
        words=tuple(results),
        sentence_mean=_mean(all_sentences),
        sentence_min=min(all_sentences) if all_sentences else None,
        states_mean=_mean(all_states),
        settings={"corpus": list(corpus), "field": field, "contexts": contexts, "skipped_fitted": skip},
    )


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 6) if values else None


def _compare(
    teacher: Any, teacher_tokenizer: Any, student: Any, student_tokenizer: Any, context: Any, token_id: int,
    causal: bool, pooling: str | None,
) -> tuple[float, float | None] | None:  # fmt: skip
    """(states cosine, sentence cosine) of one context; None where the output does not read the word as its one
    id there, or the source reads the rest differently."""
    import torch
    from torch.nn.functional import cosine_similarity

    from .distill import word_span

    encoded = teacher_tokenizer(context.text, return_offsets_mapping=True)
    ids, offsets = list(encoded["input_ids"]), list(encoded["offset_mapping"])
    student_ids = list(student_tokenizer(context.text)["input_ids"])
    spans = word_span(offsets, context.text, context.start, context.end)
    span = next((c for c in spans if student_ids == [*ids[: c[0]], token_id, *ids[c[-1] + 1 :]]), None)
    if span is None:
        return None
    s, k = span[0], len(span)
    taught = teacher(input_ids=torch.tensor([ids])).last_hidden_state[0].float()
    learned = student(input_ids=torch.tensor([student_ids])).last_hidden_state[0].float()
    # the word's own position: the mean of its pieces in an encoder, the last piece in a decoder (the first
    # position that has read the whole word)
    word = taught[s + k - 1 : s + k] if causal else taught[s : s + k].mean(dim=0, keepdim=True)
    target = torch.cat([taught[:s], word, taught[s + k :]])
    first = s if causal else 0
    states = float(cosine_similarity(learned[first:], target[first:], dim=-1).mean())
    if pooling is None:
        return states, None
    if pooling == "cls":
        pooled = float(cosine_similarity(learned[0], taught[0], dim=0))
    else:
        pooled = float(cosine_similarity(learned.mean(dim=0), taught.mean(dim=0), dim=0))
    return states, pooled
