#!/bin/sh
# make demo-merge-bench: merge methods judged on real finetunes. SmolLM2-135M (tools/get-smollm2.sh,
# or MK_SMOLLM2) is finetuned (`mergekit-c finetune`) on three kinds of text every Debian system
# has: its common licences (base-files), the manual pages of coreutils and the modules of
# perl-base (all Essential packages). A part of each text is held out, never trained on. The
# finetunes are merged back into one model by each method's recipe in recipes/merge-bench/
# (base: SmolLM2), and every merge, the base and the finetunes are evaluated (`mergekit-c eval`)
# on each held-out text: perplexity, and the KL divergence to that text's finetune. One table
# shows them with each merge's wall time and peak RSS (/usr/bin/time -v).
# Work folder: ./demo-merge-bench (or $DEMO_DIR).
# Env: METHODS (default: all seven; a method mergekit-c does not know stops the demo before any
#      training), MB_STEPS, MB_SEQ, MB_BATCH, MB_LR, MB_WARMUP (the finetunes), MB_CTX,
#      MB_CHUNKS (eval windows and how many of them), MB_REUSE=1 (keep the finetunes of an
#      earlier run with the same settings and texts, to merge with other methods).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
mk=${MK_BIN:-$root/mergekit-c}
model=${MK_SMOLLM2:-$root/.models/smollm2}
methods=${METHODS:-linear ties dare_ties tsv iso_c iso_cts cart}
steps=${MB_STEPS:-30} seq=${MB_SEQ:-128} batch=${MB_BATCH:-2} lr=${MB_LR:-1e-4} warmup=${MB_WARMUP:-3}
ctx=${MB_CTX:-256} chunks=${MB_CHUNKS:-8}
dir=${DEMO_DIR:-$root/demo-merge-bench}
domains="licenses manpages perl"
t_start=$(date +%s)

fail() { echo "demo-merge-bench: $*" >&2; exit 1; }
[ -x "$mk" ] || fail "$mk is absent (run make)"
[ -f "$model/model.safetensors" ] || fail "SmolLM2-135M is absent (run tools/get-smollm2.sh, or set MK_SMOLLM2)"
# every method is checked before minutes of training: a recipe, and a method mergekit-c knows
known=$("$mk" methods --json | grep -o '"name": "[a-z_]*", "supported": true' | cut -d'"' -f4)
for m in $methods; do
    [ -f "$root/recipes/merge-bench/$m.yaml" ] || fail "no recipe recipes/merge-bench/$m.yaml for method $m"
    echo "$known" | grep -qx "$m" || fail "mergekit-c has no merge method $m (mergekit-c methods lists them)"
done

# --- the texts: three sources on every Debian system, each split into train and held-out ---
licenses=/usr/share/common-licenses
for f in Apache-2.0 GPL-2 GPL-3 MPL-2.0 GFDL-1.3; do
    [ -f "$licenses/$f" ] || fail "$licenses/$f is absent (package base-files)"
done
command -v dpkg-query >/dev/null || fail "dpkg-query is absent: the texts are found through Debian's package lists"
# FILES... of a package that exist (a minimal image may have dropped its manual pages)
pkgfiles() { # PACKAGE REGEX
    dpkg-query -L "$1" 2>/dev/null | grep -E "$2" | while read -r f; do [ -f "$f" ] && echo "$f"; done | LC_ALL=C sort
}
mkdir -p "$dir"
cd "$dir"
pkgfiles coreutils '^/usr/share/man/man1/[^/]*\.1\.gz$' >manpages.list
pkgfiles perl-base '^/usr/lib/.*/perl-base/.*\.pm$' >perl.list
[ "$(wc -l <manpages.list)" -ge 40 ] ||
    fail "coreutils' manual pages are absent from /usr/share/man/man1 ($(wc -l <manpages.list) found; an image without manual pages?)"
[ "$(wc -l <perl.list)" -ge 30 ] || fail "perl-base's modules are absent ($(wc -l <perl.list) found)"
# every fourth file (in name order) is held out
split4() { # LIST -> LIST.train, LIST.heldout
    awk 'NR % 4 == 0' "$1" >"$1.heldout"
    awk 'NR % 4 != 0' "$1" >"$1.train"
}
# troff of the help2man pages to plain text: macro lines give their words, font and other
# escapes go
cat >man2text.sed <<'EOF'
/^['.]\\"/d
/^\.\(SH\|SS\|B\|I\|BR\|RB\|BI\|IB\|IR\|RI\|SM\|SB\) /{
s/"//g
s/^\.[A-Z]* *//
}
/^\./d
s/\\f\[[^]]*\]//g
s/\\f([A-Za-z][A-Za-z]//g
s/\\f[A-Za-z0-9]//g
s/\\[,/&|^]//g
s/\\-/-/g
s/\\(aq/'/g
s/\\(co/(C)/g
s/\\(em/--/g
s/\\(en/-/g
s/\\(bu/*/g
s/\\(lq/"/g
s/\\(rq/"/g
s/\\([a-z][a-z]//g
s/\\e/\\/g
s/\\ / /g
EOF
split4 manpages.list
split4 perl.list
# shellcheck disable=SC2046 # the lists are file names without spaces (Debian's packages)
{
    (cd $licenses && cat Apache-2.0 GPL-2 GPL-3 MPL-2.0) >train-licenses.txt
    cp "$licenses/GFDL-1.3" heldout-licenses.txt                 # another licence, never trained on
    zcat $(cat manpages.list.train) | sed -f man2text.sed >train-manpages.txt
    zcat $(cat manpages.list.heldout) | sed -f man2text.sed >heldout-manpages.txt
    cat $(cat perl.list.train) >train-perl.txt
    cat $(cat perl.list.heldout) >heldout-perl.txt
}

# --- the finetunes (kept with MB_REUSE=1 when the settings and texts are the same) ---
stamp="$("$mk" --version 2>&1 | head -n 1) steps $steps seq $seq batch $batch lr $lr warmup $warmup $(cat train-*.txt | cksum)"
if [ "${MB_REUSE:-0}" = 1 ] && [ -f finetunes.txt ] && [ "$(cat finetunes.txt)" = "$stamp" ]; then
    echo "demo-merge-bench: reusing the finetunes in $dir (MB_REUSE=1, same settings)"
else
    rm -rf smollm2 ft-* merge-* finetunes.txt ./*.time
    ln -s "$(cd "$model" && pwd)" smollm2
fi
for m in $methods; do rm -rf "merge-$m" "merge-$m.tmp" "merge-$m.time"; done

# timed LABEL CMD...: runs CMD under /usr/bin/time -v (LABEL.time), else only its wall time
timed() {
    _l=$1; shift
    if [ -x /usr/bin/time ]; then
        /usr/bin/time -v -o "$_l.time" "$@"
    else
        _t0=$(date +%s.%N)
        "$@"
        echo "$_t0 $(date +%s.%N)" | awk '{printf "Elapsed (wall clock) time (h:mm:ss or m:ss): %.2f\n", $2 - $1}' >"$_l.time"
    fi
}
seconds() { # LABEL -> wall seconds
    sed -n 's/.*Elapsed (wall clock) time.*: \(.*\)/\1/p' "$1.time" |
        awk -F: '{ if (NF == 3) s = $1 * 3600 + $2 * 60 + $3; else if (NF == 2) s = $1 * 60 + $2; else s = $1; printf "%.1f", s }'
}
peak() { # LABEL -> peak RSS in MB, or n/a
    _k=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$1.time")
    if [ -n "$_k" ]; then awk -v k="$_k" 'BEGIN {printf "%.0f", k / 1024}'; else echo "n/a"; fi
}
[ -x /usr/bin/time ] || echo "demo-merge-bench: /usr/bin/time is absent (tools/install-deps.sh --tools installs it): no peak RSS" >&2

for d in $domains; do
    [ -f "ft-$d/model.safetensors" ] && continue
    echo "demo-merge-bench: finetuning on $d ($steps steps of $batch x $seq tokens, lr $lr)"
    timed "ft-$d" "$mk" finetune smollm2/ "train-$d.txt" "ft-$d/" --steps "$steps" --seq "$seq" --batch "$batch" \
        --lr "$lr" --warmup "$warmup" --schedule cosine -q
done
echo "$stamp" >finetunes.txt

for m in $methods; do
    echo "demo-merge-bench: merging with $m (recipes/merge-bench/$m.yaml)"
    timed "merge-$m" "$mk" "$root/recipes/merge-bench/$m.yaml" "merge-$m/" -q
done

# --- evaluation: each model on each held-out text, against that text's finetune ---
field() { # NAME JSON -> the first number after "NAME":
    printf '%s\n' "$2" | sed -n "s/.*\"$1\": \([0-9.e+-]*\).*/\1/p" | head -n 1
}
row() { # LABEL MODEL TIMELABEL
    _line="| $1 |" _kls=""
    for d in $domains; do
        if [ "$2" = "ft-$d/" ]; then
            _j=$("$mk" eval "$2" --text "heldout-$d.txt" --ctx "$ctx" --chunks "$chunks" --json -q)
            _kl=0
        else
            _j=$("$mk" eval "$2" --text "heldout-$d.txt" --ctx "$ctx" --chunks "$chunks" --ref "ft-$d/" --json -q)
            _kl=$(field kl_mean "$_j")
        fi
        _p=$(field ppl "$_j")
        if [ -z "$_p" ] || [ -z "$_kl" ]; then fail "eval of $2 on heldout-$d.txt gave no perplexity or KL: $_j"; fi
        _line="$_line $(awk -v p="$_p" 'BEGIN {printf "%.3f", p}') |"
        _kls="$_kls $_kl"
    done
    for k in $_kls; do _line="$_line $(awk -v k="$k" 'BEGIN {printf "%.4f", k}') |"; done
    _line="$_line $(echo "$_kls" | awk '{printf "%.4f", ($1 + $2 + $3) / 3}') |"
    if [ -n "$3" ]; then _line="$_line $(seconds "$3") | $(peak "$3") |"; else _line="$_line - | - |"; fi
    echo "$_line" >>table.md
    echo "$_line"
}
kb() { awk -v b="$(cat "$@" | wc -c)" 'BEGIN {printf "%.0f kB", b / 1000}'; }
{
    echo "held-out text (never trained on; eval scores the first $chunks windows of $ctx tokens, the second half of each):"
    echo "  licenses: $licenses/GFDL-1.3, $(kb heldout-licenses.txt) (trained on Apache-2.0, GPL-2, GPL-3 and MPL-2.0, $(kb train-licenses.txt))"
    echo "  manpages: $(wc -l <manpages.list.heldout) of coreutils' $(wc -l <manpages.list) manual pages as text, $(kb heldout-manpages.txt) (trained on the other $(wc -l <manpages.list.train), $(kb train-manpages.txt))"
    echo "  perl:     $(wc -l <perl.list.heldout) of perl-base's $(wc -l <perl.list) modules, $(kb heldout-perl.txt) (trained on the other $(wc -l <perl.list.train), $(kb train-perl.txt))"
    echo "finetunes: $steps steps of $batch x $seq tokens each, AdamW lr $lr, $warmup warmup steps, cosine"
} >notes.txt
echo
cat notes.txt
echo
: >table.md
echo "| model | ppl licenses | ppl manpages | ppl perl | KL ft-licenses | KL ft-manpages | KL ft-perl | mean KL | time s | peak MB |" | tee -a table.md
echo "|---|---|---|---|---|---|---|---|---|---|" | tee -a table.md
row "SmolLM2-135M (base)" smollm2/ ""
for d in $domains; do row "finetune: $d" "ft-$d/" "ft-$d"; done
for m in $methods; do row "merge: $m" "merge-$m/" "merge-$m"; done
echo
echo "KL ft-X: mean KL divergence (nats/token) of the model's next-token distribution to ft-X's, on X's held-out text"
echo "time s, peak MB: wall time and peak RSS of the merge (of a finetune row: of its finetune)"
echo "demo-merge-bench: $(($(date +%s) - t_start)) s in all; models, texts and table.md in $dir"
