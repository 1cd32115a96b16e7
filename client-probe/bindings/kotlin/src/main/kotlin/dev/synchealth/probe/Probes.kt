// The idiomatic layer over the generated bindings (same package): timing a
// block, plain or suspend, as one attempt that fails when the block throws,
// and `use`-friendly attempts (UniFFI objects are AutoCloseable; an attempt
// closed unfinished counts as cancelled).
package dev.synchealth.probe

/** Times [block] as one attempt: a success when it returns, a failure ([kind]) when it throws (rethrown). */
inline fun <T> Probe.track(
    syncType: String,
    trigger: String,
    kind: ErrorKind = ErrorKind.UNKNOWN,
    details: () -> Details = { Details() },
    block: () -> T,
): T {
    val attempt = start(syncType, trigger)
    try {
        val result = block()
        attempt.succeed(details())
        return result
    } catch (e: Throwable) {
        attempt.fail(kind, e.toString(), details())
        throw e
    } finally {
        attempt.close()
    }
}

/** A config with the probe's defaults for everything optional. */
fun probeConfig(endpoint: String, ingestKey: String, appVersion: String, os: String, storageDir: String) =
    ProbeConfig(endpoint = endpoint, ingestKey = ingestKey, appVersion = appVersion, os = os, storageDir = storageDir)
