#!/usr/bin/env bash
# Tests the uniffi bindings on this host, end to end:
#   1. builds the workspace (scripts/build-workspace, target/ci): the library, the `reference` example,
#      uniffi-bindgen and the trainer;
#   2. fails when the committed generated bindings are stale (scripts/gen-bindings.sh --check);
#   3. strips a copy of the cdylib (what apps ship) and prints its size;
#   4. makes the fixtures: a ResNet-18 test model (random seeded weights, 64 px), synthetic photos,
#      the Rust SDK's results for them (reference.tsv), and the model signed with a fresh key;
#   5. runs the Python tests (pytest) and the Kotlin tests (kotlinc + JUnit 4 on the JVM, JNA)
#      against the stripped library, printing the max difference to the Rust numbers;
#   6. checks the library for the phones, aarch64-linux-android and aarch64-apple-ios (no NDK
#      or Xcode: the host clang assembles tract's arm64 kernels).
# Run scripts/setup-bindings.sh once first. Needs no network.
# usage: [MPOX_TRAINER=path/to/mpox-trainer] scripts/test-bindings.sh [--skip-mobile]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
skip_mobile=0
[ "${1:-}" = "--skip-mobile" ] && skip_mobile=1

kotlinc="$root/.tools/kotlin/node_modules/kotlin-compiler/bin/kotlinc"
for need in "$kotlinc" /usr/share/java/jna.jar /usr/share/java/junit4.jar; do
    [ -e "$need" ] || { echo "test-bindings: $need is missing: run scripts/setup-bindings.sh" >&2; exit 1; }
done
hamcrest=/usr/share/java/hamcrest-core.jar
[ -e "$hamcrest" ] || hamcrest=/usr/share/java/hamcrest.jar

step() { echo; echo "== test-bindings: $*"; }

step "build (release)"
# One build of the whole workspace, as CI does first anyway: building single packages would
# resolve features differently (uniffi's `cli` lives only in uniffi-bindgen) and rebuild shared
# dependencies. It gives the cdylib, the `reference` example, uniffi-bindgen and the trainer.
# MPOX_TRAINER=path uses an already built trainer and builds only the bindings' packages
# (for work on the bindings while the trainer crate does not compile; that feature set differs
# from the workspace's, so the first such build recompiles tract once).
if [ -z "${MPOX_TRAINER:-}" ]; then
    scripts/build-workspace
else
    cargo build --profile ci -p mpox-bindings --lib --examples
fi
# The bindgen CLI only writes source files: unoptimised is plenty, and much quicker to build.
cargo build --profile fast -p uniffi-bindgen
out=$(scripts/build-workspace --dir)
lib="$out/libmpoxscreen.so"

step "generated bindings are up to date"
scripts/gen-bindings.sh --check --no-build --lib "$lib"

fixtures="$root/target/bindings-test"
rm -rf "$fixtures"
mkdir -p "$fixtures/lib"

step "stripped cdylib size"
strip -o "$fixtures/lib/libmpoxscreen.so" "$lib"
unstripped=$(stat -c %s "$lib")
stripped=$(stat -c %s "$fixtures/lib/libmpoxscreen.so")
awk -v s="$stripped" -v u="$unstripped" 'BEGIN { printf "libmpoxscreen.so (x86_64): %d bytes = %.2f MiB stripped (%.1f MiB with line tables)\n", s, s / 1048576, u / 1048576 }'

step "fixtures: test model, photos, Rust reference"
trainer="${MPOX_TRAINER:-$out/mpox-trainer}"
"$trainer" export --arch resnet18 --input-size 64 --out "$fixtures/model.onnx"
"$trainer" export --arch mobilenet_v2_w0.35 --input-size 96 --out "$fixtures/small.onnx"
"$trainer" synth --out "$fixtures/photos" --per-class 4 --size 128
# Signing: the test model signed with one key; a second key the tests do not trust.
"$trainer" keygen "$fixtures/release" >/dev/null
"$trainer" keygen "$fixtures/stranger" >/dev/null
"$trainer" sign "$fixtures/model.onnx" --key "$fixtures/release.key" --out "$fixtures/signed.onnx"
"$out/examples/reference" tsv "$fixtures/model.onnx" "$fixtures"/photos/*/*.png >"$fixtures/reference.tsv"
echo "reference.tsv: $(wc -l <"$fixtures/reference.tsv") photos screened by the Rust SDK"
export MPOX_BINDINGS_FIXTURES="$fixtures"

step "Python (pytest)"
cp "$fixtures/lib/libmpoxscreen.so" bindings/python/mpoxscreen/libmpoxscreen.so
python3 -m pytest -q -s -p no:cacheprovider bindings/python/tests

step "Kotlin on the JVM (kotlinc + JUnit 4 + JNA)"
cp_jars="/usr/share/java/jna.jar:/usr/share/java/junit4.jar:$hamcrest"
kt_out="$fixtures/kotlin"
mkdir -p "$kt_out"
"$kotlinc" -nowarn -jvm-target 17 -cp "$cp_jars" -d "$kt_out/tests.jar" \
    android/mpoxscreen/src/main/kotlin/org/mpoxscreen/mpoxscreen.kt \
    android/mpoxscreen/src/test/kotlin/org/mpoxscreen/ScreenerTest.kt 2>&1 | grep -v "^warning:" || true
[ -f "$kt_out/tests.jar" ] || { echo "test-bindings: kotlinc failed" >&2; exit 1; }
kotlin_stdlib="$root/.tools/kotlin/node_modules/kotlin-compiler/lib/kotlin-stdlib.jar"
java -Djna.library.path="$fixtures/lib" -cp "$kt_out/tests.jar:$cp_jars:$kotlin_stdlib" \
    org.junit.runner.JUnitCore org.mpoxscreen.ScreenerTest

if [ "$skip_mobile" = 0 ]; then
    step "phone targets (the library checked for Android and iOS)"
    # tract-linalg assembles its arm64 kernels with a C compiler in its build script, which
    # `cargo check` runs too: the host's clang with a --target stands in for the NDK's and
    # Xcode's (nothing is linked, so no sysroot is needed; cc-rs wants SDKROOT to name an
    # existing folder on Apple targets instead of asking xcrun). A check, not a build: the
    # aarch64 code itself is compiled and run by scripts/test-arm.sh, and two unoptimised builds
    # of tract for the phones cost CI minutes that its 45-minute limit no longer had.
    # scripts/build-android-bindings.sh and ios/build-xcframework.sh build what apps ship.
    mkdir -p "$root/target/apple-sdk-stub"
    for target in aarch64-linux-android aarch64-apple-ios; do
        t=${target//-/_}
        case "$target" in
            *android*) extra=("CFLAGS_$t=--target=aarch64-linux-android24") ;;
            *ios*) extra=("CFLAGS_$t=--target=arm64-apple-ios13.0" SDKROOT="$root/target/apple-sdk-stub") ;;
        esac
        env "CC_$t=clang" "AR_$t=llvm-ar" "${extra[@]}" \
            cargo check --profile fast -p mpox-bindings --lib --target "$target"
        echo "$target: mpox-bindings checked"
    done
fi

step "all binding tests passed"
