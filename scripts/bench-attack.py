#!/usr/bin/env python3
"""The "Under attack" benchmark (BENCHMARKS.md): a synchealth binary under
the unauthenticated loads of issue 14, each on a fresh process and store.

Scenarios, each held for --seconds:
  passwords    400 concurrent HTTP Basic requests with a wrong password
  bodies       300 concurrent 5 MB POST /v1/events with a wrong ingest key
  slow         1,100 connections that send half a request's headers and wait

Measured per run: the server's peak RSS (from /proc, every 50 ms), the
latency of GET /healthz on a fresh connection every 200 ms during the load
(p50, max, and how many got no answer within 5 s), and the statuses the
attackers saw. The server runs with a soft open-files limit of 1024 (the
common default) and the machine's hard limit, as a service would.

Usage: scripts/bench-attack.py --binary target/release/synchealth [--runs 3] [--seconds 15]
       [--scenarios passwords,bodies,slow] [--config FILE]
With `--config` naming a file that says `[dashboard]` / `login_max_failures = 0`,
the passwords scenario measures the bound on concurrent password checks
alone (every wrong password is verified, none throttled).
Prints one JSON line per run and scenario, then a summary table.
"""

import argparse
import asyncio
import base64
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time

KEY = "shk_bench_attack_0123456789abcdef"
PASSWORD = "bench-attack-password"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except FileNotFoundError:
        return 0.0
    return 0.0


def start(binary, data_dir, port, config=None):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]

    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))

    proc = subprocess.Popen(
        [binary, "up", "--listen", f"127.0.0.1:{port}", "--data-dir", data_dir,
         "--ingest-key", KEY, "--admin-password", PASSWORD] + (["--config", config] if config else []),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, preexec_fn=limit, env={**os.environ, "RUST_LOG": "error"})
    deadline = time.time() + 60
    while time.time() < deadline:
        line = proc.stdout.readline().decode()
        if "listening on" in line:
            return proc
        if not line and proc.poll() is not None:
            raise SystemExit("the binary exited before listening")
    raise SystemExit("the binary did not listen within 60 s")


async def request(port, head, body=b"", timeout=30.0):
    """One request on a fresh connection; returns the status or an error name."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    except Exception as e:  # refused, timed out, out of files
        return type(e).__name__
    try:
        writer.write(head)
        if body:
            # Written in pieces, as a client streams a body; a server that
            # answers early and closes makes the rest fail, which is fine.
            for i in range(0, len(body), 65536):
                writer.write(body[i:i + 65536])
                await writer.drain()
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
        status = line.split(b" ")[1].decode() if line.startswith(b"HTTP/") else "no-answer"
        return status
    except Exception as e:
        return type(e).__name__
    finally:
        writer.close()


async def healthz_sampler(port, stop, latencies, failures):
    head = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
    while not stop.is_set():
        started = time.perf_counter()
        status = await request(port, head, timeout=5.0)
        if status == "200":
            latencies.append((time.perf_counter() - started) * 1000)
        else:
            failures.append(status)
        await asyncio.sleep(0.2)


async def rss_sampler(pid, stop, peak):
    while not stop.is_set():
        peak[0] = max(peak[0], rss_mib(pid))
        await asyncio.sleep(0.05)


async def attackers(scenario, port, seconds, statuses):
    deadline = time.time() + seconds
    if scenario == "passwords":
        auth = base64.b64encode(b"admin:wrong-password").decode()
        head = (f"GET /api/v1/summary HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n"
                "Connection: close\r\n\r\n").encode()

        async def one():
            while time.time() < deadline:
                s = await request(port, head)
                statuses[s] = statuses.get(s, 0) + 1
        await asyncio.gather(*(one() for _ in range(400)))
    elif scenario == "bodies":
        body = b"x" * (5 * 1024 * 1024)
        head = (f"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer shk_wrong\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()

        async def one():
            while time.time() < deadline:
                s = await request(port, head, body)
                statuses[s] = statuses.get(s, 0) + 1
        await asyncio.gather(*(one() for _ in range(300)))
    elif scenario == "slow":
        held = []
        for _ in range(1100):
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
                writer.write(b"GET /api/v1/summary HTTP/1.1\r\nHost: x\r\n")
                held.append((reader, writer))
                statuses["held"] = statuses.get("held", 0) + 1
            except Exception as e:
                statuses[type(e).__name__] = statuses.get(type(e).__name__, 0) + 1
        await asyncio.sleep(max(0.0, deadline - time.time()))
        closed = 0
        for reader, writer in held:
            try:
                # Whatever the server sent (a 408, nothing) ends in EOF once it closed.
                data = await asyncio.wait_for(reader.read(65536), 0.05)
                closed += 1 if not data or reader.at_eof() else 0
            except (asyncio.TimeoutError, ConnectionError):
                pass
            writer.close()
        statuses["closed_by_server"] = closed


async def run(binary, scenario, seconds, config=None):
    with tempfile.TemporaryDirectory() as data_dir:
        port = free_port()
        proc = start(binary, data_dir, port, config)
        try:
            await asyncio.sleep(1.0)
            idle = rss_mib(proc.pid)
            stop = asyncio.Event()
            latencies, failures, peak, statuses = [], [], [idle], {}
            samplers = [asyncio.create_task(healthz_sampler(port, stop, latencies, failures)),
                        asyncio.create_task(rss_sampler(proc.pid, stop, peak))]
            await attackers(scenario, port, seconds, statuses)
            stop.set()
            await asyncio.gather(*samplers)
            return {
                "scenario": scenario, "idle_rss_mib": round(idle, 1), "peak_rss_mib": round(peak[0], 1),
                "healthz_p50_ms": round(statistics.median(latencies), 1) if latencies else None,
                "healthz_max_ms": round(max(latencies), 1) if latencies else None,
                "healthz_answered": len(latencies), "healthz_failed": len(failures), "attacker_statuses": statuses,
            }
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--scenarios", default="passwords,bodies,slow")
    parser.add_argument("--config", help="a settings file for the binary, e.g. one turning the login throttle off")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    results = []
    for _ in range(args.runs):
        for scenario in args.scenarios.split(","):
            result = asyncio.run(run(args.binary, scenario, args.seconds, args.config))
            print(json.dumps(result), flush=True)
            results.append(result)
    print(f"\n| scenario | peak RSS MiB (idle) | /healthz p50 ms | /healthz max ms | /healthz unanswered |", file=sys.stderr)
    print("|---|---|---|---|---|", file=sys.stderr)
    for scenario in args.scenarios.split(","):
        rs = [r for r in results if r["scenario"] == scenario]
        span = lambda key: "–".join(f"{v}" for v in (min(r[key] for r in rs if r[key] is not None), max(r[key] for r in rs if r[key] is not None))) if any(r[key] is not None for r in rs) else "none"
        print(f"| {scenario} | {span('peak_rss_mib')} ({span('idle_rss_mib')}) | {span('healthz_p50_ms')} | {span('healthz_max_ms')} | "
              f"{'/'.join(str(r['healthz_failed']) for r in rs)} |", file=sys.stderr)


if __name__ == "__main__":
    main()
