//! `mpox-trainer`: the command line. Parsing and dispatch only; the work lives in the library.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "mpox-trainer",
    version,
    about = "Train, export and check mpox screening models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Export a network (random, pretrained or trained weights) as a self-describing ONNX file.
    Export(cli::model::ExportArgs),
    /// Compare the candle network with the exported file run by the SDK, image by image.
    Check(cli::model::CheckArgs),
    /// Screen photos with an exported model through the SDK.
    Screen(cli::model::ScreenArgs),
    /// Write a small synthetic ImageFolder dataset (cartoon skin photos) for demos and tests.
    Synth(cli::model::SynthArgs),
    /// Audit an ImageFolder dataset: counts, sizes, formats, unreadable files, duplicates, label conflicts.
    Audit(cli::data::AuditArgs),
    /// Write a duplicate- and patient-aware stratified k-fold split manifest.
    Split(cli::data::SplitArgs),
    /// Fine-tune (or train from scratch) a classifier, calibrate it on validation data and export it.
    Fit(cli::train::FitArgs),
    /// Evaluate an exported model through the SDK: metrics, confusion matrix, calibration, report and plots.
    Eval(cli::train::EvalArgs),
    /// k-fold cross-validation on duplicate-aware folds: train, calibrate and test every fold; mean ± std.
    Crossval(cli::train::CrossvalArgs),
    /// The whole job: audit → split → fit → calibrate → export → evaluate (a demo set without --data).
    Pipeline(cli::train::PipelineArgs),
    /// The GAN that creates extra mpox photos: train, sample, evaluate.
    #[command(subcommand)]
    Gan(cli::gan::GanCommand),
    /// Same folds, three training sets: real only, real + augmentation, real + augmentation + GAN photos.
    Ablate(cli::train::AblateArgs),
}

fn main() -> ExitCode {
    // Die quietly when the reader of our output goes away (`screen --json | head`), as Unix
    // tools do, instead of panicking on the broken pipe.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Export(a) => cli::model::export(a),
        Command::Check(a) => cli::model::check(a),
        Command::Screen(a) => cli::model::screen(a),
        Command::Synth(a) => cli::model::synth(a),
        Command::Audit(a) => cli::data::audit(a),
        Command::Split(a) => cli::data::split(a),
        Command::Fit(a) => cli::train::fit(a),
        Command::Eval(a) => cli::train::eval(a),
        Command::Crossval(a) => cli::train::crossval(a),
        Command::Pipeline(a) => cli::train::pipeline(a),
        Command::Gan(c) => cli::gan::run(c),
        Command::Ablate(a) => cli::train::ablate(a),
    }
}
