//! Where an SDK inference spends its time: the optimised plan of each benchmark model timed node
//! by node (`Screener::profile`), one thread, 224 px, summed per kind of operation.
//!
//! `cargo bench -p mpox-e2e --bench sdk_profile` prints, per model, a Markdown table of the
//! operation kinds (nodes, ms per inference, share, GFLOP/s) and the ten slowest nodes (every
//! node with `ALL_NODES=1`; the figures in docs/results.md).

use std::collections::BTreeMap;

use mpox_e2e::{bench_models, photo};
use mpox_sdk::profile::gflops;
use mpox_sdk::{NodeTime, Screener, ScreenerOptions};

const RUNS: usize = 30;
const WARMUP: usize = 5;

fn main() {
    for (label, path) in bench_models() {
        let screener = Screener::from_path(&path, ScreenerOptions::default()).unwrap();
        let input = screener
            .info()
            .meta
            .preprocessing
            .views_tensor(&photo(1, true, 224), 1)
            .unwrap();
        screener.profile(&input, WARMUP).unwrap();
        let nodes = screener.profile(&input, RUNS).unwrap();
        let total: f64 = nodes.iter().map(|n| n.ms).sum();
        let mut whole: Vec<f64> = (0..RUNS)
            .map(|_| {
                let t = std::time::Instant::now();
                screener.infer(&input).unwrap();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        whole.sort_by(f64::total_cmp);
        let whole = whole[RUNS / 2];
        let mut kinds: BTreeMap<&str, (usize, f64, u64)> = BTreeMap::new();
        for n in &nodes {
            let k = kinds.entry(n.op.as_str()).or_default();
            k.0 += 1;
            k.1 += n.ms;
            k.2 += n.fmas;
        }
        let mut kinds: Vec<_> = kinds.into_iter().collect();
        kinds.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
        println!("\n| {label}: operation | nodes | ms per inference | share | GFLOP/s |");
        println!("|---|---|---|---|---|");
        for (op, (count, ms, fmas)) in &kinds {
            println!(
                "| {op} | {count} | {ms:.2} | {:.1} % | {} |",
                100.0 * ms / total,
                rate(*fmas, *ms)
            );
        }
        let fmas = nodes.iter().map(|n| n.fmas).sum();
        println!(
            "| all nodes | {} | {total:.2} | 100 % | {} |",
            nodes.len(),
            rate(fmas, total)
        );
        println!("\n{label}: nodes {total:.2} ms of a {whole:.2} ms inference (`Screener::infer`, median of {RUNS}); the difference is the plan's own work between nodes less the cost of the per-node clock.");
        let mut slowest: Vec<&NodeTime> = nodes.iter().collect();
        slowest.sort_by(|a, b| b.ms.total_cmp(&a.ms));
        println!("\n| {label}: slowest nodes | operation | ms | GFLOP/s |");
        println!("|---|---|---|---|");
        for n in slowest
            .iter()
            .take(if std::env::var_os("ALL_NODES").is_some() {
                1000
            } else {
                10
            })
        {
            println!(
                "| {} | {} | {:.3} | {} |",
                n.name,
                n.op,
                n.ms,
                rate(n.fmas, n.ms)
            );
        }
    }
    println!("\nmean of {RUNS} inferences after {WARMUP} warm-up ones, one thread; GFLOP/s counts two operations per multiply-add the node declares (– for nodes that declare none).");
}

/// GFLOP/s for the table, a dash for nodes that declare no arithmetic.
fn rate(fmas: u64, ms: f64) -> String {
    if fmas == 0 {
        "–".into()
    } else {
        format!("{:.1}", gflops(fmas, ms))
    }
}
