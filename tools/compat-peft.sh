#!/bin/sh
# Load checks of LoRA adapters with PEFT itself (tools/check-peft.py): extracted adapters load,
# their updates equal the truncated SVD of the true difference, merge_and_unload equals
# `lora apply`, and a combined adapter loads and merges to what `lora apply` gives.
# Usage: tools/compat-peft.sh [PYTHON]   (default: .venv-tools/bin/python at the root)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
py=${1:-$root/.venv-tools/bin/python}
[ -x "$py" ] || { echo "compat-peft: no venv python at $py (run tools/setup-venv.sh)" >&2; exit 1; }
[ -x "$root/mergekit-c" ] || { echo "compat-peft: build mergekit-c first (make)" >&2; exit 1; }
"$py" "$root/tools/check-peft.py"
