# Sourced by the scripts that run on the GPU machine (gpu-check.sh, gpu-gan.sh): no Rust there,
# so the binaries scripts/build-cuda.sh packed travel xz-compressed, and CUDA's libraries come
# from the machine's PyTorch and its driver.

# gpu_unpack BUNDLE DEST NAME...: decompresses BUNDLE/NAME.xz into DEST/NAME, executable.
gpu_unpack() {
    local bundle=$1 dest=$2 f
    shift 2
    mkdir -p "$dest"
    for f in "$@"; do
        [ -f "$bundle/$f.xz" ] || { echo "$bundle/$f.xz is missing: run scripts/build-cuda.sh first" >&2; return 2; }
        python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
            "$bundle/$f.xz" "$dest/$f" || return 1
        chmod +x "$dest/$f"
    done
}

# CUDA's libraries from the Python packages PyTorch brought (nvidia/*/lib), then the driver's folder.
gpu_libraries() {
    local libs
    libs=$(python3 - <<'PY'
import glob, os, site
dirs = set()
for sp in site.getsitepackages() + [site.getusersitepackages()]:
    dirs.update(d for d in glob.glob(os.path.join(sp, "nvidia", "*", "lib")) if os.path.isdir(d))
print(":".join(sorted(dirs)))
PY
)
    export LD_LIBRARY_PATH="$libs:/usr/local/nvidia/lib64:/usr/local/nvidia/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
}
