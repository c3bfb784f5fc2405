//! Replays the fuzz corpora on stable Rust, as CI does instead of fuzzing: every generated seed,
//! every committed corpus file (`fuzz/corpus/<target>/`) and every regression input
//! (`fuzz/regressions/<target>/`) goes through the same harness as the fuzz target and must give
//! `Ok` or a typed `mpox_sdk::Error`, never a panic.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use mpox_e2e::fuzz_seeds::{fixture_model, seeds};
use mpox_e2e::fuzzing::{self, Screener, TARGETS};
use mpox_e2e::workspace_root;

/// Per-target tally of a replay.
#[derive(Default)]
struct Tally {
    ok: usize,
    err: usize,
    failures: Vec<String>,
}

impl Tally {
    fn run(&mut self, target: &str, name: &str, screener: &Screener, data: &[u8]) {
        match catch_unwind(AssertUnwindSafe(|| fuzzing::run(target, screener, data))) {
            Ok(Ok(())) => self.ok += 1,
            Ok(Err(_)) => self.err += 1,
            Err(_) => self.failures.push(format!("{target}/{name}")),
        }
    }
}

/// The files of `dir`, sorted (none if it does not exist).
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<u8>)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| {
            let bytes = std::fs::read(e.path()).expect("readable corpus file");
            (e.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_corpus_and_regression_input_gives_ok_or_a_typed_error() {
    fuzzing::install_panic_hook();
    let screener = fuzzing::screener(&fixture_model());
    let fuzz = workspace_root().join("fuzz");
    let mut replayed = 0;
    let mut failures = Vec::new();
    for target in TARGETS {
        let mut tally = Tally::default();
        for seed in seeds().iter().filter(|s| s.target == target) {
            tally.run(
                target,
                &format!("seed {}", seed.name),
                &screener,
                &seed.bytes,
            );
        }
        for folder in ["corpus", "regressions"] {
            for (name, bytes) in files(&fuzz.join(folder).join(target)) {
                tally.run(target, &format!("{folder} {name}"), &screener, &bytes);
            }
        }
        eprintln!(
            "{target}: {} inputs, {} Ok, {} typed errors, {} panics",
            tally.ok + tally.err + tally.failures.len(),
            tally.ok,
            tally.err,
            tally.failures.len()
        );
        // Each target must replay something that the SDK accepts and something it refuses, or
        // the replay would prove little.
        assert!(
            tally.ok > 0 && tally.err > 0,
            "{target}: only Ok or only Err"
        );
        replayed += tally.ok + tally.err + tally.failures.len();
        failures.extend(tally.failures);
    }
    assert!(failures.is_empty(), "panicked on {failures:?}");
    assert!(replayed > 0);
}
