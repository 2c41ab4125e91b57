# crash_resume.sh - a merge killed with SIGKILL at 22 points spread over its run (before
# the first shard, mid-shard, between shards, during the commit) leaves OUT either absent or
# complete and valid; `--resume` then finishes the job, reusing the shards recorded as
# complete, and the result is byte-identical to an uninterrupted run.
. "$MK_ROOT/tests/e2e/lib.sh"
"$MK" synth base/ --hidden 128 --layers 4 --heads 4 --kv-heads 2 --intermediate 344 --vocab 2000 --dtype float32 --seed 5 -q
"$MK" synth ft1/ --finetune-of base/ --seed 6 -q
"$MK" synth ft2/ --finetune-of base/ --seed 7 -q
R="$ROOT/recipes/linear.yaml"
MK_TEST_POINTS=1 "$MK" "$R" out/ --out-shard-size 400K -q 2>points.txt && mv out ref
n=$(sed -n 's/.*test points: \([0-9]*\).*/\1/p' points.txt)
shards=$(ls ref/model-*.safetensors | wc -l)
[ "${n:-0}" -ge 22 ] && [ "$shards" -ge 5 ] && ok "reference run: $n write steps, $shards shards" || notok "reference run" "steps '$n', shards $shards"

# identical files: every file of the reference run, same bytes
same_as_ref() {
    for f in ref/*; do
        b=$(basename "$f")
        cmp -s "$f" "$1/$b" || { echo "$b"; return 1; }
    done
    [ "$(ls "$1" | wc -l)" -eq "$(ls ref | wc -l)" ] || { echo "file count"; return 1; }
    return 0
}

reused=0
i=0
while [ $i -lt 22 ]; do
    k=$((1 + i * (n - 1) / 21))
    i=$((i + 1))
    rm -rf out out.tmp
    MK_TEST_KILL_AT=$k "$MK" "$R" out/ --out-shard-size 400K -q 2>/dev/null
    rc=$?
    if [ $rc -ne 137 ]; then notok "kill at step $k" "exit $rc, want 137 (SIGKILL)"; continue; fi
    if [ -e out ]; then
        if d=$(same_as_ref out); then ok "killed at step $k/$n: OUT complete and valid"; else notok "killed at step $k/$n" "OUT exists but differs: $d"; fi
    else
        ok "killed at step $k/$n: OUT absent"
    fi
    "$MK" "$R" out/ --out-shard-size 400K --resume -v >resume.log 2>&1
    rc=$?
    grep -q "resuming: [1-9][0-9]* of" resume.log && reused=$((reused + 1))
    if [ $rc -ne 0 ]; then notok "resume after step $k" "exit $rc: $(grep error resume.log)"; continue; fi
    if d=$(same_as_ref out); then ok "resume after step $k: identical to an uninterrupted run"; else notok "resume after step $k" "differs: $d"; fi
    [ -e out.tmp ] && notok "resume after step $k" "out.tmp left behind"
done
[ $reused -ge 10 ] && ok "resume reused completed shards in $reused of 22 runs" || notok "resume reused completed shards" "only $reused runs"

# a changed input invalidates the partial output: --resume refuses to mix
rm -rf out out.tmp
MK_TEST_KILL_AT=$((n / 2)) "$MK" "$R" out/ --out-shard-size 400K -q 2>/dev/null
"$MK" synth ft2/ --finetune-of base/ --seed 8 -q --force
t_fail "--resume with changed inputs refused" 2 "out.tmp: the partial output was made by a different recipe, inputs or options" \
    "$MK" "$R" out/ --out-shard-size 400K --resume
t_ok "a fresh run clears the stale partial output" "$MK" "$R" out/ --out-shard-size 400K -q
