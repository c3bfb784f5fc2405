//! Dataset audit: what is in an ImageFolder tree, and what is wrong with it.
//!
//! Counts per class, pixel sizes, formats, unreadable files, exact duplicates (same SHA-256),
//! near-duplicates (perceptual hash within a Hamming distance, optionally against the mirror
//! image) and label conflicts (the same photo filed under two classes). Scraped medical photo
//! sets are full of these, and a split that ignores them leaks test photos into training.
//!
//! # Near-duplicates in two stages
//! 1. **Gate: a perceptual hash.** A 64-bit DCT hash in the style of pHash / Python's
//!    `imagehash.phash`: luma, box-averaged down to 32×32, the lowest 8×8 frequencies of its 2-D
//!    DCT-II, one bit per coefficient above their median. Low frequencies survive re-encoding,
//!    rescaling, mild crops and colour changes, while unrelated photos land near 32 bits apart.
//!    Mirroring a photo only negates the odd horizontal frequencies, so the hash of the mirror
//!    image comes free from the same coefficients. Pairs within [`DEFAULT_NEAR_THRESHOLD`] bits
//!    are candidates.
//! 2. **Verification: aligned correlation.** A 64-bit hash cannot tell a re-crop of a photo from
//!    a different photo of the same layout (stock portraits on white, backs with a rash): on MSID
//!    their distances overlap. So each candidate pair is confirmed by the best normalised
//!    correlation of band-passed 48×48 luma thumbnails over a small search of crops (scales 1 to
//!    0.6, a 7×7 grid of offsets, both ways round), which a re-crop of the same photo reaches and
//!    a look-alike does not; see [`DEFAULT_MIN_CORRELATION`].
//!
//! The figures behind both numbers are reproduced by
//! `cargo run --release -p mpox-trainer --example near_duplicate_distances -- path/to/msid`
//! (the MSID ImageFolder tree).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::Path;

use image::RgbImage;
use indicatif::{ProgressBar, ProgressStyle};
use mpox_sdk::decode::{decode, Limits};
use rayon::prelude::*;
use serde::Serialize;

use crate::dataset::{Dataset, Unreadable};
use crate::error::Result;

/// Largest Hamming distance (of 64 bits) between perceptual hashes at which two photos become a
/// near-duplicate candidate (to be confirmed by [`DEFAULT_MIN_CORRELATION`]).
///
/// Measured on MSID (770 photos, 296,065 pairs, mirror images included; the hash makes every
/// distance even): byte-identical files and re-encodings are at 0–2; re-crops and rescales that
/// were checked by eye spread over 4–18 (e.g. `Monkeypox/monkeypox113.png` ~ `monkeypox76.png`
/// at 18, a colour and a grey re-crop of one photo at 18); different photos start at 8 (two
/// stock portraits) and the bulk of unrelated pairs sits at 24–32. No hash distance separates
/// the two, so the gate is set wide, at 18, where the last confirmed re-crops were found
/// (1,162 candidate pairs on MSID, 0.4 % of all pairs), and the correlation decides.
pub const DEFAULT_NEAR_THRESHOLD: u32 = 18;

/// Smallest aligned band-pass correlation (−1..1) that confirms a candidate pair as a
/// near-duplicate.
///
/// On MSID's 1,162 candidates: byte-identical files, re-encodings and near-identical copies
/// (hash distance 0–2) score ≥ 0.89; the 15 re-crop / mirror / colour-to-grey pairs at hash
/// distance 4–18 that were checked by eye and pass score 0.80–0.97, and the 6 hardest (strong
/// zoom) 0.66–0.73; the highest-scoring different photos are two stock portraits on white at
/// 0.762, then 0.738 and 0.730. 0.78 sits in the gap above every look-alike seen, so no
/// unrelated photos are glued together (a false link chains through union-find into large
/// groups and upsets stratification), at the price of those few hardest re-crops.
pub const DEFAULT_MIN_CORRELATION: f64 = 0.78;

/// A 64-bit perceptual hash (bit `8·v + u` is DCT coefficient (u horizontal, v vertical)).
pub type PHash = u64;

/// Number of differing bits.
pub fn hamming(a: PHash, b: PHash) -> u32 {
    (a ^ b).count_ones()
}

/// Side of the thumbnail the DCT runs on.
const THUMB: usize = 32;
/// Side of the block of lowest frequencies kept.
const LOW: usize = 8;

/// The perceptual hash of a photo and of its mirror image (flipped left to right).
pub fn phash(img: &RgbImage) -> (PHash, PHash) {
    phash_of_luma(&Plane::luma(img))
}

fn phash_of_luma(luma: &Plane) -> (PHash, PHash) {
    let thumb = luma.resample(0.0, 0.0, luma.w as f64, luma.h as f64, THUMB);
    // Separable DCT-II, only the LOW lowest frequencies in each direction.
    let basis: Vec<[f64; THUMB]> = (0..LOW)
        .map(|u| {
            let mut row = [0.0; THUMB];
            for (x, r) in row.iter_mut().enumerate() {
                *r = ((2 * x + 1) as f64 * u as f64 * std::f64::consts::PI / (2 * THUMB) as f64)
                    .cos();
            }
            row
        })
        .collect();
    let mut rows = [[0.0f64; LOW]; THUMB];
    for (y, row) in rows.iter_mut().enumerate() {
        for (u, r) in row.iter_mut().enumerate() {
            *r = (0..THUMB)
                .map(|x| f64::from(thumb.at(x, y)) * basis[u][x])
                .sum();
        }
    }
    let mut coeffs = [0.0f64; LOW * LOW];
    for v in 0..LOW {
        for u in 0..LOW {
            coeffs[v * LOW + u] = (0..THUMB).map(|y| basis[v][y] * rows[y][u]).sum();
        }
    }
    // x → THUMB-1-x turns cos((2x+1)uπ/2N) into (-1)^u times itself.
    let mut mirrored = coeffs;
    for (i, c) in mirrored.iter_mut().enumerate() {
        if (i % LOW) % 2 == 1 {
            *c = -*c;
        }
    }
    (bits_above_median(&coeffs), bits_above_median(&mirrored))
}

fn bits_above_median(c: &[f64; LOW * LOW]) -> PHash {
    let mut sorted = *c;
    sorted.sort_by(f64::total_cmp);
    let median = (sorted[31] + sorted[32]) / 2.0;
    c.iter()
        .enumerate()
        .filter(|(_, &x)| x > median)
        .fold(0, |h, (i, _)| h | (1 << i))
}

/// A grey-level image in f32, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Plane {
    /// Width.
    pub w: usize,
    /// Height.
    pub h: usize,
    /// `w * h` values.
    pub data: Vec<f32>,
}

impl Plane {
    /// Rec. 601 luma of an RGB image, 0..255.
    pub fn luma(img: &RgbImage) -> Plane {
        Plane {
            w: img.width() as usize,
            h: img.height() as usize,
            data: img
                .pixels()
                .map(|p| {
                    0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2])
                })
                .collect(),
        }
    }

    fn at(&self, x: usize, y: usize) -> f32 {
        self.data[y * self.w + x]
    }

    /// The region `[x0, x0+cw) × [y0, y0+ch)` (fractional edges allowed) averaged into
    /// `side`×`side` boxes, each source pixel weighted by how much of it a box covers.
    /// Area averaging, rather than point sampling, keeps a rescaled copy's thumbnail close to
    /// the original's.
    pub fn resample(&self, x0: f64, y0: f64, cw: f64, ch: f64, side: usize) -> Plane {
        let wx = box_weights(x0, cw, side, self.w);
        let wy = box_weights(y0, ch, side, self.h);
        self.resample_with(&wx, &wy)
    }

    /// [`Plane::resample`] with precomputed [`box_weights`] for x and y.
    fn resample_with(&self, wx: &[Vec<(usize, f32)>], wy: &[Vec<(usize, f32)>]) -> Plane {
        self.columns(wx).rows(wy)
    }

    /// Horizontal pass of a resample: every row of the plane averaged into `wx.len()` columns.
    fn columns(&self, wx: &[Vec<(usize, f32)>]) -> Plane {
        let side = wx.len();
        let mut data = vec![0.0f32; self.h * side];
        for (src, dst) in self
            .data
            .chunks_exact(self.w)
            .zip(data.chunks_exact_mut(side))
        {
            for (d, ws) in dst.iter_mut().zip(wx) {
                *d = ws.iter().map(|&(x, w)| src[x] * w).sum();
            }
        }
        Plane {
            w: side,
            h: self.h,
            data,
        }
    }

    /// Vertical pass of a resample: the rows averaged into `wy.len()` rows.
    fn rows(&self, wy: &[Vec<(usize, f32)>]) -> Plane {
        let mut data = vec![0.0f32; wy.len() * self.w];
        for (dst, ws) in data.chunks_exact_mut(self.w).zip(wy) {
            for &(y, w) in ws {
                let src = &self.data[y * self.w..(y + 1) * self.w];
                for (d, s) in dst.iter_mut().zip(src) {
                    *d += s * w;
                }
            }
        }
        Plane {
            w: self.w,
            h: wy.len(),
            data,
        }
    }

    /// The mirror image (left to right).
    pub fn mirrored(&self) -> Plane {
        let mut data = self.data.clone();
        for row in data.chunks_mut(self.w) {
            row.reverse();
        }
        Plane {
            w: self.w,
            h: self.h,
            data,
        }
    }

    /// Gaussian blur with edge clamping, separable.
    fn blur(&self, sigma: f32) -> Plane {
        let r = (3.0 * sigma).ceil() as isize;
        let k: Vec<f32> = (-r..=r)
            .map(|i| (-((i * i) as f32) / (2.0 * sigma * sigma)).exp())
            .collect();
        let norm: f32 = k.iter().sum();
        let pass = |src: &[f32], w: usize, h: usize, horizontal: bool| -> Vec<f32> {
            let mut out = vec![0.0; w * h];
            for y in 0..h {
                for x in 0..w {
                    let mut acc = 0.0;
                    for (j, kv) in k.iter().enumerate() {
                        let d = j as isize - r;
                        let (sx, sy) = if horizontal {
                            ((x as isize + d).clamp(0, w as isize - 1) as usize, y)
                        } else {
                            (x, (y as isize + d).clamp(0, h as isize - 1) as usize)
                        };
                        acc += kv * src[sy * w + sx];
                    }
                    out[y * w + x] = acc / norm;
                }
            }
            out
        };
        let horizontal = pass(&self.data, self.w, self.h, true);
        Plane {
            w: self.w,
            h: self.h,
            data: pass(&horizontal, self.w, self.h, false),
        }
    }

    /// Difference of Gaussians: keeps texture and edges, drops lighting gradients and colour
    /// casts, which make different skin photos correlate.
    fn band_pass(&self, fine: f32, coarse: f32) -> Plane {
        let (a, b) = (self.blur(fine), self.blur(coarse));
        Plane {
            w: self.w,
            h: self.h,
            data: a.data.iter().zip(&b.data).map(|(x, y)| x - y).collect(),
        }
    }
}

/// For each of `out` boxes splitting `[start, start+len)`, the covered source indices (clamped to
/// `0..n`) with weights summing to 1.
fn box_weights(start: f64, len: f64, out: usize, n: usize) -> Weights {
    let step = len / out as f64;
    (0..out)
        .map(|o| {
            let lo = start + o as f64 * step;
            let hi = lo + step;
            let mut ws = Vec::new();
            let mut s = lo.floor();
            while s < hi {
                let cover = (hi.min(s + 1.0) - lo.max(s)).max(0.0);
                if cover > 0.0 {
                    ws.push(((s.max(0.0) as usize).min(n - 1), (cover / step) as f32));
                }
                s += 1.0;
            }
            ws
        })
        .collect()
}

/// Side of the band-passed thumbnail kept per photo for verification.
const VERIFY_SOURCE: usize = 96;
/// Side at which crops are compared.
const VERIFY_SIDE: usize = 48;
/// Crop sizes tried, as a fraction of the source side.
const VERIFY_SCALES: [f64; 5] = [1.0, 0.9, 0.8, 0.7, 0.6];
/// Offsets tried per axis for each crop size (evenly spread).
const VERIFY_OFFSETS: usize = 7;

/// What the verification stage keeps of a photo: its band-passed 96×96 thumbnail.
#[derive(Clone, Debug, PartialEq)]
pub struct Fingerprint {
    plane: Plane,
}

impl Fingerprint {
    /// Band-passed (σ 2 and 8 px at 96 px) luma thumbnail of a photo.
    pub fn of(luma: &Plane) -> Fingerprint {
        let thumb = luma.resample(0.0, 0.0, luma.w as f64, luma.h as f64, VERIFY_SOURCE);
        Fingerprint {
            plane: thumb.band_pass(2.0, 8.0),
        }
    }
}

/// The best normalised correlation between `a` (whole) and crops of `b`, and between `b` (whole)
/// and crops of `a`, over the crop search; `b` is mirrored first when `mirror_b`. 1 for the same
/// photo, about 0 for unrelated ones.
pub fn aligned_correlation(a: &Fingerprint, b: &Fingerprint, mirror_b: bool) -> f64 {
    let b = if mirror_b {
        Fingerprint {
            plane: b.plane.mirrored(),
        }
    } else {
        b.clone()
    };
    one_way(&a.plane, &b.plane).max(one_way(&b.plane, &a.plane))
}

/// Box weights along one axis: for each output box, (source index, weight) pairs.
type Weights = Vec<Vec<(usize, f32)>>;

/// Box weights of every crop window along one axis: `[scale][offset]`. The same for every
/// pair, so computed once.
fn crop_tables() -> &'static Vec<Vec<Weights>> {
    static TABLES: std::sync::OnceLock<Vec<Vec<Weights>>> = std::sync::OnceLock::new();
    TABLES.get_or_init(|| {
        let side = VERIFY_SOURCE as f64;
        VERIFY_SCALES
            .iter()
            .map(|scale| {
                let n = side * scale;
                let slack = side - n;
                let offsets = if slack == 0.0 { 1 } else { VERIFY_OFFSETS };
                (0..offsets)
                    .map(|i| {
                        let x0 = slack * i as f64 / (VERIFY_OFFSETS - 1) as f64;
                        box_weights(x0, n, VERIFY_SIDE, VERIFY_SOURCE)
                    })
                    .collect()
            })
            .collect()
    })
}

fn one_way(whole: &Plane, cropped: &Plane) -> f64 {
    let tables = crop_tables();
    let reference = centred(&whole.resample_with(&tables[0][0], &tables[0][0]));
    let mut best = f64::NEG_INFINITY;
    for per_scale in tables {
        for wx in per_scale {
            // The horizontal pass is shared by every vertical offset.
            let columns = cropped.columns(wx);
            for wy in per_scale {
                let crop = centred(&columns.rows(wy));
                best = best.max(dot(&reference, &crop));
            }
        }
    }
    best
}

/// Mean-subtracted, unit-norm values (all zeros for a flat image).
fn centred(p: &Plane) -> Vec<f32> {
    let mean = p.data.iter().sum::<f32>() / p.data.len() as f32;
    let v: Vec<f32> = p.data.iter().map(|x| x - mean).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm <= f32::EPSILON {
        return vec![0.0; v.len()];
    }
    v.into_iter().map(|x| x / norm).collect()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    f64::from(a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>())
}

/// What decoding one photo showed.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageFacts {
    /// Width after EXIF orientation.
    pub width: u32,
    /// Height after EXIF orientation.
    pub height: u32,
    /// Container format from the file's bytes (`png`, `jpeg`, ...), whatever its extension says.
    pub format: String,
    /// Perceptual hash.
    pub phash: PHash,
    /// Perceptual hash of the mirror image.
    pub phash_mirrored: PHash,
    /// Band-passed thumbnail for verifying near-duplicate candidates.
    pub fingerprint: Fingerprint,
}

/// A dataset with every photo decoded (through the SDK's decoder) and hashed.
#[derive(Clone, Debug)]
pub struct Inspection {
    /// The scanned dataset.
    pub dataset: Dataset,
    /// Facts per item (same order as `dataset.items`); `None` when the photo did not decode.
    pub facts: Vec<Option<ImageFacts>>,
    /// Items that were read but did not decode, with the decoder's reason.
    pub undecodable: Vec<Unreadable>,
}

/// Two photos confirmed as near-duplicates: hashes within the threshold, correlation above the
/// minimum.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NearPair {
    /// Index of the first item (the smaller index).
    pub a: usize,
    /// Index of the second item.
    pub b: usize,
    /// Hamming distance of the hashes.
    pub distance: u32,
    /// Whether the distance is the one to the mirror image.
    pub mirrored: bool,
    /// Aligned band-pass correlation of the pair.
    pub correlation: f64,
}

/// Scans `root` and decodes and hashes every photo in parallel (a progress bar on stderr when
/// `progress` is set and stderr is a terminal).
pub fn inspect(root: &Path, progress: bool) -> Result<Inspection> {
    Ok(inspect_dataset(Dataset::scan(root)?, progress))
}

/// Decodes and hashes every photo of a scanned dataset (extra negatives folders included) in
/// parallel.
pub fn inspect_dataset(dataset: Dataset, progress: bool) -> Inspection {
    let bar = if progress {
        ProgressBar::new(dataset.items.len() as u64).with_style(
            ProgressStyle::with_template("hashing {bar:40} {pos}/{len} [{elapsed} < {eta}]")
                .expect("static template"),
        )
    } else {
        ProgressBar::hidden()
    };
    let results: Vec<std::result::Result<ImageFacts, String>> = dataset
        .items
        .par_iter()
        .map(|item| {
            let r = inspect_file(&dataset.path(item));
            bar.inc(1);
            r
        })
        .collect();
    bar.finish_and_clear();
    let mut facts = Vec::with_capacity(results.len());
    let mut undecodable = Vec::new();
    for (item, r) in dataset.items.iter().zip(results) {
        match r {
            Ok(f) => facts.push(Some(f)),
            Err(reason) => {
                facts.push(None);
                undecodable.push(Unreadable {
                    path: item.rel_path.clone(),
                    reason,
                });
            }
        }
    }
    Inspection {
        dataset,
        facts,
        undecodable,
    }
}

fn inspect_file(path: &Path) -> std::result::Result<ImageFacts, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let format = image::guess_format(&bytes)
        .map(|f| format!("{f:?}").to_lowercase())
        .unwrap_or_else(|_| "unknown".into());
    let img = decode(&bytes, &Limits::default()).map_err(|e| e.to_string())?;
    let luma = Plane::luma(&img);
    let (phash, phash_mirrored) = phash_of_luma(&luma);
    Ok(ImageFacts {
        width: img.width(),
        height: img.height(),
        format,
        phash,
        phash_mirrored,
        fingerprint: Fingerprint::of(&luma),
    })
}

impl Inspection {
    /// Every unusable file: unreadable ones from the scan, then undecodable ones.
    pub fn unusable(&self) -> Vec<Unreadable> {
        let mut all: Vec<Unreadable> = self
            .dataset
            .unreadable
            .iter()
            .chain(&self.undecodable)
            .cloned()
            .collect();
        all.sort_by(|a, b| a.path.cmp(&b.path));
        all
    }

    /// The hash distance between items `a` and `b` (`None` if either did not decode), and
    /// whether the mirror image was the closer match.
    pub fn distance(&self, a: usize, b: usize, mirror: bool) -> Option<(u32, bool)> {
        let (fa, fb) = (self.facts[a].as_ref()?, self.facts[b].as_ref()?);
        let direct = hamming(fa.phash, fb.phash);
        if !mirror {
            return Some((direct, false));
        }
        // Both directions: the two mirror hashes have different medians, so they can differ.
        let flipped =
            hamming(fa.phash, fb.phash_mirrored).min(hamming(fa.phash_mirrored, fb.phash));
        Some(if flipped < direct {
            (flipped, true)
        } else {
            (direct, false)
        })
    }

    /// Candidate pairs: decoded photos, not byte-identical, within `threshold` bits (mirror
    /// images included when `mirror`), with their correlation, sorted by (a, b). Correlations
    /// are only computed here, for the few pairs the hash lets through.
    pub fn candidate_pairs(&self, threshold: u32, mirror: bool) -> Vec<NearPair> {
        let items = &self.dataset.items;
        (0..items.len())
            .into_par_iter()
            .flat_map_iter(|a| {
                (a + 1..items.len()).filter_map(move |b| {
                    if items[a].sha256 == items[b].sha256 {
                        return None;
                    }
                    let (distance, mirrored) = self.distance(a, b, mirror)?;
                    if distance > threshold {
                        return None;
                    }
                    let (fa, fb) = (self.facts[a].as_ref()?, self.facts[b].as_ref()?);
                    Some(NearPair {
                        a,
                        b,
                        distance,
                        mirrored,
                        correlation: aligned_correlation(
                            &fa.fingerprint,
                            &fb.fingerprint,
                            mirrored,
                        ),
                    })
                })
            })
            .collect()
    }

    /// Confirmed near-duplicate pairs: candidates within `config.near_threshold` bits whose
    /// correlation is at least `config.min_correlation`.
    pub fn near_pairs(&self, config: &AuditConfig) -> Vec<NearPair> {
        let mut pairs = self.candidate_pairs(config.near_threshold, config.mirror);
        pairs.retain(|p| p.correlation >= config.min_correlation);
        pairs
    }

    /// Connected groups (two or more items) of exact duplicates and the given near-duplicate
    /// pairs, each sorted, in the order of their first item.
    pub fn duplicate_groups(&self, near: &[NearPair]) -> Vec<Vec<usize>> {
        let mut uf = UnionFind::new(self.dataset.items.len());
        for (a, b) in self.exact_pairs() {
            uf.union(a, b);
        }
        for p in near {
            uf.union(p.a, p.b);
        }
        uf.groups().into_iter().filter(|g| g.len() > 1).collect()
    }

    /// Pairs of items with the same SHA-256, each item joined to the first of its kind.
    fn exact_pairs(&self) -> Vec<(usize, usize)> {
        let mut first: HashMap<&str, usize> = HashMap::new();
        let mut pairs = Vec::new();
        for (i, item) in self.dataset.items.iter().enumerate() {
            match first.get(item.sha256.as_str()) {
                Some(&j) => pairs.push((j, i)),
                None => {
                    first.insert(&item.sha256, i);
                }
            }
        }
        pairs
    }
}

/// Disjoint sets over `0..n` with path halving and union by size.
#[derive(Clone, Debug)]
pub(crate) struct UnionFind {
    parent: Vec<usize>,
    size: Vec<usize>,
}

impl UnionFind {
    pub(crate) fn new(n: usize) -> Self {
        Self {
            parent: (0..n).collect(),
            size: vec![1; n],
        }
    }

    pub(crate) fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    pub(crate) fn union(&mut self, a: usize, b: usize) {
        let (mut a, mut b) = (self.find(a), self.find(b));
        if a == b {
            return;
        }
        if self.size[a] < self.size[b] {
            std::mem::swap(&mut a, &mut b);
        }
        self.parent[b] = a;
        self.size[a] += self.size[b];
    }

    /// All sets (singletons included), members ascending, sets ordered by their smallest member.
    pub(crate) fn groups(&mut self) -> Vec<Vec<usize>> {
        let mut by_root: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for x in 0..self.parent.len() {
            let r = self.find(x);
            by_root.entry(r).or_default().push(x);
        }
        let mut groups: Vec<Vec<usize>> = by_root.into_values().collect();
        groups.sort_by_key(|g| g[0]);
        groups
    }
}

/// How to audit.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditConfig {
    /// Largest perceptual-hash distance at which a pair becomes a near-duplicate candidate.
    pub near_threshold: u32,
    /// Smallest aligned correlation that confirms a candidate (−1 accepts every candidate,
    /// i.e. the hash alone decides).
    pub min_correlation: f64,
    /// Also compare each photo with the mirror image of the others (scraped sets contain
    /// flipped copies, which would otherwise look unrelated).
    pub mirror: bool,
    /// Show a progress bar on stderr (hidden anyway when stderr is not a terminal).
    pub progress: bool,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            near_threshold: DEFAULT_NEAR_THRESHOLD,
            min_correlation: DEFAULT_MIN_CORRELATION,
            mirror: true,
            progress: false,
        }
    }
}

/// Photos in one class.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClassCount {
    /// Class folder name.
    pub class: String,
    /// Number of readable files.
    pub count: usize,
}

/// Photos of one pixel size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SizeCount {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Number of photos.
    pub count: usize,
}

/// Photos of one container format.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FormatCount {
    /// Format (`png`, `jpeg`, ...).
    pub format: String,
    /// Number of photos.
    pub count: usize,
}

/// Byte-identical files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExactGroup {
    /// Their SHA-256.
    pub sha256: String,
    /// Paths relative to the root, sorted.
    pub paths: Vec<String>,
    /// The distinct classes they are filed under, sorted.
    pub classes: Vec<String>,
}

/// Photos linked by near-duplicate pairs (a connected group: A~B and B~C put A, B, C together).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NearGroup {
    /// Paths relative to the root, sorted.
    pub paths: Vec<String>,
    /// The distinct classes, sorted.
    pub classes: Vec<String>,
    /// The pairs within the threshold that link the group (byte-identical pairs left out).
    pub pairs: Vec<NearPairReport>,
}

/// A near-duplicate pair by path.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NearPairReport {
    /// First path.
    pub a: String,
    /// Second path.
    pub b: String,
    /// Hamming distance of the perceptual hashes.
    pub distance: u32,
    /// Whether it matched as a mirror image.
    pub mirrored: bool,
    /// Aligned band-pass correlation.
    pub correlation: f64,
}

/// The same photo (exact or near duplicate) under two or more classes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LabelConflict {
    /// Every photo of the duplicate group, `class/...` paths, sorted.
    pub paths: Vec<String>,
    /// The classes involved, sorted.
    pub classes: Vec<String>,
    /// `"exact"` when byte-identical files sit in different classes, else `"near"`.
    pub evidence: String,
    /// Smallest hash distance between two photos of different classes.
    pub distance: u32,
}

/// Everything the audit found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuditReport {
    /// The folder audited.
    pub root: String,
    /// [`Dataset::fingerprint`] of it.
    pub fingerprint: String,
    /// Readable files found.
    pub total: usize,
    /// Files per class.
    pub classes: Vec<ClassCount>,
    /// Decoded pixel sizes, most frequent first.
    pub sizes: Vec<SizeCount>,
    /// Container formats, most frequent first.
    pub formats: Vec<FormatCount>,
    /// Files that could not be read or decoded.
    pub unreadable: Vec<Unreadable>,
    /// The hash distance gate used.
    pub near_threshold: u32,
    /// The correlation that confirmed candidates.
    pub min_correlation: f64,
    /// Whether mirror images were compared.
    pub mirror: bool,
    /// Groups of byte-identical files.
    pub exact_duplicates: Vec<ExactGroup>,
    /// Groups of near-duplicates holding at least two different files.
    pub near_duplicates: Vec<NearGroup>,
    /// Duplicate groups that span classes.
    pub label_conflicts: Vec<LabelConflict>,
}

/// Audits the ImageFolder tree at `root`.
pub fn audit(root: &Path, config: &AuditConfig) -> Result<AuditReport> {
    let inspection = inspect(root, config.progress)?;
    Ok(report(&inspection, config))
}

/// Builds the report of an existing inspection.
pub fn report(ins: &Inspection, config: &AuditConfig) -> AuditReport {
    let ds = &ins.dataset;
    let path = |i: usize| ds.items[i].rel_path.clone();
    let class = |i: usize| ds.classes[ds.items[i].class_index].clone();
    let distinct_classes = |g: &[usize]| {
        g.iter()
            .map(|&i| class(i))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
    };

    let mut sizes: BTreeMap<(u32, u32), usize> = BTreeMap::new();
    let mut formats: BTreeMap<String, usize> = BTreeMap::new();
    for f in ins.facts.iter().flatten() {
        *sizes.entry((f.width, f.height)).or_default() += 1;
        *formats.entry(f.format.clone()).or_default() += 1;
    }
    let mut sizes: Vec<SizeCount> = sizes
        .into_iter()
        .map(|((width, height), count)| SizeCount {
            width,
            height,
            count,
        })
        .collect();
    sizes.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then((a.width, a.height).cmp(&(b.width, b.height)))
    });
    let mut formats: Vec<FormatCount> = formats
        .into_iter()
        .map(|(format, count)| FormatCount { format, count })
        .collect();
    formats.sort_by(|a, b| b.count.cmp(&a.count).then(a.format.cmp(&b.format)));

    let mut by_sha: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, item) in ds.items.iter().enumerate() {
        by_sha.entry(&item.sha256).or_default().push(i);
    }
    let mut exact_duplicates: Vec<ExactGroup> = by_sha
        .into_iter()
        .filter(|(_, g)| g.len() > 1)
        .map(|(sha, g)| ExactGroup {
            sha256: sha.to_string(),
            paths: g.iter().map(|&i| path(i)).collect(),
            classes: distinct_classes(&g),
        })
        .collect();
    exact_duplicates.sort_by(|a, b| a.paths.cmp(&b.paths));

    let near = ins.near_pairs(config);
    let groups = ins.duplicate_groups(&near);
    let mut near_duplicates = Vec::new();
    let mut label_conflicts = Vec::new();
    for g in &groups {
        let members: BTreeSet<usize> = g.iter().copied().collect();
        let distinct_files = g
            .iter()
            .map(|&i| &ds.items[i].sha256)
            .collect::<BTreeSet<_>>()
            .len();
        let classes = distinct_classes(g);
        if distinct_files > 1 {
            near_duplicates.push(NearGroup {
                paths: g.iter().map(|&i| path(i)).collect(),
                classes: classes.clone(),
                pairs: near
                    .iter()
                    .filter(|p| members.contains(&p.a))
                    .map(|p| NearPairReport {
                        a: path(p.a),
                        b: path(p.b),
                        distance: p.distance,
                        mirrored: p.mirrored,
                        correlation: p.correlation,
                    })
                    .collect(),
            });
        }
        if classes.len() > 1 {
            let mut exact = false;
            let mut distance = u32::MAX;
            for (x, &a) in g.iter().enumerate() {
                for &b in &g[x + 1..] {
                    if ds.items[a].class_index == ds.items[b].class_index {
                        continue;
                    }
                    if ds.items[a].sha256 == ds.items[b].sha256 {
                        exact = true;
                        distance = 0;
                    } else if let Some((d, _)) = ins.distance(a, b, config.mirror) {
                        distance = distance.min(d);
                    }
                }
            }
            label_conflicts.push(LabelConflict {
                paths: g.iter().map(|&i| path(i)).collect(),
                classes,
                evidence: if exact { "exact" } else { "near" }.into(),
                distance,
            });
        }
    }

    AuditReport {
        root: ds.root.display().to_string(),
        fingerprint: ds.fingerprint(),
        total: ds.items.len(),
        classes: ds
            .classes
            .iter()
            .zip(ds.class_counts())
            .map(|(class, count)| ClassCount {
                class: class.clone(),
                count,
            })
            .collect(),
        sizes,
        formats,
        unreadable: ins.unusable(),
        near_threshold: config.near_threshold,
        min_correlation: config.min_correlation,
        mirror: config.mirror,
        exact_duplicates,
        near_duplicates,
        label_conflicts,
    }
}

/// How many size rows the text report shows before summarising the rest.
const SIZE_ROWS: usize = 10;

impl fmt::Display for AuditReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "dataset     {}", self.root)?;
        writeln!(f, "fingerprint {}", self.fingerprint)?;
        writeln!(f, "files       {}", self.total)?;
        writeln!(f)?;
        let width = self
            .classes
            .iter()
            .map(|c| c.class.len())
            .max()
            .unwrap_or(5)
            .max(5);
        writeln!(f, "{:<width$}  {:>6}  {:>6}", "class", "files", "share")?;
        for c in &self.classes {
            let share = if self.total == 0 {
                0.0
            } else {
                100.0 * c.count as f64 / self.total as f64
            };
            writeln!(f, "{:<width$}  {:>6}  {:>5.1}%", c.class, c.count, share)?;
        }
        writeln!(f)?;
        writeln!(f, "{:<11}  {:>6}", "size", "files")?;
        for s in self.sizes.iter().take(SIZE_ROWS) {
            writeln!(
                f,
                "{:<11}  {:>6}",
                format!("{}x{}", s.width, s.height),
                s.count
            )?;
        }
        if self.sizes.len() > SIZE_ROWS {
            let rest: usize = self.sizes[SIZE_ROWS..].iter().map(|s| s.count).sum();
            writeln!(
                f,
                "{:<11}  {:>6}  ({} more sizes)",
                "other",
                rest,
                self.sizes.len() - SIZE_ROWS
            )?;
        }
        writeln!(f)?;
        writeln!(f, "{:<11}  {:>6}", "format", "files")?;
        for x in &self.formats {
            writeln!(f, "{:<11}  {:>6}", x.format, x.count)?;
        }
        writeln!(f)?;
        writeln!(f, "unreadable files: {}", self.unreadable.len())?;
        for u in &self.unreadable {
            writeln!(f, "  {}: {}", u.path, u.reason)?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "exact duplicates (same sha256): {} groups",
            self.exact_duplicates.len()
        )?;
        for g in &self.exact_duplicates {
            writeln!(f, "  {}  {}", &g.sha256[..12], g.paths.join("  =  "))?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "near duplicates (hash distance <= {} of 64{}, aligned correlation >= {}): {} groups",
            self.near_threshold,
            if self.mirror {
                ", mirror images included"
            } else {
                ""
            },
            self.min_correlation,
            self.near_duplicates.len()
        )?;
        for g in &self.near_duplicates {
            writeln!(f, "  group of {}: {}", g.paths.len(), g.paths.join(", "))?;
            for p in &g.pairs {
                writeln!(
                    f,
                    "    d={:<2} r={:.2}{}  {}  ~  {}",
                    p.distance,
                    p.correlation,
                    if p.mirrored { " mirrored" } else { "" },
                    p.a,
                    p.b
                )?;
            }
        }
        writeln!(f)?;
        writeln!(
            f,
            "label conflicts (one photo, several classes): {}",
            self.label_conflicts.len()
        )?;
        for c in &self.label_conflicts {
            writeln!(
                f,
                "  {} [{}, distance {}]: {}",
                c.classes.join(" vs "),
                c.evidence,
                c.distance,
                c.paths.join(", ")
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::dataset::tests::{temp_dir, write_png};
    use image::imageops::{self, FilterType};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// A photo-like image: a few random soft blobs on a random gradient, so that unrelated
    /// seeds give unrelated low-frequency content (and so unrelated hashes).
    pub(crate) fn textured(seed: u64, w: u32, h: u32) -> RgbImage {
        let mut rng = StdRng::seed_from_u64(seed);
        let blobs: Vec<(f64, f64, f64, [f64; 3])> = (0..8)
            .map(|_| {
                (
                    rng.random_range(0.0..1.0),
                    rng.random_range(0.0..1.0),
                    rng.random_range(0.05..0.3),
                    [
                        rng.random_range(-120.0..120.0),
                        rng.random_range(-120.0..120.0),
                        rng.random_range(-120.0..120.0),
                    ],
                )
            })
            .collect();
        let (gx, gy) = (rng.random_range(-60.0..60.0), rng.random_range(-60.0..60.0));
        RgbImage::from_fn(w, h, |x, y| {
            let (fx, fy) = (x as f64 / w as f64, y as f64 / h as f64);
            let mut c = [128.0 + gx * (fx - 0.5) + gy * (fy - 0.5); 3];
            for (bx, by, r, col) in &blobs {
                let d2 = ((fx - bx).powi(2) + (fy - by).powi(2)) / (r * r);
                let k = (-d2).exp();
                for ch in 0..3 {
                    c[ch] += col[ch] * k;
                }
            }
            image::Rgb(c.map(|v| v.clamp(0.0, 255.0) as u8))
        })
    }

    #[test]
    fn hamming_counts_bits() {
        assert_eq!(hamming(0, 0), 0);
        assert_eq!(hamming(0b1011, 0b0001), 2);
        assert_eq!(hamming(u64::MAX, 0), 64);
    }

    #[test]
    fn hash_has_32_bits_set_and_ignores_uniform_brightness() {
        let img = textured(1, 96, 96);
        let (h, _) = phash(&img);
        // Strictly above the median of 64 distinct values: exactly half.
        assert_eq!(h.count_ones(), 32);
        // Adding a constant only moves the DC coefficient.
        let brighter = RgbImage::from_fn(96, 96, |x, y| {
            image::Rgb(img.get_pixel(x, y).0.map(|v| v.saturating_add(10).min(250)))
        });
        assert!(hamming(h, phash(&brighter).0) <= 2);
    }

    #[test]
    fn mirror_hash_is_the_hash_of_the_flipped_image() {
        // 64 is a multiple of the thumbnail side, so flipping commutes with the box average.
        let img = textured(2, 64, 64);
        let (h, hm) = phash(&img);
        let (fh, fhm) = phash(&imageops::flip_horizontal(&img));
        assert_eq!(fh, hm);
        assert_eq!(fhm, h);
        assert!(
            hamming(h, hm) > 10,
            "a non-symmetric image differs from its mirror"
        );
    }

    #[test]
    fn copies_are_close_and_strangers_far() {
        let img = textured(3, 224, 224);
        let (h, _) = phash(&img);
        let rescaled = imageops::resize(&img, 160, 160, FilterType::Triangle);
        assert!(hamming(h, phash(&rescaled).0) <= 4);
        let crop = imageops::crop_imm(&img, 8, 8, 208, 208).to_image();
        let recrop = imageops::resize(&crop, 224, 224, FilterType::Triangle);
        assert!(hamming(h, phash(&recrop).0) <= DEFAULT_NEAR_THRESHOLD);
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 70)
            .encode_image(&img)
            .unwrap();
        let decoded = image::load_from_memory(&jpeg).unwrap().to_rgb8();
        assert!(hamming(h, phash(&decoded).0) <= 2);
        for seed in 10..30 {
            let other = phash(&textured(seed, 224, 224)).0;
            assert!(
                hamming(h, other) > DEFAULT_NEAR_THRESHOLD + 2,
                "seed {seed}"
            );
        }
    }

    #[test]
    fn union_find_groups() {
        let mut uf = UnionFind::new(6);
        uf.union(4, 1);
        uf.union(1, 3);
        uf.union(5, 5);
        assert_eq!(uf.groups(), vec![vec![0], vec![1, 3, 4], vec![2], vec![5]]);
    }

    /// Class `a`: p1, an exact copy of p1, a rescale of p1, p2, p4, a corrupt file.
    /// Class `b`: an exact copy of p2 (label conflict), a mirrored p4 (near label conflict), p5.
    pub(crate) fn messy_dataset(name: &str) -> std::path::PathBuf {
        let root = temp_dir(name);
        let p1 = textured(101, 224, 224);
        write_png(&root.join("a/p1.png"), &p1);
        std::fs::copy(root.join("a/p1.png"), root.join("a/p1_copy.png")).unwrap();
        write_png(
            &root.join("a/p1_small.png"),
            &imageops::resize(&p1, 150, 150, FilterType::Triangle),
        );
        write_png(&root.join("a/p2.png"), &textured(102, 200, 180));
        std::fs::create_dir_all(root.join("b")).unwrap();
        std::fs::copy(root.join("a/p2.png"), root.join("b/p2_again.png")).unwrap();
        let p4 = textured(104, 224, 224);
        write_png(&root.join("a/p4.png"), &p4);
        write_png(
            &root.join("b/p4_flipped.png"),
            &imageops::flip_horizontal(&p4),
        );
        write_png(&root.join("b/p5.png"), &textured(105, 300, 200));
        std::fs::write(
            root.join("a/broken.jpg"),
            b"\xff\xd8\xff\xe0 not really a jpeg",
        )
        .unwrap();
        root
    }

    #[test]
    fn audit_finds_every_planted_problem() {
        let root = messy_dataset("audit-messy");
        let r = audit(&root, &AuditConfig::default()).unwrap();
        assert_eq!(r.total, 9);
        assert_eq!(
            r.classes,
            [
                ClassCount {
                    class: "a".into(),
                    count: 6
                },
                ClassCount {
                    class: "b".into(),
                    count: 3
                }
            ]
        );
        assert_eq!(r.unreadable.len(), 1);
        assert_eq!(r.unreadable[0].path, "a/broken.jpg");
        assert_eq!(
            r.formats,
            [FormatCount {
                format: "png".into(),
                count: 8
            }]
        );
        assert_eq!(
            r.sizes[0],
            SizeCount {
                width: 224,
                height: 224,
                count: 4
            }
        );

        let exact: Vec<&Vec<String>> = r.exact_duplicates.iter().map(|g| &g.paths).collect();
        assert_eq!(
            exact,
            [
                &vec!["a/p1.png".to_string(), "a/p1_copy.png".into()],
                &vec!["a/p2.png".to_string(), "b/p2_again.png".into()]
            ]
        );
        assert_eq!(r.exact_duplicates[1].classes, ["a", "b"]);

        let near: Vec<&Vec<String>> = r.near_duplicates.iter().map(|g| &g.paths).collect();
        assert_eq!(
            near,
            [
                &vec![
                    "a/p1.png".to_string(),
                    "a/p1_copy.png".into(),
                    "a/p1_small.png".into()
                ],
                &vec!["a/p4.png".to_string(), "b/p4_flipped.png".into()],
            ]
        );
        assert!(r.near_duplicates[1].pairs[0].mirrored);
        assert!(r.near_duplicates[1].pairs[0].distance <= 2);

        assert_eq!(r.label_conflicts.len(), 2);
        assert_eq!(r.label_conflicts[0].paths, ["a/p2.png", "b/p2_again.png"]);
        assert_eq!(r.label_conflicts[0].evidence, "exact");
        assert_eq!(r.label_conflicts[1].paths, ["a/p4.png", "b/p4_flipped.png"]);
        assert_eq!(r.label_conflicts[1].evidence, "near");

        let text = r.to_string();
        assert!(
            text.contains("exact duplicates (same sha256): 2 groups"),
            "{text}"
        );
        assert!(
            text.contains("label conflicts (one photo, several classes): 2"),
            "{text}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json["label_conflicts"][0]["classes"],
            serde_json::json!(["a", "b"])
        );

        // Without mirror matching, the flipped copy is a stranger.
        let plain = audit(
            &root,
            &AuditConfig {
                mirror: false,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(plain.near_duplicates.len(), 1);
        assert_eq!(plain.label_conflicts.len(), 1);
        std::fs::remove_dir_all(root).unwrap();
    }
}
