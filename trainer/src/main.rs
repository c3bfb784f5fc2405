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
    /// Create an Ed25519 key pair for signing models: PREFIX.key (secret) and PREFIX.pub.
    Keygen(cli::model::KeygenArgs),
    /// Sign an exported model, so that apps trusting the public key load it and nothing else.
    Sign(cli::model::SignArgs),
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
    mpox_trainer::ops::runtime::configure();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", report(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each text once: our errors and the SDK's put their
/// cause's text in their own message as well as returning it as the source, and anyhow's `{:#}`
/// would print the operating system's error twice.
fn report(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Export(a) => cli::model::export(a),
        Command::Check(a) => cli::model::check(a),
        Command::Screen(a) => cli::model::screen(a),
        Command::Synth(a) => cli::model::synth(a),
        Command::Keygen(a) => cli::model::keygen(a),
        Command::Sign(a) => cli::model::sign(a),
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

#[cfg(test)]
mod tests {
    use super::{report, Cli};
    use clap::{CommandFactory, Parser};

    /// clap's own checks of every command (unique argument ids and names among flattened
    /// groups, valid defaults), which otherwise only fire when that command is parsed.
    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// The commands that flatten the training and the GAN options together parse into both.
    #[test]
    fn commands_sharing_option_groups_parse() {
        let cases: [&[&str]; 3] = [
            &[
                "t",
                "pipeline",
                "--gan",
                "--gan-arch",
                "dcgan",
                "--arch",
                "resnet18",
            ],
            &[
                "t",
                "ablate",
                "data",
                "--positive",
                "M",
                "--out",
                "o",
                "--gan-arch",
                "dcgan",
                "--arch",
                "mobilenet_v2",
                "--synthetic-ratios",
                "0.5,2",
            ],
            &[
                "t",
                "gan",
                "train",
                "data",
                "--class",
                "M",
                "--out",
                "o",
                "--gan-arch",
                "dcgan",
            ],
        ];
        for args in cases {
            let cli = Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            let debug = format!("{cli:?}");
            assert!(debug.contains("gan_arch: Dcgan"), "{args:?}: {debug}");
        }
    }

    #[test]
    fn a_cause_already_in_the_message_is_printed_once() {
        let io = std::io::Error::from_raw_os_error(2);
        let text = io.to_string();
        let e = anyhow::Error::new(mpox_trainer::Error::io(std::path::Path::new("m.onnx"), io))
            .context("loading m.onnx");
        let r = report(&e);
        assert_eq!(r.matches(&text).count(), 1, "{r}");
        assert!(r.starts_with("loading m.onnx: m.onnx: "), "{r}");
    }
}
