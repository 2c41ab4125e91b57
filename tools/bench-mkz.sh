#!/bin/sh
# bench-mkz.sh - the .mkz container against plain zstd on the same safetensors files.
#
#   tools/bench-mkz.sh [WORKDIR]   (default $BENCH_DIR/mkz when run by `make bench`, else
#                                   /tmp/mkz-bench; the models are made once and kept there)
#
# Models (mergekit-c synth: normal weights, std about 0.02, a few outliers):
#   bf16  --hidden 2048 --layers 16 --intermediate 5504 --vocab 32000   (1.88 GB)
#   f32   the same shape with 8 layers                                  (2.0 GB)
#   fp8   the same shape, F8_E4M3 with --std 4 (as per-tensor scaled)   (0.94 GB)
# For each: `pack` and `verify` at one thread (verify decodes and hashes everything), and
# `unpack` checked byte for byte, against `zstd -1 -T1` compress/decompress on the same
# file; `zstd -19` on a 64 MiB slice (a full run would take about 20 minutes per GB); ZipNN
# (tools/bench-zipnn.py, one thread, from the tools venv MK_VENV; skipped, saying so, without it)
# on the bf16 and f32 files.
# MB/s per core = input bytes / (user + sys CPU seconds) of the one-thread run; the wall
# figure includes the disk. Env: MK (the binary; default the checkout's), MKZ_BENCH_QUICK=1
# (small models: a smoke run), MKZ_BENCH_OUT (folder for the containers, e.g. /dev/shm to
# keep the disk out of the wall times; default WORKDIR), MKZ_BENCH_REPS (runs of each mkz
# pack, verify and unpack; the median is shown; default 1), MKZ_BENCH_BEFORE (another
# mergekit-c build: its pack, verify and unpack in the same rounds, alternating with MK's, in
# a row of its own; each build unpacks its own container).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
MK=${MK:-$root/mergekit-c}
W=${1:-${BENCH_DIR:+$BENCH_DIR/mkz}}
W=${W:-/tmp/mkz-bench}
OUT=${MKZ_BENCH_OUT:-$W}
mkdir -p "$W" "$OUT"
if ! command -v zstd >/dev/null 2>&1 || [ ! -x /usr/bin/time ]; then
    sh "$root/tools/install-deps.sh" --tools
fi
NPROC=$(nproc)
VENV=${MK_VENV:-$root/.venv-tools}
PY=$VENV/bin/python

if [ "${MKZ_BENCH_QUICK:-0}" = 1 ]; then
    SHAPE="--hidden 512 --layers 2 --intermediate 1376 --vocab 4000"
    SHAPE_F32=$SHAPE
else
    SHAPE="--hidden 2048 --layers 16 --intermediate 5504 --vocab 32000"
    SHAPE_F32="--hidden 2048 --layers 8 --intermediate 5504 --vocab 32000"
fi
# model folders are named by their synth options, so a changed shape makes a new one
folder() { echo "$W/$1-$(echo "$2" | tr -d ' -')"; }
[ -f "$(folder bf16 "$SHAPE")/model.safetensors" ] || "$MK" synth "$(folder bf16 "$SHAPE")" $SHAPE -q -f
[ -f "$(folder f32 "$SHAPE_F32")/model.safetensors" ] || "$MK" synth "$(folder f32 "$SHAPE_F32")" $SHAPE_F32 --dtype float32 -q -f
[ -f "$(folder fp8 "$SHAPE")/model.safetensors" ] ||
    "$MK" synth "$(folder fp8 "$SHAPE")" $SHAPE --dtype float8_e4m3fn --std 4 -q -f

. "$root/tools/lib-bench-mkz.sh"
REPS=${MKZ_BENCH_REPS:-1}
BEFORE=${MKZ_BENCH_BEFORE:-}
[ -z "$BEFORE" ] || [ -x "$BEFORE" ] || { echo "bench-mkz: MKZ_BENCH_BEFORE=$BEFORE is not an executable" >&2; exit 1; }
med() { echo "$@" | tr ' ' '\n' | grep . | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

echo "| model | tool | ratio | compress MB/s/core | compress MB/s wall | decompress MB/s/core | decompress MB/s wall | peak RSS MiB |"
echo "|---|---|---|---|---|---|---|---|"
for m in bf16 f32 fp8; do
    if [ $m = f32 ]; then d=$(folder $m "$SHAPE_F32"); else d=$(folder $m "$SHAPE"); fi
    f="$d/model.safetensors"
    raw=$(size "$f")
    cat "$f" >/dev/null # warm the page cache: every tool reads from memory

    z="$OUT/$m.mkz"
    # pack, verify, unpack: MKZ_BENCH_REPS rounds, each build in turn; lists of CPU and wall seconds
    for b in now before; do eval "L_${b}_c= L_${b}_cw= L_${b}_v= L_${b}_vw= L_${b}_uw= rss_$b=0"; done
    r=0
    while [ $r -lt "$REPS" ]; do
        r=$((r + 1))
        for b in now ${BEFORE:+before}; do
            bin=$MK zb=$z
            [ $b = before ] && bin=$BEFORE zb="$OUT/$m.before.mkz"
            run "pack $m ($b)" "$bin" pack "$f" "$zb" -j 1 -f -q
            eval "L_${b}_c=\"\$L_${b}_c $T_CPU\" L_${b}_cw=\"\$L_${b}_cw $T_WALL\" rss_$b=\$((rss_$b > $T_RSS ? rss_$b : $T_RSS))"
            run "verify $m ($b)" "$bin" verify "$zb" -j 1 -q
            eval "L_${b}_v=\"\$L_${b}_v $T_CPU\" L_${b}_vw=\"\$L_${b}_vw $T_WALL\" rss_$b=\$((rss_$b > $T_RSS ? rss_$b : $T_RSS))"
            rm -rf "$OUT/$m.back"
            run "unpack $m ($b)" "$bin" unpack "$zb" "$OUT/$m.back" -j 1 -q
            cmp -s "$f" "$OUT/$m.back/model.safetensors" || { echo "bench-mkz: $m: unpack ($b) is not byte-identical" >&2; exit 1; }
            eval "L_${b}_uw=\"\$L_${b}_uw $T_WALL\""
            rm -rf "$OUT/$m.back"
        done
    done
    c_cpu=$(med $L_now_c) c_wall=$(med $L_now_cw) v_cpu=$(med $L_now_v) v_wall=$(med $L_now_vw) u_wall=$(med $L_now_uw)
    stored=$(size "$z")
    run "pack $m -j$NPROC" "$MK" pack "$f" "$OUT/$m-par.mkz" -j "$NPROC" -f -q
    p_wall=$T_WALL
    cmp -s "$z" "$OUT/$m-par.mkz" || { echo "bench-mkz: $m: pack differs between 1 and $NPROC threads" >&2; exit 1; }
    rm -f "$OUT/$m-par.mkz"
    echo "| $m $(echo $raw | awk '{printf "%.2f GB", $1/1e9}') | mkz level 1 | $(ratio $raw $stored) | $(mbs $raw $c_cpu) | $(mbs $raw $c_wall) | $(mbs $raw $v_cpu) | $(mbs $raw $v_wall) | $((rss_now / 1024)) |"
    if [ -n "$BEFORE" ]; then
        echo "| | mkz level 1, before ($BEFORE) | $(ratio $raw "$(size "$OUT/$m.before.mkz")") | $(mbs $raw "$(med $L_before_c)") | $(mbs $raw "$(med $L_before_cw)") | $(mbs $raw "$(med $L_before_v)") | $(mbs $raw "$(med $L_before_vw)") | $((rss_before / 1024)) |"
        rm -f "$OUT/$m.before.mkz"
    fi

    run "zstd -1 $m" sh -c "zstd -1 -T1 -q -c '$f' >'$OUT/$m.zst'"
    zc_cpu=$T_CPU zc_wall=$T_WALL
    zs=$(size "$OUT/$m.zst")
    run "zstd -d $m" sh -c "zstd -d -q -c '$OUT/$m.zst' >/dev/null"
    echo "| | zstd -1 | $(ratio $raw $zs) | $(mbs $raw $zc_cpu) | $(mbs $raw $zc_wall) | $(mbs $raw $T_CPU) | $(mbs $raw $T_WALL) | |"
    rm -f "$OUT/$m.zst"

    head -c 67108864 "$f" >"$W/slice"
    sl=$(size "$W/slice")
    run "zstd -19 $m" sh -c "zstd -19 -T1 -q -c '$W/slice' >'$OUT/$m.slice.zst'"
    s19=$(size "$OUT/$m.slice.zst")
    s19_cpu=$T_CPU
    run "zstd -1 slice $m" sh -c "zstd -1 -T1 -q -c '$W/slice' >'$OUT/$m.slice1.zst'"
    s1=$(size "$OUT/$m.slice1.zst")
    echo "| | zstd -19 (first $((sl / 1048576)) MiB; zstd -1 on them: $(ratio $sl $s1)) | $(ratio $sl $s19) | $(mbs $sl $s19_cpu) | | | | |"
    rm -f "$OUT/$m.slice.zst" "$OUT/$m.slice1.zst" "$W/slice"
    if [ $m != fp8 ]; then
        if "$PY" -c "import zipnn" 2>/dev/null; then
            zdt=bfloat16
            [ $m = f32 ] && zdt=float32
            run "zipnn $m" "$PY" "$root/tools/bench-zipnn.py" "$f" $zdt
            read -r zr zc zd <"$W/.out"
            echo "| | ZipNN $("$PY" -c 'import importlib.metadata as m; print(m.version("zipnn"))') (threads=1) | $zr | $zc | | $zd | | $((T_RSS / 1024)) |"
        else
            echo "| | ZipNN: not installed in $VENV (tools/setup-venv.sh) | | | | | | |"
        fi
    fi
    [ -z "$BEFORE" ] || echo "|  | (mkz before: unpack -j1 $(mbs $raw "$(med $L_before_uw)") MB/s wall with the disk) | | | | | | |"
    echo "|  | (mkz: unpack -j1 $(mbs $raw $u_wall) MB/s wall with the disk; pack -j$NPROC $(mbs $raw $p_wall) MB/s wall, same bytes) | | | | | | |"
done
rm -f "$W/.time" "$W/.out" "$W/.err"
