"""Python's own Hugging Face tools against vectorize's Hugging Face store.

Run by .ci/interop.sh in a venv with pinned huggingface_hub, safetensors and
numpy; the manifest is the one examples/fake_hub.rs writes.

  read MANIFEST            with HF_HUB_CACHE = the service's store and
                           HF_HUB_OFFLINE=1: snapshot_download finds every
                           revision's snapshot, safe_open reads every tensor
                           with the values the fake hub served.
  download MANIFEST        with HF_ENDPOINT = the fake hub: huggingface_hub
                           downloads the same revisions into HF_HUB_CACHE.
  compare A B MANIFEST     the two caches hold the same blobs/, snapshots/
                           (paths and symlink targets) and refs/ (contents).
"""

import hashlib
import os
import sys
from fnmatch import fnmatch
from json import load
from math import prod

# The service's default allow_patterns (API.md); both sides fetch these.
ALLOW_PATTERNS = ["*.safetensors", "*.json", "*.txt", "*.model"]

DTYPES = {"F32": "float32", "I64": "int64", "U8": "uint8"}


def fail(message):
    sys.exit(f"FAIL: {message}")


def repo_folder(cache, repo_id):
    return os.path.join(cache, "models--" + repo_id.replace("/", "--"))


def expected_tensor(np, spec):
    """The tensor examples/fake_hub.rs serves, recomputed by its rule."""
    k = np.arange(prod(spec["shape"]), dtype=np.int64) + spec["seed"]
    if spec["dtype"] == "F32":
        values = (k * 7919 % 1000).astype(np.float32) / np.float32(8) - np.float32(60)
    elif spec["dtype"] == "I64":
        values = k * 3 - 5
    elif spec["dtype"] == "U8":
        values = (k * 37 % 256).astype(np.uint8)
    else:
        fail(f"no rule for dtype {spec['dtype']}")
    return values.reshape(spec["shape"])


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read(manifest):
    import numpy as np
    from huggingface_hub import constants, hf_hub_download, snapshot_download
    from safetensors import safe_open

    if not constants.HF_HUB_OFFLINE:
        fail("HF_HUB_OFFLINE is not set: this check must not touch the network")
    repo_id, commit = manifest["repo_id"], manifest["commit"]
    expected_snapshot = os.path.join(
        repo_folder(constants.HF_HUB_CACHE, repo_id), "snapshots", commit
    )
    for revision in manifest["revisions"] + [commit]:
        snapshot = snapshot_download(repo_id, revision=revision)
        if os.path.realpath(snapshot) != os.path.realpath(expected_snapshot):
            fail(f"snapshot_download({repo_id!r}, revision={revision!r}) gave {snapshot}")
        print(f"ok  snapshot_download({repo_id!r}, revision={revision!r}) -> {snapshot}")
    config = hf_hub_download(repo_id, "2_Dense/config.json", revision=manifest["revisions"][-1])
    print(f"ok  hf_hub_download(..., '2_Dense/config.json') -> {config}")

    for file in manifest["files"]:
        path = os.path.join(expected_snapshot, file["path"])
        wanted = any(fnmatch(file["path"], p) for p in ALLOW_PATTERNS)
        if not wanted:
            if os.path.lexists(path):
                fail(f"{file['path']} matches no allow pattern, yet is in the snapshot")
            continue
        if not os.path.islink(path):
            fail(f"{file['path']} is not a symlink into blobs/")
        if sha256(path) != file["sha256"]:
            fail(f"{file['path']} differs from what the hub served")
    print(f"ok  every allowed file is a symlink with the bytes the hub served")

    tensors = 0
    for name, specs in manifest["tensors"].items():
        path = os.path.join(expected_snapshot, name)
        with safe_open(path, framework="numpy") as weights:
            if sorted(weights.keys()) != sorted(specs):
                fail(f"{name} holds {sorted(weights.keys())}, not {sorted(specs)}")
            for key, spec in specs.items():
                tensor = weights.get_tensor(key)
                if tensor.dtype != np.dtype(DTYPES[spec["dtype"]]):
                    fail(f"{name}:{key} is {tensor.dtype}, not {spec['dtype']}")
                if list(tensor.shape) != spec["shape"]:
                    fail(f"{name}:{key} has shape {tensor.shape}, not {spec['shape']}")
                if not np.array_equal(tensor, expected_tensor(np, spec)):
                    fail(f"{name}:{key} holds other values than the hub served")
                tensors += 1
    print(f"ok  safe_open(framework='numpy') read {tensors} tensors with the served values")


def download(manifest):
    from huggingface_hub import snapshot_download

    for revision in manifest["revisions"]:
        snapshot = snapshot_download(
            manifest["repo_id"], revision=revision, allow_patterns=ALLOW_PATTERNS
        )
        print(f"ok  huggingface_hub downloaded {manifest['repo_id']}@{revision} -> {snapshot}")


def layout(cache, repo_id):
    """The names a cache holds for a repo: blobs, snapshot links, refs."""
    root = repo_folder(cache, repo_id)
    blobs = sorted(os.listdir(os.path.join(root, "blobs")))
    snapshots, refs = [], []
    for kind, entries in (("snapshots", snapshots), ("refs", refs)):
        base = os.path.join(root, kind)
        for folder, _, files in os.walk(base):
            for name in files:
                path = os.path.join(folder, name)
                relative = os.path.relpath(path, base)
                if kind == "snapshots":
                    target = os.readlink(path) if os.path.islink(path) else "(a regular file)"
                    entries.append((relative, target))
                else:
                    with open(path) as ref:
                        entries.append((relative, ref.read()))
    return {"blobs": blobs, "snapshots": sorted(snapshots), "refs": sorted(refs)}


def compare(service_cache, hub_cache, manifest):
    repo_id = manifest["repo_id"]
    ours = layout(service_cache, repo_id)
    theirs = layout(hub_cache, repo_id)
    for part in ("blobs", "snapshots", "refs"):
        if ours[part] != theirs[part]:
            fail(
                f"{part}/ differ:\n  vectorize:       {ours[part]}\n"
                f"  huggingface_hub: {theirs[part]}"
            )
        print(f"ok  {part}/ is the same: {len(ours[part])} entries")
    # huggingface_hub 2.x also caches the repo's whole file listing in
    # trees/{commit}.json; offline, a snapshot missing a listed file is
    # "incomplete" unless the caller repeats its allow_patterns. The service
    # fetches a subset by design, so it writes no listing: offline
    # snapshot_download(repo_id) then answers its snapshot as it is.
    extra = sorted(os.listdir(repo_folder(service_cache, repo_id)))
    if extra != ["blobs", "refs", "snapshots"]:
        fail(f"the service's repo folder holds more than blobs/, refs/, snapshots/: {extra}")
    their_extra = sorted(set(os.listdir(repo_folder(hub_cache, repo_id))) - set(extra))
    print(f"ok  nothing else in the service's folder (huggingface_hub adds: {their_extra})")


def main():
    command, *paths = sys.argv[1:]
    with open(paths[-1]) as file:
        manifest = load(file)
    if command == "read":
        read(manifest)
    elif command == "download":
        download(manifest)
    elif command == "compare":
        compare(paths[0], paths[1], manifest)
    else:
        fail(f"unknown command {command}")


if __name__ == "__main__":
    main()
