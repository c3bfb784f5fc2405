//! Renders one of each plot from made-up numbers into a folder, to look at them:
//! `cargo run --release -p mpox-trainer --example plot_gallery -- /tmp/plots`

use std::path::PathBuf;

use mpox_trainer::metrics::{reliability_bins, roc_curve};
use mpox_trainer::plots;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: plot_gallery OUT_DIR")?,
    );
    let epochs = |f: fn(f64) -> f64| (0..40).map(|e| (e as f64, f(e as f64))).collect::<Vec<_>>();
    plots::training_curves(
        &dir.join("curves.png"),
        "MobileNetV2, fold 0",
        &[
            ("train loss", epochs(|e| 0.7 * (-e / 8.0).exp() + 0.05)),
            (
                "val loss",
                epochs(|e| 0.6 * (-e / 10.0).exp() + 0.15 + 0.002 * e),
            ),
            ("val accuracy", epochs(|e| 0.95 - 0.4 * (-e / 6.0).exp())),
        ],
    )?;
    let steps = |f: fn(f64) -> f64| {
        (0..500)
            .map(|s| (s as f64, f(s as f64)))
            .collect::<Vec<_>>()
    };
    plots::line_chart(
        &dir.join("gan_scores.png"),
        "DCGAN discriminator scores",
        "step",
        "D output",
        &[
            ("D(x)", steps(|s| 0.75 + 0.1 * (s / 37.0).sin())),
            ("D(G(z))", steps(|s| 0.3 + 0.1 * (s / 23.0).cos())),
        ],
    )?;
    // A noisy score: positives around 0.7, negatives around 0.3.
    let n = 400;
    let labels: Vec<bool> = (0..n).map(|i| i % 3 == 0).collect();
    let probs: Vec<f64> = (0..n)
        .map(|i| {
            let noise = ((i * 7919 % 1000) as f64 / 1000.0 - 0.5) * 0.8;
            (if labels[i] { 0.68 } else { 0.32 } + noise).clamp(0.0, 1.0)
        })
        .collect();
    plots::roc_plot(
        &dir.join("roc.png"),
        "ROC, 5-fold CV",
        &[
            ("fold 0", roc_curve(&probs, &labels)?),
            ("fold 1", roc_curve(&probs[..200], &labels[..200])?),
        ],
    )?;
    plots::reliability_diagram(
        &dir.join("reliability.png"),
        "Reliability of p(mpox)",
        &reliability_bins(&probs, &labels, 15)?,
    )?;
    let names: Vec<String> = ["Chickenpox", "Measles", "Monkeypox", "Normal"]
        .map(String::from)
        .into();
    let m = vec![
        vec![20, 2, 5, 1],
        vec![3, 15, 2, 0],
        vec![4, 1, 50, 3],
        vec![0, 0, 2, 60],
    ];
    plots::confusion_heatmap(
        &dir.join("confusion.png"),
        "Confusion matrix, fold 0",
        &names,
        &m,
    )?;
    println!("wrote 5 plots to {}", dir.display());
    Ok(())
}
