#!/usr/bin/env python3
"""Our quantized GGUF tensors against llama.cpp's own quantizer (llama-cpp-python's
llama_model_quantize, the C code of llama-quantize) run on our f32 GGUF of the same model.

    .venv-tools/bin/python tools/check-gguf-quantize.py F32.gguf T=OURS.gguf ... [--time]

For each T (q8_0, q4_0, q4_1, q5_0, q5_1, tq1_0, tq2_0, f16, bf16) llama.cpp quantizes F32.gguf with
--pure (every matrix in T, 1-D tensors f32); then every tensor both files store in the
same type must be the same bytes (tolerance: none; a difference names the tensor and the
first differing byte). Tensors whose types differ (our choices for the output matrix) are
counted and listed. For the k-quant mixes (q2_k, q3_k_s, q3_k_m, q3_k_l, q4_k_s, q4_k_m, q5_k_s,
q5_k_m, q6_k, and iq4_nl) llama.cpp quantizes without --pure, choosing each tensor's type itself: then
every tensor's type, every tensor's bytes and general.file_type must be llama.cpp's. With
--strict, every T is checked that way (llama-quantize's default choices: for q4_0 ... q5_1 its
output matrix in Q6_K, as `convert` writes it). With --time, llama.cpp's seconds per run are printed (tools/bench-gguf.sh).
Exit 1 on any difference.
"""
import argparse
import ctypes
import os
import sys
import tempfile
import time

import numpy as np

FTYPE = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q8_0": 7, "q5_0": 8, "q5_1": 9, "bf16": 32, "tq1_0": 36, "tq2_0": 37}
MIX = {"q2_k": 10, "q3_k_s": 11, "q3_k_m": 12, "q3_k_l": 13, "q4_k_s": 14, "q4_k_m": 15, "q5_k_s": 16, "q5_k_m": 17, "q6_k": 18, "iq4_nl": 25}


def llama_quantize(src, dst, ftype, threads, pure=True):
    import llama_cpp
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = ftype
    p.pure = pure
    p.nthread = threads
    t0 = time.perf_counter()
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(p))
    if rc != 0:
        raise SystemExit(f"llama_model_quantize failed ({rc})")
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("f32")
    ap.add_argument("ours", nargs="+", help="TYPE=FILE")
    ap.add_argument("--time", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--strict", action="store_true", help="llama.cpp chooses every type (no --pure); all must be ours")
    a = ap.parse_args()
    import gguf
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for o in a.ours:
            t, path = o.split("=", 1)
            ref = os.path.join(tmp, f"ref-{t}.gguf")
            mix = t in MIX or a.strict
            secs = llama_quantize(a.f32, ref, MIX[t] if t in MIX else FTYPE[t], a.threads, pure=not mix)
            rm, rr = gguf.GGUFReader(path), gguf.GGUFReader(ref)
            mine = {x.name: x for x in rm.tensors}
            theirs = {x.name: x for x in rr.tensors}
            if mix:
                ft = [int(r.fields["general.file_type"].contents()) for r in (rm, rr)]
                if ft[0] != ft[1]:
                    print(f"{t}: general.file_type ours {ft[0]}, llama.cpp {ft[1]}")
                    ok = False
            same = differ = 0
            typed = []
            if set(mine) != set(theirs):
                print(f"{t}: tensor names differ: {sorted(set(mine) ^ set(theirs))[:5]}")
                ok = False
            for name in sorted(set(mine) & set(theirs)):
                m, r = mine[name], theirs[name]
                if m.tensor_type != r.tensor_type:
                    typed.append(f"{name} ours {m.tensor_type.name}, llama.cpp {r.tensor_type.name}")
                    continue
                mb, rb = np.asarray(m.data).view(np.uint8).ravel(), np.asarray(r.data).view(np.uint8).ravel()
                if mb.shape == rb.shape and np.array_equal(mb, rb):
                    same += 1
                else:
                    differ += 1
                    ok = False
                    i = int(np.argmax(mb[:min(len(mb), len(rb))] != rb[:min(len(mb), len(rb))])) if mb.shape == rb.shape else -1
                    print(f"{t}: {name} ({m.tensor_type.name}) differs: first differing byte {i} of {len(mb)}")
            if mix and typed:
                ok = False
            print(f"{t}: {same} tensors byte-identical to llama.cpp's quantizer, {differ} differ, {len(typed)} in another type"
                  + (f" ({'; '.join(typed[:3])}{'; ...' if len(typed) > 3 else ''})" if typed else "") + (f"; llama.cpp took {secs:.2f} s" if a.time else ""))
    print("check-gguf-quantize:", "ok" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
