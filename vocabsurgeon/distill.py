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

Teacher once, student many: the teacher's targets are computed once per context (no gradient) and kept for a
group of words. The student's rows are fitted by L-BFGS (strong Wolfe line search) on every context of the group
at once, ``steps`` iterations: the rows are a few hundred numbers per word and the loss is smooth, so a
quasi-Newton method reaches in 14 iterations what Adam reaches in 30-100 (measured: 0.949 held-out agreement at
about 2 CPU-seconds per word against Adam's 3.5), and with the whole batch in every step nothing is drawn at
random: the rows are a function of the source, the words and the contexts. torch and transformers are imported
here only, and only when a plan distils.
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
#: contexts run through the student at once
BATCH_CONTEXTS = 96
#: bytes of cached teacher targets at most: words are learned in groups that fit
CACHE_BYTES = 256 << 20

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


def generated_contexts(word: str, count: int, *, held_out: bool = False) -> list[Context]:
    """``count`` contexts of ``word`` from the templates: from the first (fitting), or from the last
    (``held_out``: readiness, on sentences not fitted on)."""
    out = []
    order = TEMPLATES[::-1] if held_out else TEMPLATES
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


def load_model(path: Path) -> tuple[Any, Any, bool]:
    """The source's bare model (no head: hidden states only) in its own dtype (memory: the model's size) and
    eval mode, its fast tokenizer, and whether it is causal."""
    import transformers
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    transformers.logging.set_verbosity_error()  # the dropped heads' "unused weights" notes
    config = AutoConfig.from_pretrained(str(path))
    model = AutoModel.from_pretrained(str(path), dtype="auto")
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    return model, tokenizer, is_causal(config)


@dataclass
class _Example:
    """One context of one word, ready for the student: its ids (the new id's place holds a dummy), where the word
    is, and the teacher's targets (positions, states)."""

    word: int  # index of the target in the group
    student_ids: list[int]
    position: int
    target_positions: list[int]
    teacher_from: int  # the first teacher position the student's compared ones stand for (their mean's target)
    targets: torch.Tensor | None = None
    pooled: torch.Tensor | None = None


def _examples(
    tokenizer: Any, group: Sequence[Target], contexts: dict[int, list[Context]], causal: bool,
    reports: dict[int, WordReport],
) -> tuple[list[_Example], list[list[int]], list[list[list[int]]]]:  # fmt: skip
    """The examples of a group, the teacher's ids of each, and for each the teacher positions whose states make
    the target of each student position (a list of positions: their mean)."""
    examples, teacher_ids, sources = [], [], []
    for index, target in enumerate(group):
        for context in contexts[target.id]:
            encoded = tokenizer(
                context.text, return_offsets_mapping=True, truncation=True, max_length=MAX_TOKENS
            )  # with the model's special tokens, as it reads a text
            ids, offsets = list(encoded["input_ids"]), list(encoded["offset_mapping"])
            span = [k for k, (a, b) in enumerate(offsets) if b > a and b > context.start and a < context.end]
            if not span or tuple(ids[span[0] : span[-1] + 1]) != target.pieces:
                reports[target.id].unusable_contexts += 1
                continue
            s, k = span[0], len(target.pieces)
            student = [*ids[:s], 0, *ids[s + k :]]
            if causal:
                positions = list(range(s, len(student)))
                teacher = [[s + k - 1]] + [[j + k - 1] for j in range(s + 1, len(student))]
            else:
                positions = list(range(len(student)))
                teacher = [[j] if j < s else list(range(s, s + k)) if j == s else [j + k - 1] for j in positions]
            examples.append(_Example(index, student, s, positions, s + k - 1 if causal else 0))
            teacher_ids.append(ids)
            sources.append(teacher)
            report = reports[target.id]
            if context.generated:
                report.generated_contexts += 1
            else:
                report.corpus_contexts += 1
    return examples, teacher_ids, sources


def _padded(sequences: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        mask[row, : len(sequence)] = 1
    return ids, mask


def _teach(model: Any, examples: list[_Example], teacher_ids: list[list[int]], sources: list[list[list[int]]]) -> None:
    """The teacher's targets of every example, in batches, without gradients."""
    import torch

    with torch.no_grad():
        for first in range(0, len(examples), BATCH_CONTEXTS):
            batch = slice(first, first + BATCH_CONTEXTS)
            ids, mask = _padded(teacher_ids[batch], 0)
            states = model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
            for row, (example, source) in enumerate(zip(examples[batch], sources[batch], strict=True)):
                example.targets = torch.stack([states[row, positions].mean(dim=0) for positions in source])
                example.pooled = states[row, example.teacher_from : len(teacher_ids[first + row])].mean(dim=0)


def learn_rows(
    model: Any,
    tokenizer: Any,
    causal: bool,
    targets: Sequence[Target],
    contexts: dict[int, list[Context]],
    settings: DistillSettings,
    progress: Callable[[str], None] | None = None,
) -> Learned:
    """The distilled input row of every target (see the module docstring), starting from the subword mean of its
    pieces' rows."""
    import time

    import torch

    start = time.process_time()
    embeddings = model.get_input_embeddings().weight.detach()
    learned = Learned()
    reports = {t.id: WordReport(t.word) for t in targets}
    bytes_per_word = max(1, settings.contexts) * MAX_TOKENS * embeddings.shape[1] * 4
    group_size = max(1, min(len(targets), CACHE_BYTES // bytes_per_word))
    for first in range(0, len(targets), group_size):
        group = list(targets[first : first + group_size])
        examples, teacher_ids, sources = _examples(tokenizer, group, contexts, causal, reports)
        start_rows = torch.stack([embeddings[list(t.pieces)].double().mean(dim=0).float() for t in group])
        if not examples:  # no context shows these words as the source splits them: they keep the subword mean
            learned.rows.update({t.id: start_rows[i].numpy().copy() for i, t in enumerate(group)})
            continue
        _teach(model, examples, teacher_ids, sources)
        label = f"distilling words {first + 1}-{first + len(group)} of {len(targets)}"
        rows, before, after = _fit(model, embeddings, start_rows, examples, settings.steps, label, progress)
        for index, target in enumerate(group):
            learned.rows[target.id] = rows[index].numpy().astype(np.float32).copy()
            reports[target.id].loss_before = before.get(index, 0.0)
            reports[target.id].loss_after = after.get(index, 0.0)
    learned.reports = [reports[t.id] for t in targets]
    learned.seconds = time.process_time() - start
    return learned


def _fit(
    model: Any, embeddings: torch.Tensor, start: torch.Tensor, examples: list[_Example], steps: int, label: str,
    progress: Callable[[str], None] | None,
) -> tuple[torch.Tensor, dict[int, float], dict[int, float]]:  # fmt: skip
    """The rows fitted by L-BFGS from ``start`` on every example at once, and each word's loss before and after."""
    import torch

    rows = torch.nn.Parameter(start.clone())
    optimizer = torch.optim.LBFGS(
        [rows], lr=1.0, max_iter=steps, history_size=20, line_search_fn="strong_wolfe",
        tolerance_grad=0.0, tolerance_change=0.0,
    )  # fmt: skip
    seen: list[dict[int, float]] = []

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        total, per_word = _student_loss(model, embeddings, rows, examples)
        seen.append(per_word)
        total.backward()
        if progress is not None:
            progress(f"{label}: step {len(seen)}")
        return total

    optimizer.step(closure)
    with torch.no_grad():
        _, after = _student_loss(model, embeddings, rows, examples)
    return rows.detach(), seen[0], after


def _student_loss(
    model: Any, embeddings: torch.Tensor, rows: torch.Tensor, examples: list[_Example]
) -> tuple[torch.Tensor, dict[int, float]]:
    """The mean squared error of the student's states against the teacher's targets, each word's examples
    averaged (so that every word weighs the same), summed over the words; and each word's value."""
    import torch

    counts: dict[int, int] = {}
    for example in examples:
        counts[example.word] = counts.get(example.word, 0) + 1
    total = torch.zeros((), dtype=torch.float32)
    per_word: dict[int, float] = {}
    for first in range(0, len(examples), BATCH_CONTEXTS):
        batch = examples[first : first + BATCH_CONTEXTS]
        ids, mask = _padded([e.student_ids for e in batch], 0)
        rows_at = torch.arange(len(batch))
        positions = torch.tensor([e.position for e in batch])
        words = torch.tensor([e.word for e in batch])
        inputs = embeddings[ids].index_put((rows_at, positions), rows[words].to(embeddings.dtype))
        states = model(inputs_embeds=inputs, attention_mask=mask).last_hidden_state.float()
        for row, example in enumerate(batch):
            assert example.targets is not None
            assert example.pooled is not None
            compared = states[row, example.target_positions]
            error = (compared - example.targets).pow(2).mean()
            error = error + POOLED_WEIGHT * (compared.mean(dim=0) - example.pooled).pow(2).mean()
            error = error / counts[example.word]
            total = total + error
            per_word[example.word] = per_word.get(example.word, 0.0) + float(error.detach())
    return total, per_word


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
    targets = [Target(p.id, p.token, p.pieces) for p in placements]
    return learn_rows(model, tokenizer, causal, targets, {t.id: by_word[t.word] for t in targets}, settings, progress)


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
            }
            for r in learned.reports
        ],
    }
