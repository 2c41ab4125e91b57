"""mergekit-c's Hugging Face cache resolution against huggingface_hub itself (tools/compat-hub.sh).

Usage: check-hub.py MERGEKIT-C WORKDIR   (WORKDIR holds synthetic models base/, ft1/, ft2/)

1. A cache is written with huggingface_hub's own cache helpers (file_download: repo_folder_name,
   _get_pointer_path, _create_symlink, _cache_commit_hash_for_specific_revision): blobs named
   by sha256 (weights) or git blob sha1 (small files), relative snapshot links, refs/.
2. huggingface_hub reads it back with no network (scan_cache_dir reports no warnings;
   snapshot_download and hf_hub_download with local_files_only=True), and mergekit-c
   resolves every id, revision and subfolder to the same path (`inspect ID --json`).
3. The cache folder under HF_HUB_CACHE / HF_HOME / XDG_CACHE_HOME / HOME is the one
   huggingface_hub.constants computes in a fresh interpreter with the same environment.
4. Repository ids: mergekit-c refuses with exit 2 exactly the ids validate_repo_id refuses.
5. HF_HUB_OFFLINE values: mergekit-c calls offline exactly the values huggingface_hub does.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys

import huggingface_hub
from huggingface_hub import hf_hub_download, scan_cache_dir, snapshot_download
from huggingface_hub.errors import HFValidationError
from huggingface_hub.file_download import (
    _cache_commit_hash_for_specific_revision,
    _create_symlink,
    _get_pointer_path,
    repo_folder_name,
)
from huggingface_hub.utils import validate_repo_id

MK, WORK = sys.argv[1], os.path.abspath(sys.argv[2])
CACHE = os.path.join(WORK, "hub")
failures = []


def check(cond, what):
    print(("ok - " if cond else "FAIL - ") + what)
    if not cond:
        failures.append(what)


def put(repo_id, commit, src, revision=None, sub=""):
    """The files of src as snapshot `commit` of repo_id (in `sub`), as hf_hub_download stores them."""
    storage = os.path.join(CACHE, repo_folder_name(repo_id=repo_id, repo_type="model"))
    for name in sorted(os.listdir(src)):
        data = open(os.path.join(src, name), "rb").read()
        if name.endswith(".safetensors"):
            etag = hashlib.sha256(data).hexdigest()  # an LFS file: its sha256
        else:
            etag = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git's blob id
        blob = os.path.join(storage, "blobs", etag)
        os.makedirs(os.path.dirname(blob), exist_ok=True)
        with open(blob, "wb") as f:
            f.write(data)
        pointer = _get_pointer_path(storage, commit, f"{sub}/{name}" if sub else name)
        os.makedirs(os.path.dirname(pointer), exist_ok=True)
        _create_symlink(blob, pointer, new_blob=False)
    if revision:
        _cache_commit_hash_for_specific_revision(storage, revision, commit)


def mk(*args, env=None):
    e = dict(os.environ)
    for k in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        e.pop(k, None)
    e.update(env if env is not None else {"HF_HUB_CACHE": CACHE})
    # where the network is allowed, a model the cache lacks would be fetched: from a Hub that
    # is not there, once, so that the cache's answers come quickly (tools/check-hubfetch.py
    # fetches from a stand-in)
    e.setdefault("HF_ENDPOINT", "http://127.0.0.1:1")
    e.setdefault("MK_HUB_RETRIES", "1")
    return subprocess.run([MK, *args], capture_output=True, text=True, env=e)


def mk_path(ref, env=None):
    r = mk("inspect", ref, "--json", "-q", env=env)
    if r.returncode != 0:
        return "exit %d: %s" % (r.returncode, r.stderr.strip())
    return json.loads(r.stdout)["path"]


C1, C2, C3 = "a" * 40, "b" * 40, "c" * 40
put("acme/base", C1, os.path.join(WORK, "base"), revision="main")
put("acme/ft1", C2, os.path.join(WORK, "ft1"), revision="main")
put("acme/ft1", C3, os.path.join(WORK, "ft2"), revision="v2")
put("acme/bundle", C1, os.path.join(WORK, "ft2"), revision="main", sub="ft2")
put("solo", C1, os.path.join(WORK, "base"), revision="main")

# ---- huggingface_hub reads the cache ------------------------------------------------------
info = scan_cache_dir(CACHE)
check(not info.warnings, "scan_cache_dir: no warnings (%s)" % [str(w) for w in info.warnings])
repos = {r.repo_id: r for r in info.repos}
check(set(repos) == {"acme/base", "acme/ft1", "acme/bundle", "solo"}, "scan_cache_dir: the repositories (%s)" % sorted(repos))
check({str(x) for x in repos["acme/ft1"].refs} == {"main", "v2"}, "scan_cache_dir: acme/ft1 refs main and v2")

cases = [  # (our reference, huggingface_hub's reading of it)
    ("acme/base", lambda: snapshot_download("acme/base", cache_dir=CACHE, local_files_only=True)),
    ("acme/ft1", lambda: snapshot_download("acme/ft1", cache_dir=CACHE, local_files_only=True)),
    ("acme/ft1@main", lambda: snapshot_download("acme/ft1", revision="main", cache_dir=CACHE, local_files_only=True)),
    ("acme/ft1@v2", lambda: snapshot_download("acme/ft1", revision="v2", cache_dir=CACHE, local_files_only=True)),
    ("acme/ft1@" + C3, lambda: snapshot_download("acme/ft1", revision=C3, cache_dir=CACHE, local_files_only=True)),
    ("solo", lambda: snapshot_download("solo", cache_dir=CACHE, local_files_only=True)),
    ("acme/bundle/ft2/model.safetensors",
     lambda: hf_hub_download("acme/bundle", "model.safetensors", subfolder="ft2", cache_dir=CACHE, local_files_only=True)),
    ("acme/bundle/ft2",
     lambda: os.path.dirname(hf_hub_download("acme/bundle", "config.json", subfolder="ft2", cache_dir=CACHE,
                                             local_files_only=True))),
    ("acme/ft1/model.safetensors@v2",
     lambda: hf_hub_download("acme/ft1", "model.safetensors", revision="v2", cache_dir=CACHE, local_files_only=True)),
]
for ref, theirs in cases:
    want = theirs()
    got = mk_path(ref)
    check(got == want, "%s: mergekit-c reads %s, huggingface_hub %s" % (ref, got, want))

# ---- the cache folder from the environment --------------------------------------------------
alt = os.path.join(WORK, "alt")
for env in [
    {"HF_HUB_CACHE": alt + "/a", "HF_HOME": alt + "/h", "XDG_CACHE_HOME": alt + "/x", "HOME": alt + "/u"},
    {"HUGGINGFACE_HUB_CACHE": alt + "/a", "HF_HOME": alt + "/h", "HOME": alt + "/u"},
    {"HF_HOME": alt + "/h", "XDG_CACHE_HOME": alt + "/x", "HOME": alt + "/u"},
    {"HF_HOME": "~/hh", "HOME": alt + "/u"},
    {"XDG_CACHE_HOME": alt + "/x", "HOME": alt + "/u"},
    {"HOME": alt + "/u"},
]:
    env = dict(env, PATH=os.environ.get("PATH", ""))
    theirs = subprocess.run([sys.executable, "-c", "from huggingface_hub import constants; print(constants.HF_HUB_CACHE)"],
                            capture_output=True, text=True, env=env).stdout.strip()
    if os.path.exists(alt):
        shutil.rmtree(alt)
    put_cache = theirs
    storage = os.path.join(put_cache, repo_folder_name(repo_id="acme/m", repo_type="model"))
    os.makedirs(os.path.join(storage, "snapshots", C1))
    os.makedirs(os.path.join(storage, "refs"))
    open(os.path.join(storage, "refs", "main"), "w").write(C1)
    shutil.copy(os.path.join(WORK, "base", "model.safetensors"), os.path.join(storage, "snapshots", C1))
    got = mk_path("acme/m", env=env)
    check(got == os.path.join(storage, "snapshots", C1),
          "cache folder with %s: huggingface_hub %s, mergekit-c read %s" %
          ({k: v for k, v in env.items() if k != "PATH"}, theirs, got))

# ---- repository ids: the same ones refused ----------------------------------------------------
ids = ["acme/x", "x", "a-b.c_d/E.f-9", "a" * 96 + "/b", "a" * 97 + "/b", "a/-b", "a-/b", "a/.b", "a/b.", "a--b/c",
       "a/b..c", "a/b.git", "a b/c", "a/b$", "_a/b_", "a/b/c/d", "a.b/c.d"]
for rid in ids:
    try:
        validate_repo_id(rid.split("/")[0] + "/" + rid.split("/")[1] if rid.count("/") > 1 else rid)
        valid = True
    except HFValidationError:
        valid = False
    r = mk("inspect", rid, "-q", env={"HF_HUB_CACHE": CACHE})
    ours = r.returncode != 2
    check(ours == valid, "repo id %r: huggingface_hub %s, mergekit-c exit %d (%s)" %
          (rid, "accepts" if valid else "refuses", r.returncode, r.stderr.strip()[:160]))

# ---- HF_HUB_OFFLINE ------------------------------------------------------------------------------
for env in [{"HF_HUB_OFFLINE": v} for v in ("1", "0", "true", "On", "YES", "no", "2", "")] + [
        {"TRANSFORMERS_OFFLINE": "1"}, {"HF_HUB_OFFLINE": "", "TRANSFORMERS_OFFLINE": "yes"}]:
    env = dict(env, HF_HUB_CACHE=CACHE, PATH=os.environ.get("PATH", ""))
    theirs = subprocess.run([sys.executable, "-c", "from huggingface_hub import constants; print(constants.HF_HUB_OFFLINE)"],
                            capture_output=True, text=True, env=env).stdout.strip() == "True"
    r = mk("inspect", "acme/nothere", "-q", env=env)
    ours = "network is disallowed" in r.stderr
    check(ours == theirs, "offline with %s: huggingface_hub %s, mergekit-c %s" %
          ({k: v for k, v in env.items() if k not in ("PATH", "HF_HUB_CACHE")}, theirs, ours))

print("huggingface_hub %s, Python %s" % (huggingface_hub.__version__, sys.version.split()[0]))
if failures:
    print("check-hub: %d check(s) failed" % len(failures))
    sys.exit(1)
print("check-hub: all checks passed")
