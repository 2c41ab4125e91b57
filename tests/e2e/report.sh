#!/bin/sh
# report: the HTML pages of a merge (against golden values from mergekit's own TIES pieces,
# tools/gen-golden-report.py), of quantization (quantize --json, quantize --report, a quantized
# folder against its original) and of eval --json; their structure (one <svg> per plot, one
# point or bar per layer or tensor, balanced tags), escaping of hostile names, same bytes on
# every run, and bad input.
. "$MK_ROOT/tests/e2e/lib.sh"
G="$ROOT/tests/golden/report"

# points PAGE: "plot|series|x<TAB>value" per line-plot point, "plot|a vs b<TAB>value" per
# matrix cell, "plot|label<TAB>value" per bar, read off the tooltips
points() {
    awk '
    match($0, /data-plot="p[0-9]+"/) { p = substr($0, RSTART + 11, RLENGTH - 12) }
    /<circle class="pt"/ || /<rect class="cell"/ || /<rect class="bar"/ {
        t = $0; sub(/.*<title>/, "", t); sub(/<\/title>.*/, "", t)
        i = length(t); while (i > 0 && substr(t, i, 3) != " = ") i--
        v = substr(t, i + 3); k = substr(t, 1, i - 1)
        if ($0 ~ /class="pt"/) { j = length(k); while (j > 0 && substr(k, j, 2) != ": ") j--; k = substr(k, 1, j - 1) "|" substr(k, j + 2) }
        print p "|" k "\t" v
    }' "$1"
}

# count PAGE PLOT CLASS: elements of that class in plot PLOT
count() {
    awk -v want="$2" -v cls="class=\"$3\"" '
    match($0, /data-plot="p[0-9]+"/) { p = substr($0, RSTART + 11, RLENGTH - 12) }
    p == want && index($0, cls) { n++ }
    END { print n + 0 }' "$1"
}

# balanced PAGE: every tag closes in order (void tags written as <x/>), as XML wants
balanced() {
    grep -o '<[^>]*>' "$1" | awk '
    /^<!/ || /\/>$/ { next }
    /^<\// { t = substr($0, 3); sub(/[ >].*/, "", t); if (d == 0 || s[d] != t) { print "</" t "> closes <" s[d] "> at tag " NR; bad = 1; exit 1 } d--; next }
    { t = substr($0, 2); sub(/[ \/>].*/, "", t); s[++d] = t }
    END { if (!bad && d != 0) { print d " tags left open, last <" s[d] ">"; exit 1 } }'
}

# ---- a merge, against mergekit's TIES -------------------------------------------------------
"$MK" synth base --hidden 48 --heads 6 --kv-heads 2 --intermediate 136 --vocab 100 --layers 3 --dtype float32 --seed 11 -q
"$MK" synth ft1 --finetune-of base --delta 0.05 --seed 12 -q
"$MK" synth ft2 --finetune-of base --delta 0.05 --seed 13 --density 0.5 -q
"$MK" synth ft3 --finetune-of base --delta 0.08 --seed 14 -q
cp "$G/ties.yaml" ties.yaml
t_ok "report RECIPE.yaml" "$MK" report ties.yaml -o m.html -q
points m.html >got.txt
# golden NAME GOLDEN GOT: the page's values against the golden ones. Tolerance: the page prints
# 6 significant digits; 1e-5 relative (+1e-9) is below one element in the kept-density and
# conflict counts (1 / 6912 of a layer's elements, about 1.4e-4)
golden() {
    if awk -F '\t' 'NR == FNR { if ($0 !~ /^#/) want[$1] = $2; next } { got[$1] = $2 }
        END { n = 0; worst = -1
              for (k in want) { n++; if (!(k in got)) { print "missing " k; exit 1 }
                  e = got[k] - want[k]; if (e < 0) e = -e; w = want[k] < 0 ? -want[k] : want[k]
                  r = e / (1e-5 * w + 1e-9); if (r > worst) { worst = r; wk = k } }
              if (n != length(got)) { print n " golden values, " length(got) " on the page"; exit 1 }
              if (worst > 1) { print "worst " wk ": got " got[wk] ", want " want[wk] " (tolerance 1e-5 rel + 1e-9)"; exit 1 }
              printf "%d values within 1e-5; worst %s at %.3g of the tolerance\n", n, wk, worst }' "$2" "$3" >cmp.txt; then
        ok "$1: $(cat cmp.txt)"
    else
        notok "$1" "$(cat cmp.txt)"
    fi
}
golden "merge report matches mergekit's TIES pieces" "$G/ties.txt" got.txt
# bf16 deltas tie at the trim threshold: exactly k kept (by flat index, as the merge's TIES
# keeps them), so the kept density is k over the elements
mkdir bf16
(cd bf16 && "$MK" synth base --hidden 48 --heads 6 --kv-heads 2 --intermediate 136 --vocab 100 --layers 3 --seed 11 -q &&
    "$MK" synth ft1 --finetune-of base --delta 0.05 --seed 12 -q && cp "$G/ties-bf16.yaml" t.yaml && "$MK" report t.yaml -o b.html -q)
points bf16/b.html >got16.txt
golden "bf16 merge report: exactly k of the tied magnitudes kept, as mergekit's magnitude()" "$G/ties-bf16.txt" got16.txt
n_svg=$(grep -c '<svg class="plot"' m.html)
n3=$(grep -c 'data-kind="lines" data-n="3"' m.html)
if [ "$n_svg" = 5 ] && [ "$n3" = 4 ] && [ "$(count m.html p1 pt)" = 9 ] && [ "$(count m.html p2 pt)" = 9 ] &&
    [ "$(count m.html p3 cell)" = 9 ] && [ "$(count m.html p4 pt)" = 3 ] && [ "$(count m.html p5 pt)" = 9 ]; then
    ok "merge page: 5 plots, a point per layer and model (3 x 3), a cell per pair"
else
    notok "merge page structure" "svg $n_svg, 3-layer line plots $n3, p1 $(count m.html p1 pt) p3 $(count m.html p3 cell)"
fi
if r=$(balanced m.html); then ok "merge page: tags balanced"; else notok "merge page: tags balanced" "$r"; fi
t_ok "report again" "$MK" report ties.yaml -o m2.html -q
t_same "the same bytes on every run" m.html m2.html
t_ok "merge --report" "$MK" ties.yaml out --report mr.html -q
t_ok "report OUT --recipe" "$MK" report out --recipe -o mo.html -q
if points mr.html | cmp -s - got.txt && points mo.html | cmp -s - got.txt; then
    ok "merge --report and report OUT --recipe draw the same values"
else
    notok "merge --report and report OUT --recipe draw the same values" "$(points mr.html | diff - got.txt | head -3)"
fi

# ---- quantization ----------------------------------------------------------------------------
t_ok "quantize --report --json" "$MK" quantize base q --format int8 --report qr.html --json -q
cp "$T/.out" q.json
t_ok "report QUANT.json" "$MK" report q.json -o qj.html -q
t_ok "report QUANT --ref ORIG" "$MK" report q --ref base -o qf.html -q --json
if grep -q '"page": "qf.html", "of": "quantization", "plots": 4, "bytes": '"$(wc -c <qf.html)"'}' "$T/.out"; then ok "report --json names the page, its plots and bytes"
else notok "report --json" "$(cat "$T/.out")"; fi
nt=$(grep -c '"name"' q.json)
for p in qr qj qf; do
    kinds=$(points $p.html | grep -c '^p1|')
    if [ "$(grep -c '<svg class="plot"' $p.html)" = 4 ] && [ "$(grep -c 'data-kind="lines" data-n="3"' $p.html)" = 2 ] &&
        [ "$(count $p.html p3 bar)" = "$nt" ] && [ "$(count $p.html p4 bar)" = "$nt" ] && [ "$kinds" = 21 ]; then
        ok "quant page $p: 4 plots, 7 kinds x 3 layers, a bar per quantized tensor ($nt)"
    else
        notok "quant page $p" "svg $(grep -c '<svg class="plot"' $p.html), bars $(count $p.html p3 bar) of $nt, points $kinds"
    fi
    if r=$(balanced $p.html); then ok "quant page $p: tags balanced"; else notok "quant page $p: tags balanced" "$r"; fi
done
# the error recomputed from the files equals the quantizer's own (6 digits; sums in another order)
if points qr.html | grep '^p3|' >a.txt && points qf.html | grep '^p3|' >b.txt &&
    r=$(paste a.txt b.txt | awk -F '\t' '{ e = $2 - $4; if (e < 0) e = -e; if ($1 != $3 || e > 1e-5 * $2) { print $1 ": " $2 " vs " $4; exit 1 } } END { print NR }'); then
    ok "quant --ref recomputes each tensor's relative RMSE ($r tensors, within 1e-5 relative)"
else
    notok "quant --ref recomputes the relative RMSE" "$r"
fi

# ---- eval ------------------------------------------------------------------------------------
t_ok "eval --json" "$MK" eval q --text "$ROOT/LICENSE" --ref base --ctx 32 --chunks 4 --json -q
cp "$T/.out" e.json
scored=$(sed -n 's/.*"scored": \([0-9]*\).*/\1/p' e.json)
hsum=$(sed -n 's/.*"counts": \[\([^]]*\)\].*/\1/p' e.json | tr ',' '\n' | awk '{ s += $1 } END { print s }')
if [ -n "$scored" ] && [ "$hsum" = "$scored" ]; then ok "eval's KL histogram counts every scored token ($scored)"
else notok "eval's KL histogram counts every scored token" "sum $hsum, scored $scored"; fi
t_ok "report EVAL.json" "$MK" report e.json -o e.html -q
if [ "$(grep -c '<svg class="plot"' e.html)" = 2 ] && [ "$(count e.html p1 bar)" = 33 ] && [ "$(count e.html p2 bar)" = 6 ] &&
    [ "$(points e.html | grep '^p1|' | awk -F '\t' '{ s += $2 } END { print s }')" = "$scored" ]; then
    ok "eval page: a bar per KL bin (33) holding every token, the quantiles (6)"
else
    notok "eval page" "svg $(grep -c '<svg class="plot"' e.html), bars $(count e.html p1 bar)"
fi
if r=$(balanced e.html); then ok "eval page: tags balanced"; else notok "eval page: tags balanced" "$r"; fi

# ---- hostile names ----------------------------------------------------------------------------
printf '{"format": "int8", "description": "<b>x</b>", "tensors": [\n' >h.json
printf '{"name": "model.layers.0.<script>alert(\\"x\\")</script>&amp;\\u0001'"'"'.weight", "bits_per_weight": 8.1, "rel_rmse": 0.01, "sqnr_db": 40, "max_abs_err": 0.001, "in_bytes": 100, "out_bytes": 51},\n' >>h.json
printf '{"name": "model.layers.1.a.weight", "bits_per_weight": 8.1, "rel_rmse": 0.02, "sqnr_db": 34, "max_abs_err": 0.002, "in_bytes": 100, "out_bytes": 51}],\n' >>h.json
printf '"total": {"bits_per_weight": 8.1, "rel_rmse": 0.015, "sqnr_db": 37, "max_abs_err": 0.002, "in_bytes": 200, "out_bytes": 102}}\n' >>h.json
t_ok "report a hostile quantize --json" "$MK" report h.json -o h.html -q
if ! grep -q '<script\|<b>x' h.html && grep -q '&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;amp;'"$(printf '\357\277\275')"'&#39;.weight' h.html; then
    ok "tensor names are escaped (< > & \" ' and control characters)"
else
    notok "tensor names are escaped" "$(grep -o '.\{20\}script.\{30\}' h.html | head -2)"
fi
if r=$(balanced h.html); then ok "hostile page: tags balanced"; else notok "hostile page: tags balanced" "$r"; fi

# ---- bad input -------------------------------------------------------------------------------
t_fail "missing path" 1 "nope.json: no such file" "$MK" report nope.json -o x.html
t_fail "a folder needs --recipe or --ref" 2 "base is a folder: name --recipe" "$MK" report base -o x.html
t_fail "--recipe needs a merge's output" 2 "base: no mergekit_config.yml" "$MK" report base --recipe -o x.html
t_fail "--recipe and --ref exclude each other" 2 "exclude each other" "$MK" report out --recipe --ref base -o x.html
t_fail "--ref needs a quantized model" 2 "base is not quantized" "$MK" report base --ref ft1 -o x.html
printf 'merge_method: linear\nmodels:\n  - model: ft1\n    parameters: {weight: 1}\n  - model: ft2\n    parameters: {weight: 1}\n' >lin.yaml
t_fail "a recipe without base_model" 2 "lin.yaml: the recipe has no base_model" "$MK" report lin.yaml -o x.html
printf '{"a": 1}' >o.json
t_fail "JSON of something else" 2 "o.json: neither the --json output of quantize" "$MK" report o.json -o x.html
printf '[1]' >a.json
t_fail "JSON that is not an object" 2 "a.json: not a JSON object" "$MK" report a.json -o x.html
printf '{"format": "x", "tensors": 3' >t.json
t_fail "truncated JSON" 1 "t.json" "$MK" report t.json -o x.html
printf '{"format": "x", "tensors": 3}' >t.json
t_fail "tensors not an array" 1 "t.json: \"tensors\" is a number, expected an array" "$MK" report t.json -o x.html
t_ok "merge --dry-run --report: the page without the merge" "$MK" ties.yaml out2 --report md.html --dry-run -q
if points md.html | cmp -s - got.txt && [ ! -e out2 ]; then ok "merge --dry-run --report draws the same values, writes no OUT"
else notok "merge --dry-run --report" "$(points md.html | diff - got.txt | head -3)"; fi
t_fail "merge --resume --report of a complete OUT" 2 "--report: nothing was planned" "$MK" ties.yaml out --resume --report x.html -q
t_fail "quantize --report with --dry-run" 2 "--report describes a whole run" "$MK" quantize base q2 --format int8 --report x.html --dry-run
t_absent "no page after errors" x.html
