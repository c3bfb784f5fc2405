//! Exported files checked by the reference tooling: `onnx.checker` (full check) and onnxruntime,
//! whose outputs must match the SDK's. Needs python3 with onnx, onnxruntime and numpy
//! (`scripts/setup` installs them); set MPOX_SKIP_PYTHON=1 to skip on a machine without them.

use std::process::Command;

use mpox_e2e::{export, photo, random_network, temp_dir, workspace_root};
use mpox_sdk::{Screener, ScreenerOptions};
use mpox_trainer::models::Arch;

#[test]
fn onnx_checker_and_onnxruntime_agree_with_the_sdk() {
    if std::env::var("MPOX_SKIP_PYTHON").as_deref() == Ok("1") {
        eprintln!("MPOX_SKIP_PYTHON=1: onnxruntime cross-check skipped");
        return;
    }
    let dir = temp_dir("ort");
    let mut manifest = Vec::new();
    for (name, arch, classes, size) in [
        ("mobilenet_v2", Arch::MobileNetV2 { width: 1.0 }, 2, 224u32),
        (
            "mobilenet_v2_w0.5_3class",
            Arch::MobileNetV2 { width: 0.5 },
            3,
            128,
        ),
        ("resnet18", Arch::ResNet18, 2, 224),
    ] {
        let net = random_network(arch, classes, 31);
        let bytes = export(&net, size);
        std::fs::write(dir.join(format!("{name}.onnx")), &bytes).unwrap();
        let screener = Screener::from_bytes(&bytes, ScreenerOptions::default()).unwrap();
        let pre = &screener.info().meta.preprocessing;
        // A batch of two real-looking photos through the SDK's own preprocessing.
        let inputs: Vec<Vec<f32>> = (0..2)
            .map(|i| pre.tensor(&photo(40 + i, i == 0, 250)))
            .collect();
        let (mut logits, mut cam) = (Vec::new(), Vec::new());
        for x in &inputs {
            let out = screener.infer(x).unwrap();
            logits.push(out.logits);
            cam.extend(out.cam);
        }
        let raw: Vec<u8> = inputs
            .iter()
            .flatten()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        std::fs::write(dir.join(format!("{name}.input.bin")), raw).unwrap();
        manifest.push(serde_json::json!({
            "model": format!("{name}.onnx"),
            "input": format!("{name}.input.bin"),
            "shape": [2, 3, size, size],
            "logits": logits,
            "cam": cam,
        }));
    }
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    let script = workspace_root().join("scripts/ort_check.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&dir)
        .output()
        .expect("python3 runs (install with scripts/setup, or set MPOX_SKIP_PYTHON=1)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "onnx checker / onnxruntime disagree (see above)"
    );
    assert_eq!(
        stdout.lines().filter(|l| l.contains("checker=ok")).count(),
        3
    );
}
