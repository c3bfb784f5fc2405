//! Commands on single models: `export`, `check`, `screen`, `synth`, `keygen`, `sign`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use candle_core::Device;
use clap::Args;
use mpox_sdk::contract::ModelMeta;
use mpox_sdk::{Screener, ScreenerOptions};
use mpox_trainer::models::{Arch, Network, DEFAULT_SEED};

/// Where a network's weights come from.
#[derive(Args, Debug, Clone)]
pub struct WeightArgs {
    /// torchvision-named weights (safetensors or .pth); a mismatched classifier head is ignored.
    #[arg(long, value_name = "FILE", conflicts_with = "checkpoint")]
    weights: Option<PathBuf>,
    /// A checkpoint written by `fit` (safetensors with a JSON model card beside it).
    #[arg(long, value_name = "FILE")]
    checkpoint: Option<PathBuf>,
    /// Seed of the random initialisation (of the whole network, or of the head with --weights).
    #[arg(long, default_value_t = DEFAULT_SEED)]
    seed: u64,
}

/// Arguments of `export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// mobilenet_v2, mobilenet_v2_w<WIDTH> or resnet18 (read from the checkpoint's card when omitted).
    #[arg(long)]
    arch: Option<String>,
    #[command(flatten)]
    weights: WeightArgs,
    /// Class labels in logit order, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "not_mpox,mpox")]
    labels: Vec<String>,
    /// Side of the square network input.
    #[arg(long, default_value_t = 224)]
    input_size: u32,
    /// Output model file.
    #[arg(long)]
    out: PathBuf,
}

/// Arguments of `check`.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The exported model.
    model: PathBuf,
    /// Folder of images to compare on.
    #[arg(long)]
    images: PathBuf,
    #[command(flatten)]
    weights: WeightArgs,
}

/// Arguments of `screen`.
#[derive(Args, Debug)]
pub struct ScreenArgs {
    /// The exported model.
    model: PathBuf,
    /// Photos to screen.
    #[arg(required = true)]
    photos: Vec<PathBuf>,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Expected sha256 of the model file.
    #[arg(long)]
    sha256: Option<String>,
    /// Public key (64 hex digits, or a `.pub` file from `keygen`) whose signature the model must
    /// carry; repeat for several. Without it, signatures are not checked.
    #[arg(long = "trusted-key", value_name = "HEX|FILE")]
    trusted_keys: Vec<String>,
}

/// Arguments of `keygen`.
#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Path prefix of the key pair: writes PREFIX.key and PREFIX.pub, never over existing files.
    prefix: PathBuf,
}

/// Arguments of `sign`.
#[derive(Args, Debug)]
pub struct SignArgs {
    /// The exported model to sign.
    model: PathBuf,
    /// The secret key file written by `keygen` (PREFIX.key).
    #[arg(long)]
    key: PathBuf,
    /// Where to write the signed model (default: replace MODEL, atomically).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Arguments of `synth`.
#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Output folder (one sub-folder per class).
    #[arg(long)]
    out: PathBuf,
    /// Photos per class.
    #[arg(long, default_value_t = 60)]
    per_class: usize,
    /// Side of each photo in pixels.
    #[arg(long, default_value_t = 224)]
    size: u32,
    /// Seed of the generator.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    seed: u64,
}

/// Builds the network and loads its weights; returns the checkpoint's model card if there is one.
fn build_network(
    arch: Arch,
    classes: usize,
    w: &WeightArgs,
    device: &Device,
) -> anyhow::Result<Network> {
    let net = Network::new(arch, classes, w.seed, device)?;
    if let Some(path) = &w.weights {
        let report = net.load_weights(path)?;
        eprintln!(
            "loaded {} tensors from {}{}",
            report.loaded,
            path.display(),
            if report.head_kept.is_empty() {
                String::new()
            } else {
                format!("; new {classes}-class head (seed {})", w.seed)
            }
        );
    } else if let Some(path) = &w.checkpoint {
        let report = net.load_checkpoint(path)?;
        eprintln!("loaded {} tensors from {}", report.loaded, path.display());
    }
    Ok(net)
}

/// The model card stored beside a checkpoint (`model.safetensors` → `model.json`).
fn read_card(checkpoint: &Path) -> anyhow::Result<Option<ModelMeta>> {
    let card = checkpoint.with_extension("json");
    if !card.exists() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(&card).with_context(|| format!("reading {}", card.display()))?;
    Ok(Some(serde_json::from_str(&text).with_context(|| {
        format!("parsing model card {}", card.display())
    })?))
}

/// Runs `export`.
pub fn export(a: ExportArgs) -> anyhow::Result<ExitCode> {
    let card = match &a.weights.checkpoint {
        Some(c) => read_card(c)?,
        None => None,
    };
    let meta = match (&card, &a.arch) {
        (Some(card), Some(arch)) if *arch != card.arch => {
            bail!(
                "--arch {arch} contradicts the checkpoint's card ({})",
                card.arch
            )
        }
        (Some(card), _) => ModelMeta {
            created: mpox_trainer::now_rfc3339(),
            trainer_version: mpox_trainer::VERSION.into(),
            ..card.clone()
        },
        (None, Some(arch)) => {
            let arch: Arch = arch.parse()?;
            if a.labels.len() < 2 {
                bail!("--labels needs at least two labels");
            }
            let mut meta = mpox_trainer::untrained_meta(arch, a.labels.clone(), a.input_size);
            if a.weights.weights.is_none() && a.weights.checkpoint.is_none() {
                meta.dataset_fingerprint = format!("random-init:seed={}", a.weights.seed);
            }
            meta
        }
        (None, None) => bail!("--arch is required unless the checkpoint has a model card"),
    };
    let arch: Arch = meta.arch.parse()?;
    let net = build_network(arch, meta.labels.len(), &a.weights, &Device::Cpu)?;
    mpox_trainer::onnx::write(&net, &meta, &a.out)?;
    let bytes = std::fs::read(&a.out)?;
    eprintln!(
        "wrote {} ({} bytes, sha256 {})",
        a.out.display(),
        bytes.len(),
        mpox_sdk::hex(&sha2_digest(&bytes))
    );
    Ok(ExitCode::SUCCESS)
}

fn sha2_digest(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).to_vec()
}

/// Loads a model for the CLI; the error names the file once (the SDK's `Io` error already does).
pub fn load_screener(path: &Path, options: ScreenerOptions) -> anyhow::Result<Screener> {
    Screener::from_path(path, options).map_err(|e| match e {
        mpox_sdk::Error::Io { .. } => anyhow::Error::new(e),
        e => anyhow::Error::new(e).context(format!("loading {}", path.display())),
    })
}

/// Runs `check`.
pub fn check(a: CheckArgs) -> anyhow::Result<ExitCode> {
    let screener = load_screener(&a.model, ScreenerOptions::default())?;
    let meta = &screener.info().meta;
    let arch: Arch = meta.arch.parse()?;
    let net = build_network(arch, meta.labels.len(), &a.weights, &Device::Cpu)?;
    let parity = mpox_trainer::check::parity_dir(&net, &screener, &a.images)?;
    for p in &parity.images {
        println!(
            "{}\tmax_abs_diff={:.3e}\tcandle={:?}\tsdk={:?}",
            p.file.display(),
            p.max_abs_diff,
            p.candle,
            p.sdk
        );
    }
    println!(
        "max_abs_diff={:.3e} rel_diff={:.3e}",
        parity.max_abs_diff, parity.rel_diff
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs `screen`.
pub fn screen(a: ScreenArgs) -> anyhow::Result<ExitCode> {
    let trusted_keys = a
        .trusted_keys
        .iter()
        .map(|k| read_public_key(k))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let options = ScreenerOptions {
        expected_sha256: a.sha256.clone(),
        trusted_keys,
        ..Default::default()
    };
    let screener = load_screener(&a.model, options)?;
    let mut failures = 0;
    for photo in &a.photos {
        let result = std::fs::read(photo)
            .map_err(|e| mpox_sdk::Error::Io {
                path: photo.clone(),
                source: e,
            })
            .and_then(|bytes| screener.screen(&bytes));
        match result {
            Ok(s) => {
                if a.json {
                    let probabilities: serde_json::Map<String, serde_json::Value> = s
                        .probabilities
                        .iter()
                        .map(|c| (c.label.clone(), serde_json::json!(c.probability)))
                        .collect();
                    let quality: Vec<&str> = s.quality.iter().map(|q| q.code()).collect();
                    println!(
                        "{}",
                        serde_json::json!({
                            "file": photo.display().to_string(),
                            "probabilities": probabilities,
                            "verdict": s.verdict.code(),
                            "quality": quality,
                            "latency_ms": s.latency_ms,
                        })
                    );
                } else {
                    let quality: Vec<&str> = s.quality.iter().map(|q| q.code()).collect();
                    println!(
                        "{}\t{}\tp(mpox)={:.3}\t{:.1} ms{}",
                        photo.display(),
                        s.verdict.code(),
                        s.probability_mpox,
                        s.latency_ms,
                        if quality.is_empty() {
                            String::new()
                        } else {
                            format!("\tquality: {}", quality.join(", "))
                        }
                    );
                }
            }
            Err(e) => {
                failures += 1;
                if a.json {
                    println!(
                        "{}",
                        serde_json::json!({"file": photo.display().to_string(), "error": e.to_string()})
                    );
                } else {
                    eprintln!("{}: {e}", photo.display());
                }
            }
        }
    }
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// Writes a synthetic demo dataset.
pub fn synth(a: SynthArgs) -> anyhow::Result<ExitCode> {
    mpox_trainer::synthetic::write_dataset(&a.out, a.per_class, a.size, a.seed)?;
    eprintln!(
        "wrote {} synthetic photos per class to {} (a demo dataset, not medical data)",
        a.per_class,
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// A public key given on the command line: its hex digits, or a file holding them.
fn read_public_key(arg: &str) -> anyhow::Result<String> {
    let path = Path::new(arg);
    if path.is_file() {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the public key {}", path.display()))?;
        Ok(text.trim().to_string())
    } else {
        Ok(arg.trim().to_string())
    }
}

/// Writes a new signing key pair.
pub fn keygen(a: KeygenArgs) -> anyhow::Result<ExitCode> {
    let pair = mpox_trainer::keys::generate(&a.prefix)?;
    eprintln!(
        "wrote the secret key {} (keep it private) and the public key {}",
        pair.secret.display(),
        pair.public.display()
    );
    println!("{}", pair.public_hex);
    Ok(ExitCode::SUCCESS)
}

/// Signs a model, then loads it through the SDK trusting only that key, to prove it verifies.
pub fn sign(a: SignArgs) -> anyhow::Result<ExitCode> {
    let out = a.out.as_ref().unwrap_or(&a.model);
    let public = mpox_trainer::keys::sign_file(&a.model, &a.key, out)?;
    let options = ScreenerOptions {
        trusted_keys: vec![public.clone()],
        ..Default::default()
    };
    Screener::from_path(out, options)
        .with_context(|| format!("the signed model {} does not load", out.display()))?;
    eprintln!("signed {} with key {public}", out.display());
    Ok(ExitCode::SUCCESS)
}
