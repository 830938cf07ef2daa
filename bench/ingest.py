"""Ingest benchmark: a realistic mixed OpenWRT stream over UDP and TCP into a running OPMAS.

Starts `opmas up` on a throwaway data dir (or uses --data-dir of one already running), sends
RFC 3164 lines as OpenWRT's logd does at --rate lines/s for --duration seconds, then reports:
accepted lines/s, lines stored/s, loss, p50/p99 arrival-to-stored latency (from the store's
histogram), CPU and peak memory of every process, and a parse-only figure on one core.

  .venv/bin/python bench/ingest.py --transport udp --rate 20000 --duration 300
  .venv/bin/python bench/ingest.py --parse-only
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import psutil

from opmas.embedded import remove_outside_cluster

OPMAS = str(Path(sys.executable).parent / "opmas")
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

TEMPLATES = [  # (weight, PRI, program, message), shaped like real OpenWRT lines
    (20, 30, "hostapd", "wlan0: STA {mac} IEEE 802.11: authenticated"),
    (20, 30, "hostapd", "wlan0: STA {mac} IEEE 802.11: associated (aid {n})"),
    (10, 30, "hostapd", "wlan1: STA {mac} WPA: pairwise key handshake completed (RSN)"),
    (10, 29, "hostapd", "wlan0: AP-STA-DISCONNECTED {mac}"),
    (15, 30, "dnsmasq-dhcp[1141]", "DHCPACK(br-lan) {ip} {mac} host-{n}"),
    (10, 30, "dnsmasq-dhcp[1141]", "DHCPREQUEST(br-lan) {ip} {mac}"),
    (5, 30, "dnsmasq[1141]", "query[A] example-{n}.com from {ip}"),
    (5, 86, "dropbear[{pid}]", "Child connection from {ip}:{port}"),
    (4, 86, "dropbear[{pid}]", "Bad password attempt for 'root' from {ip}:{port}"),
    (2, 86, "dropbear[{pid}]", "Exit before auth from <{ip}:{port}>: Exited normally"),
    (3, 5, "kernel", "[{up}] br-lan: port 2(lan2) entered forwarding state"),
    (
        3,
        4,
        "kernel",
        "[{up}] reject wan in: IN=eth1 OUT= SRC={ip} DST=203.0.113.7 "
        "LEN=60 PROTO=TCP SPT={port} DPT=22",
    ),
    (2, 29, "netifd", "Interface 'wan' is now down"),
    (2, 29, "netifd", "Network device 'eth1' link is up"),
    (1, 3, "kernel", "[{up}] nf_conntrack: nf_conntrack: table full, dropping packet"),
    (
        1,
        27,
        "procd",
        "Instance uhttpd::instance1 s in a crash loop 6 crashes, 0 seconds since last crash",
    ),
    (2, 30, "pppd[2345]", "LCP terminated by peer"),
    (2, 29, "odhcpd[783]", "DHCPV6 SOLICIT IA_NA from 0001000120 on br-lan: ok fd00::3a0/128"),
    (3, 30, "unknown-daemon", "something the parsers have never seen {n}"),
]


PROBE_HOST = "bench-probe"
PROBE_LINE = (
    f"<30>Jan  1 00:00:00 {PROBE_HOST} hostapd: wlan0: AP-STA-CONNECTED 02:00:00:00:00:01".encode()
)
PROBE_INTERVAL_S = 0.1


class LatencyProbe:
    """Times probe lines from arrival (stamped by ingest) to visible in `events`.

    Polls the (hostname, arrival_ts_utc) index every 50 ms in a thread of its own; each probe
    row seen for the first time gives one sample: poll time minus its arrival time.
    """

    def __init__(self, db_url: str) -> None:
        self._db_url = db_url
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._poll()), daemon=True)

    def __enter__(self) -> LatencyProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(10)

    async def _poll(self) -> None:
        conn = await asyncpg.connect(self._db_url)
        last = datetime.fromtimestamp(0, UTC)
        try:
            while not self._stop.is_set():
                rows = await conn.fetch(
                    "SELECT arrival_ts_utc FROM events WHERE hostname = $1"
                    " AND arrival_ts_utc > $2 ORDER BY arrival_ts_utc",
                    PROBE_HOST,
                    last,
                )
                seen = time.time()
                for row in rows:
                    self.samples.append(seen - row["arrival_ts_utc"].timestamp())
                    last = row["arrival_ts_utc"]
                await asyncio.sleep(0.05)
        finally:
            await conn.close()

    def quantiles(self) -> dict[str, float | int | None]:
        if not self.samples:
            return {"samples": 0, "p50_s": None, "p99_s": None, "max_s": None}
        ordered = sorted(self.samples)
        pick = lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)  # noqa: E731
        return {
            "samples": len(ordered),
            "p50_s": pick(0.5),
            "p99_s": pick(0.99),
            "max_s": pick(1.0),
        }


def _fill(template: str, rnd: random.Random) -> str:
    mac = ":".join(f"{rnd.randrange(256):02x}" for _ in range(6))
    return template.format(
        mac=mac,
        ip=f"10.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(1, 255)}",
        n=rnd.randrange(1, 2000),
        pid=rnd.randrange(1000, 30000),
        port=rnd.randrange(1024, 65535),
        up=f"{rnd.uniform(10, 900000):12.6f}",
    )


def make_lines(count: int, hosts: int, seed: int = 7) -> list[bytes]:
    """`count` RFC 3164 lines from `hosts` routers, as logd sends them remotely."""
    rnd = random.Random(seed)
    weights = [w for w, *_ in TEMPLATES]
    now = time.gmtime()
    stamp = f"{MONTHS[now.tm_mon - 1]} {now.tm_mday:2d} {time.strftime('%H:%M:%S', now)}"
    lines = []
    for _ in range(count):
        _, pri, program, message = rnd.choices(TEMPLATES, weights)[0]
        host = f"bench-r{rnd.randrange(hosts):04d}"
        text = f"<{pri}>{stamp} {host} {_fill(program, rnd)}: {_fill(message, rnd)}"
        lines.append(text.encode())
    return lines


@dataclass
class ProcWatch:
    """CPU seconds and peak RSS of a process tree, sampled while the run goes on."""

    root: psutil.Process
    start_cpu: dict[int, float] = field(default_factory=dict)
    peak_rss: dict[int, int] = field(default_factory=dict)
    rss_at_60s: dict[int, int] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)

    def procs(self) -> list[psutil.Process]:
        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def begin(self) -> None:
        for p in self.procs():
            times = p.cpu_times()
            self.start_cpu[p.pid] = times.user + times.system
            self.names[p.pid] = " ".join(p.cmdline()[:2])[-60:]

    def sample(self, elapsed: float) -> None:
        for p in self.procs():
            try:
                rss = p.memory_info().rss
            except psutil.NoSuchProcess:
                continue
            self.peak_rss[p.pid] = max(self.peak_rss.get(p.pid, 0), rss)
            if elapsed >= 60 and p.pid not in self.rss_at_60s:
                self.rss_at_60s[p.pid] = rss

    def report(self, seconds: float) -> list[dict[str, object]]:
        rows = []
        for p in self.procs():
            try:
                times = p.cpu_times()
            except psutil.NoSuchProcess:
                continue
            used = times.user + times.system - self.start_cpu.get(p.pid, 0.0)
            if used < 0.05 * seconds and p.pid != self.root.pid:
                continue
            rows.append(
                {
                    "process": self.names.get(p.pid, p.name()),
                    "cpu_cores": round(used / seconds, 2),
                    "peak_rss_mb": round(self.peak_rss.get(p.pid, 0) / 2**20, 1),
                    "rss_growth_after_60s_mb": round(
                        (self.peak_rss.get(p.pid, 0) - self.rss_at_60s.get(p.pid, 0)) / 2**20, 1
                    )
                    if p.pid in self.rss_at_60s
                    else None,
                }
            )
        return rows


async def stored_count(db_url: str) -> int:
    conn = await asyncpg.connect(db_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM events"))
    finally:
        await conn.close()


def send(
    transport: str,
    host: str,
    port: int,
    lines: list[bytes],
    rate: int,
    seconds: float,
    watch: ProcWatch,
) -> int:
    """Send at `rate` lines/s for `seconds`, cycling over `lines`; return lines sent."""
    tick = 0.01
    per_tick = max(1, int(rate * tick))
    sent = 0
    if transport == "udp":
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 2**20)
    else:
        sock = socket.create_connection((host, port))
    started = time.monotonic()
    next_sample = started
    next_probe = started
    try:
        while (now := time.monotonic()) - started < seconds:
            due = int((now - started) * rate) - sent
            chunk = [lines[(sent + i) % len(lines)] for i in range(min(due, per_tick * 4))]
            if now >= next_probe and chunk:
                chunk[-1] = PROBE_LINE  # one line in ~10 per second is timed end to end
                next_probe = now + PROBE_INTERVAL_S
            if chunk:
                if transport == "udp":
                    for line in chunk:
                        sock.sendto(line, (host, port))
                else:
                    sock.sendall(b"\n".join(chunk) + b"\n")
                sent += len(chunk)
            if now >= next_sample:
                watch.sample(now - started)
                next_sample = now + 1.0
            time.sleep(tick / 2)
    finally:
        sock.close()
    return sent


def parse_only(count: int = 200_000) -> float:
    """Lines per second through the parser engine alone, in this process (one core)."""
    from opmas.messages import RawLog, new_id
    from opmas.parser.engine import ParserEngine

    engine = ParserEngine.from_dirs([])
    now = time.time()
    raws = [
        RawLog(new_id(), now, line.decode(), "udp", "10.0.0.1") for line in make_lines(count, 50)
    ]
    started = time.perf_counter()
    for i in range(0, len(raws), 500):
        engine.parse_many(raws[i : i + 500])
    return count / (time.perf_counter() - started)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--transport", choices=("udp", "tcp"), default="udp")
    ap.add_argument("--rate", type=int, default=20_000, help="lines per second")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of sending")
    ap.add_argument("--hosts", type=int, default=200, help="distinct router hostnames")
    ap.add_argument("--drain", type=float, default=30.0, help="max seconds to wait for storage")
    ap.add_argument("--parse-only", action="store_true", help="only the parse-only figure")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.add_argument(
        "--keep", action="store_true", help="keep the throwaway data dir and log (else removed)"
    )
    args = ap.parse_args()

    result: dict[str, object] = {"parse_only_lines_per_s": round(parse_only())}
    if args.parse_only:
        print(json.dumps(result, indent=2))
        return
    result.update(run(args))
    print(json.dumps(result, indent=2))


def run(args: argparse.Namespace) -> dict[str, object]:
    tmp = tempfile.mkdtemp(prefix="opmas-bench-")
    udp_port, tcp_port, http_port = (_free_port(t) for t in ("udp", "tcp", "tcp"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPMAS_")}
    env.update(
        OPMAS_DATA_DIR=f"{tmp}/data",
        OPMAS_HTTP_PORT=str(http_port),
        OPMAS_SYSLOG_HOST="127.0.0.1",
        OPMAS_SYSLOG_UDP_PORT=str(udp_port),
        OPMAS_SYSLOG_TCP_PORT=str(tcp_port),
        OPMAS_SYSLOG_TLS_PORT="0",
        # every line comes from 127.0.0.1, like a relay: its per-source UDP rate must not cut
        # the benchmark (the bucket is still checked for every datagram)
        OPMAS_INGEST__UDP_SOURCE_RATE=str(max(args.rate * 2, 1000)),
        OPMAS_INGEST__UDP_SOURCE_BURST=str(max(args.rate * 2, 10_000)),
    )
    log_path = Path(tmp) / "opmas.log"
    with log_path.open("wb") as log_file:
        up = subprocess.Popen([OPMAS, "up"], env=env, stdout=log_file, stderr=subprocess.STDOUT)
    print(f"opmas up log: {log_path} (removed at the end unless --keep)", file=sys.stderr)
    base = f"http://127.0.0.1:{http_port}"
    try:
        _wait_ready(base, up, log_path)
        db_url = json.loads(Path(f"{tmp}/data/instance.json").read_text())["database_url"]
        lines = make_lines(50_000, args.hosts)
        watch = ProcWatch(psutil.Process(up.pid))
        watch.begin()
        started = time.monotonic()
        port = udp_port if args.transport == "udp" else tcp_port
        with LatencyProbe(db_url) as probe:
            sent = send(args.transport, "127.0.0.1", port, lines, args.rate, args.duration, watch)
            send_s = time.monotonic() - started
            deadline = time.monotonic() + args.drain
            stored = 0
            while time.monotonic() < deadline:
                stored = asyncio.run(stored_count(db_url))
                if stored >= sent:
                    break
                watch.sample(time.monotonic() - started)
                time.sleep(1.0)
        total_s = time.monotonic() - started
        latency = probe.quantiles()
        return {
            "transport": args.transport,
            "target_rate": args.rate,
            "sent": sent,
            "sent_lines_per_s": round(sent / send_s),
            "stored": stored,
            "stored_lines_per_s": round(stored / total_s),
            "loss_pct": round(100 * (sent - stored) / sent, 4) if sent else None,
            "latency_arrival_to_stored": latency,
            "processes": watch.report(total_s),
        }
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            up.kill()
        if not args.keep:  # a run writes hundreds of MB: nothing stays behind
            remove_outside_cluster(Path(tmp) / "data")
            shutil.rmtree(tmp, ignore_errors=True)


def _free_port(kind: str) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM)
    with sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(base: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"opmas up exited:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit("opmas up not ready in 60 s")


if __name__ == "__main__":
    main()
