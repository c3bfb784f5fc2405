//! Signing keys for model files: `keygen` writes a key pair, `sign` signs an exported model with
//! the secret half. The signature format itself is the SDK's (`mpox_sdk::signature`), so the
//! trainer can never sign something the SDK would read differently.

use std::io::Write;
use std::path::{Path, PathBuf};

use mpox_sdk::signature::{self, SECRET_KEY_LEN};
use rand::TryRngCore;

use crate::atomic::{temp_path, write_atomic};
use crate::error::{Error, Result};

/// First line of a secret key file, so that nobody mistakes it for something to share.
const SECRET_HEADER: &str =
    "# mpoxscreen Ed25519 secret key: keep it on the signing machine, never in an app or a repository";

/// Where `keygen` wrote a key pair.
#[derive(Clone, Debug)]
pub struct KeyPair {
    /// The secret key file (`PREFIX.key`, readable by its owner only).
    pub secret: PathBuf,
    /// The public key file (`PREFIX.pub`: 64 hex digits to give to apps).
    pub public: PathBuf,
    /// The public key (64 lowercase hex digits).
    pub public_hex: String,
}

/// Creates a new key pair as `PREFIX.key` and `PREFIX.pub`. Refuses to replace an existing key:
/// a lost secret key means re-signing and re-shipping every app that trusts it.
pub fn generate(prefix: &Path) -> Result<KeyPair> {
    let secret = with_suffix(prefix, "key");
    let public = with_suffix(prefix, "pub");
    for path in [&secret, &public] {
        if path.exists() {
            return Err(Error::Invalid(format!(
                "{} already exists: choose another name (an existing key is never overwritten)",
                path.display()
            )));
        }
    }
    let mut seed = [0u8; SECRET_KEY_LEN];
    rand::rngs::OsRng
        .try_fill_bytes(&mut seed)
        .map_err(|e| Error::Invalid(format!("the operating system gave no randomness: {e}")))?;
    write_secret(
        &secret,
        &format!("{SECRET_HEADER}\n{}\n", mpox_sdk::hex(&seed)),
    )?;
    let public_hex = signature::public_key_hex(&seed);
    write_atomic(&public, format!("{public_hex}\n").as_bytes())?;
    Ok(KeyPair {
        secret,
        public,
        public_hex,
    })
}

/// Reads a secret key file written by [`generate`].
pub fn read_secret(path: &Path) -> Result<[u8; SECRET_KEY_LEN]> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or_default();
    let bytes: Option<Vec<u8>> = (line.len() == 2 * SECRET_KEY_LEN && line.is_ascii())
        .then(|| {
            (0..line.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&line[i..i + 2], 16).ok())
                .collect()
        })
        .flatten();
    bytes.and_then(|b| b.try_into().ok()).ok_or_else(|| {
        Error::Invalid(format!(
            "{}: not a secret key file (expected {} hex digits, as `keygen` writes)",
            path.display(),
            2 * SECRET_KEY_LEN
        ))
    })
}

/// Signs the model at `model` with the secret key file `key`, writing the signed model to `out`
/// (atomically; `out` may be `model`). Returns the signer's public key (hex).
pub fn sign_file(model: &Path, key: &Path, out: &Path) -> Result<String> {
    let secret = read_secret(key)?;
    let bytes = std::fs::read(model).map_err(|e| Error::io(model, e))?;
    let signed = signature::sign_model(&bytes, &secret)?;
    write_atomic(out, &signed)?;
    Ok(signature::public_key_hex(&secret))
}

/// `prefix` with `.suffix` appended to its file name (not replacing an extension it has).
fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

/// Writes a file only its owner can read, without ever replacing an existing one: the bytes go to
/// a private temporary file that is then hard-linked into place (which fails if the name exists).
fn write_secret(path: &Path, text: &str) -> Result<()> {
    let tmp = temp_path(path);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let result = options
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.sync_all()
        })
        .and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    result.map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mpox-keys-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_generated_key_reads_back_and_is_never_overwritten() {
        let d = dir("gen");
        let pair = generate(&d.join("release")).unwrap();
        assert_eq!(pair.secret, d.join("release.key"));
        let secret = read_secret(&pair.secret).unwrap();
        assert_eq!(signature::public_key_hex(&secret), pair.public_hex);
        let public = std::fs::read_to_string(&pair.public).unwrap();
        assert_eq!(public.trim(), pair.public_hex);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&pair.secret)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "secret key readable by others: {mode:o}");
        }
        let again = generate(&d.join("release"));
        assert!(matches!(again, Err(Error::Invalid(ref m)) if m.contains("already exists")));
        assert_eq!(read_secret(&pair.secret).unwrap(), secret);
        // Two keys differ: the seed comes from the operating system, not a fixed RNG.
        let other = generate(&d.join("other")).unwrap();
        assert_ne!(other.public_hex, pair.public_hex);
        let leftovers: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn a_file_that_is_not_a_secret_key_is_refused() {
        let d = dir("bad");
        for (name, text) in [
            ("empty", ""),
            ("short", "abcd\n"),
            ("public", &format!("{}\n", "ab".repeat(16))),
            ("nothex", &format!("{}\n", "zz".repeat(32))),
        ] {
            let p = d.join(name);
            std::fs::write(&p, text).unwrap();
            assert!(
                matches!(read_secret(&p), Err(Error::Invalid(ref m)) if m.contains("not a secret key")),
                "{name}"
            );
        }
        assert!(matches!(
            read_secret(&d.join("missing")),
            Err(Error::Io { .. })
        ));
    }
}
