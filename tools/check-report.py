#!/usr/bin/env python3
"""Checks one report page as headless Chromium rendered it (tools/check-report.sh):

  check-report.py PAGE.html SHOT.png LAYOUT.txt CONSOLE.log

- CONSOLE.log (chromium --enable-logging=stderr): no console message at all (the page has no
  script; a failed load, a CSP or parse complaint would show up here);
- LAYOUT.txt (the probe page's dump): one line per <svg class="plot"> as laid out in the
  browser: id, width, height, points, bars, cells; every plot of PAGE.html is there, at least
  300 x 100 CSS pixels, with the same counts of points, bars and cells as the page's source;
- SHOT.png: decoded here (zlib + PNG filters, no imaging library) - not blank (at least 1 % of
  pixels not near-white) and each plot colour the page uses appears.
Prints one line per failure and exits 1, else one summary line.
"""
import re
import struct
import sys
import zlib


def png_pixels(path):
    """(width, height, rows of RGB(A) bytes) of an 8-bit RGB or RGBA, non-interlaced PNG."""
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG")
    pos, idat, w = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if depth != 8 or ctype not in (2, 6) or interlace:
                raise ValueError(f"{path}: PNG depth {depth}, colour type {ctype}, interlace {interlace}")
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = zlib.decompress(idat)
    stride = w * bpp
    rows, prev, i = [], bytearray(stride), 0
    for _ in range(h):
        f, line = raw[i], bytearray(raw[i + 1:i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if f == 1:
                line[x] = (line[x] + a) & 255
            elif f == 2:
                line[x] = (line[x] + b) & 255
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return w, h, bpp, rows


def main():
    page, shot, layout, console = sys.argv[1:5]
    html = open(page, encoding="utf-8").read()
    bad = []
    logs = [l for l in open(console, errors="replace") if ":CONSOLE" in l]
    bad += [f"console: {l.strip()}" for l in logs]
    # what the source says, per plot
    want = {}
    for m in re.finditer(r'<svg class="plot" data-plot="(p\d+)"(.*?)</svg>', html, re.S):
        body = m.group(2)
        want[m.group(1)] = (body.count('class="pt"'), body.count('class="bar"'), body.count('class="cell"'))
    got = {}
    for line in open(layout):
        f = line.split()
        if len(f) == 6 and f[0].startswith("p"):
            got[f[0]] = (float(f[1]), float(f[2]), int(f[3]), int(f[4]), int(f[5]))
    if not want:
        bad.append(f"{page}: no plot in the source")
    for pid, counts in want.items():
        if pid not in got:
            bad.append(f"{pid}: not laid out by the browser")
            continue
        wd, ht, *c = got[pid]
        if wd < 300 or ht < 100:
            bad.append(f"{pid}: rendered {wd} x {ht} CSS pixels")
        if tuple(c) != counts:
            bad.append(f"{pid}: the browser sees points/bars/cells {tuple(c)}, the source {counts}")
    w, h, bpp, rows = png_pixels(shot)
    ink, colours = 0, set()
    used = {tuple(int(c[i:i + 2], 16) for i in (0, 2, 4)) for c in set(re.findall(r'fill="#([0-9a-f]{6})"', html))}
    used.discard((255, 255, 255))
    for r in rows:
        for x in range(0, w * bpp, bpp):
            px = (r[x], r[x + 1], r[x + 2])
            if min(px) < 230:
                ink += 1
            if px in used:
                colours.add(px)
    share = ink / (w * h)
    if share < 0.01:
        bad.append(f"{shot}: blank ({share:.4%} of pixels not white)")
    # a colour drawn only in tiny cells may be hidden under neighbours; the palette's must show
    missing = [c for c in used if c not in colours and c in PALETTE]
    if missing:
        bad.append(f"{shot}: plot colours not on screen: {['#%02x%02x%02x' % c for c in missing]}")
    for b in bad:
        print(f"check-report: {page}: {b}")
    if bad:
        sys.exit(1)
    print(f"check-report: {page}: {len(want)} plots laid out, {share:.1%} ink, {len(colours)} plot colours on screen, no console messages")


PALETTE = {(0x1f, 0x77, 0xb4), (0xd6, 0x27, 0x28), (0x2c, 0xa0, 0x2c), (0xff, 0x7f, 0x0e), (0x94, 0x67, 0xbd), (0x8c, 0x56, 0x4b),
           (0xe3, 0x77, 0xc2), (0x17, 0xbe, 0xcf)}

if __name__ == "__main__":
    main()
