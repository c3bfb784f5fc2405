#!/usr/bin/env python3
"""Median latency of onnxruntime `session.run` on a model file, one intra-op thread, batch 1.

Used by the Rust benchmark `cargo bench -p mpox-e2e --bench sdk_latency` to put onnxruntime's figure
beside the SDK's on the same file and machine. Prints one JSON object.
"""
import argparse
import json
import time

import numpy as np
import onnxruntime as ort


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    t0 = time.perf_counter()
    sess = ort.InferenceSession(args.model, opts, providers=["CPUExecutionProvider"])
    load_ms = (time.perf_counter() - t0) * 1e3
    shape = [1 if isinstance(d, str) else d for d in sess.get_inputs()[0].shape]
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    for _ in range(args.warmup):
        sess.run(["logits"], {"image": x})
    times = []
    for _ in range(args.runs):
        t = time.perf_counter()
        sess.run(["logits", "cam"], {"image": x})
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    print(json.dumps({
        "onnxruntime": ort.__version__,
        "load_ms": load_ms,
        "median_ms": times[len(times) // 2],
        "p90_ms": times[int(len(times) * 0.9)],
    }))


if __name__ == "__main__":
    main()
