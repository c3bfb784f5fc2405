"""Per-call time of Screener.screen() from Python (ctypes), for bindings/README.md.

usage: python3 bench.py MODEL PHOTO CALLS   (the mpoxscreen package must be importable)
Not an asserted timing: run it on a quiet machine and compare with the Rust and Kotlin figures
printed by scripts/bench-bindings.sh in the same run.
"""

import statistics
import sys
import time

import mpoxscreen


def timed(calls, f):
    for _ in range(max(1, calls // 10)):
        f()
    times = []
    for _ in range(calls):
        t = time.perf_counter_ns()
        f()
        times.append((time.perf_counter_ns() - t) / 1e3)
    return statistics.median(times), statistics.fmean(times)


def main():
    model, photo, calls = sys.argv[1], sys.argv[2], int(sys.argv[3])
    screener = mpoxscreen.Screener.from_path(model)
    image = open(photo, "rb").read()
    median, mean = timed(calls, lambda: screener.screen(image))
    print(f"python screen(): median {median:.1f} us, mean {mean:.1f} us per call ({calls} calls)")

    def empty():
        try:
            screener.screen(b"")
        except mpoxscreen.MpoxError.ImageEmpty:
            pass

    median, mean = timed(calls * 100, empty)
    print(
        f"python screen(empty) -> error: median {median:.3f} us, mean {mean:.3f} us per call ({calls * 100} calls)"
    )
    median, mean = timed(calls * 100, screener.info)
    print(f"python info(): median {median:.3f} us, mean {mean:.3f} us per call ({calls * 100} calls)")


if __name__ == "__main__":
    main()
