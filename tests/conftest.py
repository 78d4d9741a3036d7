"""Shared pytest fixtures: an offline, sandboxed Hugging Face environment and tiny real checkpoints.

``huggingface_hub`` reads ``HF_HOME``/``HF_HUB_OFFLINE`` into module constants at import time, so the
offline variables and a throw-away ``HF_HOME`` are set here *before* anything imports it; the autouse
:func:`hf_env` fixture then gives every test its own ``HF_HOME`` (environment and constants).

Checkpoint fixtures build each checkpoint once per session (``tmp_path_factory``) and hand every test
its own ``shutil.copytree`` copy under ``tmp_path``, so tests may freely mutate what they get.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

_SESSION_HF_HOME = tempfile.mkdtemp(prefix="vocabsurgeon-hf-home-")
_CACHE_VARS = ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_ASSETS_CACHE", "TRANSFORMERS_CACHE", "HF_TOKEN")
for _var in _CACHE_VARS:
    os.environ.pop(_var, None)
os.environ["HF_HOME"] = _SESSION_HF_HOME
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
# Make ``import checkpoints`` work whether or not tests/ is a package and whatever the rootdir/cwd is.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

import checkpoints  # noqa: E402
import pytest  # noqa: E402
from huggingface_hub import constants as hf_constants  # noqa: E402


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the session-wide throw-away ``HF_HOME``."""
    shutil.rmtree(_SESSION_HF_HOME, ignore_errors=True)


@pytest.fixture(autouse=True)
def hf_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Force offline mode and a per-test ``HF_HOME`` (``tmp_path/hf_home``); return that ``HF_HOME``."""
    home = tmp_path / "hf_home"
    (home / "hub").mkdir(parents=True)
    for var in _CACHE_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HOME", str(home))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(hf_constants, "HF_ASSETS_CACHE", str(home / "assets"))
    monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(hf_constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    return home


@pytest.fixture
def hf_home(hf_env: Path) -> Path:
    """The per-test ``HF_HOME`` directory (its hub cache is ``hf_home / "hub"``)."""
    return hf_env


@pytest.fixture(scope="session")
def checkpoint_cache(tmp_path_factory: pytest.TempPathFactory) -> checkpoints.CheckpointCache:
    """Session-wide cache of pristine checkpoint builds."""
    return checkpoints.CheckpointCache(tmp_path_factory.mktemp("checkpoints"))


_BUILDERS: dict[str, checkpoints.Builder] = {
    "bert": lambda p: checkpoints.build_bert(p),
    "bert_split": lambda p: checkpoints.build_bert(p, vocab=checkpoints.wordpiece_vocab("split")),
    "bert_end": lambda p: checkpoints.build_bert(p, vocab=checkpoints.wordpiece_vocab("end")),
    "bert_none": lambda p: checkpoints.build_bert(p, vocab=checkpoints.wordpiece_vocab("none")),
    "bert_pytorch": lambda p: checkpoints.build_bert(p, weights="pytorch"),
    "bert_sharded": lambda p: checkpoints.build_bert(p, weights="sharded"),
    "bert_grown": lambda p: checkpoints.build_bert_grown_without_resize(p),
    "bert_padded": lambda p: checkpoints.build_bert_padded(p),
    "llama": lambda p: checkpoints.build_llama_bpe(p),
    "llama_sharded": lambda p: checkpoints.build_llama_bpe(p, weights="sharded"),
    "unigram": lambda p: checkpoints.build_sentencepiece_unigram(p),
}


def _checkpoint(name: str, cache: checkpoints.CheckpointCache, tmp_path: Path) -> Path:
    """A fresh per-test copy of the named checkpoint."""
    return cache.copy(name, _BUILDERS[name], tmp_path)


@pytest.fixture
def bert_dir(checkpoint_cache: checkpoints.CheckpointCache, tmp_path: Path) -> Path:
    """BERT MLM, layout "start" ([unused0..98] at 1-99, [unused99..199] at 104-204), 2000 tokens, safetensors."""
    return _checkpoint("bert", checkpoint_cache, tmp_path)


@pytest.fixture
def bert_split_dir(checkpoint_cache: checkpoints.CheckpointCache, tmp_path: Path) -> Path:
    """BERT MLM, layout "split" ([unused1..99] at 1-99, [unused100/101] at 104/105), 2000 tokens."""
    return _checkpoint("bert_split", checkpoint_cache, tmp_path)


@pytest.fixture
def bert_end_dir(checkpoint_cache: checkpoints.CheckpointCache, tmp_path: Path) -> Path:
    """BERT MLM, layout "end" (specials 0-4, [unused0..99] at 1900-1999), 2000 tokens."""
    return _checkpoint("bert_end", checkpoint_cache, tmp_path)


@pytest.fixture
def bert_none_dir(checkpoint_cache: checkpoints.CheckpointCache, tmp_path: Path) -> Path:
    """BERT MLM, layout "none" (no placeholders), 2000 tokens."""
    return _checkpoint("bert_none", checkpoint_cache, tmp_path)


@pytest.fixture
def bert_pytorch_dir(checkpoint_cache: checkpoints.CheckpointCache, tmp_path: Path) -> Path:
    """BERT MLM (layout "start") with ``pytorch_model.bin`` instead of safetensors."""
    return _checkpoint("bert_pytorch", checkpoint_cache, tmp_path)


@pytest.fixture
def bert_sharded_dir(checkpoint_cache: checkpoints.CheckpointCache, tmp_path: Path) -> Path:
    """BERT MLM (layout "start") as >= 2 safetensors shards plus ``model.safetensors.index.json``."""
    return _checkpoint("bert_sharded", checkpoint_cache, tmp_path)


@pytest.fixture
def bert_grown_dir(checkpoint_cache: checkpoints.CheckpointCache, tmp_path: Path) -> Path:
    """BERT whose tokenizer gained ``newtok1``/``newtok2`` (ids 2000/2001) while the model kept 2000 rows."""
    return _checkpoint("bert_grown", checkpoint_cache, tmp_path)


@pytest.fixture
def bert_padded_dir(checkpoint_cache: checkpoints.CheckpointCache, tmp_path: Path) -> Path:
    """BERT with a 2003-token tokenizer and 2048 embedding rows (``config.vocab_size == 2048``)."""
    return _checkpoint("bert_padded", checkpoint_cache, tmp_path)


@pytest.fixture
def llama_dir(checkpoint_cache: checkpoints.CheckpointCache, tmp_path: Path) -> Path:
    """Llama-3-like: 502 BPE + bos 502 + eos 503 + 8 reserved (504-511) = 512, untied, safetensors."""
    return _checkpoint("llama", checkpoint_cache, tmp_path)


@pytest.fixture
def llama_sharded_dir(checkpoint_cache: checkpoints.CheckpointCache, tmp_path: Path) -> Path:
    """As :func:`llama_dir` but saved as >= 2 safetensors shards plus index."""
    return _checkpoint("llama_sharded", checkpoint_cache, tmp_path)


@pytest.fixture
def unigram_dir(checkpoint_cache: checkpoints.CheckpointCache, tmp_path: Path) -> Path:
    """T5-like: 300-piece unigram ``spiece.model`` (<unused0..9> at 3-12) + ``tokenizer.json`` + tiny T5."""
    return _checkpoint("unigram", checkpoint_cache, tmp_path)


@pytest.fixture
def minilm(tmp_path: Path) -> Path:
    """A private copy of the real all-MiniLM-L6-v2 (the installed package itself is never handed out)."""
    return Path(shutil.copytree(checkpoints.minilm_dir(), tmp_path / "all-MiniLM-L6-v2"))


@pytest.fixture(scope="module")
def minilm_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One private copy of MiniLM per test module, for module-scoped outputs built from it; tests only read it."""
    return Path(shutil.copytree(checkpoints.minilm_dir(), tmp_path_factory.mktemp("src") / "all-MiniLM-L6-v2"))
