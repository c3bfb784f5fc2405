#!/usr/bin/env bash
# Per-call overhead of Screener.screen() through the bindings: the same model and photo screened
# CALLS times directly in Rust (mpox_sdk), from Python (ctypes) and from Kotlin on the JVM (JNA),
# plus a near-empty call (screen(empty bytes) -> ImageEmpty error) that isolates the FFI cost.
# Prints figures, asserts nothing. Run scripts/test-bindings.sh first (it builds the library and
# makes the fixtures in target/bindings-test). The figures in bindings/README.md come from here.
# Runs ROUNDS rounds (Rust, Python, Kotlin in turn) so that load from other processes shows up
# as spread between rounds; take the lowest median of each line.
# usage: scripts/bench-bindings.sh [CALLS [ROUNDS]]   (default 300 calls, 3 rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
calls=${1:-300}
rounds=${2:-3}
fixtures="$root/target/bindings-test"
model="$fixtures/small.onnx"
photo=$(ls "$fixtures"/photos/mpox/*.png | head -1)
[ -f "$model" ] && [ -f "$fixtures/lib/libmpoxscreen.so" ] || {
    echo "bench-bindings: run scripts/test-bindings.sh first (fixtures missing)" >&2
    exit 1
}
kotlinc="$root/.tools/kotlin/node_modules/kotlin-compiler/bin/kotlinc"
cp_jars=/usr/share/java/jna.jar
stdlib="$root/.tools/kotlin/node_modules/kotlin-compiler/lib/kotlin-stdlib.jar"

echo "model: $model (mobilenet_v2_w0.35, 96 px); photo: $photo ($(stat -c %s "$photo") bytes); heatmap off"
echo "machine: $(nproc) cores, $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"

cp "$fixtures/lib/libmpoxscreen.so" bindings/python/mpoxscreen/libmpoxscreen.so
mkdir -p "$fixtures/kotlin"
if [ ! -f "$fixtures/kotlin/bench.jar" ] || [ bindings/bench/Bench.kt -nt "$fixtures/kotlin/bench.jar" ] \
    || [ android/mpoxscreen/src/main/kotlin/org/mpoxscreen/mpoxscreen.kt -nt "$fixtures/kotlin/bench.jar" ]; then
    "$kotlinc" -nowarn -jvm-target 17 -cp "$cp_jars" -d "$fixtures/kotlin/bench.jar" \
        android/mpoxscreen/src/main/kotlin/org/mpoxscreen/mpoxscreen.kt bindings/bench/Bench.kt
fi

for round in $(seq "$rounds"); do
    echo "-- round $round (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
    "$root/target/release/examples/reference" bench "$model" "$photo" "$calls"
    PYTHONPATH="$root/bindings/python" python3 bindings/bench/bench.py "$model" "$photo" "$calls"
    java -Djna.library.path="$fixtures/lib" -cp "$fixtures/kotlin/bench.jar:$cp_jars:$stdlib" \
        org.mpoxscreen.bench.BenchKt "$model" "$photo" "$calls"
done
