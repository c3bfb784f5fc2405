//! Duplicate-aware, patient-aware stratified k-fold splits, written as a manifest.
//!
//! Photos are grouped (union-find) when they are byte-identical, confirmed near-duplicates
//! (see [`crate::audit`]), or of the same patient; a group never straddles folds, so no test
//! photo has a twin or a sibling in training. Duplicate groups that span class folders (label
//! conflicts: one photo, two diagnoses) are excluded from every fold, since either label may be
//! wrong; so are files that do not decode.
//!
//! # Patient ids
//! A patient id is parsed from the file name (not the folder) by a regex whose first capture
//! group is the id (`^([A-Za-z]+\d+)_`: `M12_01.jpg` → `M12`). Ids are matched **across the
//! whole dataset**, not per class folder: an id names a person, and two photos of one person
//! share skin, lighting and camera whichever folder they sit in. Merging too much only costs
//! fold balance, while merging too little leaks, so the wider scope is the safe one. Files the
//! regex does not match (MSID's `monkeypox12.png`) have no patient id.
//!
//! # Assignment
//! Strata are the class folders (finer than binary labels, so the mix of negatives is alike
//! in every fold too). Groups are placed largest first (equal sizes in seeded random order);
//! each goes to the fold that holds the smallest share of the group's classes so far (fewest photos overall, then a
//! seeded coin, on ties). Singletons come last and level out what the large groups left. The
//! randomness is a SplitMix64 stream of its own, so a manifest is byte-identical for the same
//! data and seed on any platform and with any `rand` version.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::audit::{inspect_dataset, AuditConfig, Inspection, UnionFind};
use crate::dataset::{Dataset, Unreadable};
use crate::error::{Error, Result};

/// Format version of [`SplitManifest`]; [`SplitManifest::load`] refuses others.
pub const MANIFEST_VERSION: u32 = 1;

/// Default patient-id pattern: letters then digits before an underscore (`M12_01.jpg` → `M12`).
pub const DEFAULT_PATIENT_REGEX: &str = r"^([A-Za-z]+\d+)_";

/// Binary labels, in logit order, when a positive class is named.
pub const BINARY_LABELS: [&str; 2] = ["not_mpox", "mpox"];

/// How to split.
#[derive(Clone, Debug)]
pub struct SplitConfig {
    /// Number of folds (at least 2).
    pub folds: usize,
    /// Seed of the tie-breaking and ordering randomness.
    pub seed: u64,
    /// Class folder mapped to `mpox` (every other class to `not_mpox`); `None` keeps the classes.
    pub positive: Option<String>,
    /// Patient-id regex over file names (first capture group, else the whole match).
    pub patient_regex: String,
    /// Near-duplicate detection settings (the progress flag shows a bar while hashing).
    pub audit: AuditConfig,
    /// Extra folders whose photos are all `not_mpox` (needs `positive`); split into the same
    /// folds, deduplicated against the main data.
    pub negatives: Vec<PathBuf>,
}

impl SplitConfig {
    /// Default number of folds.
    pub const FOLDS: usize = 5;
}

impl Default for SplitConfig {
    fn default() -> Self {
        Self {
            folds: Self::FOLDS,
            seed: 0,
            positive: None,
            patient_regex: DEFAULT_PATIENT_REGEX.into(),
            audit: AuditConfig::default(),
            negatives: Vec::new(),
        }
    }
}

/// One photo in a split.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitItem {
    /// Path relative to the data root, `/` separators.
    pub path: String,
    /// Class folder.
    pub class: String,
    /// Training label (the class, or `mpox` / `not_mpox`).
    pub label: String,
    /// Index of `label` in [`SplitManifest::labels`].
    pub label_index: usize,
    /// Group id: photos sharing it (duplicates, one patient) are always in the same fold.
    pub group: usize,
    /// The fold whose test part holds this photo.
    pub fold: usize,
    /// SHA-256 of the file.
    pub sha256: String,
    /// 0: the main data folder; `k`: the `k`-th extra negatives folder.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub source: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// A photo left out of every fold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Excluded {
    /// Path relative to the data root.
    pub path: String,
    /// Why.
    pub reason: String,
}

/// A k-fold split of a dataset: which photo is tested in which fold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitManifest {
    /// [`MANIFEST_VERSION`].
    pub version: u32,
    /// The data folder the paths are relative to, as given.
    pub data_root: String,
    /// Extra negatives folders, as given (items of source `k` lie in the `k`-th, below the
    /// first segment of their path).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub negatives: Vec<String>,
    /// [`Dataset::fingerprint`] of that folder when the split was made.
    pub dataset_fingerprint: String,
    /// Seed used.
    pub seed: u64,
    /// Number of folds.
    pub folds: usize,
    /// The class mapped to `mpox`, if binary.
    pub positive: Option<String>,
    /// Labels in logit order.
    pub labels: Vec<String>,
    /// Patient-id regex used.
    pub patient_regex: String,
    /// Near-duplicate hash distance gate used.
    pub near_threshold: u32,
    /// Near-duplicate correlation used.
    pub min_correlation: f64,
    /// Every photo in a fold, sorted by path.
    pub items: Vec<SplitItem>,
    /// Photos in no fold, sorted by path.
    pub excluded: Vec<Excluded>,
}

/// One fold of a split, opened for use: its test part is fold `fold`, its validation part the
/// next fold, and the rest trains. The one place that rule lives (training, evaluation and the GAN
/// all ask it).
#[derive(Clone, Debug)]
pub struct FoldParts {
    /// The manifest.
    pub manifest: SplitManifest,
    /// The fold whose test part is held out (`None`: nothing is held out for testing).
    pub fold: Option<usize>,
    /// The fold that validates.
    pub val_fold: usize,
}

impl FoldParts {
    /// The training photos.
    pub fn train(&self) -> Vec<&SplitItem> {
        self.pick(|i| Some(i.fold) != self.fold && i.fold != self.val_fold)
    }

    /// The validation photos.
    pub fn val(&self) -> Vec<&SplitItem> {
        self.pick(|i| i.fold == self.val_fold)
    }

    /// The test photos.
    pub fn test(&self) -> Vec<&SplitItem> {
        self.pick(|i| Some(i.fold) == self.fold)
    }

    fn pick(&self, f: impl Fn(&SplitItem) -> bool) -> Vec<&SplitItem> {
        self.manifest.items.iter().filter(|i| f(i)).collect()
    }
}

impl SplitManifest {
    /// Loads the manifest at `path`, checks that `fold` exists and that the data at `root` (with
    /// the manifest's extra negatives folders) is the data it was made on, and opens that fold.
    pub fn open(path: &Path, root: &Path, fold: usize) -> Result<FoldParts> {
        let manifest = Self::load(path)?;
        if fold >= manifest.folds {
            return Err(Error::Invalid(format!(
                "fold {fold} does not exist: the split has {} folds (0..{})",
                manifest.folds,
                manifest.folds - 1
            )));
        }
        let negatives: Vec<PathBuf> = manifest.negatives.iter().map(PathBuf::from).collect();
        manifest.check_dataset(&Dataset::scan_with_negatives(root, &negatives)?)?;
        Ok(manifest.into_fold(fold))
    }

    /// This manifest's fold `fold` (not checked against the data: see [`SplitManifest::open`]).
    pub fn into_fold(self, fold: usize) -> FoldParts {
        let val_fold = (fold + 1) % self.folds;
        FoldParts {
            manifest: self,
            fold: Some(fold),
            val_fold,
        }
    }

    /// Every photo outside fold `val_fold` trains, that fold validates, none is held out for
    /// testing (a run without a split of its own).
    pub fn without_test(self, val_fold: usize) -> FoldParts {
        FoldParts {
            manifest: self,
            fold: None,
            val_fold,
        }
    }

    /// (training items, test items) of fold `k`: the test part is fold `k`, training is the rest.
    pub fn fold(&self, k: usize) -> (Vec<&SplitItem>, Vec<&SplitItem>) {
        self.items.iter().partition(|i| i.fold != k)
    }

    /// Photos per label in each fold: `counts[fold][label_index]`.
    pub fn fold_label_counts(&self) -> Vec<Vec<usize>> {
        let mut counts = vec![vec![0; self.labels.len()]; self.folds];
        for i in &self.items {
            counts[i.fold][i.label_index] += 1;
        }
        counts
    }

    /// Full path of an item.
    pub fn path_of(&self, item: &SplitItem) -> PathBuf {
        crate::dataset::source_path(
            Path::new(&self.data_root),
            &self.negatives,
            item.source,
            &item.path,
        )
    }

    /// Fails unless `dataset` has the fingerprint the split was made on (a changed folder would
    /// silently move photos between training and test).
    pub fn check_dataset(&self, dataset: &Dataset) -> Result<()> {
        let found = dataset.fingerprint();
        if found != self.dataset_fingerprint {
            return Err(Error::Invalid(format!(
                "{} has changed since the split was made (fingerprint {found}, manifest has {})",
                dataset.root.display(),
                self.dataset_fingerprint
            )));
        }
        Ok(())
    }

    /// Writes the manifest as pretty JSON, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::atomic::write_atomic(path, self.to_json().as_bytes())
    }

    /// The manifest as pretty JSON with a final newline (what [`SplitManifest::save`] writes).
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("manifest serialises");
        s.push('\n');
        s
    }

    /// Reads a manifest and checks its version and internal consistency.
    pub fn load(path: &Path) -> Result<SplitManifest> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let m: SplitManifest = serde_json::from_str(&text).map_err(|e| {
            Error::Invalid(format!("{}: not a split manifest: {e}", path.display()))
        })?;
        let bad = |why: String| Error::Invalid(format!("{}: {why}", path.display()));
        if m.version != MANIFEST_VERSION {
            return Err(bad(format!(
                "manifest version {} is not supported (this trainer reads {MANIFEST_VERSION})",
                m.version
            )));
        }
        for i in &m.items {
            if i.fold >= m.folds || m.labels.get(i.label_index) != Some(&i.label) {
                return Err(bad(format!("item {} has fold {} / label {} ({}) inconsistent with {} folds and labels {:?}",
                    i.path, i.fold, i.label_index, i.label, m.folds, m.labels)));
            }
        }
        Ok(m)
    }

    /// A table of photos per label and fold, groups and exclusions, for people.
    pub fn summary(&self) -> String {
        let counts = self.fold_label_counts();
        let width = self
            .labels
            .iter()
            .map(|l| l.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let mut s = String::new();
        let _ = write!(s, "{:<6}", "fold");
        for l in &self.labels {
            let _ = write!(s, "  {l:>width$}");
        }
        let _ = writeln!(s, "  {:>width$}  {:>6}", "total", "groups");
        for (f, row) in counts.iter().enumerate() {
            let _ = write!(s, "{f:<6}");
            for c in row {
                let _ = write!(s, "  {c:>width$}");
            }
            let groups: BTreeSet<usize> = self
                .items
                .iter()
                .filter(|i| i.fold == f)
                .map(|i| i.group)
                .collect();
            let _ = writeln!(
                s,
                "  {:>width$}  {:>6}",
                row.iter().sum::<usize>(),
                groups.len()
            );
        }
        let groups: BTreeMap<usize, usize> = self.items.iter().fold(BTreeMap::new(), |mut m, i| {
            *m.entry(i.group).or_insert(0) += 1;
            m
        });
        let multi = groups.values().filter(|&&n| n > 1).count();
        let largest = groups.values().copied().max().unwrap_or(0);
        let _ = writeln!(
            s,
            "{} photos in {} groups ({multi} of two or more photos, largest {largest}); {} excluded",
            self.items.len(),
            groups.len(),
            self.excluded.len()
        );
        for e in &self.excluded {
            let _ = writeln!(s, "  excluded {}: {}", e.path, e.reason);
        }
        s
    }
}

/// The patient id in a file name, per `re` (first capture group, else the whole match).
pub fn patient_id(re: &Regex, file_name: &str) -> Option<String> {
    let caps = re.captures(file_name)?;
    caps.get(1)
        .or_else(|| caps.get(0))
        .map(|m| m.as_str().to_string())
        .filter(|s| !s.is_empty())
}

/// Scans, decodes and hashes `root`, finds near-duplicates, and splits.
pub fn split(root: &Path, config: &SplitConfig) -> Result<SplitManifest> {
    let dataset = Dataset::scan_with_negatives(root, &config.negatives)?;
    split_inspected(&inspect_dataset(dataset, config.audit.progress), config)
}

/// Splits an already inspected dataset (so that `pipeline` decodes and hashes each photo once
/// for both its audit and its split).
pub fn split_inspected(ins: &Inspection, config: &SplitConfig) -> Result<SplitManifest> {
    if ins.dataset.negatives != config.negatives {
        return Err(Error::Invalid(
            "the inspection was made with other negatives folders than the split asks for".into(),
        ));
    }
    let near: Vec<(usize, usize)> = ins
        .near_pairs(&config.audit)
        .iter()
        .map(|p| (p.a, p.b))
        .collect();
    build_manifest(&ins.dataset, &ins.undecodable, &near, config)
}

/// Splits a scanned dataset given its undecodable files and its near-duplicate pairs (indices
/// into `dataset.items`). The pure part of [`split`], testable without images.
pub fn build_manifest(
    dataset: &Dataset,
    undecodable: &[Unreadable],
    near: &[(usize, usize)],
    config: &SplitConfig,
) -> Result<SplitManifest> {
    if config.folds < 2 {
        return Err(Error::Invalid(format!(
            "--folds must be at least 2, got {}",
            config.folds
        )));
    }
    let re = Regex::new(&config.patient_regex).map_err(|e| {
        Error::Invalid(format!(
            "invalid patient regex {:?}: {e}",
            config.patient_regex
        ))
    })?;
    let (labels, label_of_class) = labels(dataset, config.positive.as_deref())?;
    let items = &dataset.items;
    let n = items.len();

    // Duplicates only (exact and near): a component spanning classes is a label conflict.
    let mut dups = UnionFind::new(n);
    let mut by_sha: HashMap<&str, usize> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        if let Some(&j) = by_sha.get(item.sha256.as_str()) {
            dups.union(i, j);
        } else {
            by_sha.insert(&item.sha256, i);
        }
    }
    for &(a, b) in near {
        if a >= n || b >= n {
            return Err(Error::Invalid(format!(
                "near-duplicate pair ({a}, {b}) out of range"
            )));
        }
        dups.union(a, b);
    }
    let mut excluded: BTreeMap<usize, String> = BTreeMap::new();
    for u in undecodable {
        if let Some(i) = items.iter().position(|it| it.rel_path == u.path) {
            excluded.insert(i, format!("unreadable: {}", u.reason));
        }
    }
    for group in dups.groups() {
        // Main-data classes: two of them in one group is a label conflict. An extra negative
        // that duplicates a main-data photo is a conflict if that photo is positive, and
        // otherwise a redundant copy, dropped in favour of the main data's.
        let main: Vec<usize> = group
            .iter()
            .copied()
            .filter(|&i| items[i].source == 0)
            .collect();
        let classes: BTreeSet<usize> = main.iter().map(|&i| items[i].class_index).collect();
        let extra = main.len() < group.len();
        let positive_main = main
            .iter()
            .any(|&i| labels[label_of_class[items[i].class_index]] == BINARY_LABELS[1]);
        if classes.len() < 2 && !(extra && positive_main) {
            if extra && !main.is_empty() {
                let keep = items[main[0]].rel_path.clone();
                for &i in group.iter().filter(|&&i| items[i].source > 0) {
                    excluded
                        .entry(i)
                        .or_insert_with(|| format!("duplicates {keep} of the main data"));
                }
            }
            continue;
        }
        for &i in &group {
            let others: Vec<String> = group
                .iter()
                .filter(|&&j| {
                    items[j].class_index != items[i].class_index
                        && (items[j].source == 0 || items[i].source == 0)
                })
                .map(|&j| items[j].rel_path.clone())
                .collect();
            let kind = if group.iter().any(|&j| {
                j != i
                    && items[j].sha256 == items[i].sha256
                    && items[j].class_index != items[i].class_index
            }) {
                "byte-identical to"
            } else {
                "duplicate of"
            };
            excluded.entry(i).or_insert_with(|| {
                format!(
                    "label conflict: {kind} {} in another class",
                    others.join(", ")
                )
            });
        }
    }

    check_usable(dataset, &labels, &label_of_class, &excluded)?;

    // Groups: duplicates plus patients, over the photos that stay.
    let mut uf = UnionFind::new(n);
    for group in dups.groups() {
        for w in group.windows(2) {
            uf.union(w[0], w[1]);
        }
    }
    let mut by_patient: HashMap<String, usize> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        let name = item.rel_path.rsplit('/').next().unwrap_or(&item.rel_path);
        if let Some(id) = patient_id(&re, name) {
            match by_patient.get(&id) {
                Some(&j) => uf.union(i, j),
                None => {
                    by_patient.insert(id, i);
                }
            }
        }
    }
    // Canonical group ids: by first (path-sorted) member, so they do not depend on the seed.
    let groups: Vec<Vec<usize>> = uf
        .groups()
        .into_iter()
        .map(|g| {
            g.into_iter()
                .filter(|i| !excluded.contains_key(i))
                .collect::<Vec<_>>()
        })
        .filter(|g| !g.is_empty())
        .collect();
    // Stratify on class folders, not on labels: in a binary split this also keeps the mix of
    // negatives (healthy skin, chickenpox, measles) alike across folds, and the binary
    // labels are balanced as sums of balanced classes.
    let class_counts: Vec<Vec<usize>> = groups
        .iter()
        .map(|g| {
            let mut c = vec![0; dataset.classes.len()];
            for &i in g {
                c[items[i].class_index] += 1;
            }
            c
        })
        .collect();
    if groups.len() < config.folds {
        return Err(Error::Invalid(format!(
            "{} independent groups of photos cannot fill {} folds",
            groups.len(),
            config.folds
        )));
    }
    let fold_of_group = assign_folds(&class_counts, config.folds, config.seed);

    let mut split_items = Vec::with_capacity(n);
    for (g, members) in groups.iter().enumerate() {
        for &i in members {
            let item = &items[i];
            let label_index = label_of_class[item.class_index];
            split_items.push(SplitItem {
                path: item.rel_path.clone(),
                class: dataset.classes[item.class_index].clone(),
                label: labels[label_index].clone(),
                label_index,
                group: g,
                fold: fold_of_group[g],
                sha256: item.sha256.clone(),
                source: item.source,
            });
        }
    }
    split_items.sort_by(|a, b| a.path.cmp(&b.path));
    let mut excluded: Vec<Excluded> = excluded
        .into_iter()
        .map(|(i, reason)| Excluded {
            path: items[i].rel_path.clone(),
            reason,
        })
        .chain(dataset.unreadable.iter().map(|u| Excluded {
            path: u.path.clone(),
            reason: format!("unreadable: {}", u.reason),
        }))
        .collect();
    excluded.sort_by(|a, b| a.path.cmp(&b.path));

    Ok(SplitManifest {
        version: MANIFEST_VERSION,
        data_root: dataset.root.display().to_string(),
        negatives: dataset
            .negatives
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        dataset_fingerprint: dataset.fingerprint(),
        seed: config.seed,
        folds: config.folds,
        positive: config.positive.clone(),
        labels,
        patient_regex: config.patient_regex.clone(),
        near_threshold: config.audit.near_threshold,
        min_correlation: config.audit.min_correlation,
        items: split_items,
        excluded,
    })
}

/// Refuses, before any training, data that cannot make a classifier: one label only, or a label
/// whose every photo is unreadable or excluded. The error names the label, a file and its cause.
fn check_usable(
    dataset: &Dataset,
    labels: &[String],
    label_of_class: &[usize],
    excluded: &BTreeMap<usize, String>,
) -> Result<()> {
    if labels.len() < 2 {
        return Err(Error::Invalid(format!(
            "{} holds one class only ({}): a screening model needs photos of mpox and of \
             something else, one sub-folder per class",
            dataset.root.display(),
            labels.join(", ")
        )));
    }
    if dataset
        .items
        .iter()
        .enumerate()
        .all(|(i, _)| excluded.contains_key(&i))
    {
        let (i, why) = excluded
            .iter()
            .next()
            .map(|(i, w)| (*i, w.as_str()))
            .unwrap_or((0, "no photos"));
        let example = dataset.items.get(i).map_or(String::new(), |it| {
            format!(" (e.g. {}: {why})", it.rel_path)
        });
        return Err(Error::Invalid(format!(
            "none of the {} photos in {} can be used{example}",
            dataset.items.len(),
            dataset.root.display()
        )));
    }
    for (label_index, label) in labels.iter().enumerate() {
        let of_label: Vec<usize> = (0..dataset.items.len())
            .filter(|&i| label_of_class[dataset.items[i].class_index] == label_index)
            .collect();
        if of_label.iter().any(|i| !excluded.contains_key(i)) {
            continue;
        }
        let example = of_label
            .first()
            .map(|&i| {
                format!(
                    " (e.g. {}: {})",
                    dataset.items[i].rel_path,
                    excluded.get(&i).map_or("", String::as_str)
                )
            })
            .unwrap_or_default();
        return Err(Error::Invalid(format!(
            "label {label:?} has no usable photo: {} found, all unreadable or excluded{example}",
            of_label.len()
        )));
    }
    Ok(())
}

/// The labels and each class's label index (extra negatives' conditions are all `not_mpox`).
fn labels(dataset: &Dataset, positive: Option<&str>) -> Result<(Vec<String>, Vec<usize>)> {
    let classes = &dataset.classes;
    match positive {
        None if !dataset.negatives.is_empty() => Err(Error::Invalid(
            "extra negatives folders need a binary split: name the mpox class with --positive"
                .into(),
        )),
        None => Ok((classes.to_vec(), (0..classes.len()).collect())),
        Some(p) => {
            if !classes
                .iter()
                .enumerate()
                .any(|(k, c)| c == p && !dataset.is_extra_negative(k))
            {
                return Err(Error::Invalid(format!(
                    "positive class {p:?} is not a class folder (classes: {})",
                    classes.join(", ")
                )));
            }
            Ok((
                BINARY_LABELS.iter().map(|s| s.to_string()).collect(),
                classes
                    .iter()
                    .enumerate()
                    .map(|(k, c)| usize::from(c == p && !dataset.is_extra_negative(k)))
                    .collect(),
            ))
        }
    }
}

/// Assigns groups (given as photo counts per stratum, e.g. per class) to `folds` folds;
/// returns each group's fold.
///
/// Largest groups first, equal sizes in seeded random order; each to the fold where the
/// group's strata are least represented relative to their totals (Σ_s g_s · count_f,s / total_s),
/// then the smallest fold, then a seeded choice.
pub fn assign_folds(groups: &[Vec<usize>], folds: usize, seed: u64) -> Vec<usize> {
    let labels = groups.first().map_or(0, |g| g.len());
    let totals: Vec<f64> = (0..labels)
        .map(|l| groups.iter().map(|g| g[l]).sum::<usize>().max(1) as f64)
        .collect();
    let mut rng = SplitMix64(seed);
    let mut order: Vec<usize> = (0..groups.len()).collect();
    // Fisher–Yates, then a stable sort by size: random among equals, largest first.
    for i in (1..order.len()).rev() {
        let j = rng.below(i + 1);
        order.swap(i, j);
    }
    order.sort_by_key(|&g| std::cmp::Reverse(groups[g].iter().sum::<usize>()));

    let mut counts = vec![vec![0usize; labels]; folds];
    let mut fold_of = vec![0; groups.len()];
    for g in order {
        let score = |f: usize| -> f64 {
            (0..labels)
                .map(|l| groups[g][l] as f64 * counts[f][l] as f64 / totals[l])
                .sum()
        };
        let size = |f: usize| counts[f].iter().sum::<usize>();
        let best_score = (0..folds).map(score).fold(f64::INFINITY, f64::min);
        let candidates: Vec<usize> = (0..folds)
            .filter(|&f| score(f) <= best_score + 1e-12)
            .collect();
        let best_size = candidates.iter().map(|&f| size(f)).min().unwrap_or(0);
        let tied: Vec<usize> = candidates
            .into_iter()
            .filter(|&f| size(f) == best_size)
            .collect();
        let f = tied[rng.below(tied.len())];
        fold_of[g] = f;
        for l in 0..labels {
            counts[f][l] += groups[g][l];
        }
    }
    fold_of
}

/// SplitMix64 (Steele et al. 2014): tiny, and its output is fixed by definition, which keeps
/// manifests reproducible forever.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n ≥ 1; the modulo bias is below 2^-50 for any n used here).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::Item;

    #[test]
    fn splitmix_reference_values() {
        // First outputs for seed 1234567 from the reference implementation (Vigna's splitmix64.c).
        let mut r = SplitMix64(1_234_567);
        assert_eq!(r.next(), 6_457_827_717_110_365_317);
        assert_eq!(r.next(), 3_203_168_211_198_807_973);
    }

    #[test]
    fn patient_ids_from_file_names() {
        let re = Regex::new(DEFAULT_PATIENT_REGEX).unwrap();
        assert_eq!(patient_id(&re, "M12_01.jpg").as_deref(), Some("M12"));
        assert_eq!(
            patient_id(&re, "patient7_b.png").as_deref(),
            Some("patient7")
        );
        assert_eq!(patient_id(&re, "monkeypox12.png"), None);
        assert_eq!(patient_id(&re, "12_01.jpg"), None);
        let whole = Regex::new(r"^P\d+").unwrap();
        assert_eq!(patient_id(&whole, "P3-left.jpg").as_deref(), Some("P3"));
    }

    /// A fake dataset: `n` photos over classes with the given weights, random patient-style
    /// names for some, random near-duplicate pairs within a class, a few exact copies, and
    /// `conflicts` cross-class exact copies. Returns the dataset and the near pairs.
    fn generated(seed: u64, n: usize, conflicts: usize) -> (Dataset, Vec<(usize, usize)>) {
        let mut rng = SplitMix64(seed);
        let classes = vec![
            "Chickenpox".to_string(),
            "Measles".into(),
            "Monkeypox".into(),
            "Normal".into(),
        ];
        let weights = [14, 12, 36, 38];
        let mut items = Vec::new();
        for k in 0..n {
            let r = rng.below(100);
            let class_index = match r {
                r if r < weights[0] => 0,
                r if r < weights[0] + weights[1] => 1,
                r if r < weights[0] + weights[1] + weights[2] => 2,
                _ => 3,
            };
            // One photo in three carries a patient id shared by up to 4 photos of its class.
            let name = if rng.below(3) == 0 {
                format!("P{}c{}_{k}.jpg", rng.below(n / 12 + 1), class_index)
            } else {
                format!("img{k}.png")
            };
            items.push(Item {
                rel_path: format!("{}/{name}", classes[class_index]),
                class_index,
                sha256: format!("{k:064x}"),
                source: 0,
            });
        }
        // Exact copies within a class.
        for _ in 0..n / 30 {
            let a = rng.below(n);
            let mut copy = items[a].clone();
            copy.rel_path = format!("{}/copy{}.png", classes[copy.class_index], items.len());
            items.push(copy);
        }
        // Cross-class exact copies: label conflicts.
        for c in 0..conflicts {
            let a = rng.below(n);
            let mut copy = items[a].clone();
            copy.class_index = (copy.class_index + 1) % classes.len();
            copy.rel_path = format!("{}/conflict{c}.png", classes[copy.class_index]);
            items.push(copy);
        }
        items.sort_by(|a, b| a.rel_path.cmp(&b.rel_path));
        // Near pairs within a class, some chaining into larger groups.
        let mut near = Vec::new();
        for _ in 0..n / 8 {
            let a = rng.below(items.len());
            let same: Vec<usize> = (0..items.len())
                .filter(|&b| b != a && items[b].class_index == items[a].class_index)
                .collect();
            let b = same[rng.below(same.len())];
            near.push((a.min(b), a.max(b)));
        }
        let ds = Dataset {
            root: PathBuf::from("/data"),
            negatives: vec![],
            class_source: vec![0; classes.len()],
            classes,
            items,
            unreadable: vec![],
        };
        (ds, near)
    }

    fn config(folds: usize, seed: u64, positive: Option<&str>) -> SplitConfig {
        SplitConfig {
            folds,
            seed,
            positive: positive.map(String::from),
            patient_regex: DEFAULT_PATIENT_REGEX.into(),
            audit: AuditConfig::default(),
            negatives: Vec::new(),
        }
    }

    #[test]
    fn groups_never_straddle_folds() {
        let re = Regex::new(DEFAULT_PATIENT_REGEX).unwrap();
        for seed in 0..5 {
            let (ds, near) = generated(seed, 400, 3);
            let m = build_manifest(&ds, &[], &near, &config(5, seed, None)).unwrap();
            let fold_of: HashMap<&str, usize> =
                m.items.iter().map(|i| (i.path.as_str(), i.fold)).collect();
            // Same group id → same fold.
            let mut group_fold: HashMap<usize, usize> = HashMap::new();
            for i in &m.items {
                assert_eq!(
                    *group_fold.entry(i.group).or_insert(i.fold),
                    i.fold,
                    "group {} split",
                    i.group
                );
            }
            // And directly from the evidence: near pairs, equal hashes, equal patient ids.
            for &(a, b) in &near {
                if let (Some(fa), Some(fb)) = (
                    fold_of.get(ds.items[a].rel_path.as_str()),
                    fold_of.get(ds.items[b].rel_path.as_str()),
                ) {
                    assert_eq!(fa, fb, "near pair split");
                }
            }
            let mut patient_fold: HashMap<String, usize> = HashMap::new();
            let mut sha_fold: HashMap<&str, usize> = HashMap::new();
            for i in &m.items {
                assert_eq!(*sha_fold.entry(&i.sha256).or_insert(i.fold), i.fold);
                if let Some(p) = patient_id(&re, i.path.rsplit('/').next().unwrap()) {
                    assert_eq!(*patient_fold.entry(p).or_insert(i.fold), i.fold);
                }
            }
        }
    }

    #[test]
    fn label_conflicts_are_excluded_everywhere() {
        let (ds, near) = generated(7, 300, 4);
        let m = build_manifest(&ds, &[], &near, &config(5, 1, None)).unwrap();
        let conflict_paths: Vec<&str> = m
            .excluded
            .iter()
            .filter(|e| e.reason.starts_with("label conflict"))
            .map(|e| e.path.as_str())
            .collect();
        // Each planted conflict excludes the copy and its original (and their duplicates).
        assert!(conflict_paths.len() >= 8, "{conflict_paths:?}");
        for c in 0..4 {
            assert!(conflict_paths
                .iter()
                .any(|p| p.ends_with(&format!("/conflict{c}.png"))));
        }
        let in_folds: BTreeSet<&str> = m.items.iter().map(|i| i.path.as_str()).collect();
        for e in &m.excluded {
            assert!(
                !in_folds.contains(e.path.as_str()),
                "{} excluded and in a fold",
                e.path
            );
        }
        for k in 0..m.folds {
            let (train, test) = m.fold(k);
            assert_eq!(train.len() + test.len(), m.items.len());
            assert!(test.iter().all(|i| i.fold == k) && train.iter().all(|i| i.fold != k));
        }
        assert_eq!(m.items.len() + m.excluded.len(), ds.items.len());
    }

    #[test]
    fn folds_are_stratified() {
        for seed in 0..5 {
            let (ds, near) = generated(100 + seed, 600, 2);
            let m = build_manifest(&ds, &[], &near, &config(5, seed, None)).unwrap();
            let counts = m.fold_label_counts();
            let mut group_size: HashMap<usize, usize> = HashMap::new();
            for i in &m.items {
                *group_size.entry(i.group).or_insert(0) += 1;
            }
            let largest = group_size.values().copied().max().unwrap();
            for l in 0..m.labels.len() {
                let total: usize = counts.iter().map(|c| c[l]).sum();
                let ideal = total as f64 / 5.0;
                for (f, c) in counts.iter().enumerate() {
                    // Greedy placement keeps each fold within one largest group of the ideal.
                    let off = (c[l] as f64 - ideal).abs();
                    assert!(off <= largest as f64, "seed {seed} fold {f} label {l}: {} vs {ideal:.1} (largest group {largest})", c[l]);
                    // And, on this data, within 20 % of the ideal.
                    assert!(
                        off <= 0.2 * ideal + 1.0,
                        "seed {seed} fold {f} label {l}: {} vs {ideal:.1}",
                        c[l]
                    );
                }
            }
        }
    }

    #[test]
    fn deterministic_per_seed_and_seed_matters() {
        let (ds, near) = generated(3, 300, 2);
        let a = build_manifest(&ds, &[], &near, &config(5, 42, None))
            .unwrap()
            .to_json();
        let b = build_manifest(&ds, &[], &near, &config(5, 42, None))
            .unwrap()
            .to_json();
        assert_eq!(a, b);
        let c = build_manifest(&ds, &[], &near, &config(5, 43, None)).unwrap();
        let a: SplitManifest = serde_json::from_str(&a).unwrap();
        let moved = a
            .items
            .iter()
            .zip(&c.items)
            .filter(|(x, y)| x.fold != y.fold)
            .count();
        assert!(
            moved > a.items.len() / 4,
            "only {moved} photos moved with another seed"
        );
        // Group ids and exclusions do not depend on the seed.
        assert!(a
            .items
            .iter()
            .zip(&c.items)
            .all(|(x, y)| x.group == y.group));
        assert_eq!(a.excluded, c.excluded);
    }

    #[test]
    fn binary_mapping() {
        let (ds, near) = generated(5, 200, 1);
        let m = build_manifest(&ds, &[], &near, &config(3, 0, Some("Monkeypox"))).unwrap();
        assert_eq!(m.labels, ["not_mpox", "mpox"]);
        assert_eq!(m.positive.as_deref(), Some("Monkeypox"));
        for i in &m.items {
            assert_eq!(
                i.label_index,
                usize::from(i.class == "Monkeypox"),
                "{}",
                i.path
            );
            assert_eq!(i.label, m.labels[i.label_index]);
        }
        let counts = m.fold_label_counts();
        assert!(counts.iter().all(|c| c[0] > 0 && c[1] > 0));
        let err = build_manifest(&ds, &[], &near, &config(3, 0, Some("Smallpox"))).unwrap_err();
        assert!(err.to_string().contains("Monkeypox"), "{err}");
        // Without a positive class, labels are the class folders.
        let m = build_manifest(&ds, &[], &near, &config(3, 0, None)).unwrap();
        assert_eq!(m.labels, ds.classes);
    }

    #[test]
    fn assign_folds_balances_a_small_case() {
        // Label 0: groups of 4, 2, 1, 1 (8 photos); label 1: six singletons. Two folds.
        let groups = vec![
            vec![4, 0],
            vec![2, 0],
            vec![1, 0],
            vec![1, 0],
            vec![0, 1],
            vec![0, 1],
            vec![0, 1],
            vec![0, 1],
            vec![0, 1],
            vec![0, 1],
        ];
        for seed in 0..20 {
            let f = assign_folds(&groups, 2, seed);
            let mut counts = [[0; 2]; 2];
            for (g, &fold) in f.iter().enumerate() {
                counts[fold][0] += groups[g][0];
                counts[fold][1] += groups[g][1];
            }
            assert_eq!(counts[0][0], 4, "seed {seed}: {counts:?}");
            assert_eq!(counts[0][1], 3, "seed {seed}: {counts:?}");
        }
    }

    #[test]
    fn manifest_round_trip_and_checks() {
        let (ds, near) = generated(9, 120, 1);
        let m = build_manifest(&ds, &[], &near, &config(4, 2, Some("Monkeypox"))).unwrap();
        let dir = crate::dataset::tests::temp_dir("split-manifest");
        let path = dir.join("split.json");
        m.save(&path).unwrap();
        let back = SplitManifest::load(&path).unwrap();
        assert_eq!(back, m);
        back.check_dataset(&ds).unwrap();
        let mut changed = ds.clone();
        changed.items.pop();
        assert!(back.check_dataset(&changed).is_err());
        let summary = m.summary();
        assert!(summary.starts_with("fold"), "{summary}");

        let mut bad = m.clone();
        bad.version = 99;
        std::fs::write(&path, bad.to_json()).unwrap();
        assert!(SplitManifest::load(&path)
            .unwrap_err()
            .to_string()
            .contains("version 99"));
        let mut bad = m.clone();
        bad.items[0].fold = 4;
        std::fs::write(&path, bad.to_json()).unwrap();
        assert!(SplitManifest::load(&path).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn rejects_bad_settings() {
        let (ds, near) = generated(1, 50, 0);
        assert!(build_manifest(&ds, &[], &near, &config(1, 0, None)).is_err());
        let mut c = config(3, 0, None);
        c.patient_regex = "(".into();
        assert!(build_manifest(&ds, &[], &near, &c)
            .unwrap_err()
            .to_string()
            .contains("regex"));
        assert!(build_manifest(&ds, &[], &near, &config(1000, 0, None)).is_err());
    }

    #[test]
    fn end_to_end_on_images() {
        let root = crate::audit::tests::messy_dataset("split-messy");
        let m = split(&root, &config(2, 0, None)).unwrap();
        let excluded: Vec<(&str, &str)> = m
            .excluded
            .iter()
            .map(|e| (e.path.as_str(), e.reason.split(':').next().unwrap()))
            .collect();
        assert_eq!(
            excluded,
            [
                ("a/broken.jpg", "unreadable"),
                ("a/p2.png", "label conflict"),
                ("a/p4.png", "label conflict"),
                ("b/p2_again.png", "label conflict"),
                ("b/p4_flipped.png", "label conflict"),
            ]
        );
        let fold = |p: &str| m.items.iter().find(|i| i.path == p).unwrap().fold;
        assert_eq!(fold("a/p1.png"), fold("a/p1_copy.png"));
        assert_eq!(fold("a/p1.png"), fold("a/p1_small.png"));
        assert_eq!(m.items.len(), 4);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn data_that_cannot_make_a_classifier_is_refused_naming_a_file() {
        let (ds, near) = generated(5, 120, 0);
        let unreadable = |pred: &dyn Fn(&Item) -> bool| -> Vec<Unreadable> {
            ds.items
                .iter()
                .filter(|it| pred(it))
                .map(|it| Unreadable {
                    path: it.rel_path.clone(),
                    reason: "truncated JPEG".into(),
                })
                .collect()
        };
        // Every photo unreadable.
        let all = unreadable(&|_| true);
        let e = build_manifest(&ds, &all, &near, &config(5, 0, None)).unwrap_err();
        assert!(
            matches!(e, Error::Invalid(ref m) if m.contains("none of the") && m.contains("truncated JPEG") && (m.contains(".png") || m.contains(".jpg"))),
            "{e}"
        );
        // Every photo of the positive class unreadable.
        let mpox = unreadable(&|it| it.rel_path.starts_with("Monkeypox/"));
        let e = build_manifest(&ds, &mpox, &near, &config(5, 0, Some("Monkeypox"))).unwrap_err();
        assert!(
            matches!(e, Error::Invalid(ref m) if m.contains("\"mpox\" has no usable photo") && m.contains("Monkeypox/") && m.contains("truncated JPEG")),
            "{e}"
        );
        // One class only.
        let mut one = ds.clone();
        one.classes.truncate(1);
        one.class_source.truncate(1);
        one.items.retain(|it| it.class_index == 0);
        let e = build_manifest(&one, &[], &[], &config(2, 0, None)).unwrap_err();
        assert!(
            matches!(e, Error::Invalid(ref m) if m.contains("one class only")),
            "{e}"
        );
        // A readable remainder still splits.
        let some = unreadable(&|it| it.rel_path.ends_with("0.png"));
        assert!(build_manifest(&ds, &some, &near, &config(5, 0, Some("Monkeypox"))).is_ok());
    }
}
