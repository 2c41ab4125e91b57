#!/bin/sh
# mkz_old.sh - containers written by the format version 1 and 2 writers (committed in
# tests/golden/mkz/, made by tools/make-old-mkz.sh) still verify, unpack byte for byte and
# read as models; the same model written now is version 3 and restores byte for byte.
. "$MK_ROOT/tests/e2e/lib.sh"
G=$ROOT/tests/golden/mkz
u32() { od -An -tu4 -j "$2" -N4 "$1" | tr -d ' '; }

[ "$(u32 "$G/v1.mkz" 8)" = 1 ] && [ "$(u32 "$G/v2.mkz" 8)" = 2 ] && ok "fixtures: versions 1 and 2" ||
    notok "fixtures: versions 1 and 2" "$(u32 "$G/v1.mkz" 8) $(u32 "$G/v2.mkz" 8)"
t_ok "verify a version 1 container" "$MK" verify "$G/v1.mkz"
t_ok "unpack a version 1 container" "$MK" unpack "$G/v1.mkz" v1/ -q
t_same "version 1: restored byte for byte" v1/base.safetensors "$G/base.safetensors"
t_ok "verify a version 2 (delta) container with its base" "$MK" verify "$G/v2.mkz" --base "$G/base.safetensors"
t_ok "unpack a version 2 container with its base" "$MK" unpack "$G/v2.mkz" v2/ --base "$G/base.safetensors" -q
t_same "version 2: restored byte for byte" v2/ft.safetensors "$G/ft.safetensors"
t_ok "inspect reads a version 1 container" "$MK" inspect "$G/v1.mkz"
grep -q "model.embed_tokens.weight  *BF16  *\[64, 32\]  *4096  *2786" .out && ok "inspect: tensors, sizes and stored bytes" ||
    notok "inspect: tensors, sizes and stored bytes" "$(head -3 .out)"

# the same model written now: version 3, bf16 exponents in rANS planes, restored byte for byte
t_ok "pack (version 3)" "$MK" pack "$G/base.safetensors" v3.mkz -q
[ "$(u32 v3.mkz 8)" = 3 ] && ok "written as version 3" || notok "written as version 3" "$(u32 v3.mkz 8)"
t_ok "unpack version 3" "$MK" unpack v3.mkz v3/ -q
t_same "version 3: restored byte for byte" v3/base.safetensors "$G/base.safetensors"

