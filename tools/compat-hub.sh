#!/bin/sh
# Hugging Face cache resolution against huggingface_hub itself (tools/check-hub.py): a cache
# written by huggingface_hub's own cache helpers is read by mergekit-c to the same snapshot
# folders and files as snapshot_download / hf_hub_download (local_files_only) read; the cache
# folder from HF_HUB_CACHE / HF_HOME / XDG_CACHE_HOME / HOME, the repository ids refused and the
# HF_HUB_OFFLINE values are huggingface_hub's. No network.
# Usage: tools/compat-hub.sh [PYTHON]   (default: .venv-tools/bin/python at the root)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
py=${1:-$root/.venv-tools/bin/python}
[ -x "$py" ] || { echo "compat-hub: no venv python at $py (run tools/setup-venv.sh)" >&2; exit 1; }
[ -x "$root/mergekit-c" ] || { echo "compat-hub: build mergekit-c first (make)" >&2; exit 1; }
w=$(mktemp -d /tmp/mk-compat-hub-XXXXXX)
trap 'rm -rf "$w"' EXIT
mk="$root/mergekit-c"
"$mk" synth "$w/base/" --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 176 --vocab 128 --seed 1 -q
"$mk" synth "$w/ft1/" --finetune-of "$w/base/" --delta 0.05 --seed 2 -q
"$mk" synth "$w/ft2/" --finetune-of "$w/base/" --delta 0.05 --seed 3 -q
HF_HUB_DISABLE_TELEMETRY=1 "$py" "$root/tools/check-hub.py" "$mk" "$w"
# models fetched from the stand-in Hub (tests/tools/hubstub.c) against huggingface_hub
make -s -C "$root" build/hubstub >/dev/null
HF_HUB_DISABLE_TELEMETRY=1 "$py" "$root/tools/check-hubfetch.py" "$mk" "$root/build/hubstub" "$w"
