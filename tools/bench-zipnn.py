"""bench-zipnn.py - ZipNN on a file's bytes, for tools/bench-mkz.sh and bench-mkz-delta.sh.

    python tools/bench-zipnn.py FILE [DTYPE [BASE]]   (DTYPE: bfloat16, the default, float32, ...)

Prints one line: ratio, compress MB/s and decompress MB/s of input per CPU second (user + sys,
one thread: threads=1), after checking that decompression gives the bytes back. The whole file
is compressed as one byte array (input_format "byte"), as ZipNN compresses a safetensors file.
With BASE (a file of the same size), ZipNN's delta mode: FILE XOR BASE is compressed, and
decompressed given BASE. ZipNN 0.5.4 reorders the bits of the buffer it compresses in place,
so it gets a copy.
"""
import resource
import sys
import warnings

warnings.filterwarnings("ignore")
from zipnn import ZipNN  # noqa: E402


def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main():
    path = sys.argv[1]
    dtype = sys.argv[2] if len(sys.argv) > 2 else "bfloat16"
    base = open(sys.argv[3], "rb").read() if len(sys.argv) > 3 else None
    raw = open(path, "rb").read()
    work = bytearray(raw)
    opts = {"delta_compressed_type": "byte"} if base else {}
    z = ZipNN(input_format="byte", bytearray_dtype=dtype, threads=1, **opts)
    t0 = cpu()
    c = z.compress(work, delta_second_data=base) if base else z.compress(work)
    t1 = cpu()
    d = z.decompress(c, delta_second_data=base) if base else z.decompress(c)
    t2 = cpu()
    if bytes(d) != raw:
        sys.exit("bench-zipnn: %s: decompression does not give the bytes back" % path)
    mb = len(raw) / 1e6
    print("%.3f %.0f %.0f" % (len(raw) / len(c), mb / max(t1 - t0, 1e-9), mb / max(t2 - t1, 1e-9)))


if __name__ == "__main__":
    main()
