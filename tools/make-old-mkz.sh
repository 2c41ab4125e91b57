#!/bin/sh
# make-old-mkz.sh - containers as the writers of format versions 1 and 2 wrote them, for
# tests/e2e/mkz_old.sh (every later build must read them unchanged). Run with MK set to a
# mergekit-c built from a commit before format version 3 (e.g. 4a1951a):
#   MK=/path/to/old/mergekit-c tools/make-old-mkz.sh
# Writes tests/golden/mkz/: base.safetensors (a tiny synthetic bf16 model), v1.mkz (it,
# packed), ft.safetensors (a finetune of it) and v2.mkz (the finetune packed against it).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
: "${MK:?set MK to a mergekit-c from before format version 3}"
out=$root/tests/golden/mkz
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
shape="--hidden 32 --layers 1 --heads 2 --kv-heads 1 --intermediate 64 --vocab 64"
"$MK" synth "$t/base" $shape --seed 1 -q
"$MK" synth "$t/ft" --finetune-of "$t/base" --delta 0.01 --seed 2 -q
mkdir -p "$out"
cp "$t/base/model.safetensors" "$out/base.safetensors"
cp "$t/ft/model.safetensors" "$out/ft.safetensors"
rm -f "$out/v1.mkz" "$out/v2.mkz"
"$MK" pack "$out/base.safetensors" "$out/v1.mkz" -q
(cd "$out" && "$MK" pack ft.safetensors v2.mkz --base base.safetensors -q)
echo "made by: $("$MK" --version)" >"$out/VERSIONS"
ls -l "$out"
