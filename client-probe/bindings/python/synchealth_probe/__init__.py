"""synchealth's client probe for Python apps and test harnesses.

The generated UniFFI bindings (`_generated.py`, made by `build.sh` from the
Rust library `synchealth-probe-ffi`) with a thin Python layer: an attempt is
a context manager that fails on an exception and counts as cancelled when
left unfinished, `Probe.track` times a callable, `Probe.set_queue` takes a
`datetime` (naive ones are local time, as in Python) or Unix seconds.

    probe = Probe(ProbeConfig(endpoint="https://sync-health.example.com",
                              ingest_key="shk_...", app_version="2.3.0",
                              os="linux", storage_dir="/var/lib/notes/synchealth"))
    with probe.attempt("push", "local_write") as attempt:
        pushed = engine.push()
        attempt.details.records_up = pushed
        for c in engine.conflicts():
            attempt.conflict(c.table, ConflictKind.UPDATE_UPDATE, ConflictResolution.LAST_WRITE_WINS)
    probe.set_queue(engine.pending(), engine.oldest_pending_time())
"""

import datetime

from . import _generated
from ._generated import (
    ConflictKind, ConflictResolution, Details, ErrorKind, Network, ProbeConfig, ProbeError, ProbeStats, UploadPolicy,
)

__all__ = [
    "Attempt", "ConflictKind", "ConflictResolution", "Details", "ErrorKind", "Network", "Probe", "ProbeConfig",
    "ProbeError", "ProbeStats", "UploadPolicy",
]


class Attempt:
    """One sync attempt being timed (`Probe.start` or `Probe.attempt`).

    Use it as a context manager: leaving the block normally succeeds with
    `details`, an exception fails it (`ErrorKind.UNKNOWN` unless
    `error_kind` is set) and propagates. Or call `succeed`/`fail` yourself;
    the first call counts, later ones do nothing."""

    def __init__(self, inner):
        self._inner = inner
        self.details = Details()
        self.error_kind = ErrorKind.UNKNOWN

    def succeed(self, details=None):
        self._inner.succeed(details or self.details)

    def fail(self, error_kind, message, details=None):
        self._inner.fail(error_kind, str(message), details or self.details)

    def cancel(self):
        self._inner.cancel()

    def conflict(self, entity, kind, resolution, count=1):
        """Reports `count` conflicts on `entity` (cut to 64 characters); calls
        for the same entity, kind and resolution add up, and the event's
        `conflicts` is at least their total. Returns the attempt, to chain."""
        self._inner.conflict(str(entity), kind, resolution, count)
        return self

    def dimension(self, key, value):
        """A custom dimension for this attempt only, over the configured ones."""
        self._inner.dimension(str(key), str(value))
        return self

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        if value is None:
            self.succeed()
        else:
            self.fail(self.error_kind, f"{kind.__name__}: {value}")
        return False


class Probe:
    """The probe: one per process, shared by every thread."""

    def __init__(self, config):
        self._inner = _generated.Probe(config)

    def start(self, sync_type, trigger):
        return Attempt(self._inner.start(sync_type, trigger))

    def attempt(self, sync_type, trigger):
        return self.start(sync_type, trigger)

    def track(self, sync_type, trigger, fn, *args, **kwargs):
        """Times `fn(*args, **kwargs)`: a success when it returns, a failure when it raises."""
        with self.start(sync_type, trigger):
            return fn(*args, **kwargs)

    def flush(self, timeout_ms=2000):
        return self._inner.flush(timeout_ms)

    def stats(self):
        return self._inner.stats()

    def shutdown(self):
        self._inner.shutdown()

    def device_id(self):
        return self._inner.device_id()

    def set_queue_depth(self, depth):
        self._inner.set_queue_depth(depth)

    def set_queue(self, depth, oldest_at=None):
        """The pending local changes and when the oldest was made: a
        `datetime` (naive means local time) or Unix seconds; None when the
        queue is empty."""
        self._inner.set_queue(depth, _timestamp(oldest_at))

    def set_network(self, network):
        self._inner.set_network(network)

    def set_upload_policy(self, policy):
        self._inner.set_upload_policy(policy)

    def set_battery_low(self, low):
        self._inner.set_battery_low(low)


def _timestamp(at):
    """An aware UTC datetime, as the generated code needs, from what Python
    apps hold: a datetime (naive = local time) or Unix seconds."""
    if at is None:
        return None
    if isinstance(at, (int, float)):
        return datetime.datetime.fromtimestamp(at, datetime.timezone.utc)
    return at.astimezone(datetime.timezone.utc)
