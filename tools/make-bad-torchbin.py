#!/usr/bin/env python3
"""Hostile and broken PyTorch checkpoints for the rejection corpus (tools/make-bad-corpus.sh
puts each into a case of tests/bad/).

The code-execution payloads are real: objects whose __reduce__ names os.system,
builtins.eval, builtins.exec or subprocess.Popen, saved by torch.save itself, plus a
hand-made pickle that builds the global from strings kept in the memo (STACK_GLOBAL). Each
payload would create the file `pwned` in the current folder; this script proves that by
loading every payload with torch.load(weights_only=False) in a scratch folder (the file
appears) before writing it out. mergekit-c must refuse each one, naming the global, and
the file must not appear.

The others lie about their structure: views past their storage, storages larger than their
entry, entries escaping the archive or compressed, pickle bombs, truncated files, a pickled
nn.Module and a training checkpoint that are not state dicts.

Usage: .venv-tools/bin/python tools/make-bad-torchbin.py OUTDIR
"""
import collections
import io
import os
import struct
import subprocess
import sys
import tempfile
import zipfile

import torch

PAYLOAD = "touch pwned"


class System:
    def __reduce__(self):
        return (os.system, (PAYLOAD,))


class Eval:
    def __reduce__(self):
        return (eval, (f"__import__('os').system({PAYLOAD!r})",))


class Exec:
    def __reduce__(self):
        return (exec, (f"import os; os.system({PAYLOAD!r})",))


class Popen:
    def __reduce__(self):
        return (subprocess.Popen, (PAYLOAD.split(),))


# ---- a small pickle assembler (opcodes of CPython's Lib/pickle.py) ----------------------------

def uni(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def glob(mod, name):
    return b"c" + mod.encode() + b"\n" + name.encode() + b"\n"


def num(n):
    return b"J" + struct.pack("<i", n)


def tup(xs):
    return b"(" + b"".join(num(x) for x in xs) + b"t"


ODICT = glob("collections", "OrderedDict") + b")R"


def tensor(stype, key, numel, offset, size, stride, legacy=False):
    pid = b"(" + uni("storage") + glob("torch", stype) + uni(key) + uni("cpu") + num(numel) + (b"N" if legacy else b"") + b"t"
    args = b"(" + pid + b"Q" + num(offset) + tup(size) + tup(stride) + b"\x89" + ODICT + b"t"
    return glob("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def state_dict(entries):
    """A pickle of an OrderedDict of (name, value bytes)."""
    return b"\x80\x02" + ODICT + b"(" + b"".join(uni(k) + v for k, v in entries) + b"u."


def legacy_file(obj_pickle, storages):
    """_legacy_save's layout around a hand-made object pickle; storages: (key, bytes, elem size)."""
    out = io.BytesIO()
    for x in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True,
                                             "type_sizes": {"short": 2, "int": 4, "long": 4}}):
        out.write(__import__("pickle").dumps(x, protocol=2))
    out.write(obj_pickle)
    out.write(__import__("pickle").dumps([k for k, _, _ in storages], protocol=2))
    for _, data, es in storages:
        out.write(struct.pack("<q", len(data) // es) + data)
    return out.getvalue()


def torch_zip(pkl, storages, prefix="archive", deflate=(), extra=(), byteorder="little"):
    """The zip layout torch.save writes (stored entries), built with zipfile."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{prefix}/data.pkl", pkl)
        z.writestr(f"{prefix}/byteorder", byteorder)
        for key, data in storages:
            info = zipfile.ZipInfo(f"{prefix}/data/{key}")
            info.compress_type = zipfile.ZIP_DEFLATED if key in deflate else zipfile.ZIP_STORED
            z.writestr(info, data)
        for name, data in extra:
            z.writestr(zipfile.ZipInfo(name), data)
        z.writestr(f"{prefix}/version", "3\n")
    return out.getvalue()


def saved(obj, **kw):
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "x.bin")
        torch.save(obj, p, **kw)
        with open(p, "rb") as f:
            return f.read()


def prove_live(name, data):
    """torch.load without weights_only runs the payload: the marker file appears."""
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "x.bin")
        with open(p, "wb") as f:
            f.write(data)
        cwd = os.getcwd()
        os.chdir(d)
        try:
            try:
                r = torch.load(p, weights_only=False)
                if isinstance(r, dict):
                    for v in r.values():
                        if hasattr(v, "wait"):
                            v.wait()
            except Exception:
                pass
            if not os.path.exists("pwned"):
                sys.exit(f"make-bad-torchbin: payload {name} did not run under torch.load; it proves nothing")
        finally:
            os.chdir(cwd)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    w = torch.arange(6, dtype=torch.float32)
    cases = {}

    # code execution through __reduce__, written by torch.save itself
    for name, evil in (("os-system", System()), ("eval", Eval()), ("exec", Exec()), ("popen", Popen())):
        data = saved(collections.OrderedDict([("w", w), ("x", evil)]))
        prove_live(name, data)
        cases[name] = data
    # the global built from strings parked in the memo as harmless-looking values, fetched back
    # for protocol 4's STACK_GLOBAL: {'note': 'posix', 'kind': 'system', 'w': posix.system(...)}
    obf = (b"\x80\x04" + ODICT + b"(" + uni("note") + uni("posix") + b"q\x00" + uni("kind") + uni("system") + b"q\x01"
           + b"u" + uni("w") + b"h\x00h\x01\x93" + uni(PAYLOAD) + b"\x85Rs.")
    cases["stack-global"] = legacy_file(obf, [])
    prove_live("stack-global", cases["stack-global"])

    # views and storages that lie
    f32 = struct.pack("<4f", 1, 2, 3, 4)
    cases["offset-past-storage"] = torch_zip(state_dict([("w", tensor("FloatStorage", "0", 4, 3, [2], [1]))]), [("0", f32)])
    cases["storage-past-entry"] = torch_zip(state_dict([("w", tensor("FloatStorage", "0", 100, 0, [100], [1]))]),
                                            [("0", f32[:12])])
    cases["zip-dotdot"] = torch_zip(state_dict([("w", tensor("FloatStorage", "0", 4, 0, [4], [1]))]), [("0", f32)],
                                    extra=[("archive/../../evil.sh", b"echo pwned")])
    cases["zip-deflated"] = torch_zip(state_dict([("w", tensor("FloatStorage", "0", 4, 0, [4], [1]))]), [("0", f32)],
                                      deflate=("0",))
    cases["big-endian"] = torch_zip(state_dict([("w", tensor("FloatStorage", "0", 4, 0, [4], [1]))]), [("0", f32)],
                                    byteorder="big")

    # pickle bombs, inside a state dict of the legacy stream
    deep = b"]" * 100 + b"a" * 99
    cases["bomb-nesting"] = legacy_file(state_dict([("w", deep)]), [])
    cases["bomb-marks"] = legacy_file(b"\x80\x02" + b"(" * 5000 + b".", [])
    # a billion laughs: a tuple of 10 references to a tuple of 10 references ... 9 levels deep
    laughs = b"]"
    for k in range(1, 10):
        laughs = b"(" + laughs + b"q" + bytes([k - 1]) + (b"h" + bytes([k - 1])) * 9 + b"t"
    cases["bomb-laughs"] = legacy_file(state_dict([("w", laughs)]), [])

    # truncated
    good = saved(collections.OrderedDict([("w", w)]))
    cases["truncated-zip"] = good[: len(good) // 2]
    legacy = saved(collections.OrderedDict([("w", w)]), _use_new_zipfile_serialization=False)
    cases["truncated-legacy"] = legacy[:-5]

    # not state dicts
    cases["module"] = saved(torch.nn.Linear(2, 2))
    cases["training-checkpoint"] = saved({"state_dict": collections.OrderedDict([("w", w)]), "epoch": 3})

    for name, data in cases.items():
        with open(os.path.join(out, name + ".bin"), "wb") as f:
            f.write(data)
    print(f"make-bad-torchbin: {len(cases)} files in {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
