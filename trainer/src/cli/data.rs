//! Dataset commands: `audit`, `split`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;

/// Near-duplicate detection settings shared by `audit` and `split`.
#[derive(Args, Debug, Clone)]
pub struct NearArgs {
    /// Largest perceptual-hash distance (of 64 bits) at which two photos are compared closely.
    #[arg(long, value_name = "N", default_value_t = mpox_trainer::audit::DEFAULT_NEAR_THRESHOLD)]
    near_threshold: u32,
    /// Smallest aligned correlation confirming a near-duplicate (-1: the hash alone decides).
    #[arg(long, value_name = "R", default_value_t = mpox_trainer::audit::DEFAULT_MIN_CORRELATION,
        allow_negative_numbers = true)]
    min_correlation: f64,
    /// Do not match mirror images.
    #[arg(long)]
    no_mirror: bool,
}

impl NearArgs {
    fn config(&self) -> anyhow::Result<mpox_trainer::audit::AuditConfig> {
        if self.near_threshold > 64 {
            bail!("--near-threshold is a distance between 64-bit hashes: 0 to 64");
        }
        if !(-1.0..=1.0).contains(&self.min_correlation) {
            bail!("--min-correlation must lie in [-1, 1]");
        }
        Ok(mpox_trainer::audit::AuditConfig {
            near_threshold: self.near_threshold,
            min_correlation: self.min_correlation,
            mirror: !self.no_mirror,
            progress: true,
        })
    }
}

/// Arguments of `audit`.
#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Dataset folder: DATA/<class>/<images>.
    data: PathBuf,
    /// Print the report as JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Also audit a folder of extra negatives (sub-folders are conditions) together with DATA,
    /// so duplicates between them show. Repeatable.
    #[arg(long, value_name = "DIR")]
    negatives: Vec<std::path::PathBuf>,
    #[command(flatten)]
    near: NearArgs,
}

/// Arguments of `split`.
#[derive(Args, Debug)]
pub struct SplitArgs {
    /// Dataset folder: DATA/<class>/<images>.
    data: PathBuf,
    /// Number of folds.
    #[arg(long, default_value_t = mpox_trainer::split::SplitConfig::FOLDS)]
    folds: usize,
    /// Seed of the assignment.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Class folder that is `mpox`; every other class becomes `not_mpox`.
    #[arg(long, value_name = "CLASS")]
    positive: Option<String>,
    /// A folder whose photos are all `not_mpox` (sub-folders are conditions): deduplicated against
    /// DATA and split into the same folds. Repeatable; needs --positive.
    #[arg(long, value_name = "DIR")]
    negatives: Vec<PathBuf>,
    /// Regex whose first group is the patient id in a file name.
    #[arg(long, value_name = "RE", default_value = mpox_trainer::split::DEFAULT_PATIENT_REGEX)]
    patient_regex: String,
    #[command(flatten)]
    near: NearArgs,
    /// Output manifest (JSON).
    #[arg(long)]
    out: PathBuf,
}

/// Runs `audit`.
pub fn audit(a: AuditArgs) -> anyhow::Result<ExitCode> {
    let config = a.near.config()?;
    let dataset = mpox_trainer::dataset::Dataset::scan_with_negatives(&a.data, &a.negatives)?;
    let inspection = mpox_trainer::audit::inspect_dataset(dataset, config.progress);
    let report = mpox_trainer::audit::report(&inspection, &config);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `split`.
pub fn split(a: SplitArgs) -> anyhow::Result<ExitCode> {
    if a.folds < 2 {
        bail!("--folds must be at least 2");
    }
    regex::Regex::new(&a.patient_regex).context("--patient-regex")?;
    let config = mpox_trainer::split::SplitConfig {
        folds: a.folds,
        seed: a.seed,
        positive: a.positive.clone(),
        patient_regex: a.patient_regex.clone(),
        audit: a.near.config()?,
        negatives: a.negatives.clone(),
    };
    let manifest = mpox_trainer::split::split(&a.data, &config)?;
    manifest.save(&a.out)?;
    print!("{}", manifest.summary());
    eprintln!("wrote {}", a.out.display());
    Ok(ExitCode::SUCCESS)
}
