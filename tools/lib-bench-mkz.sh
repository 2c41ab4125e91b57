# lib-bench-mkz.sh - helpers shared by tools/bench-mkz*.sh (sourced, not run: make bench runs every tools/bench-*.sh; W is the work folder).

# run NAME CMD...: time a command; sets T_WALL T_CPU T_RSS (seconds, seconds, KiB)
run() {
    _n=$1
    shift
    if ! /usr/bin/time -f "%e %U %S %M" -o "$W/.time" "$@" >"$W/.out" 2>"$W/.err"; then
        echo "${0##*/}: $_n failed: $(tail -n 3 "$W/.err")" >&2
        exit 1
    fi
    read -r T_WALL _u _s T_RSS <"$W/.time"
    T_CPU=$(echo "$_u $_s" | awk '{printf "%.3f", $1 + $2}')
}
mbs() { echo "$1 $2" | awk '{ if ($2 > 0) printf "%.0f", $1 / 1e6 / $2; else print "-" }'; }
ratio() { echo "$1 $2" | awk '{ printf "%.3f", $1 / $2 }'; }
size() { wc -c <"$1" | tr -d ' '; }
