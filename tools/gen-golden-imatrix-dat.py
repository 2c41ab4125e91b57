#!/usr/bin/env python3
"""Goldens for llama-imatrix's legacy binary imatrix layout (formats/imatrix.c), written here from
the layout llama.cpp documents in tools/imatrix/imatrix.cpp (save_imatrix_legacy) and
common/imatrix-loader.cpp (the reader), with llama.cpp's float32 arithmetic, from GGUF imatrix
files read with gguf-py (as common_imatrix_load reads them: in_sum2 as stored, counts rounded):

    MK_VENV=... $MK_VENV/bin/python tools/gen-golden-imatrix-dat.py

  tests/golden/imatrix/moe.gguf: a small GGUF imatrix written with gguf-py: a 3-expert
      ffn_up_exps entry (in_sum2 [32, 3], counts [1, 3] with one expert at 0), a router entry,
      an entry with count 0, entries not in name order; chunk_size 16;
  tests/golden/imatrix/imatrix-w256.dat and moe.dat: tests/golden/gguf/imatrix-w256.gguf and
      moe.gguf in the legacy layout as llama-imatrix --in-file X.gguf --output-format dat -c
      CHUNK_SIZE writes them (CHUNK_SIZE the file's imatrix.chunk_size): entries sorted by name,
      those whose counts are all 0 left out; i32 name length, name, i32 ncall = ceil(max count /
      CHUNK_SIZE), i32 nval, nval f32 (sum / count) x ncall (an expert with count 0: 1 x ncall);
      then i32 chunk count (max count // CHUNK_SIZE) and the last dataset name (i32 length, bytes).
Versions: tests/golden/imatrix/VERSIONS.
"""
import importlib.metadata
import os
import struct
import sys

import gguf
import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "golden", "imatrix")


def write_moe_gguf(path):
    rng = np.random.default_rng(17)
    w = gguf.GGUFWriter(path, arch="llama")  # gguf-py needs an architecture; llama-imatrix writes none
    w.add_type("imatrix")
    w.add_array("imatrix.datasets", ["moe-calibration.txt"])
    w.add_uint32("imatrix.chunk_count", 2)
    w.add_uint32("imatrix.chunk_size", 16)
    ents = [("blk.1.ffn_up_exps.weight", (rng.lognormal(0, 2, (3, 32)) * np.array([[10], [0], [7]])).astype(np.float32),
             np.array([[10], [0], [7]], np.float32)),
            ("blk.0.ffn_gate_inp.weight", rng.lognormal(1, 1, (1, 32)).astype(np.float32) * 35, np.array([[35]], np.float32)),
            ("blk.0.attn_q.weight", np.zeros((1, 24), np.float32), np.array([[0]], np.float32)),
            ("blk.0.ffn_down_exps.weight", rng.lognormal(0, 1, (3, 24)).astype(np.float32) * 11, np.array([[11], [12], [12]], np.float32))]
    for name, s, c in ents:
        w.add_tensor(name + ".in_sum2", s)
        w.add_tensor(name + ".counts", c)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def load_gguf(path):
    """name -> (sums f32 [nval], counts int [nmat]), datasets, chunk_size: common_imatrix_load"""
    r = gguf.GGUFReader(path)
    f = r.fields
    ds = [bytes(f["imatrix.datasets"].parts[i]).decode() for i in f["imatrix.datasets"].data]
    cs = int(f["imatrix.chunk_size"].parts[-1][0])
    t = {x.name: np.array(x.data, np.float32).ravel() for x in r.tensors}
    ents = {}
    for n, v in t.items():
        if n.endswith(".in_sum2"):
            base = n[:-len(".in_sum2")]
            ents[base] = (v, np.array([int(np.floor(c + 0.5)) for c in t[base + ".counts"]], np.int64))
    return ents, ds, cs


def write_dat(ents, ds, cs, path):
    out = bytearray()
    keep = sorted(n for n, (_, c) in ents.items() if (c != 0).any())
    out += struct.pack("<i", len(keep))
    max_count = 0
    for n in keep:
        s, c = ents[n]
        max_count = max(max_count, int(c.max()))
        ncall = (int(c.max()) + cs - 1) // cs
        nmat = len(c)
        per = len(s) // nmat
        vals = np.empty(len(s), np.float32)
        for i in range(len(s)):
            cnt, v = np.float32(c[i // per]), np.float32(s[i])
            if cnt == 0:
                v, cnt = np.float32(1), np.float32(1)
            vals[i] = (v / cnt) * np.float32(ncall)  # float32 throughout, as llama.cpp
        out += struct.pack("<i", len(n)) + n.encode() + struct.pack("<ii", ncall, len(s)) + vals.astype("<f4").tobytes()
    for n, (s, c) in ents.items():
        max_count = max(max_count, int(c.max()))
    out += struct.pack("<i", max_count // cs)
    d = ds[-1].encode() if ds else b""
    out += struct.pack("<i", len(d)) + d
    with open(path, "wb") as fh:
        fh.write(out)
    print(f"{path}: {len(keep)} entries of {len(ents)}, {len(out)} bytes")


def main():
    os.makedirs(OUT, exist_ok=True)
    write_moe_gguf(os.path.join(OUT, "moe.gguf"))
    for src, dst in ((os.path.join(ROOT, "tests", "golden", "gguf", "imatrix-w256.gguf"), "imatrix-w256.dat"),
                     (os.path.join(OUT, "moe.gguf"), "moe.dat")):
        write_dat(*load_gguf(src), os.path.join(OUT, dst))
    with open(os.path.join(OUT, "VERSIONS"), "w") as fh:
        for p in ("gguf", "numpy"):
            fh.write(f"{p}=={importlib.metadata.version(p)}\n")
        fh.write(f"python=={sys.version.split()[0]}\n")


if __name__ == "__main__":
    main()
