//! Soak and concurrency: one `Screener` shared by 8 threads screening a mix of good, hostile and
//! huge photos, every result checked against the single-threaded one, resident memory sampled
//! every second.
//!
//! `cargo bench -p mpox-e2e --bench soak [-- SCREENS_PER_THREAD [THREADS]]` (default 1000 × 8)
//! prints a summary table and writes `target/soak/rss.csv` and `target/soak/rss.png`. The figures
//! in docs/results.md come from it. It exits non-zero if any result differs from the reference or
//! if memory keeps growing, so it doubles as a check.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use image::{DynamicImage, ImageFormat, RgbImage};
use mpox_e2e::{
    camera_jpeg, encode, export, jpeg, photo, proc_status_mib, random_network, workspace_root,
};
use mpox_sdk::{Screener, ScreenerOptions, Screening};
use mpox_trainer::models::Arch;

/// What a screening gave, without its wall time: equal inputs must give equal outcomes.
#[derive(Clone, Debug, PartialEq)]
enum Outcome {
    Screened {
        logits_bits: Vec<u32>,
        probability_bits: u32,
        verdict: &'static str,
        quality: Vec<&'static str>,
        heatmap_bits: Vec<u32>,
    },
    Refused(String),
}

fn outcome(r: mpox_sdk::Result<Screening>) -> Outcome {
    match r {
        Ok(s) => Outcome::Screened {
            logits_bits: s.logits.iter().map(|v| v.to_bits()).collect(),
            probability_bits: s.probability_mpox.to_bits(),
            verdict: s.verdict.code(),
            quality: s.quality.iter().map(|q| q.code()).collect(),
            heatmap_bits: s
                .heatmap
                .map(|h| h.values.iter().map(|v| v.to_bits()).collect())
                .unwrap_or_default(),
        },
        Err(e) => Outcome::Refused(e.to_string()),
    }
}

/// The mixed inputs: (kind, name, bytes).
fn inputs() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut v: Vec<(&'static str, String, Vec<u8>)> = Vec::new();
    for seed in 0..6u64 {
        let img = photo(seed, seed.is_multiple_of(2), 200 + 40 * seed as u32);
        v.push(("good", format!("jpeg {seed}"), jpeg(&img, 90)));
        let format = [ImageFormat::Png, ImageFormat::WebP, ImageFormat::Bmp][seed as usize % 3];
        v.push((
            "good",
            format!("{format:?} {seed}"),
            encode(&DynamicImage::ImageRgb8(img), format),
        ));
    }
    v.push(("huge", "12 MP camera jpeg".into(), camera_jpeg()));
    let good = jpeg(&photo(7, true, 256), 90);
    v.push(("hostile", "empty".into(), Vec::new()));
    v.push((
        "hostile",
        "truncated jpeg".into(),
        good[..good.len() / 3].to_vec(),
    ));
    v.push((
        "hostile",
        "not an image".into(),
        b"GIF89a? no, plain text".to_vec(),
    ));
    let mut flipped = good.clone();
    for i in (200..flipped.len()).step_by(97) {
        flipped[i] ^= 0x5a;
    }
    v.push(("hostile", "bit-flipped jpeg".into(), flipped));
    // A PNG header claiming 100000 × 100000 pixels: refused before any allocation.
    let mut bomb = encode(
        &DynamicImage::ImageRgb8(RgbImage::new(64, 64)),
        ImageFormat::Png,
    );
    bomb[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    bomb[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    v.push(("hostile", "png bomb header".into(), bomb));
    v.push((
        "hostile",
        "tiny 8x8 png".into(),
        encode(
            &DynamicImage::ImageRgb8(RgbImage::new(8, 8)),
            ImageFormat::Png,
        ),
    ));
    v
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let per_thread: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let threads: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(8);

    let net = random_network(Arch::MobileNetV2 { width: 1.0 }, 2, 3);
    let model = export(&net, 224);
    drop(net);
    let options = ScreenerOptions {
        heatmap: true,
        ..Default::default()
    };
    let screener = Arc::new(Screener::from_bytes(&model, options).expect("model loads"));
    let inputs = Arc::new(inputs());
    let reference: Vec<Outcome> = inputs
        .iter()
        .map(|(_, _, bytes)| outcome(screener.screen(bytes)))
        .collect();
    let refused = reference
        .iter()
        .filter(|o| matches!(o, Outcome::Refused(_)))
        .count();
    eprintln!(
        "{} inputs ({} screened, {refused} refused single-threaded); {threads} threads × {per_thread} screens",
        inputs.len(),
        inputs.len() - refused
    );

    let done = Arc::new(AtomicBool::new(false));
    let rss = Arc::new(Mutex::new(vec![(0.0, proc_status_mib("VmRSS"))]));
    let start = Instant::now();
    let sampler = {
        let (done, rss) = (done.clone(), rss.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(1));
                let sample = (start.elapsed().as_secs_f64(), proc_status_mib("VmRSS"));
                rss.lock().expect("sampler lock").push(sample);
            }
        })
    };
    let mismatches = Arc::new(AtomicUsize::new(0));
    let counts = Arc::new(Mutex::new(BTreeMap::<&'static str, usize>::new()));
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (screener, inputs, reference) =
                (screener.clone(), inputs.clone(), reference.clone());
            let (mismatches, counts) = (mismatches.clone(), counts.clone());
            std::thread::spawn(move || {
                let mut local = BTreeMap::<&'static str, usize>::new();
                for k in 0..per_thread {
                    // Each thread walks the inputs in its own order, so different inputs overlap.
                    let i = (k * (2 * t + 1) + 3 * t) % inputs.len();
                    let (kind, name, bytes) = &inputs[i];
                    let got = outcome(screener.screen(bytes));
                    if got != reference[i] {
                        mismatches.fetch_add(1, Ordering::Relaxed);
                        eprintln!("thread {t}, screen {k}: {name} differs: {got:?}");
                    }
                    *local.entry(kind).or_default() += 1;
                }
                let mut counts = counts.lock().expect("counts lock");
                for (k, n) in local {
                    *counts.entry(k).or_default() += n;
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a worker thread panicked");
    }
    let wall = start.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    let mut rss = rss.lock().expect("rss").clone();
    rss.push((wall, proc_status_mib("VmRSS")));

    let total = threads * per_thread;
    let mismatches = mismatches.load(Ordering::Relaxed);
    // Flat memory: 8 threads decoding 12-megapixel photos make resident memory swing by a few
    // hundred MiB from one second to the next, so the check compares window means: the samples
    // of 10-30 % of the run (allocator arenas warmed up) against those of its last fifth. The
    // memory left once the threads have finished (the model and what glibc keeps) must be close
    // to where it started.
    let mean = |lo: f64, hi: f64| {
        let v: Vec<f64> = rss
            .iter()
            .filter(|(t, _)| *t >= lo * wall && *t < hi * wall)
            .map(|(_, m)| *m)
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    let early = mean(0.1, 0.3);
    let late = mean(0.8, 1.0);
    let start_mib = rss[0].1;
    let end_mib = rss.last().map_or(f64::NAN, |s| s.1);
    let peak = rss.iter().map(|(_, m)| *m).fold(0.0, f64::max);
    let growth = late - early;
    let kept = end_mib - start_mib;
    println!("| threads | screens | wall s | screens/s | mismatches | RSS start MiB | mean RSS 10-30 % MiB | mean RSS last 20 % MiB | growth MiB | peak MiB | RSS after the threads MiB |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {threads} | {total} | {wall:.1} | {:.1} | {mismatches} | {start_mib:.0} | {early:.0} | {late:.0} | {growth:+.1} | {peak:.0} | {end_mib:.0} |",
        total as f64 / wall,
    );
    let counts = counts.lock().expect("counts");
    println!("screens by kind: {counts:?}");

    let dir = workspace_root().join("target").join("soak");
    std::fs::create_dir_all(&dir).expect("target/soak");
    let csv: String = std::iter::once("seconds,rss_mib\n".to_string())
        .chain(rss.iter().map(|(t, m)| format!("{t:.2},{m:.1}\n")))
        .collect();
    std::fs::write(dir.join("rss.csv"), csv).expect("rss.csv");
    mpox_trainer::plots::line_chart(
        &dir.join("rss.png"),
        &format!("Resident memory, {threads} threads × {per_thread} screens"),
        "seconds",
        "RSS (MiB)",
        &[("RSS", rss.clone())],
    )
    .expect("rss.png");
    println!("wrote {}", dir.join("rss.png").display());

    // A leak of one preprocessed 224 px tensor per screening would add about 4.5 GiB over 8000 screens;
    // 64 MiB is above the window means' noise (a few MiB to 20 MiB between runs).
    let limit = 64.0;
    if mismatches > 0 || growth > limit || kept > limit || growth.is_nan() {
        eprintln!(
            "FAILED: {mismatches} mismatching results, RSS growth {growth:+.1} MiB, \
             {kept:+.1} MiB kept after the threads (limit {limit} MiB each)"
        );
        std::process::exit(1);
    }
}
