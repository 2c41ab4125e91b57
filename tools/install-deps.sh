#!/bin/sh
# Install the Debian packages mergekit-c needs, if any are missing.
#   tools/install-deps.sh          build dependencies (run by `make` when pkg-config cannot
#                                  find one): pkg-config, libzstd, libcjson, libxxhash, libyaml,
#                                  LAPACKE + OpenBLAS (the SVD of LoRA extraction), libcurl (Hub fetching)
#   tools/install-deps.sh --tools  also what tools/ uses: GNU time (bench peak memory),
#                                  python3-venv (the reference-tool venv), zstd, clang (fuzzing)
#   tools/install-deps.sh --mpi    also Open MPI (run by `make MPI=1` when mpicc is missing):
#                                  libopenmpi-dev (mpicc, the library), openmpi-bin (mpirun)
#   tools/install-deps.sh --chromium  also headless Chromium (run by `make check-report` when
#                                  it is missing): the optional check that the report page renders
# As root it calls apt-get; otherwise it prints the exact command to run.
set -eu

# pkg-config module -> Debian package
DEPS="libzstd:libzstd-dev libcjson:libcjson-dev libxxhash:libxxhash-dev yaml-0.1:libyaml-dev lapacke:liblapacke-dev openblas:libopenblas-dev libcurl:libcurl4-openssl-dev"
# command -> Debian package, for --tools
TOOLS="/usr/bin/time:time zstd:zstd clang:clang"

missing=""
command -v pkg-config >/dev/null 2>&1 || missing="$missing pkg-config"
for d in $DEPS; do
    mod=${d%%:*}; pkg=${d#*:}
    if ! pkg-config --exists "$mod" 2>/dev/null; then
        missing="$missing $pkg"
    fi
done
if [ "${1:-}" = "--tools" ]; then
    for d in $TOOLS; do
        cmd=${d%%:*}; pkg=${d#*:}
        command -v "$cmd" >/dev/null 2>&1 || missing="$missing $pkg"
    done
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import venv, ensurepip' 2>/dev/null || missing="$missing python3-venv"
    else
        missing="$missing python3 python3-venv"
    fi
fi

if [ "${1:-}" = "--mpi" ]; then
    command -v mpicc >/dev/null 2>&1 || missing="$missing libopenmpi-dev"
    command -v mpirun >/dev/null 2>&1 || missing="$missing openmpi-bin"
fi

if [ "${1:-}" = "--chromium" ]; then
    command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
fi

if [ -z "$missing" ]; then
    exit 0
fi

cmd="apt-get install -y --no-install-recommends$missing"
if [ "$(id -u)" -ne 0 ]; then
    echo "mergekit-c: missing packages:$missing" >&2
    echo "mergekit-c: run as root: apt-get update && $cmd" >&2
    exit 1
fi
echo "mergekit-c: installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null || apt-get update
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
