#!/bin/sh
# Load checks of LoRA adapters with PEFT itself (tools/check-peft.py): extracted adapters load
# (Llama-like, Qwen2 with q/k/v biases, GPT-2 with Conv1D layers and biases), their updates
# equal the truncated SVD of the true difference, merge_and_unload equals `lora apply` (the
# changed biases exactly), and combined adapters (svd; cat of two default extractions over
# their base) load and merge to what `lora apply` gives.
# Usage: tools/compat-peft.sh [PYTHON]   (default: .venv-tools/bin/python at the root)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
py=${1:-$root/.venv-tools/bin/python}
[ -x "$py" ] || { echo "compat-peft: no venv python at $py (run tools/setup-venv.sh)" >&2; exit 1; }
[ -x "$root/mergekit-c" ] || { echo "compat-peft: build mergekit-c first (make)" >&2; exit 1; }
"$py" "$root/tools/check-peft.py"
