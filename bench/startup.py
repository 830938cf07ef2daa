"""Time `opmas up` to a 200 on /ready: the first start (initdb included) and later starts.

Usage: .venv/bin/python bench/startup.py [--runs N]
Targets (issue 2): first start < 60 s, later starts < 15 s, Ctrl-C leaves no server.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from opmas.embedded import remove_outside_cluster

OPMAS = str(Path(sys.executable).parent / "opmas")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def time_to_ready(data_dir: Path, port: int) -> tuple[float, float]:
    """Start `opmas up`; return (seconds to /ready 200, seconds to stop on SIGINT)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPMAS_")}
    env.update(OPMAS_DATA_DIR=str(data_dir), OPMAS_HTTP_PORT=str(port))
    started = time.monotonic()
    proc = subprocess.Popen(
        [OPMAS, "up"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"opmas up exited with {proc.returncode}")
        time.sleep(0.05)
    ready = time.monotonic() - started
    stopping = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.wait(60)
    stopped = time.monotonic() - stopping
    left = [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if str(data_dir) in " ".join(p.info["cmdline"] or []) and p.pid != os.getpid()
    ]
    if left:
        raise SystemExit(f"processes left behind: {left}")
    return ready, stopped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="later starts to time")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="opmas-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        port = free_port()
        try:
            first, first_stop = time_to_ready(data_dir, port)
            later = [time_to_ready(data_dir, port) for _ in range(args.runs)]
        finally:
            remove_outside_cluster(data_dir)  # run as root, the cluster is in /var/lib/opmas
    ready = [r for r, _ in later]
    stops = [s for _, s in later]
    print(f"first start to /ready: {first:.2f} s (stop {first_stop:.2f} s)")
    print(
        f"later starts to /ready over {args.runs} runs: median {statistics.median(ready):.2f} s,"
        f" max {max(ready):.2f} s; stop median {statistics.median(stops):.2f} s"
    )


if __name__ == "__main__":
    main()
