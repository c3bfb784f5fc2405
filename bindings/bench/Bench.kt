// Per-call time of Screener.screen() from Kotlin on the JVM (JNA), for bindings/README.md.
//
// usage: java -cp ... org.mpoxscreen.bench.BenchKt MODEL PHOTO CALLS
// Not an asserted timing: compare with the Rust and Python figures from the same
// scripts/bench-bindings.sh run.
package org.mpoxscreen.bench

import java.io.File
import org.mpoxscreen.MpoxException
import org.mpoxscreen.Screener

private fun timed(calls: Int, f: () -> Unit): Pair<Double, Double> {
    // The JIT needs more warm-up than Rust or Python.
    repeat(maxOf(50, calls / 5)) { f() }
    val micros = DoubleArray(calls) {
        val t = System.nanoTime()
        f()
        (System.nanoTime() - t) / 1e3
    }
    micros.sort()
    return micros[calls / 2] to micros.average()
}

fun main(args: Array<String>) {
    val (model, photo, n) = args
    val calls = n.toInt()
    val image = File(photo).readBytes()
    Screener.fromPath(model).use { screener ->
        val (median, mean) = timed(calls) { screener.screen(image) }
        println("kotlin screen(): median %.1f us, mean %.1f us per call (%d calls)".format(median, mean, calls))
        val empty = ByteArray(0)
        val (m2, mean2) = timed(calls * 100) {
            try {
                screener.screen(empty)
            } catch (e: MpoxException.ImageEmpty) {
            }
        }
        println("kotlin screen(empty) -> error: median %.3f us, mean %.3f us per call (%d calls)".format(m2, mean2, calls * 100))
        val (m3, mean3) = timed(calls * 100) { screener.info() }
        println("kotlin info(): median %.3f us, mean %.3f us per call (%d calls)".format(m3, mean3, calls * 100))
    }
}
