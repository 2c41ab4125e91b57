#!/bin/sh
# Encode speed of nn/tokenizer against Hugging Face tokenizers (Rust, one sequence, one
# thread) on the same text in the same run: SmolLM2's tokenizer (tools/get-smollm2.sh) on
# /usr/share/common-licenses/GPL-3, once and repeated 20 times. Best of 5 runs each; the ids
# must be identical.
# Usage: tools/bench-tokenizer.sh [MODEL_DIR]   (default: .models/smollm2)
# Env:   MK_VENV (default .venv-tools at the repository root)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
dir=${1:-"$root/.models/smollm2"}
venv=${MK_VENV:-"$root/.venv-tools"}
mk="$root/mergekit-c"
[ -f "$dir/tokenizer.json" ] || { echo "bench-tokenizer: $dir/tokenizer.json missing (run tools/get-smollm2.sh)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp /usr/share/common-licenses/GPL-3 "$tmp/gpl3.txt"
for i in $(seq 20); do cat /usr/share/common-licenses/GPL-3; done >"$tmp/gpl3x20.txt"
for f in gpl3 gpl3x20; do
    best=0
    for r in 1 2 3 4 5; do
        tps=$("$mk" tokenize "$dir" --text "$tmp/$f.txt" --ids -v 2>&1 >"$tmp/$f.ids" | sed -n 's/.*(\([0-9]*\) tokens\/s).*/\1/p')
        [ "$tps" -gt "$best" ] && best=$tps
    done
    echo "$f mergekit-c $best"
done >"$tmp/ours.txt"
"$venv/bin/python" - "$dir" "$tmp" <<'PY'
import sys, time
from tokenizers import Tokenizer
d, tmp = sys.argv[1], sys.argv[2]
t = Tokenizer.from_file(d + "/tokenizer.json")
ours = {l.split()[0]: int(l.split()[2]) for l in open(tmp + "/ours.txt")}
for f in ("gpl3", "gpl3x20"):
    text = open("%s/%s.txt" % (tmp, f), "rb").read().decode("utf-8", errors="replace")
    best, ids = 0.0, None
    for _ in range(5):
        t0 = time.perf_counter()
        ids = t.encode(text).ids
        best = max(best, len(ids) / (time.perf_counter() - t0))
    mine = list(map(int, open("%s/%s.ids" % (tmp, f)).read().split()))
    same = "same ids" if mine == ids else "IDS DIFFER"
    print("%-8s %7d tokens  mergekit-c %10.0f tokens/s  tokenizers %10.0f tokens/s  ratio %.1fx  (%s)"
          % (f, len(ids), ours[f], best, ours[f] / best, same))
PY
