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
# - The two sides run one after the other, never at the same time; the machine should otherwise
#   be idle.
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
# The trainer first, so that its build does not run beside PyTorch's timings.
# Absolute: cargo runs benches in the package's folder.
export MPOX_BENCH_TSV="$PWD/$out/candle.tsv"
[ "$quick" = 1 ] && export MPOX_BENCH_QUICK=1
cargo bench -p mpox-trainer --bench train_step
unset MPOX_BENCH_TSV
"$venv/bin/python" scripts/torch_train_step.py --threads "$threads" --reps "$reps" >"$out/torch.tsv"

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
