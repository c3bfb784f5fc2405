#!/usr/bin/env bash
# The SDK on Arm, tested rather than assumed: builds mpox-sdk's unit tests (the NEON depthwise
# and matrix kernels against tract's own ops among them) and its logits checker for aarch64-unknown-linux-gnu
# and runs them under qemu-user. The checker compares the SDK's logits on Arm with what the
# trainer's candle networks computed on this host for the parity tests' networks, to 1e-5
# relative. Tools (qemu-user, the aarch64 gcc for linking, the Rust target) come from
# scripts/setup-bindings.sh. The Arm build uses the `arm-test` profile (workspace Cargo.toml),
# which compiles tract in two thirds of a release build's time.
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-gnu
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
# Code behind `cfg(target_arch = "aarch64")` compiles only here, so its warnings fail here.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-D warnings"
fixtures=target/arm-fixtures
rm -rf "$fixtures"
echo "test-arm: parity fixtures from the host's candle networks"
# From the workspace build (a no-op after CI's first step): `cargo run -p mpox-e2e` would
# rebuild tract and candle with that package's own feature set.
scripts/build-workspace --quiet
"$(scripts/build-workspace --dir)/examples/arm_fixtures" "$fixtures"
echo "test-arm: mpox-sdk unit tests on $target (qemu)"
cargo test --profile arm-test -p mpox-sdk --lib --target "$target"
echo "test-arm: SDK logits on $target against the host's candle logits (qemu)"
cargo run --profile arm-test -q -p mpox-sdk --example check_logits --target "$target" -- "$fixtures"
