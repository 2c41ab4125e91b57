# lib-bench.sh - helpers the benchmarks share (sourced by tools/bench.sh, tools/bench-moe.sh and tools/bench-cuda.sh).
now() { date +%s.%N; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# Drop the page cache (root) or at least these files' pages, so every run reads from disk.
cold() {
    sync
    if ! (echo 3 >/proc/sys/vm/drop_caches) 2>/dev/null; then
        for f in "$@"; do dd if="$f" iflag=nocache count=0 status=none 2>/dev/null || true; done
    fi
}
peak_mb() { awk '/Maximum resident set size/ {printf "%.0f", $6 / 1024}' "$1"; }
