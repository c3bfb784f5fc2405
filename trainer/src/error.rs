//! The trainer library's error type.

use std::path::{Path, PathBuf};

/// Everything the trainer library can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// The SDK refused a model or an image.
    #[error(transparent)]
    Sdk(#[from] mpox_sdk::Error),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A weights file could not be parsed.
    #[error("cannot read weights from {}: {reason}", path.display())]
    Weights {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A weights file does not fit the network.
    #[error("{} does not fit the network:{}{}{}", path.display(),
        list("missing", missing), list("wrong shape", mis_shaped), list("not used by the network", unexpected))]
    WeightMismatch {
        /// The file.
        path: PathBuf,
        /// Tensors the network needs that the file lacks (name and expected shape).
        missing: Vec<String>,
        /// Tensors whose shape differs.
        mis_shaped: Vec<String>,
        /// Tensors in the file the network has no place for (a hint at the wrong architecture).
        unexpected: Vec<String>,
    },
    /// An argument or input is invalid.
    #[error("{0}")]
    Invalid(String),
}

fn list(title: &str, items: &[String]) -> String {
    if items.is_empty() {
        return String::new();
    }
    let mut s = format!("\n  {title} ({}):", items.len());
    for i in items {
        s.push_str("\n    ");
        s.push_str(i);
    }
    s
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Result alias of the trainer library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
