"""``--init distill`` and ``readiness``: on a tiny BERT MLM (tied decoder, a vocabulary bias) and a tiny Llama-style
causal LM (untied head), the distilled output loads with no missing or unexpected keys, differs from the
subword-mean surgery only in the new rows, is deterministic, and reads held-out contexts better."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

from vocabsurgeon.cli import main

WORDS = ["hospitalization", "thrombocytopenia"]
FIT = [
    "The {} was recorded in the chart after the visit.",
    "Doctors discussed {} with the family on Monday.",
    "Her notes mention {} and a follow-up plan.",
    "We found that {} was common in the older group.",
    "A later review of {} changed the treatment.",
    "The nurse asked about {} before the test.",
    "Reports of {} rose during the winter months.",
    "His history includes {} from several years ago.",
    "The team studied {} in a small trial.",
    "Questions about {} came up at the meeting.",
]
HELD_OUT = [
    "Nobody expected {} to matter this much.",
    "The letter explains {} in plain words.",
    "After the storm, {} was the first concern.",
    "She wrote a short summary of {} for the board.",
    "Most readers skip the part on {} entirely.",
    "The old manual says little about {} at all.",
    "They compared {} across three cities.",
    "In the end {} decided the outcome.",
]


def invoke(*args: str | Path) -> Any:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def corpus(path: Path, templates: list[str]) -> Path:
    path.write_text("".join(t.format(w) + "\n" for t in templates for w in WORDS), encoding="utf-8")
    return path


@pytest.fixture(params=["bert_dir", "bert_pytorch_dir", "llama_dir", "qwen3"])
def model(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """Tiny BERT MLM (safetensors, pytorch_model.bin), tiny Llama (untied head), and a Qwen3-style bf16 causal LM
    with the real Qwen3 tokenizer files (tied)."""
    if request.param == "qwen3":
        from real_tokenizers import build_real_checkpoint

        return build_real_checkpoint(tmp_path / "qwen3", "qwen3")
    return Path(request.getfixturevalue(request.param))


def weights(directory: Path) -> dict[str, torch.Tensor]:
    if (directory / "model.safetensors").is_file():
        return load_file(str(directory / "model.safetensors"))
    return torch.load(directory / "pytorch_model.bin", map_location="cpu", weights_only=True)


def surgery(model: Path, out: Path, *extra: str | Path) -> dict[str, Any]:
    args = [a for w in WORDS for a in ("--token", w)]
    result = invoke("remap", model, "--out", out, *args, "--json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_distilled_rows_differ_only_where_new_and_read_held_out_text_better(model: Path, tmp_path: Path) -> None:
    fit, held_out = corpus(tmp_path / "fit.txt", FIT), corpus(tmp_path / "held.txt", HELD_OUT)
    plain, distilled = tmp_path / "plain", tmp_path / "distilled"
    surgery(model, plain)
    report = surgery(model, distilled, "--init", "distill", "--corpus", fit, "--distill-steps", "10")
    ids = {p["token"]: p["id"] for p in report["plan"]["placements"]}
    assert {p["init"] for p in report["plan"]["placements"]} == {"distill"}

    # loads as the source's class, nothing missing or unexpected
    loader = AutoModelForCausalLM if (model / "config.json").read_text().count("CausalLM") else AutoModelForMaskedLM
    loaded, info = loader.from_pretrained(str(distilled), output_loading_info=True)
    assert not info["missing_keys"]
    assert not info["unexpected_keys"]
    tokenizer = AutoTokenizer.from_pretrained(str(distilled))
    for word in WORDS:  # the word is one id inside a sentence
        assert (
            tokenizer(f"The patient's {word} was noted.", add_special_tokens=False)["input_ids"].count(ids[word]) == 1
        )

    # every row but the new ones bit-identical to the subword-mean surgery's
    a, b = weights(plain), weights(distilled)
    assert a.keys() == b.keys()
    new = sorted(ids.values())
    embedding = loaded.get_input_embeddings().weight.shape[0]
    changed = []
    for name in a:
        if a[name].shape[:1] == (embedding,) or (a[name].dim() == 1 and a[name].shape[0] == embedding):
            keep = [i for i in range(a[name].shape[0]) if i not in new]
            assert torch.equal(a[name][keep], b[name][keep]), name
            if not torch.equal(a[name][new], b[name][new]):
                changed.append(name)
        else:
            assert torch.equal(a[name], b[name]), name
    input_name = next(n for n in a if n.endswith(("embed_tokens.weight", "word_embeddings.weight")))
    assert input_name in changed
    manifest = json.loads((distilled / "vocabsurgeon.json").read_text(encoding="utf-8"))
    assert manifest["distill"]["method"] == "token-distillation"
    assert manifest["distill"]["settings"]["steps"] == 10
    for entry in manifest["distill"]["words"]:
        assert entry["corpus_contexts"] == len(FIT)
        assert entry["loss_after"] < entry["loss_before"]
    if "lm_head.weight" in a:  # untied head: the first piece's row, so the new logit is the first piece's
        source = weights(model)["lm_head.weight"]
        for placement in report["plan"]["placements"]:
            assert torch.equal(b["lm_head.weight"][placement["id"]], source[placement["pieces"][0]])

    # readiness on held-out sentences: better than the subword mean
    scores = {}
    for name, out in (("plain", plain), ("distilled", distilled)):
        result = invoke("readiness", out, "--against", model, "--corpus", held_out, "--json")
        assert result.exit_code == 0, result.output
        scores[name] = json.loads(result.stdout)
        assert [w["contexts"] for w in scores[name]["words"]] == [len(HELD_OUT)] * len(WORDS)
    # an encoder's pooled sentence embedding (what the loss weighs most), a decoder's states from the word on
    key = "sentence_mean" if scores["plain"]["sentence_mean"] is not None else "states_mean"
    assert scores["distilled"][key] > scores["plain"][key]
    if key == "sentence_mean":
        assert scores["distilled"]["sentence_min"] > scores["plain"]["sentence_min"]

    # the same inputs give the same bytes
    again = tmp_path / "again"
    surgery(model, again, "--init", "distill", "--corpus", fit, "--distill-steps", "10")
    assert weights(again).keys() == b.keys()
    assert all(torch.equal(weights(again)[name], b[name]) for name in b)


def test_distill_without_a_corpus_generates_contexts_and_a_saved_plan_applies(bert_dir: Path, tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    out = tmp_path / "out"
    args = ("--init", "distill", "--distill-steps", "3", "--save-plan", plan, "--dry-run")
    assert invoke("remap", bert_dir, "--token", WORDS[0], *args).exit_code == 0
    saved = json.loads(plan.read_text(encoding="utf-8"))
    assert saved["distill"]["corpus"] == []
    assert saved["distill"]["steps"] == 3
    result = invoke("apply", plan, "--out", out, "-q")
    assert result.exit_code == 0, result.output
    words = json.loads((out / "vocabsurgeon.json").read_text(encoding="utf-8"))["distill"]["words"]
    assert words[0]["corpus_contexts"] == 0
    assert words[0]["generated_contexts"] == 8


def test_distill_options_need_distill(bert_dir: Path, tmp_path: Path) -> None:
    result = invoke("remap", bert_dir, "--out", tmp_path / "out", "--token", WORDS[0], "--corpus", tmp_path)
    assert result.exit_code == 2
    assert "--corpus is for --init distill" in result.output
    assert not (tmp_path / "out").exists()


def test_a_batch_recipe_distils(bert_dir: Path, tmp_path: Path) -> None:
    fit = corpus(tmp_path / "fit.txt", FIT)
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(
        f'tokens = ["{WORDS[0]}"]\nstrategy = "remap"\ninit = "distill"\ncorpus = ["{fit.name}"]\ndistill_steps = 4\n',
        encoding="utf-8",
    )
    result = invoke("batch", recipe, bert_dir, "--out-root", tmp_path / "batch", "--jobs", "1", "-q")
    assert result.exit_code == 0, result.output
    (manifest_path,) = (tmp_path / "batch").rglob("vocabsurgeon.json")
    distill = json.loads(manifest_path.read_text(encoding="utf-8"))["distill"]
    assert distill["settings"]["corpus"] == [str(fit.resolve())]
    assert distill["words"][0]["corpus_contexts"] == len(FIT)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(f'tokens = ["{WORDS[0]}"]\ncorpus = ["{fit.name}"]\n', encoding="utf-8")
    refused = invoke("batch", wrong, bert_dir, "--out-root", tmp_path / "other", "-q")
    assert refused.exit_code != 0
    assert 'corpus is for init = "distill"' in refused.output


def test_a_sentence_transformers_directory_loads_and_reads_better(minilm: Path, tmp_path: Path) -> None:
    """The real all-MiniLM-L6-v2: the distilled output loads in sentence-transformers, and its embeddings of held-out
    sentences agree with the source's better than the subword mean's (readiness uses its mean pooling)."""
    from sentence_transformers import SentenceTransformer

    fit, held_out = corpus(tmp_path / "fit.txt", FIT), corpus(tmp_path / "held.txt", HELD_OUT)
    plain, distilled = tmp_path / "plain", tmp_path / "distilled"
    surgery(minilm, plain)
    surgery(minilm, distilled, "--init", "distill", "--corpus", fit, "--distill-steps", "6")
    encoder = SentenceTransformer(str(distilled), device="cpu")
    source = SentenceTransformer(str(minilm), device="cpu")
    sentence = HELD_OUT[0].format(WORDS[1])
    similarity = float(encoder.similarity(encoder.encode([sentence]), source.encode([sentence]))[0][0])
    assert similarity > 0.9
    means = {}
    for name, out in (("plain", plain), ("distilled", distilled)):
        result = invoke("readiness", out, "--against", minilm, "--corpus", held_out, "--json")
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["pooling"] == "mean"
        means[name] = report["sentence_mean"]
    assert means["distilled"] > means["plain"]
    text = invoke("readiness", distilled, "--against", minilm, "--corpus", held_out)
    assert "readiness of 2 new words: states" in text.output
    assert "lowest:" in text.output


def build_tiny_gemma(path: Path, tokenizer_dir: Path) -> Path:
    """A tiny Gemma 2 (its input embedding multiplies rows by sqrt(hidden)) around the tiny Llama's byte-level
    tokenizer files (512 ids, 8 reserved slots)."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    path.mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tokenizer_dir / name).is_file():
            shutil.copyfile(tokenizer_dir / name, path / name)
    config = Gemma2Config(
        vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, bos_token_id=502, eos_token_id=503, pad_token_id=503,
    )  # fmt: skip
    torch.manual_seed(0)
    Gemma2ForCausalLM(config).eval().save_pretrained(path)
    return path


def test_a_scaled_embedding_is_distilled_through_its_module(llama_dir: Path, tmp_path: Path) -> None:
    """Gemma's embedding multiplies every row by sqrt(hidden). The loss the distillation reports for a word is the
    loss of the written output model itself on the same contexts (so the student saw the inputs the model
    builds: indexing the matrix directly gives another loss), and it reads held-out text better than the
    subword mean."""
    from transformers import AutoModel

    from vocabsurgeon import distill

    model = build_tiny_gemma(tmp_path / "gemma", llama_dir)
    fit, held_out = corpus(tmp_path / "fit.txt", FIT), corpus(tmp_path / "held.txt", HELD_OUT)
    plain, distilled = tmp_path / "plain", tmp_path / "distilled"
    surgery(model, plain)
    report = surgery(model, distilled, "--init", "distill", "--corpus", fit, "--distill-steps", "10")
    placement = report["plan"]["placements"][0]
    recorded = json.loads((distilled / "vocabsurgeon.json").read_text(encoding="utf-8"))["distill"]["words"][0]

    source, tokenizer, causal = distill.load_model(model)
    output = AutoModel.from_pretrained(str(distilled)).eval()
    target = distill.Target(placement["id"], placement["token"], tuple(placement["pieces"]))
    contexts = distill.find_contexts([target.word], [fit.read_text(encoding="utf-8")], distill.DEFAULT_CONTEXTS)
    examples = distill._examples(tokenizer, target, contexts[target.word], causal, distill.WordReport(target.word))
    distill._teach(source, examples)
    loss = 0.0
    with torch.no_grad():
        for example in examples:
            ids = list(example.student_ids)
            ids[example.position] = target.id  # the real id, read by the output's own embedding
            states = output(input_ids=torch.tensor([ids])).last_hidden_state[0].float()[example.target_positions]
            assert example.targets is not None
            assert example.pooled is not None
            loss += float((states - example.targets).pow(2).mean())
            loss += distill.POOLED_WEIGHT * float((states.mean(dim=0) - example.pooled).pow(2).mean())
    assert loss / len(examples) == pytest.approx(recorded["loss_after"], rel=1e-3)

    states = {}
    for name, out in (("plain", plain), ("distilled", distilled)):
        result = invoke("readiness", out, "--against", model, "--corpus", held_out, "--json")
        assert result.exit_code == 0, result.output
        states[name] = json.loads(result.stdout)["states_mean"]
    assert states["distilled"] > states["plain"]


def test_digit_words_initial_forms_and_append_are_distilled(llama_dir: Path, tmp_path: Path) -> None:
    """A word that begins with a digit (byte-level BPE gives ``Ġ`` its own piece before it), a word's
    sentence-initial form (learned on texts it opens), and append (new ids): each learns from usable contexts."""
    words = ["2FA", "thrombocytopenia"]
    fit = tmp_path / "fit.txt"
    fit.write_text("".join(t.format(w) + "\n" for t in FIT for w in words), encoding="utf-8")
    out = tmp_path / "out"
    args = [a for w in words for a in ("--token", w)]
    result = invoke(
        "append", llama_dir, "--out", out, *args, "--init", "distill", "--corpus", fit, "--sentence-initial",
        "--distill-steps", "4", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    placements = json.loads(result.stdout)["plan"]["placements"]
    assert all(p["slot"] == "new" for p in placements)
    reports = json.loads((out / "vocabsurgeon.json").read_text(encoding="utf-8"))["distill"]["words"]
    assert len(reports) == len(placements)
    for placement, report in zip(placements, reports, strict=True):
        assert "fallback" not in report, (placement, report)
        if placement["form"] == "sentence-initial":
            assert (report["corpus_contexts"], report["generated_contexts"]) == (0, 8)
        else:
            assert report["corpus_contexts"] == len(FIT), (placement, report)
        assert report["loss_after"] < report["loss_before"]


def test_planning_a_distillation_imports_neither_torch_nor_transformers(bert_dir: Path, tmp_path: Path) -> None:
    from test_cli_inspect import imported_modules, torch_modules

    plan = tmp_path / "plan.json"
    modules, completed = imported_modules(
        "remap", bert_dir, "--token", WORDS[0], "--init", "distill", "--corpus", corpus(tmp_path / "c.txt", FIT),
        "--dry-run", "--save-plan", plan,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert torch_modules(modules) == []
    assert [m for m in modules if m.split(".")[0] == "transformers"] == []
    assert json.loads(plan.read_text(encoding="utf-8"))["distill"]["corpus"] == [str(tmp_path / "c.txt")]
