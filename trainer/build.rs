//! Compiles the CUDA kernels of the custom ops (`src/ops/cuda/kernels.cu`): for the host in every
//! build (`emulate.cpp`: each block one thread, for the unit tests of `ops/cuda_host.rs`, which
//! check the kernels' arithmetic on machines without a GPU), and to PTX in builds with the
//! `cuda` feature.
//!
//! `nvcc` comes from `$NVCC` or the `PATH` (scripts/build-cuda.sh installs CUDA 13.0's from
//! PyPI), the target from `$CUDA_COMPUTE_CAP` (default 90: H100/H200), as for candle's kernels.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let source = "src/ops/cuda/kernels.cu";
    let host = "src/ops/cuda/emulate.cpp";
    println!("cargo::rerun-if-changed={source}");
    println!("cargo::rerun-if-changed={host}");
    println!("cargo::rerun-if-env-changed=NVCC");
    println!("cargo::rerun-if-env-changed=CUDA_COMPUTE_CAP");
    // Unreferenced outside the unit tests, so the linker leaves it out of the binaries.
    cc::Build::new()
        .cpp(true)
        .file(host)
        .flag_if_supported("-std=c++17")
        .warnings(true)
        .compile("mpox_kernels_host");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into());
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("ops.ptx");
    let status = Command::new(&nvcc)
        .args(["--ptx", "-O3", "-std=c++17", "-gencode"])
        .arg(format!("arch=compute_{cap},code=sm_{cap}"))
        .arg("-o")
        .arg(&out)
        .arg(source)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("{nvcc} failed on {source} ({s})"),
        Err(e) => panic!(
            "cannot run {nvcc} ({e}): the `cuda` feature needs CUDA's compiler, \
             which scripts/build-cuda.sh installs and puts on the PATH"
        ),
    }
}
