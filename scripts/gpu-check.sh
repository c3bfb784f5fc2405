#!/usr/bin/env bash
# The CUDA build checked on a GPU machine, in one prepared run of under 10 minutes:
#   (a) parity: every CUDA op against its CPU op (value and gradient), and one whole training
#       step of MobileNetV2 and ResNet-18 on CUDA against the CPU (loss and every gradient
#       within 1e-3 relative): the trainer's unit tests of ops::cuda;
#   (b) throughput of whole training steps (MobileNetV2-1.0 and ResNet-18 at 224 px, batch 64,
#       and the DCGAN step), candle-CUDA beside PyTorch-CUDA on the same networks;
#   (c) a short `fit` on CUDA and the same on the CPU (same photos, seed and settings), each
#       exported and evaluated through the SDK on the CPU, and `check` of the CUDA-trained
#       network against its exported file.
# Runs on the GPU machine from the repository root, with what scripts/build-cuda.sh packed into
# target/gpu-bundle (no Rust there); the machine's PyTorch provides cuBLAS, cuRAND, NVRTC and the
# CUDA runtime, its driver libcuda. With the project's device tool:
#   run(command="scripts/gpu-check.sh", carry=["target/gpu-bundle"], timeout_s=600)
# Writes gpu-check.md (the table and the verdicts) and its logs into $OUT (target/gpu-check when
# OUT is unset). Exit status 0 only when every part passed.
set -uo pipefail
cd "$(dirname "$0")/.."
bundle=target/gpu-bundle
out=${OUT:-target/gpu-check}
work=$(mktemp -d)
mkdir -p "$out"
report="$out/gpu-check.md"
status=0
note() { echo "$*" | tee -a "$report"; }
fail() { note "**FAILED**: $*"; status=1; }

# The binaries travel compressed; CUDA's libraries come from the machine (scripts/gpu-lib.sh).
. scripts/gpu-lib.sh
bin="$work/bin"
gpu_unpack "$bundle" "$bin" mpox-trainer trainer-tests train_step || exit 2
gpu_libraries

: >"$report"
note "# GPU check, $(date -u +%Y-%m-%d)"
note ""
note "- GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)"
note "- PyTorch: $(python3 -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)' 2>&1 | tail -1)"
for lib in libcuda.so.1 libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13; do
    found=""
    for d in ${LD_LIBRARY_PATH//:/ }; do
        [ -e "$d/$lib" ] && { found="$d"; break; }
    done
    [ -n "$found" ] || found=$(ldconfig -p | awk -v l="$lib" '$1 == l { print $NF; exit }')
    note "- $lib: ${found:-not found}"
done

note ""
note "## (a) CUDA against the CPU"
note ""
if timeout 240 "$bin/trainer-tests" --test-threads 1 ops::cuda:: >"$out/parity.log" 2>&1; then
    note "passed: $(grep -E '^test result' "$out/parity.log" | tail -1)"
else
    fail "parity tests (parity.log): $(grep -E '^test .* FAILED|panicked' "$out/parity.log" | head -5 | tr '\n' ' ')"
fi

note ""
note "## (b) Training-step throughput, candle-CUDA and PyTorch-CUDA"
note ""
rows=mnv2-all-224-64,resnet18-all-224-64,dcgan-64-64
MPOX_BENCH_DEVICE=cuda MPOX_BENCH_ONLY=$rows MPOX_BENCH_TSV="$work/candle.tsv" \
    timeout 180 "$bin/train_step" >"$out/bench.log" 2>&1 || fail "candle bench (bench.log)"
timeout 180 python3 scripts/torch_train_step.py --device cuda --only "$rows" \
    >"$work/torch.tsv" 2>>"$out/bench.log" || fail "PyTorch bench (bench.log)"
python3 - "$work/candle.tsv" "$work/torch.tsv" >>"$report" <<'EOF' || fail "bench table"
import sys
candle = {l.split("\t")[0]: l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()}
torch = {l.split("\t")[0]: float(l.split("\t")[1]) for l in open(sys.argv[2]) if l.strip()}
print("| step | input | batch | candle-CUDA s/step | PyTorch-CUDA s/step | candle throughput / PyTorch's |")
print("|---|---|---|---|---|---|")
worst = None
for key, (k, label, size, batch, s) in candle.items():
    t = torch.get(key)
    ratio = t / float(s) if t else None
    worst = ratio if worst is None or (ratio is not None and ratio < worst) else worst
    print(f"| {label} | {size} | {batch} | {float(s):.4f} | {t if t else 'n/a'} | "
          f"{f'{ratio:.2f}' if ratio else 'n/a'} |")
print()
print(f"lowest ratio: {worst:.2f} (target >= 0.5)" if worst else "no ratio")
EOF

note ""
note "## (c) fit on CUDA and on the CPU, evaluated through the SDK"
note ""
data="$work/data"
if [ -d "$bundle/data/train" ]; then
    # The carried photos at 128 px (PIL from the machine's Python).
    python3 - "$bundle/data" "$data" <<'EOF' || fail "resizing the photos"
import os, sys
from PIL import Image
src, dst = sys.argv[1:]
for root, _, names in os.walk(src):
    for n in names:
        out = os.path.join(dst, os.path.relpath(root, src), os.path.splitext(n)[0] + ".png")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        Image.open(os.path.join(root, n)).convert("RGB").resize((128, 128), Image.BICUBIC).save(out)
EOF
    note "photos: the bundle's ($(find "$data/train" -type f | wc -l) train, $(find "$data/test" -type f | wc -l) test, 128 px)"
else
    "$bin/mpox-trainer" synth --out "$data/train" --per-class 70 --size 128 >/dev/null &&
        "$bin/mpox-trainer" synth --out "$data/test" --per-class 30 --size 128 --seed 1 >/dev/null ||
        fail "synthetic photos"
    note "photos: synthetic (scripts/build-cuda.sh ran without --photos)"
fi
positive=$(ls "$data/train" | head -1)
for dev in cuda cpu; do
    start=$(date +%s)
    if timeout 150 "$bin/mpox-trainer" fit "$data/train" --positive "$positive" \
        --arch mobilenet_v2_w0.5 --input-size 96 --epochs 4 --seed 0 --device "$dev" \
        --min-calibration-photos 5 --out "$work/fit-$dev" >"$out/fit-$dev.log" 2>&1 &&
        "$bin/mpox-trainer" eval "$work/fit-$dev/model.onnx" "$data/test" --positive "$positive" \
            --json >"$work/eval-$dev.json" 2>>"$out/fit-$dev.log"; then
        note "- fit on $dev: $(( $(date +%s) - start )) s, then exported and evaluated on the CPU"
    else
        fail "fit or eval on $dev (fit-$dev.log)"
    fi
done
if [ -f "$work/fit-cuda/model.onnx" ]; then
    "$bin/mpox-trainer" check "$work/fit-cuda/model.onnx" --images "$data/test/$positive" \
        --checkpoint "$work/fit-cuda/best.safetensors" >>"$out/fit-cuda.log" 2>&1 &&
        note "- check: the CUDA-trained network and its exported file agree (fit-cuda.log)" ||
        fail "check of the CUDA-trained model (fit-cuda.log)"
fi
python3 - "$work/eval-cuda.json" "$work/eval-cpu.json" >>"$report" <<'EOF' || fail "the CUDA-trained model does not behave like the CPU-trained one"
import json, sys
cuda, cpu = (json.load(open(p))["binary"] for p in sys.argv[1:])
keys = [k for k in ("auc", "accuracy", "sensitivity", "specificity", "f1") if k in cuda and k in cpu]
print()
print("| metric (test photos, SDK on the CPU) | trained on CUDA | trained on the CPU |")
print("|---|---|---|")
for k in keys:
    print(f"| {k} | {cuda[k]:.3f} | {cpu[k]:.3f} |")
print()
# Training on two devices rounds differently, so the two runs drift apart; the same recipe must
# still give a model of the same quality.
gap = abs(cuda["auc"] - cpu["auc"])
print(f"AUC gap {gap:.3f} (allowed 0.1)")
sys.exit(0 if gap <= 0.1 else 1)
EOF
cp "$work"/*.tsv "$out"/ 2>/dev/null
rm -rf "$work"
note ""
[ "$status" = 0 ] && note "all parts passed" || note "some parts FAILED (see above)"
exit "$status"
