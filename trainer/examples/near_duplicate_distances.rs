//! Measures perceptual-hash distances and aligned correlations on a dataset, to choose the
//! near-duplicate gate and confirmation level (`mpox_trainer::audit::DEFAULT_NEAR_THRESHOLD` and
//! `DEFAULT_MIN_CORRELATION` quote the figures this printed for MSID).
//!
//! `cargo run --release -p mpox-trainer --example near_duplicate_distances -- path/to/msid [MAX]`
//!
//! Prints the histogram of the hash distance (mirror images included) over every pair, then
//! every pair at or below MAX (default 18) with its correlation, highest first, so that the
//! pairs around any cut can be looked at.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let root = PathBuf::from(
        args.next()
            .ok_or("usage: near_duplicate_distances DATA [MAX]")?,
    );
    let max: u32 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(18);
    let ins = mpox_trainer::audit::inspect(&root, true)?;
    let items = &ins.dataset.items;
    let mut histogram = [0usize; 65];
    for a in 0..items.len() {
        for b in a + 1..items.len() {
            if let Some((d, _)) = ins.distance(a, b, true) {
                histogram[d as usize] += 1;
            }
        }
    }
    println!("distance\tpairs");
    for (d, n) in histogram.iter().enumerate().filter(|(_, n)| **n > 0) {
        println!("{d}\t{n}");
    }
    let mut close = ins.candidate_pairs(max, true);
    close.sort_by(|x, y| y.correlation.total_cmp(&x.correlation));
    println!("\ncorrelation\tdistance\tmirrored\ta\tb");
    for p in close {
        println!(
            "{:.3}\t{}\t{}\t{}\t{}",
            p.correlation, p.distance, p.mirrored, items[p.a].rel_path, items[p.b].rel_path
        );
    }
    Ok(())
}
