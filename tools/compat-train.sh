#!/bin/sh
# finetune's outputs in the reference libraries (tools/check-finetune.py): a full finetune's
# folder loads and runs in transformers; --lora and --qlora adapter folders load in PEFT, whose
# merge_and_unload equals `mergekit-c lora apply`.
# Usage: tools/compat-train.sh [PYTHON]   (default: .venv-tools/bin/python at the root)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
py=${1:-${MK_VENV:-$root/.venv-tools}/bin/python}
[ -x "$py" ] || { echo "compat-train: no venv python at $py (run tools/setup-venv.sh)" >&2; exit 1; }
[ -x "$root/mergekit-c" ] || { echo "compat-train: build mergekit-c first (make)" >&2; exit 1; }
w=$(mktemp -d /tmp/mk-compat-train-XXXXXX)
trap 'rm -rf "$w"' EXIT
"$py" "$root/tools/check-finetune.py" "$root/mergekit-c" "$w"
