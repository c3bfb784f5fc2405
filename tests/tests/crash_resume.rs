//! Crash and resume: `fit`, `gan train` and `crossval` run as processes, are killed with SIGKILL
//! at seeded random moments and inside checkpoint writes, are rerun with the same command until
//! they finish, and must leave the same files as an uninterrupted run. A full disk must fail with
//! one clear message and leave the previous checkpoint to resume from; a missing file's error is
//! printed once.
//!
//! Set `MPOX_CRASH_SEED` to replay other kill moments (the seed in use is printed).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mpox_e2e::{temp_dir, workspace_root};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The model card's date, fixed so that cards and models compare byte for byte.
const SOURCE_DATE_EPOCH: &str = "1700000000";

/// How long a paused run sleeps before and after each rename of a written temporary file: ample
/// for the poll (every 2 ms) to see the file come and go even on a loaded machine, short enough
/// for runs that write a few dozen files.
const PAUSE_MS: u64 = 60;

/// The `mpox-trainer` binary of this test's build profile.
///
/// `CARGO_BIN_EXE_*` only names binaries of the test's own package, and this crate is another
/// one. So the binary is built by cargo into this test's target folder (the folder above this
/// executable's `deps/`): a no-op after `cargo test --workspace`, which built it already, and
/// never a stale binary when only this test is run. `MPOX_TRAINER_BIN` names one instead.
fn trainer() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("MPOX_TRAINER_BIN") {
            return PathBuf::from(bin);
        }
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test executable in <target>/<profile>/deps");
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev".to_string(),
            Some(p) => p.to_string(),
            None => panic!("no profile folder above {}", exe.display()),
        };
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
        let status = Command::new(cargo)
            .args(["build", "--quiet", "--workspace", "--bin", "mpox-trainer"])
            .args(["--profile", &profile, "--target-dir"])
            .arg(profile_dir.parent().expect("target folder"))
            .current_dir(workspace_root())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build of mpox-trainer failed");
        let bin = profile_dir.join(format!("mpox-trainer{}", std::env::consts::EXE_SUFFIX));
        assert!(bin.is_file(), "{} not built", bin.display());
        bin
    })
}

fn seed() -> u64 {
    let seed = std::env::var("MPOX_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_240_611);
    eprintln!("MPOX_CRASH_SEED={seed}");
    seed
}

/// A trainer invocation; `pause` makes it hold each written checkpoint before the rename.
fn command(args: &[OsString], pause: bool) -> Command {
    let mut c = Command::new(trainer());
    c.args(args)
        .env("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH)
        .env_remove(mpox_trainer::atomic::PAUSE_AROUND_RENAME)
        .stdin(Stdio::null());
    if pause {
        c.env(
            mpox_trainer::atomic::PAUSE_AROUND_RENAME,
            PAUSE_MS.to_string(),
        );
    }
    c
}

fn run(args: &[OsString]) -> Output {
    command(args, false).output().expect("run mpox-trainer")
}

fn run_ok(args: &[OsString]) -> Output {
    let out = run(args);
    assert!(
        out.status.success(),
        "mpox-trainer {:?} failed:\n{}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn args(parts: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<OsString> {
    parts.iter().map(|p| p.as_ref().to_os_string()).collect()
}

/// Where an interrupted invocation is killed.
///
/// Write numbers count the atomic writes of the whole job (1-based), across the invocations
/// that resume it: a resumed invocation is killed at the `n`-th write minus those its
/// predecessors finished, so that kill points stay ahead of the job however far it got.
#[derive(Clone, Copy, Debug)]
enum Kill {
    /// This fraction of the uninterrupted run's time still left, after the invocation started.
    After(f64),
    /// While the job's `n`-th file is written but not yet renamed into place.
    InWrite(usize),
    /// Right after the job's `n`-th file was renamed into place, before anything else is written.
    AfterWrite(usize),
}

/// When one invocation is killed, counted from its own start.
#[derive(Clone, Copy, Debug)]
enum KillAt {
    After(Duration),
    InWrite(usize),
    AfterWrite(usize),
}

/// How an invocation ended.
#[derive(Debug, PartialEq)]
enum Ended {
    /// Killed after finishing `writes` atomic writes; whether a temporary file of it was still
    /// there (a kill inside a write).
    Killed { inside_write: bool, writes: usize },
    /// Finished on its own after this many atomic writes.
    Finished { writes: usize },
}

/// Whether a temporary file of process `pid` (see `mpox_trainer::atomic`) is anywhere under `dir`.
fn writing(dir: &Path, pid: u32) -> bool {
    let suffix = format!(".tmp-{pid}");
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if e.file_name().to_string_lossy().ends_with(&suffix) {
                return true;
            }
        }
    }
    false
}

/// Runs `args` (run folder `out`, each rename paused) and kills it with SIGKILL at `kill` unless
/// it finishes first.
fn run_and_kill(args: &[OsString], out: &Path, kill: Option<KillAt>, log: &Path) -> Ended {
    let stderr = std::fs::File::create(log).expect("log file");
    let mut child = command(args, true)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn mpox-trainer");
    let start = Instant::now();
    // Atomic writes begun and finished, counted on the temporary file's coming and going.
    let (mut begun, mut done, mut present) = (0, 0, false);
    loop {
        let now = writing(out, child.id());
        if now && !present {
            begun += 1;
        }
        if !now && present {
            done += 1;
        }
        present = now;
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(
                status.success(),
                "mpox-trainer {args:?} failed:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            return Ended::Finished { writes: done };
        }
        let due = match kill {
            None => false,
            Some(KillAt::After(d)) => start.elapsed() >= d,
            Some(KillAt::InWrite(n)) => present && begun == n,
            Some(KillAt::AfterWrite(n)) => done == n,
        };
        if due {
            // `Child::kill` sends SIGKILL on Unix: no destructor, no flush, no clean-up.
            child.kill().expect("kill");
            child.wait().expect("reap");
            return Ended::Killed {
                inside_write: writing(out, child.id()),
                writes: done,
            };
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Kills `args` (run folder `out`) at each of `kills` in turn, then reruns it until it finishes;
/// returns how many kills landed and how many of those inside a write. `writes` and `took`
/// describe the uninterrupted run.
fn interrupt_and_resume(
    args: &[OsString],
    out: &Path,
    kills: &[Kill],
    writes: usize,
    took: Duration,
) -> (usize, usize) {
    let log = out.with_extension("log");
    let (mut landed, mut inside) = (0, 0);
    // Writes finished by the killed invocations so far. A resumed invocation redoes the
    // interrupted epoch's writes, so this runs ahead of the job's real progress, and kill
    // points derived from it fall within what is left.
    let mut progress = 0;
    for &kill in kills {
        let at = match kill {
            Kill::After(f) => {
                let left = 1.0 - (progress as f64 / writes as f64).min(0.9);
                KillAt::After(took.mul_f64(f * left))
            }
            Kill::InWrite(n) => KillAt::InWrite(n.saturating_sub(progress).max(1)),
            Kill::AfterWrite(n) => KillAt::AfterWrite(n.saturating_sub(progress).max(1)),
        };
        match run_and_kill(args, out, Some(at), &log) {
            Ended::Killed {
                inside_write,
                writes: done,
            } => {
                landed += 1;
                inside += usize::from(inside_write);
                progress += done;
                let place = if inside_write { " inside a write" } else { "" };
                eprintln!("  killed at {kill:?} ({at:?}){place}");
            }
            Ended::Finished { .. } => {
                eprintln!("  {kill:?} ({at:?}): the run finished first");
                return (landed, inside);
            }
        }
    }
    run_ok(args);
    (landed, inside)
}

/// Seeded kill points for a run of `writes` atomic writes: four at distinct writes of its first
/// four fifths (alternately inside a write and right after one), with a kill at a random moment
/// between them.
fn kills(rng: &mut StdRng, writes: usize) -> Vec<Kill> {
    let top = (writes * 4 / 5).max(4);
    let mut points = std::collections::BTreeSet::new();
    while points.len() < 4 {
        points.insert(rng.random_range(1..=top));
    }
    let mut k: Vec<Kill> = points
        .into_iter()
        .enumerate()
        .map(|(i, n)| {
            if i % 2 == 0 {
                Kill::InWrite(n)
            } else {
                Kill::AfterWrite(n)
            }
        })
        .collect();
    k.insert(2, Kill::After(rng.random_range(0.2..0.6)));
    k
}

/// Every file under `dir`, by path relative to it.
fn files(dir: &Path) -> BTreeMap<PathBuf, PathBuf> {
    let mut found = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read run folder").flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.insert(path.strip_prefix(dir).unwrap().to_path_buf(), path);
            }
        }
    }
    found
}

/// Removes every `key` field, at any depth.
fn strip(v: &mut serde_json::Value, key: &str) {
    match v {
        serde_json::Value::Object(m) => {
            m.remove(key);
            m.values_mut().for_each(|v| strip(v, key));
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(|v| strip(v, key)),
        _ => {}
    }
}

/// A safetensors file as (header, data): the header's JSON with its metadata strings parsed
/// where they are JSON and the wall-clock `images_per_second` removed. The metadata is compared
/// parsed, not as bytes, because safetensors writes its entries in `HashMap` order, which
/// differs from process to process.
fn safetensors_parts(bytes: &[u8]) -> (serde_json::Value, &[u8]) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    if let Some(meta) = header
        .get_mut("__metadata__")
        .and_then(|m| m.as_object_mut())
    {
        for v in meta.values_mut() {
            if let Some(parsed) = v
                .as_str()
                .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
            {
                *v = parsed;
            }
        }
    }
    strip(&mut header, "images_per_second");
    (header, &bytes[8 + n..])
}

/// `bytes` as they must match between runs: wall-clock figures (training throughput, a command's
/// duration) removed, everything else as written.
fn comparable(name: &Path, bytes: &[u8]) -> Vec<u8> {
    let file = name.file_name().unwrap().to_string_lossy();
    if file.ends_with(".safetensors") {
        let (header, data) = safetensors_parts(bytes);
        let mut v = serde_json::to_vec(&header).unwrap();
        v.extend_from_slice(data);
        v
    } else if file == "history.csv" {
        // The last column is images_per_second.
        String::from_utf8_lossy(bytes)
            .lines()
            .map(|l| l.rsplit_once(',').map_or(l, |(keep, _)| keep).to_string() + "\n")
            .collect::<String>()
            .into_bytes()
    } else if file == "crossval.json" {
        let mut v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
        strip(&mut v, "seconds");
        serde_json::to_vec(&v).unwrap()
    } else {
        bytes.to_vec()
    }
}

/// Asserts that `b` holds the same files as `a`, equal but for wall-clock figures.
fn assert_same_files(a: &Path, b: &Path) {
    let (fa, fb) = (files(a), files(b));
    assert_eq!(
        fa.keys().collect::<Vec<_>>(),
        fb.keys().collect::<Vec<_>>(),
        "the resumed run left other files than the uninterrupted one"
    );
    for (name, pa) in &fa {
        let (x, y) = (
            std::fs::read(pa).unwrap(),
            std::fs::read(&fb[name]).unwrap(),
        );
        assert!(
            comparable(name, &x) == comparable(name, &y),
            "{} differs after resuming ({} and {} bytes)",
            name.display(),
            x.len(),
            y.len()
        );
    }
    eprintln!("  {} files identical", fa.len());
}

/// Runs `make(out)` uninterrupted into `dir/reference`; then into `dir/chain` killed at seeded
/// points in turn and resumed each time; then into `dir/tail` killed once right after a write of
/// the run's last third (where a run has all its checkpoints and writes its final files). Both
/// must end with the reference's files.
fn crash_and_compare(dir: &Path, make: impl Fn(&Path) -> Vec<OsString>) {
    std::fs::create_dir_all(dir).expect("test folder");
    let mut rng = StdRng::seed_from_u64(seed());
    let reference = dir.join("reference");
    let start = Instant::now();
    let Ended::Finished { writes } =
        run_and_kill(&make(&reference), &reference, None, &dir.join("ref.log"))
    else {
        unreachable!("never killed")
    };
    let took = start.elapsed();
    eprintln!("  uninterrupted run: {took:.1?}, {writes} atomic writes");
    assert!(writes >= 3, "only {writes} writes seen");

    let chain = dir.join("chain");
    let (landed, inside) = interrupt_and_resume(
        &make(&chain),
        &chain,
        &kills(&mut rng, writes),
        writes,
        took,
    );
    assert!(landed >= 4, "only {landed} of 5 kills landed");
    assert!(inside >= 1, "no kill landed inside a write");
    assert_same_files(&reference, &chain);

    let tail = dir.join("tail");
    let n = rng.random_range((writes * 2 / 3).max(1)..=writes);
    let (landed, _) =
        interrupt_and_resume(&make(&tail), &tail, &[Kill::AfterWrite(n)], writes, took);
    assert_eq!(landed, 1, "the kill after write {n} of {writes} missed");
    assert_same_files(&reference, &tail);
}

/// A small generated dataset (two classes, 64-px photos) shared by the runs of one test.
fn dataset(dir: &Path, per_class: usize) -> PathBuf {
    let data = dir.join("data");
    run_ok(&args(&[
        &"synth",
        &"--out",
        &data,
        &"--per-class",
        &per_class.to_string(),
        &"--size",
        &"64",
        &"--seed",
        &"5",
    ]));
    data
}

/// A small `fit` with mixup (the per-step generator crossed too), resumed with `--resume`.
fn fit_args(data: &Path, out: &Path, recipe: &str, epochs: usize) -> Vec<OsString> {
    args(&[
        &"fit",
        &data,
        &"--arch",
        &"mobilenet_v2_w0.35",
        &"--input-size",
        &"32",
        &"--batch-size",
        &"8",
        &"--recipe",
        &recipe,
        &"--epochs",
        &epochs.to_string(),
        &"--patience",
        &epochs.to_string(),
        &"--mixup",
        &"0.2",
        &"--seed",
        &"3",
        &"--min-calibration-photos",
        &"1",
        &"--resume",
        &"--out",
        &out,
    ])
}

#[test]
fn fit_killed_anywhere_resumes_to_identical_files() {
    let dir = temp_dir("crash-fit");
    let data = dataset(&dir, 24);
    eprintln!("fit:");
    // Plain fine-tuning (a new best epoch now and then), and WiSE-FT (the probe's epoch and
    // weights, then the blend at the end).
    for recipe in ["finetune", "wise-ft"] {
        eprintln!(" {recipe}:");
        crash_and_compare(&dir.join(recipe), |out| fit_args(&data, out, recipe, 3));
    }
}

#[test]
fn gan_training_killed_anywhere_resumes_to_identical_files() {
    let dir = temp_dir("crash-gan");
    let data = dataset(&dir, 12);
    // The default projected GAN, on random feature weights (the file's shape is what matters).
    let features = mpox_e2e::random_feature_weights(&dir.join("features.safetensors"), 4);
    eprintln!("gan train:");
    crash_and_compare(&dir, |out| {
        args(&[
            &"gan",
            &"train",
            &data,
            &"--class",
            &"mpox",
            &"--gan-features",
            &features,
            &"--size",
            &"64",
            &"--gan-steps",
            &"6",
            &"--gan-batch-size",
            &"4",
            &"--every",
            &"2",
            &"--ema",
            &"0.99",
            &"--diffaug",
            &"all",
            &"--gan-seed",
            &"2",
            &"--resume",
            &"--out",
            &out,
        ])
    });
}

#[test]
fn crossval_killed_anywhere_resumes_to_identical_files() {
    let dir = temp_dir("crash-crossval");
    let data = dataset(&dir, 18);
    eprintln!("crossval:");
    crash_and_compare(&dir, |out| {
        args(&[
            &"crossval",
            &data,
            &"--folds",
            &"3",
            &"--positive",
            &"mpox",
            &"--arch",
            &"mobilenet_v2_w0.35",
            &"--input-size",
            &"32",
            &"--batch-size",
            &"8",
            &"--epochs",
            &"2",
            &"--seed",
            &"1",
            &"--min-calibration-photos",
            &"1",
            &"--out",
            &out,
        ])
    });
}

/// A tmpfs mounted on a folder for the test's life (unmounted on drop).
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` on `dir`, or says why not (no root, a container that refuses).
    fn mount(dir: &Path, bytes: u64) -> Result<Self, String> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={}k", bytes.div_ceil(1024)))
            .arg("tmpfs")
            .arg(dir)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if out.status.success() {
            Ok(Self(dir.to_path_buf()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for (name, path) in files(from) {
        let dest = to.join(name);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(path, dest).unwrap();
    }
}

/// The training state of a `fit` checkpoint, read as `--resume` reads it.
fn checkpoint_epoch(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    let (header, data) = safetensors_parts(&bytes);
    let end = header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(_, t)| t["data_offsets"][1].as_u64().unwrap())
        .max()
        .unwrap();
    assert_eq!(end as usize, data.len(), "{} is cut short", path.display());
    mpox_e2e::assert_identical_safetensors(path, path);
    header["__metadata__"]["mpoxscreen.train_state"]["epoch"]
        .as_u64()
        .unwrap()
}

#[test]
fn a_full_disk_fails_clearly_and_keeps_the_previous_checkpoint() {
    let dir = temp_dir("crash-disk");
    let data = dataset(&dir, 24);
    let reference = dir.join("reference");
    run_ok(&fit_args(&data, &reference, "finetune", 3));
    // Room for the first epoch's best weights and checkpoint, then for another copy of the best
    // weights but not of the checkpoint (weights and two moments, three times the weights): the
    // second epoch fails writing its checkpoint.
    let size = |f: &str| std::fs::metadata(reference.join(f)).unwrap().len();
    let (best, last) = (size("best.safetensors"), size("last.safetensors"));
    let mount = dir.join("small-disk");
    let _disk = match Tmpfs::mount(&mount, 2 * best + last + last / 4 + 64 * 1024) {
        Ok(d) => d,
        Err(why) => {
            eprintln!("note: full-disk test skipped: cannot mount a tmpfs ({why})");
            return;
        }
    };
    let full = mount.join("run");
    let out = run(&fit_args(&data, &full, "finetune", 3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a full disk went unnoticed:\n{stderr}"
    );
    let error = stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line:\n{stderr}"));
    eprintln!("  {error}");
    assert!(error.contains("last.safetensors"), "{error}");
    assert_eq!(
        error.matches("No space left on device").count(),
        1,
        "{error}"
    );
    // The failed write left no temporary file, and the first epoch's checkpoint whole.
    assert!(
        files(&full)
            .keys()
            .all(|f| !f.to_string_lossy().contains(".tmp-")),
        "temporary file left on the full disk"
    );
    assert_eq!(checkpoint_epoch(&full.join("last.safetensors")), 1);
    // On a bigger disk the same command resumes from it to the uninterrupted run's files.
    let moved = dir.join("moved");
    copy_dir(&full, &moved);
    run_ok(&fit_args(&data, &moved, "finetune", 3));
    assert_same_files(&reference, &moved);
}

#[test]
fn a_missing_file_is_reported_once_by_name() {
    let dir = temp_dir("crash-missing");
    let missing = dir.join("no-such-model.onnx");
    let split = dir.join("no-such-split.json");
    let gan = dir.join("no-such-gan.safetensors");
    let cases = [
        args(&[&"eval", &missing, &dir]),
        args(&[
            &"fit",
            &dir,
            &"--split",
            &split,
            &"--fold",
            &"0",
            &"--out",
            &dir.join("run"),
        ]),
        args(&[
            &"gan",
            &"sample",
            &"--checkpoint",
            &gan,
            &"--n",
            &"1",
            &"--out",
            &dir.join("s"),
        ]),
    ];
    let os_error = std::io::Error::from_raw_os_error(2).to_string();
    for case in cases {
        let out = run(&case);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{case:?} succeeded");
        eprintln!("{}", stderr.trim());
        assert_eq!(stderr.matches(&os_error).count(), 1, "{case:?}:\n{stderr}");
        assert_eq!(
            stderr.matches("no-such-").count(),
            1,
            "{case:?} must name the file once:\n{stderr}"
        );
    }
}
