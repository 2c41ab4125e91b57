# lib.sh - helpers for end-to-end tests (sourced). Each test runs in its own scratch
# folder, removed on exit. Checks print "ok - NAME" or "not ok - NAME: why".
MK=${MK_BIN:?MK_BIN not set}
ROOT=${MK_ROOT:?MK_ROOT not set}
T=$(mktemp -d /tmp/mk-e2e-XXXXXX)
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1

ok() { echo "ok - $1"; }
notok() { echo "not ok - $1: $2"; }

# t_ok NAME CMD...: the command succeeds.
t_ok() {
    _n=$1; shift
    if "$@" >"$T/.out" 2>"$T/.err"; then ok "$_n"; else notok "$_n" "exit $? from: $* :: $(tail -n 3 "$T/.err")"; fi
}

# t_fail NAME CODE PATTERN CMD...: the command exits CODE, prints exactly one line on
# stderr, that line matches PATTERN (grep -E) and names what was wrong.
t_fail() {
    _n=$1; _code=$2; _pat=$3; shift 3
    "$@" >"$T/.out" 2>"$T/.err"
    _rc=$?
    _lines=$(grep -c . "$T/.err")
    if [ "$_rc" -ne "$_code" ]; then
        notok "$_n" "exit $_rc, want $_code; stderr: $(head -c 400 "$T/.err")"
    elif [ "$_lines" -ne 1 ]; then
        notok "$_n" "want one error line, got $_lines: $(head -c 600 "$T/.err")"
    elif ! grep -Eq -- "$_pat" "$T/.err"; then
        notok "$_n" "error line does not match /$_pat/: $(cat "$T/.err")"
    else
        ok "$_n"
    fi
}

# t_absent NAME PATH...: none of the paths exist (no partial output).
t_absent() {
    _n=$1; shift
    for _p in "$@"; do
        if [ -e "$_p" ]; then notok "$_n" "$_p exists"; return; fi
    done
    ok "$_n"
}

# t_same NAME A B: files are byte-identical.
t_same() {
    if cmp -s "$2" "$3"; then ok "$1"; else notok "$1" "$2 and $3 differ"; fi
}

# The quick-start models (small): base/, ft1/, ft2/ in bf16.
make_models() {
    _dt=${1:-bfloat16}
    "$MK" synth base/ --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 176 --vocab 128 --dtype "$_dt" --seed 1 -q &&
    "$MK" synth ft1/ --finetune-of base/ --delta 0.05 --seed 2 -q &&
    "$MK" synth ft2/ --finetune-of base/ --delta 0.05 --seed 3 -q
}

# t_same_quiet A B: true when files are byte-identical (no output).
t_same_quiet() { cmp -s "$1" "$2"; }

# tensor_hashes MODEL: "name xxh3" lines, one per tensor.
tensor_hashes() {
    "$MK" inspect "$1" --json --hashes | sed -n 's/.*"name": "\([^"]*\)".*"xxh3": "\([0-9a-f]*\)".*/\1 \2/p'
}

# alloc_budget NAME TARGET GOT FILE: a --target-bpw allocation (its JSON in FILE, the summary
# on the first line) achieved GOT bits per weight within 0.02 below TARGET, and its "objective"
# is no worse than the "alone_objective" of any candidate whose "alone_bpw" is within TARGET.
alloc_budget() {
    if awk -v g="$3" -v t="$2" 'BEGIN { exit !(g != "" && g <= t && t - g <= 0.02) }'; then
        ok "$1: achieved $3 bits per weight (within 0.02 below)"
    else
        notok "$1" "achieved '$3'"
    fi
    _obj=$(head -n 1 "$4" | sed -n 's/.*"objective": \([-0-9.e+]*\).*/\1/p')
    # "alone_bpw": x, "alone_objective": y of every candidate usable alone
    _alone=$(head -n 1 "$4" | grep -o '"alone_bpw": [0-9.]*, "alone_objective": [0-9.e+-]*' | sed 's/"alone_bpw": //; s/, "alone_objective": / /')
    _worse=$(echo "$_alone" | awk -v t="$2" -v o="$_obj" '$1 <= t && $2 < o { print }')
    if [ -n "$_alone" ] && [ -n "$_obj" ] && [ -z "$_worse" ]; then
        ok "$1: objective $_obj no worse than any single candidate within the budget"
    else
        notok "$1: beats single candidates" "objective '$_obj'; better alone: $_worse"
    fi
}

# gguf_types_hashes FILE: "TYPE XXH3" per tensor of a GGUF file (Q/K rows as inspect reads them
# back: Hugging Face order)
gguf_types_hashes() {
    "$MK" inspect "$1" --hashes --json | sed -n -e 's/.*"name": "[^"]*@\([A-Z0-9_]*\)".*"xxh3": "\([0-9a-f]*\)".*/\1 \2/p' \
        -e '/"name": "[^"@]*",/s/.*"dtype": "\([A-Z0-9]*\)".*"xxh3": "\([0-9a-f]*\)".*/\1 \2/p' | tr 'A-Z' 'a-z'
}

# t_lines NAME GOT WANT: two sorted line files equal, WANT not empty (else the first differences)
t_lines() {
    if [ -s "$3" ] && cmp -s "$2" "$3"; then ok "$1 ($(wc -l <"$3") lines)"; else notok "$1" "$(diff "$2" "$3" | head -n 4 | tr '\n' ' ')"; fi
}
