# cluster.sh - outputs written in parts (--part I/N, `finalize`, Slurm job arrays, mpirun):
# for a merge and a quantize (and a merge --quantize in 3), 1, 2, 3 and 5 parts run apart (in reverse
# order, some at the same time) finalize to the same bytes as one process; a part killed
# mid-shard makes finalize refuse naming it, and rerunning it alone completes the output
# (and the same for a convert to one GGUF file, whose parts write regions of it)
# without touching any other shard; a part of another plan is refused by name; a fake Slurm
# array environment drives --part slurm; mpirun -n 2 and -n 4 when an MPI build is there.
. "$MK_ROOT/tests/e2e/lib.sh"
"$MK" synth base/ --hidden 128 --layers 4 --heads 4 --kv-heads 2 --intermediate 344 --vocab 2000 --dtype float32 --seed 5 -q
"$MK" synth ft1/ --finetune-of base/ --seed 6 -q
"$MK" synth ft2/ --finetune-of base/ --seed 7 -q
R="$ROOT/recipes/linear.yaml"
MOPT="--out-shard-size 400K"
QOPT="--format int8 --out-shard-size 300K"
# the references are written under the same OUT names (the model card carries the name)
"$MK" "$R" out/ $MOPT -q && mv out mref
"$MK" quantize base/ qout $QOPT -q && mv qout qref
shards=$(ls mref/model-*.safetensors | wc -l)
[ "$shards" -ge 5 ] && ok "reference merge: $shards shards" || notok "reference merge" "$shards shards, want >= 5"

# same_dir REF DIR: every file of REF in DIR with the same bytes, and nothing else
same_dir() {
    for f in "$1"/* "$1"/.[!.]*; do
        [ -e "$f" ] || continue
        b=$(basename "$f")
        cmp -s "$f" "$2/$b" || { echo "$b differs"; return 1; }
    done
    [ "$(ls -A "$1" | wc -l)" -eq "$(ls -A "$2" | wc -l)" ] || { echo "file lists differ: $(ls -A "$2" | tr '\n' ' ')"; return 1; }
    return 0
}

# run_parts N OUT CMD...: parts N..1 (reverse order); odd parts in the background, at once
run_parts() {
    _n=$1; _out=$2; shift 2
    _i=$_n; _pids=""; _bad=""
    while [ "$_i" -ge 1 ]; do
        if [ $((_i % 2)) -eq 1 ]; then
            "$@" --part "$_i/$_n" -q 2>"part$_i.err" &
            _pids="$_pids $!:$_i"
        else
            "$@" --part "$_i/$_n" -q 2>"part$_i.err" || _bad="$_bad $_i"
        fi
        _i=$((_i - 1))
    done
    for _p in $_pids; do wait "${_p%%:*}" || _bad="$_bad ${_p#*:}"; done
    [ -z "$_bad" ] || { echo "part(s)$_bad failed: $(cat part*.err | head -n 3)"; return 1; }
    "$MK" finalize "$_out" -q 2>fin.err || { echo "finalize: $(cat fin.err)"; return 1; }
}

for n in 1 2 3 5; do
    rm -rf out out.tmp
    if d=$(run_parts $n out/ "$MK" "$R" out/ $MOPT) && d=$(same_dir mref out); then
        ok "merge in $n part(s), run apart and finalized: byte-identical to one process"
    else
        notok "merge in $n part(s)" "$d"
    fi
    [ -e out.tmp ] && notok "merge in $n part(s)" "out.tmp left behind"
    rm -rf qout qout.tmp
    if d=$(run_parts $n qout "$MK" quantize base/ qout $QOPT) && d=$(same_dir qref qout); then
        ok "quantize in $n part(s), run apart and finalized: byte-identical to one process"
    else
        notok "quantize in $n part(s)" "$d"
    fi
done

t_ok "--check re-derives a finalized output (5 parts) from its provenance" "$MK" out/mergekit_config.yml out --check -q

# merge --quantize: the split is of the stored (quantized) tensors' shards
"$MK" "$R" mq --quantize int4 $MOPT -q && mv mq mqref
if d=$(run_parts 3 mq "$MK" "$R" mq --quantize int4 $MOPT) && d=$(same_dir mqref mq); then
    ok "merge --quantize in 3 parts: byte-identical to one process"
else
    notok "merge --quantize in 3 parts" "$d"
fi

# --dry-run --parts N: the split, nothing written; every shard in exactly one part, and the
# parts' bytes within one shard of each other (balanced by bytes, not tensor counts)
"$MK" "$R" dry/ $MOPT --dry-run --parts 3 --json >split.json 2>split.err
JC=${MK_JSONCHECK:-$ROOT/build/jsoncheck}
[ -x "$JC" ] && ! "$JC" <split.json >/dev/null 2>&1 && notok "--dry-run --parts --json" "not one JSON document"
listed=$(grep -o '"model-[0-9]*-of-[0-9]*.safetensors"' split.json | sort | uniq | wc -l)
all=$(grep -o '"model-[0-9]*-of-[0-9]*.safetensors"' split.json | wc -l)
bytes=$(sed -n 's/.*"part": [0-9]*, "bytes": \([0-9]*\).*/\1/p' split.json)
maxb=$(echo "$bytes" | sort -n | tail -n 1)
minb=$(echo "$bytes" | sort -n | head -n 1)
largest=$(ls -l mref/model-*.safetensors | awk '{print $5}' | sort -n | tail -n 1)
if [ "$listed" -eq "$shards" ] && [ "$all" -eq "$shards" ] && [ "$(echo "$bytes" | wc -l)" -eq 3 ] &&
    [ $((maxb - minb)) -le "$largest" ]; then
    ok "--dry-run --parts 3: $shards shards in 3 parts of $(echo $bytes | tr ' ' '/') bytes"
else
    notok "--dry-run --parts 3" "shards $listed/$all of $shards, bytes '$bytes', largest shard $largest"
fi
"$MK" "$R" dry/ $MOPT --dry-run --parts 3 >split.txt
[ "$(grep -c '^  part [123]/3: ' split.txt)" -eq 3 ] && ok "--dry-run --parts 3 prints one line per part" ||
    notok "--dry-run --parts 3 text" "$(cat split.txt)"
t_absent "--dry-run --parts writes nothing" dry dry.tmp

# a part killed mid-shard: finalize refuses naming it; rerun alone, nothing else is rewritten
rm -rf out out.tmp cnt cnt.tmp
MK_TEST_POINTS=1 "$MK" "$R" cnt/ $MOPT --part 2/3 -q 2>points.txt
k=$(sed -n 's/.*test points: \([0-9]*\).*/\1/p' points.txt)
"$MK" "$R" out/ $MOPT --part 1/3 -q && "$MK" "$R" out/ $MOPT --part 3/3 -q
before=$(cd out.tmp && for f in model-*; do echo "$f $(stat -c '%Y.%y %s' "$f") $(cksum <"$f")"; done)
MK_TEST_KILL_AT=$((${k:-4} / 2)) "$MK" "$R" out/ $MOPT --part 2/3 -q 2>/dev/null
rc=$?
[ $rc -eq 137 ] && ok "part 2/3 killed mid-run (step $((${k:-4} / 2)) of $k)" || notok "kill part 2/3" "exit $rc, want 137"
t_fail "finalize refuses while a part is missing, naming it" 1 "part 2/3 is not complete" "$MK" finalize out
[ -d out.tmp ] && [ ! -e out ] && ok "a refused finalize keeps every part's work" || notok "refused finalize" "out.tmp gone or out made"
t_ok "the killed part rerun alone" "$MK" "$R" out/ $MOPT --part 2/3 -q
after=$(cd out.tmp && for f in $(echo "$before" | cut -d' ' -f1); do echo "$f $(stat -c '%Y.%y %s' "$f") $(cksum <"$f")"; done)
[ "$before" = "$after" ] && ok "rerunning part 2/3 left the other parts' shards untouched (mtime, bytes)" ||
    notok "other parts' shards" "changed: $(printf '%s\n%s' "$before" "$after" | sort | uniq -u | head -n 2)"
t_fail "a finished part run again is not redone" 0 "part 2/3 of out/ is already complete" "$MK" "$R" out/ $MOPT --part 2/3
if "$MK" finalize out -v >fin.log 2>&1 && ! grep -q "hashing" fin.log; then
    ok "finalize after the rerun, with the input hashes the parts recorded (no input read whole)"
else
    notok "finalize after the rerun" "$(grep -m 2 "error\|hashing" fin.log)"
fi
d=$(same_dir mref out) && ok "killed and rerun part: byte-identical to one process" || notok "killed and rerun part" "$d"

# a part of another plan: refused by name at finalize; a part joining another plan's OUT.tmp is refused
sed 's/weight: 0.2/weight: 0.3/' "$R" >other.yaml
rm -rf out out.tmp oth oth.tmp
"$MK" "$R" out/ $MOPT --part 1/2 -q
"$MK" other.yaml oth/ $MOPT --part 2/2 -q
cp oth.tmp/model-* oth.tmp/.mergekit-c-part-00002-of-00002.json out.tmp/ 2>/dev/null
for f in oth.tmp/model-*; do cmp -s "$f" "out.tmp/$(basename "$f")" || true; done
t_fail "finalize refuses a part made by another plan, naming it" 1 "part 2/2 was made by another plan" "$MK" finalize out
t_fail "a part of another recipe cannot join OUT.tmp" 1 "out.tmp: holds the parts of another plan" "$MK" other.yaml out/ $MOPT --part 2/2
t_fail "a split into another N cannot join OUT.tmp" 1 "holds the parts of another plan .* into 2 part" "$MK" "$R" out/ $MOPT --part 1/3
t_fail "a single-process run does not wipe the parts" 2 "out.tmp: holds the parts of a split run .* finalize" "$MK" "$R" out/ $MOPT
[ -f out.tmp/.mergekit-c-part-00001-of-00002.json ] && ok "refusals keep part 1/2's record" || notok "refusals" "part 1 record lost"
cp -a out.tmp moved.tmp
t_fail "finalize refuses an OUT.tmp moved away from where its parts ran" 1 "moved.tmp: its manifest names another output" "$MK" finalize moved
[ -d moved.tmp ] && [ ! -e moved ] && ok "the moved OUT.tmp is kept" || notok "moved OUT.tmp" "removed or finalized"
t_ok "the foreign part replaced by a rerun" "$MK" "$R" out/ $MOPT --part 2/2 -q
t_ok "finalize then succeeds" "$MK" finalize out -q
d=$(same_dir mref out) && ok "after replacing the foreign part: byte-identical" || notok "after replacing the foreign part" "$d"

# bad input: one clear line, exit 2, nothing written
t_fail "--part 0/3" 2 "--part 0/3: parts are numbered 1 to 3" "$MK" "$R" bad/ --part 0/3
t_fail "--part 4/3" 2 "--part 4/3: parts are numbered 1 to 3" "$MK" "$R" bad/ --part 4/3
t_fail "--part x" 2 "--part 'x': expected I/N" "$MK" "$R" bad/ --part x
t_fail "--part 1/0" 2 "--part '1/0': expected I/N" "$MK" quantize base/ bad --format int8 --part 1/0
t_fail "--parts without --dry-run" 2 "--parts 3 prints the split with --dry-run" "$MK" "$R" bad/ --parts 3
t_fail "--part with a .mkz output" 2 "--part: not with .mkz" "$MK" "$R" bad.mkz --part 1/2
t_fail "finalize with nothing to finalize" 2 "bad: no parts to finalize" "$MK" finalize bad
mkdir -p junk.tmp && echo x >junk.tmp/.mergekit-c-parts.json
t_fail "finalize on a damaged manifest" 1 "junk.tmp: not the output of parts" "$MK" finalize junk
t_absent "bad input writes nothing" bad bad.tmp bad.mkz bad.mkz.tmp

# a fake Slurm job array drives --part slurm: task ids from 0 (merge) and from 1 (quantize)
rm -rf out out.tmp qout qout.tmp
fail=""
for id in 2 0 1; do
    SLURM_ARRAY_TASK_ID=$id SLURM_ARRAY_TASK_MIN=0 SLURM_ARRAY_TASK_MAX=2 SLURM_ARRAY_TASK_COUNT=3 \
        "$MK" "$R" out/ $MOPT --part slurm -q || fail="$fail merge:$id"
done
for id in 4 3 1 2; do
    SLURM_ARRAY_TASK_ID=$id SLURM_ARRAY_TASK_MIN=1 SLURM_ARRAY_TASK_MAX=4 SLURM_ARRAY_TASK_COUNT=4 \
        "$MK" quantize base/ qout $QOPT --part slurm -q || fail="$fail quantize:$id"
done
ls out.tmp/.mergekit-c-part-0000[123]-of-00003.json qout.tmp/.mergekit-c-part-0000[1234]-of-00004.json >/dev/null 2>&1 ||
    fail="$fail records"
"$MK" finalize out 2>fin.log && grep -q "wrote out/: .*(finalized from 3 parts)" fin.log || fail="$fail finalize:$(cat fin.log)"
"$MK" finalize qout -q || fail="$fail finalize-quantize"
if [ -z "$fail" ] && d=$(same_dir mref out) && d=$(same_dir qref qout); then
    ok "Slurm arrays (ids 0-2 and 1-4) with --part slurm: byte-identical outputs"
else
    notok "Slurm arrays with --part slurm" "$fail $d"
fi
SLURM_ARRAY_TASK_ID=3 SLURM_ARRAY_TASK_MIN=1 SLURM_ARRAY_TASK_MAX=5 SLURM_ARRAY_TASK_COUNT=3 \
    t_fail "--part slurm refuses a stepped array" 2 "one contiguous range of task ids" "$MK" "$R" bad/ --part slurm
t_fail "--part slurm outside a job array" 2 "SLURM_ARRAY_TASK_ID is not set" env -u SLURM_ARRAY_TASK_ID "$MK" "$R" bad/ --part slurm

# convert to GGUF, one file: every part sizes the shared OUT.gguf.tmp/OUT.gguf, writes its
# header and its tensors' regions (split by bytes); finalize checks the records, the size and
# the header, and renames the file: the same bytes as one process
GOPT="--type q8_0"
"$MK" convert base/ g.gguf $GOPT -q && mv g.gguf gref.gguf
for n in 1 2 3; do
    rm -rf g.gguf g.gguf.tmp
    if d=$(run_parts $n g.gguf "$MK" convert base/ g.gguf $GOPT) && cmp -s gref.gguf g.gguf && [ ! -e g.gguf.tmp ]; then
        ok "convert to GGUF in $n part(s), run apart and finalized: byte-identical to one process"
    else
        notok "convert to GGUF in $n part(s)" "${d:-g.gguf differs from one process's, or g.gguf.tmp left}"
    fi
done
rm -rf g.gguf g.gguf.tmp
"$MK" convert base/ g.gguf $GOPT --part 2/2 -q && "$MK" convert base/ g.gguf $GOPT --part 1/2 -q && "$MK" finalize g.gguf -q
t_same "convert to GGUF, parts run in order 2 then 1: byte-identical" gref.gguf g.gguf
"$MK" convert base/ g.gguf $GOPT --dry-run --parts 3 --json >gsplit.json 2>/dev/null
names=$(grep -o '"[a-z_.0-9]*weight"' gsplit.json | wc -l)
uniq=$(grep -o '"[a-z_.0-9]*weight"' gsplit.json | sort -u | wc -l)
gbytes=$(sed -n 's/.*"part": [0-9]*, "bytes": \([0-9]*\).*/\1/p' gsplit.json)
gmax=$(echo "$gbytes" | sort -n | tail -n 1)
gmin=$(echo "$gbytes" | sort -n | head -n 1)
# the largest tensor: the embedding, 2000 x 128 in q8_0 (34 bytes a block of 32)
if [ "$names" -eq 39 ] && [ "$uniq" -eq 39 ] && [ "$(echo "$gbytes" | wc -l)" -eq 3 ] && [ $((gmax - gmin)) -le 272000 ]; then
    ok "convert --dry-run --parts 3: 39 tensors, each in one part, $(echo $gbytes | tr ' ' '/') bytes"
else
    notok "convert --dry-run --parts 3" "$names names ($uniq distinct), bytes '$gbytes'"
fi
t_absent "convert --dry-run --parts writes nothing" g.gguf.tmp
# a part killed mid-region, a missing part, a rerun part
rm -rf g.gguf g.gguf.tmp
MK_TEST_POINTS=1 "$MK" convert base/ cnt.gguf $GOPT --part 2/3 -q 2>points.txt
k=$(sed -n 's/.*test points: \([0-9]*\).*/\1/p' points.txt)
rm -rf cnt.gguf.tmp
"$MK" convert base/ g.gguf $GOPT --part 1/3 -q && "$MK" convert base/ g.gguf $GOPT --part 3/3 -q
t_fail "convert: finalize refuses while a part is missing, naming it" 1 "part 2/3 is not complete" "$MK" finalize g.gguf -q
MK_TEST_KILL_AT=$((${k:-4} / 2)) "$MK" convert base/ g.gguf $GOPT --part 2/3 -q 2>/dev/null
rc=$?
[ $rc -eq 137 ] && ok "convert part 2/3 killed mid-region (step $((${k:-4} / 2)) of $k)" || notok "kill convert part 2/3" "exit $rc, want 137"
t_fail "convert: finalize refuses after the kill, naming the part" 1 "part 2/3 is not complete" "$MK" finalize g.gguf -q
[ -f g.gguf.tmp/g.gguf ] && [ ! -e g.gguf ] && ok "convert: a refused finalize keeps the parts' file" || notok "refused finalize" "file gone or g.gguf made"
t_ok "convert: the killed part rerun alone" "$MK" convert base/ g.gguf $GOPT --part 2/3 -q
# (base/ has no byte-level BPE vocabulary: convert warns about it, hence grep rather than t_fail)
touch -d '2000-01-01' g.gguf.tmp/g.gguf
if "$MK" convert base/ g.gguf $GOPT --part 2/3 2>again.err && grep -q "part 2/3 of g.gguf is already complete; nothing to do" again.err &&
    [ "$(stat -c %Y g.gguf.tmp/g.gguf)" = "$(date -d '2000-01-01' +%s)" ]; then
    ok "convert: a finished part run again is not redone (the file untouched)"
else
    notok "convert: a finished part run again" "$(cat again.err)"
fi
t_fail "convert: a single-process run does not wipe the parts" 2 "g.gguf.tmp: holds the parts of a split run .* finalize" "$MK" convert base/ g.gguf $GOPT
t_fail "convert: another --type cannot join the parts" 1 "g.gguf.tmp: holds the parts of another plan" "$MK" convert base/ g.gguf --type f16 --part 1/3 -q
t_ok "convert: finalize after the rerun" "$MK" finalize g.gguf -q
t_same "convert: killed and rerun part: byte-identical to one process" gref.gguf g.gguf
t_fail "convert --part over an existing OUT" 2 "g.gguf already exists" "$MK" convert base/ g.gguf $GOPT --part 1/2 -q
# a damaged file: the header or size no longer the plan's
rm -rf g.gguf g.gguf.tmp
"$MK" convert base/ g.gguf $GOPT --part 1/2 -q && "$MK" convert base/ g.gguf $GOPT --part 2/2 -q
printf 'XXXX' | dd of=g.gguf.tmp/g.gguf bs=1 seek=40 conv=notrunc 2>/dev/null
t_fail "convert: finalize refuses a damaged header" 1 "its GGUF header is not this plan's" "$MK" finalize g.gguf -q
truncate -s 1000 g.gguf.tmp/g.gguf
t_fail "convert: finalize refuses a file of the wrong size" 1 "g.gguf: is 1000 bytes, not the plan's" "$MK" finalize g.gguf -q
t_absent "convert: nothing finalized from a damaged file" g.gguf
rm -rf g.gguf g.gguf.tmp

# a merge straight to GGUF (--out-type) splits the same way: each part computes only its tensors
"$MK" "$R" mg.gguf --out-type q8_0 -q && mv mg.gguf mgref.gguf
for n in 2 3; do
    rm -rf mg.gguf mg.gguf.tmp
    if d=$(run_parts $n mg.gguf "$MK" "$R" mg.gguf --out-type q8_0) && cmp -s mgref.gguf mg.gguf && [ ! -e mg.gguf.tmp ]; then
        ok "merge to GGUF in $n part(s), run apart and finalized: byte-identical to one process"
    else
        notok "merge to GGUF in $n part(s)" "${d:-mg.gguf differs from one process's, or mg.gguf.tmp left}"
    fi
done
rm -rf mg.gguf mg.gguf.tmp
"$MK" "$R" mg.gguf --out-type q8_0 --part 3/3 -v 2>mg3.err
want=$("$MK" "$R" mg.gguf --out-type q8_0 --dry-run --parts 3 2>/dev/null | sed -n 's|^  part 3/3: \([0-9]*\) tensor.*|\1|p')
got=$(sed -n 's/.*computed and wrote \([0-9]*\) tensor.*/\1/p' mg3.err)
[ -n "$want" ] && [ "$got" = "$want" ] && ok "merge to GGUF, part 3/3 computes only its $want tensors" ||
    notok "merge to GGUF part 3/3" "computed '$got', its share '$want'"
t_fail "merge to GGUF: a part of another recipe cannot join" 1 "mg.gguf.tmp: holds the parts of another plan" \
    "$MK" other.yaml mg.gguf --out-type q8_0 --part 1/3 -q
rm -rf mg.gguf mg.gguf.tmp

# mpirun: ranks are the parts, rank 0 finalizes (an MPI build: make MPI=1)
MPIBIN=""
if "$MK" --version | grep -q "Open MPI"; then MPIBIN=$MK
elif [ -x "$ROOT/build-mpi/mergekit-c" ]; then MPIBIN=$ROOT/build-mpi/mergekit-c
fi
if [ -z "$MPIBIN" ] || ! command -v mpirun >/dev/null 2>&1; then
    echo "skip - mpirun -n 2 and -n 4: no MPI build (make MPI=1) or no mpirun"
else
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
    for np in 2 4; do
        rm -rf out out.tmp qout qout.tmp g.gguf g.gguf.tmp mg.gguf mg.gguf.tmp
        if mpirun -n $np --oversubscribe "$MPIBIN" "$R" out/ $MOPT -q >mpi.log 2>&1 &&
            mpirun -n $np --oversubscribe "$MPIBIN" quantize base/ qout $QOPT -q >>mpi.log 2>&1 &&
            mpirun -n $np --oversubscribe "$MPIBIN" convert base/ g.gguf $GOPT -q >>mpi.log 2>&1 &&
            mpirun -n $np --oversubscribe "$MPIBIN" "$R" mg.gguf --out-type q8_0 -q >>mpi.log 2>&1 &&
            d=$(same_dir mref out) && d=$(same_dir qref qout) && cmp -s gref.gguf g.gguf && cmp -s mgref.gguf mg.gguf; then
            ok "mpirun -n $np: merge, quantize, convert to GGUF and merge to GGUF byte-identical to one process"
        else
            notok "mpirun -n $np" "${d:-$(tail -n 3 mpi.log)}"
        fi
    done
    # a failing rank fails the job with its error line; --resume completes only what is missing:
    # part 1/2 is written first, a folder in the way of a shard of part 2/2 makes rank 1 fail
    rm -rf out out.tmp
    "$MK" "$R" out/ $MOPT --part 1/2 -q
    blocker=$("$MK" "$R" out/ $MOPT --dry-run --parts 2 | sed -n 's/^  part 2\/2: [^:]*: \([^ ]*\).*/\1/p')
    mkdir "out.tmp/$blocker"
    mpirun -n 2 --oversubscribe "$MPIBIN" "$R" out/ $MOPT -q >mpi.log 2>&1
    rc=$?
    rmdir "out.tmp/$blocker"
    if [ $rc -ne 0 ] && grep -q "part 2/2 (rank 1) failed: .*$blocker" mpi.log && [ ! -e out ]; then
        ok "mpirun: a failed rank fails the job, naming its part and error"
    else
        notok "mpirun: a failed rank" "exit $rc: $(tail -n 3 mpi.log)"
    fi
    if mpirun -n 2 --oversubscribe "$MPIBIN" "$R" out/ $MOPT --resume >mpi.log 2>&1 && grep -q "part 1/2 of out/ is already complete" mpi.log &&
        d=$(same_dir mref out); then
        ok "mpirun --resume: only the failed part ran again; byte-identical"
    else
        notok "mpirun --resume" "${d:-$(tail -n 3 mpi.log)}"
    fi
fi
