// The cost of one attempt from Kotlin (`start` + `succeed` + `close`), a
// timed loop of N calls on one thread into a probe whose uploads are paused
// (the caller's side only, as the Rust figure in BENCHMARKS.md), after a
// warm-up that lets the JIT compile the loop. Run: see BENCHMARKS.md.
package dev.synchealth.probe

import java.nio.file.Files

object Bench {
    @JvmStatic
    fun main(args: Array<String>) {
        val n = args.getOrNull(0)?.toInt() ?: 1_000_000
        val runs = args.getOrNull(1)?.toInt() ?: 3
        val storage = Files.createTempDirectory("synchealth-bench").toFile()
        val probe = Probe(
            ProbeConfig(
                endpoint = "http://127.0.0.1:9", ingestKey = "shk_bench", appVersion = "1.0.0", os = "linux",
                storageDir = storage.path, uploadPolicy = UploadPolicy.PAUSED,
            ),
        )
        val details = Details()
        repeat(200) {
            repeat(1000) { probe.start("push", "local_write").use { it.succeed(details) } }
            probe.flush(1000uL)
        }
        repeat(runs) { run ->
            // Timed in chunks of 1,000 with the worker drained between them,
            // untimed, as the Rust benchmark does.
            var elapsed = 0L
            repeat(n / 1000) {
                val started = System.nanoTime()
                repeat(1000) { probe.start("push", "local_write").use { it.succeed(details) } }
                elapsed += System.nanoTime() - started
                probe.flush(1000uL)
            }
            val ns = elapsed.toDouble() / n
            println("run ${run + 1}: ${"%.0f".format(ns)} ns per start+succeed ($n calls)")
        }
        probe.shutdown()
        storage.deleteRecursively()
    }
}
