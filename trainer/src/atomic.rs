//! Atomic file writes: a killed run leaves either the old file or the new one, never half of one.
//!
//! A run killed mid-write leaves its temporary file behind; the next write of the same file
//! removes it, so a resumed run's folder ends up holding the same files as an uninterrupted one.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Test hook: milliseconds to sleep before and after renaming each written temporary file, so
/// that the crash-resume tests can kill a run inside a given write, or right after it, every time.
pub const PAUSE_AROUND_RENAME: &str = "MPOX_TEST_PAUSE_AROUND_RENAME";

fn temp_prefix(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(".{name}.tmp-")
}

/// The temporary file this process writes `path` through: hidden, beside it, named by the pid.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    path.with_file_name(format!("{}{}", temp_prefix(path), std::process::id()))
}

/// Whether a process with this id is running (a recycled id only keeps a stale file a while).
#[cfg(unix)]
fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only asks whether the process exists; nothing is sent.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(not(unix))]
fn alive(_pid: u32) -> bool {
    true
}

/// Removes temporary files of `path` left by killed processes (never a live one's).
fn remove_stale_temps(path: &Path) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let prefix = temp_prefix(path);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !alive(pid) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The error of a failed safetensors write to `path`, as [`Error::Io`] when the disk refused it.
pub fn safetensors_error(path: &Path, e: safetensors::SafeTensorError) -> Error {
    match e {
        safetensors::SafeTensorError::IoError(io) => Error::io(path, io),
        other => Error::Invalid(format!("cannot write {}: {other}", path.display())),
    }
}

/// The error of a failed image write to `path`, as [`Error::Io`] when the disk refused it.
pub fn image_error(path: &Path, e: image::ImageError) -> Error {
    match e {
        image::ImageError::IoError(io) => Error::io(path, io),
        other => Error::Invalid(format!("cannot write {}: {other}", path.display())),
    }
}

/// Writes `bytes` to `path` through a temporary file in the same folder, synced, then renamed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |tmp| {
        std::fs::write(tmp, bytes).map_err(|e| Error::io(tmp, e))
    })
}

/// Lets `write` fill a temporary path, then syncs it and renames it onto `path`.
///
/// An I/O error on the temporary file is reported on `path`: the temporary file is gone by then,
/// and `path` is the file the user knows.
pub fn write_atomic_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    remove_stale_temps(path);
    let tmp = temp_path(path);
    let result = write(&tmp).and_then(|()| {
        let f = std::fs::File::open(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        pause_for_tests();
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        pause_for_tests();
        Ok(())
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| match e {
        Error::Io { path: p, source } if p == tmp => Error::io(path, source),
        other => other,
    })
}

fn pause_for_tests() {
    if let Some(ms) = std::env::var_os(PAUSE_AROUND_RENAME)
        .and_then(|v| v.to_str().and_then(|v| v.parse::<u64>().ok()))
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_file_and_cleans_up_on_failure() {
        let dir = std::env::temp_dir().join(format!("mpox-atomic-{}", std::process::id()));
        let p = dir.join("a.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let failed = write_atomic_with(&p, |tmp| {
            std::fs::write(tmp, b"partial").unwrap();
            Err(Error::Invalid("killed".into()))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "temporary file left behind"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_killed_writers_temporary_file_goes_with_the_next_write() {
        let dir = std::env::temp_dir().join(format!("mpox-atomic-stale-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("last.safetensors");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        let dead = dir.join(format!(".last.safetensors.tmp-{}", child.id()));
        // Process 1 always runs: its file may be a write in progress and must stay.
        let live = dir.join(".last.safetensors.tmp-1");
        let other = dir.join(format!(".best.safetensors.tmp-{}", child.id()));
        for f in [&dead, &live, &other] {
            std::fs::write(f, b"partial").unwrap();
        }
        write_atomic(&p, b"whole").unwrap();
        assert!(!dead.exists() && live.exists() && other.exists());
        // A full disk is reported on the file the caller named, not on the temporary one.
        let err = write_atomic_with(&p, |tmp| {
            Err(Error::io(
                tmp,
                std::io::Error::from_raw_os_error(libc::ENOSPC),
            ))
        })
        .unwrap_err();
        assert!(
            matches!(&err, Error::Io { path, .. } if *path == p),
            "{err}"
        );
        assert_eq!(std::fs::read(&p).unwrap(), b"whole");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
