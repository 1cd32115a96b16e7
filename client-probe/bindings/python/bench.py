"""The cost of one attempt from Python (`start` + `succeed`), a timed loop
of N calls on one thread into a probe whose uploads are paused (the caller's
side only, as the Rust figure in BENCHMARKS.md), in chunks of 1,000 with the
worker drained between them, after a warm-up.

Usage: python bench.py [N] [runs]   (after ./build.sh; PROFILE=release for the release library)
"""

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import synchealth_probe as sp  # noqa: E402


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    with tempfile.TemporaryDirectory() as storage:
        probe = sp._generated.Probe(sp.ProbeConfig(
            endpoint="http://127.0.0.1:9", ingest_key="shk_bench", app_version="1.0.0", os="linux",
            storage_dir=storage, upload_policy=sp.UploadPolicy.PAUSED))
        details = sp.Details()
        for _ in range(10_000):
            probe.start("push", "local_write").succeed(details)
        for run in range(runs):
            # Timed in chunks of 1,000 with the worker drained between them,
            # untimed, as the Rust benchmark does: every call takes the
            # normal path, none the full-inbox one.
            elapsed = 0.0
            for _ in range(n // 1000):
                started = time.perf_counter()
                for _ in range(1000):
                    probe.start("push", "local_write").succeed(details)
                elapsed += time.perf_counter() - started
                probe.flush(1000)
            print(f"run {run + 1}: {elapsed / n * 1e9:.0f} ns per start+succeed ({n} calls)", flush=True)
        probe.shutdown()


if __name__ == "__main__":
    main()
