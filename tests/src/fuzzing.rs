//! The bodies of the five fuzz targets (`fuzz/fuzz_targets/*.rs`), shared with the stable replay
//! test (`tests/tests/fuzz_corpus.rs`) so that CI replays the corpora through exactly the code the
//! fuzzer ran.
//!
//! This file depends on `mpox_sdk` and `std` only: the fuzz crate includes it with `#[path]`
//! rather than depending on this crate, which would drag candle and the trainer into every
//! instrumented fuzz build.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::panic::PanicHookInfo;
use std::sync::{Mutex, Once, OnceLock};

use mpox_sdk::{Error, Limits, ModelMeta, ScreenerOptions, Screening};

pub use mpox_sdk::Screener;

/// The fuzz targets, by the names `cargo fuzz` and the corpus folders use.
pub const TARGETS: [&str; 5] = [
    "screen",
    "screen_rgba",
    "from_bytes",
    "metadata",
    "signed_model",
];

/// Secret key of the `signed_model` target's trusted signer: a fixed test key, public by being
/// here, that signs the target's seeds.
pub const SIGNER_SECRET: [u8; 32] = *b"mpoxscreen fuzzing: test key 32b";

/// Bytes of the `screen_rgba` input header: width and height (u16 little-endian each) and flags.
pub const RGBA_HEADER: usize = 5;

/// `screen_rgba` flag: stretch the pixel bytes to exactly `width × height × 4` by repetition.
pub const RGBA_FIT: u8 = 1;

/// Largest frame (bytes) that [`RGBA_FIT`] builds, 128 × 128 pixels; beyond it the buffer is
/// passed as it is. Larger frames run the same code more slowly: at 512² a run cost several
/// milliseconds, too slow to reach a million runs.
const RGBA_FIT_MAX: usize = 128 * 128 * 4;

/// Largest model input side for which [`from_bytes`] also screens an image with the model: a
/// fuzzed file may ask for 2048 px, and one such inference would cost more than a thousand runs.
const SCREEN_LOADED_MAX_SIDE: u32 = 64;

/// Limits of the screening targets: the SDK's defaults, except a smaller largest image, so that a
/// tiny PNG claiming 50 MP cannot spend a second per run decoding (the checks are the same code).
pub fn limits() -> Limits {
    Limits {
        max_width: 2048,
        max_height: 2048,
        max_pixels: 1 << 18,
        max_alloc: 64 << 20,
        ..Limits::default()
    }
}

/// Options of the screening targets: [`limits`], heatmap on so its code is fuzzed too.
pub fn options() -> ScreenerOptions {
    ScreenerOptions {
        limits: limits(),
        heatmap: true,
        ..ScreenerOptions::default()
    }
}

/// Loads the screener the `screen` and `screen_rgba` targets run (`model`: the fixture's bytes).
///
/// # Panics
/// If the fixture is not a valid model: the targets cannot run without one.
pub fn screener(model: &[u8]) -> Screener {
    install_panic_hook();
    Screener::from_bytes(model, options()).expect("the fuzz fixture model loads")
}

/// Target `screen`: `data` is an encoded photo.
pub fn screen(screener: &Screener, data: &[u8]) -> Result<(), Error> {
    guarded(|| screener.screen(data)).map(|s| check_screening(screener, &s))
}

/// Target `screen_rgba`: `data` is [`RGBA_HEADER`] bytes (width, height, flags) and then pixels.
pub fn screen_rgba(screener: &Screener, data: &[u8]) -> Result<(), Error> {
    let Some((header, pixels)) = data.split_first_chunk::<RGBA_HEADER>() else {
        return Ok(());
    };
    let width = u32::from(u16::from_le_bytes([header[0], header[1]]));
    let height = u32::from(u16::from_le_bytes([header[2], header[3]]));
    let needed = width as usize * height as usize * 4;
    let fitted;
    // Mostly-random lengths would nearly never match width × height × 4; fitting lets the fuzzer
    // reach the pixel code while the raw mode keeps the length checks fuzzed.
    let pixels = if header[4] & RGBA_FIT != 0 && !pixels.is_empty() && needed <= RGBA_FIT_MAX {
        fitted = pixels
            .iter()
            .copied()
            .cycle()
            .take(needed)
            .collect::<Vec<u8>>();
        &fitted[..]
    } else {
        pixels
    };
    guarded(|| screener.screen_rgba(width, height, pixels)).map(|s| check_screening(screener, &s))
}

/// Target `from_bytes`: `data` is a model file. A model that loads also screens one grey image.
pub fn from_bytes(data: &[u8]) -> Result<(), Error> {
    install_panic_hook();
    let screener = guarded(|| Screener::from_bytes(data, options()))?;
    let meta = &screener.info().meta;
    assert!(
        meta.labels.len() >= 2,
        "a loaded model has two labels or more"
    );
    let side = meta.preprocessing.input_size;
    if side > SCREEN_LOADED_MAX_SIDE {
        return Ok(());
    }
    let frame = vec![128; 32 * 32 * 4];
    // A fuzzed graph may compute anything, NaN included, so only the shape is checked here.
    let s = guarded(|| screener.screen_rgba(32, 32, &frame))?;
    assert_eq!(s.probabilities.len(), meta.labels.len());
    assert_eq!(s.logits.len(), meta.labels.len());
    Ok(())
}

/// Target `signed_model`: `data` is a model file, loaded by a screener that trusts one key
/// ([`SIGNER_SECRET`]'s). Everything the SDK reads before the graph (the protobuf, the signature
/// entries, their hex, the verification) sees fuzzed bytes; a model that loads must name that key
/// as its signer.
pub fn signed_model(data: &[u8]) -> Result<(), Error> {
    static TRUSTED: OnceLock<String> = OnceLock::new();
    install_panic_hook();
    // Deriving the public key costs a scalar multiplication: once, not per run.
    let trusted = TRUSTED.get_or_init(|| mpox_sdk::signature::public_key_hex(&SIGNER_SECRET));
    let options = ScreenerOptions {
        trusted_keys: vec![trusted.clone()],
        ..options()
    };
    let screener = guarded(|| Screener::from_bytes(data, options))?;
    assert_eq!(
        screener.info().signed_by.as_deref(),
        Some(trusted.as_str()),
        "a model loaded under a trusted key without naming it as its signer"
    );
    Ok(())
}

/// Target `metadata`: `data` is `key=value` lines, the model's `metadata_props`. What parses must
/// survive the trainer's way back, [`ModelMeta::to_props`], unchanged.
pub fn metadata(data: &[u8]) -> Result<(), Error> {
    install_panic_hook();
    let props = props_from_bytes(data);
    let meta = guarded(|| ModelMeta::from_props(props.iter().map(|(k, v)| (&k[..], &v[..]))))?;
    let again = meta.to_props();
    let reparsed = ModelMeta::from_props(again.iter().map(|(k, v)| (&k[..], &v[..])));
    match reparsed {
        Ok(back) => assert_eq!(back, meta, "to_props then from_props changed the metadata"),
        Err(e) => panic!("metadata that parsed does not parse after to_props: {e}"),
    }
    Ok(())
}

/// The `metadata` target's reading of its input: one `key=value` pair a line (lossy UTF-8, as
/// protobuf strings are UTF-8 anyway); a line without `=` is a key with an empty value.
pub fn props_from_bytes(data: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(data)
        .split('\n')
        .filter(|line| !line.is_empty())
        .map(|line| match line.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (line.to_string(), String::new()),
        })
        .collect()
}

/// The inverse of [`props_from_bytes`], for writing seeds.
pub fn props_to_bytes(props: &[(String, String)]) -> Vec<u8> {
    props
        .iter()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect::<String>()
        .into_bytes()
}

/// A `screen_rgba` input: header then pixels.
pub fn rgba_input(width: u16, height: u16, flags: u8, pixels: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(RGBA_HEADER + pixels.len());
    out.extend_from_slice(&width.to_le_bytes());
    out.extend_from_slice(&height.to_le_bytes());
    out.push(flags);
    out.extend_from_slice(pixels);
    out
}

/// Runs one input through the named target (one of [`TARGETS`]); `screener` serves the two
/// screening targets.
///
/// # Panics
/// On an unknown target name, and wherever the target itself finds a bug.
pub fn run(target: &str, screener: &Screener, data: &[u8]) -> Result<(), Error> {
    match target {
        "screen" => screen(screener, data),
        "screen_rgba" => screen_rgba(screener, data),
        "from_bytes" => from_bytes(data),
        "metadata" => metadata(data),
        "signed_model" => signed_model(data),
        other => panic!("unknown fuzz target {other:?}"),
    }
}

/// Invariants of any screening by the fixture model, whatever the photo.
fn check_screening(screener: &Screener, s: &Screening) {
    let meta = &screener.info().meta;
    assert!(
        s.probability_mpox.is_finite() && (0.0..=1.0).contains(&s.probability_mpox),
        "probability {}",
        s.probability_mpox
    );
    let total: f32 = s.probabilities.iter().map(|c| c.probability).sum();
    assert!((total - 1.0).abs() < 1e-4, "probabilities sum to {total}");
    assert_eq!(s.logits.len(), meta.labels.len());
    let heatmap = s.heatmap.as_ref().expect("the options ask for a heatmap");
    let side = meta.preprocessing.input_size;
    assert_eq!((heatmap.width, heatmap.height), (side, side));
    assert_eq!(heatmap.values.len(), (side * side) as usize);
    assert!(
        heatmap.values.iter().all(|v| (0.0..=1.0).contains(v)),
        "heatmap outside 0..1"
    );
}

thread_local! {
    /// Where the SDK's own code panicked during the current call, if it did.
    static SDK_PANIC: Cell<Option<&'static str>> = const { Cell::new(None) };
}

/// Whether a panic location lies in the SDK's sources (not in tract, image or std).
fn in_sdk(info: &PanicHookInfo<'_>) -> bool {
    info.location().is_some_and(|l| {
        let file = l.file().replace('\\', "/");
        file.starts_with("sdk/src/") || file.contains("/sdk/src/")
    })
}

/// Whether this is the first panic seen at its location: a panic that the SDK catches may recur
/// on every run, and printing it each time would drown libFuzzer's output.
fn first_at(info: &PanicHookInfo<'_>) -> bool {
    static SEEN: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let place = info
        .location()
        .map_or_else(String::new, |l| format!("{}:{}", l.file(), l.line()));
    SEEN.lock().map_or(true, |mut seen| seen.insert(place))
}

/// Installs, once, a panic hook that notes panics raised in the SDK's own code.
///
/// The SDK turns panics of tract into typed errors with `catch_unwind`, by design; libFuzzer's
/// hook would abort on those too. This hook lets them unwind to the SDK (printing each location
/// once, so that an uncaught one still says where it was), but remembers a
/// panic whose location is in `sdk/src`, which [`guarded`] turns into a failure even when the
/// SDK caught it: the SDK's own code must never panic. Panics nobody catches still fail the run.
pub fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Under libFuzzer the current hook aborts; taking it leaves the default one to take too,
        // which prints without aborting.
        let previous = std::panic::take_hook();
        let print = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if in_sdk(info) {
                SDK_PANIC.with(|p| p.set(Some("the SDK's own code panicked (message above)")));
                previous(info);
            } else if first_at(info) {
                print(info);
            }
        }));
    });
}

/// Runs one SDK call, failing if the SDK's own code panicked during it (even if caught).
fn guarded<T>(call: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    SDK_PANIC.with(|p| p.set(None));
    let result = call();
    if let Some(what) = SDK_PANIC.with(Cell::take) {
        panic!("{what}");
    }
    result
}
