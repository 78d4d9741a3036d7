"""Do tokenizer, config and weights agree on the vocabulary? Pure checks over an Inventory."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Literal

from .families import family_named
from .formats.vocab_txt import BOM, has_bom
from .free_slots import is_placeholder
from .inventory import Inventory, Vocabulary, WeightSet
from .vocab_tensors import (
    config_token_ids,
    find_input_embedding,
    find_output_embeddings,
    find_vocab_biases,
    text_config,
    ties_embeddings,
    vocab_size_key,
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


def _config_rows(config: dict[str, Any] | None) -> int | None:
    """config.json's vocab_size when it is one transformers can build a model from (see check_config_vocab_size)."""
    value = text_config(config).get("vocab_size")
    return value if type(value) is int and value > 0 else None


def check_config_vocab_size(inventory: Inventory) -> Iterator[Finding]:
    """transformers 5 validates config fields by type: a vocab_size that is not an int fails AutoConfig (and with it
    AutoTokenizer and AutoModel); a non-positive one fails building the embedding. null is left alone: some
    composite configs hold it."""
    value = text_config(inventory.config).get("vocab_size")
    if value is None or _config_rows(inventory.config) is not None:
        return
    key = f"config.{vocab_size_key(inventory.config)}"
    if type(value) is int:
        yield Finding(
            "error",
            "config-vocab-size-invalid",
            f"{key} is {value}, not a positive integer: transformers 5 cannot build the embedding (AutoModel)",
        )
    else:
        yield Finding(
            "error",
            "config-vocab-size-invalid",
            f"{key} is {json.dumps(value, ensure_ascii=False)} ({_json_kind(value)}), not an integer:"
            " transformers 5 fails to load config.json (and so AutoTokenizer and AutoModel)",
        )


def _json_kind(value: Any) -> str:
    """What a JSON value is, in JSON's words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def check_sizes(inventory: Inventory) -> Iterator[Finding]:
    vocabulary = inventory.vocabulary
    config_rows = _config_rows(inventory.config)
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


def check_shared_ids(inventory: Inventory) -> Iterator[Finding]:
    """Two tokens on one id: two model-vocabulary entries (len(tokenizer) then counts both), or an added token on an
    id another token holds (the tokenizers library moves it to a new id, past the others). An added token that
    mirrors the model-vocabulary entry of its id (BERT's [PAD]) is one token."""
    vocabulary = inventory.vocabulary
    if vocabulary is None:
        return
    in_json = inventory.tokenizer_json is not None
    model_where = "model.vocab" if in_json else "vocab.txt" if vocabulary.vocab_txt is not None else "vocabulary"
    added_where = "added_tokens" if in_json else "added tokens"
    by_id = {idx: token for token, idx in vocabulary.model_vocab.items()}
    shared: dict[int, list[tuple[str, str]]] = {}  # id -> its tokens, the first holder first
    if len(by_id) != len(vocabulary.model_vocab):  # rare: only then walk the model vocabulary in order
        by_id = {}
        for token, idx in vocabulary.model_vocab.items():
            first = by_id.setdefault(idx, token)
            if first != token:
                shared.setdefault(idx, [(first, model_where)]).append((token, model_where))
    added_first: set[int] = set()  # ids no model-vocabulary entry holds, first held by an added token
    hidden = _bom_hidden_token(vocabulary)
    for added in vocabulary.added:
        held = by_id.get(added.id)
        if held is None:
            by_id[added.id] = added.content
            added_first.add(added.id)
            continue
        if held == added.content or (added.content == hidden and held == BOM + hidden):
            continue  # a mirror of the model-vocabulary entry; or '[PAD]' as '\ufeff[PAD]' (vocab-txt-bom says so)
        entries = shared.setdefault(added.id, [(held, added_where if added.id in added_first else model_where)])
        if all(other != added.content for other, _ in entries):
            entries.append((added.content, added_where))
    if not shared:
        return
    first_id = min(shared)
    entries = shared[first_id]
    listed = [f"{token!r} ({where})" for token, where in entries]
    count = "two" if len(entries) == 2 else str(len(entries))
    tokens = f"{count} tokens, {_and_list(listed)}"
    if all(where == model_where for _, where in entries):
        consequence = (
            f"len(tokenizer) counts {'both' if len(entries) == 2 else 'each'}"
            f" ({len(vocabulary.token_to_id)} tokens for {vocabulary.size} ids) and id {first_id} decodes as only one"
        )
    elif in_json:
        consequence = f"the tokenizers library moves {entries[-1][0]!r} to a new id past the others"
    else:
        consequence = (
            f"transformers moves {entries[-1][0]!r} to a new id past the others, ignores it or refuses to load,"
            " depending on the file and version"
        )
    where = "tokenizer.json" if in_json else "the vocabulary"
    if len(shared) == 1:
        message = f"{where} gives id {first_id} to {tokens}: {consequence}"
    else:
        message = (
            f"{where} gives {len(shared)} ids to more than one token;"
            f" the first, id {first_id}, to {tokens}: {consequence}"
        )
    yield Finding("error", "duplicate-id", message)


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
    # without tokenizer.json, a token the byte-order mark hides is named by vocab-txt-bom: not a second finding
    hidden = _bom_hidden_token(vocabulary) if inventory.tokenizer_json is None else None
    for role, token in vocabulary.special_tokens.items():
        if token not in known and token != hidden:
            yield Finding("error", "special-token-missing", f"{role} {token!r} is not in the vocabulary")
    for token in vocabulary.additional_special_tokens:
        if token not in known and token != hidden:
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


def _bom_hidden_token(vocabulary: Vocabulary) -> str | None:
    """The first token of a vocab.txt that starts with a byte-order mark, without the mark ('[PAD]')."""
    if vocabulary.vocab_txt is None or not has_bom(vocabulary.vocab_txt):
        return None
    return vocabulary.vocab_txt[0][len(BOM) :]


def _check_vocab_txt(vocabulary: Vocabulary, has_tokenizer_json: bool) -> Iterator[Finding]:
    """vocab.txt as transformers reads it (``load_vocab``: the mark kept, the last of repeated lines wins), and
    against tokenizer.json, which the fast tokenizer reads instead."""
    lines = vocabulary.vocab_txt
    if lines is None:
        return
    hidden = _bom_hidden_token(vocabulary)
    if hidden is not None:
        yield Finding(
            "error",
            "vocab-txt-bom",
            f"vocab.txt starts with a byte-order mark (U+FEFF): the first token is read as {lines[0]!r},"
            f" not {hidden!r}, by transformers too; save vocab.txt as UTF-8 without the mark",
        )
        lines = (hidden, *lines[1:])  # compared with tokenizer.json as meant: the mark is reported above
    yield from _check_repeated_lines(lines)
    if not has_tokenizer_json:
        return
    last_line = {token: idx for idx, token in enumerate(lines)}
    disagreements = sorted(
        (idx, token, vocabulary.model_vocab.get(token))
        for token, idx in last_line.items()
        if vocabulary.model_vocab.get(token) != idx
    )
    extra = len(vocabulary.model_vocab) - len(last_line)
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


def _check_repeated_lines(lines: tuple[str, ...]) -> Iterator[Finding]:
    """A token on several lines: transformers maps it to its last line, and the earlier ids to no token. A
    repeated placeholder only loses a slot (a warning); any other token is an error, as a word then encodes to
    another row than its first line's, typically one appended later and never trained."""
    counts = Counter(lines)
    if len(counts) == len(lines):
        return
    repeated = [token for token, count in counts.items() if count > 1]  # in order of first appearance
    positions: dict[str, list[int]] = {token: [] for token in repeated}
    for idx, token in enumerate(lines):
        if token in positions:
            positions[token].append(idx)
    severity: Severity = "warning" if all(is_placeholder(token) for token in repeated) else "error"

    if len(repeated) == 1:
        (token,) = repeated
        earlier = positions[token][:-1]
        dead = f"id {earlier[0]} belongs" if len(earlier) == 1 else f"ids {_and_list(earlier)} belong"
        message = (
            f"vocab.txt repeats {token!r} (ids {_and_list(positions[token])}): transformers keeps the last line,"
            f" so {dead} to no token"
        )
    else:
        sample = "; ".join(f"{token!r} at ids {_and_list(positions[token])}" for token in repeated[:3])
        more = f"; and {len(repeated) - 3} more" if len(repeated) > 3 else ""
        message = (
            f"vocab.txt repeats {len(repeated)} tokens ({sample}{more}): transformers keeps the last line of each,"
            f" so {len(lines) - len(counts)} earlier ids belong to no token"
        )
    yield Finding(severity, "duplicate-vocab-line", message)


def _and_list(items: list[Any]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    words = [str(item) for item in items]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _check_added_tokens_decoder(inventory: Inventory, vocabulary: Vocabulary) -> Iterator[Finding]:
    """tokenizer_config.json's ``added_tokens_decoder``, as transformers 5 reads it (``_from_pretrained``: each
    entry ``AddedToken(**entry)``, each key ``int(key)``), then against the vocabulary."""
    config = inventory.tokenizer_config or {}
    if "added_tokens_decoder" not in config:
        return
    decoder = config["added_tokens_decoder"]
    name = "tokenizer_config.json's added_tokens_decoder"
    if not isinstance(decoder, dict):
        yield Finding(
            "error",
            "added-tokens-decoder-invalid",
            f"{name} is {_json_kind(decoder)}, not an object of id -> token:"
            " transformers 5 fails to load the tokenizer (AttributeError)",
        )
        return
    invalid: list[tuple[str, str]] = []  # (what is wrong, what transformers 5 does)
    ignored: list[str] = []
    usable: list[tuple[int, str]] = []
    for key, entry in decoder.items():
        content = entry.get("content") if isinstance(entry, dict) else None
        if not isinstance(entry, dict):
            problem = f"entry {key!r} is {_json_kind(entry)}, not an object with a string 'content'"
            invalid.append((problem, "fails to load the tokenizer (TypeError)"))
        elif content is not None and not isinstance(content, str):
            problem = f"entry {key!r} has a 'content' that is {_json_kind(content)}, not a string"
            invalid.append((problem, "fails to load the tokenizer (TypeError)"))
        elif not _is_int(key):
            invalid.append((f"has a non-integer id {key!r}", "fails to load the tokenizer (ValueError)"))
        elif content is None:
            ignored.append(f"entry {key!r} has no 'content'")  # AddedToken(content=None) is an empty token
        elif int(key) < 0 and content in vocabulary.token_to_id:
            ignored.append(f"entry {key!r} has a negative id ({content!r} keeps id {vocabulary.token_to_id[content]})")
        elif int(key) < 0:
            invalid.append((f"has a negative id {key!r}", f"gives {content!r} a new id past the others instead"))
        else:
            usable.append((int(key), content))
    if invalid:
        (problem, consequence), others = invalid[0], len(invalid) - 1
        more = f" (and {others} more bad {'entry' if others == 1 else 'entries'})" if others else ""
        yield Finding("error", "added-tokens-decoder-invalid", f"{name} {problem}{more}: transformers 5 {consequence}")
    for problem in ignored:
        yield Finding("warning", "added-token-ignored", f"{name} {problem}: transformers 5 ignores it")
    if inventory.tokenizer_json is None:
        return  # the vocabulary's added tokens are these entries (check_shared_ids reports those on a taken id)
    id_to_token = vocabulary.id_to_token
    for token_id, content in usable:
        actual = id_to_token.get(token_id)
        if actual != content:
            yield Finding(
                "error",
                "added-token-mismatch",
                f"{name} has {content!r} at id {token_id}, the vocabulary has {actual!r}",
            )


def _is_int(key: str) -> bool:
    """Whether ``int(key)`` reads it, as transformers does (so ' 7' is 7, '7.0' is not an id)."""
    try:
        int(key)
    except ValueError:
        return False
    return True


def check_family(inventory: Inventory) -> Iterator[Finding]:
    """The tokenizer family's own checks of its files (a tokenizer.model that is a tiktoken file ...)."""
    if inventory.vocabulary is None:
        return
    for note in family_named(inventory.vocabulary.family).audit(inventory):
        yield Finding(note.severity, note.code, note.message)


def check_config_ids(inventory: Inventory) -> Iterator[Finding]:
    weights = inventory.primary_weights
    embedding = find_input_embedding(weights.specs) if weights else None
    capacity = embedding.shape[0] if embedding is not None else _config_rows(inventory.config)
    if capacity is None:
        return
    for key, value in config_token_ids(inventory.config).items():
        if value < 0 or value >= capacity:
            yield Finding(
                "error", "config-token-id-out-of-range", f"config.{key} = {value} is outside the {capacity} rows"
            )


def check_leftovers(inventory: Inventory) -> Iterator[Finding]:
    """Staging directories that killed surgeries to this checkpoint (as an output) left beside it."""
    from .outputs import stale_leftovers

    for leftover in stale_leftovers(inventory.root.parent, inventory.root.name):
        yield Finding(
            "warning",
            "stale-staging",
            f"{leftover.path} ({leftover.bytes / 1e6:.0f} MB) was left by a vocabsurgeon run that was killed: the next"
            " surgery to this output removes it, or remove it yourself",
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
    check_config_vocab_size,
    check_sizes,
    check_shared_ids,
    check_output_embeddings,
    check_tokenizer_files,
    check_family,
    check_config_ids,
    check_weight_sets,
    check_leftovers,
)
