package org.mpoxscreen

import java.awt.image.BufferedImage
import java.io.ByteArrayOutputStream
import java.io.File
import java.security.MessageDigest
import java.util.concurrent.Callable
import java.util.concurrent.Executors
import javax.imageio.ImageIO
import org.junit.AfterClass
import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertNotNull
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.BeforeClass
import org.junit.Test

/**
 * The Kotlin bindings on the host JVM (JNA) against the real library and the Rust SDK's numbers.
 *
 * Fixtures (test model, photos, `reference.tsv` from `cargo run --example reference`) are made by
 * `scripts/test-bindings.sh` in `$MPOX_BINDINGS_FIXTURES`; the library is found through
 * `-Djna.library.path`. The same file runs as a Gradle unit test where those are set up.
 */
class ScreenerTest {
    /** One photo's result from the Rust SDK: a line of `reference.tsv`. */
    class Reference(line: String) {
        private val cols = line.split("\t")
        private fun floats(s: String) = if (s.isEmpty()) listOf() else s.split(",").map { it.toFloat() }
        val file = cols[0]
        val verdict = cols[1]
        val probabilityMpox = cols[2].toFloat()
        val probabilities = floats(cols[3])
        val logits = floats(cols[4])
        val quality = if (cols[5].isEmpty()) listOf() else cols[5].split(",")
        val heatmap = floats(cols[6])
    }

    companion object {
        const val TOLERANCE = 1e-6

        val fixtures = File(System.getenv("MPOX_BINDINGS_FIXTURES") ?: "target/bindings-test")
        val modelFile = File(fixtures, "model.onnx")
        lateinit var modelBytes: ByteArray
        lateinit var reference: List<Reference>
        lateinit var screener: Screener

        @BeforeClass @JvmStatic
        fun load() {
            check(modelFile.exists()) { "$modelFile is missing: run scripts/test-bindings.sh" }
            modelBytes = modelFile.readBytes()
            reference = File(fixtures, "reference.tsv").readLines().filter { it.isNotBlank() }.map { Reference(it) }
            check(reference.isNotEmpty())
            screener = Screener.fromPath(modelFile.path, ScreenerConfig(heatmap = true))
        }

        @AfterClass @JvmStatic
        fun unload() = screener.close()

        fun maxAbsDiff(a: List<Float>, b: List<Float>): Double {
            assertEquals(b.size, a.size)
            return a.zip(b).maxOfOrNull { (x, y) -> Math.abs(x.toDouble() - y.toDouble()) } ?: 0.0
        }

        fun code(w: QualityWarning) = when (w) {
            is QualityWarning.LowResolution -> "low_resolution"
            is QualityWarning.TooDark -> "too_dark"
            is QualityWarning.Overexposed -> "overexposed"
            is QualityWarning.Blurry -> "blurry"
            is QualityWarning.Other -> w.code
        }

        /** Asserts that `block` throws exactly `T` and returns it. */
        inline fun <reified T : Throwable> assertThrows(block: () -> Unit): T {
            try {
                block()
            } catch (e: Throwable) {
                if (e is T) return e
                throw AssertionError("expected ${T::class.simpleName}, got $e", e)
            }
            throw AssertionError("expected ${T::class.simpleName}, nothing was thrown")
        }

        fun patched(model: ByteArray, old: ByteArray, new: ByteArray): ByteArray {
            val at = (0..model.size - old.size).firstOrNull { i -> old.indices.all { model[i + it] == old[it] } }
            checkNotNull(at) { "pattern not found" }
            val out = model.copyOf()
            new.copyInto(out, at)
            return out
        }

        fun sha256(bytes: ByteArray) =
            MessageDigest.getInstance("SHA-256").digest(bytes).joinToString("") { "%02x".format(it) }
    }

    @Test
    fun resultsEqualTheRustSdk() {
        var dProb = 0.0
        var dLogit = 0.0
        var dHeat = 0.0
        for (ref in reference) {
            val s = screener.screen(File(ref.file).readBytes())
            assertEquals(ref.file, Verdict.valueOf(ref.verdict.uppercase()), s.verdict)
            assertEquals(ref.file, ref.quality, s.quality.map(::code))
            dProb = maxOf(
                dProb,
                maxAbsDiff(listOf(s.probabilityMpox) + s.probabilities.map { it.probability },
                    listOf(ref.probabilityMpox) + ref.probabilities),
            )
            dLogit = maxOf(dLogit, maxAbsDiff(s.logits, ref.logits))
            val h = assertNotNullAndGet(s.heatmap)
            assertEquals(h.width * h.height, h.values.size)
            dHeat = maxOf(dHeat, maxAbsDiff(h.values, ref.heatmap))
        }
        println(
            "KOTLIN vs RUST over ${reference.size} photos: max |dprobability| = %.2e, max |dlogit| = %.2e, max |dheatmap| = %.2e"
                .format(dProb, dLogit, dHeat),
        )
        assertTrue("probability differs by $dProb", dProb <= TOLERANCE)
        assertTrue("logit differs by $dLogit", dLogit <= TOLERANCE)
        assertTrue("heatmap differs by $dHeat", dHeat <= TOLERANCE)
    }

    private fun <T> assertNotNullAndGet(v: T?): T {
        assertNotNull(v)
        return v!!
    }

    @Test
    fun screenRgbaEqualsScreeningTheSamePixelsAsPng() {
        val (w, h) = 150 to 120
        val frame = ByteArray(w * h * 4)
        val img = BufferedImage(w, h, BufferedImage.TYPE_INT_ARGB)
        for (y in 0 until h) for (x in 0 until w) {
            val r = (x * 7 + y * 3) % 256
            val g = (x * y) % 251
            val b = (x xor y) * 2 % 256
            val a = (x + y) % 256
            val i = (y * w + x) * 4
            frame[i] = r.toByte(); frame[i + 1] = g.toByte(); frame[i + 2] = b.toByte(); frame[i + 3] = a.toByte()
            img.setRGB(x, y, (a shl 24) or (r shl 16) or (g shl 8) or b)
        }
        val png = ByteArrayOutputStream().also { ImageIO.write(img, "png", it) }.toByteArray()
        val fromFrame = screener.screenRgba(w, h, frame)
        val fromPng = screener.screen(png)
        assertEquals(fromPng.logits, fromFrame.logits)
        assertEquals(fromPng.heatmap, fromFrame.heatmap)
    }

    @Test
    fun infoDescribesTheFile() {
        val info = screener.info()
        val sha = sha256(modelBytes)
        assertEquals(sha, info.sha256)
        assertEquals(sha.substring(0, 12), info.modelId)
        assertEquals(listOf("not_mpox", "mpox"), info.labels)
        assertEquals("mpox", info.positiveLabel)
        assertEquals(64, info.inputSize)
        assertEquals("resnet18", info.arch)
        assertTrue(info.uncertainLow <= info.threshold && info.threshold <= info.uncertainHigh)
        assertTrue(info.camWidth > 0 && info.camHeight > 0)
        assertTrue(libraryVersion().isNotEmpty())
    }

    @Test
    fun fromBytesWithChecksumEqualsFromPath() {
        val photo = File(reference[0].file).readBytes()
        Screener.fromBytes(modelBytes, ScreenerConfig(expectedSha256 = sha256(modelBytes).uppercase())).use {
            assertEquals(screener.screen(photo).logits, it.screen(photo).logits)
        }
        Screener.fromBytes(modelBytes).use { assertNull(it.screen(photo).heatmap) }
    }

    @Test
    fun modelErrorsAreTyped() {
        val io = assertThrows<MpoxException.Io> { Screener.fromPath(modelFile.path + ".missing") }
        assertTrue(io.path.endsWith(".missing") && io.reason.isNotEmpty())

        val sum = assertThrows<MpoxException.ModelChecksum> {
            Screener.fromBytes(modelBytes, ScreenerConfig(expectedSha256 = "00".repeat(32)))
        }
        assertEquals("00".repeat(32), sum.expected)
        assertEquals(sha256(modelBytes), sum.actual)

        for (garbage in listOf(ByteArray(0), "not an onnx file".toByteArray(), modelBytes.copyOf(modelBytes.size / 2))) {
            assertThrows<MpoxException.ModelDecode> { Screener.fromBytes(garbage) }
        }
        val format = "\u000a\u0011mpoxscreen.format\u0012\u0001".toByteArray()
        val version = assertThrows<MpoxException.ModelVersion> {
            Screener.fromBytes(patched(modelBytes, format + "1".toByteArray(), format + "9".toByteArray()))
        }
        assertEquals("9", version.found)
        assertEquals(1L, version.supported)

        val meta = assertThrows<MpoxException.ModelMetadata> {
            Screener.fromBytes(patched(modelBytes, "\u000a\u0006labels".toByteArray(), "\u000a\u0006lebals".toByteArray()))
        }
        assertEquals("labels", meta.key)

        var contract = modelBytes
        repeat(2) { contract = patched(contract, "\u0003cam".toByteArray(), "\u0003cax".toByteArray()) }
        val c = assertThrows<MpoxException.ModelContract> { Screener.fromBytes(contract) }
        assertTrue(c.reason, c.reason.contains("cam"))
    }

    @Test
    fun imageErrorsAreTyped() {
        assertThrows<MpoxException.ImageEmpty> { screener.screen(ByteArray(0)) }
        assertThrows<MpoxException.ImageFormat> { screener.screen("just text, not an image".toByteArray()) }
        val photo = File(reference[0].file).readBytes()
        val decode = assertThrows<MpoxException.ImageDecode> { screener.screen(photo.copyOf(photo.size / 2)) }
        assertTrue(decode.reason.isNotEmpty())
        val small = assertThrows<MpoxException.ImageTooSmall> { screener.screenRgba(16, 16, ByteArray(16 * 16 * 4)) }
        assertEquals(listOf(16L, 16L, 32L), listOf(small.width, small.height, small.minSide))
        val large = assertThrows<MpoxException.ImageTooLarge> { screener.screenRgba(20_000, 40, ByteArray(20_000 * 40 * 4)) }
        assertEquals(20_000L, large.width)
        assertEquals(16_384L, large.maxWidth)
        assertThrows<MpoxException.InvalidFrame> { screener.screenRgba(64, 64, ByteArray(10)) }
        assertThrows<MpoxException.InvalidFrame> { screener.screenRgba(-64, 64, ByteArray(64 * 64 * 4)) }
        // Configured limits apply, and a negative limit is refused at load.
        Screener.fromBytes(modelBytes, ScreenerConfig(limits = ImageLimits(maxWidth = 100))).use {
            assertEquals(100L, assertThrows<MpoxException.ImageTooLarge> { it.screen(photo) }.maxWidth)
        }
        assertThrows<MpoxException.InvalidFrame> {
            Screener.fromBytes(modelBytes, ScreenerConfig(limits = ImageLimits(minSide = -1)))
        }
        // The variants that no input here can trigger exist and are MpoxExceptions.
        val unreachable: List<MpoxException> =
            listOf(MpoxException.Inference(reason = "engine"), MpoxException.Internal(reason = "bug"))
        assertTrue(unreachable.all { it.message!!.isNotEmpty() })
    }

    @Test
    fun viewsAverageMirrorImagesAndOtherCountsAreRefused() {
        // A left-right gradient: its mirror image is a different photo to the network.
        val (w, h) = 150 to 120
        val frame = ByteArray(w * h * 4)
        for (y in 0 until h) for (x in 0 until w) {
            val i = (y * w + x) * 4
            frame[i] = (x * 7 + y * 3).toByte(); frame[i + 1] = (x * y % 251).toByte()
            frame[i + 2] = ((x xor y) * 2).toByte(); frame[i + 3] = 255.toByte()
        }
        assertEquals(1, screener.info().recommendedViews)
        assertEquals(1, screener.views())
        val one = Screener.fromBytes(modelBytes, ScreenerConfig(views = 1)).use { it.screenRgba(w, h, frame) }
        assertEquals(screener.screenRgba(w, h, frame).logits, one.logits)
        val two = Screener.fromBytes(modelBytes, ScreenerConfig(views = 2)).use {
            assertEquals(2, it.views())
            it.screenRgba(w, h, frame)
        }
        assertTrue("2 views gave the 1-view probability ${one.probabilityMpox}", two.probabilityMpox != one.probabilityMpox)
        val bad = assertThrows<MpoxException.InvalidOption> { Screener.fromBytes(modelBytes, ScreenerConfig(views = 3)) }
        assertEquals("views", bad.option)
    }

    @Test
    fun useClosesTheScreener() {
        val photo = File(reference[0].file).readBytes()
        val before = liveScreeners()
        val s = Screener.fromBytes(modelBytes)
        assertEquals(before + 1, liveScreeners())
        s.use { it.screen(photo) }
        assertEquals(before, liveScreeners())
        assertThrows<IllegalStateException> { s.screen(photo) }
        s.close() // closing twice is harmless
    }

    /** A screening's outcome without its wall time: a result, or the failure's type and text. */
    private fun outcome(bytes: ByteArray): Any = try {
        screener.screen(bytes).let { Triple(it.logits, it.probabilities, it.heatmap) }
    } catch (e: MpoxException) {
        "${e.javaClass.simpleName}: ${e.message}"
    }

    @Test
    fun eightThreadsTimesTwoHundredScreensGiveTheSingleThreadedResults() {
        // Good photos and hostile input, shared by all threads through one screener.
        val good = reference.map { File(it.file).readBytes() }
        val inputs = good + listOf(ByteArray(0), good[0].copyOf(good[0].size / 3), "not an image".toByteArray())
        val expected = inputs.map { outcome(it) }
        assertTrue(expected.any { it is String } && expected.any { it !is String })
        val pool = Executors.newFixedThreadPool(8)
        try {
            val jobs = (0 until 8).map { t ->
                Callable {
                    (0 until 200).map { i ->
                        // Each thread its own order, so different inputs run side by side.
                        val k = (i * (2 * t + 1) + 3 * t) % inputs.size
                        k to outcome(inputs[k])
                    }
                }
            }
            var screens = 0
            for (job in pool.invokeAll(jobs)) {
                for ((k, got) in job.get()) {
                    assertEquals("input $k", expected[k], got)
                    screens++
                }
            }
            assertEquals(1600, screens)
        } finally {
            pool.shutdown()
        }
    }

    @Test
    fun signedModelsLoadOnlyUnderATrustedKey() {
        val public = File(fixtures, "release.pub").readText().trim()
        val stranger = File(fixtures, "stranger.pub").readText().trim()
        val signed = File(fixtures, "signed.onnx").readBytes()
        Screener.fromBytes(signed, ScreenerConfig(trustedKeys = listOf(stranger, public))).use {
            assertEquals(public, it.info().signedBy)
        }
        Screener.fromBytes(signed).use { assertNull(it.info().signedBy) }
        assertThrows<MpoxException.ModelUnsigned> {
            Screener.fromBytes(modelBytes, ScreenerConfig(trustedKeys = listOf(public)))
        }
        val untrusted = assertThrows<MpoxException.ModelUntrustedSigner> {
            Screener.fromBytes(signed, ScreenerConfig(trustedKeys = listOf(stranger)))
        }
        assertEquals(public, untrusted.signer)
        assertEquals(1L, untrusted.trusted)
        val format = "\u000a\u0011mpoxscreen.format\u0012\u0001".toByteArray()
        val altered = patched(signed, format + "1".toByteArray(), format + "9".toByteArray())
        val mismatch = assertThrows<MpoxException.ModelSignatureMismatch> {
            Screener.fromBytes(altered, ScreenerConfig(trustedKeys = listOf(public)))
        }
        assertEquals(public, mismatch.signer)
        val bad = assertThrows<MpoxException.InvalidOption> {
            Screener.fromBytes(signed, ScreenerConfig(trustedKeys = listOf("not a key")))
        }
        assertEquals("trusted_keys", bad.option)
    }

    @Test
    fun everyFailureIsAnMpoxException() {
        // One catch clause covers every error an app can get.
        try {
            screener.screen(ByteArray(3))
            fail("expected an exception")
        } catch (e: MpoxException) {
            assertTrue(e is MpoxException.ImageFormat || e is MpoxException.ImageDecode)
        }
        assertArrayEquals(modelBytes, modelFile.readBytes())
    }
}
