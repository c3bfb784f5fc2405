//! The main job: audit → split → fit → calibrate → export → evaluate, on a dataset folder or, when
//! none is given, on a generated demo set (and then the model is a demo, nothing more).

use std::path::{Path, PathBuf};

use candle_core::Device;

use crate::audit::{self, AuditConfig};
use crate::crossval::{self, CrossvalConfig};
use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::evaluate::EvalReport;
use crate::gan::folds::FoldGan;
use crate::gan::sample::Sampling;
use crate::gan::train::GanConfig;
use crate::split::SplitConfig;
use crate::train::{files, FitConfig};

/// What the pipeline runs on.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// The dataset; `None` generates a synthetic demo set.
    pub data: Option<PathBuf>,
    /// Class mapped to `mpox` (binary screening).
    pub positive: Option<String>,
    /// Training settings.
    pub fit: FitConfig,
    /// Folds of the split (fold 0 tests, fold 1 validates, the rest train).
    pub folds: usize,
    /// Seed of the split and of the demo set.
    pub seed: u64,
    /// Photos per class of the demo set.
    pub demo_per_class: usize,
    /// Extra folders of negatives (other skin conditions).
    pub negatives: Vec<PathBuf>,
    /// External validation set from another source.
    pub external: Option<PathBuf>,
    /// GAN photos added to the training set (`--gan`).
    pub gan: Option<PipelineGan>,
}

/// The GAN step of the pipeline: a GAN trained on the training part of the fold the model
/// trains on, its photos added to that training set.
#[derive(Clone, Debug)]
pub struct PipelineGan {
    /// GAN settings.
    pub config: GanConfig,
    /// Generated photos per real training photo of the positive class.
    pub ratio: f64,
    /// How they are drawn.
    pub sampling: Sampling,
}

/// Where the results are.
#[derive(Clone, Debug)]
pub struct PipelineOutcome {
    /// The exported model.
    pub model: PathBuf,
    /// Its evaluation on the held-out test fold.
    pub report: EvalReport,
    /// Its evaluation on the external validation set, if one was given.
    pub external: Option<EvalReport>,
    /// Whether it was trained on generated demo data.
    pub demo: bool,
}

/// The loud notice printed around demo results.
pub const DEMO_NOTICE: &str =
    "DEMO ONLY: no --data was given, so this model was trained on generated cartoon \
photos. It has never seen a real skin lesion and must not be used to screen anyone.";

/// Runs the whole chain into `out`.
pub fn pipeline(
    config: &PipelineConfig,
    out: &Path,
    device: &Device,
    progress: bool,
) -> Result<PipelineOutcome> {
    config.fit.validate()?;
    if let Some(g) = &config.gan {
        g.config.validate()?;
        if g.ratio.is_nan() || g.ratio <= 0.0 {
            return Err(Error::Invalid(format!(
                "--synthetic-ratio {} must be positive",
                g.ratio
            )));
        }
        g.sampling
            .check()?
            .check_selectable(g.config.features.as_deref())?;
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let (data, demo) = match &config.data {
        Some(d) => (d.clone(), false),
        None => {
            let d = out.join("demo-data");
            if !d.exists() {
                crate::synthetic::write_dataset(&d, config.demo_per_class, 128, config.seed)?;
            }
            eprintln!("\n*** {DEMO_NOTICE} ***\n");
            (d, true)
        }
    };
    let split_config = SplitConfig {
        folds: config.folds,
        seed: config.seed,
        positive: config.positive.clone(),
        negatives: config.negatives.clone(),
        audit: AuditConfig {
            progress,
            ..AuditConfig::default()
        },
        ..Default::default()
    };
    // One inspection (every photo decoded and hashed once) serves the audit and the split; a
    // rerun that finds its split reuses it and inspects nothing.
    let split_path = out.join("split.json");
    let inspection = if split_path.exists() {
        None
    } else {
        eprintln!("== audit {}", data.display());
        for n in &config.negatives {
            eprintln!("   with negatives {}", n.display());
        }
        let dataset = Dataset::scan_with_negatives(&data, &config.negatives)?;
        let ins = audit::inspect_dataset(dataset, progress);
        let report = audit::report(&ins, &split_config.audit);
        let json = serde_json::to_string_pretty(&report).expect("audit serialises");
        crate::atomic::write_atomic(&out.join("audit.json"), json.as_bytes())?;
        eprint!("{report}");
        Some(ins)
    };
    eprintln!("== split (fold 0 tests, fold 1 validates, the others train)");
    let split_path =
        crossval::ensure_split_with(&data, None, out, &split_config, inspection.as_ref())?;
    drop(inspection);
    // The model trains on fold 0's training part, tests on fold 0: its GAN sees that part only.
    let (synthetic, synthetic_ratio) = match &config.gan {
        Some(g) => {
            let class = match (&config.positive, demo) {
                (Some(p), _) => p.clone(),
                (None, true) => crate::synthetic::LABELS[1].to_string(),
                (None, false) => {
                    return Err(Error::Invalid(
                        "--gan needs --positive: the class the GAN learns".into(),
                    ))
                }
            };
            let fold_gan = FoldGan {
                config: &g.config,
                data: &data,
                class: &class,
                split: &split_path,
                ratio: g.ratio,
                eval_weights: g.config.features.as_deref(),
                sampling: g.sampling,
            };
            // Only fold 0 runs, so only its entry is read.
            let s = fold_gan.run(0, &out.join("gan"), device)?;
            (Some(vec![s.dir; config.folds]), g.ratio)
        }
        None => (None, 0.0),
    };
    let cv = CrossvalConfig {
        data: data.clone(),
        split: Some(split_path.clone()),
        folds: config.folds,
        split_seed: config.seed,
        positive: config.positive.clone(),
        fit: config.fit.clone(),
        synthetic,
        synthetic_ratio,
        only_folds: vec![0],
        negatives: config.negatives.clone(),
        external: config.external.clone(),
    };
    let dir = out.join("model");
    let reports = crossval::run_fold(&cv, &split_path, 0, &dir, device, progress)?;
    if demo {
        eprintln!("\n*** {DEMO_NOTICE} ***");
    }
    Ok(PipelineOutcome {
        model: dir.join(files::MODEL),
        report: reports.test,
        external: reports.external,
        demo,
    })
}
