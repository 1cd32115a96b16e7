// The Kotlin binding in the JVM, against a real `synchealth up` (the binary
// cargo built; system property synchealth.binary): what a probe records is
// stored exactly once whatever happens to the collector or the process, from
// many threads, and a bad configuration is a typed exception, not a crash.
package dev.synchealth.probe

import com.sun.net.httpserver.HttpServer
import java.io.File
import java.net.HttpURLConnection
import java.net.InetSocketAddress
import java.net.ServerSocket
import java.net.URI
import java.nio.file.Files
import java.time.Duration
import java.time.Instant
import java.util.Base64
import java.util.zip.GZIPInputStream
import java.util.concurrent.TimeUnit
import kotlin.concurrent.thread
import kotlin.test.AfterTest
import kotlin.test.Test
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertFalse
import kotlin.test.assertTrue

private const val KEY = "shk_kotlin_binding_test_0123456789"
private const val PASSWORD = "kotlin-binding-password"

private fun freePort(): Int = ServerSocket(0).use { it.localPort }

/** `synchealth up` on a fixed port with its own data directory. */
private class Collector(val port: Int, val dataDir: File) {
    private var process: Process? = null

    fun start(): Collector {
        val binary = System.getProperty("synchealth.binary")
        val p = ProcessBuilder(
            binary, "up", "--listen", "127.0.0.1:$port", "--data-dir", dataDir.path,
            "--ingest-key", KEY, "--admin-password", PASSWORD,
        ).redirectError(ProcessBuilder.Redirect.DISCARD).also { it.environment()["RUST_LOG"] = "error" }.start()
        val lines = p.inputStream.bufferedReader()
        val deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60)
        while (System.nanoTime() < deadline) {
            val line = lines.readLine() ?: error("synchealth exited before listening")
            if (line.contains("listening on")) {
                thread(isDaemon = true) { lines.readLines() }
                process = p
                return this
            }
        }
        error("synchealth did not start")
    }

    fun stop() {
        process?.let { it.destroy(); it.waitFor(30, TimeUnit.SECONDS) }
        process = null
    }

    /** The number of stored events over the last day, from the JSON API. */
    fun events(): Long {
        val c = URI("http://127.0.0.1:$port/api/v1/summary?range=24h").toURL().openConnection() as HttpURLConnection
        val auth = Base64.getEncoder().encodeToString("admin:$PASSWORD".toByteArray())
        c.setRequestProperty("Authorization", "Basic $auth")
        val body = c.inputStream.bufferedReader().readText()
        return Regex("\"events\":(\\d+)").find(body)!!.groupValues[1].toLong()
    }
}

/** A stand-in collector keeping the batches it is sent (the bytes on the wire) and accepting every event. */
private class CapturingCollector {
    val bodies = java.util.concurrent.CopyOnWriteArrayList<String>()
    private val server = HttpServer.create(InetSocketAddress("127.0.0.1", 0), 0).apply {
        createContext("/v1/events") { exchange ->
            val raw = exchange.requestBody.readBytes()
            val gzip = exchange.requestHeaders.getFirst("Content-Encoding") == "gzip"
            val body = (if (gzip) GZIPInputStream(raw.inputStream()).readBytes() else raw).decodeToString()
            bodies.add(body)
            val events = Regex("\"event_id\"").findAll(body).count()
            val answer = "{\"accepted\":$events,\"duplicates\":0,\"rejected\":[]}".toByteArray()
            exchange.responseHeaders.add("Content-Type", "application/json")
            exchange.sendResponseHeaders(200, answer.size.toLong())
            exchange.responseBody.use { it.write(answer) }
        }
        start()
    }
    val port: Int get() = server.address.port

    fun stop() = server.stop(0)
}

class ProbeTest {
    private val root: File = Files.createTempDirectory("synchealth-kotlin").toFile()
    private val collector = Collector(freePort(), File(root, "server"))
    private val storage = File(root, "probe").path

    @AfterTest
    fun cleanUp() {
        collector.stop()
        root.deleteRecursively()
    }

    private fun config(dir: String = storage) = ProbeConfig(
        endpoint = "http://127.0.0.1:${collector.port}", ingestKey = KEY, appVersion = "3.1.0",
        os = "linux", storageDir = dir, uploadIntervalMs = 200uL,
    )

    /** restored + recorded = sampled out + thinned + dropped + uploaded + buffered. */
    private fun balanced(s: ProbeStats) =
        s.restored + s.recorded == s.sampledOut + s.thinned + s.dropped.values.sum() + s.uploaded + s.buffered

    @Test
    fun conflictsQueueAgeAndDimensionsGoOnTheWireBoundedToTheContract() {
        val wire = CapturingCollector()
        try {
            val probe = Probe(
                config().copy(
                    endpoint = "http://127.0.0.1:${wire.port}",
                    dimensions = mapOf("engine" to "powersync", "Bad Key" to "x"),
                ),
            )
            probe.setQueue(3u, Instant.now().minus(Duration.ofMinutes(5)))
            val pulled = probe.trackAttempt("pull", "scheduled", details = { Details(conflicts = 1u) }) { a ->
                a.conflict("todo", ConflictKind.UPDATE_UPDATE, ConflictResolution.SERVER_WINS, 2u)
                a.conflict("todo", ConflictKind.UPDATE_UPDATE, ConflictResolution.SERVER_WINS)
                a.dimension("plan", "p".repeat(100))
                40
            }
            assertEquals(40, pulled)
            probe.setQueue(0u, null as Long?)
            probe.track("push", "user") {}
            assertTrue(probe.flush(15_000uL))
            val adjusted = probe.stats().adjusted
            probe.shutdown()
            val body = wire.bodies.joinToString("\n")
            assertTrue(
                body.contains(
                    "\"conflict_details\":[{\"entity\":\"todo\",\"kind\":\"update_update\"," +
                        "\"resolution\":\"server_wins\",\"count\":3}]",
                ),
                body,
            )
            assertTrue(body.contains("\"conflicts\":3,"), "raised to the details' sum: $body")
            assertTrue(body.contains("\"dimensions\":{\"engine\":\"powersync\",\"plan\":\"${"p".repeat(64)}\"}"), body)
            assertEquals(1, Regex("\"queue_oldest_at\":\"").findAll(body).count(), "only the attempt with a queue: $body")
            assertEquals(mapOf("dimension_key_invalid" to 1uL, "dimension_value_truncated" to 1uL, "conflicts_raised" to 1uL), adjusted)
        } finally {
            wire.stop()
        }
    }

    @Test
    fun attemptsRecordedWhileTheCollectorIsDownAreStoredOnceWhenItComesUp() {
        val probe = Probe(config())
        repeat(20) { i ->
            runCatching {
                probe.track("push", "local_write", ErrorKind.SERVER) {
                    if (i % 4 == 0) throw IllegalStateException("the server said no")
                }
            }
        }
        assertFalse(probe.flush(500uL), "nothing listens yet")
        collector.start()
        assertTrue(probe.flush(15_000uL))
        val stats = probe.stats()
        assertEquals(listOf(20uL, 20uL, 0uL), listOf(stats.recorded, stats.uploaded, stats.buffered))
        assertTrue(balanced(stats), "$stats")
        assertEquals(20, collector.events())
        probe.shutdown()
    }

    @Test
    fun eightThreadsRecordingAtOnceAreAllStoredOnce() {
        collector.start()
        val probe = Probe(config())
        (1..8).map {
            thread { repeat(50) { probe.start("pull", "scheduled").use { a -> a.succeed(Details(recordsDown = 3uL)) } } }
        }.forEach { it.join() }
        assertTrue(probe.flush(15_000uL))
        val stats = probe.stats()
        assertEquals(400uL, stats.recorded)
        assertEquals(400uL, stats.uploaded)
        assertTrue(balanced(stats), "$stats")
        assertEquals(400, collector.events())
    }

    @Test
    fun aJvmKilledMidUploadLosesAndDuplicatesNothingAfterRestart() {
        collector.start()
        val java = File(System.getProperty("java.home"), "bin/java").path
        val child = ProcessBuilder(
            java, "-cp", System.getProperty("java.class.path"),
            "-Djna.library.path=${System.getProperty("jna.library.path")}",
            "dev.synchealth.probe.KilledMidUpload", "http://127.0.0.1:${collector.port}", KEY, storage,
        ).inheritIO().start()
        assertTrue(child.waitFor(60, TimeUnit.SECONDS))
        assertEquals(137, child.exitValue(), "the child JVM was killed with SIGKILL")
        val probe = Probe(config())
        assertTrue(probe.flush(15_000uL))
        val stats = probe.stats()
        assertEquals(0uL, stats.buffered)
        assertTrue(balanced(stats), "$stats")
        assertEquals(300, collector.events(), "nothing lost, nothing counted twice")
        probe.shutdown()
    }

    @Test
    fun aBadConfigurationIsATypedExceptionAndTheJvmGoesOn() {
        val empty = assertFailsWith<ProbeException.InvalidConfig> { Probe(config().copy(ingestKey = " ")) }
        assertEquals("ingest_key", empty.field)
        assertFailsWith<ProbeException.InvalidConfig> { Probe(config().copy(sampleRate = 1e-300)) }
        assertFailsWith<ProbeException.Storage> { Probe(config("/proc/synchealth-cannot-write-here")) }
        assertEquals(0uL, Probe(config()).stats().recorded)
    }
}

/** The child JVM of the kill test: records 300 attempts with uploads paused
 * (so they are on disk), lets the upload start, and kills itself in the middle of it. */
object KilledMidUpload {
    @JvmStatic
    fun main(args: Array<String>) {
        val probe = Probe(
            ProbeConfig(
                endpoint = args[0], ingestKey = args[1], appVersion = "3.1.0", os = "linux", storageDir = args[2],
                uploadIntervalMs = 50uL, uploadPolicy = UploadPolicy.PAUSED,
            ),
        )
        repeat(300) { probe.start("push", "local_write").use { a -> a.succeed(Details(recordsUp = 1uL)) } }
        probe.flush(5_000uL)
        probe.setUploadPolicy(UploadPolicy.ALWAYS)
        probe.flush(15uL)
        Runtime.getRuntime().exec(arrayOf("kill", "-9", ProcessHandle.current().pid().toString())).waitFor()
        Thread.sleep(10_000)
    }
}
