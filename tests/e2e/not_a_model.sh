# not_a_model.sh - a file that is not a model (config.json, a recipe, a pickle, an LFS pointer,
# an empty file) given where a model is read: one error line naming the file, saying that it
# is not a safetensors file (or .mkz container) and what it looks like; exit 1, no output.
. "$MK_ROOT/tests/e2e/lib.sh"
"$MK" synth m/ --hidden 16 --layers 1 --heads 2 --intermediate 16 --vocab 16 -q || { notok "synth" "failed"; exit 0; }
printf 'merge_method: linear\nmodels:\n  - model: m/\n' >r.yaml
printf 'PK\003\004\024\000\000\000\010\000archive/data.pkl' >zip.safetensors
printf '\200\002}q\000(X\006\000\000\000weightq\001' >pickle.safetensors
cp zip.safetensors pytorch_model.bin
cp pickle.safetensors old.bin
printf 'version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 4943162336\n' >lfs.safetensors
: >empty.bin
: >empty.safetensors
printf 'GGUF\003\000\000\000' >model.gguf
cp m/config.json cfg.mkz

t_fail "inspect config.json" 1 "^mergekit-c: error: m/config\.json: not a safetensors file \(it starts with '\{', a JSON text\?\)$" \
    "$MK" inspect m/config.json
t_fail "inspect a recipe" 1 "r\.yaml: not a safetensors file \(text: 'merge_method: linear\.\.\.'\)" "$MK" inspect r.yaml
t_fail "a zipped PyTorch checkpoint named .safetensors" 1 "zip\.safetensors: not a safetensors file \(a zip archive: a PyTorch checkpoint" \
    "$MK" inspect zip.safetensors
t_fail "a pickle named .safetensors" 1 "pickle\.safetensors: not a safetensors file \(a Python pickle" "$MK" inspect pickle.safetensors
# .bin files are PyTorch checkpoints: these two are truncated ones, and say so
t_fail "a truncated zipped .bin" 1 "pytorch_model\.bin: no zip end-of-central-directory record \(file truncated\?\)" \
    "$MK" inspect pytorch_model.bin
t_fail "a truncated pickle .bin" 1 "old\.bin: .*the pickle ends without STOP \(file truncated\?\)" "$MK" inspect old.bin
t_fail "a Git LFS pointer" 1 "lfs\.safetensors: not a safetensors file \(a Git LFS pointer: the file was not downloaded; run git lfs pull\)" \
    "$MK" inspect lfs.safetensors
t_fail "an empty file" 1 "empty\.safetensors: not a safetensors file \(it is empty\)" "$MK" inspect empty.safetensors
t_fail "an empty .bin" 1 "empty\.bin: not a PyTorch checkpoint \(it is empty\)" "$MK" inspect empty.bin
t_fail "a truncated GGUF file" 1 "model\.gguf: the tensor count at byte 8 runs past the end of the file \(8 bytes\)" "$MK" inspect model.gguf
t_fail "compare with config.json" 1 "m/config\.json: not a safetensors file \(it starts with '\{'" "$MK" compare m/ m/config.json
t_fail "a .mkz name on a JSON file" 1 "cfg\.mkz: not a \.mkz container \(it starts with '\{', a JSON text\?\)" "$MK" inspect cfg.mkz
t_fail "verify a JSON file" 1 "m/config\.json: not a \.mkz container \(it starts with '\{'" "$MK" verify m/config.json
printf 'merge_method: linear\nmodels:\n  - model: m/config.json\n    parameters: {weight: 1}\n' >r2.yaml
t_fail "a recipe naming config.json as a model" 1 "m/config\.json: not a safetensors file \(it starts with '\{'" "$MK" r2.yaml out
t_absent "no output" out out.tmp
# a damaged safetensors file is still reported as one (not as "something else")
head -c 3 m/model.safetensors >short.safetensors
t_fail "a truncated .safetensors file" 1 "short\.safetensors: file is 3 bytes, too short for a safetensors header" "$MK" inspect short.safetensors
