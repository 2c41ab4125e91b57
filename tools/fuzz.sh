#!/bin/sh
# make fuzz [FUZZ_TIME=seconds]: build every tests/fuzz/fuzz_*.c target with clang,
# libFuzzer, ASan and UBSan (in build-fuzz/), then run each for FUZZ_TIME seconds (default
# 60) starting from its committed seeds (tests/fuzz/corpus/<target>/). New inputs the fuzzer
# finds go to build-fuzz/corpus/<target>/; crashes to build-fuzz/crash-<target>-*.
# FUZZ_TARGETS="safetensors recipe" limits the run.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
t=${1:-${FUZZ_TIME:-60}}
sh tools/install-deps.sh --tools
b=build-fuzz
mkdir -p "$b"
pk=$(make -s --no-print-directory print-pkgs)
# shellcheck disable=SC2046
flags="-std=c11 -D_GNU_SOURCE -g -O1 -ffp-contract=off -fno-omit-frame-pointer -fsanitize=address,undefined $(pkg-config --cflags $pk)"
libs="$(pkg-config --libs $pk) -lm -lpthread"
# the library's sources as the Makefile lists them, so a new folder is never left out
lib_src=$(make -s --no-print-directory print-lib-src)
# the library once, instrumented for coverage
objs=
for f in $lib_src; do
    o="$b/$(echo "$f" | tr / _).o"
    if [ ! -e "$o" ] || [ "$f" -nt "$o" ]; then
        clang $flags -fsanitize=fuzzer-no-link -c "$f" -o "$o"
    fi
    objs="$objs $o"
done
targets=${FUZZ_TARGETS:-$(ls tests/fuzz/fuzz_*.c | sed 's|.*/fuzz_||; s|\.c$||')}
for tgt in $targets; do
    # shellcheck disable=SC2086
    clang $flags -fsanitize=fuzzer "tests/fuzz/fuzz_$tgt.c" $objs $libs -o "$b/fuzz_$tgt"
done
status=0
for tgt in $targets; do
    mkdir -p "$b/corpus/$tgt"
    echo "== fuzz_$tgt for $t s"
    if ! "$b/fuzz_$tgt" -max_total_time="$t" -rss_limit_mb=2048 -max_len=65536 -timeout=60 \
        -artifact_prefix="$b/crash-$tgt-" -print_final_stats=1 "$b/corpus/$tgt" "tests/fuzz/corpus/$tgt" \
        2>"$b/fuzz_$tgt.log"; then
        echo "fuzz_$tgt: FOUND A PROBLEM, see $b/fuzz_$tgt.log and $b/crash-$tgt-*"
        status=1
    fi
    grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$b/fuzz_$tgt.log" | tr '\n' ' '
    echo "corpus: $(ls "$b/corpus/$tgt" | wc -l) inputs"
done
exit $status
