# io_failures.sh - out of space, file-size limits, unreadable inputs, read-only output
# locations and symlinks: a clear error line, exit 1, the temporary output removed, the
# inputs untouched.
. "$MK_ROOT/tests/e2e/lib.sh"
make_models
R="$ROOT/recipes/linear.yaml"

# a file-size limit: writes fail with EFBIG instead of killing the process
(ulimit -f 64; "$MK" "$R" out/ -q) >"$T/.out" 2>"$T/.err"
rc=$?
if [ $rc -eq 1 ] && grep -q "model.safetensors: cannot reserve [0-9]* bytes: File too large" "$T/.err" && [ "$(grep -c . "$T/.err")" -eq 1 ]; then
    ok "file-size limit: one error line, exit 1"
else
    notok "file-size limit" "exit $rc: $(cat "$T/.err")"
fi
t_absent "file-size limit leaves no output" out out.tmp

# a filesystem that is too small (tmpfs; needs mount rights, which CI's root has)
mkdir small
"$MK" "$R" sizes/ -q
need=$(stat -c %s sizes/model.safetensors)
if mount -t tmpfs -o size=64k tmpfs small 2>/dev/null; then
    t_fail "full disk: refused before writing" 1 "small/out.tmp: needs .* of free space, only .* available" "$MK" "$R" small/out/
    t_absent "full disk leaves no output" small/out small/out.tmp
    umount small
    # room for the shard but not for the files written after it (tmpfs rounds to 4 KiB pages)
    mount -t tmpfs -o size=$((need + 65536)) tmpfs small
    head -c $((65536 - 8192)) /dev/zero >small/filler
    t_fail "disk full after the shards" 1 "small/out.tmp/[a-z_.-]*: .*No space left on device" "$MK" "$R" small/out/
    t_absent "no output after running out of space" small/out small/out.tmp
    umount small
else
    echo "# tmpfs not available here; full-disk cases covered by the file-size limit above"
fi

# permissions, as an unprivileged user (root bypasses them)
if command -v setpriv >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
    as_nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
    # the program and recipe are copied in: the checkout may sit where nobody cannot read
    cp "$MK" ./mk-nobody && cp "$R" ./r-nobody.yaml
    chmod 755 "$T" && chmod -R a+rX "$T"
    mkdir ro rw && chmod 555 ro && chmod 777 rw
    t_fail "read-only output location" 1 "ro/out.tmp: cannot create directory: Permission denied" as_nobody ./mk-nobody r-nobody.yaml ro/out/
    chmod 000 ft1/model.safetensors
    t_fail "unreadable input" 1 "ft1/model.safetensors: cannot open: Permission denied" as_nobody ./mk-nobody r-nobody.yaml rw/out/
    t_absent "no output after permission errors" ro/out ro/out.tmp rw/out rw/out.tmp
    chmod 644 ft1/model.safetensors
fi

# symlinks inside the model folder are followed; ones leading out are refused
mkdir linked && cp base/model.safetensors linked/ && cp base/config.json linked/real-config.json
ln -s real-config.json linked/config.json
t_ok "symlink inside the model folder is followed" "$MK" inspect linked/
ln -s ../../../etc/hostname linked/tokenizer.json
t_ok "a stray outside link is ignored unless read" "$MK" inspect linked/ --summary
rm linked/config.json && ln -s "$T/base/config.json" linked/config.json
t_fail "config.json linking outside the folder" 1 "linked/config.json: symlink points outside the model folder" "$MK" inspect linked/
[ -f base/model.safetensors ] && cmp -s base/model.safetensors linked/model.safetensors && ok "inputs untouched" || notok "inputs untouched" "base changed"
