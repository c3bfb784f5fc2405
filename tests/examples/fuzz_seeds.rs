//! Writes the fuzzing fixture model and seed corpora: `cargo run --release -p mpox-e2e --example
//! fuzz_seeds -- fuzz/` (scripts/fuzz runs it when they are missing).

fn main() {
    let dir = std::env::args_os()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| mpox_e2e::workspace_root().join("fuzz"));
    match mpox_e2e::fuzz_seeds::write_all(&dir) {
        Ok(n) => println!(
            "wrote the fixture model and {n} seeds under {}",
            dir.display()
        ),
        Err(e) => {
            eprintln!("fuzz_seeds: cannot write under {}: {e}", dir.display());
            std::process::exit(1);
        }
    }
}
