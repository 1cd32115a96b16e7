"""The Python binding in its own runtime, against a real `synchealth up`
(the binary cargo built; SYNCHEALTH_BINARY names it): what a probe records
is stored exactly once whatever happens to the collector or the process,
from many threads, and a bad configuration is a typed error, not a crash."""

import base64
import datetime
import gzip
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import pytest

# The installed wheel when there is one (the test command installs it, so
# what is tested is what ships); otherwise the tree build.sh filled.
try:
    import synchealth_probe as sp
except ImportError:
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    import synchealth_probe as sp  # noqa: E402

KEY = "shk_python_binding_test_0123456789"
PASSWORD = "python-binding-password"
BINARY = os.environ.get("SYNCHEALTH_BINARY") or os.path.join(
    os.path.dirname(__file__), "..", "..", "..", "..", "target", "debug", "synchealth")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Collector:
    """`synchealth up` on a fixed port, with its own data directory."""

    def __init__(self, port, data_dir):
        self.port, self.data_dir, self.proc = port, data_dir, None

    def start(self):
        self.proc = subprocess.Popen(
            [BINARY, "up", "--listen", f"127.0.0.1:{self.port}", "--data-dir", self.data_dir,
             "--ingest-key", KEY, "--admin-password", PASSWORD],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "error"})
        deadline = time.time() + 60
        while time.time() < deadline:
            if b"listening on" in self.proc.stdout.readline():
                return self
        raise RuntimeError("synchealth did not start")

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait(30)
            self.proc = None

    def summary(self):
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/api/v1/summary?range=24h")
        auth = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
        request.add_header("Authorization", f"Basic {auth}")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)


@pytest.fixture
def world():
    with tempfile.TemporaryDirectory() as root:
        collector = Collector(free_port(), os.path.join(root, "server"))
        yield collector, os.path.join(root, "probe")
        collector.stop()


def config(collector, storage_dir, **extra):
    return sp.ProbeConfig(endpoint=f"http://127.0.0.1:{collector.port}", ingest_key=KEY, app_version="3.1.0",
                          os="linux", storage_dir=storage_dir, upload_interval_ms=200, **extra)


def balanced(stats):
    """restored + recorded = sampled_out + thinned + dropped + uploaded + buffered."""
    dropped = sum(stats.dropped.values())
    return stats.restored + stats.recorded == stats.sampled_out + stats.thinned + dropped + stats.uploaded + stats.buffered


def test_attempts_recorded_while_the_collector_is_down_are_stored_once_when_it_comes_up(world):
    collector, storage = world
    probe = sp.Probe(config(collector, storage))
    for i in range(20):
        with pytest.raises(ValueError) if i % 4 == 0 else nullcontext():
            with probe.attempt("push", "local_write") as attempt:
                attempt.details.records_up = i
                if i % 4 == 0:
                    raise ValueError("the server said no")
    assert probe.flush(500) is False, "nothing listens yet"
    assert probe.stats().upload_failures >= 1
    collector.start()
    assert probe.flush(15000) is True
    stats = probe.stats()
    assert (stats.recorded, stats.uploaded, stats.buffered) == (20, 20, 0)
    assert balanced(stats)
    summary = collector.summary()
    assert summary["events"] == 20
    assert summary["success_rate"] == 15 / 20
    probe.shutdown()


def test_eight_threads_recording_at_once_are_all_stored_once(world):
    collector, storage = world
    collector.start()
    probe = sp.Probe(config(collector, storage))

    def work():
        for _ in range(50):
            probe.start("pull", "scheduled").succeed(sp.Details(records_down=3))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert probe.flush(15000) is True
    stats = probe.stats()
    assert (stats.recorded, stats.uploaded) == (400, 400)
    assert balanced(stats)
    assert collector.summary()["events"] == 400


CHILD = """
import os, signal, sys
sys.path.insert(0, {package!r})
import synchealth_probe as sp
probe = sp.Probe(sp.ProbeConfig(endpoint={endpoint!r}, ingest_key={key!r}, app_version="3.1.0", os="linux",
                                storage_dir={storage!r}, upload_interval_ms=50, upload_policy=sp.UploadPolicy.PAUSED))
for i in range(300):
    probe.start("push", "local_write").succeed(sp.Details(records_up=1))
probe.flush(5000)  # paused: written to disk, nothing sent
probe.set_upload_policy(sp.UploadPolicy.ALWAYS)
probe.flush(15)    # the upload starts...
os.kill(os.getpid(), signal.SIGKILL)  # ...and the process dies in the middle of it
"""


def test_a_process_killed_mid_upload_loses_and_duplicates_nothing_after_restart(world):
    collector, storage = world
    collector.start()
    package = os.path.join(os.path.dirname(__file__), "..")
    script = CHILD.format(package=package, endpoint=f"http://127.0.0.1:{collector.port}", key=KEY, storage=storage)
    child = subprocess.run([sys.executable, "-c", script], timeout=60)
    assert child.returncode == -signal.SIGKILL
    probe = sp.Probe(config(collector, storage))
    assert probe.flush(15000) is True
    stats = probe.stats()
    assert stats.buffered == 0
    assert balanced(stats)
    # Whatever the dead process had sent is counted once; nothing is missing.
    assert collector.summary()["events"] == 300
    probe.shutdown()


def test_a_bad_configuration_is_a_typed_error_and_the_process_goes_on(world):
    collector, storage = world
    with pytest.raises(sp.ProbeError.InvalidConfig) as empty_key:
        sp.Probe(sp.ProbeConfig(endpoint="http://127.0.0.1:1", ingest_key=" ", app_version="1", os="linux",
                                storage_dir=storage))
    assert empty_key.value.field == "ingest_key"
    with pytest.raises(sp.ProbeError.InvalidConfig) as rate:
        sp.Probe(config(collector, storage, sample_rate=1e-300))
    assert rate.value.field == "sample_rate"
    with pytest.raises(sp.ProbeError.Storage):
        sp.Probe(config(collector, "/proc/synchealth-cannot-write-here"))
    # Shut down before the fixture removes the directory: a dropped probe's
    # thread may still be writing its buffer there.
    probe = sp.Probe(config(collector, storage))
    assert probe.stats().recorded == 0
    probe.shutdown()


class CapturingCollector:
    """A stand-in for the collector that keeps the batches it is sent (the
    bytes the probe puts on the wire) and accepts every event."""

    def __init__(self):
        self.events = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                events = json.loads(body)["events"]
                outer.events.extend(events)
                answer = json.dumps({"accepted": len(events), "duplicates": 0, "rejected": []}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def test_conflicts_queue_age_and_dimensions_go_on_the_wire_bounded_to_the_contract(world):
    _, storage = world
    wire = CapturingCollector()
    try:
        probe = sp.Probe(config(wire, storage, dimensions={"engine": "powersync", "Bad Key": "x", "plan": "free"}))
        oldest = datetime.datetime.now() - datetime.timedelta(minutes=5)  # naive: local time
        probe.set_queue(3, oldest)
        with probe.attempt("push", "local_write") as attempt:
            attempt.conflict("todo", sp.ConflictKind.UPDATE_UPDATE, sp.ConflictResolution.LAST_WRITE_WINS, 2)
            attempt.conflict("todo", sp.ConflictKind.UPDATE_UPDATE, sp.ConflictResolution.LAST_WRITE_WINS)
            attempt.conflict("é" * 80, sp.ConflictKind.CONSTRAINT, sp.ConflictResolution.MANUAL)
            attempt.dimension("plan", "pro").dimension("region", "x" * 100)
            attempt.details.conflicts = 1  # fewer than the details say: raised to their sum
        probe.set_queue(0)
        probe.start("pull", "scheduled").succeed(sp.Details())
        assert probe.flush(15000) is True
        adjusted = probe.stats().adjusted
        probe.shutdown()
    finally:
        wire.stop()
    pushed, pulled = wire.events
    assert pushed["conflicts"] == 4
    assert pushed["conflict_details"] == [
        {"entity": "todo", "kind": "update_update", "resolution": "last_write_wins", "count": 3},
        {"entity": "é" * 64, "kind": "constraint", "resolution": "manual", "count": 1},
    ]
    occurred = datetime.datetime.fromisoformat(pushed["occurred_at"].replace("Z", "+00:00"))
    queued = datetime.datetime.fromisoformat(pushed["queue_oldest_at"].replace("Z", "+00:00"))
    assert 299 <= (occurred - queued).total_seconds() <= 301
    assert pushed["dimensions"] == {"engine": "powersync", "plan": "pro", "region": "x" * 64}
    assert "queue_oldest_at" not in pulled and "conflict_details" not in pulled
    assert pulled["dimensions"] == {"engine": "powersync", "plan": "free"}
    assert adjusted == {"dimension_key_invalid": 1, "entity_truncated": 1, "dimension_value_truncated": 1,
                        "conflicts_raised": 1}


class nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
