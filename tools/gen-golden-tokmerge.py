#!/usr/bin/env python3
"""Golden outputs for merges of models whose vocabularies differ (tokenizer_source union /
base / model:NAME), made by mergekit from the tools venv.

Inputs: two synthetic float32 models from `mergekit-c synth`; the second one's
tokenizer.json is edited so that the vocabularies differ (tokens renamed, ids swapped).
The edit is recorded in manifest.txt so tests/e2e/tokmerge.sh remakes the same inputs.
Outputs under tests/golden/tokmerge/: per case recipe.yaml, expected.safetensors,
vocab.txt (the merged vocabulary, one token a line, by id) and ids.txt (a small corpus
encoded by HF tokenizers with the merged tokenizer).

mergekit appends a union's new tokens in the order of its tokenizer's hash map, which
changes from run to run; mergekit-c appends them in recipe-model order, each model's in id
order (merge/tokmerge.h). The golden is mergekit's output relabelled into that order by
token: every vocabulary row and every id is mergekit's, moved to the row its token has in
mergekit-c's order (the set of tokens must be the same, which this script checks).
Then mergekit-c's own output is loaded with transformers (AutoTokenizer) and HF
tokenizers to check it has the same vocabulary and encodes the corpus to the same ids.

usage: MK=path/to/mergekit-c tools/gen-golden-tokmerge.py
"""
import json, os, re, shutil, subprocess, sys, tempfile
from importlib.metadata import version

import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
G = os.path.join(ROOT, "tests", "golden", "tokmerge")
MK = os.environ.get("MK", os.path.join(ROOT, "mergekit-c"))
VENV = os.environ.get("MK_VENV", os.path.join(ROOT, ".venv-tools"))
SYNTH = "synth {out} --hidden 16 --layers 1 --heads 2 --vocab 40 --dtype float32 --seed {seed} -q"
CORPUS = ["tok3 tok4 tok5", "bee31 tok30 tok39 bee39", "<s> tok12 bee35 </s> zzz", "newtok extra tok8"]
CASES = {
    "union": "tokenizer_source: union\n",
    "base": "tokenizer_source: base\n",
    "model_b": "tokenizer_source: b/\n",
    # tokenizer: dict form: union by default; per-token sources, forced or not; added tokens
    "tokens": ("tokenizer:\n  tokens:\n    tok5: {source: b/, force: true}\n"
               "    bee31: {source: {kind: model_token, model: a/, token: tok7}}\n"
               "    tok8: {source: {kind: model_token, model: b/, token_id: 9}, force: true}\n"
               "    newtok: {source: {kind: zero}}\n    extra: {source: {kind: model_token, model: a/, token_id: 3}}\n"),
    # the rows past the vocabulary: each model's mean row (torch.mean; mergekit-c sums in
    # double, so the test allows rel 1e-6 there)
    "pad": "tokenizer:\n  source: union\n  pad_to_multiple_of: 32\n",
    # chat templates: auto (the one b has), and a template's text
    "chat_auto": "tokenizer_source: union\nchat_template: auto\n",
    "chat_text": "tokenizer_source: base\nchat_template: \"{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}\"\n",
}
# b's chat template (chat_template.jinja), written by edit-b
B_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
EXTRA = {"tokens": ["newtok", "extra"]}


def edit_b(path):
    """b's vocabulary: tok30..tok39 become bee30..bee39; tok3 and tok4 swap ids. A text
    edit of synth's one-line vocabulary, the same that tests/e2e/tokmerge.sh does with sed."""
    p = os.path.join(path, "tokenizer.json")
    t = open(p).read()
    t = re.sub(r'"tok3([0-9])":', r'"bee3\1":', t)
    t = t.replace('"tok3": 3,', '"tok4": 3,', 1).replace('"tok4": 4,', '"tok3": 4,', 1)
    open(p, "w").write(t)
    open(os.path.join(path, "chat_template.jinja"), "w").write(B_TEMPLATE)


def our_order(work, case, mv):
    """mergekit-c's order of mergekit's merged vocabulary (tokmerge.h)."""
    if case not in ("union", "tokens", "pad", "chat_auto"):
        return [t for t, _ in sorted(mv.items(), key=lambda kv: kv[1])]
    order = []
    for m in ("a", "b"):
        v = Tokenizer.from_file(os.path.join(work, m, "tokenizer.json")).get_vocab(with_added_tokens=True)
        order += [t for t, _ in sorted(v.items(), key=lambda kv: kv[1]) if t not in order]
    order += EXTRA.get(case, [])
    assert set(order) == set(mv), "the union's tokens differ from mergekit's"
    return order


def check_ours(work, d, case, order):
    """mergekit-c's output loads in transformers with this vocabulary and these ids."""
    import transformers
    out = os.path.join(work, "ours-" + case)
    subprocess.check_call([MK, os.path.join(d, "recipe.yaml"), out, "-q"], cwd=work)
    at = transformers.AutoTokenizer.from_pretrained(out)
    v = at.get_vocab()
    assert [t for t, _ in sorted(v.items(), key=lambda kv: kv[1])] == order, case
    want = open(os.path.join(d, "ids.txt")).read().split("\n")
    for line, ids in zip(CORPUS, want):
        assert " ".join(map(str, at(line, add_special_tokens=False)["input_ids"])) == ids, (case, line)
    mk_at = transformers.AutoTokenizer.from_pretrained(os.path.join(work, "out-" + case))
    assert at.chat_template == mk_at.chat_template, (case, at.chat_template, mk_at.chat_template)
    if case.startswith("chat"):
        assert at.chat_template, case
        open(os.path.join(d, "chat_template.jinja"), "w").write(at.chat_template)
    cfg = json.load(open(os.path.join(out, "config.json")))
    assert cfg["vocab_size"] == (64 if case == "pad" else len(order)), case


def main():
    os.makedirs(G, exist_ok=True)
    work = tempfile.mkdtemp()
    for name, seed in (("a", 1), ("b", 2)):
        subprocess.check_call([MK] + SYNTH.format(out=os.path.join(work, name), seed=seed).split())
    edit_b(os.path.join(work, "b"))
    man = ["# made by tools/gen-golden-tokmerge.py",
           f"# mergekit {version('mergekit')} transformers {version('transformers')} tokenizers {version('tokenizers')} torch {version('torch')}",
           SYNTH.format(out="a", seed=1), SYNTH.format(out="b", seed=2), "edit-b"]
    for case, ts in CASES.items():
        d = os.path.join(G, case)
        os.makedirs(d, exist_ok=True)
        recipe = ("merge_method: linear\nbase_model: a/\nmodels:\n  - model: a/\n    parameters: {weight: 0.75}\n"
                  "  - model: b/\n    parameters: {weight: 0.25}\ndtype: float32\n" + ts)
        open(os.path.join(d, "recipe.yaml"), "w").write(recipe)
        out = os.path.join(work, "out-" + case)
        subprocess.check_call([os.path.join(VENV, "bin", "mergekit-yaml"), os.path.join(d, "recipe.yaml"), out,
                               "--no-lazy-unpickle", "--quiet"], cwd=work)
        tk = Tokenizer.from_file(os.path.join(out, "tokenizer.json"))
        mv = tk.get_vocab(with_added_tokens=True)
        order = our_order(work, case, mv)
        tensors = load_file(os.path.join(out, "model.safetensors"))
        for k, v in tensors.items():
            if k.endswith(("embed_tokens.weight", "lm_head.weight")):
                rows = torch.tensor([mv[t] for t in order] + list(range(len(order), v.shape[0])))
                tensors[k] = v[rows].contiguous()
        save_file(tensors, os.path.join(d, "expected.safetensors"), metadata={"format": "pt"})
        with open(os.path.join(d, "vocab.txt"), "w") as f:
            f.write("".join(t + "\n" for t in order))
        ours = {t: i for i, t in enumerate(order)}
        with open(os.path.join(d, "ids.txt"), "w") as f:
            for line in CORPUS:
                f.write(" ".join(str(ours[tk.id_to_token(i)]) for i in tk.encode(line).ids) + "\n")
        check_ours(work, d, case, order)
        man.append(f"case {case}")
    open(os.path.join(G, "corpus.txt"), "w").write("\n".join(CORPUS) + "\n")
    open(os.path.join(G, "manifest.txt"), "w").write("\n".join(man) + "\n")
    shutil.rmtree(work)


if __name__ == "__main__":
    sys.exit(main())
