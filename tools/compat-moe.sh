#!/bin/sh
# compat-moe.sh (make compat): `mergekit-c moe` outputs load in transformers with no missing or
# unexpected weights, and transformers' forward pass agrees with `mergekit-c eval`'s on them
# (tools/check-moe.py): Mixtral (llama experts, gate_mode hidden), Qwen3-MoE (qwen3 experts,
# cheap_embed) and Qwen2-MoE (a shared expert with its sigmoid gate, random), on the golden
# configs of tests/golden/moe/.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
py="${MK_VENV:-$root/.venv-tools}/bin/python"
mk="$root/mergekit-c"
g="$root/tests/golden/moe"
w=$(mktemp -d /tmp/mk-compat-moe-XXXXXX)
trap 'rm -rf "$w"' EXIT
cd "$w"
sed -n 's/^ *"mergekit-c synth \(.*\)",\{0,1\}$/\1/p' "$g/MANIFEST.json" | while read -r args; do
    # shellcheck disable=SC2086
    "$mk" synth $args -q
done
set --
for case in mixtral_hidden mixtral_cheap_embed qwen3_cheap_embed qwen3_hidden qwen2_random; do
    # shellcheck disable=SC2046
    "$mk" moe "$g/$case/config.yaml" "$case/" $(cat "$g/$case/args") -q
    "$mk" eval "$case/" --text "$g/text.txt" --ctx 32 --chunks 6 --json -q >"$case.json"
    set -- "$@" "$case/" "$case.json"
done
"$py" "$root/tools/check-moe.py" "$g/text.txt" "$@"
