"""The interface every tokenizer family implements, and the working copy of tokenizer files it edits."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from ..checks import CONTEXT as CONTEXT
from ..checks import METASPACE as METASPACE
from ..checks import after_context
from ..errors import CheckpointFormatError
from ..vocabulary import AddedToken, Vocabulary

if TYPE_CHECKING:
    from tokenizers import Tokenizer


class CheckpointFiles(Protocol):
    """What a family reads of a checkpoint directory once its vocabulary is known (an Inventory is one)."""

    @property
    def root(self) -> Path: ...

    @property
    def tokenizer_config(self) -> dict[str, Any] | None: ...

    def has(self, relative: str) -> bool: ...

    def path(self, relative: str) -> Path: ...


@dataclass(frozen=True)
class TokenizerFiles:
    """The tokenizer documents of a checkpoint as parsed once: what a family detects itself and reads its
    vocabulary from (the inventory builds it before the Vocabulary exists)."""

    root: Path
    files: tuple[str, ...]
    tokenizer_json: dict[str, Any] | None
    tokenizer_config: dict[str, Any]
    special_tokens_map: dict[str, Any]
    added_tokens_json: dict[str, Any]
    vocab_txt: list[str] | None

    def has(self, relative: str) -> bool:
        return relative in self.files

    def path(self, relative: str) -> Path:
        return self.root / relative

    @property
    def model_type(self) -> str | None:
        """tokenizer.json's ``model.type``, None without a tokenizer.json."""
        model = (self.tokenizer_json or {}).get("model")
        return model.get("type") if isinstance(model, dict) else None


@dataclass(frozen=True)
class Note:
    """A family's own audit finding (audit reports it as a Finding)."""

    severity: Literal["error", "warning", "info"]
    code: str
    message: str


@dataclass(frozen=True)
class ModelEntry:
    """A model-vocabulary entry to write: ``token`` at ``id``, renaming ``replaces`` (a placeholder) if given;
    ``special`` when the token is a special added token (slow tokenizers look those up by their exact text)."""

    id: int
    token: str
    replaces: str | None = None
    special: bool = False
    #: the token is a word's form (running-text ``▁word``, or sentence-initial): a SentencePiece model holds it as
    #: it is
    word: bool = False


@dataclass
class TokenizerDocs:
    """Mutable working copies of the tokenizer files, edited in place by apply and the families."""

    tokenizer_json: dict[str, Any] | None = None
    tokenizer_config: dict[str, Any] | None = None
    special_tokens_map: dict[str, Any] | None = None
    added_tokens_json: dict[str, int] | None = None
    vocab_txt: list[str] | None = None
    side: dict[str, Any] = field(default_factory=dict)  # family-specific files (vocab.json, tokenizer.model ...)


class TextPipeline(Protocol):
    """The source tokenizer's normalizer, pre-tokenizer and model, as a family asks them (a Backend is one)."""

    def normalize(self, text: str) -> str: ...

    def pre_tokenize(self, normalized: str) -> list[str]: ...

    def model_tokens(self, piece: str) -> list[str]: ...


class Family:
    """A tokenizer family: how it is recognized in the files, where its model vocabulary lives, which tokens it can
    hold as vocabulary entries, how to rebuild its tokenizer without tokenizer.json, and its own audit checks.

    Subclasses override the class attributes and the methods; everything about added tokens, special-token lists
    and configs is shared and lives in ``tokenizer_edit``. A family's side files are the vocabulary files of the
    transformers 4.x slow tokenizer (vocab.txt, vocab.json, a SentencePiece model): the family reads the ones it keeps
    in step into ``TokenizerDocs.side`` and renders the ones that changed, in their own format.
    """

    name: ClassVar[str]
    model_type: ClassVar[str]  # tokenizer.json model.type
    side_files: ClassVar[tuple[str, ...]] = ()  # the slow tokenizer's vocabulary files, by name
    continuing_prefix: ClassVar[str | None] = None  # of a subword piece (WordPiece's ``##``)
    #: whether added_tokens.json also lists an added token renamed into the model vocabulary (a slot): a family
    #: with no tokenizer.json has no other list of added tokens its slow tokenizer reads
    lists_renamed_added: ClassVar[bool] = False

    def detects(self, files: TokenizerFiles) -> bool:
        """Whether these files are this family's; by default, a tokenizer.json of this ``model.type``."""
        return files.model_type == self.model_type

    def read_entries(self, files: TokenizerFiles) -> tuple[dict[str, int], tuple[AddedToken, ...]]:
        """The model vocabulary and the added tokens, by default from tokenizer.json."""
        document = files.tokenizer_json or {}
        try:
            model_vocab = self.read_model_vocab(document["model"])
        except (ValueError, TypeError, IndexError, KeyError) as error:
            raise CheckpointFormatError(str(error), path=files.path("tokenizer.json")) from None
        path = files.path("tokenizer.json")
        return model_vocab, tuple(parse_added(entry, path) for entry in document.get("added_tokens", []))

    def slow_tokenizer(self, files: CheckpointFiles, vocabulary: Vocabulary) -> Tokenizer | None:
        """The pipeline the slow tokenizer applies, as a ``tokenizers.Tokenizer``, for a checkpoint without
        tokenizer.json (what transformers' converter builds); None when the family cannot do without one."""
        return None

    def audit(self, files: CheckpointFiles) -> Iterator[Note]:
        """The family's own checks of its files."""
        return iter(())

    def read_side_files(self, docs: TokenizerDocs, files: CheckpointFiles) -> None:
        """Load the side files this family edits (those the checkpoint has) into ``docs.side``."""

    def side_outputs(self, docs: TokenizerDocs, files: CheckpointFiles) -> dict[str, bytes]:
        """New bytes for each side file in ``docs.side`` that changed; unchanged files are left to the byte copy."""
        return {}

    def read_model_vocab(self, model: dict[str, Any]) -> dict[str, int]:
        vocab = model.get("vocab")
        if not isinstance(vocab, dict):
            raise ValueError("model.vocab is not an object")
        if all(type(idx) is int for idx in vocab.values()):  # as JSON gives it: keys are strings already
            return dict(vocab)
        return {str(token): int(idx) for token, idx in vocab.items()}

    #: whether a longer word that begins with a new word keeps its pieces (BPE looks a pre-token up whole; WordPiece's
    #: longest-prefix match and Unigram's Viterbi may start it with the new token)
    keeps_longer_words: ClassVar[bool] = False
    #: whether the model vocabulary must stay gap-free (vocab.txt lines, a Unigram list): a vocabulary entry
    #: placed past its end then becomes an added token
    dense_vocabulary: ClassVar[bool] = True

    def word_form(self, tokenizer_json: dict[str, Any] | None, pipeline: TextPipeline, text: str) -> str | None:
        """The form in which this family's model produces the word ``text`` in running text, when the family stores
        words so (byte-level BPE: ``Ġword``); None when the word is stored as the normalizer leaves it, or cannot be
        a word (the pre-tokenizer splits it: it becomes an added token)."""
        return None

    def check_word_forms(
        self, tokenizer_json: dict[str, Any] | None, tokenizer_config: dict[str, Any] | None, pipeline: TextPipeline
    ) -> list[str]:
        """What making words vocabulary entries changes besides them (see :meth:`finish_edit`), as notes for the
        plan; raises UnsupportedCheckpointError when it would change how other text encodes."""
        return []

    def finish_edit(self, docs: TokenizerDocs, words: list[str], pipeline: TextPipeline | None) -> None:
        """Called once every placement is in ``docs``, with the word forms placed (see :meth:`word_form`) and the
        source's pipeline (None when no word was placed)."""

    def can_hold_whole_word(self) -> bool:
        """Whether a word the pre-tokenizer keeps whole is matched whole once it is a vocabulary entry."""
        return False

    def longest_word(self, tokenizer_json: dict[str, Any] | None) -> int | None:
        """The longest word the model looks up at all (WordPiece gives a longer one ``[UNK]``): a longer token is
        an added token. None: no limit."""
        return None

    def keep_whole(self, docs: TokenizerDocs, tokens: list[str]) -> None:
        """Make the pre-tokenizer keep ``tokens`` (vocabulary entries it would split) whole, for loaders that do not
        match added tokens already in the vocabulary. Families whose added tokens always match do nothing."""

    def set_model_entries(self, docs: TokenizerDocs, entries: list[ModelEntry]) -> None:
        """Write ``entries`` into the model vocabulary (a renamed entry keeps its position)."""
        if docs.tokenizer_json is not None:
            vocab = docs.tokenizer_json["model"]["vocab"]
            docs.tokenizer_json["model"]["vocab"] = replace_keys(vocab, entries)


def running_text_form(pipeline: TextPipeline, text: str, marker: str) -> str | None:
    """The pre-token the source makes of ``text`` after a word and a space, when it is one pre-token that starts
    with the word-boundary ``marker`` (``Ġ``, ``▁``): the form the model must hold to produce the word in running
    text (see :func:`~vocabsurgeon.checks.after_context` for the shapes of pipeline). None otherwise (the
    pre-tokenizer splits the text, or puts no marker before it)."""
    context = pipeline.pre_tokenize(pipeline.normalize(CONTEXT))
    rest = after_context(context, pipeline.pre_tokenize(pipeline.normalize(f"{CONTEXT} {text}")))
    if rest is None or len(rest) != 1:
        return None
    form = rest[0]
    if not form.startswith(marker) or len(form) == len(marker):
        return None
    return form


def parse_added(entry: Any, path: Path) -> AddedToken:
    """An added token as tokenizer.json (or tokenizer_config's ``added_tokens_decoder``, with its id) writes it."""
    if not isinstance(entry, dict) or "content" not in entry or "id" not in entry:
        raise CheckpointFormatError("an added token has no 'id' or 'content'", path=path)
    return AddedToken(
        id=int(entry["id"]),
        content=str(entry["content"]),
        special=bool(entry.get("special", False)),
        normalized=bool(entry.get("normalized", not entry.get("special", False))),
        single_word=bool(entry.get("single_word", False)),
        lstrip=bool(entry.get("lstrip", False)),
        rstrip=bool(entry.get("rstrip", False)),
    )


def replace_keys(mapping: dict[str, int], entries: list[ModelEntry]) -> dict[str, int]:
    """A copy of ``mapping`` with each entry's placeholder renamed in place, other entries appended, in one pass."""
    renames = {e.replaces: e for e in entries if e.replaces is not None and e.replaces in mapping}
    out = {}
    for key, idx in mapping.items():
        entry = renames.get(key)
        if entry is None:
            out[key] = idx
        else:
            out[entry.token] = entry.id
    for entry in entries:
        if entry.replaces not in renames:
            out[entry.token] = entry.id
    return out
