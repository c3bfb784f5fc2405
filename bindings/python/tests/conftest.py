"""Fixtures for the Python binding tests.

The test model, photos and the Rust reference numbers are made by ``scripts/test-bindings.sh``
(``mpox-trainer export`` / ``synth`` and ``cargo run --example reference``) into
``$MPOX_BINDINGS_FIXTURES`` (default: ``<repo>/target/bindings-test``); nothing binary is
committed. The native library must have been copied next to ``mpoxscreen/_uniffi.py``.
"""

import os
import pathlib
import struct
import sys
import zlib

import pytest

PACKAGE_ROOT = pathlib.Path(__file__).resolve().parents[1]
REPO_ROOT = PACKAGE_ROOT.parents[1]
sys.path.insert(0, str(PACKAGE_ROOT))

FIXTURES = pathlib.Path(
    os.environ.get("MPOX_BINDINGS_FIXTURES", REPO_ROOT / "target" / "bindings-test")
)


def _require(path: pathlib.Path) -> pathlib.Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: run scripts/test-bindings.sh, which generates the fixtures")
    return path


@pytest.fixture(scope="session")
def fixtures() -> pathlib.Path:
    return _require(FIXTURES)


@pytest.fixture(scope="session")
def model_path(fixtures) -> pathlib.Path:
    return _require(fixtures / "model.onnx")


@pytest.fixture(scope="session")
def model_bytes(model_path) -> bytes:
    return model_path.read_bytes()


def f32(v: float) -> float:
    """Rounds a Python float to the nearest float32, as the library returns."""
    return struct.unpack("<f", struct.pack("<f", v))[0]


class Reference:
    """One photo's result as computed by the Rust SDK (a line of reference.tsv)."""

    def __init__(self, line: str):
        cols = line.rstrip("\n").split("\t")
        # Parsed back to the exact float32 the Rust SDK computed (Python floats are doubles).
        floats = lambda s: [f32(float(v)) for v in s.split(",")] if s else []  # noqa: E731
        self.file = cols[0]
        self.verdict = cols[1]
        self.probability_mpox = f32(float(cols[2]))
        self.probabilities = floats(cols[3])
        self.logits = floats(cols[4])
        self.quality = cols[5].split(",") if cols[5] else []
        self.heatmap = floats(cols[6])


@pytest.fixture(scope="session")
def reference(fixtures):
    lines = _require(fixtures / "reference.tsv").read_text().splitlines()
    assert lines, "reference.tsv is empty"
    return [Reference(line) for line in lines]


def png_rgba(width: int, height: int, rgba: bytes) -> bytes:
    """Encodes 8-bit RGBA pixels as a PNG with the standard library only."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    stride = width * 4
    raw = b"".join(b"\x00" + rgba[y * stride : (y + 1) * stride] for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def gradient_rgba(width: int, height: int) -> bytes:
    """A deterministic textured RGBA frame (alpha varies too: the SDK must ignore it)."""
    return bytes(
        v
        for y in range(height)
        for x in range(width)
        for v in ((x * 7 + y * 3) % 256, (x * y) % 251, (x ^ y) * 2 % 256, (x + y) % 256)
    )
