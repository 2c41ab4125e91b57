#!/bin/sh
# compat-imatrix.sh (make compat): `mergekit-c imatrix` against PyTorch and llama.cpp's own reader.
#  - tools/check-imatrix.py (every sum within 1e-5 of the matrix's largest, every count equal):
#    a synthetic Llama with --process-output (output.weight); a Mixtral made by `mergekit-c moe`
#    (4 experts, 2 a token: per-expert sums and counts of the tokens routed to each); a Qwen2-MoE
#    with a shared expert; the per-expert Mixtral checkpoint of tests/golden/moe/legacy_mixtral;
#  - llama.cpp's common/imatrix-loader.cpp (compiled from the llama-cpp-python sdist's llama.cpp,
#    LLAMA_CPP_SRC, with tools/imatrix-loader-dump.cpp, against the venv's libggml-base) reads
#    the .dat and GGUF files we write and tests/golden/imatrix/*.dat, and the importances
#    llama-quantize would take from a run's .dat equal those from its GGUF (a dense model:
#    exactly; the Mixtral's experts, one row a .dat entry: within 1 ulp);
#  - the GGUF taken by `convert --imatrix`.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${MK_VENV:-$root/.venv-tools}
py="$venv/bin/python"
mk="$root/mergekit-c"
ver=$(sed -n 's/^llama-cpp-python==//p' "$root/tools/requirements.txt")
src=${LLAMA_CPP_SRC:-$root/bench-work/llama.cpp-$ver}
w=$(mktemp -d /tmp/mk-compat-imatrix-XXXXXX)
trap 'rm -rf "$w"' EXIT
cd "$w"
awk 'BEGIN { x = 7; for (i = 0; i < 1500; i++) { x = (x * 1103515245 + 12345) % 2147483648; printf "tok%d ", 3 + (x % 290) } print "" }' >text.txt
awk 'BEGIN { x = 5; for (i = 0; i < 600; i++) { x = (x * 1103515245 + 12345) % 2147483648; printf "tok%d ", 3 + (x % 60) } print "" }' >text64.txt

"$mk" synth m/ --hidden 256 --layers 2 --heads 4 --kv-heads 2 --intermediate 512 --vocab 300 --dtype float32 --seed 5 -q
"$mk" imatrix m/ --text text.txt -o im.gguf --ctx 128 --chunks 8 --process-output -q
"$mk" imatrix m/ --text text.txt -o im.dat --ctx 128 --chunks 8 --process-output -q
"$py" "$root/tools/check-imatrix.py" m text.txt 128 8 im.gguf --process-output

# a Mixtral (transformers' fused expert tensors) and a Qwen2-MoE with a shared expert
"$mk" synth base/ --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 96 --vocab 300 --dtype float32 --std 0.3 -q
for i in 1 2 3 4; do "$mk" synth "e$i/" --finetune-of base/ --delta 0.5 --seed $((i + 1)) -q; done
printf 'base_model: base/\ngate_mode: random\ndtype: float32\nexperts_per_token: 2\nexperts:\n' >mx.yaml
for i in 1 2 3 4; do printf '  - source_model: e%s/\n    positive_prompts: ["tok%s"]\n' "$i" "$i" >>mx.yaml; done
"$mk" moe mx.yaml mx/ --seed 3 -q
"$mk" imatrix mx/ --text text.txt -o mx.gguf --ctx 64 --chunks 4 --process-output -q
"$mk" imatrix mx/ --text text.txt -o mx.dat --ctx 64 --chunks 4 --process-output -q
"$py" "$root/tools/check-imatrix.py" mx text.txt 64 4 mx.gguf --process-output
"$mk" synth q2/ --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 96 --vocab 300 --dtype float32 --std 0.3 --arch qwen2 -q
for i in 1 2 3; do "$mk" synth "q2e$i/" --finetune-of q2/ --delta 0.5 --seed $((i + 5)) -q; done
printf 'base_model: q2/\ngate_mode: random\narchitecture: qwen\ndtype: float32\nexperts_per_token: 2\nexperts:\n' >q2.yaml
for i in 1 2 3; do printf '  - source_model: q2e%s/\n    positive_prompts: ["tok%s"]\n' "$i" "$i" >>q2.yaml; done
printf 'shared_experts:\n  - source_model: q2/\n    positive_prompts: ["tok1"]\n' >>q2.yaml
"$mk" moe q2.yaml q2moe/ --seed 4 -q
"$mk" imatrix q2moe/ --text text.txt -o q2.gguf --ctx 64 --chunks 4 -q
"$py" "$root/tools/check-imatrix.py" q2moe text.txt 64 4 q2.gguf
# Mixtral's per-expert layout (block_sparse_moe.experts.N.w1/w2/w3), with the tokenizer of its vocabulary
"$mk" synth tiny/ --hidden 16 --layers 1 --heads 2 --intermediate 24 --vocab 64 --max-position 64 --std 0.3 --seed 40 -q
mkdir px && cp "$root/tests/golden/moe/legacy_mixtral/model.safetensors" "$root/tests/golden/moe/legacy_mixtral/config.json" tiny/tokenizer.json \
    tiny/tokenizer_config.json px/
"$mk" imatrix px/ --text text64.txt -o px.gguf --ctx 32 --chunks 6 -q
"$py" "$root/tools/check-imatrix.py" px text64.txt 32 6 px.gguf

# llama.cpp's reader
if [ ! -f "$src/common/imatrix-loader.cpp" ]; then
    "$venv/bin/pip" download -q --no-deps --no-binary :all: "llama-cpp-python==$ver" -d "$w/sdist"
    tar -xzf "$w/sdist/llama_cpp_python-$ver.tar.gz" -C "$w/sdist"
    src="$w/sdist/llama_cpp_python-$ver/vendor/llama.cpp"
fi
lib=$("$py" -c 'import llama_cpp, os; print(os.path.join(os.path.dirname(llama_cpp.__file__), "lib"))')
g++ -std=c++17 -O1 -I"$src/common" -I"$src/include" -I"$src/ggml/include" -I"$src/vendor" "$root/tools/imatrix-loader-dump.cpp" \
    "$src/common/imatrix-loader.cpp" -L"$lib" -lggml-base -lggml -Wl,-rpath,"$lib" -o dump
for f in im.gguf im.dat mx.gguf mx.dat "$root"/tests/golden/imatrix/*.dat; do ./dump "$f" >"$(basename "$f").txt" 2>/dev/null; done
"$py" - <<'PY'
import sys
import numpy as np

def load(p):
    d = {}
    for line in open(p).read().splitlines()[1:]:
        f = line.split()
        d[f[0]] = np.array(f[3:], np.float32)
    return d

bad = 0
for a, b, ulp in (("im.dat.txt", "im.gguf.txt", 0), ("mx.dat.txt", "mx.gguf.txt", 1)):
    x, y = load(a), load(b)
    worst = 0
    if set(x) != set(y):
        print(f"{a} / {b}: entries differ: {sorted(set(x) ^ set(y))}")
        bad += 1
    for n in set(x) & set(y):
        d = np.abs(x[n].view(np.int32).astype(np.int64) - y[n].view(np.int32).astype(np.int64)).max()
        worst = max(worst, int(d))
    print(f"llama.cpp's loader: {len(x)} entries of {a[:-4]} and {b[:-4]}, importances at most {worst} ulp apart (tolerance {ulp})")
    bad += worst > ulp
for g in ("imatrix-w256.dat.txt", "moe.dat.txt"):
    n = len(load(g))
    print(f"llama.cpp's loader reads tests/golden/imatrix/{g[:-4]}: {n} entries")
    bad += n == 0
sys.exit(1 if bad else 0)
PY
"$mk" convert m/ q.gguf --type q4_k_m --imatrix im.gguf -q
"$mk" convert m/ qd.gguf --type q4_k_m --imatrix im.dat -q
cmp -s q.gguf qd.gguf
echo "compat-imatrix: passed"
