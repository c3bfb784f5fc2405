#!/usr/bin/env python3
"""Independent check of exported model files with the reference ONNX tooling.

For every entry of DIR/manifest.json (written by the Rust test `onnxruntime` in tests/):
  1. onnx.checker.check_model(model, full_check=True)  (structure, types, shape inference);
  2. run the model in onnxruntime (CPU, one intra-op thread) on the same batch the SDK saw,
     and compare `logits` and `cam` with the SDK's (tract's) outputs.
Prints one line per model and exits 1 if a check fails or a difference exceeds the tolerance.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort


def rel(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    diff = float(np.max(np.abs(a - b)))
    return diff, diff / max(1.0, float(np.max(np.abs(b))))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("dir", type=Path)
    ap.add_argument("--tolerance", type=float, default=1e-5, help="largest relative difference")
    args = ap.parse_args()
    entries = json.loads((args.dir / "manifest.json").read_text())
    ok = True
    for e in entries:
        path = args.dir / e["model"]
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
        meta = {p.key: p.value for p in model.metadata_props}
        shape = e["shape"]
        x = np.fromfile(args.dir / e["input"], dtype="<f4").reshape(shape)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        logits, cam = sess.run(["logits", "cam"], {"image": x})
        tract_logits = np.array(e["logits"], dtype=np.float32)
        tract_cam = np.array(e["cam"], dtype=np.float32).reshape(cam.shape)
        la, lr = rel(logits, tract_logits)
        ca, cr = rel(cam, tract_cam)
        good = lr <= args.tolerance and cr <= args.tolerance
        ok &= good
        print(
            f"{e['model']}: checker=ok opset={model.opset_import[0].version} "
            f"format={meta.get('mpoxscreen.format')} batch={shape[0]} "
            f"logits max_abs_diff={la:.3e} rel_diff={lr:.3e} cam max_abs_diff={ca:.3e} rel_diff={cr:.3e}"
            + ("" if good else "  <-- exceeds tolerance")
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
