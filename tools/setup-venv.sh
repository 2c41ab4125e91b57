#!/bin/sh
# Create the Python venv used only by tools/ (golden generation, load checks).
# mergekit-c itself and `make test` never need Python.
# Usage: tools/setup-venv.sh [VENV_DIR]   (default: .venv-tools at the repository root)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
venv=${1:-"$here/../.venv-tools"}
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import mergekit, bitsandbytes, compressed_tensors, peft, transformers' 2>/dev/null; then
    exit 0
fi
sh "$here/install-deps.sh" --tools
python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
# llama-cpp-python compiles llama.cpp for this CPU (-march=native). Where the CPU lists AMX but
# the kernel or hypervisor does not grant the tile state, its AMX kernels die with SIGILL
# (tileloadd, seen on a VM evaluating a Q4_1 GGUF): build for AVX2 without AMX there.
if grep -qw amx_tile /proc/cpuinfo 2>/dev/null && [ -z "${CMAKE_ARGS:-}" ]; then
    export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
fi
"$venv/bin/pip" install -q -r "$here/requirements.txt"
# a wheel installed from a file (get-smollm2.sh) is recorded by its version, not its temporary path
"$venv/bin/pip" freeze | sed 's/^\([A-Za-z0-9_.-]*\) @ file:.*-\([0-9][0-9.]*\)-py3.*/\1==\2/' > "$here/venv-versions.txt.new"
mv "$here/venv-versions.txt.new" "$here/venv-versions.txt"
