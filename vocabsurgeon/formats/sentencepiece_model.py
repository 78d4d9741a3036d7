"""SentencePiece model files (``spiece.model``, ``tokenizer.model``, ``sentencepiece.bpe.model``).

Parsed and serialized with sentencepiece's own protobuf classes (``sentencepiece_model_pb2``), never by hand, so every
field this module does not touch (trainer and normalizer specs, scores, unknown fields of newer versions) survives a
parse/dump round trip byte for byte.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sentencepiece import sentencepiece_model_pb2 as _pb2

from ..errors import CheckpointFormatError

ModelProto: Any = _pb2.ModelProto  # type: ignore[attr-defined]  # generated at import time, no stubs

#: piece types by name, as ``ModelProto.SentencePiece.Type`` spells them
PIECE_TYPES: tuple[str, ...] = ("NORMAL", "UNKNOWN", "CONTROL", "USER_DEFINED", "UNUSED", "BYTE")


def parse_model(data: bytes, *, path: Path | str | None = None) -> Any:
    """A ``ModelProto`` from a .model file's bytes; anything that is not one is an error naming ``path``."""
    from google.protobuf.message import DecodeError

    model = ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as error:
        raise CheckpointFormatError(f"not a SentencePiece model ({error})", path=path) from None
    if not model.pieces:
        raise CheckpointFormatError("not a SentencePiece model (it has no pieces)", path=path)
    return model


def read_model(path: Path | str) -> Any:
    """Read a SentencePiece model file as a ``ModelProto``."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise CheckpointFormatError(f"cannot read: {error.strerror or error}", path=path) from None
    return parse_model(data, path=path)


def dump_model(model: Any) -> bytes:
    """The serialized model, as sentencepiece itself writes it (fields in number order)."""
    return bytes(model.SerializeToString())


def piece_type(name: str | int) -> int:
    """The enum value of a piece type given by name (``"USER_DEFINED"``) or value."""
    if isinstance(name, int):
        ModelProto.SentencePiece.Type.Name(name)  # raises ValueError for an unknown value
        return name
    if name not in PIECE_TYPES:
        raise ValueError(f"unknown SentencePiece piece type {name!r} (known: {', '.join(PIECE_TYPES)})")
    return int(ModelProto.SentencePiece.Type.Value(name))


def rename_piece(
    model: Any, index: int, new: str, type: str | int = "USER_DEFINED", *, pieces: dict[str, int] | None = None
) -> None:
    """Give piece ``index`` the text ``new`` and the type ``type``, keeping its score and position.

    SentencePiece refuses to load a model with an empty or duplicated piece, so both are errors here. ``pieces``, a
    :func:`piece_index` the caller keeps for several edits, spares a scan of the model and is kept up to date."""
    if not 0 <= index < len(model.pieces):
        raise IndexError(f"the model has {len(model.pieces)} pieces; there is no piece {index}")
    kind = piece_type(type)
    _check_new_piece(model, new, index, pieces)
    piece = model.pieces[index]
    if pieces is not None and pieces.get(piece.piece) == index:
        del pieces[piece.piece]
    piece.piece = new
    piece.type = kind
    if pieces is not None:
        pieces[new] = index


def append_piece(
    model: Any, piece: str, score: float, type: str | int = "USER_DEFINED", *, pieces: dict[str, int] | None = None
) -> int:
    """Add ``piece`` after the last one; returns its index (its SentencePiece id). ``pieces`` as for rename_piece."""
    kind = piece_type(type)
    _check_new_piece(model, piece, None, pieces)
    entry = model.pieces.add()
    entry.piece = piece
    entry.score = score
    entry.type = kind
    if pieces is not None:
        pieces[piece] = len(model.pieces) - 1
    return len(model.pieces) - 1


def _check_new_piece(model: Any, piece: str, skip: int | None, pieces: dict[str, int] | None) -> None:
    if not piece:
        raise ValueError("a SentencePiece piece cannot be empty")
    found = (
        pieces.get(piece)
        if pieces is not None
        else next((index for index, existing in enumerate(model.pieces) if existing.piece == piece), None)
    )
    if found is not None and found != skip:
        raise ValueError(f"the model already has the piece {piece!r} (id {found})")


def piece_index(model: Any) -> dict[str, int]:
    """Piece text -> id."""
    return {entry.piece: index for index, entry in enumerate(model.pieces)}


def normalizer(model: Any) -> Any:
    """A ``SentencePieceProcessor`` for ``model``, for its ``normalize``: what SentencePiece turns a text into before
    it looks pieces up (NFKC-like rules, whitespace as ``▁``, the dummy prefix)."""
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor()
    processor.LoadFromSerializedProto(dump_model(model))
    return processor
