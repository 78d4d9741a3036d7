"""``--init distill``: each new word's input row learned from the source model itself, so that a patched
checkpoint keeps its meaning before TAPT.

The method is Token Distillation (Dobler, Elliott and de Melo, "Token Distillation: Attention-aware Input
Embeddings for New Tokens", arXiv 2505.20133): the frozen source model reads short contexts of the word twice,
as the source tokenizer splits it (the *teacher*) and with the word as its one new id (the *student*); only the
new input rows train, so that the student's last hidden states match the teacher's. They start from the
subword mean.

What is matched, position by position (``k`` pieces at ``s .. s+k-1`` in the teacher, the one id at ``s`` in the
student; positions after it shift by ``k - 1``):

- **encoders** (bidirectional: every position sees the word): every position but the word's against its teacher
  position, and the word's position against the mean of its pieces' states;
- **decoders** (causal: positions before the word cannot see it, and match already): the word's position against
  the teacher's last piece (the first position that has read the whole word, as in Token Distillation), and
  every position after it against its teacher position.

The loss is the mean squared error of those states, plus ``POOLED_WEIGHT`` times that of their mean (the
teacher's mean over its positions, the student's over its own: a sentence-transformers model's mean-pooled
embedding, and for any model a summary the word must not shift). Measured on the real all-MiniLM-L6-v2
(benchmarks/distill_readiness.py): the mean term lifts held-out sentence agreement from 0.909 to 0.940 at the
same cost; matching every layer's states instead of the last gave 0.909 (and a lower minimum).

Teacher once, student many: the teacher's targets are computed once per context (no gradient). Each word is
fitted on its own (its row depends on its contexts only, never on the other words of the surgery) by L-BFGS with
a strong Wolfe line search on all of its contexts at once, ``steps`` iterations: the row is a few hundred numbers
and the loss is smooth, so a quasi-Newton method reaches in 14 iterations what Adam reaches in 30-100 (measured:
0.949 held-out agreement at about 2 CPU-seconds per word against Adam's 3.5), and with the whole batch in every
step nothing is drawn at random. Memory holds one batch of one word's graph. torch and transformers are imported
here only, and only when a plan distils.

The input row goes through the model's own embedding module, scaled as it scales rows (Gemma, BART multiply by
``embed_scale``); a module that does something else is refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import VocabSurgeonError
from .inits import DEFAULT_CONTEXTS, POOLED_WEIGHT, DistillSettings

if TYPE_CHECKING:
    import torch

    from .inventory import Inventory
    from .plan import Plan

#: fewer corpus contexts than this: generated ones fill up to it (and the report says so, per word)
MIN_CONTEXTS = 8
#: words of context kept on each side of an occurrence
WINDOW_WORDS = 8
#: contexts' tokens at most (a long window is cut)
MAX_TOKENS = 64
#: contexts run through the model at once
BATCH_CONTEXTS = 96

#: sentences for a word the corpus has too few contexts of; ``{}`` is the word. Varied in where the word stands
#: and what surrounds it, none of them domain-specific. Fitting takes them from the start (``MIN_CONTEXTS`` at
#: most), readiness from the end, so that it measures on sentences not fitted on.
TEMPLATES = (
    "The {} was noted in the report.",
    "We discuss {} in the next section.",
    "This is an example of {} in practice.",
    "A short note on {} and its uses.",
    "They asked about {} during the meeting.",
    "Without {}, the results would differ.",
    "The term {} appears often in this field.",
    "Her work on {} was widely cited.",
    "Recent studies of {} report mixed findings.",
    "He explained what {} means to the group.",
    "In this case, {} was the main concern.",
    "The role of {} is still debated.",
    "Most of the questions were about {}.",
    "I read an article on {} yesterday.",
    "The committee will review {} next month.",
    "Few people outside the field know about {}.",
)


#: sentences for a word's sentence-initial form (``--sentence-initial``): the word opens the text
INITIAL_TEMPLATES = (
    "{} was noted in the report.",
    "{} is discussed in the next section.",
    "{} appears often in this field.",
    "{} was the main concern in this case.",
    "{} is still debated.",
    "{} came up during the meeting.",
    "{} changed the results.",
    "{} is explained below.",
)


@dataclass(frozen=True)
class Context:
    """A short text holding the word at ``text[start:end]``; ``generated`` when it came from a template."""

    text: str
    start: int
    end: int
    generated: bool = False


@dataclass(frozen=True)
class Target:
    """A new word to learn: its id, the text it is written as, and the ids the source splits it into (in running
    text: the pieces its contexts must show)."""

    id: int
    word: str
    pieces: tuple[int, ...]
    initial: bool = False  # the word's sentence-initial form: learned on texts it opens


@dataclass
class WordReport:
    """How a word was learned: contexts from the corpus, generated ones, ones left out (the source split the word
    there differently, e.g. at a text's start), and the loss before and after."""

    word: str
    corpus_contexts: int = 0
    generated_contexts: int = 0
    unusable_contexts: int = 0
    loss_before: float = 0.0
    loss_after: float = 0.0
    #: "subword-mean" when no context showed the word as the source splits it: the row stayed the subword mean
    fallback: str | None = None


@dataclass
class Learned:
    """The learned rows (id -> float32 row) and the report of each word."""

    rows: dict[int, np.ndarray] = field(default_factory=dict)
    reports: list[WordReport] = field(default_factory=list)
    seconds: float = 0.0


# ------------------------------------------------------------------------------------------------ contexts


def find_contexts(
    words: Sequence[str],
    blocks: Iterable[str],
    per_word: int = DEFAULT_CONTEXTS,
    *,
    ignore_case: bool = False,
    skip: int = 0,
) -> dict[str, list[Context]]:
    """Up to ``per_word`` contexts of each word from the documents of ``blocks`` (lines), in corpus order: the
    word where no letter or digit touches it, with ``WINDOW_WORDS`` words on each side. ``skip`` leaves out each
    word's first contexts (readiness measures on others than those fitted on). Reading stops once every word has
    its contexts."""
    found: dict[str, list[Context]] = {word: [] for word in words}
    if not words:
        return found
    lookup = {(w.lower() if ignore_case else w): w for w in words}
    alternatives = "|".join(re.escape(w) for w in sorted(lookup, key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w])(?:{alternatives})(?![\w])", re.IGNORECASE if ignore_case else 0)
    wanted = per_word + skip
    seen = dict.fromkeys(words, 0)
    missing = len(words)
    for block in blocks:
        for line in block.split("\n"):
            for match in pattern.finditer(line):
                word = lookup[match.group(0).lower() if ignore_case else match.group(0)]
                if seen[word] >= wanted:
                    continue
                seen[word] += 1
                if seen[word] > skip:
                    found[word].append(_window(line, match.start(), match.end()))
                if seen[word] == wanted:
                    missing -= 1
            if missing == 0:
                return found
    return found


def _window(line: str, start: int, end: int) -> Context:
    """The occurrence with ``WINDOW_WORDS`` space-separated words on each side."""
    before = line[:start].split(" ")
    after = line[end:].split(" ")
    left = " ".join(before[-(WINDOW_WORDS + 1) :])
    right = " ".join(after[: WINDOW_WORDS + 1])
    return Context(left + line[start:end] + right, len(left), len(left) + end - start)


def generated_contexts(word: str, count: int, *, held_out: bool = False, initial: bool = False) -> list[Context]:
    """``count`` contexts of ``word`` from the templates: from the first (fitting), or from the last
    (``held_out``: readiness, on sentences not fitted on); ``initial``: the word opens each text."""
    out = []
    order = INITIAL_TEMPLATES if initial else TEMPLATES[::-1] if held_out else TEMPLATES
    for k in range(count):
        template = order[k % len(order)]
        start = template.index("{}")
        out.append(Context(template.format(word), start, start + len(word), generated=True))
    return out


def gather_contexts(
    words: Sequence[str], settings: DistillSettings, *, ignore_case: bool, skip: int = 0, held_out: bool = False
) -> dict[str, list[Context]]:
    """The contexts of ``words``: from the settings' corpus (see :func:`find_contexts`), filled up to
    ``MIN_CONTEXTS`` from the templates (the held-out ones for readiness)."""
    found: dict[str, list[Context]] = {word: [] for word in words}
    if settings.corpus:
        from .corpus import find_corpus, read_blocks

        blocks = read_blocks(find_corpus(settings.corpus, settings.field))
        found = find_contexts(words, blocks, settings.contexts, ignore_case=ignore_case, skip=skip)
    return {
        w: c + generated_contexts(w, MIN_CONTEXTS - len(c), held_out=held_out) if len(c) < MIN_CONTEXTS else c
        for w, c in found.items()
    }


# ------------------------------------------------------------------------------------------------ the model


def is_causal(config: Any) -> bool:
    """Whether a transformers config is a decoder (causal LM): its architectures, else ``is_decoder``."""
    architectures = getattr(config, "architectures", None) or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        return True
    return bool(getattr(config, "is_decoder", False))


def word_span(offsets: Sequence[tuple[int, int]], text: str, start: int, end: int) -> list[list[int]]:
    """The candidate positions of the tokens that spell ``text[start:end]``, given each token's character
    offsets: those overlapping it, and, where a space piece stands right before it (``Ġ`` or ``▁`` alone, as
    byte-level BPE and SentencePiece give a word that begins with a digit: ``Ġ 2 FA``), the same with that piece.
    Which one is the word depends on how it is stored (a vocabulary entry ``Ġ2FA`` holds the space, an added token
    ``2FA`` does not); the caller keeps the one that matches."""
    span = [k for k, (a, b) in enumerate(offsets) if b > a and b > start and a < end]
    candidates = [span] if span else []
    if span and span[0] > 0:
        a, b = offsets[span[0] - 1]
        if b == start and b > a and text[a:b].isspace():
            candidates.append([span[0] - 1, *span])
    return candidates


def load_model(path: Path) -> tuple[Any, Any, bool]:
    """The source's bare model (no head: hidden states only) in its own dtype (memory: the model's size) and
    eval mode, its fast tokenizer (offsets), and whether it is causal. What transformers cannot load is one
    line."""
    import transformers
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
    dtype = {"dtype" if (major, minor) >= (4, 56) else "torch_dtype": "auto"}  # the argument was renamed
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the dropped heads' "unused weights" notes
    try:
        config = AutoConfig.from_pretrained(str(path))
        model = AutoModel.from_pretrained(str(path), **dtype)
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except Exception as error:  # transformers raises many kinds
        raise VocabSurgeonError(
            f"--init distill cannot load the model with transformers ({type(error).__name__}: {error});"
            " nothing was written",
            path=path,
        ) from None
    finally:
        transformers.logging.set_verbosity(verbosity)
    if not getattr(tokenizer, "is_fast", False):
        raise VocabSurgeonError(
            "--init distill needs a fast tokenizer (it finds the word's pieces by their offsets); nothing was written",
            path=path,
        )
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model, tokenizer, is_causal(config)


def embedding_scale(embedding: Any) -> float:
    """What the model's input embedding multiplies a row by: 1 for a plain ``nn.Embedding``, ``embed_scale`` for
    the scaled ones (Gemma, BART: sqrt(hidden)). Another module may do anything: refused."""
    import torch

    if type(embedding) is torch.nn.Embedding:
        return 1.0
    scale = getattr(embedding, "embed_scale", None)
    if isinstance(embedding, torch.nn.Embedding) and scale is not None:
        return float(scale)
    raise VocabSurgeonError(
        f"--init distill cannot tell how {type(embedding).__name__} turns ids into vectors; nothing was written"
    )


@dataclass
class _Example:
    """One context of the word, ready for the student: its ids (the new id's place holds a dummy), where the word
    is, the teacher's ids, and for each compared student position the teacher positions whose states make its
    target (their mean); the targets once the teacher has run."""

    student_ids: list[int]
    position: int
    target_positions: list[int]
    teacher_ids: list[int]
    sources: list[list[int]]
    teacher_from: int  # the first teacher position the compared ones stand for (their mean's target)
    targets: torch.Tensor | None = None
    pooled: torch.Tensor | None = None


def _example(tokenizer: Any, target: Target, context: Context, causal: bool) -> _Example | None:
    """The example of one context; None where the source does not split the word into its pieces there."""
    encoded = tokenizer(context.text, return_offsets_mapping=True, truncation=True, max_length=MAX_TOKENS)
    ids, offsets = list(encoded["input_ids"]), list(encoded["offset_mapping"])  # with the model's special tokens
    spans = word_span(offsets, context.text, context.start, context.end)
    span = next((c for c in spans if tuple(ids[c[0] : c[-1] + 1]) == target.pieces), None)
    if span is None:
        return None
    s, k = span[0], len(target.pieces)
    student = [*ids[:s], 0, *ids[s + k :]]
    if causal:
        positions = list(range(s, len(student)))
        sources = [[s + k - 1]] + [[j + k - 1] for j in range(s + 1, len(student))]
    else:
        positions = list(range(len(student)))
        sources = [[j] if j < s else list(range(s, s + k)) if j == s else [j + k - 1] for j in positions]
    return _Example(student, s, positions, ids, sources, s + k - 1 if causal else 0)


def _examples(
    tokenizer: Any, target: Target, contexts: Sequence[Context], causal: bool, report: WordReport
) -> list[_Example]:
    """The word's examples: its contexts where the source splits it into its pieces, refilled from the templates
    up to ``MIN_CONTEXTS`` usable ones (a corpus whose occurrences are all unusable, e.g. at a text's start)."""
    examples = []
    for context in contexts:
        example = _example(tokenizer, target, context, causal)
        if example is None:
            report.unusable_contexts += 1
            continue
        examples.append(example)
        report.generated_contexts += context.generated
        report.corpus_contexts += not context.generated
    if len(examples) < MIN_CONTEXTS:
        used = {c.text for c in contexts}
        spare = [
            c for c in generated_contexts(target.word, len(TEMPLATES), initial=target.initial) if c.text not in used
        ]
        for context in spare:
            if len(examples) >= MIN_CONTEXTS:
                break
            example = _example(tokenizer, target, context, causal)
            if example is None:
                report.unusable_contexts += 1
            else:
                examples.append(example)
                report.generated_contexts += 1
    return examples


def _padded(sequences: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        mask[row, : len(sequence)] = 1
    return ids, mask


def _teach(model: Any, examples: list[_Example]) -> None:
    """The teacher's targets of every example, in batches, without gradients."""
    import torch

    with torch.no_grad():
        for first in range(0, len(examples), BATCH_CONTEXTS):
            batch = examples[first : first + BATCH_CONTEXTS]
            ids, mask = _padded([e.teacher_ids for e in batch], 0)
            states = model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
            for row, example in enumerate(batch):
                example.targets = torch.stack([states[row, positions].mean(dim=0) for positions in example.sources])
                example.pooled = states[row, example.teacher_from : len(example.teacher_ids)].mean(dim=0)


def learn_rows(
    model: Any,
    tokenizer: Any,
    causal: bool,
    targets: Sequence[Target],
    contexts: dict[int, list[Context]],
    settings: DistillSettings,
    progress: Callable[[str], None] | None = None,
) -> Learned:
    """The distilled input row of every target (see the module docstring), each word on its own (its row depends
    on its contexts, never on the other words), starting from the subword mean of its pieces' rows."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    import torch

    start = time.process_time()
    embedding = model.get_input_embeddings()
    scale = embedding_scale(embedding)
    weight = embedding.weight.detach()
    learned = Learned()
    reports = [WordReport(t.word) for t in targets]
    done = [0]

    def learn(index: int) -> np.ndarray:
        target, report = targets[index], reports[index]
        start_row = weight[list(target.pieces)].double().mean(dim=0).float()
        examples = _examples(tokenizer, target, contexts.get(target.id, []), causal, report)
        if not examples:  # no context shows the word as the source splits it: it keeps the subword mean
            report.fallback = "subword-mean"
            return start_row.numpy().copy()
        _teach(model, examples)
        label = f"distilling {target.word}"
        row, report.loss_before, report.loss_after = _fit(
            model, embedding, scale, start_row, examples, settings.steps, label, None
        )
        done[0] += 1
        if progress is not None:
            progress(f"distilled {done[0]} of {len(targets)} words ({target.word}: loss {report.loss_before:.4g}"
                     f" -> {report.loss_after:.4g})")  # fmt: skip
        return row.numpy().astype(np.float32).copy()

    # a word's batches are small: one torch thread per word, a word per core, beats two threads on one word
    # (each word's arithmetic runs on one thread in a fixed order, so its row does not depend on the scheduling)
    threads = torch.get_num_threads()
    workers = max(1, min(threads, len(targets)))
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vocabsurgeon-distill") as pool:
            rows = list(pool.map(learn, range(len(targets))))
    finally:
        torch.set_num_threads(threads)
    learned.rows = {t.id: row for t, row in zip(targets, rows, strict=True)}
    learned.reports = reports
    learned.seconds = time.process_time() - start
    return learned


def _fit(
    model: Any, embedding: Any, scale: float, start: torch.Tensor, examples: list[_Example], steps: int, label: str,
    progress: Callable[[str], None] | None,
) -> tuple[torch.Tensor, float, float]:  # fmt: skip
    """One word's row fitted by L-BFGS from ``start`` on all of its examples at once, and its loss before and
    after. Each batch's graph is freed by its own backward pass, so memory holds one batch, whatever the word's
    contexts."""
    import torch

    row = torch.nn.Parameter(start.clone())
    optimizer = torch.optim.LBFGS(
        [row], lr=1.0, max_iter=steps, history_size=20, line_search_fn="strong_wolfe",
        tolerance_grad=0.0, tolerance_change=0.0,
    )  # fmt: skip
    losses: list[float] = []

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        total = _student_loss(model, embedding, scale, row, examples, backward=True)
        losses.append(total)
        if progress is not None:
            progress(f"{label}: loss {losses[0]:.4g} -> {total:.4g}")
        return torch.tensor(total)

    optimizer.step(closure)
    with torch.no_grad():
        after = _student_loss(model, embedding, scale, row, examples, backward=False)
    return row.detach(), losses[0], after


def _student_loss(
    model: Any, embedding: Any, scale: float, row: torch.Tensor, examples: list[_Example], *, backward: bool
) -> float:
    """The mean over the word's examples of the mean squared error of the student's states against the
    teacher's, plus ``POOLED_WEIGHT`` times that of their mean; with ``backward``, its gradient accumulated into
    ``row`` batch by batch."""
    import torch

    total = 0.0
    for first in range(0, len(examples), BATCH_CONTEXTS):
        batch = examples[first : first + BATCH_CONTEXTS]
        ids, mask = _padded([e.student_ids for e in batch], 0)
        rows_at = torch.arange(len(batch))
        positions = torch.tensor([e.position for e in batch])
        values = (row * scale).to(embedding.weight.dtype).expand(len(batch), -1)
        inputs = embedding(ids).index_put((rows_at, positions), values)  # the module: its own scaling
        states = model(inputs_embeds=inputs, attention_mask=mask).last_hidden_state.float()
        loss = torch.zeros((), dtype=torch.float32)
        for index, example in enumerate(batch):
            assert example.targets is not None
            assert example.pooled is not None
            compared = states[index, example.target_positions]
            loss = loss + (compared - example.targets).pow(2).mean()
            loss = loss + POOLED_WEIGHT * (compared.mean(dim=0) - example.pooled).pow(2).mean()
        loss = loss / len(examples)
        if backward:
            loss.backward()
        total += float(loss.detach())
    return total


def learn_for_plan(inventory: Inventory, plan: Plan, progress: Callable[[str], None] | None = None) -> Learned:
    """The distilled rows of a plan's ``distill`` placements: contexts from its settings' corpus (and generated),
    the source model loaded with transformers, every row learned (see :func:`learn_rows`)."""
    from .backend import load_backend

    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as error:
        raise VocabSurgeonError(
            f"--init distill needs torch and transformers ({error.name} is not installed); nothing was written",
            hint="pip install torch transformers",
        ) from None
    settings = plan.distill or DistillSettings()
    placements = [p for p in plan.placements if p.init == "distill"]
    backend = load_backend(inventory, model=False)
    ignore_case = backend.normalize("Ab") == "ab"  # an uncased model: its corpus's "Hospitalization" counts
    words = list(dict.fromkeys(p.token for p in placements))
    if progress is not None:
        progress(f"distilling {len(words)} words: finding their contexts")
    by_word = gather_contexts(words, settings, ignore_case=ignore_case)
    if progress is not None:
        progress(f"distilling {len(words)} words: loading the model")
    model, tokenizer, causal = load_model(inventory.root)
    targets = [Target(p.id, p.token, p.pieces, p.form == "sentence-initial") for p in placements]
    contexts = {t.id: [] if t.initial else by_word[t.word] for t in targets}  # an initial form: texts it opens
    return learn_rows(model, tokenizer, causal, targets, contexts, settings, progress)


def manifest_entry(plan: Plan, learned: Learned) -> dict[str, Any]:
    """What the manifest records of a distillation: the method, its settings, and each word's contexts and loss."""
    settings = plan.distill or DistillSettings()
    return {
        "method": "token-distillation",
        "settings": settings.to_json(),
        "cpu_seconds": round(learned.seconds, 2),
        "words": [
            {
                "word": r.word,
                "corpus_contexts": r.corpus_contexts,
                "generated_contexts": r.generated_contexts,
                "unusable_contexts": r.unusable_contexts,
                "loss_before": round(r.loss_before, 6),
                "loss_after": round(r.loss_after, 6),
                **({"fallback": r.fallback} if r.fallback else {}),
            }
            for r in learned.reports
        ],
    }
