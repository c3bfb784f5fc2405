//! Image folders on disk: listing images, and scanning an ImageFolder tree (`ROOT/<class>/<files>`)
//! into a [`Dataset`] with a content fingerprint.

use std::path::{Path, PathBuf};

use image::RgbImage;
use mpox_sdk::decode::{decode, Limits};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// File extensions read as images (compared case-insensitively).
pub const IMAGE_EXTENSIONS: [&str; 5] = ["png", "jpg", "jpeg", "webp", "bmp"];

/// Whether a path has an image extension.
pub fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// Image files directly inside `dir`, sorted by name.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_file() && is_image(&path) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// One photo of a [`Dataset`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// Path relative to the dataset root, with `/` separators on every platform so that manifests
    /// written on one machine read the same on another.
    pub rel_path: String,
    /// Index into [`Dataset::classes`].
    pub class_index: usize,
    /// SHA-256 of the file's bytes, lowercase hex.
    pub sha256: String,
    /// 0 for the main data folder, `k` for the `k`-th extra negatives folder
    /// ([`Dataset::negatives`]`[k - 1]`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub source: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// A file that was found but could not be used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unreadable {
    /// Path relative to the dataset root (`/` separators).
    pub path: String,
    /// Why it could not be used.
    pub reason: String,
}

/// An ImageFolder tree: one sub-folder per class, photos anywhere below it; optionally joined by
/// extra folders whose photos are all negatives (other skin conditions, one sub-folder each).
///
/// Photos of an extra folder `NEG` have the class `<name of NEG>/<sub-folder>` (or `<name of
/// NEG>` for photos directly inside it) and the relative path `<name of NEG>/<path in NEG>`, so
/// classes and relative paths stay unique across all folders of one dataset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dataset {
    /// The folder that was scanned.
    pub root: PathBuf,
    /// Extra folders of negatives, in the order given.
    pub negatives: Vec<PathBuf>,
    /// Class names: the sub-folders of `root`, sorted so that class indices do not depend on the
    /// order the file system lists them in; then the extra folders' conditions, sorted per folder.
    pub classes: Vec<String>,
    /// Per class, the folder it comes from (0: `root`, `k`: `negatives[k - 1]`).
    pub class_source: Vec<usize>,
    /// Every readable image, sorted by `rel_path`.
    pub items: Vec<Item>,
    /// Image files that could not be read (reported, never fatal: one bad file in a scraped
    /// data set should not stop an audit).
    pub unreadable: Vec<Unreadable>,
}

impl Dataset {
    /// Scans `root`: every non-hidden sub-folder is a class; every image file below it (at any
    /// depth; symbolic links to folders are not followed, so a link cycle cannot hang the scan)
    /// is an item. Files are read and hashed in parallel.
    ///
    /// Fails when `root` is missing, is not a folder, or has no class folder.
    pub fn scan(root: &Path) -> Result<Dataset> {
        Self::scan_with_negatives(root, &[])
    }

    /// Scans `root` as [`Dataset::scan`] does, plus extra folders whose photos are all negatives:
    /// each sub-folder of one is a condition (kept as its class for reporting), photos directly
    /// inside it form a class named after the folder.
    ///
    /// Fails when a folder is missing, when an extra folder has no photo, or when two folders
    /// would give the same class name.
    pub fn scan_with_negatives(root: &Path, negatives: &[PathBuf]) -> Result<Dataset> {
        let mut main = Self::scan_main(root)?;
        for (k, neg) in negatives.iter().enumerate() {
            main.add_negatives(neg, k + 1)?;
        }
        Ok(main)
    }

    /// Appends the photos of one extra negatives folder as source `source`.
    fn add_negatives(&mut self, dir: &Path, source: usize) -> Result<()> {
        if !dir.is_dir() {
            return Err(Error::Invalid(format!(
                "negatives folder {} does not exist or is not a folder",
                dir.display()
            )));
        }
        let name = dir
            .canonicalize()
            .ok()
            .and_then(|c| c.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "negatives".into());
        if let Some(c) = self
            .classes
            .iter()
            .find(|c| c.as_str() == name || c.starts_with(&format!("{name}/")))
        {
            return Err(Error::Invalid(format!(
                "negatives folder {} would add class names under {name:?}, which the data already has ({c:?}): rename one of the folders",
                dir.display()
            )));
        }
        let mut files: Vec<(String, String)> = Vec::new();
        let mut unreadable = Vec::new();
        walk(
            dir,
            dir,
            &mut |rel| {
                let class = match rel.split_once('/') {
                    Some((sub, _)) => format!("{name}/{sub}"),
                    None => name.clone(),
                };
                files.push((format!("{name}/{rel}"), class));
            },
            &mut unreadable,
        );
        if files.is_empty() {
            return Err(Error::Invalid(format!(
                "negatives folder {} holds no photos",
                dir.display()
            )));
        }
        let mut classes: Vec<String> = files.iter().map(|(_, c)| c.clone()).collect();
        classes.sort();
        classes.dedup();
        let first = self.classes.len();
        let index = |c: &str| first + classes.iter().position(|x| x == c).expect("listed");
        let mut files: Vec<(String, usize)> = files
            .iter()
            .map(|(rel, c)| (rel.clone(), index(c)))
            .collect();
        files.sort();
        self.class_source
            .extend(std::iter::repeat_n(source, classes.len()));
        self.classes.extend(classes);
        self.negatives.push(dir.to_path_buf());
        let (items, bad) = hash_files(files, source, |rel| {
            source_path(&self.root, &self.negatives, source, rel)
        });
        self.items.extend(items);
        self.unreadable
            .extend(unreadable.into_iter().map(|u| Unreadable {
                path: format!("{name}/{}", u.path),
                reason: u.reason,
            }));
        self.unreadable.extend(bad);
        self.unreadable.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(())
    }

    fn scan_main(root: &Path) -> Result<Dataset> {
        if !root.is_dir() {
            return Err(Error::Invalid(format!(
                "dataset folder {} does not exist or is not a folder",
                root.display()
            )));
        }
        let mut classes = Vec::new();
        for entry in std::fs::read_dir(root).map_err(|e| Error::io(root, e))? {
            let entry = entry.map_err(|e| Error::io(root, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && entry.path().is_dir() {
                classes.push(name);
            }
        }
        classes.sort();
        if classes.is_empty() {
            return Err(Error::Invalid(format!(
                "dataset folder {} has no class sub-folders (expected ROOT/<class>/<images>)",
                root.display()
            )));
        }
        let mut files: Vec<(String, usize)> = Vec::new();
        let mut unreadable = Vec::new();
        for (class_index, class) in classes.iter().enumerate() {
            walk(
                root,
                &root.join(class),
                &mut |rel| files.push((rel, class_index)),
                &mut unreadable,
            );
        }
        files.sort();
        let (items, bad) = hash_files(files, 0, |rel| join_rel(root, rel));
        unreadable.extend(bad);
        unreadable.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Dataset {
            root: root.to_path_buf(),
            negatives: Vec::new(),
            class_source: vec![0; classes.len()],
            classes,
            items,
            unreadable,
        })
    }

    /// The full path of an item.
    pub fn path(&self, item: &Item) -> PathBuf {
        source_path(&self.root, &self.negatives, item.source, &item.rel_path)
    }

    /// Whether a class comes from an extra negatives folder.
    pub fn is_extra_negative(&self, class_index: usize) -> bool {
        self.class_source.get(class_index).is_some_and(|&s| s > 0)
    }

    /// The class name of an item.
    pub fn class_of(&self, item: &Item) -> &str {
        &self.classes[item.class_index]
    }

    /// Number of items per class, in the order of [`Dataset::classes`].
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for item in &self.items {
            counts[item.class_index] += 1;
        }
        counts
    }

    /// A content fingerprint: SHA-256 (hex) over the sorted lines `"<sha256>  <class>\n"`.
    ///
    /// It changes when a photo is added, removed, edited or relabelled, but not when files are
    /// renamed or moved within their class, nor with the order the file system lists them in.
    pub fn fingerprint(&self) -> String {
        let mut lines: Vec<String> = self
            .items
            .iter()
            .map(|i| format!("{}  {}\n", i.sha256, self.classes[i.class_index]))
            .collect();
        lines.sort();
        let mut h = Sha256::new();
        for l in &lines {
            h.update(l.as_bytes());
        }
        mpox_sdk::hex(&h.finalize())
    }

    /// Reads and decodes an item exactly as the SDK decodes a photo on the phone (EXIF
    /// orientation, colour conversion, default limits), so training sees what inference sees.
    pub fn load(&self, item: &Item) -> Result<RgbImage> {
        load_image(&self.path(item))
    }
}

/// Reads and decodes an image file through [`mpox_sdk::decode::decode`] with default limits.
pub fn load_image(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode(&bytes, &Limits::default())
        .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    mpox_sdk::hex(&Sha256::digest(bytes))
}

/// Reads and hashes `(relative path, class)` files in parallel: items, and the unreadable ones.
fn hash_files(
    files: Vec<(String, usize)>,
    source: usize,
    path_of: impl Fn(&str) -> PathBuf + Sync,
) -> (Vec<Item>, Vec<Unreadable>) {
    let hashed: Vec<std::result::Result<Item, Unreadable>> = files
        .into_par_iter()
        .map(
            |(rel_path, class_index)| match std::fs::read(path_of(&rel_path)) {
                Ok(bytes) => Ok(Item {
                    sha256: sha256_hex(&bytes),
                    rel_path,
                    class_index,
                    source,
                }),
                Err(e) => Err(Unreadable {
                    path: rel_path,
                    reason: e.to_string(),
                }),
            },
        )
        .collect();
    let mut items = Vec::with_capacity(hashed.len());
    let mut bad = Vec::new();
    for h in hashed {
        match h {
            Ok(item) => items.push(item),
            Err(u) => bad.push(u),
        }
    }
    (items, bad)
}

/// The file behind a relative path of a dataset with extra negatives folders: source 0 is below
/// `root`; source `k` below `negatives[k - 1]`, whose name is the relative path's first segment.
pub fn source_path<P: AsRef<Path>>(
    root: &Path,
    negatives: &[P],
    source: usize,
    rel: &str,
) -> PathBuf {
    match source.checked_sub(1).and_then(|k| negatives.get(k)) {
        Some(neg) => join_rel(neg.as_ref(), rel.split_once('/').map_or("", |(_, r)| r)),
        None => join_rel(root, rel),
    }
}

/// `root` joined with a `/`-separated relative path.
fn join_rel(root: &Path, rel: &str) -> PathBuf {
    let mut p = root.to_path_buf();
    p.extend(rel.split('/'));
    p
}

/// Collects image files below `dir` as `/`-separated paths relative to `root`.
fn walk(root: &Path, dir: &Path, found: &mut dyn FnMut(String), unreadable: &mut Vec<Unreadable>) {
    let rel = |p: &Path| {
        p.strip_prefix(root)
            .unwrap_or(p)
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/")
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            unreadable.push(Unreadable {
                path: rel(dir),
                reason: format!("cannot list folder: {e}"),
            });
            return;
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                unreadable.push(Unreadable {
                    path: rel(dir),
                    reason: format!("cannot list folder: {e}"),
                });
                continue;
            }
        };
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            if !entry.file_name().to_string_lossy().starts_with('.') {
                walk(root, &path, found, unreadable);
            }
        } else if is_image(&path) {
            // Broken links and special files are kept so that reading them reports why they
            // are unusable, instead of them silently vanishing from the data set.
            found(rel(&path));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fresh, empty temporary folder for one test.
    pub(crate) fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mpox-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Encodes `img` as PNG at `path`, creating folders.
    pub(crate) fn write_png(path: &Path, img: &RgbImage) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        img.save_with_format(path, image::ImageFormat::Png).unwrap();
    }

    fn solid(v: u8) -> RgbImage {
        RgbImage::from_pixel(40, 40, image::Rgb([v, v / 2, 255 - v]))
    }

    #[test]
    fn scans_classes_recursively_and_ignores_non_images() {
        let root = temp_dir("dataset-scan");
        write_png(&root.join("b").join("x.png"), &solid(1));
        write_png(&root.join("b").join("sub").join("y.PNG"), &solid(2));
        write_png(&root.join("a").join("z.png"), &solid(3));
        std::fs::write(root.join("a").join("notes.txt"), "not an image").unwrap();
        std::fs::create_dir_all(root.join(".hidden")).unwrap();
        write_png(&root.join(".hidden").join("h.png"), &solid(4));
        write_png(&root.join("stray.png"), &solid(5));

        let ds = Dataset::scan(&root).unwrap();
        assert_eq!(ds.classes, ["a", "b"]);
        let paths: Vec<&str> = ds.items.iter().map(|i| i.rel_path.as_str()).collect();
        assert_eq!(paths, ["a/z.png", "b/sub/y.PNG", "b/x.png"]);
        assert_eq!(
            ds.items.iter().map(|i| i.class_index).collect::<Vec<_>>(),
            [0, 1, 1]
        );
        assert_eq!(ds.class_counts(), [1, 2]);
        let bytes = std::fs::read(root.join("b").join("x.png")).unwrap();
        assert_eq!(ds.items[2].sha256, sha256_hex(&bytes));
        assert_eq!(ds.load(&ds.items[2]).unwrap(), solid(1));
        assert!(ds.unreadable.is_empty());
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn sha256_of_known_input() {
        // `printf abc | sha256sum`
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn fingerprint_ignores_names_but_not_labels() {
        let root = temp_dir("dataset-fp");
        write_png(&root.join("a").join("1.png"), &solid(10));
        write_png(&root.join("b").join("2.png"), &solid(20));
        let fp = Dataset::scan(&root).unwrap().fingerprint();
        assert_eq!(fp.len(), 64);

        std::fs::rename(
            root.join("a").join("1.png"),
            root.join("a").join("renamed.png"),
        )
        .unwrap();
        assert_eq!(Dataset::scan(&root).unwrap().fingerprint(), fp);

        std::fs::create_dir_all(root.join("c")).unwrap();
        std::fs::rename(
            root.join("a").join("renamed.png"),
            root.join("c").join("1.png"),
        )
        .unwrap();
        assert_ne!(Dataset::scan(&root).unwrap().fingerprint(), fp);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn fingerprint_is_sha256_of_sorted_lines() {
        let ds = Dataset {
            root: PathBuf::from("/nowhere"),
            negatives: vec![],
            classes: vec!["a".into(), "b".into()],
            class_source: vec![0, 0],
            items: vec![
                Item {
                    rel_path: "b/1".into(),
                    class_index: 1,
                    sha256: "ff".into(),
                    source: 0,
                },
                Item {
                    rel_path: "a/2".into(),
                    class_index: 0,
                    sha256: "00".into(),
                    source: 0,
                },
            ],
            unreadable: vec![],
        };
        assert_eq!(ds.fingerprint(), sha256_hex(b"00  a\nff  b\n"));
    }

    #[test]
    fn missing_or_empty_root_is_a_clear_error() {
        let missing = std::env::temp_dir().join("mpox-definitely-missing-dataset");
        let err = Dataset::scan(&missing).unwrap_err().to_string();
        assert!(err.contains("mpox-definitely-missing-dataset"), "{err}");
        assert!(err.contains("does not exist"), "{err}");

        let empty = temp_dir("dataset-empty");
        let err = Dataset::scan(&empty).unwrap_err().to_string();
        assert!(err.contains("no class sub-folders"), "{err}");
        std::fs::remove_dir_all(empty).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn unreadable_file_is_reported_not_fatal() {
        let root = temp_dir("dataset-unreadable");
        write_png(&root.join("a").join("ok.png"), &solid(1));
        // A dangling link: unreadable even for root, which ignores permission bits.
        std::os::unix::fs::symlink(root.join("gone.png"), root.join("a").join("broken.png"))
            .unwrap();
        let ds = Dataset::scan(&root).unwrap();
        assert_eq!(ds.items.len(), 1);
        assert_eq!(ds.items[0].rel_path, "a/ok.png");
        assert_eq!(ds.unreadable.len(), 1);
        assert_eq!(ds.unreadable[0].path, "a/broken.png");
        assert!(
            ds.unreadable[0].reason.contains("No such file"),
            "{:?}",
            ds.unreadable
        );
        std::fs::remove_dir_all(root).unwrap();
    }
}
