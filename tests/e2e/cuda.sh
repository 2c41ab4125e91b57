#!/bin/sh
# The CUDA kernels (docs/cuda.md): `make test` builds build/test-cuda when nvcc is found and
# runs it here; without a GPU it prints one "skip - cuda: no CUDA device ..." line. The CPU
# emulation of the same kernels runs in the unit tests (test_cuda_emu.c) on every machine.
. "$(dirname "$0")/lib.sh"

if [ -z "${MK_CUDA_TEST:-}" ]; then
    echo "skip - cuda: nvcc not found, the CUDA kernels were not compiled (make CUDA=1 needs the CUDA toolkit)"
    exit 0
fi
if [ ! -x "$MK_CUDA_TEST" ]; then
    echo "not ok - cuda: $MK_CUDA_TEST was not built"
    exit 0
fi
"$MK_CUDA_TEST"
