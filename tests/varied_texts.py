"""Varied texts for the "encodes as before" checks: scripts, accents, emoji, code, markup, numbers, whitespace runs,
long words, and seeded mixtures of them. None contains the words the word tests add (hospitalization,
thrombocytopenia, naïveté, 코로나바이러스, COVID-19, new york, café-au-lait) as a word."""

# ruff: noqa: RUF001 - letters that look like Latin ones, on purpose
from __future__ import annotations

import random

BASE = [
    "Hello, world!",
    "It's a dog's life; we'll see, they've gone, I'm here, you'd know.",
    "Café au lait, crème brûlée, façade, jalapeño, Zürich, São Paulo, Øresund, Łódź.",
    "naive naivete naïve résumé coöperate",
    "北京欢迎你。我们今天去公园散步。",
    "東京都の天気は晴れです。カタカナとひらがな。",
    "안녕하세요, 반갑습니다. 코로나 바이러스 백신 접종",
    "Привет, как дела? Москва — столица России.",
    "Γειά σου Κόσμε",
    "مرحبا بالعالم",
    "שלום עולם",
    "नमस्ते दुनिया",
    "สวัสดีครับ",
    "Emoji: 😀😃😄 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️‍🔥",
    "Math: ∑_{i=1}^{n} x_i² ≤ ∞, π≈3.14159, √2",
    "Tabs\tand\ttabs\t\t\tend",
    "Multiple    spaces     here",
    "line1\nline2\r\nline3\n\n\nline6",
    "\n\n",
    " ",
    "  ",
    "\t",
    "for (int i = 0; i < n; ++i) { a[i] = b[i] * 2; }",
    '<html><body><div class="x">Hi</div></body></html>',
    "SELECT * FROM users WHERE name LIKE '%bob%';",
    "https://example.com/path?query=1&b=two#frag",
    "user@example.org",
    "1234567890 -42 1e10 0xDEADBEEF",
    "SARS-CoV-2 H1N1 mRNA-1273 COVID-190 COVID",
    "New York, NEW YORK, a new yorker",
    "hospital hospitals hospitality hospitalize hospitalized hospitalizing",
    "thrombocyte thrombocytes thrombosis cytopenia",
    "vaccine vaccines vaccination vaccinated",
    "The patient was admitted to the ICU.",
    "Patient's BP 120/80 mmHg, HR 72 bpm.",
    "ALL CAPS SENTENCE HERE",
    "MiXeD cAsE wOrDs",
    "snake_case_identifier camelCaseIdentifier PascalCase kebab-case",
    "¿Qué tal? ¡Muy bien!",
    "«Bonjour» „Hallo“ “quotes” ‘single’",
    "em—dash en–dash ellipsis…",
    "© ® ™ § ¶ † ‡ • °",
    "combining e\u0301 vs é",
    "Ａｓｃｉｉ ｆｕｌｌｗｉｄｔｈ",
    "ｶﾀｶﾅ",
    "I",
    ".",
    "...",
    "!!!",
    "???",
    "--",
    "''",
    '""',
    "a b c d e f g",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "ababababababababababab",
    "the the the the the",
    "Tokenization is the process of splitting text.",
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    "antidisestablishmentarianism",
    "Donaudampfschifffahrtsgesellschaftskapitän",
    "Llanfairpwllgwyngyllgogerychwyrndrobwllllantysiliogogogoch",
    "Tiếng Việt có dấu: việc, hợp, nhiều, điều, Việt Nam",
    "Türkçe: gerçekleştirilmektedir",
    "Polski: źdźbło, gżegżółka",
    "Čeština: příliš žluťoučký kůň",
    "ქართული ენა",
    "Հայերեն",
    "ᚠᛇᚻ runes",
    "𝔉𝔯𝔞𝔨𝔱𝔲𝔯 𝕕𝕠𝕦𝕓𝕝𝕖",
    "C++ C# F# x86_64 Node.js .NET",
    "<0x41> [UNK] [CLS] <|endoftext|> ▁ Ġ ##ing",  # special tokens aside: SentencePiece reads them as text
    "\u3000全角 スペース",
    "\u00a0\u2009\u202f thin and narrow spaces",
]

_WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "was",
    "for",
    "on",
    "that",
    "with",
    "as",
    "by",
    "at",
    "from",
    "patient",
    "hospital",
    "disease",
    "treatment",
    "blood",
    "cell",
]


def _generated(seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    ends = [".", "!", "?", ",", ""]
    sentences = [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 15))) + rng.choice(ends) for _ in range(40)]
    mixtures = ["".join(rng.choice(BASE)[: rng.randint(1, 12)] for _ in range(5)) for _ in range(30)]
    return sentences + mixtures


TEXTS = BASE + _generated()
