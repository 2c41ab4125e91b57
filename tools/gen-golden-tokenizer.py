#!/usr/bin/env python3
"""Golden fixtures for nn/tokenizer: small tokenizers of each family trained with Hugging Face
`tokenizers` on the license texts every Debian machine has, and the ids / decoded text that
`tokenizers` gives for a corpus of hard strings.

  .venv-tools/bin/python tools/gen-golden-tokenizer.py [--mk ./mergekit-c] [--smollm2 DIR]

Writes tests/golden/tokenizer/:
  NAME.json        one tokenizer.json per family (vocabularies of ~800 tokens)
                   the strings: HARD below, then 100 seeded random strings of EDGE_CHARS
  cases.json       {"strings": [hex...], "tokenizers": {NAME: {"specials", "ids", "ids_plain",
                   "decoded", "decoded_skip", "roundtrip"}}} (see hf_cases for the nulls): ids of encode(s) with and without special
                   tokens, decode(ids) without and with skip_special_tokens, and whether
                   decode(encode(s) without special tokens) gives s back, per string; and
                   "pieces": {NAME: [[piece...]...]}: what the normalizer and pre-tokenizer
                   make of each string (no added tokens). Strings are
                   bytes (hex): tokenizers is given bytes.decode('utf-8', errors='replace'),
                   as mergekit-c reads ill-formed UTF-8.
  MANIFEST.json    tool versions, the SHA-256 of every training text, what each tokenizer is
  smollm2/         with --smollm2 DIR (tools/get-smollm2.sh): SmolLM2's ids for the hard
                   strings (hard.tsv: hex, ids) and for Debian texts identified by path and
                   SHA-256 (texts.tsv: path, sha256, ids), for tests/e2e/tokenizer.sh
"""
import argparse
import hashlib
import json
import os
import platform
import random
import subprocess
import sys
import tempfile

import tokenizers
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(ROOT, "tests", "golden", "tokenizer")
LICENSES = "/usr/share/common-licenses"
TRAIN_FILES = ["GPL-3", "Apache-2.0", "Artistic", "BSD", "LGPL-2.1", "MPL-2.0", "GFDL-1.3", "CC0-1.0"]
# Debian texts for the real-model check: path and the bytes' SHA-256 are recorded
REAL_TEXTS = ["GPL-3", "Apache-2.0", "MPL-2.0", "Artistic"]

GPT2_RE = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
             r"\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
            r"\s*[\r\n]+|\s+(?!\S)|\s+")

HARD = [
    b"", b" ", b"  ", b"   leading", b"trailing   ", b" both ", b"\n", b"\n\n\n", b"a\nb", b"a\r\nb\r\n",
    b"\t", b"tab\there\t\tx", b"line one\n\n  indented\n\tx\n", b"   \n   \n", b"a  b   c    d", b"x \n y",
    b"12345678901234567890", b"3.14159 2,718 1e10 -42 007", b"year 2024, 1st, 22nd",
    "\u0663\u0664 arabic-indic, \u216b roman twelve, \u00bd half, \u00b2 squared".encode(),
    b"Don't you think it's 'quoted'? I'm sure they'll've... we'd, you're, they've",
    b"DON'T IT'S I'M YOU'LL WE'D THEY'VE YOU'RE", b"It'S mIxEd 'Ll 'rE 'Ve 'D 'M 'T",
    b"'s 't 're 've 'm 'll 'd", b"'sa 'tea 'ree ''s", "long s: it'\u017f, it'\u017ft".encode(),
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3067\u3059\u3002\u4e2d\u6587\u4e5f\u53ef\u4ee5\u3002 "
    "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8".encode(),
    "emoji \U0001F600 \U0001F44D\U0001F3FD \U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466 "
    "\U0001F3F3\ufe0f\u200d\U0001F308 \u2764\ufe0f".encode(),
    "combining: e\u0301 a\u0308 o\u0323\u0302 o\u0302\u0323 \u1100\u1161\u11a8 precomposed: \u00e9 \u00e4 \uac01".encode(),
    "\u00c5ngstr\u00f6m \u212b \u00c5 A\u030a, ligature \ufb01, \u1e9b\u0323".encode(),
    "math \u2211 x\u00b2 \u2264 \u221e; arrows \u2192 \u2190; currency \u20ac \u00a3 \u00a5 \u20b9".encode(),
    "nbsp\u00a0here, em\u2003space, ideographic\u3000space, line\u2028sep, nel\u0085x".encode(),
    "circled \u24b6\u24b7 and \u2460\u2461, under_score snake_case".encode(),
    b"bad utf8: \xff\xfe \xc3 \xe2\x82 \xf0\x9f\x98 \xed\xa0\x80 \xc0\xaf end", b"\x80\x80\x80", b"\xf4\x90\x80\x80z",
    b"\x00 nul \x01 \x7f", b"<|endoftext|>", b"text<|endoftext|>more", b"<s>hello</s>", b" <s> spaced </s> ",
    b"<unk><unk>", b"<|im_start|>user\nhi<|im_end|>\n", b"<|begin_of_text|>x<|end_of_text|>", b"<bos>x<eos>",
    b"<start_of_turn>user\nhi<end_of_turn>", b"<mask> masked <mask>", b"  <mask>", b"word<mask>word",
    b"ding dong ringding ding, ding.", b"x[[rs]]   y", b"<extra> and<extra>", b"<raw>inside<raw>", b"[CLS] [SEP]",
    b"<0x41> looks like a byte token", b"tok3 tok17 tok299 tok300 <s> tok5",
    b"The GNU General Public License is a free, copyleft license for software and other kinds of works.",
    b"    Copyright (C) <year>  <name of author>\n\n    This program is free software: you can redistribute it",
    b"a" * 300, b"x" + b"," * 50, b"C0de_with_under_scores(); foo->bar[i] += 0x1F; // done",
    b"https://www.gnu.org/licenses/ and mail@example.org", b"\xe2\x96\x81 meta \xe2\x96\x81\xe2\x96\x81space",
]


# Random strings over characters that sit on the pre-tokenizers' edges (seeded: the same
# strings every run): spaces of several kinds, newlines, digits of several scripts,
# apostrophes and letters of the contractions in both cases, marks, CJK, emoji, U+2581,
# and the added tokens of the fixtures.
EDGE_CHARS = (list("aZ\u00e9 \u017f\u00df'sStTrReEvVlLdDmM") +
              [" ", " ", "  ", "\n", "\r", "\t", "\r\n", "1", "23", "\u0663", "\u00bd", "\u216b", "\u00b2", ",", ".",
               "!", "'", "-", "_", "\u4e2d", "\u6587", "\U0001F600", "\u200d", "\u0301", "\u00a0", "\u3000", "\u2028",
               "\u0085", "\u24d0", "\x0b", "\x1c", "\u2581", "<", ">", "e\u0301", "\uac00", "\u1100\u1161", "\u00c5",
               "\u212b", "<mask>", "ding", "[[rs]]", "<s>", "</s>", "<extra>", "<raw>", "<|endoftext|>", "<bos>", "tok5",
               "<|begin_of_text|>", "12345"])


def random_strings(n, seed=1234):
    r = random.Random(seed)
    return ["".join(r.choice(EDGE_CHARS) for _ in range(r.randint(1, 16))).encode() for _ in range(n)]


def read_training_text():
    texts, shas = [], {}
    for f in TRAIN_FILES:
        p = os.path.join(LICENSES, f)
        data = open(p, "rb").read()
        shas[p] = hashlib.sha256(data).hexdigest()
        texts.append(data.decode("utf-8", errors="replace"))
    return texts, shas


def train_bpe(texts, pre, vocab_size, specials, limit_alphabet=None, initial_alphabet=()):
    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre
    kw = dict(vocab_size=vocab_size, special_tokens=specials, initial_alphabet=list(initial_alphabet),
              show_progress=False)
    if limit_alphabet:
        kw["limit_alphabet"] = limit_alphabet
    t.train_from_iterator(texts, trainers.BpeTrainer(**kw))
    d = json.loads(t.to_str())
    return d["model"]["vocab"], [tuple(m) for m in d["model"]["merges"]]


def byte_level_model(texts):
    vocab, merges = train_bpe(texts, pre_tokenizers.ByteLevel(add_prefix_space=False), 800, ["<|endoftext|>"],
                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    return vocab, merges


def sp_model(texts, first):
    """SentencePiece-style BPE: tokens start with U+2581; the vocabulary begins with `first`
    (special tokens), then the 256 <0xNN> byte tokens, then what was learned."""
    vocab, merges = train_bpe(texts, pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first"), 800, [],
                              limit_alphabet=90)
    out = {}
    for tok in first + ["<0x%02X>" % b for b in range(256)]:
        out[tok] = len(out)
    for tok, _ in sorted(vocab.items(), key=lambda kv: kv[1]):
        if tok not in out:
            out[tok] = len(out)
    return out, merges


def specials(tok, names, special=True, **kw):
    tok.add_tokens([AddedToken(n, special=special, normalized=False, **kw) for n in names])


def build_all(texts, mk):
    toks = {}
    notes = {}
    v, m = byte_level_model(texts)

    def bl_model(**kw):
        return models.BPE(vocab=dict(v), merges=list(m), **kw)

    # GPT-2: ByteLevel with its regex; merges written as "a b" strings (the older form)
    t = Tokenizer(bl_model())
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    t.decoder = decoders.ByteLevel()
    t.post_processor = processors.ByteLevel(trim_offsets=True)
    t.add_special_tokens(["<|endoftext|>"])
    t.add_tokens([AddedToken("<mask>", lstrip=True, special=True, normalized=False),
                  AddedToken("ding", single_word=True, special=False),
                  AddedToken("[[rs]]", rstrip=True, special=False, normalized=False)])
    d = json.loads(t.to_str())
    d["model"]["merges"] = [a + " " + b for a, b in d["model"]["merges"]]
    toks["bpe-gpt2"] = json.dumps(d, ensure_ascii=False)
    notes["bpe-gpt2"] = "byte-level BPE, ByteLevel pre-tokenizer with the GPT-2 regex, merges as 'a b' strings, " \
                        "added tokens with lstrip / single_word / rstrip"

    # RoBERTa-style: prefix space and <s> ... </s> around the text
    t = Tokenizer(bl_model())
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    t.decoder = decoders.ByteLevel()
    t.add_special_tokens(["<s>", "</s>", "<unk>"])
    t.post_processor = processors.RobertaProcessing(("</s>", t.token_to_id("</s>")), ("<s>", t.token_to_id("<s>")))
    toks["bpe-roberta"] = t.to_str()
    notes["bpe-roberta"] = "byte-level BPE, add_prefix_space, RobertaProcessing"

    # SmolLM2's original layout: individual digits, then ByteLevel
    t = Tokenizer(bl_model())
    t.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                               pre_tokenizers.ByteLevel(add_prefix_space=False)])
    t.decoder = decoders.ByteLevel()
    t.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    toks["bpe-digits"] = t.to_str()
    notes["bpe-digits"] = "byte-level BPE after Digits(individual_digits) (SmolLM's layout)"

    # Llama-3: Split with its regex, ByteLevel without regex, ignore_merges, BOS by template
    t = Tokenizer(bl_model(ignore_merges=True))
    t.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(tokenizers.Regex(LLAMA3_RE), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    t.decoder = decoders.ByteLevel()
    t.add_special_tokens(["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>"])
    bos = t.token_to_id("<|begin_of_text|>")
    t.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)])])
    toks["bpe-llama3"] = t.to_str()
    notes["bpe-llama3"] = "byte-level BPE, Split with the Llama-3 regex, ignore_merges, BOS by TemplateProcessing"

    # Qwen2: NFC, Split with its regex, no BOS; special and non-special added tokens
    t = Tokenizer(bl_model())
    t.normalizer = normalizers.NFC()
    t.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(tokenizers.Regex(QWEN2_RE), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    t.decoder = decoders.ByteLevel()
    t.post_processor = processors.ByteLevel(trim_offsets=False)
    t.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    t.add_tokens([AddedToken("<raw>", special=False, normalized=False)])
    toks["bpe-qwen2"] = t.to_str()
    notes["bpe-qwen2"] = "byte-level BPE, NFC, Split with the Qwen2 regex, a non-special added token"

    # GPT-2's regex given as a Split (as some converted tokenizers write it)
    t = Tokenizer(bl_model())
    t.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(tokenizers.Regex(GPT2_RE), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    t.decoder = decoders.ByteLevel()
    toks["bpe-gpt2-split"] = t.to_str()
    notes["bpe-gpt2-split"] = "byte-level BPE, the GPT-2 regex as a Split pre-tokenizer"

    # SentencePiece-style (Llama-2, legacy): Prepend + Replace normalizers, byte fallback
    sv, sm = sp_model(texts, ["<unk>", "<s>", "</s>"])
    spm_decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(content=" ", left=1, right=0)])

    def spm(**kw):
        return models.BPE(vocab=dict(sv), merges=list(sm), unk_token="<unk>", fuse_unk=True, **kw)

    t = Tokenizer(spm(byte_fallback=True))
    t.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    t.decoder = spm_decoder
    specials(t, ["<unk>", "<s>", "</s>"])
    t.add_tokens([AddedToken("<extra>", special=False, normalized=True),
                  AddedToken("<raw>", special=False, normalized=False)])
    t.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    toks["spm-llama2"] = t.to_str()
    notes["spm-llama2"] = "SentencePiece-style BPE with <0xNN> byte fallback (Llama-2's tokenizer.json): Prepend + " \
                          "Replace normalizers, BOS by template, a normalized added token"

    # the same without byte fallback: unknown characters become one fused <unk>
    t = Tokenizer(spm(byte_fallback=False))
    t.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    t.decoder = spm_decoder
    specials(t, ["<unk>", "<s>", "</s>"])
    toks["spm-unk"] = t.to_str()
    notes["spm-unk"] = "SentencePiece-style BPE without byte fallback: fuse_unk"

    # Mistral / Llama-2 with legacy=False: Metaspace(prepend_scheme=first, split=False)
    t = Tokenizer(spm(byte_fallback=True))
    t.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    t.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    specials(t, ["<unk>", "<s>", "</s>"])
    t.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    toks["spm-metaspace"] = t.to_str()
    notes["spm-metaspace"] = "SentencePiece-style BPE behind Metaspace(prepend_scheme=first, split=False) (Mistral)"

    # Metaspace's defaults: always prepend, split at every U+2581
    t = Tokenizer(spm(byte_fallback=True))
    t.pre_tokenizer = pre_tokenizers.Metaspace()
    t.decoder = decoders.Metaspace()
    specials(t, ["<unk>", "<s>", "</s>"])
    toks["spm-metaspace-split"] = t.to_str()
    notes["spm-metaspace-split"] = "SentencePiece-style BPE behind Metaspace(prepend_scheme=always, split=True)"

    # Gemma: Replace(" " -> U+2581) only, no prefix space; Split(" ", merged_with_previous)
    gv, gm = sp_model(texts, ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"])
    t = Tokenizer(models.BPE(vocab=gv, merges=gm, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    t.normalizer = normalizers.Replace(" ", "\u2581")
    t.pre_tokenizer = pre_tokenizers.Split(" ", "merged_with_previous")
    t.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    specials(t, ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"])
    t.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    toks["spm-gemma"] = t.to_str()
    notes["spm-gemma"] = "SentencePiece-style BPE as Gemma's tokenizer.json: Replace normalizer, no prefix space, " \
                         "Split(' ', merged_with_previous), BOS by template"

    # WordLevel trained, behind Whitespace + individual digits, with BERT's [CLS] A [SEP]
    t = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=True)])
    t.train_from_iterator(texts, trainers.WordLevelTrainer(vocab_size=800, special_tokens=["[UNK]", "[CLS]", "[SEP]"],
                                                           show_progress=False))
    t.post_processor = processors.BertProcessing(("[SEP]", 2), ("[CLS]", 1))
    toks["wordlevel"] = t.to_str()
    notes["wordlevel"] = "WordLevel behind Whitespace and Digits, BertProcessing, no decoder (tokens joined by spaces)"

    wl = json.loads(toks["wordlevel"])
    wl["pre_tokenizer"] = {"type": "WhitespaceSplit"}
    wl["post_processor"] = None
    toks["wordlevel-wsplit"] = json.dumps(wl, ensure_ascii=False)
    notes["wordlevel-wsplit"] = "WordLevel behind WhitespaceSplit"

    # what `mergekit-c synth` writes
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([mk, "synth", os.path.join(d, "m"), "--hidden", "64", "--layers", "1", "--heads", "4",
                        "--kv-heads", "2", "--intermediate", "128", "--vocab", "300", "-q"], check=True)
        toks["wordlevel-synth"] = open(os.path.join(d, "m", "tokenizer.json"), encoding="utf-8").read()
    notes["wordlevel-synth"] = "what mergekit-c synth writes (--vocab 300)"
    return toks, notes


# the tokenizers whose normalizer + pre-tokenizer pieces are recorded: one per distinct scanner
PIECES = ["bpe-gpt2", "bpe-roberta", "bpe-digits", "bpe-llama3", "bpe-qwen2", "spm-llama2", "spm-metaspace-split",
          "spm-gemma", "wordlevel", "wordlevel-wsplit"]


def hf_pieces(tok_json, strings):
    """normalizer.normalize_str then pre_tokenizer.pre_tokenize_str (no added tokens)"""
    t = Tokenizer.from_str(tok_json)
    out = []
    for s in strings:
        text = s.decode("utf-8", errors="replace")
        if t.normalizer:
            text = t.normalizer.normalize_str(text)
        pieces = [p for p, _ in t.pre_tokenizer.pre_tokenize_str(text)] if t.pre_tokenizer else [text]
        out.append([p for p in pieces if p])
    return out


def hf_cases(tok_json, strings):
    """To stay small, a value that follows from another is written as null: ids_plain when it
    is ids less the "specials" [before, after] the post-processor adds, decoded when it is the
    text itself, decoded_skip when it is decoded."""
    t = Tokenizer.from_str(tok_json)
    t.no_truncation()
    t.no_padding()
    full, plain = t.encode("a", add_special_tokens=True).ids, t.encode("a", add_special_tokens=False).ids
    pre = next(k for k in range(len(full)) if full[k:k + len(plain)] == plain)
    post = len(full) - pre - len(plain)
    r = {"specials": [pre, post], "ids": [], "ids_plain": [], "decoded": [], "decoded_skip": [], "roundtrip": []}
    for s in strings:
        text = s.decode("utf-8", errors="replace")
        ids = t.encode(text, add_special_tokens=True).ids
        plain = t.encode(text, add_special_tokens=False).ids
        dec = t.decode(ids, skip_special_tokens=False)
        dec_skip = t.decode(ids, skip_special_tokens=True)
        r["ids"].append(ids)
        r["ids_plain"].append(None if plain == ids[pre:len(ids) - post] else plain)
        r["decoded"].append(None if dec == text else dec)
        r["decoded_skip"].append(None if dec_skip == dec else dec_skip)
        r["roundtrip"].append(1 if t.decode(plain, skip_special_tokens=False) == text else 0)
    return r


def smollm2(dirname):
    t = Tokenizer.from_file(os.path.join(dirname, "tokenizer.json"))
    t.no_truncation()
    t.no_padding()
    out = os.path.join(OUT, "smollm2")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "hard.tsv"), "w") as f:
        for s in HARD:
            ids = t.encode(s.decode("utf-8", errors="replace")).ids
            f.write("%s\t%s\n" % (s.hex() or "-", " ".join(map(str, ids))))
    with open(os.path.join(out, "texts.tsv"), "w") as f:
        for name in REAL_TEXTS:
            p = os.path.join(LICENSES, name)
            data = open(p, "rb").read()
            ids = t.encode(data.decode("utf-8", errors="replace")).ids
            f.write("%s\t%s\t%s\n" % (p, hashlib.sha256(data).hexdigest(), " ".join(map(str, ids))))
    tj = open(os.path.join(dirname, "tokenizer.json"), "rb").read()
    r = {"tokenizer_json_sha256": hashlib.sha256(tj).hexdigest(), "texts": REAL_TEXTS}
    src = os.path.join(dirname, "SOURCE.json")
    if os.path.exists(src):
        r["source"] = json.load(open(src))
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mk", default=os.path.join(ROOT, "mergekit-c"))
    ap.add_argument("--smollm2", help="a folder made by tools/get-smollm2.sh")
    a = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    texts, shas = read_training_text()
    toks, notes = build_all(texts, a.mk)
    strings = HARD + random_strings(100)
    cases = {"strings": [s.hex() for s in strings], "tokenizers": {}, "pieces": {}}
    for name, js in toks.items():
        with open(os.path.join(OUT, name + ".json"), "w", encoding="utf-8") as f:
            f.write(js)
        cases["tokenizers"][name] = hf_cases(js, strings)
        if name in PIECES:
            cases["pieces"][name] = hf_pieces(js, strings)
    with open(os.path.join(OUT, "cases.json"), "w", encoding="utf-8") as f:
        json.dump(cases, f, separators=(",", ":"), ensure_ascii=False)
        f.write("\n")
    manifest = {
        "generator": "tools/gen-golden-tokenizer.py",
        "tokenizers": tokenizers.__version__,
        "python": platform.python_version(),
        "training_texts_sha256": shas,
        "fixtures": notes,
    }
    if a.smollm2:
        manifest["smollm2"] = smollm2(a.smollm2)
    else:
        old = os.path.join(OUT, "MANIFEST.json")
        if os.path.exists(old):
            prev = json.load(open(old))
            if "smollm2" in prev:
                manifest["smollm2"] = prev["smollm2"]
    with open(os.path.join(OUT, "MANIFEST.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
