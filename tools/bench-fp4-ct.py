#!/usr/bin/env python3
"""compressed-tensors' own NVFP4 / MXFP4 / MXFP8 weight quantization on the CPU, one thread:
quantized values per second of user CPU time (tools/bench-fp4.sh compares mergekit-c with it).

    bench-fp4-ct.py MODEL_DIR FORMAT...

For each 2-D *.weight of the model but embeddings and lm_head (what `mergekit-c quantize`
quantizes), timed: the min/max observer (amin/amax per group in the weight's dtype, and the
tensor's for NVFP4's global scale), calculate_qparams and the compressor's compress (quantize
and pack). Reading the file is not timed. Prints "FORMAT VALUES USER_S".
"""
import glob
import resource
import sys

import torch
from compressed_tensors.compressors.mxfp4.base import MXFP4PackedCompressor
from compressed_tensors.compressors.mxfp8.base import MXFP8QuantizationCompressor
from compressed_tensors.compressors.nvfp4.base import NVFP4PackedCompressor
from compressed_tensors.quantization import QuantizationScheme, preset_name_to_scheme
from compressed_tensors.quantization.utils import calculate_qparams, generate_gparam
from safetensors.torch import load_file

KIND = {"nvfp4": ("NVFP4A16", NVFP4PackedCompressor), "mxfp4": ("MXFP4A16", MXFP4PackedCompressor),
        "mxfp8": ("MXFP8A16", MXFP8QuantizationCompressor)}


def utime():
    return resource.getrusage(resource.RUSAGE_SELF).ru_utime


def main():
    torch.set_num_threads(1)
    model, formats = sys.argv[1], sys.argv[2:]
    weights = {}
    for f in sorted(glob.glob(model + "/*.safetensors")):
        for k, v in load_file(f).items():
            if v.dim() == 2 and k.endswith(".weight") and "embed" not in k and "lm_head" not in k:
                weights[k] = v
    for fmt in formats:
        preset, comp = KIND[fmt]
        args = preset_name_to_scheme(preset, ["Linear"]).weights
        scheme = QuantizationScheme(targets=["Linear"], weights=args)
        n, t = 0, 0.0
        for w in weights.values():
            if w.shape[1] % args.group_size:
                continue
            t0 = utime()
            g = w.unflatten(-1, (w.shape[-1] // args.group_size, args.group_size))
            sd = {"weight": w}
            gs = None
            if args.strategy == "tensor_group":
                gs = generate_gparam(w.amin(), w.amax())
                sd["weight_global_scale"] = gs
            scale, zp = calculate_qparams(g.amin(-1), g.amax(-1), args, global_scale=gs)
            sd["weight_scale"] = scale.to(w.dtype)
            sd["weight_zero_point"] = zp
            comp.compress(sd, scheme)
            t += utime() - t0
            n += w.numel()
        print(fmt, n, "%.3f" % t)


if __name__ == "__main__":
    main()
