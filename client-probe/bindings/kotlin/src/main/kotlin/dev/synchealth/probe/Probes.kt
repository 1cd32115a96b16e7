// The idiomatic layer over the generated bindings (same package): timing a
// block, plain or suspend, as one attempt that fails when the block throws
// (`trackAttempt` hands the block its attempt, to report conflicts and
// dimensions on it), and `use`-friendly attempts (UniFFI objects are
// AutoCloseable; an attempt closed unfinished counts as cancelled).
package dev.synchealth.probe

import java.time.Instant

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

/**
 * [track], with the attempt handed to [block] so it can report what it met:
 * `probe.trackAttempt("pull", "scheduled") { a -> engine.pull { c -> a.conflict(c.table, ...) } }`.
 */
inline fun <T> Probe.trackAttempt(
    syncType: String,
    trigger: String,
    kind: ErrorKind = ErrorKind.UNKNOWN,
    details: () -> Details = { Details() },
    block: (Attempt) -> T,
): T {
    val attempt = start(syncType, trigger)
    try {
        val result = block(attempt)
        attempt.succeed(details())
        return result
    } catch (e: Throwable) {
        attempt.fail(kind, e.toString(), details())
        throw e
    } finally {
        attempt.close()
    }
}

/** One conflict on [entity] (the generated `conflict` takes the count). */
fun Attempt.conflict(entity: String, kind: ConflictKind, resolution: ConflictResolution) =
    conflict(entity, kind, resolution, 1u)

/** The queue's depth and its oldest change, from epoch milliseconds (`null` when empty), as Android code holds times. */
fun Probe.setQueue(depth: UInt, oldestAtMillis: Long?) =
    setQueue(depth, oldestAtMillis?.let(Instant::ofEpochMilli))
