#!/bin/sh
# quantize --target-bpw in parts: every part measures and allocates the same way (the
# allocation is in the plan's hash through the config groups' targets), writes its shards
# into the shared OUT.tmp, and finalize assembles the checkpoint: the same files as one
# process (the model card's title names OUT), whatever the order of the parts; the same bytes
# at another --chunk and thread count; a part with another budget is refused; usage errors.
. "$MK_ROOT/tests/e2e/lib.sh"
"$MK" synth m --hidden 256 --layers 8 --heads 8 --kv-heads 4 --intermediate 512 --vocab 256 --seed 5 -q || { notok "synth" "failed"; exit 0; }
O="--target-bpw 6 --out-shard-size 300K"
t_ok "one process" "$MK" quantize m q $O -q
# same FOLDER-A FOLDER-B: every file equal, the model card's title line aside
same() {
    for f in "$1"/*; do
        g="$2/$(basename "$f")"
        case "$f" in
        *README.md) sed 1,8d "$f" >r1.txt; sed 1,8d "$g" >r2.txt 2>/dev/null; cmp -s r1.txt r2.txt || { echo "$f"; return 1; } ;;
        *) cmp -s "$f" "$g" || { echo "$f"; return 1; } ;;
        esac
    done
    [ "$(ls "$1" | wc -l)" = "$(ls "$2" | wc -l)" ] || { echo "file count"; return 1; }
}
bad=""
for i in 3 1 2; do "$MK" quantize m p $O --part $i/3 -q 2>p.err || bad="$bad $i"; done
[ -z "$bad" ] && "$MK" finalize p -q 2>f.err && d=$(same q p) && [ ! -e p.tmp ] &&
    ok "3 parts (3, 1, 2) + finalize: the same $(ls q | grep -c safetensors\$) shards and files as one process" ||
    notok "3 parts + finalize" "part(s)$bad; $(cat p.err f.err 2>/dev/null | head -n 2) $d"
"$MK" quantize m c $O --chunk 4096 -j 1 -q
d=$(same q c) && ok "--chunk 4096 -j 1: the same allocation and bytes" || notok "--chunk 4096 -j 1" "$d differs"
"$MK" quantize m x $O --part 1/2 -q
t_fail "a part with another budget" 1 "another plan|other plan|plan" "$MK" quantize m x --target-bpw 5 --out-shard-size 300K --part 2/2 -q
t_fail "--part with --sensitivity kld-probe" 2 "sensitivity kld-probe" "$MK" quantize m y $O --part 1/2 --sensitivity kld-probe --sensitivity-text m/config.json
t_fail "--parts with --target-bpw" 2 "--parts" "$MK" quantize m y $O --parts 2 --dry-run
t_fail "--part with --eval-text" 2 "eval-text" "$MK" quantize m y $O --part 1/2 --eval-text m/config.json
t_absent "nothing written by the refusals" y y.tmp
