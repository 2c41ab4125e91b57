#!/bin/sh
# Install the Debian packages mergekit-c builds against, if any are missing.
# Run by `make` when pkg-config cannot find a dependency. As root it calls apt-get;
# otherwise it prints the exact command to run.
# `install-deps.sh bench` also installs what tools/bench-mkz.sh compares against (the zstd
# CLI and GNU time).
set -eu

# pkg-config module -> Debian package
DEPS="libzstd:libzstd-dev libcjson:libcjson-dev libxxhash:libxxhash-dev yaml-0.1:libyaml-dev"
# build tools that the test suite and fuzzers use (no pkg-config module)
TOOLS="pkg-config:pkg-config"

missing=""
command -v pkg-config >/dev/null 2>&1 || missing="$missing pkg-config"
if [ "${1:-}" = bench ]; then
    command -v zstd >/dev/null 2>&1 || missing="$missing zstd"
    [ -x /usr/bin/time ] || missing="$missing time"
fi
for d in $DEPS; do
    mod=${d%%:*}; pkg=${d#*:}
    if ! pkg-config --exists "$mod" 2>/dev/null; then
        missing="$missing $pkg"
    fi
done

if [ -z "$missing" ]; then
    exit 0
fi

cmd="apt-get install -y --no-install-recommends$missing"
if [ "$(id -u)" -ne 0 ]; then
    echo "mergekit-c: missing build dependencies:$missing" >&2
    echo "mergekit-c: run as root: apt-get update && $cmd" >&2
    exit 1
fi
echo "mergekit-c: installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null || apt-get update
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
