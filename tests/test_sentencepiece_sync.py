"""The SentencePiece model beside tokenizer.json is kept in step with it.

transformers 5 reads tokenizer.json only, but transformers 4.x's slow tokenizers (T5Tokenizer, AlbertTokenizer,
XLMRobertaTokenizer, LlamaTokenizer) read ``spiece.model`` / ``tokenizer.model``. A slot placement renames the
slot's piece there too; appended tokens go to added_tokens.json and the .model stays a byte copy. The checks in
the transformers 4.24 interpreter (``VOCABSURGEON_TF424_PYTHON``) are marked ``compat``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pytest
import sentencepiece as spm
from checkpoints import CheckpointCache, build_llama_bpe, english_corpus, tiny_llama
from click.testing import CliRunner, Result
from sentencepiece import sentencepiece_model_pb2 as pb2
from transformers import AutoTokenizer

from vocabsurgeon.cli import main
from vocabsurgeon.errors import CheckpointFormatError
from vocabsurgeon.formats.sentencepiece_model import (
    append_piece,
    dump_model,
    parse_model,
    piece_index,
    read_model,
    rename_piece,
)

TF424_PYTHON = os.environ.get("VOCABSURGEON_TF424_PYTHON")
needs_424 = pytest.mark.skipif(
    not TF424_PYTHON, reason="VOCABSURGEON_TF424_PYTHON is unset (set it to the python of a transformers==4.24.0 venv)"
)

USER_DEFINED = pb2.ModelProto.SentencePiece.USER_DEFINED
NORMAL = pb2.ModelProto.SentencePiece.NORMAL
TOKEN_ARGS = ("--token", "hospitalization", "--token", "new york", "--special-token", "<special1>")
# slot id -> (token, piece in the .model): SentencePiece's normalized form, the special token as it is
REMAPPED = {3: ("hospitalization", "▁hospitalization"), 4: ("new york", "▁new▁york"), 5: ("<special1>", "<special1>")}
SENTENCE = "Patients in new york need hospitalization <special1> now."
#: the Unigram fixture: hospitalization and COVID-19 are words (each one pre-token in T5: their running-text piece, a
#: NORMAL piece scored to win), <special1> a special token
T5_TOKEN_ARGS = ("--token", "hospitalization", "--token", "COVID-19", "--special-token", "<special1>")
T5_REMAPPED = {
    3: ("hospitalization", "▁hospitalization"),
    4: ("COVID-19", "▁COVID-19"),
    5: ("<special1>", "<special1>"),
}
T5_WORDS = {3, 4}
T5_SENTENCE = "Patients with COVID-19 need hospitalization <special1> now."
PLAIN_TEXTS = (
    "The patients were admitted to the hospital in New York last week.",
    "A quick brown fox jumps over the lazy dog, doesn't it?",
    "Researchers published a new study about vaccine safety and public health.",
)


def run(*args: str | Path) -> Result:
    result = CliRunner().invoke(main, [str(arg) for arg in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def proto(path: Path) -> Any:
    model = pb2.ModelProto()  # type: ignore[attr-defined]
    model.ParseFromString(path.read_bytes())
    return model


def encode_5x(out: Path, texts: list[str]) -> dict[str, list[int]]:
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    return {text: list(tokenizer.encode(text, add_special_tokens=False)) for text in texts}


# --------------------------------------------------------------------------------------------------
# formats.sentencepiece_model
# --------------------------------------------------------------------------------------------------

TRAININGS: dict[str, dict[str, Any]] = {
    "unigram": {"model_type": "unigram", "vocab_size": 300},
    "bpe-byte-fallback": {"model_type": "bpe", "vocab_size": 400, "byte_fallback": True},
    "char": {"model_type": "char"},
    "word": {"model_type": "word", "vocab_size": 200},
    "unigram-user-defined-no-dummy-prefix": {
        "model_type": "unigram",
        "vocab_size": 300,
        "user_defined_symbols": ["<unused0>", "<unused1>"],
        "control_symbols": ["<ctrl>"],
        "add_dummy_prefix": False,
        "normalization_rule_name": "nfkc_cf",
        "pad_id": 3,
    },
}


def train(options: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(english_corpus()), model_writer=buffer, num_threads=1, minloglevel=2, **options
    )
    return buffer.getvalue()


@pytest.fixture(scope="module", params=list(TRAININGS))
def trained(request: pytest.FixtureRequest) -> bytes:
    return train(TRAININGS[request.param])


def test_parse_dump_round_trip_is_byte_identical(trained: bytes, tmp_path: Path) -> None:
    assert dump_model(parse_model(trained)) == trained
    (tmp_path / "spiece.model").write_bytes(trained)
    assert dump_model(read_model(tmp_path / "spiece.model")) == trained


def test_round_trip_of_the_unigram_fixture(unigram_dir: Path) -> None:
    data = (unigram_dir / "spiece.model").read_bytes()
    model = read_model(unigram_dir / "spiece.model")
    assert [p.piece for p in model.pieces[3:13]] == [f"<unused{i}>" for i in range(10)]
    assert dump_model(model) == data


def test_rename_piece_keeps_position_and_score(trained: bytes) -> None:
    model = parse_model(trained)
    index = max(i for i, piece in enumerate(model.pieces) if piece.type == pb2.ModelProto.SentencePiece.NORMAL)
    before = parse_model(trained)
    rename_piece(model, index, "▁hospitalization", "USER_DEFINED")
    assert model.pieces[index].piece == "▁hospitalization"
    assert model.pieces[index].type == USER_DEFINED
    assert model.pieces[index].score == before.pieces[index].score
    before.pieces[index].piece = "▁hospitalization"
    before.pieces[index].type = USER_DEFINED
    assert model == before  # nothing else moved
    processor = spm.SentencePieceProcessor(model_proto=dump_model(model))
    assert processor.id_to_piece(index) == "▁hospitalization"


def test_append_piece(trained: bytes) -> None:
    model = parse_model(trained)
    size = len(model.pieces)
    assert append_piece(model, "<special9>", 0.0, "USER_DEFINED") == size
    assert append_piece(model, "<ctrl9>", 0.0, "CONTROL") == size + 1
    processor = spm.SentencePieceProcessor(model_proto=dump_model(model))
    assert processor.get_piece_size() == size + 2
    assert processor.piece_to_id("<special9>") == size
    assert processor.is_control(size + 1)
    assert dump_model(model).startswith(trained[:16])


def test_rename_and_append_refuse_what_sentencepiece_would_not_load(trained: bytes) -> None:
    model = parse_model(trained)
    existing = model.pieces[len(model.pieces) - 1].piece
    with pytest.raises(ValueError, match="already has the piece"):
        rename_piece(model, 0, existing)
    with pytest.raises(ValueError, match="already has the piece"):
        rename_piece(model, 0, existing, pieces=piece_index(model))
    with pytest.raises(ValueError, match="already has the piece"):
        append_piece(model, existing, 0.0)
    with pytest.raises(ValueError, match="empty"):
        rename_piece(model, 0, "")
    with pytest.raises(IndexError):
        rename_piece(model, len(model.pieces), "new")
    with pytest.raises(ValueError, match="unknown SentencePiece piece type"):
        rename_piece(model, 0, "new", "SPECIAL")
    assert dump_model(model) == trained  # a refused edit changes nothing
    rename_piece(model, len(model.pieces) - 1, existing)  # its own text again is fine


def test_a_file_that_is_no_model_is_a_format_error(tmp_path: Path) -> None:
    for name, data in (("garbage.model", b"\xff\xff\xff\xff not a protobuf"), ("empty.model", b"")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointFormatError, match=r"not a SentencePiece model") as error:
            read_model(tmp_path / name)
        assert name in str(error.value)


# --------------------------------------------------------------------------------------------------
# remap on the T5-like unigram fixture
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def remapped_unigram(unigram_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "t5-remapped"
    run("remap", unigram_dir, "--out", out, *T5_TOKEN_ARGS)
    return out


def test_remap_renames_the_slot_pieces(unigram_dir: Path, remapped_unigram: Path) -> None:
    processor = spm.SentencePieceProcessor(model_file=str(remapped_unigram / "spiece.model"))
    assert processor.get_piece_size() == 300
    for slot, (token, piece) in T5_REMAPPED.items():
        assert processor.id_to_piece(slot) == piece
        if not token.startswith("<"):
            assert processor.encode(token) == [slot]  # what a 4.x slow tokenizer hands SentencePiece
    assert processor.piece_to_id("<special1>") == 5  # 4.x splits special tokens off and looks them up so
    assert [processor.id_to_piece(i) for i in range(6, 13)] == [f"<unused{i}>" for i in range(3, 10)]


def test_remap_leaves_the_rest_of_the_model_as_it_was(unigram_dir: Path, remapped_unigram: Path) -> None:
    source, out = proto(unigram_dir / "spiece.model"), proto(remapped_unigram / "spiece.model")
    assert len(out.pieces) == len(source.pieces)
    tokenizer_json = json.loads((remapped_unigram / "tokenizer.json").read_text(encoding="utf-8"))
    scores = {index: tokenizer_json["model"]["vocab"][index][1] for index in T5_WORDS}
    assert all(score < 0 for score in scores.values())  # scored against the word's old segmentation, not 0
    for index, (old, new) in enumerate(zip(source.pieces, out.pieces, strict=True)):
        if index in T5_WORDS:  # a word: a NORMAL piece with the tokenizer.json score (float32 in the .model)
            assert (new.piece, new.type) == (T5_REMAPPED[index][1], NORMAL)
            assert new.score == pytest.approx(scores[index], abs=1e-5)
        elif index in T5_REMAPPED:
            assert (new.piece, new.type, new.score) == (T5_REMAPPED[index][1], USER_DEFINED, old.score)
        else:
            assert (new.piece, new.type, new.score) == (old.piece, old.type, old.score), index
    for spec in ("trainer_spec", "normalizer_spec", "denormalizer_spec"):
        assert getattr(out, spec) == getattr(source, spec), spec
    for index, (_, piece) in T5_REMAPPED.items():  # and as a whole message: nothing else differs
        source.pieces[index].piece = piece
        source.pieces[index].type = NORMAL if index in T5_WORDS else USER_DEFINED
        source.pieces[index].score = out.pieces[index].score
    assert out == source
    assert out.SerializeToString() == source.SerializeToString()


def test_remap_keeps_transformers_5_encoding_each_token_to_its_id(remapped_unigram: Path) -> None:
    encoded = encode_5x(remapped_unigram, [token for token, _ in T5_REMAPPED.values()])
    assert encoded == {token: [slot] for slot, (token, _) in T5_REMAPPED.items()}
    tokenizer_json = json.loads((remapped_unigram / "tokenizer.json").read_text(encoding="utf-8"))
    assert [entry[0] for entry in tokenizer_json["model"]["vocab"][3:6]] == [p for _, p in T5_REMAPPED.values()]
    assert not (remapped_unigram / "added_tokens.json").exists()  # every token has a piece in the .model


def test_model_without_the_placeholder_at_the_slot_is_left_as_it_is(unigram_dir: Path, tmp_path: Path) -> None:
    """A .model whose ids are not tokenizer.json's (here: another piece at the slot) is not renamed by id."""
    model = proto(unigram_dir / "spiece.model")
    model.pieces[3].piece = "<other0>"
    (unigram_dir / "spiece.model").write_bytes(model.SerializeToString())
    out = tmp_path / "out"
    run("remap", unigram_dir, "--out", out, "--token", "hospitalization")
    assert (out / "spiece.model").read_bytes() == (unigram_dir / "spiece.model").read_bytes()
    assert encode_5x(out, ["hospitalization"]) == {"hospitalization": [3]}


def test_a_string_t5_cannot_decode_back_is_refused(unigram_dir: Path, tmp_path: Path) -> None:
    """T5 splits ``new york`` at the space, so it could only be an added token, which T5's Metaspace decoder gives
    back without the space before it: the surgery's check refuses it, one line, nothing written."""
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    result = CliRunner().invoke(main, ["remap", str(unigram_dir), "--out", str(outputs / "out"), "--token", "new york"])
    assert result.exit_code == 1
    assert "decode to themselves: 'a new york, new york.' -> 'anew york" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert list(outputs.iterdir()) == []  # no output, no staging directory


def test_a_word_whose_running_text_piece_exists_is_skipped(unigram_dir: Path, tmp_path: Path) -> None:
    """``hospital`` is not in the vocabulary, but ``▁hospital``, its form in running text, is: nothing to add."""
    source = spm.SentencePieceProcessor(model_file=str(unigram_dir / "spiece.model"))
    assert source.piece_to_id("▁hospital") != source.unk_id()
    report = json.loads(run("remap", unigram_dir, "--dry-run", "--json", "--token", "hospital").output)
    assert report["plan"]["placements"] == []
    assert [s["token"] for s in report["plan"]["skipped"]] == ["hospital"]


# --------------------------------------------------------------------------------------------------
# append on the unigram fixture: added_tokens.json, the .model untouched
# --------------------------------------------------------------------------------------------------

APPENDED = {"hospitalization": 300, "<special9>": 301}
#: what added_tokens.json lists: tokens outside the .model (the word is a piece of it, appended)
APPENDED_ADDED = {"<special9>": 301}


@pytest.fixture
def appended_unigram(unigram_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "t5-appended"
    run("append", unigram_dir, "--out", out, "--token", "hospitalization", "--special-token", "<special9>")
    return out


def test_append_adds_the_word_to_the_model_and_the_rest_to_added_tokens_json(
    unigram_dir: Path, appended_unigram: Path
) -> None:
    source, out = proto(unigram_dir / "spiece.model"), proto(appended_unigram / "spiece.model")
    assert len(out.pieces) == len(source.pieces) + 1
    assert (out.pieces[300].piece, out.pieces[300].type) == ("▁hospitalization", NORMAL)
    del out.pieces[300]
    assert out == source
    added = json.loads((appended_unigram / "added_tokens.json").read_text(encoding="utf-8"))
    assert added == APPENDED_ADDED
    assert encode_5x(appended_unigram, list(APPENDED)) == {token: [idx] for token, idx in APPENDED.items()}


# --------------------------------------------------------------------------------------------------
# transformers 4.24's slow T5Tokenizer, which reads spiece.model and added_tokens.json
# --------------------------------------------------------------------------------------------------

SLOW_SCRIPT = textwrap.dedent(
    """
    import json, sys, warnings
    warnings.simplefilter("ignore")
    import transformers
    from transformers import AutoTokenizer
    args = json.loads(sys.argv[1])
    report = {"transformers": transformers.__version__}
    for label in ("out", "src"):
        tokenizer = AutoTokenizer.from_pretrained(args[label], use_fast=False, local_files_only=True)
        report[label] = {
            "class": type(tokenizer).__name__,
            "len": len(tokenizer),
            "ids": {text: tokenizer.encode(text, add_special_tokens=False) for text in args["texts"]},
        }
    print(json.dumps(report))
    """
)


def slow_424(out: Path, src: Path, texts: list[str]) -> dict[str, Any]:
    assert TF424_PYTHON is not None
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    args = json.dumps({"out": str(out), "src": str(src), "texts": texts})
    done = subprocess.run(
        [TF424_PYTHON, "-c", SLOW_SCRIPT, args], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.compat
@needs_424
def test_424_slow_tokenizer_encodes_the_remapped_tokens(unigram_dir: Path, remapped_unigram: Path) -> None:
    tokens = [token for token, _ in T5_REMAPPED.values()]
    report = slow_424(remapped_unigram, unigram_dir, [*tokens, T5_SENTENCE, *PLAIN_TEXTS])
    assert report["transformers"] == "4.24.0"
    assert report["out"]["class"] == "T5Tokenizer"
    assert report["out"]["len"] == 300
    ids = report["out"]["ids"]
    assert {token: ids[token] for token in tokens} == {token: [slot] for slot, (token, _) in T5_REMAPPED.items()}
    # within a sentence as well, and as transformers 5 encodes it
    assert ids[T5_SENTENCE] == encode_5x(remapped_unigram, [T5_SENTENCE])[T5_SENTENCE]
    assert {3, 4, 5} <= set(ids[T5_SENTENCE])
    for text in PLAIN_TEXTS:  # text without the new tokens encodes as before
        assert ids[text] == report["src"]["ids"][text]


@pytest.mark.compat
@needs_424
def test_424_slow_tokenizer_encodes_the_appended_tokens(unigram_dir: Path, appended_unigram: Path) -> None:
    sentence = "Patients need hospitalization <special9> now."
    report = slow_424(appended_unigram, unigram_dir, [*APPENDED, sentence, *PLAIN_TEXTS])
    assert report["out"]["class"] == "T5Tokenizer"
    assert report["out"]["len"] == 302
    ids = report["out"]["ids"]
    assert {token: ids[token] for token in APPENDED} == {token: [idx] for token, idx in APPENDED.items()}
    assert ids[sentence] == encode_5x(appended_unigram, [sentence])[sentence]
    for text in PLAIN_TEXTS:
        assert ids[text] == report["src"]["ids"][text]


# --------------------------------------------------------------------------------------------------
# Llama-2 style: SentencePiece BPE tokenizer.model, tokenizer.json converted by transformers
# --------------------------------------------------------------------------------------------------


def build_llama2_spm(path: Path, *, vocab_size: int = 400, unused: int = 10) -> Path:
    """A tiny Llama-2-like checkpoint: ``tokenizer.model`` trained in memory (SentencePiece BPE, byte fallback,
    ``<unk>`` 0, ``<s>`` 1, ``</s>`` 2, user-defined ``<unused0..>`` at 3 ..), ``tokenizer.json`` from transformers'
    own conversion of it (a ``BPE`` model), and a tiny untied ``LlamaForCausalLM``."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "tokenizer.model").write_bytes(
        train(
            {
                "model_type": "bpe",
                "vocab_size": vocab_size,
                "byte_fallback": True,
                "user_defined_symbols": [f"<unused{i}>" for i in range(unused)],
                "unk_id": 0,
                "bos_id": 1,
                "eos_id": 2,
                "pad_id": -1,
            }
        )
    )
    specials = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "legacy": True,
        "model_max_length": 2048,
        **specials,
    }
    write_json(path / "tokenizer_config.json", config)
    with tempfile.TemporaryDirectory() as tmp:
        AutoTokenizer.from_pretrained(path).save_pretrained(tmp)  # converts tokenizer.model (LlamaConverter)
        shutil.copyfile(Path(tmp) / "tokenizer.json", path / "tokenizer.json")
    added = json.loads((path / "tokenizer.json").read_text(encoding="utf-8"))["added_tokens"]
    keys = ("content", "lstrip", "normalized", "rstrip", "single_word", "special")
    config["added_tokens_decoder"] = {str(t["id"]): {k: t[k] for k in keys} for t in added}
    write_json(path / "tokenizer_config.json", config)
    write_json(path / "special_tokens_map.json", specials)
    tiny_llama(vocab_size, bos_token_id=1, eos_token_id=2).save_pretrained(path)
    return path


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


@pytest.fixture
def llama2_dir(checkpoint_cache: CheckpointCache, tmp_path: Path) -> Path:
    return checkpoint_cache.copy("llama2_spm", build_llama2_spm, tmp_path)


def test_llama2_fixture_is_bpe_with_slots_in_the_model(llama2_dir: Path) -> None:
    tokenizer_json = json.loads((llama2_dir / "tokenizer.json").read_text(encoding="utf-8"))
    assert tokenizer_json["model"]["type"] == "BPE"
    processor = spm.SentencePieceProcessor(model_file=str(llama2_dir / "tokenizer.model"))
    vocab = tokenizer_json["model"]["vocab"]
    assert all(vocab[processor.id_to_piece(i)] == i for i in range(processor.get_piece_size()))
    assert [processor.id_to_piece(i) for i in range(3, 6)] == ["<unused0>", "<unused1>", "<unused2>"]


def test_llama2_remap_renames_the_tokenizer_model_pieces(llama2_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "llama2-remapped"
    run("remap", llama2_dir, "--out", out, *TOKEN_ARGS)
    source, renamed = proto(llama2_dir / "tokenizer.model"), proto(out / "tokenizer.model")
    for index, (_, piece) in REMAPPED.items():
        assert (renamed.pieces[index].piece, renamed.pieces[index].type) == (piece, USER_DEFINED)
        source.pieces[index].piece = piece
        source.pieces[index].type = USER_DEFINED
    assert renamed == source
    # what LlamaTokenizer (legacy, 4.28+) does with text: sp_model.encode
    processor = spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
    assert processor.encode("hospitalization") == [3]
    assert processor.encode("new york") == [4]
    assert processor.piece_to_id("<special1>") == 5
    expected = {token: [slot] for slot, (token, _) in REMAPPED.items()}
    assert encode_5x(out, [token for token, _ in REMAPPED.values()]) == expected


def test_llama2_append_adds_the_word_to_the_model_and_the_special_token_to_added_tokens_json(
    llama2_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "llama2-appended"
    run("append", llama2_dir, "--out", out, "--token", "hospitalization", "--special-token", "<special9>")
    source, model = proto(llama2_dir / "tokenizer.model"), proto(out / "tokenizer.model")
    assert (model.pieces[400].piece, model.pieces[400].type) == ("▁hospitalization", USER_DEFINED)
    del model.pieces[400]
    assert model == source
    assert spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model")).encode("a hospitalization")[-1] == 400
    added = json.loads((out / "added_tokens.json").read_text(encoding="utf-8"))
    assert added == {"<special9>": 401}


# --------------------------------------------------------------------------------------------------
# byte-level BPE: vocab.json is the slow tokenizer's vocabulary, a checkpoint without one gets no added_tokens.json
# --------------------------------------------------------------------------------------------------


def test_byte_level_bpe_append_writes_added_tokens_json_only_beside_vocab_json(tmp_path: Path) -> None:
    """An added token (COVID-19: the pre-tokenizer splits it) goes to added_tokens.json where a slow vocabulary
    file is beside tokenizer.json; a word (Ġhospitalization) is a vocabulary entry, in vocab.json too."""
    source = build_llama_bpe(tmp_path / "llama3")
    plain = tmp_path / "plain"
    run("append", source, "--out", plain, "--token", "hospitalization", "--token", "COVID-19")
    assert not (plain / "added_tokens.json").exists()  # no slow tokenizer to tell

    vocab = json.loads((source / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
    write_json(source / "vocab.json", vocab)
    with_vocab = tmp_path / "with-vocab"
    run("append", source, "--out", with_vocab, "--token", "hospitalization", "--token", "COVID-19")
    assert json.loads((with_vocab / "added_tokens.json").read_text(encoding="utf-8")) == {"COVID-19": 513}
    assert json.loads((with_vocab / "vocab.json").read_text(encoding="utf-8")) == {
        **vocab,
        "\u0120hospitalization": 512,
    }
