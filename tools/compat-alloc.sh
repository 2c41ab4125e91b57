#!/bin/sh
# Load checks of `quantize --target-bpw` (mixed precision): a synthetic Llama allocated at
# several budgets over every compressed-tensors format, each output dequantized by
# mergekit-c, then decompressed by compressed-tensors module by module, each with the scheme
# its config group gives it: every weight must equal mergekit-c's dequantize output bit for
# bit, and so must the logits (tools/check-alloc-load.py). Also checks that each output mixes (several config groups,
# "format" "mixed-precision" when their formats differ, or kept weights). Needs no GPU.
# Usage: tools/compat-alloc.sh [PYTHON]   (default: .venv-tools/bin/python at the root)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
py=${1:-$root/.venv-tools/bin/python}
mk=$root/mergekit-c
[ -x "$py" ] || { echo "compat-alloc: no venv python at $py (run tools/setup-venv.sh)" >&2; exit 1; }
[ -x "$mk" ] || { echo "compat-alloc: build mergekit-c first (make)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$mk" synth "$work/m" --hidden 256 --layers 4 --heads 8 --kv-heads 4 --intermediate 704 --vocab 1000 --dtype bf16 --seed 7 -q
names=""
q() { # NAME ARGS...: allocate, write, dequantize
    n=$1
    shift
    "$mk" quantize "$work/m" "$work/q-$n" "$@" -q
    "$mk" dequantize "$work/q-$n" "$work/d-$n" -q
    names="$names $n"
}
q alloc-4.6 --target-bpw 4.6
q alloc-6 --target-bpw 6
q alloc-9 --target-bpw 9
q alloc-int --target-bpw 5 --formats int4,int4:scheme=asym,int4:group-size=32,int8,keep
q alloc-float --target-bpw 6 --formats mxfp4,fp8,fp8:per-tensor,mxfp8
for n in $names; do
    "$py" - "$work/q-$n/config.json" "$n" <<'PY'
import json, sys
q = json.load(open(sys.argv[1]))["quantization_config"]
groups = q["config_groups"]
fmts = sorted({g["format"] for g in groups.values()})
want = "mixed-precision" if len(fmts) > 1 else fmts[0]
kept = len(q["ignore"]) - 1  # besides lm_head
ok = (len(groups) > 1 or kept > 0) and q["format"] == want
print(("ok - " if ok else "not ok - ") + "%s: %d config groups (%s), format %s, %d weights kept" % (sys.argv[2], len(groups), ", ".join(fmts), q["format"], kept))
sys.exit(0 if ok else 1)
PY
done
# shellcheck disable=SC2086
"$py" "$root/tools/check-alloc-load.py" "$work" $names
