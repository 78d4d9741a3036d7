"""The remapped MiniLM as transformers 4.24.0 (tokenizers 0.13) sees it, in the interpreter named by
``VOCABSURGEON_TF424_PYTHON`` (CI builds that venv; locally e.g. ``/work/venv424/bin/python``)."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from transformers import AutoTokenizer

from vocabsurgeon.cli import main

TF424_PYTHON = os.environ.get("VOCABSURGEON_TF424_PYTHON")

pytestmark = [
    pytest.mark.compat,
    pytest.mark.skipif(
        not TF424_PYTHON,
        reason="VOCABSURGEON_TF424_PYTHON is unset (set it to the python of a transformers==4.24.0 venv)",
    ),
]

TOKEN_ARGS = ("--token", "COVID", "--token", "hospitalization", "--token", "COVID-19", "--special-token", "[special1]")
SINGLE = ("hospitalization", "COVID", "[special1]")
SENTENCE = "COVID-19 patients need hospitalization [special1] now"
SENTENCE_PIECES = ["covid-19", "patients", "need", "hospitalization", "[special1]", "now"]
PLAIN_TEXTS = (
    "The patients were admitted to the hospital in New York last week.",
    "A quick brown fox jumps over the lazy dog, doesn't it?",
    "Numbers like 3.14, 1,000 and 2026-11-25 and symbols: @#$%^&*()!",
    "한국어 문장도 토큰화합니다. 日本語のテキスト。 Ünïcödé àccents.",
)

TOKENIZER_SCRIPT = textwrap.dedent(
    """
    import json, sys, warnings
    warnings.simplefilter("ignore")
    import tokenizers, transformers
    from transformers import AutoTokenizer
    args = json.loads(sys.argv[1])
    report = {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__}
    for label, fast in (("fast", True), ("slow", False)):
        out = AutoTokenizer.from_pretrained(args["out"], use_fast=fast, local_files_only=True)
        src = AutoTokenizer.from_pretrained(args["src"], use_fast=fast, local_files_only=True)
        report[label] = {
            "class": type(out).__name__,
            "len": len(out),
            "words": {w: out.encode(w, add_special_tokens=False) for w in args["words"]},
            "sentence_pieces": out.tokenize(args["sentence"]),
            "sentence_ids": out.encode(args["sentence"], add_special_tokens=False),
            "texts_out": [out.encode(t) for t in args["texts"]],
            "texts_src": [src.encode(t) for t in args["texts"]],
        }
    print(json.dumps(report))
    """
)

MODEL_SCRIPT = textwrap.dedent(
    """
    import json, sys, warnings
    warnings.simplefilter("ignore")
    import torch
    from transformers import AutoModel
    args = json.loads(sys.argv[1])
    model = AutoModel.from_pretrained(args["out"], local_files_only=True)
    weight = model.get_input_embeddings().weight.detach()
    ids = torch.tensor([args["ids"]])
    with torch.no_grad():
        hidden = model(input_ids=ids).last_hidden_state[0, :, :4]
    print(json.dumps({
        "vocab_size": model.config.vocab_size,
        "rows": weight.shape[0],
        "placed": {str(i): weight[i].tolist() for i in args["placed"]},
        "hidden": hidden.tolist(),
    }))
    """
)


def run_424(script: str, args: dict[str, Any]) -> dict[str, Any]:
    assert TF424_PYTHON is not None
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(
        [TF424_PYTHON, "-c", script, json.dumps(args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


class Remapped:
    def __init__(self, src: Path, out: Path) -> None:
        self.src, self.out = src, out
        self.ids = {t["token"]: t["id"] for t in json.loads((out / "vocabsurgeon.json").read_text())["tokens"]}
        tokenizer = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
        self.words_5x = {w: list(tokenizer.encode(w, add_special_tokens=False)) for w in (*SINGLE, "COVID-19")}
        self.texts_5x = [list(tokenizer.encode(t)) for t in PLAIN_TEXTS]
        self.report = run_424(
            TOKENIZER_SCRIPT,
            {
                "out": str(out),
                "src": str(src),
                "words": [*SINGLE, "COVID-19"],
                "sentence": SENTENCE,
                "texts": list(PLAIN_TEXTS),
            },
        )


@pytest.fixture(scope="module")
def remapped(minilm_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Remapped:
    out = tmp_path_factory.mktemp("out424") / "minilm-bio"
    result = CliRunner().invoke(main, ["remap", str(minilm_src), "--out", str(out), *TOKEN_ARGS])
    assert result.exit_code == 0, result.output
    return Remapped(minilm_src, out)


def test_interpreter_is_transformers_4_24(remapped: Remapped) -> None:
    assert remapped.report["transformers"] == "4.24.0"
    assert remapped.report["tokenizers"].startswith("0.13.")


@pytest.mark.parametrize(("label", "cls"), [("fast", "BertTokenizerFast"), ("slow", "BertTokenizer")])
def test_tokenizers_load(remapped: Remapped, label: str, cls: str) -> None:
    assert remapped.report[label]["class"] == cls
    assert remapped.report[label]["len"] == 30522


@pytest.mark.parametrize("label", ["fast", "slow"])
@pytest.mark.parametrize("word", SINGLE)
def test_new_tokens_are_one_id_as_in_5x(remapped: Remapped, label: str, word: str) -> None:
    assert remapped.words_5x[word] == [remapped.ids[word]]
    assert remapped.report[label]["words"][word] == remapped.words_5x[word]


def test_slow_tokenizer_keeps_covid_19_whole(remapped: Remapped) -> None:
    assert remapped.report["slow"]["words"]["COVID-19"] == [remapped.ids["COVID-19"]]


def test_slow_tokenizer_sentence_is_six_pieces(remapped: Remapped) -> None:
    slow = remapped.report["slow"]
    assert slow["sentence_pieces"] == SENTENCE_PIECES
    assert slow["sentence_ids"][0] == remapped.ids["COVID-19"]
    assert slow["sentence_ids"][3:5] == [remapped.ids["hospitalization"], remapped.ids["[special1]"]]


def test_fast_tokenizer_keeps_covid_19_whole(remapped: Remapped) -> None:
    assert remapped.report["fast"]["words"]["COVID-19"] == [remapped.ids["COVID-19"]]


@pytest.mark.parametrize("label", ["fast", "slow"])
def test_texts_without_new_tokens_encode_as_the_source(remapped: Remapped, label: str) -> None:
    report = remapped.report[label]
    assert report["texts_out"] == report["texts_src"]
    assert report["texts_out"] == remapped.texts_5x


@pytest.fixture(scope="module")
def pytorch_out(minilm_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pt424") / "minilm-bio-pt"
    result = CliRunner().invoke(
        main, ["remap", str(minilm_src), "--out", str(out), *TOKEN_ARGS, "--weights-format", "pytorch"]
    )
    if result.exit_code != 0:
        pytest.skip(f"remap --weights-format pytorch is not available: {result.stderr.strip() or result.output}")
    return out


def test_pytorch_output_loads_with_automodel_424(pytorch_out: Path, remapped: Remapped) -> None:
    import numpy as np
    from safetensors.numpy import load_file

    assert (pytorch_out / "pytorch_model.bin").is_file()
    assert not (pytorch_out / "model.safetensors").exists()
    placed = sorted(remapped.ids.values())
    sentence = [101, *remapped.report["slow"]["sentence_ids"], 102]
    report = run_424(MODEL_SCRIPT, {"out": str(pytorch_out), "ids": sentence, "placed": placed})
    assert report["vocab_size"] == report["rows"] == 30522
    expected = load_file(str(remapped.out / "model.safetensors"))["embeddings.word_embeddings.weight"]
    for idx in placed:
        assert np.array_equal(np.asarray(report["placed"][str(idx)], dtype=np.float32), expected[idx]), idx
    assert np.isfinite(np.asarray(report["hidden"])).all()
