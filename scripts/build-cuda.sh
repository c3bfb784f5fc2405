#!/usr/bin/env bash
# Builds the trainer with CUDA (`--features cuda`) on a machine with no GPU and no CUDA toolkit,
# and packs what the GPU machine runs into target/gpu-bundle (scripts/gpu-check.sh).
#
# CUDA's compiler and headers come from PyPI, pinned to CUDA 13.0, into .tools/cuda (git-ignored):
#   nvidia-cuda-nvcc   nvcc, ptxas, fatbinary     nvidia-nvvm        cicc, libdevice
#   nvidia-cuda-crt    nvcc's own headers         nvidia-cuda-cccl   cub/thrust/libcu++ headers
#   nvidia-cuda-runtime  cuda_runtime.h, cuda_fp16.h, ..., and libcudart.so.13 (candle-kernels'
#                      MoE library links it)
# Not needed to build: cuBLAS, cuRAND, NVRTC and the driver. candle's cudarc is built with
# `dynamic-loading` (vendor/README.md), so it opens them with dlopen at run time; the GPU
# machine's PyTorch ships the first three and the driver is the machine's own.
#
# Compute capability 9.0 (H100/H200): candle's kernels and the trainer's own
# (trainer/src/ops/cuda/) are compiled to PTX for sm_90, which the driver compiles to machine code
# when the binary first loads them. The GPU machine's driver is the 580 series (CUDA 13.0) and a
# driver loads no PTX newer than its own CUDA version, which is why the compiler is pinned to 13.0
# (PTX ISA 9.0) rather than the newest on PyPI. CUDA_COMPUTE_CAP=NN picks another GPU.
#
# usage: scripts/build-cuda.sh [--photos DIR --positive CLASS]
#            build and pack target/gpu-bundle; with --photos, 200 photos of the ImageFolder DIR
#            (100 of CLASS, 100 of the others) go with it for the GPU check's short `fit`, split
#            70/30 into data/train and data/test; without, the check makes synthetic ones there
#        scripts/build-cuda.sh --check    `cargo check` of the cuda feature only; on success it
#            records the device code's hash in trainer/src/ops/cuda/checked.sha256 (commit it)
#        scripts/build-cuda.sh --ci       what CI runs: nothing when the device code still has the
#            recorded hash, else --check (candle's kernels alone took about 7 minutes of nvcc on 2
#            cores, which is why CI does not run it on every change; see docs/toolchain.md)
# The build has its own target folder (target/cuda): the CPU builds do not rebuild each other.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
mode=build
photos=""
positive=""
usage="usage: scripts/build-cuda.sh [--check | --ci | --photos DIR --positive CLASS]"
while [ $# -gt 0 ]; do
    case "$1" in
        --check) mode=check ;;
        --ci) mode=ci ;;
        --photos) photos=${2:?$usage}; shift ;;
        --positive) positive=${2:?$usage}; shift ;;
        *) echo "$usage" >&2; exit 2 ;;
    esac
    shift
done
if [ -n "$photos" ] && { [ -z "$positive" ] || [ ! -d "$photos/$positive" ]; }; then
    echo "build-cuda: --photos needs --positive naming one of its class folders" >&2
    exit 2
fi

# The device code: what the `cuda` feature compiles differently (every file that mentions it, the
# ops and their kernels), the build scripts and manifests, and the locked dependencies.
stamp=trainer/src/ops/cuda/checked.sha256
device_code_hash() {
    { git ls-files --cached --others --exclude-standard -- trainer/build.rs trainer/Cargo.toml \
        trainer/src/ops Cargo.toml Cargo.lock vendor/candle-core/Cargo.toml scripts/build-cuda.sh
      git grep -l --untracked 'feature = "cuda"' -- trainer; } |
        grep -v -x "$stamp" | sort -u | xargs sha256sum | sha256sum | cut -d' ' -f1
}
if [ "$mode" = ci ]; then
    if [ "$(device_code_hash)" = "$(cat "$stamp" 2>/dev/null)" ]; then
        echo "build-cuda: the device code is as it was at the last CUDA check ($stamp): nothing to do"
        exit 0
    fi
    echo "build-cuda: the device code changed since the last CUDA check: checking the cuda feature"
    mode=check
fi

pins=(nvidia-cuda-nvcc==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-crt==13.0.88
    nvidia-cuda-cccl==13.0.85 nvidia-nvvm==13.0.88)
tools="$root/.tools/cuda"
cuda="$tools/nvidia/cu13"
if [ "$(cat "$tools/.pins" 2>/dev/null)" != "${pins[*]}" ]; then
    echo "build-cuda: installing CUDA 13.0's compiler and headers from PyPI into .tools/cuda"
    rm -rf "$tools"
    python3 -m pip install -q --disable-pip-version-check --no-deps --target "$tools" "${pins[@]}"
    echo "${pins[*]}" >"$tools/.pins"
fi
# The linker looks for libcudart.so; the wheel has only the versioned name.
ln -sf libcudart.so.13 "$cuda/lib/libcudart.so"

export PATH="$cuda/bin:$PATH" NVCC="$cuda/bin/nvcc"
# nvcc.profile looks for headers under targets/x86_64-linux/include, where a full toolkit keeps
# them; the wheels put them in include/.
export NVCC_APPEND_FLAGS="-I$cuda/include -isystem $cuda/include/cccl"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}" CUDARC_CUDA_VERSION=13000
export LIBRARY_PATH="$cuda/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
export CARGO_TARGET_DIR="$root/target/cuda"
# On a fresh clone the folder is not there yet, and the build writes its messages into it.
mkdir -p "$CARGO_TARGET_DIR"

if [ "$mode" = check ]; then
    cargo check -p mpox-trainer --features cuda --lib --bins --tests --benches
    # The PTX of the trainer's kernels assembled for the target too: what the driver would do.
    ptx=$(ls -t "$CARGO_TARGET_DIR"/debug/build/mpox-trainer-*/out/ops.ptx | head -1)
    ptxas -arch="sm_$CUDA_COMPUTE_CAP" "$ptx" -o /dev/null
    device_code_hash >"$stamp"
    echo "build-cuda: the cuda feature checks; recorded in $stamp"
    exit 0
fi

# The binaries the GPU machine runs: the trainer, its unit tests (the CUDA ops against the CPU
# ops) and the training-step bench. Their paths come from cargo's JSON messages.
cargo build --release -p mpox-trainer --features cuda --lib --bins --tests --benches \
    --message-format=json-render-diagnostics >"$CARGO_TARGET_DIR/build-messages.json"
bundle="$root/target/gpu-bundle"
rm -rf "$bundle"
mkdir -p "$bundle"
python3 - "$CARGO_TARGET_DIR/build-messages.json" "$bundle" <<'EOF'
import json, shutil, subprocess, sys
messages, bundle = sys.argv[1], sys.argv[2]
wanted = {("bin", "mpox-trainer", False): "mpox-trainer",
          ("lib", "mpox_trainer", True): "trainer-tests",
          ("bench", "train_step", False): "train_step"}
found = {}
for line in open(messages):
    m = json.loads(line)
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    kind = m["target"]["kind"][0]
    key = (kind, m["target"]["name"].replace("-", "_") if kind == "lib" else m["target"]["name"],
           m["profile"]["test"] and kind != "bench")
    if key in wanted:
        found[wanted[key]] = m["executable"]
missing = sorted(set(wanted.values()) - set(found))
if missing:
    sys.exit(f"build-cuda: cargo built no {missing}")
for name, path in found.items():
    # Stripped and compressed: the device tool carries at most 64 MiB, and each binary is about
    # 85 MB stripped (candle's kernels: 33 MB of machine code for its quantised-matrix library,
    # PTX for the rest), 10 to 13 MB in xz.
    subprocess.run(["strip", "-o", f"{bundle}/{name}", path], check=True)
    subprocess.run(["xz", "-T0", "-6", f"{bundle}/{name}"], check=True)
EOF
if [ -n "$photos" ]; then
    python3 - "$photos" "$positive" "$bundle/data" <<'EOF'
import os, shutil, sys
src, positive, dst = sys.argv[1:]
exts = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
def files(d):
    return sorted(os.path.join(d, f) for f in os.listdir(d) if f.lower().endswith(exts))
def spread(paths, n):
    # Evenly over the sorted names, so every source's photos take part.
    return [paths[i * len(paths) // n] for i in range(min(n, len(paths)))]
pos = spread(files(os.path.join(src, positive)), 100)
others = [files(os.path.join(src, c)) for c in sorted(os.listdir(src))
          if c != positive and os.path.isdir(os.path.join(src, c))]
neg = spread([p for group in zip(*others) for p in group] if others else [], 100)
for label, chosen in (("mpox", pos), ("not_mpox", neg)):
    for i, p in enumerate(chosen):
        part = "test" if i % 10 >= 7 else "train"
        os.makedirs(os.path.join(dst, part, label), exist_ok=True)
        shutil.copy(p, os.path.join(dst, part, label, f"{i:03d}{os.path.splitext(p)[1].lower()}"))
print(f"build-cuda: {len(pos)} + {len(neg)} photos for the GPU check's fit in {dst}")
EOF
fi
ls -l "$bundle"
size=$(du -sm "$bundle" | cut -f1)
echo "build-cuda: target/gpu-bundle is $size MiB (the device tool carries 64 MiB with the repository)"
[ "$size" -le 58 ] || echo "build-cuda: warning: that leaves too little room; pass fewer photos" >&2
echo "build-cuda: the CUDA build is in target/cuda, the GPU machine's bundle in target/gpu-bundle"
