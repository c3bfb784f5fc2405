//! Fine-tuning a classifier: a linear probe solved on cached frozen-backbone features, then
//! fine-tuning of the last stages (or all of them) with augmentation, AdamW and a cosine
//! schedule, early stopping, atomic checkpoints every epoch with exact resume, and calibration.
//!
//! [`Recipe`]s differ in how much of what ImageNet taught they keep: a linear probe keeps all of
//! it, LP-FT starts fine-tuning from a converged probe at a small rate, WiSE-FT interpolates
//! the probe's and the fine-tuned weights, L2-SP pulls weights toward the pretrained ones. With
//! an external validation set (another source), the epoch, the probe's penalty and the WiSE-FT
//! blend are chosen on it and the internal validation fold together, and the temperature and the
//! operating point on it alone: the internal fold shares the training photos' source and cannot
//! see how the model transfers.

pub mod augment;
pub mod data;
pub mod optim;
pub mod probe;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, D};
use indicatif::{ProgressBar, ProgressStyle};
use mpox_sdk::contract::ModelMeta;
use mpox_sdk::Preprocessing;
use nalgebra::DMatrix;
use rand::seq::SliceRandom;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::calibration::{self, DEFAULT_TARGET_SENSITIVITY};
use crate::checkpoint::{Checkpoint, Loaded};
use crate::error::{Error, Result};
use crate::metrics;
use crate::models::{Arch, Network};
use augment::{rng_for, Augment};
use data::{DataSource, RunData, Sample};
use optim::{cosine_lr, AdamW};
use probe::{Objective, Standardizer, PROBE_PENALTIES};

/// How a pretrained network is adapted (`--recipe`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Recipe {
    /// Linear probe: the head alone, solved on frozen features of the centre crop.
    Probe,
    /// The probe, then fine-tuning of the last stages at a 10× smaller backbone rate.
    Finetune,
    /// LP-FT (Kumar et al. 2022): a converged probe, then fine-tuning at a small rate.
    LpFt,
    /// WiSE-FT (Wortsman et al. 2022): LP-FT, then the weights interpolated between the probe and
    /// the fine-tuned network, the blend chosen on validation (external when given).
    WiseFt,
    /// Fine-tuning with L2-SP: weights pulled toward their pretrained values instead of zero.
    L2Sp,
}

impl Recipe {
    /// Every recipe, in the order reports list them.
    pub const ALL: [Recipe; 5] = [
        Recipe::Probe,
        Recipe::Finetune,
        Recipe::LpFt,
        Recipe::WiseFt,
        Recipe::L2Sp,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Recipe::Probe => "probe",
            Recipe::Finetune => "finetune",
            Recipe::LpFt => "lp-ft",
            Recipe::WiseFt => "wise-ft",
            Recipe::L2Sp => "l2-sp",
        }
    }
}

impl std::fmt::Display for Recipe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Recipe {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Recipe::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "unknown recipe {s:?}: use one of {}",
                    Recipe::ALL.map(Recipe::name).join(", ")
                ))
            })
    }
}

/// The recipe `pipeline` and `fit` use on pretrained weights unless told otherwise, chosen on
/// the external validation set (docs/results.md, "Screening photos from other sources"). On
/// fold 0 of MSID + DermNet the solved probe reached external AUC 0.934 on MSLD v1; every
/// fine-tuning epoch after it lowered that (0.81–0.87), and WiSE-FT's blends too (α ¼: 0.887,
/// ½: 0.888, 1: 0.858), so WiSE-FT itself kept α = 0, the probe.
pub const DEFAULT_RECIPE: Recipe = Recipe::Probe;

/// What an epoch trained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The linear probe, solved on cached backbone features (always one epoch).
    Probe,
    /// Fine-tuning of the trained stages and the head.
    Finetune,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Probe => "probe",
            Phase::Finetune => "finetune",
        })
    }
}

/// WiSE-FT's blends tried: 0 is the probe, 1 the fine-tuned network.
pub const WISE_ALPHAS: [f64; 5] = [0.0, 0.25, 0.5, 0.75, 1.0];

/// Which backbone stages are trained after the probe.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Unfreeze {
    /// Every stage (training from scratch).
    All,
    /// The last `n` stages (fine-tuning pretrained weights on a small dataset, and cheap on a CPU).
    Last(usize),
}

/// Everything that defines a training run (validated before any work starts).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FitConfig {
    /// How the network is adapted.
    pub recipe: Recipe,
    /// Network architecture.
    pub arch: Arch,
    /// Pretrained torchvision-named weights.
    pub weights: Option<PathBuf>,
    /// Side of the network input.
    pub input_size: u32,
    /// Photos per step.
    pub batch_size: usize,
    /// Solve the linear probe on cached backbone features before fine-tuning (epoch 1).
    pub probe: bool,
    /// Epochs of fine-tuning after the probe (an upper bound: early stopping may end sooner).
    pub epochs: usize,
    /// Stages trained after the probe.
    pub unfreeze: Unfreeze,
    /// Learning rate of the head (and the base rate).
    pub lr: f64,
    /// Multiplier of the learning rate for backbone stages.
    pub backbone_lr_scale: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Fine-tuning epochs without a better validation loss before stopping.
    pub patience: usize,
    /// Seed of initialisation, augmentation and shuffling.
    pub seed: u64,
    /// Augment training photos (off for the "real photos only" ablation arm).
    pub augment: Option<Augment>,
    /// Views per photo in the probe's feature cache: the centre crop the SDK screens, then
    /// augmented ones.
    pub probe_views: usize,
    /// Sensitivity the operating threshold must reach on validation data.
    pub target_sensitivity: f64,
    /// Fewest photos of each class in the set the operating point is chosen on; fewer are refused
    /// before training ([`calibration::MIN_CALIBRATION_PHOTOS`] unless a toy run lowers it).
    pub min_calibration_photos: usize,
    /// L2-SP: pull toward the pretrained weights per step, as a multiple of the learning rate.
    pub anchor_strength: f64,
    /// Mixup of pooled features (Beta(α, α) blends within a batch); 0 turns it off.
    pub mixup: f64,
    /// Test-time views averaged when calibrating (temperature, threshold, band) and recommended
    /// to the SDK in the exported file, so the calibration fits what the phone computes.
    pub views: u32,
}

impl FitConfig {
    /// Default photos per training step.
    pub const BATCH_SIZE: usize = 16;
    /// Default fine-tuning epochs without a better validation loss before stopping.
    pub const PATIENCE: usize = 5;
    /// Default test-time views for calibration and the exported file (the SDK's plain screening).
    pub const VIEWS: u32 = 1;
    /// Default mixup α (off).
    pub const MIXUP: f64 = 0.0;

    /// Defaults for an architecture: [`DEFAULT_RECIPE`] from pretrained weights, or full
    /// training from scratch.
    pub fn new(arch: Arch, weights: Option<PathBuf>) -> Self {
        let recipe = if weights.is_some() {
            DEFAULT_RECIPE
        } else {
            Recipe::Finetune
        };
        Self::with_recipe(arch, weights, recipe)
    }

    /// Defaults of a recipe (the one place they are written down).
    pub fn with_recipe(arch: Arch, weights: Option<PathBuf>, recipe: Recipe) -> Self {
        let mut c = Self::finetune(arch, weights);
        c.recipe = recipe;
        match recipe {
            Recipe::Finetune => {}
            Recipe::Probe => {
                c.probe = true;
                c.epochs = 0;
            }
            Recipe::LpFt | Recipe::WiseFt => {
                // The probe, then every trained stage (head included) at one small rate, so the
                // features move only as far as the head's errors ask.
                c.probe = true;
                c.epochs = 6;
                c.lr = 1e-4;
                c.backbone_lr_scale = 1.0;
            }
            Recipe::L2Sp => {
                // Untuned: with a backbone rate of 1e-4 each step removes 0.2 % of the distance to
                // the pretrained weights, about two thirds of it over 500 steps.
                c.anchor_strength = 20.0;
            }
        }
        c
    }

    /// The plain fine-tuning defaults the recipes start from.
    fn finetune(arch: Arch, weights: Option<PathBuf>) -> Self {
        let pretrained = weights.is_some();
        Self {
            recipe: Recipe::Finetune,
            arch,
            weights,
            input_size: 224,
            batch_size: Self::BATCH_SIZE,
            probe: pretrained,
            epochs: if pretrained { 8 } else { 30 },
            unfreeze: if pretrained {
                Unfreeze::Last(match arch {
                    Arch::MobileNetV2 { .. } => 5,
                    Arch::ResNet18 => 3,
                })
            } else {
                Unfreeze::All
            },
            lr: 1e-3,
            backbone_lr_scale: if pretrained { 0.1 } else { 1.0 },
            weight_decay: 1e-2,
            patience: Self::PATIENCE,
            seed: 0,
            augment: Some(Augment::default()),
            // On fold 0 of MSID + DermNet, a probe on 4 augmented views reached external AUC
            // 0.888 on MSLD v1; the same probe on the centre crop alone 0.93–0.94
            // (docs/results.md, "Screening photos from other sources"): the probe learns the view
            // it is used on.
            probe_views: 1,
            target_sensitivity: DEFAULT_TARGET_SENSITIVITY,
            min_calibration_photos: calibration::MIN_CALIBRATION_PHOTOS,
            anchor_strength: 0.0,
            mixup: Self::MIXUP,
            views: Self::VIEWS,
        }
    }

    /// Refuses settings that cannot work, before any data is read.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Invalid(m));
        if !(32..=1024).contains(&self.input_size) {
            return bad(format!(
                "--input-size {} is outside 32..=1024",
                self.input_size
            ));
        }
        if self.batch_size < 2 {
            return bad("--batch-size must be at least 2 (BatchNorm needs a batch)".into());
        }
        if self.epochs == 0 && !self.probe {
            return bad("nothing to train: --epochs 0 without the probe".into());
        }
        if !(self.lr > 0.0 && self.lr < 1.0) {
            return bad(format!("--lr {} is outside (0, 1)", self.lr));
        }
        if !(0.5..1.0).contains(&self.target_sensitivity) {
            return bad(format!(
                "--target-sensitivity {} is outside [0.5, 1)",
                self.target_sensitivity
            ));
        }
        if self.min_calibration_photos == 0 {
            return bad("--min-calibration-photos must be at least 1".into());
        }
        if self.probe && self.probe_views == 0 {
            return bad("--probe-views must be at least 1".into());
        }
        if matches!(self.recipe, Recipe::Probe | Recipe::LpFt | Recipe::WiseFt) && !self.probe {
            return bad(format!(
                "--recipe {} starts from the probe: it cannot run with --no-probe",
                self.recipe
            ));
        }
        if self.recipe == Recipe::WiseFt && self.epochs == 0 {
            return bad("--recipe wise-ft interpolates toward fine-tuned weights: --epochs must be at least 1".into());
        }
        if !mpox_sdk::preprocess::VIEW_COUNTS.contains(&self.views) {
            return bad(format!(
                "--views {} is not one of {:?}",
                self.views,
                mpox_sdk::preprocess::VIEW_COUNTS
            ));
        }
        if !(0.0..=10.0).contains(&self.mixup) {
            return bad(format!("--mixup {} is outside [0, 10]", self.mixup));
        }
        Ok(())
    }
}

/// One epoch's figures.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EpochRecord {
    /// 1-based epoch.
    pub epoch: usize,
    /// What the epoch trained.
    pub phase: Phase,
    /// Mean (class-weighted) training loss.
    pub train_loss: f64,
    /// Mean validation cross-entropy.
    pub val_loss: f64,
    /// Validation accuracy (argmax).
    pub val_accuracy: f64,
    /// Validation ROC-AUC of the positive label.
    pub val_auc: f64,
    /// Cross-entropy on the external validation set, if any.
    #[serde(default)]
    pub external_loss: Option<f64>,
    /// ROC-AUC on the external validation set, if any.
    #[serde(default)]
    pub external_auc: Option<f64>,
    /// What epoch selection minimises: the validation loss, or with an external set minus the
    /// mean of the internal and external AUCs.
    #[serde(default)]
    pub selection: f64,
    /// Learning rate at the end of the epoch.
    pub lr: f64,
    /// Training photos per second of the epoch's training pass (the probe epoch: photos whose
    /// backbone features it computed, all views of each, over the time including the solve).
    pub images_per_second: f64,
}

/// The resumable state of a run, stored in the checkpoint's metadata.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrainState {
    /// The configuration, to refuse resuming with other settings.
    pub config: serde_json::Value,
    /// Epochs completed.
    pub epoch: usize,
    /// Optimiser steps taken in the current phase.
    pub opt_steps: u64,
    /// Best selection score so far (see [`EpochRecord::selection`]), and its epoch.
    pub best: Option<(f64, usize)>,
    /// Fine-tuning epochs since the best.
    pub stale_epochs: usize,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// Every epoch so far.
    pub history: Vec<EpochRecord>,
    /// The probe's penalty and the scores of those tried, once the probe is solved.
    #[serde(default)]
    pub probe: Option<Sweep>,
}

/// What a finished run produced.
#[derive(Clone, Debug)]
pub struct FitOutcome {
    /// The run folder.
    pub out: PathBuf,
    /// The model card (metadata of the exported file); `None` when the run stopped early
    /// because of [`RunOptions::stop_after`] and is unfinished.
    pub card: Option<ModelMeta>,
    /// Per-epoch figures.
    pub history: Vec<EpochRecord>,
    /// Test photos of the fold.
    pub test: Vec<PathBuf>,
}

/// File names inside a run folder.
pub mod files {
    /// The last checkpoint (weights, optimiser state, run state): what `--resume` reads.
    pub const LAST: &str = "last.safetensors";
    /// The best weights on validation loss.
    pub const BEST: &str = "best.safetensors";
    /// The model card of the best weights (calibration included), read by `export --checkpoint`.
    pub const CARD: &str = "best.json";
    /// The exported model.
    pub const MODEL: &str = "model.onnx";
    /// Per-epoch figures.
    pub const HISTORY: &str = "history.csv";
    /// Training curves.
    pub const CURVES: &str = "curves.png";
    /// The probe's weights as solved (WiSE-FT's other end point).
    pub const PROBE: &str = "probe.safetensors";
}

/// Options of one invocation that are not part of the run's identity.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Continue from `last.safetensors` in the output folder.
    pub resume: bool,
    /// Stop (as if killed) after this many epochs in this invocation.
    pub stop_after: Option<usize>,
    /// Show progress bars.
    pub progress: bool,
}

/// Trains, calibrates and exports one model into `out`.
pub fn fit(
    config: &FitConfig,
    source: &DataSource,
    out: &Path,
    device: &Device,
    run: &RunOptions,
) -> Result<FitOutcome> {
    config.validate()?;
    let pre = Preprocessing::imagenet(config.input_size);
    let data = data::load(source, pre.resize * 2)?;
    let warnings = {
        let (what, photos) = data.calibration_set();
        let pos = data.positive_index();
        let positives = photos.iter().filter(|s| s.label == pos).count();
        calibration::check_calibration_set(
            &what,
            positives,
            photos.len() - positives,
            config.min_calibration_photos,
        )?
    };
    for w in &warnings {
        eprintln!("WARNING: {w}");
    }
    let last = out.join(files::LAST);
    if !run.resume && last.exists() {
        return Err(Error::Invalid(format!(
            "{} already holds a run: pass --resume to continue it, or choose another --out",
            out.display()
        )));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let net = Network::new(config.arch, data.labels.len(), config.seed, device)?;
    if let Some(w) = &config.weights {
        net.load_weights(w)?;
    }
    let config_json = serde_json::json!({
        "config": config,
        "data_fingerprint": data.fingerprint,
        "val_fold": data.val_fold,
        "test_fold": data.test_fold,
        "synthetic": source.synthetic.as_ref().map(|s| s.display().to_string()),
        "synthetic_ratio": source.synthetic_ratio,
        "external": source.external.as_ref().map(|s| s.display().to_string()),
    });
    let mut trainer = Trainer::new(config, &data, &net, &pre, device)?;
    if config.recipe == Recipe::L2Sp {
        // The pretrained backbone anchors; the new head has nothing to be pulled back to and
        // keeps AdamW's decay toward zero.
        let head = net.arch().head_prefix();
        let mut anchors = snapshot(&net);
        anchors.retain(|name, _| !name.starts_with(head));
        trainer.anchors = Some(anchors);
    }
    let mut state = TrainState {
        config: config_json.clone(),
        epoch: 0,
        opt_steps: 0,
        best: None,
        stale_epochs: 0,
        stopped_early: false,
        history: Vec::new(),
        probe: None,
    };
    if run.resume && last.exists() {
        state = trainer.restore(&last, &config_json)?;
        eprintln!("resuming {} after epoch {}", out.display(), state.epoch);
        // A run killed between its checkpoint and the history's rewrite left the history an
        // epoch short, and a finished run does not write it again.
        write_history(out, &state.history)?;
    }
    let total = usize::from(config.probe) + config.epochs;
    let mut ran = 0;
    while state.epoch < total && !state.stopped_early {
        if run.stop_after.is_some_and(|n| ran >= n) {
            return Ok(FitOutcome {
                out: out.to_path_buf(),
                card: None,
                history: state.history,
                test: data.test,
            });
        }
        let epoch = state.epoch + 1;
        let record = trainer.epoch(epoch, &mut state, run.progress)?;
        eprintln!(
            "epoch {epoch}/{total} {}: train loss {:.4}, val loss {:.4}, val acc {:.3}, val AUC {:.3}, {:.1} img/s",
            record.phase, record.train_loss, record.val_loss, record.val_accuracy, record.val_auc,
            record.images_per_second
        );
        if let (Some(loss), Some(auc)) = (record.external_loss, record.external_auc) {
            eprintln!("  external validation: loss {loss:.4}, AUC {auc:.3}");
        }
        let improved = state.best.is_none_or(|(b, _)| record.selection < b - 1e-4);
        if improved {
            state.best = Some((record.selection, epoch));
            state.stale_epochs = 0;
            net.save(&out.join(files::BEST))?;
        } else if record.phase == Phase::Finetune {
            state.stale_epochs += 1;
            if state.stale_epochs >= config.patience {
                eprintln!(
                    "early stop: no better {} for {} epochs",
                    selection_name(&data),
                    config.patience
                );
                state.stopped_early = true;
            }
        }
        if config.recipe == Recipe::WiseFt && record.phase == Phase::Probe {
            net.save(&out.join(files::PROBE))?;
        }
        state.history.push(record);
        state.epoch = epoch;
        trainer.checkpoint(&last, &state)?;
        write_history(out, &state.history)?;
        ran += 1;
    }
    let blend = if config.recipe == Recipe::WiseFt {
        Some(trainer.wise_blend(out)?)
    } else {
        None
    };
    let card = finish(config, &data, &net, &pre, out, &state, blend, &warnings)?;
    Ok(FitOutcome {
        out: out.to_path_buf(),
        card: Some(card),
        history: state.history,
        test: data.test,
    })
}

/// What epoch selection minimises, in words.
fn selection_name(data: &RunData) -> &'static str {
    if data.external.is_empty() {
        "validation loss"
    } else {
        "mean AUC of the internal and external validation sets"
    }
}

/// What epoch and blend selection minimise (the rule [`selection_name`] describes): the
/// validation loss, or with an external set `(loss, AUC)` minus the mean of both AUCs.
fn selection_score(val_loss: f64, val_auc: f64, external: Option<(f64, f64)>) -> f64 {
    match external {
        Some((_, auc)) => -(val_auc + auc) / 2.0,
        None => val_loss,
    }
}

/// A setting chosen over a grid by the selection rule (the probe's penalty, WiSE-FT's blend):
/// the value kept and every value's scores.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sweep {
    /// The value kept (WiSE-FT: the weight of the fine-tuned network, 0 being the probe).
    pub chosen: f64,
    /// Per value tried: `(value, internal validation AUC, external AUC)`.
    pub tried: Vec<(f64, f64, Option<f64>)>,
}

impl Sweep {
    /// Keeps `value` if its selection `score` beats the best so far by more than noise.
    fn offer(
        &mut self,
        best: &mut Option<f64>,
        score: f64,
        value: f64,
        val_auc: f64,
        ext: Option<f64>,
    ) -> bool {
        self.tried.push((value, val_auc, ext));
        let better = best.is_none_or(|b| score < b - 1e-4);
        if better {
            *best = Some(score);
            self.chosen = value;
        }
        better
    }
}

/// Loads the chosen weights (the best epoch's, or WiSE-FT's blend already in `net`), calibrates
/// on the external validation set when there is one (else on the internal validation fold),
/// writes the card and exports the model.
// The run's parts, each used once; a struct for them would only rename the arguments.
#[allow(clippy::too_many_arguments)]
fn finish(
    config: &FitConfig,
    data: &RunData,
    net: &Network,
    pre: &Preprocessing,
    out: &Path,
    state: &TrainState,
    blend: Option<Sweep>,
    warnings: &[String],
) -> Result<ModelMeta> {
    if blend.is_none() {
        net.load_checkpoint(&out.join(files::BEST))?;
    }
    let pos = data.positive_index();
    let logits_of = |samples: &[Sample]| -> Result<(Vec<Vec<f64>>, Vec<usize>)> {
        let logits = predict_views(net, pre, samples, config.views)?;
        Ok((logits, samples.iter().map(|s| s.label).collect()))
    };
    let (val_logits, val_labels) = logits_of(&data.val)?;
    let external = if data.external.is_empty() {
        None
    } else {
        Some(logits_of(&data.external)?)
    };
    // With an external set the temperature and operating point come from it alone: it is the
    // only data from a source the network never saw. Pooling it with the internal fold was
    // measured and not kept: on fold 0 of MSID + DermNet the pooled threshold passed 39 % of
    // the external set's chickenpox and measles (specificity 0.61 against 0.85), while the
    // external threshold kept 0.73 of the MSID test fold's mpox above it and 96 % out of the
    // "unlikely" verdict (docs/results.md, "Screening photos from other sources").
    let (calibration_name, _) = data.calibration_set();
    let (logits, labels): (&[Vec<f64>], &[usize]) = match &external {
        Some((l, y)) => (l, y),
        None => (&val_logits, &val_labels),
    };
    let fit = calibration::fit_temperature(logits, labels)?;
    let probs_of = |logits: &[Vec<f64>]| -> Vec<f64> {
        logits
            .iter()
            .map(|l| calibration::softmax_t(l, fit.temperature)[pos])
            .collect()
    };
    let truth_of = |labels: &[usize]| -> Vec<bool> { labels.iter().map(|&l| l == pos).collect() };
    let op = calibration::operating_point(
        &probs_of(logits),
        &truth_of(labels),
        config.target_sensitivity,
    )?;
    let val_metrics =
        metrics::binary_metrics(&probs_of(&val_logits), &truth_of(&val_labels), op.threshold)?;
    let external_metrics = match &external {
        Some((l, y)) => Some(metrics::binary_metrics(
            &probs_of(l),
            &truth_of(y),
            op.threshold,
        )?),
        None => None,
    };
    let card = ModelMeta {
        labels: data.labels.clone(),
        positive_label: data.positive_label.clone(),
        preprocessing: pre.clone(),
        temperature: fit.temperature as f32,
        threshold: op.threshold as f32,
        uncertain_band: [op.uncertain_band[0] as f32, op.uncertain_band[1] as f32],
        recommended_views: config.views,
        arch: config.arch.to_string(),
        trainer_version: crate::VERSION.into(),
        dataset_fingerprint: data.fingerprint.clone(),
        metrics: serde_json::json!({
            "recipe": config.recipe,
            "validation": val_metrics,
            "external_validation": external_metrics,
            "calibration": fit,
            "operating_point": op,
            "best_epoch": state.best.map(|b| b.1),
            "wise_ft": blend,
            "probe_penalty": state.probe,
            "chosen_on": {
                "epoch": selection_name(data),
                "wise_ft_blend": blend.as_ref().map(|_| selection_name(data)),
                "probe_penalty": state.probe.as_ref().map(|_| selection_name(data)),
                "temperature": calibration_name,
                "threshold": calibration_name,
                "uncertain_band": calibration_name,
            },
            "val_fold": data.val_fold,
            "test_fold": data.test_fold,
            "train_photos": data.train.len(),
            "synthetic": data.synthetic,
            "val_photos": data.val.len(),
            "external_photos": data.external.len(),
            "calibration_photos": labels.len(),
            "warnings": warnings,
        }),
        created: crate::now_rfc3339(),
    };
    let card_json = serde_json::to_string_pretty(&card).expect("card serialises");
    crate::atomic::write_atomic(&out.join(files::CARD), card_json.as_bytes())?;
    crate::onnx::write(net, &card, &out.join(files::MODEL))?;
    let series = |f: &dyn Fn(&EpochRecord) -> f64| -> Vec<(f64, f64)> {
        state
            .history
            .iter()
            .map(|r| (r.epoch as f64, f(r)))
            .collect()
    };
    crate::plots::training_curves(
        &out.join(files::CURVES),
        "Training curves",
        &[
            ("train loss", series(&|r| r.train_loss)),
            ("validation loss", series(&|r| r.val_loss)),
            ("validation accuracy", series(&|r| r.val_accuracy)),
            ("validation AUC", series(&|r| r.val_auc)),
            (
                "external AUC",
                series(&|r| r.external_auc.unwrap_or(f64::NAN)),
            ),
        ],
    )?;
    eprintln!(
        "calibrated on {} photos of the {calibration_name}: temperature {:.3} (ECE {:.3} → {:.3}), threshold {:.3} for sensitivity ≥ {} (band {:.3}–{:.3})",
        labels.len(), fit.temperature, fit.ece_before, fit.ece_after, op.threshold,
        config.target_sensitivity, op.uncertain_band[0], op.uncertain_band[1]
    );
    Ok(card)
}

fn write_history(out: &Path, history: &[EpochRecord]) -> Result<()> {
    let mut csv =
        String::from("epoch,phase,train_loss,val_loss,val_accuracy,val_auc,external_loss,external_auc,selection,lr,images_per_second\n");
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.6}"));
    for r in history {
        csv.push_str(&format!(
            "{},{},{:.6},{:.6},{:.6},{:.6},{},{},{:.6},{:.3e},{:.2}\n",
            r.epoch,
            r.phase,
            r.train_loss,
            r.val_loss,
            r.val_accuracy,
            r.val_auc,
            opt(r.external_loss),
            opt(r.external_auc),
            r.selection,
            r.lr,
            r.images_per_second
        ));
    }
    crate::atomic::write_atomic(&out.join(files::HISTORY), csv.as_bytes())
}

/// Logits (eval mode, centre crop: exactly the SDK's preprocessing) for each sample.
pub fn predict(net: &Network, pre: &Preprocessing, samples: &[Sample]) -> Result<Vec<Vec<f64>>> {
    predict_views(net, pre, samples, 1)
}

/// Logits averaged over the SDK's first `views` test-time views of each sample (the same views,
/// from the same function, that a screener with that many views averages).
pub fn predict_views(
    net: &Network,
    pre: &Preprocessing,
    samples: &[Sample],
    views: u32,
) -> Result<Vec<Vec<f64>>> {
    let s = pre.input_size as usize;
    let v = views as usize;
    let mut out = Vec::with_capacity(samples.len());
    for chunk in samples.chunks((32 / v).max(1)) {
        let flat: Vec<f32> = chunk
            .par_iter()
            .map(|x| pre.views_tensor(&x.image, views))
            .collect::<std::result::Result<Vec<_>, _>>()?
            .concat();
        let x = Tensor::from_vec(flat, (chunk.len() * v, 3, s, s), net.device())?;
        let logits = net
            .forward_t(&x, false)?
            .to_dtype(DType::F64)?
            .to_vec2::<f64>()?;
        out.extend(logits.chunks(v).map(|rows| {
            (0..rows[0].len())
                .map(|k| rows.iter().map(|r| r[k]).sum::<f64>() / v as f64)
                .collect::<Vec<f64>>()
        }));
    }
    Ok(out)
}

/// Mean cross-entropy, accuracy and positive-class AUC of logits.
fn evaluate(logits: &[Vec<f64>], labels: &[usize], pos: usize) -> (f64, f64, f64) {
    let mut loss = 0.0;
    let mut correct = 0;
    let mut probs = Vec::with_capacity(logits.len());
    for (l, &y) in logits.iter().zip(labels) {
        let p = calibration::softmax_t(l, 1.0);
        loss -= p[y].max(1e-12).ln();
        if metrics::argmax(&p) == y {
            correct += 1;
        }
        probs.push(p[pos]);
    }
    let truth: Vec<bool> = labels.iter().map(|&l| l == pos).collect();
    let auc = metrics::roc_auc(&probs, &truth).unwrap_or(f64::NAN);
    let n = labels.len().max(1) as f64;
    (loss / n, correct as f64 / n, auc)
}

/// Class-weighted cross-entropy: each class counts as much as the others whatever its size.
pub fn weighted_cross_entropy(
    logits: &Tensor,
    labels: &Tensor,
    weights: &Tensor,
) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = logp.gather(&labels.unsqueeze(1)?, 1)?.squeeze(1)?;
    let w = weights.index_select(labels, 0)?;
    Ok(((picked * &w)?.sum_all()? / w.sum_all()?)?.neg()?)
}

struct Trainer<'a> {
    config: &'a FitConfig,
    data: &'a RunData,
    net: &'a Network,
    pre: &'a Preprocessing,
    device: Device,
    class_weights: Tensor,
    first_trainable: usize,
    pos: usize,
    optimizer: Option<AdamW>,
    /// L2-SP's pretrained weights, by variable name.
    anchors: Option<HashMap<String, Tensor>>,
}

/// WiSE-FT's weights: `(1 − α)·probe + α·tuned` for every tensor (BatchNorm statistics too;
/// training recomputes those of the trained stages afterwards). At α = 0 and 1 the result is
/// exactly the probe and exactly the tuned weights.
pub fn interpolate(
    probe: &HashMap<String, Tensor>,
    tuned: &HashMap<String, Tensor>,
    alpha: f64,
) -> Result<HashMap<String, Tensor>> {
    if !(0.0..=1.0).contains(&alpha) {
        return Err(Error::Invalid(format!(
            "WiSE-FT blend {alpha} is outside [0, 1]"
        )));
    }
    tuned
        .iter()
        .map(|(name, t)| {
            let p = probe
                .get(name)
                .ok_or_else(|| Error::Invalid(format!("WiSE-FT: the probe has no {name}")))?;
            if p.dims() != t.dims() {
                return Err(Error::Invalid(format!(
                    "WiSE-FT: {name} has shape {:?} in the probe and {:?} fine-tuned",
                    p.dims(),
                    t.dims()
                )));
            }
            Ok((name.clone(), ((p * (1.0 - alpha))? + (t * alpha)?)?))
        })
        .collect()
}

/// A copy of every variable of the network, by name.
fn snapshot(net: &Network) -> HashMap<String, Tensor> {
    net.varmap()
        .data()
        .lock()
        .expect("varmap lock")
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_tensor()
                    .copy()
                    .unwrap_or_else(|_| v.as_tensor().clone()),
            )
        })
        .collect()
}

impl<'a> Trainer<'a> {
    fn new(
        config: &'a FitConfig,
        data: &'a RunData,
        net: &'a Network,
        pre: &'a Preprocessing,
        device: &Device,
    ) -> Result<Self> {
        let c = data.labels.len();
        let mut counts = vec![0usize; c];
        for s in &data.train {
            counts[s.label] += 1;
        }
        if let Some(missing) = counts.iter().position(|&n| n == 0) {
            return Err(Error::Invalid(format!(
                "no training photo of label {:?}",
                data.labels[missing]
            )));
        }
        let n = data.train.len() as f32;
        let weights: Vec<f32> = counts.iter().map(|&k| n / (c as f32 * k as f32)).collect();
        let first_trainable = match config.unfreeze {
            Unfreeze::All => 0,
            Unfreeze::Last(k) => net.num_stages().saturating_sub(k),
        };
        Ok(Self {
            config,
            data,
            net,
            pre,
            device: device.clone(),
            class_weights: Tensor::new(weights, device)?,
            first_trainable,
            pos: data
                .labels
                .iter()
                .position(|l| *l == data.positive_label)
                .unwrap_or(0),
            optimizer: None,
            anchors: None,
        })
    }

    fn phase(&self, epoch: usize) -> Phase {
        if self.config.probe && epoch == 1 {
            Phase::Probe
        } else {
            Phase::Finetune
        }
    }

    /// The fine-tuning optimiser (made on first use, and again after a restore).
    fn optimizer(&mut self) -> Result<&mut AdamW> {
        if self.optimizer.is_none() {
            let (backbone, head) = self.net.trainable_vars();
            let trainable: Vec<_> = backbone
                .into_iter()
                .filter(|(n, _)| self.net.is_in_stages_from(n, self.first_trainable))
                .collect();
            let groups = vec![(trainable, self.config.backbone_lr_scale), (head, 1.0)];
            let mut opt = AdamW::new(groups, self.config.weight_decay)?;
            if let Some(anchors) = &self.anchors {
                opt.set_anchors(anchors, self.config.anchor_strength);
            }
            self.optimizer = Some(opt);
        }
        Ok(self.optimizer.as_mut().expect("just set"))
    }

    fn lr(&self, step: u64) -> f64 {
        let per_epoch = self.data.train.len().div_ceil(self.config.batch_size) as u64;
        cosine_lr(
            self.config.lr,
            step,
            per_epoch * self.config.epochs as u64,
            per_epoch / 2,
        )
    }

    fn augmented(&self, sample: &Sample, epoch: u64, index: u64) -> image::RgbImage {
        match &self.config.augment {
            Some(a) => a.apply(
                &sample.image,
                self.pre.input_size,
                &mut rng_for(self.config.seed, epoch, index),
            ),
            None => self.pre.center_crop(&sample.image),
        }
    }

    /// Pooled backbone features `[N·views, F]` of `probe_views` views of every training photo
    /// (view 0 the centre crop, the others augmented), with their labels.
    fn probe_features(&self, progress: bool) -> Result<(DMatrix<f64>, Vec<usize>)> {
        let views = self.config.probe_views;
        let n = self.data.train.len();
        let bar = bar(progress, (n * views) as u64, "caching backbone features");
        let s = self.pre.input_size as usize;
        let dim = self.net.feature_dim();
        let mut rows: Vec<f64> = Vec::with_capacity(n * views * dim);
        let mut labels = Vec::with_capacity(n * views);
        let jobs: Vec<(usize, usize)> = (0..views)
            .flat_map(|v| (0..n).map(move |i| (v, i)))
            .collect();
        for chunk in jobs.chunks(32) {
            let flat: Vec<f32> = chunk
                .par_iter()
                .flat_map(|&(v, i)| {
                    // View v > 0 of photo i: its own generator, independent of the epochs'.
                    let img = match v {
                        0 => self.pre.center_crop(&self.data.train[i].image),
                        _ => self.augmented(&self.data.train[i], u64::MAX - v as u64, i as u64),
                    };
                    self.pre.normalize(&img)
                })
                .collect();
            let x = Tensor::from_vec(flat, (chunk.len(), 3, s, s), &self.device)?;
            let pooled = Network::pool(&self.net.features(&x, false)?)?;
            rows.extend(
                pooled
                    .flatten_all()?
                    .to_vec1::<f32>()?
                    .into_iter()
                    .map(f64::from),
            );
            labels.extend(chunk.iter().map(|&(_, i)| self.data.train[i].label));
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        Ok((DMatrix::from_row_slice(labels.len(), dim, &rows), labels))
    }

    /// Solves the probe for each of [`PROBE_PENALTIES`], keeps the penalty with the best
    /// selection score in the head and returns it with the training loss of that probe.
    fn solve_probe(&self, progress: bool) -> Result<(Sweep, f64, usize)> {
        let (raw, labels) = self.probe_features(progress)?;
        let std = Standardizer::fit(&raw);
        let z = std.apply(&raw);
        let class_weights: Vec<f64> = self
            .class_weights
            .to_vec1::<f32>()?
            .into_iter()
            .map(f64::from)
            .collect();
        let mut sweep = Sweep {
            chosen: PROBE_PENALTIES[0],
            tried: Vec::new(),
        };
        let (mut best, mut kept, mut previous) = (None, None, None);
        for penalty in PROBE_PENALTIES {
            let objective = Objective::new(&z, &labels, &class_weights, penalty)?;
            let probe = objective.solve(previous.as_ref());
            self.set_head(&probe.to_head(&std))?;
            let (val_loss, _, val_auc, external) = self.validate()?;
            let score = selection_score(val_loss, val_auc, external);
            eprintln!(
                "probe λ = {penalty}: validation AUC {val_auc:.3}{} ({} L-BFGS iterations)",
                external.map_or(String::new(), |e| format!(", external AUC {:.3}", e.1)),
                probe.iterations
            );
            if sweep.offer(&mut best, score, penalty, val_auc, external.map(|e| e.1)) {
                kept = Some((probe.to_head(&std), probe.loss));
            }
            previous = Some(probe);
        }
        let (head, loss) = kept.expect("penalties tried");
        self.set_head(&head)?;
        eprintln!("probe keeps λ = {}", sweep.chosen);
        Ok((sweep, loss, labels.len()))
    }

    /// Writes raw-unit head weights `[K, F]` and biases `[K]` into the network.
    fn set_head(&self, (weight, bias): &(Vec<f32>, Vec<f32>)) -> Result<()> {
        let prefix = self.net.arch().head_prefix();
        let vars = self.net.varmap().data().lock().expect("varmap lock");
        for (name, values) in [("weight", weight), ("bias", bias)] {
            let key = format!("{prefix}.{name}");
            let var = vars
                .get(&key)
                .ok_or_else(|| Error::Invalid(format!("the network has no {key}")))?;
            var.set(&Tensor::from_vec(
                values.clone(),
                var.shape(),
                &self.device,
            )?)?;
        }
        Ok(())
    }

    fn epoch(
        &mut self,
        epoch: usize,
        state: &mut TrainState,
        progress: bool,
    ) -> Result<EpochRecord> {
        let phase = self.phase(epoch);
        let start = Instant::now();
        let (loss_sum, seen, photos) = if phase == Phase::Probe {
            let (sweep, loss, rows) = self.solve_probe(progress)?;
            state.probe = Some(sweep);
            // Throughput in training photos (each through the backbone in all its views), not
            // in the cached feature rows the probe then solves on.
            (loss * rows as f64, rows, self.data.train.len())
        } else {
            let mut rng = rng_for(self.config.seed, epoch as u64, u64::MAX);
            let mut order: Vec<usize> = (0..self.data.train.len()).collect();
            order.shuffle(&mut rng);
            let s = self.pre.input_size as usize;
            self.run_steps(&order, state, progress, epoch, |t, idx| {
                let flat: Vec<f32> = idx
                    .par_iter()
                    .flat_map(|&i| {
                        t.pre
                            .normalize(&t.augmented(&t.data.train[i], epoch as u64, i as u64))
                    })
                    .collect();
                let x = Tensor::from_vec(flat, (idx.len(), 3, s, s), &t.device)?;
                let frozen = t
                    .net
                    .forward_stages(&x, 0..t.first_trainable, false)?
                    .detach();
                let feats =
                    t.net
                        .forward_stages(&frozen, t.first_trainable..t.net.num_stages(), true)?;
                let y: Vec<u32> = idx.iter().map(|&i| t.data.train[i].label as u32).collect();
                Ok((Network::pool(&feats)?, Tensor::new(y, &t.device)?))
            })
            .map(|(loss_sum, seen)| (loss_sum, seen, seen))?
        };
        let secs = start.elapsed().as_secs_f64();
        if phase == Phase::Finetune {
            self.precise_batchnorm()?;
        }
        let (val_loss, val_accuracy, val_auc, external) = self.validate()?;
        let selection = selection_score(val_loss, val_auc, external);
        Ok(EpochRecord {
            epoch,
            phase,
            train_loss: loss_sum / seen.max(1) as f64,
            val_loss,
            val_accuracy,
            val_auc,
            external_loss: external.map(|e| e.0),
            external_auc: external.map(|e| e.1),
            selection,
            lr: match phase {
                Phase::Probe => 0.0,
                Phase::Finetune => self.lr(state.opt_steps.saturating_sub(1)),
            },
            images_per_second: photos as f64 / secs,
        })
    }

    /// Internal validation loss, accuracy and AUC, and the external set's loss and AUC if any.
    #[allow(clippy::type_complexity)]
    fn validate(&self) -> Result<(f64, f64, f64, Option<(f64, f64)>)> {
        let score = |samples: &[Sample]| -> Result<(f64, f64, f64)> {
            // One view: selection compares epochs and blends, and views would multiply its cost.
            let logits = predict(self.net, self.pre, samples)?;
            let labels: Vec<usize> = samples.iter().map(|s| s.label).collect();
            Ok(evaluate(&logits, &labels, self.pos))
        };
        let (loss, acc, auc) = score(&self.data.val)?;
        let external = if self.data.external.is_empty() {
            None
        } else {
            let (l, _, a) = score(&self.data.external)?;
            Some((l, a))
        };
        Ok((loss, acc, auc, external))
    }

    /// WiSE-FT: blends the probe (saved once solved) with the network as training
    /// left it, for each of [`WISE_ALPHAS`]; recomputes the trained stages' BatchNorm statistics
    /// for each blend, keeps the one with the best selection score in the network and saves it
    /// as the best checkpoint.
    fn wise_blend(&self, out: &Path) -> Result<Sweep> {
        let probe = candle_core::safetensors::load(out.join(files::PROBE), &self.device)?;
        let tuned = snapshot(self.net);
        let mut sweep = Sweep {
            chosen: 0.0,
            tried: Vec::new(),
        };
        let mut best = None;
        for alpha in WISE_ALPHAS {
            self.set_blend(&probe, &tuned, alpha)?;
            if alpha > 0.0 {
                self.precise_batchnorm()?;
            }
            let (val_loss, _, val_auc, external) = self.validate()?;
            let score = selection_score(val_loss, val_auc, external);
            eprintln!(
                "WiSE-FT α = {alpha}: validation AUC {val_auc:.3}{}",
                external.map_or(String::new(), |e| format!(", external AUC {:.3}", e.1))
            );
            sweep.offer(&mut best, score, alpha, val_auc, external.map(|e| e.1));
        }
        let alpha = sweep.chosen;
        self.set_blend(&probe, &tuned, alpha)?;
        if alpha > 0.0 {
            self.precise_batchnorm()?;
        }
        self.net.save(&out.join(files::BEST))?;
        eprintln!("WiSE-FT keeps α = {alpha}");
        Ok(sweep)
    }

    /// Sets every variable to WiSE-FT's blend `alpha` (see [`interpolate`]).
    fn set_blend(
        &self,
        probe: &HashMap<String, Tensor>,
        tuned: &HashMap<String, Tensor>,
        alpha: f64,
    ) -> Result<()> {
        let blended = interpolate(probe, tuned, alpha)?;
        let vars = self.net.varmap().data().lock().expect("varmap lock");
        for (name, var) in vars.iter() {
            let t = blended
                .get(name)
                .ok_or_else(|| Error::Invalid(format!("WiSE-FT: the probe has no {name}")))?;
            var.set(t)?;
        }
        Ok(())
    }

    /// Recomputes the trainable stages' BatchNorm statistics on (up to 256) centre-cropped
    /// training photos, so that validation and the exported model see statistics of the
    /// current weights (see [`Network::recompute_batchnorm`]).
    fn precise_batchnorm(&self) -> Result<()> {
        let s = self.pre.input_size as usize;
        let bs = self.config.batch_size.max(8);
        let take = self.data.train.len().min(256);
        let batches = self.data.train[..take]
            .chunks(bs)
            .filter(|c| c.len() > 1)
            .map(|chunk| {
                let flat: Vec<f32> = chunk
                    .par_iter()
                    .flat_map(|x| self.pre.tensor(&x.image))
                    .collect();
                Ok(Tensor::from_vec(
                    flat,
                    (chunk.len(), 3, s, s),
                    &self.device,
                )?)
            });
        self.net.recompute_batchnorm(self.first_trainable, batches)
    }

    /// Runs one epoch of steps over `order`; `batch` turns indices into (pooled features, labels).
    fn run_steps<F>(
        &mut self,
        order: &[usize],
        state: &mut TrainState,
        progress: bool,
        epoch: usize,
        batch: F,
    ) -> Result<(f64, usize)>
    where
        F: Fn(&Self, &[usize]) -> Result<(Tensor, Tensor)>,
    {
        let bs = self.config.batch_size;
        let bar = bar(progress, order.len() as u64, &format!("epoch {epoch}"));
        let start = Instant::now();
        let (mut loss_sum, mut seen) = (0.0, 0usize);
        for idx in order.chunks(bs) {
            // A batch of one would break BatchNorm's statistics; it only ever drops one photo.
            if idx.len() < 2 {
                continue;
            }
            let (pooled, y) = batch(self, idx)?;
            let loss = if self.config.mixup > 0.0 && idx.len() > 1 {
                // Mixup of pooled features (manifold mixup at the head): each photo is blended
                // with its mirror position in the (shuffled) batch.
                let mut rng = rng_for(
                    self.config.seed ^ 0x006d_6978_7570,
                    epoch as u64,
                    state.opt_steps,
                );
                let beta = rand_distr::Beta::new(self.config.mixup, self.config.mixup)
                    .map_err(|e| Error::Invalid(format!("--mixup: {e}")))?;
                let lam: f64 = rand_distr::Distribution::sample(&beta, &mut rng);
                let partner: Vec<u32> = (0..idx.len() as u32).rev().collect();
                let partner = Tensor::new(partner, &self.device)?;
                let mixed =
                    ((&pooled * lam)? + (pooled.index_select(&partner, 0)? * (1.0 - lam))?)?;
                let logits = self.net.classify(&mixed)?;
                let a = weighted_cross_entropy(&logits, &y, &self.class_weights)?;
                let b = weighted_cross_entropy(
                    &logits,
                    &y.index_select(&partner, 0)?,
                    &self.class_weights,
                )?;
                ((a * lam)? + (b * (1.0 - lam))?)?
            } else {
                let logits = self.net.classify(&pooled)?;
                weighted_cross_entropy(&logits, &y, &self.class_weights)?
            };
            let grads = loss.backward()?;
            let lr = self.lr(state.opt_steps);
            self.optimizer()?.step(&grads, lr)?;
            state.opt_steps += 1;
            let l = f64::from(loss.to_scalar::<f32>()?);
            loss_sum += l * idx.len() as f64;
            seen += idx.len();
            bar.inc(idx.len() as u64);
            bar.set_message(format!(
                "loss {:.3}, {:.1} img/s",
                loss_sum / seen as f64,
                seen as f64 / start.elapsed().as_secs_f64()
            ));
        }
        bar.finish_and_clear();
        Ok((loss_sum, seen))
    }

    /// Writes weights, optimiser moments and run state into one checkpoint, atomically.
    fn checkpoint(&self, path: &Path, state: &TrainState) -> Result<()> {
        let mut c = Checkpoint::new();
        c.vars(None, self.net.varmap()).state(STATE, state);
        // The optimiser exists once fine-tuning has taken a step.
        match &self.optimizer {
            Some(opt) => c
                .tensors(None, opt.state())
                .meta(PHASE, Phase::Finetune.to_string()),
            None => c.meta(PHASE, ""),
        };
        c.write(path)
    }

    /// Restores weights, optimiser and state from a checkpoint of the same configuration.
    fn restore(&mut self, path: &Path, config: &serde_json::Value) -> Result<TrainState> {
        let c = Loaded::read(path, &self.device, STATE, "a training checkpoint")?;
        let state: TrainState = c.state(STATE)?;
        c.same_run(&state.config, config)?;
        crate::weights::load_into(
            self.net.varmap(),
            &c.tensors,
            self.net.arch().head_prefix(),
            crate::weights::HeadPolicy::Required,
            path,
        )?;
        if !c.meta(PHASE).unwrap_or_default().is_empty() {
            let steps = state.opt_steps;
            self.optimizer()?.load_state(&c.tensors, steps)?;
        }
        Ok(state)
    }
}

/// The checkpoint's metadata entries: the run state, and the phase whose optimiser state it holds
/// (empty before fine-tuning).
const STATE: &str = "mpoxscreen.train_state";
const PHASE: &str = "mpoxscreen.optimizer_phase";

fn bar(progress: bool, len: u64, prefix: &str) -> ProgressBar {
    if !progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(prefix.to_string());
    bar
}
