"""Check a surgery's output against the invariants a user relies on.

- sizes: len(tokenizer) <= config.vocab_size == every vocabulary tensor's rows (== for a remap);
- each token of the manifest encodes to exactly its id;
- against the source: every original token that was not a replaced placeholder keeps its id, texts without the
  new tokens encode to the same ids, every tensor that is not vocabulary-sized is unchanged and every row of a
  vocabulary tensor that the manifest does not name is unchanged.

Two levels. ``quick`` (what a surgery runs by default, before renaming its output into place) encodes with the
``tokenizers`` library, the engine of transformers' fast tokenizers, loading tokenizer.json as transformers does
(slow-only BERT: from vocab.txt), and compares sampled bytes of every tensor: it costs a fraction of the weight
copy, so that verification does not double the surgery. ``full`` (``vocabsurgeon verify``, ``--verify full``)
reloads the output with transformers itself, fast and, where the installed version has one, slow tokenizer, and
compares every byte of the weights.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .backend import Backend, load_backend
from .checks import CONTEXT, CONTINUING_PREFIX, WORD_SENTENCES, LibraryTokenizer, check_tokenizer, is_continuation
from .checks import Check as Check
from .errors import VerificationError
from .families import family_named
from .free_slots import is_placeholder
from .inventory import Inventory, WeightSet, read_inventory, require_tokenizer
from .vocab_tensors import config_vocab_size, find_vocab_biases, find_vocab_tables, find_vocab_tensors

Level = Literal["quick", "full"]
LEVELS: tuple[Level, ...] = ("quick", "full")

SAMPLE_TEXTS = (
    "The patients were admitted to the hospital in New York last week.",
    "A quick brown fox jumps over the lazy dog, doesn't it?",
    "Numbers like 3.14, 1,000 and 2026-11-25 and symbols: @#$%^&*()!",
    "한국어 문장도 토큰화합니다. 日本語のテキスト。 Ünïcödé àccents.",
    "Emoji 👩\u200d⚕️💉 and flags 🇰🇷, café, naïve, résumé, façade, Zürich",
    "def f(x):\n    return x ** 2  # comment\n\tif x: pass",
    "spaces    and\ttabs\t\tand\n\n\nnewlines   ",
    "<0x41> <s> </s> <unk> [UNK] <|endoftext|> literal markers ▁ Ġ ##",
    "Mixed: Ελληνικά, русский, العربية, עברית, हिन्दी",
)
#: the new tokens whose sentences and longer words are checked (evenly spread; each token's own id is checked for
#: every token): a thousand-word surgery then costs a few hundred encodings more, not thousands
TEXT_CHECKED_TOKENS = 100
#: quick level: rows compared per tensor (evenly spaced, first and last included), besides the rows around each
#: placed id; a misplaced offset or a swapped tensor changes every one of them
SAMPLED_ROWS = 8


@dataclass(frozen=True)
class Verifier:
    """The checks of one level, in two groups so that a surgery can check the tokenizer files while the weights
    are still being written: :meth:`tokenizer_checks` needs no weights, :meth:`weight_checks` needs them all.
    The source's backend is the one planning loaded (:func:`load_backend` keeps it)."""

    level: Level = "quick"
    slow: bool = True

    def tokenizer_checks(
        self, output: Inventory, source: Inventory | None, tokens: list[dict[str, Any]] | None = None
    ) -> list[Check]:
        """``tokens``: the manifest's tokens (by default the output's own manifest)."""
        checks: list[Check] = []
        manifest_tokens = manifest_tokens_of(output) if tokens is None else tokens
        if self.level == "full":
            tokenizers = _load_tokenizers(output.root, self.slow)
            originals = _load_tokenizers(source.root, self.slow, _generic_class(source, output)) if source else {}
        else:
            tokenizers = {"tokenizers": _library_tokenizer(output)}
            originals = {"tokenizers": _library_tokenizer(source)} if source is not None else {}
        for label, tokenizer in tokenizers.items():
            original = originals.get(label)
            expected = round_trips = None
            tokens = manifest_tokens
            if source is not None and original is not None and not isinstance(original, Exception):
                tokens, expected, round_trips = _text_checks(original, source, manifest_tokens)
            checks += check_tokenizer(label, tokenizer, tokens, expected, round_trips)
        if source is not None:
            checks += list(_check_ids_kept(source, output, manifest_tokens))
        return checks

    def start_tokenizer_checks(
        self, output: Inventory, source: Inventory, tokens: list[dict[str, Any]]
    ) -> PendingChecks | None:
        """:meth:`tokenizer_checks` of a surgery's output, begun now in a child process (see :class:`PendingChecks`);
        None when they are better run in this process.

        At the quick level, a large tokenizer (a 150k-token BPE takes most of a second to load, holding the GIL,
        which stalls the weight copy) is loaded and checked in a child process, on another core, while the copy
        runs: the parent only encodes the sample texts with the source tokenizer it already has."""
        if self.level != "quick" or not output.has("tokenizer.json"):
            return None
        if output.path("tokenizer.json").stat().st_size < CHECK_IN_CHILD_ABOVE_BYTES:
            return None
        original = _library_tokenizer(source)
        if isinstance(original, Exception):
            return None
        words, expected, round_trips = _text_checks(original, source, tokens)
        request = {
            "tokenizer_json": str(output.path("tokenizer.json")),
            "tokens": words,
            "expected": expected,
            "round_trips": round_trips,
        }
        child = ChildCheck.start(request)
        return None if child is None else PendingChecks(self, output, source, tokens, child)

    def weight_checks(
        self, output: Inventory, source: Inventory | None, tokens: list[dict[str, Any]] | None = None
    ) -> list[Check]:
        checks = list(_check_audit(output)) + list(_check_sizes(output))
        if source is not None:
            manifest_tokens = manifest_tokens_of(output) if tokens is None else tokens
            checks += list(_check_weights_kept(source, output, manifest_tokens, sampled=self.level == "quick"))
        return checks

    def run(self, output: Inventory, source: Inventory | None) -> list[Check]:
        return self.tokenizer_checks(output, source) + self.weight_checks(output, source)


#: a tokenizer.json above this size is loaded for the quick check in a child process (see
#: Verifier.start_tokenizer_checks); below it, starting a process costs more than loading it here
CHECK_IN_CHILD_ABOVE_BYTES = 4 << 20


#: how long a surgery waits for the child checking its tokenizer before checking it itself
CHILD_TIMEOUT_S = 120.0
#: the child's program: the parent's import path exactly (``python -c`` would put the working directory first,
#: where a stray tokenizers.py would be imported instead of the library), then vocabsurgeon.checks
_CHILD_PROGRAM = (
    "import json, os, sys; sys.path[:] = json.loads(os.environ['VOCABSURGEON_CHILD_PATH']);"
    " from vocabsurgeon.checks import main; main()"
)


@dataclass(frozen=True)
class PendingChecks:
    """Tokenizer checks under way in a child: :meth:`result` waits for them, :meth:`cancel` stops them."""

    verifier: Verifier
    output: Inventory
    source: Inventory
    tokens: list[dict[str, Any]]
    child: ChildCheck

    def result(self) -> list[Check]:
        checks = self.child.result()
        if checks is None:  # the child failed, not the tokenizer (a failed load is a Check): check here
            return self.verifier.tokenizer_checks(self.output, self.source, self.tokens)
        return checks + list(_check_ids_kept(self.source, self.output, self.tokens))

    def cancel(self) -> None:
        self.child.cancel()


class ChildCheck:
    """``python -m vocabsurgeon.checks`` run on a request, talked to in a thread so that it starts at once."""

    def __init__(self, process: subprocess.Popen[str], request: dict[str, Any]) -> None:
        self.process = process
        self.answer: list[str] = []
        self.talk = threading.Thread(target=self._talk, args=(json.dumps(request),), daemon=True)
        self.talk.start()

    @classmethod
    def start(cls, request: dict[str, Any]) -> ChildCheck | None:
        env = {**os.environ, "VOCABSURGEON_CHILD_PATH": json.dumps(sys.path)}
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", _CHILD_PROGRAM],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                encoding="utf-8",
                env=env,
            )
        except OSError:
            return None  # no interpreter to start: check in this process
        return cls(process, request)

    def _talk(self, request: str) -> None:
        with contextlib.suppress(OSError, ValueError):  # the child was killed by cancel
            self.answer.append(self.process.communicate(request)[0])

    def result(self, timeout: float | None = None) -> list[Check] | None:
        """The child's checks; None when it failed or did not answer in time (default :data:`CHILD_TIMEOUT_S`;
        it is then stopped)."""
        self.talk.join(CHILD_TIMEOUT_S if timeout is None else timeout)
        if self.talk.is_alive() or self.process.returncode != 0 or not self.answer:
            self.cancel()
            return None
        try:
            return [Check(**fields) for fields in json.loads(self.answer[0])]
        except (ValueError, TypeError):
            return None

    def cancel(self) -> None:
        """Stop the child (a surgery that fails does not wait for it) and reap it."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def manifest_tokens_of(output: Inventory) -> list[dict[str, Any]]:
    """The tokens a manifest records (every surgery's, earliest first)."""
    return [t for t in (output.manifest or {}).get("tokens", []) if isinstance(t, dict)]


def verify_checkpoint(
    out: str | Path | Inventory,
    against: str | Path | Inventory | None = None,
    *,
    slow: bool = True,
    level: Level = "full",
) -> list[Check]:
    """Every check, passed or not. ``out`` and ``against`` (the source) are directories or Inventories."""
    output = out if isinstance(out, Inventory) else read_inventory(out)
    source = against if isinstance(against, Inventory) or against is None else read_inventory(against)
    return Verifier(level, slow).run(output, source)


def raise_on_failures(checks: list[Check], out: Path) -> None:
    failed = [f"{c.name}: {c.detail}" if c.detail else c.name for c in checks if not c.ok]
    if failed:
        raise VerificationError(failed, path=out)


def _library_tokenizer(inventory: Inventory) -> Any:
    try:
        return LibraryTokenizer(load_backend(inventory).tokenizer)
    except Exception as error:  # report, don't crash: a tokenizer that does not load is the finding
        return error


def _check_audit(output: Inventory) -> Iterator[Check]:
    """Everything audit checks (vocab.txt against tokenizer.json, special tokens, config ids ...) must hold."""
    from .auditing import audit

    errors = [f"{f.code}: {f.message}" for f in audit(output).findings if f.severity == "error"]
    yield Check("audit finds no errors", not errors, "; ".join(errors[:2]))


def _check_sizes(output: Inventory) -> Iterator[Check]:
    vocabulary = require_tokenizer(output)
    config_rows = config_vocab_size(output.config)
    for weights in output.weights:
        tensors = find_vocab_tensors(weights.specs)
        if tensors is None:
            continue
        # along each tensor's vocabulary axis; biases found by name count too, so a mis-sized one is not skipped
        rows = {spec.name: spec.shape[-1] for spec in find_vocab_biases(weights.specs)}
        rows.update({spec.name: tensors.vocab_rows(spec) for spec in tensors.all})
        same = len(set(rows.values())) == 1
        yield Check(f"vocabulary tensors agree ({weights.files[0]})", same, "" if same else str(rows))
        if config_rows is not None:
            yield Check(
                "config.vocab_size == embedding rows",
                config_rows == tensors.rows,
                f"config {config_rows}, {tensors.input.name} {tensors.rows}",
            )
        yield Check(
            "every token id has a row",
            vocabulary.max_id < tensors.rows,
            f"highest id {vocabulary.max_id}, {tensors.rows} rows",
        )


def _generic_class(source: Inventory, output: Inventory) -> bool:
    """Whether the surgery made the tokenizer class generic (PreTrainedTokenizerFast, so that transformers 5 loads
    tokenizer.json as it is): the source is then compared as its tokenizer.json says too. With its own class
    transformers 5 rebuilds some pipelines (Llama's: a Metaspace pre-tokenizer instead of the file's normalizer),
    which the file, the tokenizers library and transformers 4.x do not follow."""
    before = (source.tokenizer_config or {}).get("tokenizer_class")
    after = (output.tokenizer_config or {}).get("tokenizer_class")
    return before != after and after == "PreTrainedTokenizerFast" and source.has("tokenizer.json")


def _load_tokenizers(root: Path, slow: bool, generic: bool = False) -> dict[str, Any]:
    """The fast tokenizer (and, before transformers 5, the slow one) of ``root``; with ``generic``, the fast one
    as PreTrainedTokenizerFast whatever the tokenizer class (see :func:`_generic_class`)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    loaded: dict[str, Any] = {}
    # transformers 5 has one tokenizer class per model (use_fast=False loads the same): load it once
    slow = slow and _transformers_major() < 5
    variants = {"fast": True, "slow": False} if slow else {"fast": True}
    for label, use_fast in variants.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                loader: Any = PreTrainedTokenizerFast if generic and use_fast else AutoTokenizer
                kwargs = {} if loader is PreTrainedTokenizerFast else {"use_fast": use_fast}
                loaded[label] = loader.from_pretrained(str(root), local_files_only=True, **kwargs)
        except Exception as error:  # report, don't crash: a tokenizer that does not load is the finding
            loaded[label] = error
    if "slow" in loaded and "fast" in loaded and type(loaded["slow"]) is type(loaded["fast"]):
        del loaded["slow"]  # transformers 5 has one tokenizer class: nothing more to check
    return loaded


def _transformers_major() -> int:
    import transformers

    return int(transformers.__version__.split(".")[0])


def _text_checks(
    original: Any, source: Inventory, tokens: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[tuple[str, list[int]]], list[str]]:
    """What the tokenizer checks compare against the source (``original``, its tokenizer loaded the same way):

    - ``tokens``, each word (running-text form) marked ``initial`` when the source puts the same form at a text's
      start (SentencePiece families prepend ▁): then it must be one id there too;
    - the texts that must encode as before: the sample texts without new tokens, and a word at a text's start
      where its form differs there (byte-level BPE: the pieces stay, as documented);
    - the sentences with new words (mid-sentence, at the start) that the source decodes to themselves: the output
      must too.
    """
    backend = load_backend(source)
    expected = _expected_encodings(original, source, backend, tokens)
    keeps_longer = family_named(require_tokenizer(source).family).keeps_longer_words
    texts = {str(t["token"]) for t in tokens if t.get("kind") != "special"}
    sampled = {id(t) for t in _spread([t for t in tokens if t.get("kind") != "special"], TEXT_CHECKED_TOKENS)}
    marked, round_trips = [], []
    initial_placed = {str(t["token"]) for t in tokens if t.get("form") == "sentence-initial"}

    def encoded(text: str) -> tuple[str, list[int]]:
        return text, list(original.encode(text, add_special_tokens=False))

    for token in tokens:
        word, content = str(token["token"]), str(token.get("content", token["token"]))
        if token.get("kind") == "special" or is_continuation(content):
            marked.append(token)
            continue
        if id(token) in sampled:  # an added token too: it must come back as it went in
            for text in (template.format(word, word) for template in WORD_SENTENCES):
                if original.decode(original.encode(text, add_special_tokens=False)) == text:
                    round_trips.append(text)
        if token.get("form") != "running-text":
            marked.append(token)
            continue
        initial = backend.pre_tokenize(backend.normalize(word)) == [content]
        marked.append({**token, "initial": initial})
        if not initial and word not in initial_placed:  # the pieces stay at a text's start, as documented
            expected.append(encoded(WORD_SENTENCES[1].format(word)))
        if id(token) in sampled:
            # longer words around it keep their pieces: one it ends (every family), one it begins where the family
            # promises so (BPE's whole-word lookup; Unigram's Viterbi may start a longer word with it); not one that
            # holds another new word
            longer = [f"{CONTEXT} pre{word}"] + ([f"{CONTEXT} {word}s", f"{CONTEXT} {word}x1"] if keeps_longer else [])
            expected += [encoded(text) for text in longer if not _holds_another(text, word, texts)]
    return marked, expected, list(dict.fromkeys(round_trips))


def _holds_another(text: str, word: str, words: set[str]) -> bool:
    """Whether ``text`` (short) contains one of ``words`` other than ``word`` and its own parts: every substring
    looked up, not every word searched for (a thousand-word surgery)."""
    for start in range(len(text)):
        for end in range(start + 1, len(text) + 1):
            piece = text[start:end]
            if piece in words and piece != word and piece not in word:
                return True
    return False


def _spread(items: list[Any], count: int) -> list[Any]:
    """At most ``count`` of ``items``, evenly spread, first and last included."""
    if len(items) <= count:
        return items
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)]


def _expected_encodings(
    original: Any, source: Inventory, backend: Backend, tokens: list[dict[str, Any]]
) -> list[tuple[str, list[int]]]:
    """The sample texts that contain no new token once normalized (``backend``, the source's, tells), each with
    the ids ``original`` (the source's tokenizer) gives it."""
    new = [str(t.get("content", t["token"])).lower() for t in tokens] + [str(t["token"]).lower() for t in tokens]
    new = [n[len(CONTINUING_PREFIX) :] if is_continuation(n) else n for n in new]  # a piece splits words anew
    texts = [text for text in _sample_texts(source) if not _mentions(backend.normalize(text).lower(), new)]
    return [(text, list(original.encode(text, add_special_tokens=False))) for text in texts]


def _mentions(text: str, needles: list[str]) -> bool:
    return any(needle in text for needle in needles)


def _sample_texts(source: Inventory) -> list[str]:
    """Fixed sentences plus words drawn from the source vocabulary itself, as the source decodes them (its
    decoder knows its word-start marker: ``▁``, ``Ġ``, ``##``)."""
    vocabulary = require_tokenizer(source)
    ids = sorted(vocabulary.model_vocab.values())
    step = max(1, len(ids) // 1000)  # look at ~1,000 tokens spread over the vocabulary, keep up to 200 words
    decoded = load_backend(source).tokenizer.decode_batch([[i] for i in ids[::step]], skip_special_tokens=True)
    words = [w.strip() for w in decoded if w.strip().isalpha() and len(w.strip()) > 2 and not is_placeholder(w)]
    chosen = words[:: max(1, len(words) // 200)][:200]
    return list(SAMPLE_TEXTS) + [" ".join(chosen[i : i + 20]) for i in range(0, len(chosen), 20)]


def _check_ids_kept(source: Inventory, output: Inventory, tokens: list[dict[str, Any]]) -> Iterator[Check]:
    placed = {int(t["id"]) for t in tokens}
    before = require_tokenizer(source).id_to_token
    after = require_tokenizer(output).id_to_token
    moved = [
        f"{token!r} was {idx}, now {after.get(idx)!r} there"
        for idx, token in before.items()
        if after.get(idx) != token and not (idx in placed and is_placeholder(token))
    ]
    yield Check("original tokens keep their ids", not moved, "; ".join(moved[:3]))
    # any other new entry of the model vocabulary would change some text (with ignore_merges on, every one does);
    # an added token written into it at its own id (byte-level BPE mirrors them) is not new
    output_vocabulary = require_tokenizer(output)
    allowed = {str(t.get("content", t["token"])) for t in tokens} | {t.content for t in output_vocabulary.added}
    stray = sorted(set(output_vocabulary.model_vocab) - set(require_tokenizer(source).model_vocab) - allowed)
    yield Check(
        "no vocabulary entry besides the new tokens",
        not stray,
        f"{len(stray)} entries the manifest does not name, e.g. {stray[0]!r}" if stray else "",
    )


def _check_weights_kept(
    source: Inventory, output: Inventory, tokens: list[dict[str, Any]], *, sampled: bool = False
) -> Iterator[Check]:
    """Every byte compared, or with ``sampled`` only :data:`SAMPLED_ROWS` rows of each tensor plus, in a vocabulary
    tensor, the rows beside each placed id and the last old row (shapes and dtypes are always compared whole)."""
    placed = {int(t["id"]) for t in tokens}
    scope = " (sampled rows)" if sampled else ""
    for before, after in zip(source.weights, output.weights, strict=False):
        if before.format != after.format:
            continue
        missing = sorted(set(before.specs) - set(after.specs))
        extra = sorted(set(after.specs) - set(before.specs))
        yield Check(
            "the same tensors as the source",
            not missing and not extra,
            f"missing {missing[:3]}, extra {extra[:3]}" if missing or extra else f"{len(before.specs)} tensors",
        )
        if missing:
            continue  # another checkpoint: nothing more to compare tensor by tensor
        vocab = find_vocab_tensors(before.specs, source.config)
        tables = tuple(table.spec for table in find_vocab_tables(before.specs, source.config))
        vocab_names = {spec.name for spec in (*vocab.all, *tables)} if vocab else set()
        changed = [
            name
            for name in before.specs
            if name not in vocab_names
            and _changed_rows(
                source, before, output, after, name, whole=True, only=_sample(before.specs[name].shape, sampled)
            )
        ]
        yield Check(f"non-vocabulary tensors unchanged{scope}", not changed, ", ".join(changed[:3]))
        if vocab is None:
            continue
        altered = []
        for spec in (*vocab.all, *tables):
            axis = vocab.axis(spec) if spec in vocab.all else 0
            view = spec.rows_view(axis).shape
            near = {i + d for i in placed for d in (-1, 1)} | {view[0] - 1}
            only = _sample(view, sampled, extra=near - placed)
            if not _changed_rows(source, before, output, after, spec.name, whole=False, axis=axis, only=only) <= placed:
                altered.append(spec.name)
        yield Check(f"old rows unchanged{scope}", not altered, ", ".join(altered))


def _sample(shape: tuple[int, ...], sampled: bool, extra: Iterable[int] = ()) -> list[int] | None:
    """Row indices (along dim 0 of ``shape``) to compare: None (all) unless ``sampled`` and the tensor is a matrix
    with more rows than we sample (a vector is small and compared whole)."""
    rows = shape[0] if shape else 1
    if not sampled or len(shape) < 2 or rows <= SAMPLED_ROWS:
        return None
    spaced = {round(k * (rows - 1) / (SAMPLED_ROWS - 1)) for k in range(SAMPLED_ROWS)}
    return sorted(i for i in spaced | set(extra) if 0 <= i < rows)


CHUNK_BYTES = 64 << 20


def _changed_rows(
    source: Inventory,
    before: WeightSet,
    output: Inventory,
    after: WeightSet,
    name: str,
    *,
    whole: bool,
    axis: int = 0,
    only: list[int] | None = None,
) -> set[int]:
    """Indices of the source's rows whose bytes differ in the output (with ``whole``, a changed shape counts as
    row 0), compared chunk by chunk straight from the files into two reused buffers: memory stays bounded and
    nothing is hashed. Rows run along the vocabulary ``axis`` (a (1, V) buffer's rows are its elements, laid out
    like a (V,) tensor's). ``only``: compare just these rows."""
    old_spec, new_spec = before.specs[name], after.specs[name]
    if whole and old_spec.shape != new_spec.shape:
        return {0}
    if axis:
        try:
            old_spec, new_spec = old_spec.rows_view(axis), new_spec.rows_view(axis)
        except ValueError:  # the output lost the buffer's (1, V) shape: every row counts as changed
            return set(range(old_spec.shape[axis]))
    rows = old_spec.shape[0] if old_spec.shape else 1
    if (
        old_spec.shape[1:] != new_spec.shape[1:]
        or old_spec.dtype != new_spec.dtype
        or (new_spec.shape and new_spec.shape[0] < rows)
    ):
        return set(range(rows))
    row_bytes = old_spec.row_bytes if old_spec.shape else old_spec.nbytes
    if row_bytes == 0:
        return set()
    step = max(1, CHUNK_BYTES // row_bytes)
    spans = [(start, min(step, rows - start)) for start in range(0, rows, step)]
    if only is not None:
        spans = [(row, 1) for row in only if row < rows]
    changed: set[int] = set()
    old_file, new_file = before.header_of(name), after.header_of(name)
    with (
        before.handler.row_bytes(old_file, source.path(old_file.relative), name) as old,
        after.handler.row_bytes(new_file, output.path(new_file.relative), name) as new,
    ):
        for start, count in spans:
            differs = np.not_equal(old.read(start, count, row_bytes), new.read(start, count, row_bytes)).any(axis=1)
            changed.update(int(i) + start for i in np.flatnonzero(differs))
    return changed
