"""The Python bindings against the Rust SDK: same numbers, every error typed, threads safe."""

import gc
import hashlib
import json
from concurrent.futures import ThreadPoolExecutor

import pytest

import mpoxscreen
from mpoxscreen import MpoxError, Screener, ScreenerConfig, Verdict

from conftest import gradient_rgba, png_rgba

TOLERANCE = 1e-6


def max_abs_diff(a, b):
    assert len(a) == len(b), (len(a), len(b))
    return max((abs(x - y) for x, y in zip(a, b)), default=0.0)


def warning_code(w) -> str:
    """`QualityWarning.TOO_DARK(...)` -> `too_dark`, the SDK's stable code."""
    return type(w).__name__.rsplit(".", 1)[-1].lower()


@pytest.fixture(scope="module")
def screener(model_path):
    return Screener.from_path(str(model_path), ScreenerConfig(heatmap=True))


def test_results_equal_the_rust_sdk(screener, reference):
    worst = {"probability": 0.0, "logit": 0.0, "heatmap": 0.0}
    for ref in reference:
        with open(ref.file, "rb") as f:
            s = screener.screen(f.read())
        assert s.verdict == Verdict[ref.verdict.upper()], ref.file
        assert [warning_code(w) for w in s.quality] == ref.quality, ref.file
        probs = [s.probability_mpox] + [c.probability for c in s.probabilities]
        worst["probability"] = max(
            worst["probability"],
            max_abs_diff(probs, [ref.probability_mpox] + ref.probabilities),
        )
        worst["logit"] = max(worst["logit"], max_abs_diff(s.logits, ref.logits))
        assert s.heatmap is not None
        assert len(s.heatmap.values) == s.heatmap.width * s.heatmap.height
        worst["heatmap"] = max(worst["heatmap"], max_abs_diff(s.heatmap.values, ref.heatmap))
    print(
        f"\nPYTHON vs RUST over {len(reference)} photos: max |dprobability| = {worst['probability']:.2e}, "
        f"max |dlogit| = {worst['logit']:.2e}, max |dheatmap| = {worst['heatmap']:.2e}"
    )
    assert all(v <= TOLERANCE for v in worst.values()), worst


def test_screen_rgba_equals_screening_the_same_pixels_as_png(screener):
    w, h = 150, 120
    frame = gradient_rgba(w, h)
    a = screener.screen_rgba(w, h, frame)
    b = screener.screen(png_rgba(w, h, frame))
    assert a.logits == b.logits
    assert a.probability_mpox == b.probability_mpox
    assert a.heatmap.values == b.heatmap.values


def test_info_describes_the_file(screener, model_bytes):
    info = screener.info()
    sha = hashlib.sha256(model_bytes).hexdigest()
    assert info.sha256 == sha and info.model_id == sha[:12]
    assert info.labels == ["not_mpox", "mpox"] and info.positive_label == "mpox"
    assert info.input_size == 64 and info.resize >= info.input_size
    assert len(info.mean) == 3 and len(info.std) == 3
    assert info.uncertain_low <= info.threshold <= info.uncertain_high
    assert info.cam_width > 0 and info.cam_height > 0
    assert isinstance(json.loads(info.metrics_json), dict)
    assert info.arch == "resnet18"
    assert mpoxscreen.library_version()


def test_from_bytes_with_checksum_equals_from_path(screener, model_bytes, reference):
    sha = hashlib.sha256(model_bytes).hexdigest()
    other = Screener.from_bytes(model_bytes, ScreenerConfig(expected_sha256=sha.upper()))
    photo = open(reference[0].file, "rb").read()
    assert other.screen(photo).logits == screener.screen(photo).logits
    # The default config: no heatmap.
    assert Screener.from_bytes(model_bytes).screen(photo).heatmap is None


def patched(model: bytes, old: bytes, new: bytes) -> bytes:
    assert len(old) == len(new) and old in model, old
    return model.replace(old, new)


def test_model_errors_are_typed(model_path, model_bytes):
    with pytest.raises(MpoxError.Io) as e:
        Screener.from_path(str(model_path) + ".missing")
    assert e.value.path.endswith(".missing") and e.value.reason

    with pytest.raises(MpoxError.ModelChecksum) as e:
        Screener.from_bytes(model_bytes, ScreenerConfig(expected_sha256="00" * 32))
    assert e.value.expected == "00" * 32
    assert e.value.actual == hashlib.sha256(model_bytes).hexdigest()

    for garbage in (b"", b"not an onnx file at all", model_bytes[: len(model_bytes) // 2]):
        with pytest.raises(MpoxError.ModelDecode) as e:
            Screener.from_bytes(garbage)
        assert e.value.reason

    # Same-length byte patches of the protobuf: format "1" -> "9", key `labels` renamed,
    # output `cam` renamed.
    with pytest.raises(MpoxError.ModelVersion) as e:
        Screener.from_bytes(
            patched(model_bytes, b"\x0a\x11mpoxscreen.format\x12\x011", b"\x0a\x11mpoxscreen.format\x12\x019")
        )
    assert e.value.found == "9" and e.value.supported == 1

    with pytest.raises(MpoxError.ModelMetadata) as e:
        Screener.from_bytes(patched(model_bytes, b"\x0a\x06labels", b"\x0a\x06lebals"))
    assert e.value.key == "labels"

    with pytest.raises(MpoxError.ModelContract) as e:
        Screener.from_bytes(patched(model_bytes, b"\x03cam", b"\x03cax"))
    assert "cam" in e.value.reason

    # Every variant is a subclass of MpoxError, so one `except MpoxError` catches them all.
    assert issubclass(MpoxError.ImageDecode, MpoxError)


def test_image_errors_are_typed(screener, reference):
    with pytest.raises(MpoxError.ImageEmpty):
        screener.screen(b"")
    with pytest.raises(MpoxError.ImageFormat):
        screener.screen(b"this is not an image, just some text")
    photo = open(reference[0].file, "rb").read()
    with pytest.raises(MpoxError.ImageDecode) as e:
        screener.screen(photo[: len(photo) // 2])
    assert e.value.reason
    with pytest.raises(MpoxError.ImageTooSmall) as e:
        screener.screen_rgba(16, 16, bytes(16 * 16 * 4))
    assert (e.value.width, e.value.height, e.value.min_side) == (16, 16, 32)
    with pytest.raises(MpoxError.ImageTooLarge) as e:
        screener.screen_rgba(20_000, 40, bytes(20_000 * 40 * 4))
    assert e.value.width == 20_000 and e.value.max_width == 16_384
    with pytest.raises(MpoxError.InvalidFrame):
        screener.screen_rgba(64, 64, bytes(10))
    with pytest.raises(MpoxError.InvalidFrame):
        screener.screen_rgba(-64, 64, bytes(64 * 64 * 4))


def test_limits_and_quality_thresholds_from_the_config(model_bytes, reference):
    photo = open(reference[0].file, "rb").read()
    tight = Screener.from_bytes(
        model_bytes, ScreenerConfig(limits=mpoxscreen.ImageLimits(max_width=100))
    )
    with pytest.raises(MpoxError.ImageTooLarge) as e:
        tight.screen(photo)
    assert e.value.max_width == 100 and e.value.max_height == 16_384
    picky = Screener.from_bytes(
        model_bytes,
        ScreenerConfig(quality=mpoxscreen.QualityThresholds(min_mean_luminance=255.0)),
    )
    assert "too_dark" in [warning_code(w) for w in picky.screen(photo).quality]
    with pytest.raises(MpoxError.InvalidFrame):
        Screener.from_bytes(
            model_bytes, ScreenerConfig(limits=mpoxscreen.ImageLimits(min_side=-1))
        )


def test_views_average_mirror_images_and_other_counts_are_refused(screener, model_bytes):
    # A left-right gradient: its mirror image is a different photo to the network.
    w, h = 150, 120
    frame = gradient_rgba(w, h)
    assert screener.info().recommended_views == 1 and screener.views() == 1
    one = Screener.from_bytes(model_bytes, ScreenerConfig(views=1)).screen_rgba(w, h, frame)
    assert one.logits == screener.screen_rgba(w, h, frame).logits
    two_views = Screener.from_bytes(model_bytes, ScreenerConfig(views=2))
    assert two_views.views() == 2
    two = two_views.screen_rgba(w, h, frame)
    assert two.probability_mpox != one.probability_mpox, one.probability_mpox
    for bad in (3, 0, -2):
        with pytest.raises(MpoxError.InvalidOption) as e:
            Screener.from_bytes(model_bytes, ScreenerConfig(views=bad))
        assert e.value.option == "views" and str(bad) in e.value.reason


def test_four_threads_give_identical_results(screener, reference):
    photos = [open(r.file, "rb").read() for r in reference]
    expected = [screener.screen(p).logits for p in photos]

    def work(offset):
        return [screener.screen(photos[(i + offset) % len(photos)]).logits for i in range(3 * len(photos))]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(work, range(4)))
    for offset, got in enumerate(results):
        assert got == [expected[(i + offset) % len(photos)] for i in range(3 * len(photos))]


def test_releasing_a_screener_frees_it(model_bytes):
    gc.collect()
    before = mpoxscreen.live_screeners()
    s = Screener.from_bytes(model_bytes)
    assert mpoxscreen.live_screeners() == before + 1
    del s
    gc.collect()
    assert mpoxscreen.live_screeners() == before


def test_signed_models_load_only_under_a_trusted_key(fixtures, model_bytes):
    public = (fixtures / "release.pub").read_text().strip()
    stranger = (fixtures / "stranger.pub").read_text().strip()
    signed = (fixtures / "signed.onnx").read_bytes()

    s = Screener.from_bytes(signed, ScreenerConfig(trusted_keys=[stranger, public]))
    assert s.info().signed_by == public
    # Without trusted keys a signature is not checked, and nothing claims it was.
    assert Screener.from_bytes(signed).info().signed_by is None

    with pytest.raises(MpoxError.ModelUnsigned):
        Screener.from_bytes(model_bytes, ScreenerConfig(trusted_keys=[public]))
    with pytest.raises(MpoxError.ModelUntrustedSigner) as e:
        Screener.from_bytes(signed, ScreenerConfig(trusted_keys=[stranger]))
    assert e.value.signer == public and e.value.trusted == 1
    # The format version "1" -> "9" after signing: same length, still parses, signature broken.
    altered = patched(signed, b"\x0a\x11mpoxscreen.format\x12\x011", b"\x0a\x11mpoxscreen.format\x12\x019")
    with pytest.raises(MpoxError.ModelSignatureMismatch) as e:
        Screener.from_bytes(altered, ScreenerConfig(trusted_keys=[public]))
    assert e.value.signer == public
    with pytest.raises(MpoxError.InvalidOption) as e:
        Screener.from_bytes(signed, ScreenerConfig(trusted_keys=["not a key"]))
    assert e.value.option == "trusted_keys"
