#!/usr/bin/env bash
# Training steps of the trainer beside PyTorch-CPU on the same networks, inputs and batches, in one
# run, with the ratio column (candle / PyTorch). Not part of CI: PyTorch from PyPI is gigabytes.
#
#   scripts/bench-vs-pytorch.sh [--quick] [--threads N]
#
# - PyTorch and torchvision go into a scratch virtual environment under target/ (made once).
# - The trainer's side is `cargo bench -p mpox-trainer --bench train_step` with its default
#   thread settings (what `fit` uses); PyTorch runs with as many threads as the machine has cores
#   (or --threads).
# - Both sides report the best of 3 timed repetitions after a warm-up (--quick: 1).
# - The two sides run one after the other, never at the same time, row by row (the trainer's row,
#   then PyTorch's); the machine should otherwise be idle.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
threads=$(nproc)
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1 ;;
        --threads) threads="$2"; shift ;;
        *) echo "usage: $0 [--quick] [--threads N]" >&2; exit 2 ;;
    esac
    shift
done
reps=3
[ "$quick" = 1 ] && reps=1

venv=target/bench-vs-pytorch/venv
if ! "$venv/bin/python" -c 'import torch, torchvision' >/dev/null 2>&1; then
    echo "bench-vs-pytorch: installing torch and torchvision into $venv (once)" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check torch torchvision
fi

out=target/bench-vs-pytorch
mkdir -p "$out"
# Build first, so that compiling never runs beside a timing.
cargo bench -p mpox-trainer --bench train_step --no-run
keys="mnv2-last5-224-16 mnv2-all-224-16 mnv2-all-112-16 resnet18-all-112-16 resnet18-all-224-16"
keys="$keys dcgan-64-64 dcgan-64-32 mnv2-cache-224-32"
# Row by row, the trainer then PyTorch: on a shared virtual machine whose speed drifts by tens of
# percent over minutes, both sides of a row then see the same machine.
# Absolute: cargo runs benches in the package's folder.
: >"$out/candle.tsv"
: >"$out/torch.tsv"
[ "$quick" = 1 ] && export MPOX_BENCH_QUICK=1
for key in $keys; do
    MPOX_BENCH_ONLY="$key" MPOX_BENCH_TSV="$PWD/$out/candle.row.tsv" \
        cargo bench --quiet -p mpox-trainer --bench train_step
    cat "$out/candle.row.tsv" >>"$out/candle.tsv"
    "$venv/bin/python" scripts/torch_train_step.py --threads "$threads" --reps "$reps" \
        --only "$key" >>"$out/torch.tsv"
done
rm -f "$out/candle.row.tsv"

torch_version=$("$venv/bin/python" -c 'import torch; print(torch.__version__)')
echo
echo "Training step, seconds (best of $reps): the trainer (candle) beside PyTorch $torch_version"
echo "with $threads threads, $(nproc) cores, $(date -u +%Y-%m-%d)."
echo
echo "| step | input | batch | candle s/step | PyTorch s/step | ratio |"
echo "|---|---|---|---|---|---|"
# candle.tsv: key, label, input, batch, seconds; torch.tsv: key, seconds.
awk -F'\t' 'NR == FNR { torch[$1] = $2; next }
    { t = torch[$1]; r = (t > 0) ? sprintf("%.2f", $5 / t) : "n/a";
      printf "| %s | %s | %s | %.3f | %s | %s |\n", $2, $3, $4, $5, (t > 0) ? sprintf("%.3f", t) : "n/a", r }' \
    "$out/torch.tsv" "$out/candle.tsv"
