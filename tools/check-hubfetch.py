"""Models fetched from the Hub by mergekit-c, against huggingface_hub itself (tools/compat-hub.sh).

Usage: check-hubfetch.py MERGEKIT-C HUBSTUB WORKDIR   (WORKDIR holds synthetic models base/, ft1/, ft2/)

The test stand-in Hub (tests/tools/hubstub.c) serves the models on the loopback address.
1. huggingface_hub's own snapshot_download fetches them from the stand-in: the stand-in speaks
   the Hub's protocol as huggingface_hub uses it (so tests/e2e/hub_fetch.sh tests the real one).
2. mergekit-c merges by id, fetching into an empty cache; then huggingface_hub, offline
   (local_files_only=True), finds every file there with the original bytes and downloads
   nothing (the stand-in's log stays empty), and scan_cache_dir reports no warnings.
3. After a frankenmerge that fetches only some layers, huggingface_hub finds config.json but
   not the weights file (a file fetched in part is never in its cache), and a later full
   snapshot_download by huggingface_hub completes the cache.
"""
import os
import shutil
import subprocess
import sys
import time

MK, STUB, WORK = sys.argv[1], sys.argv[2], os.path.abspath(sys.argv[3])
failures = []


def check(cond, what):
    print(("ok - " if cond else "FAIL - ") + what)
    if not cond:
        failures.append(what)


hub = os.path.join(WORK, "hubroot")
for name in ("base", "ft1", "ft2"):
    shutil.copytree(os.path.join(WORK, name), os.path.join(hub, "acme", name))
log, port_file = os.path.join(WORK, "stub.log"), os.path.join(WORK, "stub.port")
stub = subprocess.Popen([STUB, hub, port_file, log])
try:
    for _ in range(200):
        if os.path.exists(port_file):
            break
        time.sleep(0.05)
    endpoint = "http://127.0.0.1:" + open(port_file).read().strip()
    # huggingface_hub reads its settings when imported
    os.environ.pop("HF_HUB_OFFLINE", None)
    os.environ.update(HF_ENDPOINT=endpoint, HF_HUB_DISABLE_TELEMETRY="1")
    env = dict(os.environ)
    from huggingface_hub import hf_hub_download, scan_cache_dir, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    # 1. huggingface_hub downloads from the stand-in
    hf_cache = os.path.join(WORK, "hf-cache")
    snap = snapshot_download("acme/base", cache_dir=hf_cache)
    same = all(open(os.path.join(snap, f), "rb").read() == open(os.path.join(WORK, "base", f), "rb").read()
               for f in os.listdir(os.path.join(WORK, "base")))
    check(same, "huggingface_hub's snapshot_download from the stand-in Hub gives the original files")

    # 2. mergekit-c fetches; huggingface_hub reads its cache offline
    cache = os.path.join(WORK, "mk-cache")
    recipe = os.path.join(WORK, "r.yaml")
    with open(recipe, "w") as f:
        f.write("merge_method: linear\nmodels:\n")
        for m in ("base", "ft1", "ft2"):
            f.write(f"  - model: acme/{m}\n    parameters: {{weight: 0.3}}\n")
    r = subprocess.run([MK, "merge", recipe, os.path.join(WORK, "out"), "-q"], env=dict(env, HF_HUB_CACHE=cache),
                       capture_output=True, text=True)
    check(r.returncode == 0, "mergekit-c merges by id from the stand-in Hub: " + r.stderr.strip())
    open(log, "w").close()
    for m in ("base", "ft1", "ft2"):
        for fn in sorted(os.listdir(os.path.join(WORK, m))):
            try:
                p = hf_hub_download(f"acme/{m}", fn, cache_dir=cache, local_files_only=True)
                ok = open(p, "rb").read() == open(os.path.join(WORK, m, fn), "rb").read()
            except LocalEntryNotFoundError:
                ok = False
            check(ok, f"huggingface_hub finds acme/{m}/{fn} in mergekit-c's cache, offline, with the original bytes")
    snap = snapshot_download("acme/ft2", cache_dir=cache, local_files_only=True)
    check(sorted(os.listdir(snap)) == sorted(os.listdir(os.path.join(WORK, "ft2"))),
          "snapshot_download(local_files_only) lists every file of acme/ft2")
    check(os.path.getsize(log) == 0, "huggingface_hub downloaded nothing from the stand-in")
    info = scan_cache_dir(cache)
    check(not info.warnings, f"scan_cache_dir: no warnings ({[str(w) for w in info.warnings]})")
    check(sorted(r.repo_id for r in info.repos) == ["acme/base", "acme/ft1", "acme/ft2"], "scan_cache_dir: the three repos")

    # 3. a file fetched in part is not in huggingface_hub's cache; huggingface_hub completes it
    cache2 = os.path.join(WORK, "mk-cache2")
    with open(recipe, "w") as f:
        f.write("merge_method: passthrough\nslices:\n  - sources:\n      - model: acme/base\n        layer_range: [0, 1]\n")
    r = subprocess.run([MK, "merge", recipe, os.path.join(WORK, "out2"), "-q"], env=dict(env, HF_HUB_CACHE=cache2),
                       capture_output=True, text=True)
    check(r.returncode == 0, "mergekit-c frankenmerge by id: " + r.stderr.strip())
    try:
        hf_hub_download("acme/base", "config.json", cache_dir=cache2, local_files_only=True)
        check(True, "huggingface_hub finds config.json after a partial fetch")
    except LocalEntryNotFoundError:
        check(False, "huggingface_hub finds config.json after a partial fetch")
    try:
        hf_hub_download("acme/base", "model.safetensors", cache_dir=cache2, local_files_only=True)
        check(False, "a weights file fetched in part is not in huggingface_hub's cache")
    except LocalEntryNotFoundError:
        check(True, "a weights file fetched in part is not in huggingface_hub's cache")
    p = hf_hub_download("acme/base", "model.safetensors", cache_dir=cache2)
    check(open(p, "rb").read() == open(os.path.join(WORK, "base", "model.safetensors"), "rb").read(),
          "huggingface_hub then downloads it into the same cache")
    r = subprocess.run([MK, "inspect", "acme/base", "--hashes", "-q"], env=dict(env, HF_HUB_CACHE=cache2, HF_HUB_OFFLINE="1"),
                       capture_output=True, text=True)
    check(r.returncode == 0, "mergekit-c reads the file huggingface_hub completed, offline: " + r.stderr.strip())
finally:
    stub.kill()

print(f"{'FAIL' if failures else 'ok'}: hub fetch compat, {len(failures)} failure(s)")
sys.exit(1 if failures else 0)
