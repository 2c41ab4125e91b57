#!/bin/sh
# make check-report (also run by make compat, as tools/compat-report.sh): the report pages, opened
# in headless Chromium (Debian's `chromium`; tools/install-deps.sh --chromium installs it when
# missing), render with no console message and every plot laid out; a screenshot of each is
# decoded and checked not blank (tools/check-report.py, python3's standard library only).
# Pages: a TIES merge (merge --report), a quantization (quantize --report and report --ref), an
# eval run (report EVAL.json), and a page of hostile tensor names.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
mk="$root/mergekit-c"
if ! command -v chromium >/dev/null 2>&1; then
    sh "$root/tools/install-deps.sh" --chromium
fi
w=$(mktemp -d /tmp/mk-check-report-XXXXXX)
trap 'rm -rf "$w"' EXIT
cd "$w"
"$mk" synth base --hidden 64 --layers 4 --heads 4 --kv-heads 2 --vocab 128 --dtype float32 --seed 1 -q
for s in 2 3 4; do "$mk" synth ft$((s - 1)) --finetune-of base --delta 0.05 --seed $s -q; done
"$mk" "$root/recipes/ties.yaml" merged --report merge.html -q
"$mk" quantize base q --format nf4 --report quant.html -q
"$mk" report q --ref base -o quant-ref.html -q
"$mk" eval q --text "$root/LICENSE" --ref base --ref ft1 --ctx 32 --chunks 4 --json -q >e.json
"$mk" report e.json -o eval.html -q
printf '{"format": "x", "description": "<b>\\u0001", "tensors": [{"name": "model.layers.0.<script>console.log(1)</script><img src=x onerror=console.log(2)>.weight", "bits_per_weight": 4, "rel_rmse": 0.1, "sqnr_db": 20}, {"name": "model.layers.1.\\"&x.weight", "bits_per_weight": 4.5, "rel_rmse": 0.2, "sqnr_db": 14}], "total": {}}\n' >h.json
"$mk" report h.json -o hostile.html -q

# the probe: the page in an iframe, and what the browser laid out for each plot, as text
probe() {
    cat >probe.html <<EOF
<!DOCTYPE html><html><body><pre id="out">not loaded</pre>
<iframe id="f" src="$1" style="width:1000px;height:6000px"></iframe>
<script>
document.getElementById('f').onload = function () {
  var d = this.contentDocument, out = [];
  d.querySelectorAll('svg.plot').forEach(function (s) {
    var r = s.getBoundingClientRect();
    out.push([s.dataset.plot, r.width.toFixed(1), r.height.toFixed(1), s.querySelectorAll('circle.pt').length,
              s.querySelectorAll('rect.bar').length, s.querySelectorAll('rect.cell').length].join(' '));
  });
  document.getElementById('out').textContent = out.join('\n');
};
</script></body></html>
EOF
}

chrome() {
    timeout 120 chromium --headless --no-sandbox --disable-gpu --no-first-run --disable-extensions \
        --enable-logging=stderr --v=0 "$@"
}

fail=0
for p in merge quant quant-ref eval hostile; do
    n=$(grep -c '<svg class="plot"' $p.html)
    chrome --window-size=1000,$((n * 420 + 400)) --screenshot="$w/$p.png" "file://$w/$p.html" >/dev/null 2>$p.log || true
    probe $p.html
    chrome --allow-file-access-from-files --virtual-time-budget=5000 --dump-dom "file://$w/probe.html" 2>>$p.log |
        sed -n '/<pre id="out">/,/<\/pre>/p' | sed 's/.*<pre id="out">//; s/<\/pre>.*//' >$p.layout
    python3 "$root/tools/check-report.py" $p.html $p.png $p.layout $p.log || fail=1
done
[ $fail = 0 ] && echo "check-report: every page renders in $(chromium --version 2>/dev/null | head -1)"
exit $fail
