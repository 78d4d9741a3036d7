"""A read-only view of a checkpoint directory: its files, config, tokenizer vocabulary and tensor headers.

Reading an inventory never reads tensor data and never imports torch, so ``slots`` and ``audit`` stay fast on
multi-gigabyte checkpoints. Everything downstream (slots, audit, planner) is a pure function of an Inventory.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from .errors import CheckpointFormatError, CheckpointNotFoundError, UnsupportedCheckpointError
from .formats import WEIGHT_FORMATS, FormatEntry, WeightFile, WeightFormat
from .formats.json_file import JsonStyle, read_json_object, read_json_text
from .formats.vocab_txt import read_vocab_txt
from .formats.weights import TensorSpec
from .vocabulary import SPECIAL_TOKEN_ROLES as SPECIAL_TOKEN_ROLES  # re-exported: defined beside the vocabulary
from .vocabulary import AddedToken as AddedToken
from .vocabulary import Vocabulary

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
)
MANIFEST = "vocabsurgeon.json"

WeightFormatName = Literal["safetensors", "pytorch"]


@dataclass(frozen=True)
class WeightSet:
    """One set of weight files: a single file or shards with an index, in one format; ``headers`` holds each
    file's header as read once (every later read of the file's tensors goes through it)."""

    format: WeightFormatName
    index: str | None
    files: tuple[str, ...]
    specs: dict[str, TensorSpec] = field(compare=False)
    locations: dict[str, str] = field(compare=False)
    headers: dict[str, WeightFile] = field(default_factory=dict, compare=False)

    def spec(self, name: str) -> TensorSpec:
        return self.specs[name]

    @property
    def handler(self) -> WeightFormat:
        """The format's implementation (see :mod:`vocabsurgeon.formats`)."""
        return WEIGHT_FORMATS[self.format].handler

    def header_of(self, name: str) -> WeightFile:
        """The header of the file holding tensor ``name``."""
        return self.headers[self.locations[name]]


@dataclass(frozen=True)
class Inventory:
    """What a checkpoint directory holds. ``root`` may be a HF cache snapshot whose files are symlinks."""

    source: str
    root: Path
    files: tuple[str, ...]
    config: dict[str, Any] | None = field(compare=False)
    config_style: JsonStyle | None
    tokenizer_json: dict[str, Any] | None = field(compare=False)
    tokenizer_json_style: JsonStyle | None
    tokenizer_config: dict[str, Any] | None = field(compare=False)
    tokenizer_config_style: JsonStyle | None
    special_tokens_map: dict[str, Any] | None = field(compare=False)
    special_tokens_map_style: JsonStyle | None
    added_tokens_json: dict[str, Any] | None = field(compare=False)
    vocabulary: Vocabulary | None
    weights: tuple[WeightSet, ...]
    manifest: dict[str, Any] | None = field(compare=False)
    texts: dict[str, str] = field(default_factory=dict, compare=False)  # the JSON files above, as read

    @property
    def primary_weights(self) -> WeightSet | None:
        return self.weights[0] if self.weights else None

    def path(self, relative: str) -> Path:
        return self.root / relative

    def has(self, relative: str) -> bool:
        return relative in self.files


def resolve_model(model: str | os.PathLike[str]) -> Path:
    """A local directory, or a model id already in the local Hugging Face cache (never downloaded)."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointNotFoundError("is a file, expected a checkpoint directory", path=path)
    text = str(model)
    if re.fullmatch(r"[\w.-]+/[\w.-]+|[\w.-]+", text) and not text.startswith((".", "/")):
        snapshot = _cached_snapshot(text)
        if snapshot is not None:
            return snapshot
        raise CheckpointNotFoundError(
            "no such directory, and no model with this id in the local Hugging Face cache",
            path=text,
            hint="pass a checkpoint directory, or download the model first (vocabsurgeon never downloads)",
        )
    raise CheckpointNotFoundError("no such directory", path=path)


def _cached_snapshot(repo_id: str) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError, OSError):
        return None


def read_inventory(
    model: str | os.PathLike[str],
    *,
    weights: bool = True,
    known: Mapping[str, tuple[Any, JsonStyle, str]] | None = None,
) -> Inventory:
    """Read everything but tensor data. Raises a VocabSurgeonError naming the file for any unreadable input.

    With ``weights=False`` the weight files are neither listed nor read (they may still be being written): see
    :func:`with_weights`. ``known``: JSON files whose (value, style, text) the caller already has (a surgery that
    has just written them), not read again."""
    root = resolve_model(model)
    files = tuple(sorted(name for name in list_files(root) if weights or not _is_weight_file(name)))
    texts: dict[str, str] = {}
    config, config_style = _read_optional_object(root, files, "config.json", texts, known)
    tokenizer_json, tokenizer_json_style = _read_optional_object(root, files, "tokenizer.json", texts, known)
    tokenizer_config, tokenizer_config_style = _read_optional_object(root, files, "tokenizer_config.json", texts, known)
    special_map, special_map_style = _read_optional_object(root, files, "special_tokens_map.json", texts, known)
    added_tokens_json, _ = _read_optional_object(root, files, "added_tokens.json", texts, known)
    manifest, _ = _read_optional_object(root, files, MANIFEST, texts)
    vocab_txt = read_vocab_txt(root / "vocab.txt") if "vocab.txt" in files else None

    from .families import TokenizerFiles, read_vocabulary

    vocabulary = read_vocabulary(
        TokenizerFiles(
            root=root,
            files=files,
            tokenizer_json=tokenizer_json,
            tokenizer_config=tokenizer_config or {},
            special_tokens_map=special_map or {},
            added_tokens_json=added_tokens_json or {},
            vocab_txt=vocab_txt,
        )
    )
    return Inventory(
        source=str(model),
        root=root,
        files=files,
        config=config,
        config_style=config_style,
        tokenizer_json=tokenizer_json,
        tokenizer_json_style=tokenizer_json_style,
        tokenizer_config=tokenizer_config,
        tokenizer_config_style=tokenizer_config_style,
        special_tokens_map=special_map,
        special_tokens_map_style=special_map_style,
        added_tokens_json=added_tokens_json,
        vocabulary=vocabulary,
        weights=tuple(_read_weight_sets(root, files)) if weights else (),
        manifest=manifest,
        texts=texts,
    )


#: the JSON files an inventory parses (besides the manifest), and the Inventory fields of their value and style
JSON_FILES: dict[str, tuple[str, str | None]] = {
    "config.json": ("config", "config_style"),
    "tokenizer.json": ("tokenizer_json", "tokenizer_json_style"),
    "tokenizer_config.json": ("tokenizer_config", "tokenizer_config_style"),
    "special_tokens_map.json": ("special_tokens_map", "special_tokens_map_style"),
    "added_tokens.json": ("added_tokens_json", None),
}


def known_documents(inventory: Inventory) -> dict[str, tuple[Any, JsonStyle, str]]:
    """The JSON files ``inventory`` parsed, as ``read_inventory(..., known=...)`` takes them."""
    known = {}
    for name, (value_field, style_field) in JSON_FILES.items():
        value, text = getattr(inventory, value_field), inventory.texts.get(name)
        if value is not None and text is not None:
            style = getattr(inventory, style_field) if style_field else None
            known[name] = (value, style or JsonStyle(indent=2), text)
    return known


def with_weights(inventory: Inventory) -> Inventory:
    """``inventory`` (read with ``weights=False``) with its files listed anew and its weight headers read."""
    files = tuple(sorted(list_files(inventory.root)))
    return replace(inventory, files=files, weights=tuple(_read_weight_sets(inventory.root, files)))


def require_tokenizer(inventory: Inventory) -> Vocabulary:
    if inventory.vocabulary is None:
        raise CheckpointNotFoundError(
            "no tokenizer files (tokenizer.json, vocab.txt, vocab.json or a SentencePiece model)",
            path=inventory.root,
        )
    return inventory.vocabulary


def list_files(root: Path) -> Iterable[str]:
    """Every file under ``root`` (relative, POSIX), .git and __pycache__ left out: what an Inventory lists."""
    for directory, subdirs, names in os.walk(root, followlinks=False):
        subdirs[:] = sorted(d for d in subdirs if d not in {".git", "__pycache__"})
        for name in names:
            yield (Path(directory) / name).relative_to(root).as_posix()


def _read_optional_object(
    root: Path,
    files: tuple[str, ...],
    name: str,
    texts: dict[str, str],
    known: Mapping[str, tuple[Any, JsonStyle, str]] | None = None,
) -> tuple[Any, JsonStyle | None]:
    if name not in files:
        return None, None
    value, style, text = known[name] if known and name in known else read_json_text(root / name)
    if not isinstance(value, dict):
        raise CheckpointFormatError(f"expected a JSON object, found {type(value).__name__}", path=root / name)
    texts[name] = text
    return value, style


WEIGHT_FILE_SUFFIXES = (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")


def _is_weight_file(name: str) -> bool:
    return name.endswith(WEIGHT_FILE_SUFFIXES)


def _read_weight_sets(root: Path, files: tuple[str, ...]) -> Iterable[WeightSet]:
    """Weight sets in the order transformers prefers them (safetensors first); each file's header read once."""
    for fmt in WEIGHT_FORMATS.values():
        if fmt.index_file in files:
            yield _read_sharded(root, fmt, fmt.index_file)
        elif fmt.single_file in files:
            read = fmt.handler.read_file(root / fmt.single_file, fmt.single_file)
            yield WeightSet(
                fmt.name,
                None,
                (fmt.single_file,),
                read.specs,
                dict.fromkeys(read.specs, fmt.single_file),
                {fmt.single_file: read},
            )


def _read_sharded(root: Path, fmt: FormatEntry, index: str) -> WeightSet:
    document, _ = read_json_object(root / index)
    weight_map = document.get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointFormatError("has no weight_map of tensor names to shard files", path=root / index)
    shards = tuple(dict.fromkeys(weight_map.values()))
    specs: dict[str, TensorSpec] = {}
    locations: dict[str, str] = {}
    headers: dict[str, WeightFile] = {}
    for shard in shards:
        if not (root / shard).is_file():
            raise CheckpointNotFoundError(f"shard listed in {index} is missing", path=root / shard)
        headers[shard] = fmt.handler.read_file(root / shard, shard)
        for name, spec in headers[shard].specs.items():
            specs[name] = spec
            locations[name] = shard
    missing = sorted(set(weight_map) - set(specs))
    if missing:
        raise CheckpointFormatError(
            f"lists {len(missing)} tensors its shards do not contain (first: {missing[0]})", path=root / index
        )
    return WeightSet(fmt.name, index, shards, specs, locations, headers)


def taken_ids(inventory: Inventory) -> set[int]:
    """Ids that an earlier vocabsurgeon surgery placed tokens in, from its manifest."""
    if not inventory.manifest:
        return set()
    tokens = inventory.manifest.get("tokens", [])
    if not isinstance(tokens, list):
        raise CheckpointFormatError("'tokens' is not a list", path=inventory.root / MANIFEST)
    return {int(entry["id"]) for entry in tokens if isinstance(entry, dict) and "id" in entry}


def unsupported(message: str, inventory: Inventory) -> UnsupportedCheckpointError:
    return UnsupportedCheckpointError(message, path=inventory.root)
