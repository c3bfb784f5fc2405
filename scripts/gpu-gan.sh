#!/usr/bin/env bash
# The GAN of every fold trained on a GPU machine, all folds at once, for `ablate` (or
# `pipeline --gan`) to use here: on the 2-core CPU machines a fold's GAN takes about 33 minutes.
# The GPU machine has no Rust and no dataset, so the trainer travels from scripts/build-cuda.sh and
# each fold's training photos travel as a pack (`mpox-trainer gan pack`), each photo once.
#
#   scripts/gpu-gan.sh prepare DATA SPLIT CLASS RATIO [GAN OPTIONS...]
#       here, after scripts/build-cuda.sh: packs every fold of SPLIT (ablate's: `mpox-trainer
#       split` with ablate's folds, seed, positive and negatives) into target/gpu-gan, with
#       the trainer, the projected discriminator's features (--gan-features FILE, required) and
#       the other options, which must be those `ablate` is given. RATIO: generated photos per training photo (ablate
#       samples for its largest ratio, 2 by default).
#   scripts/gpu-gan.sh run [MINUTES [OPTIONS...]]
#       on the GPU machine, from the repository root (device tool: carry target/gpu-gan): trains
#       every fold's GAN on CUDA in parallel for at most MINUTES (default 7) (with OPTIONS, also
#       a second GAN of fold 0 with them added, as fold-0-variant, to compare), samples each as
#       `ablate` would (seed = fold), and writes into $OUT gpu-gan.md and fold-K.tar
#       (photos, log, plots and the generator). The CUDA ops' parity tests
#       run beside (parity.log).
#   scripts/gpu-gan.sh adopt FILES OUT
#       here: unpacks FILES/fold-K.tar into OUT/gan/fold-K, where `ablate ... --out OUT` takes
#       the generated photos as they are (the checkpoints stay on the GPU machine: they are
#       larger than the device tool brings back).
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: scripts/gpu-gan.sh prepare DATA SPLIT CLASS RATIO [GAN OPTIONS...] | run [MINUTES] | adopt FILES OUT"
# GPU_GAN_BUNDLE and GPU_GAN_DEVICE=cpu let the whole round trip be tried here first.
bundle=${GPU_GAN_BUNDLE:-target/gpu-gan}
device=${GPU_GAN_DEVICE:-cuda}
mode=${1:-}
shift || true

case "$mode" in
prepare)
    [ $# -ge 4 ] || { echo "$usage" >&2; exit 2; }
    data=$1 split=$2 class=$3 ratio=$4
    shift 4
    trainer=target/cuda/release/mpox-trainer
    # The CUDA build links the CUDA runtime that scripts/build-cuda.sh installed.
    export LD_LIBRARY_PATH="$PWD/.tools/cuda/nvidia/cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    [ -x "$trainer" ] && [ -f target/gpu-bundle/mpox-trainer.xz ] ||
        { echo "gpu-gan: run scripts/build-cuda.sh first" >&2; exit 2; }
    features=imagenet
    options=()
    while [ $# -gt 0 ]; do
        if [ "$1" = --gan-features ]; then features=$2; shift 2; else options+=("$1"); shift; fi
    done
    rm -rf "$bundle"
    mkdir -p "$bundle/packs"
    folds=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["folds"])' "$split")
    for ((k = 0; k < folds; k++)); do
        "$trainer" gan pack "$data" --class "$class" --split "$split" --fold "$k" --out "$bundle/packs/fold-$k"
    done
    # Each photo once (the folds' training parts overlap), named by its hash.
    python3 - "$bundle" <<'EOF'
import json, os, sys
bundle = sys.argv[1]
pool = os.path.join(bundle, "pool")
os.makedirs(pool, exist_ok=True)
for fold in sorted(os.listdir(os.path.join(bundle, "packs"))):
    pack = os.path.join(bundle, "packs", fold)
    m = json.load(open(os.path.join(pack, "gan-pack.json")))
    for p in m["photos"]:
        src = os.path.join(pack, m["class"], p["file"])
        dst = os.path.join(pool, p["sha256"])
        if os.path.exists(dst):
            os.remove(src)
        else:
            os.rename(src, dst)
    os.rmdir(os.path.join(pack, m["class"]))
EOF
    cp target/gpu-bundle/mpox-trainer.xz target/gpu-bundle/trainer-tests.xz "$bundle/"
    [ "$features" != imagenet ] ||
        { echo "gpu-gan: pass --gan-features FILE (the weights travel with the photos)" >&2; exit 2; }
    cp "$features" "$bundle/features.safetensors"
    printf '%s\n' "$class" "$ratio" "${options[@]}" >"$bundle/settings"
    du -sh "$bundle"
    echo "gpu-gan: prepared $folds folds in $bundle; on the GPU machine: scripts/gpu-gan.sh run"
    ;;
run)
    # A failing fold or test is reported, and the others' results still come back.
    set +e
    minutes=${1:-7}
    shift || true
    variant=("$@")
    out=${OUT:-target/gpu-gan-out}
    mkdir -p "$out"
    . scripts/gpu-lib.sh
    work=$(mktemp -d)
    gpu_unpack "$bundle" "$work/bin" mpox-trainer
    gpu_libraries
    mapfile -t settings <"$bundle/settings"
    class=${settings[0]} ratio=${settings[1]}
    options=("${settings[@]:2}")
    report="$out/gpu-gan.md"
    {
        echo "# GAN folds on the GPU machine, $(date -u '+%Y-%m-%d %H:%M UTC')"
        echo
        echo "- GPU: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1 | head -1)"
        echo "- options: ${options[*]:-(defaults)}; photos per training photo: $ratio"
        echo
    } >"$report"
    # The packs again, from the pool.
    python3 - "$bundle" "$work" <<'EOF'
import json, os, shutil, sys
bundle, work = sys.argv[1:]
for fold in sorted(os.listdir(os.path.join(bundle, "packs"))):
    m = json.load(open(os.path.join(bundle, "packs", fold, "gan-pack.json")))
    d = os.path.join(work, "packs", fold, m["class"])
    os.makedirs(d)
    for p in m["photos"]:
        os.link(os.path.join(bundle, "pool", p["sha256"]), os.path.join(d, p["file"]))
    shutil.copy(os.path.join(bundle, "packs", fold, "gan-pack.json"), os.path.dirname(d))
EOF
    deadline=$(($(date +%s) + minutes * 60))
    runs=("$work"/packs/fold-*)
    [ ${#variant[@]} = 0 ] || runs+=("$work/packs/fold-0:variant")
    for run in "${runs[@]}"; do
        pack=${run%:variant}
        fold=$(basename "$pack")
        k=${fold#fold-}
        extra=()
        if [ "$run" != "$pack" ]; then fold="$fold-variant"; extra=("${variant[@]}"); fi
        mkdir -p "$work/$fold"
        (
            log="$work/$fold/train.log"
            start=$(date +%s)
            timeout $((deadline - start)) "$work/bin/mpox-trainer" gan train "$pack" --class "$class" \
                --gan-features "$bundle/features.safetensors" --device "$device" --resume \
                "${options[@]}" "${extra[@]}" --out "$work/$fold" >"$log" 2>&1
            rc=$?
            took=$(($(date +%s) - start))
            steps=$(tail -n +2 "$work/$fold/log.csv" 2>/dev/null | wc -l)
            photos=$(python3 -c 'import json, sys; print(len(json.load(open(sys.argv[1]))["photos"]))' "$pack/gan-pack.json")
            n=$(python3 -c 'import math, sys; print(math.ceil(int(sys.argv[1]) * float(sys.argv[2])))' "$photos" "$ratio")
            echo "- $fold: exit $rc, $steps steps in $took s ($(python3 -c "print(f'{$took / max($steps, 1):.3f}')") s a step, all folds at once), $photos photos" >>"$report"
            if [ "$rc" = 0 ]; then
                # The pack is the fold's training photos, which --select-from picks by.
                "$work/bin/mpox-trainer" gan sample --checkpoint "$work/$fold/gan.safetensors" \
                    --n "$n" --seed "$k" --data "$pack" --weights "$bundle/features.safetensors" \
                    --out "$work/$fold/samples" >>"$log" 2>&1 ||
                    echo "- $fold: sampling failed (train.log)" >>"$report"
            fi
        ) &
    done
    if [ -f "$bundle/trainer-tests.xz" ]; then
        # The CUDA ops against the CPU ones beside the training (scripts/gpu-check.sh's part a).
        gpu_unpack "$bundle" "$work/bin" trainer-tests
        timeout 240 "$work/bin/trainer-tests" --test-threads 1 ops::cuda:: >"$out/parity.log" 2>&1
        echo "- CUDA ops against the CPU (parity.log): exit $?, $(grep -E '^test result' "$out/parity.log" | tail -1)" >>"$report"
    fi
    wait
    # The whole checkpoint (both networks and their optimisers, 30 MiB) is larger than the device
    # tool brings back for five folds; the generator (the moving average, 7 MiB, with the run's
    # state) goes in each fold's tar as generator.safetensors, for `gan sample` here.
    for dir in "$work"/fold-*/; do
        [ -f "$dir/gan.safetensors" ] || continue
        python3 - "$dir/gan.safetensors" "$dir/generator.safetensors" <<'EOF' >>"$report"
import json, os, struct, sys
src, dst = sys.argv[1:]
raw = open(src, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
data = raw[8 + n:]
keep = {"__metadata__": header.get("__metadata__", {})}
chunks, offset = [], 0
for name, t in header.items():
    if name == "__metadata__" or not name.startswith("ema."):
        continue
    a, b = t["data_offsets"]
    chunks.append(data[a:b])
    keep[name] = dict(t, data_offsets=[offset, offset + b - a])
    offset += b - a
h = json.dumps(keep).encode()
h += b" " * (-len(h) % 8)
open(dst, "wb").write(struct.pack("<Q", len(h)) + h + b"".join(chunks))
print(f"- generator of {os.path.basename(os.path.dirname(os.path.normpath(src)))}: {len(keep) - 1} tensors, {offset / 2**20:.1f} MiB (whole checkpoint {len(raw) / 2**20:.1f} MiB)")
EOF
    done
    [ ${#variant[@]} = 0 ] || echo "- fold-0-variant: ${variant[*]} added" >>"$report"
    for dir in "$work"/fold-*/; do
        fold=$(basename "$dir")
        { echo; echo "### $fold"; echo '```'; tail -n 6 "$dir/train.log"; echo '```'; } >>"$report"
        (cd "$dir" && tar cf "$out/$fold.tar" --ignore-failed-read samples log.csv losses.png scores.png \
            train.log generator.safetensors $(ls samples-*.png 2>/dev/null | tail -1)) 2>/dev/null
    done
    cat "$report"
    ;;
adopt)
    [ $# -eq 2 ] || { echo "$usage" >&2; exit 2; }
    files=$1 out=$2
    for tarball in "$files"/fold-*.tar; do
        fold=$(basename "$tarball" .tar)
        [[ $fold =~ ^fold-[0-9]+$ ]] || continue
        dest="$out/gan/$fold"
        if [ -e "$dest/samples" ]; then
            echo "gpu-gan: $dest/samples exists: left as it is" >&2
            continue
        fi
        mkdir -p "$dest"
        tar xf "$tarball" -C "$dest"
        echo "gpu-gan: $tarball → $dest"
    done
    ;;
*)
    echo "$usage" >&2
    exit 2
    ;;
esac
