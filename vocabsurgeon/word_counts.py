"""Counting the words of a corpus as the checkpoint's own pipeline makes them, fast and in bounded memory (the first
steps of ``suggest``; see :mod:`vocabsurgeon.suggestions`).

1. **Chunks.** A block of documents is cut at its spaces with whole-block string operations, and the chunks are
   counted (``Counter``, in C): a line's first chunk apart, since it stands at a text's start. Past
   ``MAX_DISTINCT`` distinct chunks the rarest are dropped (lossy counting), and the counts say by how much at
   most they may be low.
2. **Forms.** The distinct chunks go through the normalizer and pre-tokenizer of the ``tokenizers`` library, in
   running text (after a word and a space, thousands of chunks of the same count joined into one call) or at a
   text's start. A pre-token is a form: what the model sees (``Ġhospitalization``, ``covid``). Where the pipeline
   writes SentencePiece's ``▁`` (and a pre-token can hold punctuation, or the whole text), a form is a run of
   letters, marks and digits behind its ``▁``.
3. **Two cores.** Past ``PARALLEL_ABOVE`` characters the blocks go to worker processes that count on their own;
   at the end each forms one share of the distinct chunks (every process's counts of it merged) and hands back
   its form counts. This module imports nothing heavy, so they start in a moment.
"""

from __future__ import annotations

import heapq
import json
import re
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from .checks import CONTEXT, METASPACE, after_context
from .errors import WorkerDiedError

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from tokenizers import Tokenizer


#: distinct chunks kept while counting before the rarest are dropped (about 150 MB of strings and counts)
MAX_DISTINCT = 2_000_000
#: characters of chunks joined into one call of the pre-tokenizer
JOIN_CHARS = 1 << 20
#: characters read in this process alone before worker processes take over the counting
PARALLEL_ABOVE = 4_000_000
WORKERS = 2

_FIRST_CHUNK = re.compile(r"^[^ \n]*", re.MULTILINE)
_URL = re.compile(r"^\W*(?:[a-z][a-z0-9+.-]*://|www\.)\S", re.IGNORECASE)
_EMAIL = re.compile(r"^\W*[^@\s]+@[^@\s]+\.[^@\s]+$")
#: a word inside a SentencePiece pre-token: the marker, then letters, marks and digits (Oniguruma syntax)
_SENTENCEPIECE_WORD = rf"{METASPACE}?[\p{{L}}\p{{M}}\p{{N}}]+"
_WORD_CHARACTER = re.compile(r"\w")


def pipeline_document(tokenizer_json: dict[str, Any]) -> dict[str, Any]:
    """A tokenizer.json with the normalizer and pre-tokenizer of ``tokenizer_json`` around an empty model: it
    normalizes and pre-tokenizes in about a millisecond, where loading a 128k-token BPE takes most of a second."""
    document = {key: tokenizer_json.get(key) for key in ("normalizer", "pre_tokenizer")}
    document.update(version=tokenizer_json.get("version", "1.0"), truncation=None, padding=None, added_tokens=[])
    document.update(post_processor=None, decoder=None, model={"type": "WordLevel", "vocab": {}, "unk_token": "[UNK]"})
    return document


class PipelineSteps:
    """Normalizing and pre-tokenizing with ``self.tokenizer`` (a ``tokenizers.Tokenizer``), as the checkpoint
    does: shared by :class:`Pipeline` and :class:`vocabsurgeon.backend.Backend`."""

    tokenizer: Tokenizer

    def normalize(self, text: str) -> str:
        normalizer = self.tokenizer.normalizer
        return normalizer.normalize_str(text) if normalizer is not None else text

    def pre_tokenize(self, normalized: str) -> list[str]:
        pre = self.tokenizer.pre_tokenizer
        return [piece for piece, _ in pre.pre_tokenize_str(normalized)] if pre is not None else [normalized]


class Pipeline(PipelineSteps):
    """A checkpoint's normalizer and pre-tokenizer (a ``tokenizers.Tokenizer`` around an empty model), from a
    JSON document small enough to hand to a worker process."""

    def __init__(self, document: str) -> None:
        from tokenizers import Tokenizer

        self.document = document
        self.tokenizer = Tokenizer.from_str(document)
        self.sentencepiece = self.normalize(" x").startswith(METASPACE) or any(
            METASPACE in piece for piece in self.pre_tokenize(self.normalize(f"{CONTEXT} x"))
        )

    @classmethod
    def of(cls, tokenizer_json: dict[str, Any] | None, rebuilt: Callable[[], Tokenizer]) -> Pipeline:
        """The pipeline of a checkpoint: from its tokenizer.json (parsed already: nothing else is loaded), else
        from the tokenizer its family rebuilds (``rebuilt()``)."""
        full = tokenizer_json if tokenizer_json is not None else json.loads(rebuilt().to_str())
        return cls(json.dumps(pipeline_document(full)))


class ChunkCounter:
    """The space-separated chunks of documents: every occurrence (``chunks``), and the occurrences as a line's
    first chunk, at a text's start (``initial``). Running text is the difference, taken once when forming:
    taking it block by block costs as much as the counting."""

    def __init__(self, max_distinct: int = MAX_DISTINCT) -> None:
        self.chunks: Counter[str] = Counter()
        self.initial: Counter[str] = Counter()
        self.max_distinct = max_distinct
        #: when memory ran short, the rarest chunks were dropped: any count may be low by up to this much (the sum of
        #: the thresholds of every drop, since a chunk can come back and be dropped again)
        self.count_error = 0

    def add(self, text: str) -> None:
        """Count a block: documents joined by newlines."""
        self.chunks.update(text.replace("\n", " ").split(" "))
        self.initial.update([line.split(" ", 1)[0] for line in text.split("\n")])
        if len(self.chunks) > self.max_distinct:
            self._drop_rarest()

    def running(self) -> Counter[str]:
        """The occurrences in running text (not a line's first chunk)."""
        running = self.chunks.copy()
        running.subtract(self.initial)
        return running

    def _drop_rarest(self) -> None:
        """Lossy counting: drop the chunks seen at most ``threshold`` times, the threshold rising until half the
        room is free again. A line-initial count dropped takes its occurrences out of ``chunks`` too, so that the
        running-text count stays low, never high."""
        threshold = 0
        chunks, initial = self.chunks, self.initial
        while len(chunks) > self.max_distinct // 2:
            threshold += 1
            for chunk in [c for c, n in initial.items() if n <= threshold]:
                left = chunks[chunk] - initial.pop(chunk)
                if left > 0:
                    chunks[chunk] = left
                else:
                    del chunks[chunk]
            for chunk in [c for c, n in chunks.items() if n <= threshold]:
                del chunks[chunk]
                initial.pop(chunk, None)
        self.count_error += threshold

    def partition(self, parts: int) -> list[ChunkCounter]:
        """The chunks in ``parts`` disjoint shares, each chunk in the same share in every process (by a checksum,
        not ``hash``, which differs from process to process). A share carries no count error: its counter
        reports it once."""
        shares = [ChunkCounter(self.max_distinct) for _ in range(parts)]
        for name in ("chunks", "initial"):
            tables = [getattr(share, name) for share in shares]
            for chunk, count in getattr(self, name).items():
                tables[zlib.crc32(chunk.encode("utf-8", "surrogatepass")) % parts][chunk] = count
        return shares

    def merge(self, other: ChunkCounter) -> None:
        self.chunks.update(other.chunks)
        self.initial.update(other.initial)
        self.count_error += other.count_error

    def forms(self, pipeline: Pipeline, *, keep_urls: bool = False) -> FormCounts:
        """The counted chunks as forms (see the module docstring)."""
        forms: Counter[str] = Counter()
        excluded = 0
        words_in = _word_splitter(pipeline)
        context = pipeline.pre_tokenize(pipeline.normalize(CONTEXT))
        for table, initial in ((self.running(), False), (self.initial, True)):
            by_count: dict[int, list[str]] = defaultdict(list)
            for chunk, count in table.items():
                if count <= 0 or not chunk.strip():
                    continue
                if not keep_urls and (_URL.match(chunk) or _EMAIL.match(chunk)):
                    excluded += count
                    continue
                by_count[count].append(chunk)
            for count, chunks in by_count.items():
                for pre_tokens in _pre_tokenize(pipeline, chunks, initial, context):
                    for form in words_in(pre_tokens):
                        forms[form] += count
        return FormCounts(forms, excluded, self.count_error)


@dataclass
class FormCounts:
    """Occurrences of each form, the occurrences of chunks left out as URLs or e-mail addresses, and how low a
    count may be."""

    forms: Counter[str]
    excluded_urls: int = 0
    count_error: int = 0

    def merge(self, other: FormCounts) -> None:
        self.forms.update(other.forms)
        self.excluded_urls += other.excluded_urls
        self.count_error += other.count_error  # a word's counts from each part may each be low


def _pre_tokenize(pipeline: Pipeline, chunks: list[str], initial: bool, context: list[str]) -> Iterable[list[str]]:
    """The pre-tokens of ``chunks``: in running text many at once (joined by spaces after the context word); at a
    text's start one at a time, since only one chunk can stand there."""
    if initial:
        for chunk in chunks:
            yield pipeline.pre_tokenize(pipeline.normalize(chunk))
        return
    start = 0
    while start < len(chunks):
        end, size = start, 0
        while end < len(chunks) and size < JOIN_CHARS:
            size += len(chunks[end]) + 1
            end += 1
        pieces = pipeline.pre_tokenize(pipeline.normalize(f"{CONTEXT} " + " ".join(chunks[start:end])))
        rest = after_context(context, pieces)
        yield rest if rest is not None else pieces  # a normalizer joined them: the context word is counted too
        start = end


def _word_splitter(pipeline: Pipeline) -> Callable[[list[str]], Iterable[str]]:
    """Forms from pre-tokens: the pre-tokens themselves, or in a SentencePiece pipeline the words inside them."""
    if not pipeline.sentencepiece:
        return lambda pre_tokens: (p for p in pre_tokens if p.strip())
    from tokenizers import Regex
    from tokenizers.pre_tokenizers import Split

    split = Split(Regex(_SENTENCEPIECE_WORD), behavior="isolated")

    def words(pre_tokens: list[str]) -> Iterable[str]:
        for pre_token in pre_tokens:
            for piece, _ in split.pre_tokenize_str(pre_token):
                if _WORD_CHARACTER.search(piece) or (piece.startswith(METASPACE) and len(piece) > 1):
                    yield piece

    return words


_PRIORITIES = 1 << 64
#: characters of the corpus encoded for the projection (the whole corpus when it is smaller)
SAMPLE_CHARS = 1_000_000


class Sample:
    """A fixed sample of the documents, at most ``budget`` characters: those whose position (line number) hashes
    lowest, so that the same corpus gives the same sample, spread over all of it, whichever process saw which
    part. What a Sample keeps is the longest run of the lowest priorities that fits, so the samples of the parts
    of a corpus merge into the sample of the whole (:meth:`merge`)."""

    def __init__(self, budget: int = SAMPLE_CHARS) -> None:
        self.budget = budget
        self.heap: list[tuple[int, int, str]] = []  # (-priority, position, document): the highest on top
        self.size = 0
        #: the lowest priority left out for want of room: everything below it is kept
        self.limit = _PRIORITIES

    @property
    def full(self) -> bool:
        return self.limit < _PRIORITIES

    def add(self, lines: Sequence[str], first: int) -> None:
        """``lines`` at positions ``first``, ``first + 1`` ...; blank ones are no documents."""
        heap, budget, size, limit = self.heap, self.budget, self.size, self.limit
        for position, line in enumerate(lines, start=first):
            priority = (position * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
            if priority >= limit or not line or line.isspace():
                continue
            heapq.heappush(heap, (-priority, position, line))
            size += len(line)
            while size > budget:
                negative, _, dropped = heapq.heappop(heap)
                size -= len(dropped)
                limit = min(limit, -negative)
        self.size, self.limit = size, limit

    def merge(self, other: Sample) -> None:
        """The sample of both parts: their documents below both limits, lowest priority first, while they fit."""
        limit = min(self.limit, other.limit)
        entries = sorted((e for e in (*self.heap, *other.heap) if -e[0] < limit), key=lambda entry: -entry[0])
        self.heap, self.size = [], 0
        for entry in entries:
            if self.size + len(entry[2]) > self.budget:
                limit = -entry[0]
                break
            self.heap.append(entry)
            self.size += len(entry[2])
        heapq.heapify(self.heap)
        self.limit = limit

    def documents(self) -> list[str]:
        """The sample, in corpus order."""
        return [document for _, _, document in sorted(self.heap, key=lambda item: item[1])]


class CorpusPart:
    """What one process makes of the blocks it is given: the chunk counts (unless ``count`` is off), a sample,
    and how many documents and characters it saw."""

    def __init__(self, sample_chars: int, max_distinct: int, *, count: bool = True) -> None:
        self.counter = ChunkCounter(max_distinct) if count else None
        self.sample = Sample(sample_chars)
        self.documents = self.characters = 0

    def add(self, text: str, first: int) -> None:
        lines = text.split("\n")
        self.sample.add(lines, first)
        blank = lines.count("")
        self.documents += len(lines) - blank
        self.characters += len(text) - len(lines) + 1
        if self.counter is not None:
            self.counter.add(text)

    def result(self, pipeline: Pipeline | None, keep_urls: bool) -> Counted:
        forms = (
            self.counter.forms(pipeline, keep_urls=keep_urls) if self.counter and pipeline else FormCounts(Counter())
        )
        return Counted(forms, self.sample, self.documents, self.characters)


@dataclass
class Counted:
    """A corpus read: its forms, its sample, how many documents (non-empty lines) and characters it has."""

    forms: FormCounts
    sample: Sample
    documents: int
    characters: int

    def merge(self, other: Counted) -> None:
        self.forms.merge(other.forms)
        self.sample.merge(other.sample)
        self.documents += other.documents
        self.characters += other.characters


class CorpusCounter:
    """Counts a corpus block by block: in this process up to ``parallel_above`` characters (a small corpus never
    starts a process), then in ``workers`` processes, which split the blocks, count and sample on their own; this
    process only reads. At the end each worker forms a share of the distinct chunks, every process's counts of
    that share merged (see :func:`serve`). Also keeps the totals a progress bar shows (``chunks`` only with
    ``track_chunks``: counting them costs the reading process a pass over the text)."""

    def __init__(
        self,
        pipeline: Pipeline | None,
        *,
        keep_urls: bool = False,
        sample_chars: int = SAMPLE_CHARS,
        workers: int | None = None,
        parallel_above: int | None = None,
        max_distinct: int | None = None,
        expected: int | None = None,
        track_chunks: bool = False,
    ) -> None:
        self.pipeline = pipeline  # None: only sample (a held-out text)
        self.expected = expected  # bytes the corpus has on disk, when known: start the workers at once if many
        self.keep_urls = keep_urls
        self.sample_chars = sample_chars
        self.workers = WORKERS if workers is None else workers
        self.parallel_above = PARALLEL_ABOVE if parallel_above is None else parallel_above
        self.max_distinct = MAX_DISTINCT if max_distinct is None else max_distinct
        self.track_chunks = track_chunks
        self.local = CorpusPart(sample_chars, self.max_distinct, count=pipeline is not None)
        self.lines = self.characters = self.chunks = 0
        self._workers: list[_Worker] = []
        self._next = 0

    def add(self, text: str) -> None:
        first = self.lines
        self.lines += text.count("\n") + 1
        self.characters += len(text)
        if self.track_chunks:
            self.chunks += text.count(" ") + 1
        early = self.expected is not None and self.expected > self.parallel_above  # they start while we read
        if self.pipeline is not None and self.workers > 1 and (early or self.characters > self.parallel_above):
            if not self._workers:
                self._start()
            self._workers[self._next].send((text, first))
            self._next = (self._next + 1) % len(self._workers)
        else:
            self.local.add(text, first)

    def finish(self) -> Counted:
        """Everything counted (the workers' merged in), once."""
        local = self.local
        if not self._workers:
            return local.result(self.pipeline, self.keep_urls)
        try:
            workers = self._workers
            for worker in workers:
                worker.send(None)
            replies: list[tuple[list[ChunkCounter | None], int]] = [worker.receive() for worker in workers]
            assert local.counter is not None
            ours = local.counter.partition(len(workers))
            for index, worker in enumerate(workers):
                worker.send([reply[0][index] for reply in replies] + [ours[index]])
            error = local.counter.count_error + sum(reply[1] for reply in replies)
            counted = Counted(FormCounts(Counter(), 0, error), local.sample, local.documents, local.characters)
            for worker in workers:
                counted.merge(worker.receive())
            return counted
        finally:
            self.close()

    def close(self) -> None:
        """Stop the workers: they end at the closed connection; one still busy (interrupted, or failing) is
        stopped."""
        workers, self._workers = self._workers, []
        for worker in workers:
            worker.stop()

    def _start(self) -> None:
        assert self.pipeline is not None
        share = self.max_distinct // self.workers
        for index in range(self.workers):
            settings = (self.pipeline.document, self.keep_urls, self.sample_chars, share, index, self.workers)
            self._workers.append(_Worker(settings))


class _Worker:
    """A counting process: ``python -m vocabsurgeon._count_worker`` with one end of a socket pair. Not
    multiprocessing's spawn, which runs the caller's main module again in the child: a library user's script
    without an ``if __name__ == "__main__"`` guard would call suggest again there."""

    def __init__(self, settings: tuple[Any, ...]) -> None:
        import os
        import subprocess
        import sys
        from multiprocessing.connection import Pipe
        from pathlib import Path

        ours, theirs = Pipe()
        package_parent = str(Path(__file__).resolve().parent.parent)  # importable as installed or from a checkout
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, environment.get("PYTHONPATH")) if p)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "vocabsurgeon._count_worker", str(theirs.fileno())],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, env=environment,
            )  # fmt: skip
        finally:
            theirs.close()
        self.connection = ours
        self.send(settings)

    def send(self, item: Any) -> None:
        try:
            self.connection.send(item)
        except OSError:  # BrokenPipeError: it died
            self._died()

    def receive(self) -> Any:
        try:
            return self.connection.recv()
        except (OSError, EOFError):
            self._died()

    def _died(self) -> NoReturn:
        import subprocess

        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        how = f" (exit code {code})" if code is not None else ""
        last = ""
        if code is not None and self.process.stderr is not None:
            lines = self.process.stderr.read().decode("utf-8", "replace").strip().splitlines()
            last = f": {lines[-1]}" if lines else ""
        raise WorkerDiedError(f"a word-counting worker process died{how}{last}; nothing was written")

    def stop(self) -> None:
        import subprocess

        self.connection.close()
        try:
            self.process.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            self.process.wait(timeout=5)
        if self.process.stderr is not None:
            self.process.stderr.close()


def serve(connection: Connection) -> None:
    """A worker (:mod:`vocabsurgeon._count_worker`): its settings, then blocks to count and sample until None;
    then its chunks in shares (one per worker) for the others, the other processes' counts of its own share,
    and back what it made of that share. Ctrl-C is the parent's to handle (it closes the connection, which ends
    this)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        document, keep_urls, sample_chars, max_distinct, index, workers = connection.recv()
        pipeline = Pipeline(document)
        part = CorpusPart(sample_chars, max_distinct)
        while (item := connection.recv()) is not None:
            part.add(*item)
        assert part.counter is not None
        shares: list[ChunkCounter | None] = list(part.counter.partition(workers))
        mine, shares[index] = shares[index], None
        connection.send((shares, part.counter.count_error))
        for other in connection.recv():
            if other is not None:
                mine.merge(other)  # type: ignore[union-attr]
        assert mine is not None
        forms = mine.forms(pipeline, keep_urls=keep_urls)
        connection.send(Counted(forms, part.sample, part.documents, part.characters))
    except (EOFError, OSError):  # the parent closed the connection (interrupted, or failing): nothing to send to
        return
