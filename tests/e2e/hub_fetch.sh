# hub_fetch.sh - models fetched from the Hub by the byte ranges a run reads, against a stand-in
# Hub on the loopback address (tests/tools/hubstub.c, started and stopped here; it logs every
# body it sends). Checks: a merge by ids equals the merge by folders and leaves the cache in
# huggingface_hub's layout (refs, snapshot links, blobs named by sha256); a second run fetches
# nothing; a plan that fails fetches headers only; a frankenmerge fetches only the layers it
# uses; a later run fetches only what is missing; a cut connection resumes where it stopped;
# 503s are retried; gated, missing and unreachable repositories fail with one line; a
# damaged partial file never becomes a blob; HF_HUB_OFFLINE refuses to fetch the rest.
# tools/compat-hub.sh has huggingface_hub read the cache these runs write.
. "$MK_ROOT/tests/e2e/lib.sh"

if [ -z "${MK_HUBSTUB:-}" ] || [ ! -x "$MK_HUBSTUB" ]; then
    echo "not ok - hubstub: MK_HUBSTUB is not set to the stand-in Hub (make test builds it)"
    exit 1
fi
unset HF_HUB_CACHE HUGGINGFACE_HUB_CACHE HF_HOME XDG_CACHE_HOME HF_HUB_OFFLINE TRANSFORMERS_OFFLINE HF_TOKEN HF_TOKEN_PATH
export HOME=$T/home MK_HUB_BACKOFF_MS=10
mkdir -p "$HOME"

make_models float32 || { notok "synth" "could not make the models"; exit 1; }
"$MK" synth deep/ --hidden 64 --layers 8 --heads 4 --kv-heads 2 --intermediate 176 --vocab 128 --dtype float32 --seed 4 -q ||
    { notok "synth deep" "could not make it"; exit 1; }
mkdir -p hub/acme && cp -r base ft1 ft2 deep hub/acme/ && cp -r base hub/acme/gated && : >hub/acme/gated.gated

PIDS=""
# start_hub NAME [hubstub options]: a stand-in on a free port; sets EP and LOG
start_hub() {
    _n=$1
    shift
    LOG=$T/$_n.log
    : >"$LOG"
    "$MK_HUBSTUB" "$T/hub" "$T/$_n.port" "$LOG" "$@" &
    PIDS="$PIDS $!"
    for _i in $(seq 100); do [ -s "$T/$_n.port" ] && break; sleep 0.05; done
    EP=http://127.0.0.1:$(cat "$T/$_n.port")
}
trap 'for p in $PIDS; do kill $p 2>/dev/null; done; rm -rf "$T"' EXIT
# lfs_bytes LOG [FILE-PATTERN]: bytes of weights the stand-in sent
lfs_bytes() { awk -v pat="${2:-}" '$1 == "GET" && $2 ~ /safetensors$/ && $2 ~ pat { s += $4 - $3 } END { print s + 0 }' "$1"; }
size_of() { wc -c <"$1" | tr -d ' '; }
commit_of() { printf '%s' "$1" | sha256sum | cut -c1-40; }

start_hub main --token sekrit
export HF_ENDPOINT=$EP

cat >by_dir.yaml <<'EOF'
merge_method: linear
models:
  - model: base/
    parameters: {weight: 0.2}
  - model: ft1/
    parameters: {weight: 0.4}
  - model: ft2/
    parameters: {weight: 0.4}
dtype: float32
EOF
sed 's|model: \([a-z0-9]*\)/|model: acme/\1|' by_dir.yaml >by_id.yaml

# ---- a merge by ids: the same bytes, and the cache as huggingface_hub lays it out ---------------
export HF_HUB_CACHE=$T/c1
t_ok "merge by ids from the Hub" "$MK" merge by_id.yaml out_id/ -q
t_ok "merge by folders" "$MK" merge by_dir.yaml out_dir/ -q
t_same "merge: fetched inputs give the bytes of local ones" out_id/model.safetensors out_dir/model.safetensors
C=$(commit_of acme/base)
R=$T/c1/models--acme--base
SHA=$(sha256sum base/model.safetensors | cut -d' ' -f1)
if [ "$(cat "$R/refs/main")" = "$C" ]; then ok "cache: refs/main holds the commit, no newline"; else notok "cache: refs/main" "$(cat "$R/refs/main")"; fi
if [ -f "$R/blobs/$SHA" ] && [ "$(readlink "$R/snapshots/$C/model.safetensors")" = "../../blobs/$SHA" ] &&
    cmp -s "$R/snapshots/$C/model.safetensors" base/model.safetensors; then
    ok "cache: a weights file read whole is blobs/<sha256>, linked from the snapshot"
else notok "cache: weights blob" "$(ls -la "$R/blobs" "$R/snapshots/$C" 2>&1 | tr '\n' ' ')"; fi
if [ -L "$R/snapshots/$C/config.json" ] && cmp -s "$R/snapshots/$C/config.json" base/config.json &&
    cmp -s "$R/snapshots/$C/tokenizer.json" base/tokenizer.json; then
    ok "cache: config and tokenizer linked from the snapshot"
else notok "cache: side files" "$(ls -la "$R/snapshots/$C" 2>&1 | tr '\n' ' ')"; fi
n=$(lfs_bytes "$LOG")
want=$(($(size_of base/model.safetensors) + $(size_of ft1/model.safetensors) + $(size_of ft2/model.safetensors)))
if [ "$n" -eq "$want" ]; then ok "merge: every weight byte fetched once ($n bytes)"; else notok "merge: weight bytes" "$n, want $want"; fi
: >"$LOG"
t_ok "a second run" "$MK" merge by_id.yaml out_id2/ -q
if [ ! -s "$LOG" ]; then ok "a second run fetches nothing"; else notok "a second run fetches nothing" "$(head -3 "$LOG")"; fi
t_same "a second run: the same bytes" out_id2/model.safetensors out_dir/model.safetensors
t_ok "offline: the fetched cache is enough" env HF_HUB_OFFLINE=1 "$MK" inspect acme/ft1 -q
export HF_HUB_CACHE=$T/c1q
t_ok "quantize by id, fetched" "$MK" quantize acme/ft2 q_id/ --format int8 -q
t_ok "quantize by folder" "$MK" quantize ft2/ q_dir/ --format int8 -q
t_same "quantize: a fetched input gives the bytes of a local one" q_id/model.safetensors q_dir/model.safetensors

# ---- planning reads headers only -------------------------------------------------------------
export HF_HUB_CACHE=$T/c2
: >"$LOG"
cat >bad.yaml <<'EOF'
merge_method: passthrough
slices:
  - sources:
      - model: acme/deep
        layer_range: [0, 99]
dtype: float32
EOF
t_fail "a recipe error shows before any weight is fetched" 2 "layer_range" "$MK" merge bad.yaml out_bad/ -q
t_absent "the failed plan: no output" out_bad out_bad.tmp
hdr=$(($(od -An -tu8 -N8 deep/model.safetensors | tr -d ' ') + 8))
n=$(lfs_bytes "$LOG")
if [ "$n" -le "$hdr" ]; then ok "the failed plan fetched at most the header ($n of $hdr bytes)"; else notok "header-only planning" "$n bytes fetched, header $hdr"; fi
: >"$LOG"
t_ok "--dry-run by id" "$MK" merge by_id.yaml out_dry/ --dry-run -q
n=$(lfs_bytes "$LOG")
if [ "$n" -lt 20000 ]; then ok "--dry-run fetches headers only ($n bytes)"; else notok "--dry-run fetches headers only" "$n bytes"; fi

# ---- a frankenmerge fetches only the layers it uses; a later run only what is missing ----------
export HF_HUB_CACHE=$T/c3
: >"$LOG"
cat >frank.yaml <<'EOF'
merge_method: passthrough
slices:
  - sources:
      - model: acme/deep
        layer_range: [0, 2]
  - sources:
      - model: acme/deep
        layer_range: [6, 8]
dtype: float32
EOF
sed 's|acme/deep|deep/|' frank.yaml >frank_dir.yaml
"$MK" merge frank.yaml out_fk/ --dry-run --json -q >dry.json 2>dry.err
D=$(sed -n 's/.*"hub_fetch_bytes": \([0-9]*\).*/\1/p' dry.json)
"$MK" merge frank.yaml out_fk/ --dry-run -q >dry.txt 2>&1
if grep -q "^to fetch from the Hub: .* of the tensors it reads" dry.txt; then ok "--dry-run says what it will fetch"; else notok "--dry-run says what it will fetch" "$(cat dry.txt | head -5)"; fi
: >"$LOG"
t_ok "frankenmerge by id" "$MK" merge frank.yaml out_fk/ -q
t_ok "frankenmerge by folder" "$MK" merge frank_dir.yaml out_fk_dir/ -q
t_same "frankenmerge: the same bytes" out_fk/model.safetensors out_fk_dir/model.safetensors
n=$(lfs_bytes "$LOG")
full=$(size_of deep/model.safetensors)
# 4 of 8 layers, plus embeddings, norm and lm_head
if [ "$n" -lt $((full * 3 / 4)) ] && [ "$n" -gt $((full / 4)) ]; then
    ok "frankenmerge: fetched $n of $full bytes"
else notok "frankenmerge: fetched bytes" "$n of $full"; fi
if [ -n "$D" ] && [ "$n" -eq "$D" ]; then ok "the merge fetched what --dry-run said ($D bytes)"; else notok "--dry-run's figure" "said ${D:-nothing}, fetched $n"; fi
R=$T/c3/models--acme--deep
C=$(commit_of acme/deep)
if [ ! -e "$R/snapshots/$C/model.safetensors" ] && [ -z "$(ls "$R/blobs" | grep -E '^[0-9a-f]{64}$' | while read -r b; do
    [ "$(size_of "$R/blobs/$b")" -eq "$full" ] && echo "$b"; done)" ]; then
    ok "a partly fetched file is not a blob"
else notok "a partly fetched file is not a blob" "$(ls -la "$R/blobs" "$R/snapshots/$C")"; fi
t_fail "offline: the rest of a partly fetched file is refused" 1 "acme/deep: model\\.safetensors is only partly fetched and HF_HUB_OFFLINE is set" \
    env HF_HUB_OFFLINE=1 "$MK" inspect acme/deep --hashes -q
first=$n
: >"$LOG"
t_ok "all layers after the frankenmerge" "$MK" inspect acme/deep --hashes -q
n=$(lfs_bytes "$LOG")
if [ $((n + first + hdr)) -eq "$full" ]; then ok "the later run fetched only what was missing ($n bytes)"; else notok "only what was missing" "$n + $first + $hdr != $full"; fi
SHA=$(sha256sum deep/model.safetensors | cut -d' ' -f1)
if [ -f "$R/blobs/$SHA" ] && [ "$(readlink "$R/snapshots/$C/model.safetensors")" = "../../blobs/$SHA" ]; then
    ok "the file, once whole, is blobs/<sha256>"
else notok "whole file to blob" "$(ls -la "$R/blobs" "$R/snapshots/$C" 2>&1 | tr '\n' ' ')"; fi

# ---- a damaged partial file never becomes a blob -------------------------------------------
export HF_HUB_CACHE=$T/c4
t_ok "frankenmerge into a fresh cache" "$MK" merge frank.yaml out_fk4/ -q
P=$T/c4/models--acme--deep/.mergekit-c-partial/$C/model.safetensors
printf 'XXXX' | dd of="$P" bs=1 seek=$((hdr + 16)) conv=notrunc 2>/dev/null
t_fail "a damaged fetch is refused by its sha256" 1 "acme/deep: model\\.safetensors: the fetched file has sha256 [0-9a-f]{64}, not $SHA" \
    "$MK" inspect acme/deep --hashes -q
if [ -z "$(ls "$T/c4/models--acme--deep/blobs" | grep -x "$SHA")" ]; then ok "the damaged file did not become a blob"; else notok "damaged blob" "it is there"; fi
t_ok "the next run fetches it anew" "$MK" inspect acme/deep --hashes -q
if [ -f "$T/c4/models--acme--deep/blobs/$SHA" ]; then ok "fetched anew: now a blob"; else notok "fetched anew" "no blob"; fi

# ---- a cut connection resumes; server errors are retried --------------------------------------
start_hub cut --cut-after 1000
export HF_ENDPOINT=$EP HF_HUB_CACHE=$T/c5
t_ok "a merge over a connection cut after 1000 bytes" "$MK" merge by_id.yaml out_cut/ -q
t_same "cut: the same bytes" out_cut/model.safetensors out_dir/model.safetensors
cut=$(awk '$1 == "CUT" { print $2, $4 }' "$LOG")
if [ -n "$cut" ] && awk -v f="${cut% *}" -v b="${cut#* }" '$1 == "GET" && $2 == f && $3 == b { found = 1 } END { exit !found }' "$LOG"; then
    ok "cut: the retry resumed after the bytes received (${cut#* })"
else notok "cut: resumed" "$(head -20 "$LOG" | tr '\n' ';')"; fi
start_hub busy --fail-first 3
export HF_ENDPOINT=$EP HF_HUB_CACHE=$T/c6
t_ok "three 503 answers are retried" "$MK" inspect acme/base -q

# ---- refusals: one line each, no output -------------------------------------------------------
export HF_HUB_CACHE=$T/c7
start_hub auth --token sekrit
export HF_ENDPOINT=$EP
t_fail "a gated repository without a token" 1 "acme/gated@main: the Hub wants a token \\(401\\).*set HF_TOKEN" "$MK" inspect acme/gated -q
sed 's|model: base/|model: acme/gated|' by_dir.yaml >gated.yaml
t_fail "merge: a gated repository without a token" 1 "gated.yaml:3:12: .*acme/gated@main: the Hub wants a token \\(401\\)" "$MK" merge gated.yaml out_g/ -q
t_absent "gated: no output" out_g out_g.tmp
t_fail "a gated repository with a token that lacks access" 1 "acme/gated@main: the Hub refused access \\(403\\)" env HF_TOKEN=wrong "$MK" inspect acme/gated -q
t_ok "a gated repository with HF_TOKEN" env HF_TOKEN=sekrit "$MK" inspect acme/gated -q
export HF_HUB_CACHE=$T/c8
mkdir -p "$HOME/.cache/huggingface" && printf 'sekrit\n' >"$HOME/.cache/huggingface/token"
t_ok "a gated repository with the token file" "$MK" inspect acme/gated -q
rm "$HOME/.cache/huggingface/token"
t_fail "a repository the Hub does not have" 1 "acme/nothere@main: not found on the Hub \\(404\\)" "$MK" inspect acme/nothere -q
t_fail "a revision the Hub does not have" 1 "acme/base@nope: not found on the Hub \\(404\\)" "$MK" inspect acme/base@nope -q
t_fail "an unreachable Hub" 1 "acme/base@main: .*(connect|Connection).*127\\.0\\.0\\.1:1" \
    env HF_ENDPOINT=http://127.0.0.1:1 MK_HUB_RETRIES=2 "$MK" inspect acme/base -q
t_fail "quantize: a repository the Hub does not have, no output" 1 "acme/nothere@main: not found on the Hub" "$MK" quantize acme/nothere q_none/ --format int8 -q
t_absent "quantize: no output" q_none q_none.tmp
