package org.mpoxscreen.sample

import android.graphics.Bitmap
import android.graphics.ImageDecoder
import android.net.Uri
import android.os.Bundle
import android.widget.Button
import android.widget.ImageView
import android.widget.TextView
import androidx.activity.ComponentActivity
import androidx.activity.result.PickVisualMediaRequest
import androidx.activity.result.contract.ActivityResultContracts
import java.util.concurrent.ExecutorService
import java.util.concurrent.Executors
import org.mpoxscreen.Heatmap
import org.mpoxscreen.MpoxException
import org.mpoxscreen.QualityWarning
import org.mpoxscreen.Screener
import org.mpoxscreen.ScreenerConfig
import org.mpoxscreen.Screening
import org.mpoxscreen.Verdict

/** Picks a photo, screens it on a background thread and shows the verdict and the heatmap. */
class MainActivity : ComponentActivity() {
    private val worker: ExecutorService = Executors.newSingleThreadExecutor()
    private var screener: Screener? = null

    private lateinit var pick: Button
    private lateinit var photo: ImageView
    private lateinit var heatmap: ImageView
    private lateinit var verdict: TextView
    private lateinit var details: TextView

    private val picker = registerForActivityResult(ActivityResultContracts.PickVisualMedia()) { uri ->
        if (uri != null) screen(uri)
    }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        pick = findViewById(R.id.pick)
        photo = findViewById(R.id.photo)
        heatmap = findViewById(R.id.heatmap)
        verdict = findViewById(R.id.verdict)
        details = findViewById(R.id.details)
        pick.setOnClickListener {
            picker.launch(PickVisualMediaRequest(ActivityResultContracts.PickVisualMedia.ImageOnly))
        }
        // Load once (about 100 ms), off the main thread; every failure is an MpoxException.
        worker.execute {
            val result = try {
                val model = assets.open("model.onnx").use { it.readBytes() }
                Result.success(Screener.fromBytes(model, ScreenerConfig(heatmap = true)))
            } catch (e: MpoxException) {
                Result.failure(e)
            } catch (e: java.io.IOException) {
                Result.failure(e)
            }
            runOnUiThread {
                result.onSuccess {
                    screener = it
                    verdict.setText(R.string.ready)
                    pick.isEnabled = true
                }.onFailure {
                    verdict.text = "Cannot load the model"
                    details.text = it.toString()
                }
            }
        }
    }

    override fun onDestroy() {
        worker.execute { screener?.close() }
        worker.shutdown()
        super.onDestroy()
    }

    private fun screen(uri: Uri) {
        val s = screener ?: return
        pick.isEnabled = false
        verdict.setText(R.string.screening)
        details.text = ""
        worker.execute {
            val outcome = try {
                val bytes = contentResolver.openInputStream(uri)!!.use { it.readBytes() }
                val shown = centreSquare(ImageDecoder.decodeBitmap(ImageDecoder.createSource(contentResolver, uri)))
                Result.success(Pair(s.screen(bytes), shown))
            } catch (e: MpoxException) {
                Result.failure(e)
            } catch (e: java.io.IOException) {
                Result.failure(e)
            }
            runOnUiThread {
                pick.isEnabled = true
                outcome.onSuccess { (result, shown) -> show(result, shown) }
                    .onFailure { e -> showError(e) }
            }
        }
    }

    private fun show(result: Screening, shown: Bitmap) {
        photo.setImageBitmap(shown)
        heatmap.setImageBitmap(result.heatmap?.let(::overlay))
        verdict.text = when (result.verdict) {
            Verdict.LIKELY_MPOX -> "Likely mpox: refer for testing"
            Verdict.UNCERTAIN -> "Uncertain: refer for a clinical assessment"
            Verdict.UNLIKELY -> "Unlikely mpox"
        }
        val warnings = result.quality.map {
            when (it) {
                is QualityWarning.LowResolution -> "low resolution (${it.width}x${it.height})"
                is QualityWarning.TooDark -> "too dark"
                is QualityWarning.Overexposed -> "overexposed"
                is QualityWarning.Blurry -> "blurry"
                is QualityWarning.Other -> it.code
            }
        }
        details.text = buildString {
            append("Probability of mpox: %.0f%%  (model %s, %.0f ms)".format(
                result.probabilityMpox * 100, result.modelId, result.latencyMs))
            if (warnings.isNotEmpty()) append("\nPlease retake: ").append(warnings.joinToString(", "))
        }
    }

    private fun showError(e: Throwable) {
        photo.setImageDrawable(null)
        heatmap.setImageDrawable(null)
        verdict.text = when (e) {
            is MpoxException.ImageTooSmall -> "The photo is too small"
            is MpoxException.ImageTooLarge -> "The photo is too large"
            is MpoxException.ImageFormat, is MpoxException.ImageDecode -> "This file cannot be read as a photo"
            else -> "Screening failed"
        }
        details.text = e.toString()
    }

    /** The square centre of the photo: the part the model looked at (after resizing). */
    private fun centreSquare(b: Bitmap): Bitmap {
        val side = minOf(b.width, b.height)
        return Bitmap.createBitmap(b, (b.width - side) / 2, (b.height - side) / 2, side, side)
    }

    /** The heatmap as translucent red, more opaque where the model saw more evidence of mpox. */
    private fun overlay(h: Heatmap): Bitmap {
        val pixels = IntArray(h.width * h.height) { i ->
            val alpha = (h.values[i].coerceIn(0f, 1f) * 160).toInt()
            (alpha shl 24) or 0xFF0000
        }
        return Bitmap.createBitmap(pixels, h.width, h.height, Bitmap.Config.ARGB_8888)
    }
}
