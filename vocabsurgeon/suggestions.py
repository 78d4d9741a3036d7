"""``suggest``: the words of a domain corpus worth adding to a checkpoint, and what they save, measured.

How it decides, and where each answer comes from:

1. **Counting** (see :mod:`vocabsurgeon.word_counts`): the corpus's chunks, counted in bounded memory on two
   cores, run through the checkpoint's own normalizer and pre-tokenizer into *forms*, the pre-tokens the model
   sees (``Ġhospitalization``, ``▁patient``, ``covid`` for an uncased BERT).
2. **Cost and saving.** A form's pieces are what the source model makes of it; a form already one piece is no
   candidate. Its saving is ``count x (pieces - 1)``. Which word a form is, whether the surgery would store the
   word in that very form, and how many ids the word takes, is asked of the planner (a plan of the best
   candidates), never worked out a second time here.
3. **Selection.** By tokens saved per id spent, up to the free slots or ``top`` words, stopping early once the
   words the source splits average ``max_pieces_per_word`` pieces or fewer.
4. **Projection.** A fixed sample of the corpus (all of it, up to ``sample_chars``) is encoded with the source
   tokenizer and with the tokenizer the planned surgery would write, built in memory from the same plan: the
   numbers reported are measured, not estimated.
"""

from __future__ import annotations

import contextlib
import itertools
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .backend import Backend, load_backend
from .errors import NotEnoughSlotsError, VocabSurgeonError
from .free_slots import find_slots
from .inventory import Inventory, require_tokenizer
from .planner import Options, TokenRequest, place_tokens, plan_tokens
from .tokenizer_edit import matched_inside_words
from .word_counts import SAMPLE_CHARS, CorpusCounter, Counted, Pipeline

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from .plan import Placement, Plan

#: documents encoded at once when measuring (the encodings of a whole sample would hold a lot of memory)
MEASURE_BATCH = 2_000
DEFAULT_MIN_COUNT = 3
DEFAULT_MIN_LENGTH = 3
DEFAULT_MAX_PIECES = 3.0
UNKNOWN_SHOWN = 20


@dataclass(frozen=True)
class Candidate:
    """A word worth adding: ``form`` is the entry the surgery adds for it, ``count`` its occurrences in that form,
    ``pieces`` what the source makes of it now, ``cost`` the ids the surgery spends on it (its plan's answer),
    ``saved`` the tokens it saves on the corpus (``initial_*``: its sentence-initial form, with
    ``sentence_initial``)."""

    word: str
    form: str
    count: int
    pieces: int
    cost: int
    saved: int
    initial_form: str | None = None
    initial_count: int = 0
    initial_pieces: int = 0


@dataclass(frozen=True)
class Measure:
    """Tokens and words of the sample, encoded by one tokenizer."""

    tokens: int
    words: int
    split_words: int  # words (pre-tokens) the source splits into more than one piece
    split_word_pieces: int  # the pieces of those words, with this tokenizer

    @property
    def pieces_per_word(self) -> float:
        return self.tokens / self.words if self.words else 0.0

    @property
    def pieces_per_split_word(self) -> float:
        return self.split_word_pieces / self.split_words if self.split_words else 0.0


@dataclass(frozen=True)
class Projection:
    """The sample (the whole corpus, or ``documents`` of ``corpus_documents``), before and after the surgery."""

    documents: int
    characters: int
    corpus_documents: int
    corpus_characters: int
    before: Measure
    after: Measure

    @property
    def whole_corpus(self) -> bool:
        return self.documents == self.corpus_documents

    @property
    def saved_percent(self) -> float:
        if not self.before.tokens:
            return 0.0
        return 100.0 * (self.before.tokens - self.after.tokens) / self.before.tokens


@dataclass(frozen=True)
class UnknownWords:
    """Words the model reads as its unknown token (``[UNK]``): one piece, so no saving and never chosen, but
    what the model cannot see at all; ``top`` is ``(word, count)``, most frequent first."""

    words: int
    occurrences: int
    top: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class Suggestion:
    """What suggest found: the words chosen (best first), why it stopped, and the measured projection."""

    model: str
    corpus: tuple[str, ...]
    operation: str  # the surgery the words are planned for: remap (free slots) or auto (top N)
    budget: int
    budget_kind: str  # "free slots" or "top"
    words: tuple[Candidate, ...]
    stopped: str
    projection: Projection | None
    candidates: int  # forms the source splits, seen at least min_count times (before the word filters)
    excluded: dict[str, int] = field(default_factory=dict)  # occurrences left out, by reason
    settings: dict[str, Any] = field(default_factory=dict)
    count_error: int = 0
    held_out: Projection | None = None
    unknown: UnknownWords | None = None

    def to_json(self) -> dict[str, Any]:
        projection = _projection_json(self.projection)
        return {
            "model": self.model,
            "corpus": list(self.corpus),
            "operation": self.operation,
            "budget": self.budget,
            "budget_kind": self.budget_kind,
            "stopped": self.stopped,
            "candidates": self.candidates,
            "excluded": dict(self.excluded),
            "counts_low_by_at_most": self.count_error,
            "unknown": asdict(self.unknown) if self.unknown is not None else None,
            "settings": dict(self.settings),
            "projection": projection,
            "held_out": _projection_json(self.held_out),
            "words": [asdict(word) for word in self.words],
        }

    def tokens_file(self, command: str) -> str:
        """The words as a tokens file for remap, append and batch, with a header saying how it was made."""
        lines = [f"# {command}", f"# {len(self.words)} words for {self.model} ({self.budget_kind}: {self.budget})"]
        if self.projection is not None:
            p = self.projection
            where = (
                "the whole corpus"
                if p.whole_corpus
                else f"a sample of {p.documents:,} of {p.corpus_documents:,} documents"
            )
            lines.append(
                f"# projected on {where}: {p.before.tokens:,} -> {p.after.tokens:,} tokens"
                f" ({p.saved_percent:.2f}% saved)"
            )
        lines += [word.word for word in self.words]
        return "\n".join(lines) + "\n"


def _projection_json(p: Projection | None) -> dict[str, Any] | None:
    if p is None:
        return None
    return {
        "documents": p.documents,
        "characters": p.characters,
        "corpus_documents": p.corpus_documents,
        "corpus_characters": p.corpus_characters,
        "whole_corpus": p.whole_corpus,
        "tokens_before": p.before.tokens,
        "tokens_after": p.after.tokens,
        "saved_percent": round(p.saved_percent, 4),
        "words": p.before.words,
        "pieces_per_word_before": round(p.before.pieces_per_word, 4),
        "pieces_per_word_after": round(p.after.pieces_per_word, 4),
        "split_words": p.before.split_words,
        "pieces_per_split_word_before": round(p.before.pieces_per_split_word, 4),
        "pieces_per_split_word_after": round(p.after.pieces_per_split_word, 4),
    }


@dataclass(frozen=True)
class Filters:
    min_count: int = DEFAULT_MIN_COUNT
    min_length: int = DEFAULT_MIN_LENGTH
    keep_numbers: bool = False
    exclude: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Ranked:
    """The forms the source splits, ``(form, count, pieces)`` best saving first, with the occurrences of split
    forms and their pieces over the whole count (for the stop rule), and the forms the model reads as its unknown
    token (``[UNK]``: one piece, so no saving; worth knowing)."""

    forms: list[tuple[str, int, int]]
    split_occurrences: int
    split_pieces: int
    unknown: Counter[str]


def rank_forms(forms: Counter[str], backend: Backend, filters: Filters) -> Ranked:
    """Every form the source splits, seen at least ``min_count`` times, best saving first (see :class:`Ranked`)."""
    model_tokens = backend.model_tokens
    unk = getattr(backend.tokenizer.model, "unk_token", None)
    ranked = []
    unknown: Counter[str] = Counter()
    split_occurrences = split_pieces = 0
    for form, count in forms.items():
        tokens = model_tokens(form)
        pieces = len(tokens)
        if pieces <= 1:
            if unk and tokens == [unk] and form != unk and count >= filters.min_count:
                unknown[form] = count
            continue
        split_occurrences += count
        split_pieces += count * pieces
        if count >= filters.min_count:
            ranked.append((form, count, pieces))
    ranked.sort(key=lambda item: (-item[1] * (item[2] - 1), -item[1], item[0]))
    return Ranked(ranked, split_occurrences, split_pieces, unknown)


def word_of(backend: Backend, form: str) -> str:
    """The word a form spells, as a user writes it (what a tokens file holds): the decoder's text of it."""
    decoder = backend.tokenizer.decoder
    text = decoder.decode([form]) if decoder is not None else form
    prefix = backend.continuing_prefix
    if prefix and text.startswith(prefix):
        return ""
    return text.strip()


def acceptable(word: str, filters: Filters) -> str | None:
    """Why ``word`` is left out (a filter's name), or None."""
    if not word or any(c.isspace() for c in word) or word.startswith("#") or not word.isprintable():
        return "unusable"
    if len(word) < filters.min_length:
        return "short"
    if not filters.keep_numbers and not any(c.isalpha() for c in word):
        return "numbers"
    if word in filters.exclude:
        return "excluded"
    return None


def measure(
    tokenizer: Tokenizer, documents: Sequence[str], split_words: int | None = None, words: int | None = None
) -> Measure:
    """Encode ``documents`` (no special tokens). For the source (``split_words`` None): its words (pre-tokens) and
    the ones it splits. For a surgery's tokenizer: the pieces of the source's split words, given that a word the
    source did not split stays one piece (what every surgery's check makes sure of)."""
    tokens = total_words = split = split_pieces = 0
    for start in range(0, len(documents), MEASURE_BATCH):
        encodings = tokenizer.encode_batch(list(documents[start : start + MEASURE_BATCH]), add_special_tokens=False)
        for encoding in encodings:
            tokens += len(encoding.ids)
            if split_words is not None:
                continue
            per_word = Counter(encoding.word_ids)
            total_words += len(per_word)
            for pieces in per_word.values():
                if pieces > 1:
                    split += 1
                    split_pieces += pieces
    if split_words is not None and words is not None:
        return Measure(tokens, words, split_words, tokens - (words - split_words))
    return Measure(tokens, total_words, split, split_pieces)


def planned_tokenizer(inventory: Inventory, plan: Plan) -> Tokenizer:
    """The tokenizer the surgery of ``plan`` writes, from the plan's own files (in memory when it writes a
    tokenizer.json)."""
    from tokenizers import Tokenizer

    rendered = plan.rendered.get("tokenizer.json")
    if rendered is not None:
        tokenizer = Tokenizer.from_str(rendered.decode("utf-8"))
    else:  # no tokenizer.json written: the tokenizer loaded from the plan's files
        tokenizer = _slow_planned_tokenizer(inventory, plan)
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def _slow_planned_tokenizer(inventory: Inventory, plan: Plan) -> Tokenizer:
    """Without tokenizer.json: the family's rebuild of its slow tokenizer from the plan's vocabulary files, read
    from a private temporary directory (the output is not touched)."""
    import shutil
    import tempfile
    from pathlib import Path

    from .inventory import read_inventory

    with tempfile.TemporaryDirectory(prefix="vocabsurgeon-suggest-") as temporary:
        root = Path(temporary)
        for relative in sorted(set(inventory.files) | set(plan.rendered)):  # files the plan adds too
            if relative.endswith((".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".onnx")):
                continue
            destination = root / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            if relative in plan.rendered:
                destination.write_bytes(plan.rendered[relative])
            else:
                shutil.copyfile(inventory.path(relative), destination)
        output = read_inventory(root, weights=False)
        return load_backend(output).tokenizer


def suggest_words(
    inventory: Inventory,
    counted: Counted,
    *,
    top: int | None = None,
    filters: Filters = Filters(),
    max_pieces_per_word: float | None = DEFAULT_MAX_PIECES,
    sentence_initial: bool = False,
    corpus: Sequence[str] = (),
    settings: dict[str, Any] | None = None,
    held_out: Counted | None = None,
) -> Suggestion:
    """Choose the words from the counts and measure them on the sample: the whole decision, nothing written."""
    counts = counted.forms
    require_tokenizer(inventory)
    backend = load_backend(inventory)
    if top is None:
        budget, budget_kind, operation = len(find_slots(inventory).slots), "free slots", "remap"
        if budget == 0:
            raise NotEnoughSlotsError(
                "has no free slots", path=inventory.root, hint="pass --top N to choose N words to append"
            )
    else:
        budget, budget_kind, operation = top, "top", "auto"
    if filters.exclude:  # as the words are found: normalized as the checkpoint does
        filters = replace(filters, exclude=filters.exclude | {backend.normalize(w).strip() for w in filters.exclude})
    ranked = rank_forms(counts.forms, backend, filters)
    excluded: Counter[str] = Counter()
    if counts.excluded_urls:
        excluded["urls"] = counts.excluded_urls
    options = Options(sentence_initial=sentence_initial)
    chosen, stopped = _choose(
        inventory, backend, ranked, counts.forms, budget, filters, options, max_pieces_per_word, excluded,
    )  # fmt: skip
    plan = None
    if chosen:
        plan = plan_tokens(inventory, [TokenRequest(c.word) for c in chosen], operation, options)  # type: ignore[arg-type]
    planned = planned_tokenizer(inventory, plan) if plan is not None else None
    projection = _project(backend, planned, counted)
    held_out_projection = _project(backend, planned, held_out) if held_out is not None else None
    suggestion = Suggestion(
        model=str(inventory.source),
        corpus=tuple(corpus),
        operation=operation,
        budget=budget,
        budget_kind=budget_kind,
        words=tuple(chosen),
        stopped=stopped,
        projection=projection,
        candidates=len(ranked.forms),
        unknown=_unknown_words(backend, ranked.unknown),
        excluded=dict(sorted(excluded.items())),
        settings=dict(settings or {}),
        count_error=counts.count_error,
        held_out=held_out_projection,
    )
    return suggestion


def _unknown_words(backend: Backend, unknown: Counter[str]) -> UnknownWords | None:
    if not unknown:
        return None
    top = tuple((word_of(backend, form), count) for form, count in unknown.most_common(UNKNOWN_SHOWN))
    return UnknownWords(len(unknown), sum(unknown.values()), top)


def _project(backend: Backend, planned: Tokenizer | None, counted: Counted) -> Projection | None:
    documents = counted.sample.documents()
    if not documents:
        return None
    before = measure(backend.tokenizer, documents)
    after = measure(planned, documents, before.split_words, before.words) if planned is not None else before
    return Projection(len(documents), sum(map(len, documents)), counted.documents, counted.characters, before, after)


def _choose(
    inventory: Inventory,
    backend: Backend,
    ranked: Ranked,
    forms: Counter[str],
    budget: int,
    filters: Filters,
    options: Options,
    max_pieces_per_word: float | None,
    excluded: Counter[str],
) -> tuple[list[Candidate], str]:
    """The best words within ``budget`` ids, and why the choice stopped. The planner says which form each word
    takes and what it costs."""
    chosen: list[Candidate] = []
    spent = 0
    occurrences, pieces_left = ranked.split_occurrences, ranked.split_pieces

    def target_reached() -> str | None:
        average = pieces_left / occurrences if occurrences else 1.0
        if max_pieces_per_word is None or average > max_pieces_per_word:
            return None
        return f"split words average {average:.2f} pieces (--max-pieces-per-word {max_pieces_per_word:g})"

    words = _words_in_order(backend, ranked.forms, filters, excluded)
    while batch := list(itertools.islice(words, max(16, 2 * (budget - spent)))):
        for candidate in _priced(inventory, backend, batch, forms, options, filters.min_count, excluded):
            if reason := target_reached():
                return chosen, reason
            if spent + candidate.cost > budget:
                continue
            chosen.append(candidate)
            spent += candidate.cost
            pieces_left -= candidate.count * (candidate.pieces - 1)
            pieces_left -= candidate.initial_count * max(0, candidate.initial_pieces - 1)
            if spent >= budget:
                return chosen, f"all {budget} ids are taken"
    return chosen, "no more candidates"


def _words_in_order(
    backend: Backend, ranked: list[tuple[str, int, int]], filters: Filters, excluded: Counter[str]
) -> Iterator[tuple[str, str, int, int]]:
    """``(word, form, count, pieces)`` of the ranked forms whose word passes the filters, each word once (at its
    best-ranked form, which need not be the one the surgery stores: see :func:`_priced`). ``excluded``: the
    occurrences left out, by filter."""
    seen: set[str] = set()
    for form, count, pieces in ranked:
        word = word_of(backend, form)
        reason = acceptable(word, filters)
        if reason is not None:
            excluded[reason] += count
        elif word not in seen:
            seen.add(word)
            yield word, form, count, pieces


def _placements(inventory: Inventory, words: list[str], options: Options) -> list[Any]:
    """The placements a surgery of ``words`` makes; a word the planner refuses is left out (one by one only when
    the whole list is refused)."""
    try:
        return list(place_tokens(inventory, [TokenRequest(w) for w in words], "auto", options).placements)
    except VocabSurgeonError:
        if len(words) == 1:
            return []
    return [p for word in words for p in _placements(inventory, [word], options)]


class _Background:
    """``function()`` run in a thread (its result is cached where it goes, e.g. load_backend's cache); ``wait``
    joins it, and re-raises nothing: the caller asks again and gets the error then, in its own place."""

    def __init__(self, function: Callable[[], object]) -> None:
        import threading

        def run() -> None:
            with contextlib.suppress(Exception):  # asked again, and reported, by the caller
                function()

        self.thread = threading.Thread(target=run, name="vocabsurgeon-prepare", daemon=True)
        self.thread.start()

    def wait(self) -> None:
        self.thread.join()


def _priced(
    inventory: Inventory,
    backend: Backend,
    batch: list[tuple[str, str, int, int]],
    forms: Counter[str],
    options: Options,
    min_count: int,
    excluded: Counter[str],
) -> list[Candidate]:
    """The words of ``batch`` with their cost (ids) and saving, from a plan of all of them, best saving per id
    first. A word is counted in the form the surgery stores it in (``Ġword`` also when it was found first as the
    bare ``word`` after a parenthesis), not in the form it was ranked by. A word the output would also match
    inside longer words (an added token without ``single_word``: slow-only checkpoints) is left out: it would
    change the pieces of other words."""
    placed: dict[str, list[Placement]] = defaultdict(list)
    for placement in _placements(inventory, [word for word, *_ in batch], options):
        placed[placement.token].append(placement)
    priced = []
    for word, _, ranked_count, _ in batch:
        placements = placed.get(word, [])
        if not placements:
            continue  # already a token
        if any(matched_inside_words(inventory, p) for p in placements):
            excluded["inside-longer-words"] += ranked_count
            continue
        contents = [p.content for p in placements]
        form = contents[0]
        count, pieces = forms.get(form, 0), len(backend.model_tokens(form))
        if count < min_count or pieces <= 1:
            continue
        initial = contents[1] if len(contents) > 1 else None
        initial_count = forms.get(initial, 0) if initial else 0
        initial_pieces = len(backend.model_tokens(initial)) if initial else 0
        saved = count * (pieces - 1) + initial_count * max(0, initial_pieces - 1)
        priced.append(
            Candidate(word, form, count, pieces, len(contents), saved, initial, initial_count, initial_pieces)
        )
    priced.sort(key=lambda c: (-c.saved / c.cost, -c.count, c.word))
    return priced


def suggest(
    model: Inventory | str,
    corpus: Sequence[str],
    *,
    field: str | None = None,
    top: int | None = None,
    filters: Filters = Filters(),
    max_pieces_per_word: float | None = DEFAULT_MAX_PIECES,
    keep_urls: bool = False,
    sentence_initial: bool = False,
    sample_chars: int = SAMPLE_CHARS,
    held_out: Sequence[str] = (),
    progress: Callable[[int, CorpusCounter], None] | None = None,
) -> Suggestion:
    """Read ``corpus`` (see :mod:`vocabsurgeon.corpus`) and choose the words of it worth adding to ``model``: up
    to its free slots, or ``top`` words; see the module docstring for how."""
    from .corpus import find_corpus, read_blocks
    from .inventory import read_inventory

    inventory = model if isinstance(model, Inventory) else read_inventory(model)
    require_tokenizer(inventory)
    if isinstance(corpus, str):
        corpus = [corpus]
    files = find_corpus(corpus, field)
    held_out_files = find_corpus(held_out, field) if held_out else []  # checked before the long read
    pipeline = Pipeline.of(inventory.tokenizer_json, lambda: load_backend(inventory).tokenizer)
    sizes = [f.size for f in files]
    expected = sum(size for size in sizes if size is not None) if None not in sizes else None
    counter = CorpusCounter(
        pipeline, keep_urls=keep_urls, sample_chars=sample_chars, expected=expected, track_chunks=progress is not None
    )
    report = (lambda count: progress(count, counter)) if progress is not None else None
    # the tokenizer, loaded meanwhile (into load_backend's cache): this process mostly waits for the workers
    ready = _Background(lambda: load_backend(inventory))
    try:
        for block in read_blocks(files, field, report):
            counter.add(block)
        counted = counter.finish()
    finally:
        counter.close()
        ready.wait()
    held_out_counted = None
    if held_out:
        sampler = CorpusCounter(None, sample_chars=sample_chars)
        for block in read_blocks(held_out_files, field):
            sampler.add(block)
        held_out_counted = sampler.finish()
    settings = {
        "top": top,
        "min_count": filters.min_count,
        "min_length": filters.min_length,
        "max_pieces_per_word": max_pieces_per_word,
        "keep_numbers": filters.keep_numbers,
        "keep_urls": keep_urls,
        "excluded_words": len(filters.exclude),
        "sentence_initial": sentence_initial,
        "sample_chars": sample_chars,
        "field": field,
    }
    suggestion = suggest_words(
        inventory, counted, top=top, filters=filters, max_pieces_per_word=max_pieces_per_word,
        sentence_initial=sentence_initial, corpus=[f.name for f in files], settings=settings,
        held_out=held_out_counted,
    )  # fmt: skip
    return suggestion
