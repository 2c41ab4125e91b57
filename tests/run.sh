#!/bin/sh
# The whole suite: the C unit tests, then every end-to-end script in tests/e2e/.
# Each e2e script prints "ok - NAME" or "not ok - NAME: why" per check, or "skip - NAME: why"
# for a check whose input is absent (shown, counted apart, never as passed).
# Ends with "N passed, N failed" (after a "skipped: N" line when some were); exits 1 if anything failed.
# Env: MK_BIN (the mergekit-c binary), MK_UNIT (the unit-test binary), MK_FILTER (run only
# e2e scripts whose name contains it).
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
MK_BIN=${MK_BIN:-$root/mergekit-c}
MK_UNIT=${MK_UNIT:-$root/build/test-unit}
MK_ROOT=$root
# the suite never reaches the network: a Hugging Face id the cache lacks is not fetched
# (tests/e2e/hub_fetch.sh unsets this against its stand-in Hub on the loopback address)
HF_HUB_OFFLINE=1
export MK_BIN MK_ROOT HF_HUB_OFFLINE
passed=0
failed=0
skipped=0
out=$(mktemp)
trap 'rm -f "$out"' EXIT

t0=$(date +%s)
if [ -z "${MK_FILTER:-}" ]; then
    "$MK_UNIT" >"$out" 2>&1
    p=$(grep -c '^ok ' "$out")
    f=$(grep -c '^FAIL ' "$out")
    grep -v '^ok ' "$out" | grep -v 'passed, .* failed$'
    if ! tail -n 1 "$out" | grep -q 'passed, .* failed$'; then
        echo "FAIL unit tests: the unit-test binary did not finish (crash?)"
        tail -n 5 "$out"
        f=$((f + 1))
    fi
    passed=$((passed + p))
    failed=$((failed + f))
    echo "unit: $p passed, $f failed"
fi

# fuzz corpora: every committed input replayed through its target (no crash, no sanitizer report)
if [ -z "${MK_FILTER:-}" ] && [ -n "${MK_REPLAY:-}" ]; then
    for c in "$root"/tests/fuzz/corpus/*/; do
        tgt=$(basename "$c")
        bin="$MK_REPLAY/fuzz-replay-$tgt"
        if [ ! -x "$bin" ]; then
            echo "not ok - fuzz corpus $tgt: no replay binary"
            failed=$((failed + 1))
            continue
        fi
        if "$bin" "$c"* >"$out" 2>&1; then
            passed=$((passed + 1))
            echo "fuzz corpus $tgt: $(tail -n 1 "$out")"
        else
            echo "not ok - fuzz corpus $tgt: $(tail -n 5 "$out")"
            failed=$((failed + 1))
        fi
    done
fi

for t in "$root"/tests/e2e/*.sh; do
    name=$(basename "$t" .sh)
    case "$name" in lib) continue ;; esac
    if [ -n "${MK_FILTER:-}" ]; then
        case "$name" in *"$MK_FILTER"*) ;; *) continue ;; esac
    fi
    s0=$(date +%s)
    sh "$t" >"$out" 2>&1
    rc=$?
    p=$(grep -c '^ok - ' "$out")
    f=$(grep -c '^not ok - ' "$out")
    k=$(grep -c '^skip - ' "$out")
    grep -E '^(not ok|skip) - ' "$out"
    if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "not ok - $name: script exited $rc"
        tail -n 20 "$out"
        f=1
    fi
    passed=$((passed + p))
    failed=$((failed + f))
    skipped=$((skipped + k))
    echo "$name: $p passed, $f failed$([ "$k" -gt 0 ] && echo ", $k skipped") ($(($(date +%s) - s0)) s)"
done
echo "time: $(($(date +%s) - t0)) s"
[ "$skipped" -gt 0 ] && echo "skipped: $skipped (checks that need what this machine lacks; see the skip lines above)"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
