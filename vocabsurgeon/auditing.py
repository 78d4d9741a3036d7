"""Do tokenizer, config and weights agree on the vocabulary? Pure checks over an Inventory."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Literal

from .families import family_named
from .inventory import Inventory, Vocabulary, WeightSet
from .vocab_tensors import (
    config_token_ids,
    config_vocab_size,
    find_input_embedding,
    find_output_embeddings,
    find_vocab_biases,
    ties_embeddings,
)

Severity = Literal["error", "warning", "info"]


@dataclass(frozen=True)
class Finding:
    severity: Severity
    code: str
    message: str


@dataclass(frozen=True)
class AuditReport:
    model: str
    findings: tuple[Finding, ...]

    @property
    def errors(self) -> int:
        return sum(1 for finding in self.findings if finding.severity == "error")

    @property
    def warnings(self) -> int:
        return sum(1 for finding in self.findings if finding.severity == "warning")

    @property
    def ok(self) -> bool:
        return self.errors == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "ok": self.ok,
            "errors": self.errors,
            "warnings": self.warnings,
            "findings": [asdict(finding) for finding in self.findings],
        }


Check = Callable[[Inventory], Iterator[Finding]]


def audit(inventory: Inventory) -> AuditReport:
    """Run every check; findings come in check order, errors of one check before its warnings."""
    findings: list[Finding] = []
    for check in CHECKS:
        findings.extend(check(inventory))
    return AuditReport(inventory.source, tuple(findings))


def check_files(inventory: Inventory) -> Iterator[Finding]:
    if inventory.vocabulary is None:
        yield Finding("error", "no-tokenizer", "no tokenizer files (tokenizer.json, vocab.txt, ...)")
    if inventory.config is None:
        yield Finding("warning", "no-config", "no config.json: vocab_size and tying cannot be checked")
    if not inventory.weights:
        yield Finding("info", "no-weights", "no weights (model.safetensors, pytorch_model.bin): tokenizer-only")


def check_sizes(inventory: Inventory) -> Iterator[Finding]:
    vocabulary = inventory.vocabulary
    config_rows = config_vocab_size(inventory.config)
    weights = inventory.primary_weights
    embedding = find_input_embedding(weights.specs) if weights else None
    rows = embedding.shape[0] if embedding is not None else None
    if weights is not None and embedding is None:
        yield Finding("warning", "no-input-embedding", f"no input embedding found among {len(weights.specs)} tensors")
    if config_rows is not None and rows is not None and config_rows != rows:
        yield Finding(
            "error",
            "config-embedding-mismatch",
            f"config.vocab_size is {config_rows} but {embedding.name} has {rows} rows"  # type: ignore[union-attr]
            " (loading fails with 'size mismatch'); run `vocabsurgeon resize` to bring them in line",
        )
    if vocabulary is None:
        return
    capacity = rows if rows is not None else config_rows
    source = "embedding rows" if rows is not None else "config.vocab_size"
    if capacity is not None and vocabulary.max_id >= capacity:
        yield Finding(
            "error",
            "tokenizer-exceeds-embeddings",
            f"the tokenizer has {vocabulary.size} tokens (highest id {vocabulary.max_id}) but {source} is {capacity}:"
            f" ids {capacity}-{vocabulary.max_id} crash with 'index out of range in self';"
            " run `vocabsurgeon resize` to grow the model",
        )
    elif capacity is not None and vocabulary.max_id + 1 < capacity:
        yield Finding(
            "info",
            "padding-rows",
            f"{source} ({capacity}) exceed the tokenizer ({vocabulary.max_id + 1} ids):"
            f" {capacity - vocabulary.max_id - 1} padding rows are free slots",
        )
    ids = sorted(set(vocabulary.model_vocab.values()) | {token.id for token in vocabulary.added})
    if ids and len(ids) != ids[-1] + 1:
        holes = ids[-1] + 1 - len(ids)
        yield Finding("warning", "sparse-ids", f"{holes} ids below {ids[-1]} belong to no token")


def check_output_embeddings(inventory: Inventory) -> Iterator[Finding]:
    for weights in inventory.weights[:1]:
        embedding = find_input_embedding(weights.specs)
        if embedding is None:
            return
        rows = embedding.shape[0]
        outputs = find_output_embeddings(weights.specs)
        for spec in outputs:
            if spec.shape[0] != rows:
                yield Finding(
                    "error",
                    "output-embedding-mismatch",
                    f"{spec.name} has {spec.shape[0]} rows but {embedding.name} has {rows}",
                )
        for spec in find_vocab_biases(weights.specs):
            entries = spec.shape[-1]  # a 1-D bias or a (1, V) buffer such as final_logits_bias
            if entries != rows:
                yield Finding(
                    "error", "bias-mismatch", f"{spec.name} has {entries} entries but {embedding.name} has {rows}"
                )
        yield from _check_tying(inventory, weights, outputs)


def _check_tying(inventory: Inventory, weights: WeightSet, outputs: tuple[Any, ...]) -> Iterator[Finding]:
    if inventory.config is None:
        return
    tied = ties_embeddings(inventory.config)
    is_lm = any(
        arch.endswith(("ForCausalLM", "ForMaskedLM", "LMHeadModel", "ForConditionalGeneration", "ForPreTraining"))
        for arch in inventory.config.get("architectures") or []
    )
    if not tied and is_lm and not outputs:
        yield Finding(
            "error",
            "missing-output-embedding",
            "config.tie_word_embeddings is false but the weights have no output embedding (lm_head):"
            " transformers would initialize it randomly",
        )
    if tied and outputs:
        embedding = find_input_embedding(weights.specs)
        if embedding is not None and any(spec.shape != embedding.shape for spec in outputs):
            yield Finding(
                "error",
                "tied-shape-mismatch",
                "config ties the output embedding to the input embedding, but their shapes differ",
            )


def check_tokenizer_files(inventory: Inventory) -> Iterator[Finding]:
    vocabulary = inventory.vocabulary
    if vocabulary is None:
        return
    yield from _check_vocab_txt(vocabulary, inventory.tokenizer_json is not None)
    known = vocabulary.token_to_id
    for role, token in vocabulary.special_tokens.items():
        if token not in known:
            yield Finding("error", "special-token-missing", f"{role} {token!r} is not in the vocabulary")
    for token in vocabulary.additional_special_tokens:
        if token not in known:
            yield Finding(
                "error", "special-token-missing", f"additional special token {token!r} is not in the vocabulary"
            )
    yield from _check_added_tokens_decoder(inventory, vocabulary)
    config = inventory.tokenizer_config or {}
    extra = config.get("extra_special_tokens")
    if isinstance(extra, list) and extra and not config.get("additional_special_tokens"):
        yield Finding(
            "warning",
            "extra-special-tokens-list",
            "tokenizer_config.json lists extra_special_tokens (transformers 5 format) without"
            " additional_special_tokens: transformers 4.x loses these special tokens, and 4.47-4.57 fail to load",
        )


def _check_vocab_txt(vocabulary: Vocabulary, has_tokenizer_json: bool) -> Iterator[Finding]:
    if vocabulary.vocab_txt is None:
        return
    counts = Counter(vocabulary.vocab_txt)
    duplicated = sorted(token for token, count in counts.items() if count > 1)
    if duplicated:
        sample = ", ".join(repr(token) for token in duplicated[:5])
        yield Finding(
            "warning",
            "duplicate-vocab-line",
            f"vocab.txt repeats {len(duplicated)} tokens ({sample}): the later line wins, the earlier id is dead",
        )
    if not has_tokenizer_json:
        return
    disagreements = [
        (idx, token, vocabulary.model_vocab.get(token))
        for idx, token in enumerate(vocabulary.vocab_txt)
        if counts[token] == 1 and vocabulary.model_vocab.get(token) != idx
    ]
    extra = len(vocabulary.model_vocab) - len(counts)
    if disagreements:
        idx, token, other = disagreements[0]
        where = f"id {other}" if other is not None else "nowhere"
        yield Finding(
            "error",
            "vocab-txt-mismatch",
            f"vocab.txt and tokenizer.json disagree on {len(disagreements)} tokens"
            f" (first: {token!r} is id {idx} in vocab.txt, {where} in tokenizer.json):"
            " slow and fast tokenizers would encode differently",
        )
    elif extra > 0:
        yield Finding(
            "error",
            "vocab-txt-mismatch",
            f"tokenizer.json's vocabulary has {extra} tokens that vocab.txt lacks: slow and fast tokenizers differ",
        )


def _check_added_tokens_decoder(inventory: Inventory, vocabulary: Vocabulary) -> Iterator[Finding]:
    decoder = (inventory.tokenizer_config or {}).get("added_tokens_decoder")
    if not isinstance(decoder, dict):
        return
    id_to_token = vocabulary.id_to_token
    for idx, entry in decoder.items():
        content = entry.get("content") if isinstance(entry, dict) else None
        try:
            token_id = int(idx)
        except ValueError:
            yield Finding("error", "added-token-mismatch", f"added_tokens_decoder has a non-integer id {idx!r}")
            continue
        if id_to_token.get(token_id) != content:
            actual = id_to_token.get(token_id)
            yield Finding(
                "error",
                "added-token-mismatch",
                f"tokenizer_config.json's added_tokens_decoder has {content!r} at id {token_id},"
                f" the vocabulary has {actual!r}",
            )


def check_family(inventory: Inventory) -> Iterator[Finding]:
    """The tokenizer family's own checks of its files (a tokenizer.model that is a tiktoken file ...)."""
    if inventory.vocabulary is None:
        return
    for note in family_named(inventory.vocabulary.family).audit(inventory):
        yield Finding(note.severity, note.code, note.message)


def check_config_ids(inventory: Inventory) -> Iterator[Finding]:
    weights = inventory.primary_weights
    embedding = find_input_embedding(weights.specs) if weights else None
    capacity = embedding.shape[0] if embedding is not None else config_vocab_size(inventory.config)
    if capacity is None:
        return
    for key, value in config_token_ids(inventory.config).items():
        if value < 0 or value >= capacity:
            yield Finding(
                "error", "config-token-id-out-of-range", f"config.{key} = {value} is outside the {capacity} rows"
            )


def check_weight_sets(inventory: Inventory) -> Iterator[Finding]:
    if len(inventory.weights) < 2:
        return
    rows = []
    for weights in inventory.weights:
        embedding = find_input_embedding(weights.specs)
        rows.append((weights.files[0], embedding.shape[0] if embedding else None))
    if len({count for _, count in rows}) > 1:
        listing = ", ".join(f"{name}: {count}" for name, count in rows)
        yield Finding("error", "weight-sets-disagree", f"the weight files disagree on embedding rows ({listing})")
    else:
        names = ", ".join(name for name, _ in rows)
        yield Finding("info", "several-weight-sets", f"several weight sets ({names}); surgery edits all of them")


CHECKS: tuple[Check, ...] = (
    check_files,
    check_sizes,
    check_output_embeddings,
    check_tokenizer_files,
    check_family,
    check_config_ids,
    check_weight_sets,
)
