#!/usr/bin/env python3
"""Builds small byte-level BPE tokenizers with the Hugging Face `tokenizers` library and
records the ids it produces for a varied text set; tests/model/test-tokenizer.cpp checks that
our C++ tokenizer produces exactly the same ids.

Each tokenizer is trained on a small built-in corpus (vocab ~1000) with a different
configuration modelled on a real family:
  gpt2    ByteLevel(add_prefix_space=False, use_regex=True)               merges as "a b"
  llama3  Split(Llama-3 regex) + ByteLevel(use_regex=False), ignore_merges merges as pairs
  qwen2   NFC normalizer + Split(Qwen2 regex) + ByteLevel(use_regex=False) merges as pairs
  smollm  Digits(individual_digits=True) + ByteLevel(use_regex=True)      merges as "a b"
  prefix  ByteLevel(add_prefix_space=True)                                merges as pairs

Outputs tests/fixtures/tokenizer/<name>.tokenizer.json and <name>.expected.json
({"texts": [...], "ids": [[...]], "ids_no_special": [[...]], "decoded": [...]}),
chat-templates.json (jinja2 renderings, see chat_template_fixtures.py) and, when the default
model is present, smollm2-gguf-tokenizers.json.

Usage: python3 scripts/gen_tokenizer_fixtures.py
"""
import json
import os
import unicodedata

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "tokenizer")

LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
               r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

CORPUS = [
    "The quick brown fox jumps over the lazy dog. It's a test; they're here, we'll see.",
    "Tokenization splits text into pieces; byte-level BPE never meets an unknown character.",
    "def main(argv):\n    for i in range(10):\n        print(f\"value {i}: {argv[i]}\")\n    return 0\n",
    "int main() {\n\tint x = 42;\n\tif (x > 3) { return x * 2; }\n}\n",
    "Numbers: 3.14159, 2718281828, 1,000,000 and 2024-06-01 at 12:30.",
    "Café, naïve, résumé, façade, Ångström, Straße, œuvre, jalapeño.",
    "日本語のテキストも少し入れます。中文文本也在这里。한국어 문장도 있습니다.",
    "مرحبا بالعالم، هذه جملة عربية قصيرة.",
    "नमस्ते दुनिया, यह एक हिंदी वाक्य है।",
    "Emoji: 😀 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️ and more 🎉🎉.",
    "<|im_start|>user\nHello there!<|im_end|>\n<|im_start|>assistant\nHi! How can I help?<|im_end|>",
    "    indented line\n\n\n   trailing spaces   \n\ttab\tseparated\tvalues\n",
    "I'M SURE YOU'LL SEE IT'S FINE. She'd said he'd come.",
]

TEXTS = [
    "",
    " ",
    "Hello world",
    "Hello, world! It's a beautiful day; isn't it? I'M sure THEY'LL agree.",
    "The tokenizer handles ASCII prose, punctuation... and (parentheses) [brackets] {braces}.",
    "def f(x):\n\treturn x * 2  # double\n\n\nclass A:\n    pass\n",
    "1234567890 3.14159 42 007 1,000,000 12345678901234567890",
    "   leading spaces, trailing spaces   ",
    "many     spaces\n\n\nand\r\nnewlines\n \n\t\t tabs",
    "Caf\u00e9 cafe\u0301 na\u00efve nai\u0308ve \u00c5ngstro\u0308m",
    "日本語のテキスト、中文文本，한국어 문장",
    "مرحبا بالعالم",
    "नमस्ते दुनिया",
    "😀 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️🎉",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "text<|endoftext|>more text<|im_end|>",
    "tokenization Hello 1234",
    "\n",
    "a\u00a0b\u2009c\u3000d",
    "x" * 300,
    "left  [SEP]  right[SEP]end [SEP]",
]


def synthetic_corpus():
    """Deterministic pseudo-random sentences over a mixed-script word list."""
    import random
    rng = random.Random(1234)
    words = ("the of and to in is was for on that with as it by at from this be are an "
             "token tokens split merge byte level model text number value return print "
             "function class def int float string list dict while if else for "
             "café résumé naïve über straße 東京 中文 数据 テキスト 한국어 سلام كتاب नमस्ते "
             "भाषा 😀 👍 🎉 Hello World HELLO I'm you're we've it's they'll she'd").split()
    seps = [" ", " ", " ", ", ", ". ", "\n", "  ", "\t", "; ", "!\n\n", "(", ")", " = "]
    out = []
    for _ in range(400):
        n = rng.randint(4, 20)
        parts = []
        for _ in range(n):
            parts.append(rng.choice(words))
            parts.append(rng.choice(seps))
        if rng.random() < 0.3:
            parts.append(str(rng.randint(0, 10**rng.randint(1, 9))))
        out.append("".join(parts))
    return out


def train(pre, normalizer=None, ignore_merges=False, vocab_size=1000):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    # The test texts are not in the corpus, so they are encoded by partial merges rather than
    # memorised whole.
    corpus = CORPUS * 3 + synthetic_corpus()
    tok.train_from_iterator(corpus, trainer)
    return tok


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + \
        list(range(0xAE, 0xFF + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def add_whole_words(data, words):
    """Appends byte-level whole words to the vocab without merges, so that only
    ignore_merges can produce them."""
    b2u = bytes_to_unicode()
    vocab = data["model"]["vocab"]
    next_id = max(max(vocab.values()), max(t["id"] for t in data["added_tokens"])) + 1
    for w in words:
        enc = "".join(b2u[b] for b in w.encode("utf-8"))
        if enc not in vocab:
            vocab[enc] = next_id
            next_id += 1


def save(name, tok, merges_as_strings, extra_words=None, ignore_merges=False, strip_token=False):
    if strip_token:
        # A non-special added token that swallows the whitespace around it.
        from tokenizers import AddedToken
        tok.add_tokens([AddedToken("[SEP]", lstrip=True, rstrip=True, special=False)])
    data = json.loads(tok.to_str())
    if extra_words:
        add_whole_words(data, extra_words)
    data["model"]["ignore_merges"] = ignore_merges
    merges = data["model"]["merges"]
    if merges_as_strings:
        data["model"]["merges"] = [m if isinstance(m, str) else " ".join(m) for m in merges]
    else:
        data["model"]["merges"] = [m.split(" ") if isinstance(m, str) else m for m in merges]
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    with open(os.path.join(OUT, f"{name}.tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(text)
    # Reload from the saved text so that the expectations come from exactly that file.
    tok = Tokenizer.from_str(text)
    ids, ids_plain, decoded = [], [], []
    for t in TEXTS:
        e = tok.encode(t, add_special_tokens=False)
        ids.append(e.ids)
        tok.encode_special_tokens = True
        ids_plain.append(tok.encode(t, add_special_tokens=False).ids)
        tok.encode_special_tokens = False
        decoded.append(tok.decode(e.ids, skip_special_tokens=False))
    expected = {"texts": TEXTS, "ids": ids, "ids_no_special": ids_plain, "decoded": decoded}
    with open(os.path.join(OUT, f"{name}.expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, ensure_ascii=False, separators=(",", ":"))


def main():
    os.makedirs(OUT, exist_ok=True)
    bl = pre_tokenizers.ByteLevel
    save("gpt2", train(bl(add_prefix_space=False, use_regex=True)), True, strip_token=True)
    llama_pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated", invert=False),
        bl(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    save("llama3", train(llama_pre, ignore_merges=True), False,
         extra_words=[" tokenizer", "Hello", "123", " beautiful"], ignore_merges=True)
    qwen_pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_REGEX), behavior="isolated", invert=False),
        bl(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    save("qwen2", train(qwen_pre, normalizer=normalizers.NFC()), False)
    smol_pre = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        bl(add_prefix_space=False, use_regex=True)])
    save("smollm", train(smol_pre), True)
    save("prefix", train(bl(add_prefix_space=True, use_regex=True), vocab_size=600), False)
    import chat_template_fixtures
    chat_template_fixtures.write(OUT)
    model = os.environ.get("PURBO_MODEL", os.path.join(os.path.dirname(__file__), "..", "models",
                                                       "SmolLM2-135M-Instruct.Q4_1.gguf"))
    if os.path.exists(model):
        smollm2_from_gguf(model)
    else:
        print(f"{model} not found: smollm2-gguf-tokenizers.json not regenerated")


def smollm2_from_gguf(path):
    """Expected ids of the real SmolLM2 vocabulary: a `tokenizers` BPE built from the GGUF's
    tokenizer.ggml.* arrays with SmolLM2's tokenizer.json pre-tokenizer (Digits + ByteLevel).
    Writes smollm2-gguf-tokenizers.json (ids only, the vocabulary stays in the GGUF)."""
    from gguf import GGUFReader
    from tokenizers import AddedToken
    reader = GGUFReader(path)

    def strings(key):
        f = reader.fields[key]
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    def ints(key):
        f = reader.fields[key]
        return [int(f.parts[i][0]) for i in f.data]

    tokens = strings("tokenizer.ggml.tokens")
    types = ints("tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in strings("tokenizer.ggml.merges")]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, ty in zip(tokens, types) if ty == 3])
    ids = [tok.encode(t, add_special_tokens=False).ids for t in TEXTS]
    template = strings("tokenizer.chat_template")[0]
    out = {"texts": TEXTS, "ids": ids, "chat_template": template,
           "source": os.path.basename(path)}
    with open(os.path.join(OUT, "smollm2-gguf-tokenizers.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, separators=(",", ":"))


if __name__ == "__main__":
    main()
