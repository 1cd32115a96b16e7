"""synchealth's client probe for Python apps and test harnesses.

The generated UniFFI bindings (`_generated.py`, made by `build.sh` from the
Rust library `synchealth-probe-ffi`) with a thin Python layer: an attempt is
a context manager that fails on an exception and counts as cancelled when
left unfinished, and `Probe.track` times a callable.

    probe = Probe(ProbeConfig(endpoint="https://sync-health.example.com",
                              ingest_key="shk_...", app_version="2.3.0",
                              os="linux", storage_dir="/var/lib/notes/synchealth"))
    with probe.attempt("push", "local_write") as attempt:
        pushed = engine.push()
        attempt.details.records_up = pushed
"""

from . import _generated
from ._generated import Details, ErrorKind, Network, ProbeConfig, ProbeError, ProbeStats, UploadPolicy

__all__ = [
    "Attempt", "Details", "ErrorKind", "Network", "Probe", "ProbeConfig", "ProbeError", "ProbeStats", "UploadPolicy",
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

    def set_network(self, network):
        self._inner.set_network(network)

    def set_upload_policy(self, policy):
        self._inner.set_upload_policy(policy)

    def set_battery_low(self, low):
        self._inner.set_battery_low(low)
