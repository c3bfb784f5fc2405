//! What the fuzz targets share: the harness bodies (the tests crate's `fuzzing` module, the same
//! file the stable replay test runs) and the fixture model the screening targets load.

#[path = "../../tests/src/fuzzing.rs"]
pub mod fuzzing;

/// The fixture model of the screening targets: `$MPOX_FUZZ_MODEL`, else `fixtures/model.onnx`
/// here, which `scripts/fuzz` writes (`cargo run -p mpox-e2e --example fuzz_seeds`).
///
/// # Panics
/// If the file is missing or not a model: nothing can be screened without one.
pub fn fixture_screener() -> fuzzing::Screener {
    let path = std::env::var_os("MPOX_FUZZ_MODEL")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/model.onnx")
        });
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read the fuzz fixture model {}: {e} (scripts/fuzz generates it)",
            path.display()
        )
    });
    fuzzing::screener(&bytes)
}
