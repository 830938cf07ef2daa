"""Soak and overload of `opmas up` at its defaults, fed by sender processes of their own.

Soak: corpus lines over TCP, stamped with the time they are sent as a live router's are (the
corpus's own day would be 17 days behind the incidents' lines: see the clock_skew rule), at
a steady rate (default 5,000 lines/s, a third of the measured ceiling of
docs/architecture.md) for --minutes, the scripted day's incidents (tests/scenario:
an SSH brute force, a WAN flap, an OOM kill...) injected every --incident-every s on routers of
their own; every 30 s the RSS of every process of `opmas up` and the consumer lag of every
stream. Reported: RSS growth per process over the last --window minutes (target < 5 %), lag
growth, and whether every injected incident gave its findings.

Overload (--overload): numbered lines over TCP and HTTP at --overload-rate in all (default 3x
the ceiling) for --overload-seconds between two periods at the normal rate. Reported: how the
senders were slowed (TCP: time writes blocked; HTTP: 503 answers and their Retry-After), peak
memory per process, and when latency (arrival->stored p99 of the store's histogram, 10 s
windows) was back under 2 s after the load dropped, and every line stored.

  .venv/bin/python -m bench.soak --minutes 60
  .venv/bin/python -m bench.soak --minutes 15 --json
  .venv/bin/python -m bench.soak --overload

Run from the repository root (`-m`: it imports bench.pipeline, bench.faults and the scenario
builders of tests/scenario). Everything it starts is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import subprocess
import time
from collections import defaultdict
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from bench import faults, pipeline
from bench.pipeline import OPMAS, OpmasUp, ProcessTree
from rich.console import Console
from tests.scenario.fleet import Injection, Record
from tests.scenario.incidents import Scenario

from opmas.agents.pack import load_pack

CEILING = 15_000  # lines/s, TCP, docs/architecture.md
SAMPLE_S = 30.0
P99_NORMAL_S = 2.0
DETECTING = {"PATTERN", "THRESHOLD", "CORRELATION"}  # rule types that need no learned baseline
log = Console(stderr=True)


# ---------------------------------------------------------------------------------------------
# incidents of the scripted day, re-stamped and on routers of their own


@dataclass(frozen=True)
class Incident:
    name: str
    records: tuple[Record, ...]
    expected: tuple[tuple[str, str], ...]  # (rule_name, device_hostname)


def scenario_incidents() -> list[Incident]:
    """The scripted day's incidents whose findings need no learned baseline."""
    builder = Scenario(20261121)
    builder.wifi_incidents()
    builder.security_incidents()
    builder.health_incidents()
    builder.wan_incidents()
    kinds = {rule.name: str(rule.type) for rule in load_pack()}
    out = []
    for injection in builder.injections:
        expected = _detecting(injection, kinds)
        records = tuple(r for r in builder.records if r.incident == injection.name)
        if expected and records:
            out.append(Incident(injection.name, records, expected))
    return out


def _detecting(injection: Injection, kinds: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(
        (e.rule_name, e.device_hostname)
        for e in injection.expected
        if kinds.get(e.rule_name, "").rsplit(".", 1)[-1] in DETECTING
    )


def incident_lines(incident: Incident, prefix: str, now: float) -> list[bytes]:
    """The incident's lines, its routers renamed `<prefix>-<name>`, stamped so that its last
    line is `now` (rules take time from the line, so they may be sent at once)."""
    last = max(r.at for r in incident.records)
    lines = []
    for record in sorted(incident.records, key=lambda r: r.at):
        stamp = time.strftime("%b %e %H:%M:%S", time.localtime(now - (last - record.at)))
        host = f"{prefix}-{record.host}"
        lines.append(f"<{record.pri}>{stamp} {host} {record.tag}: {record.message}".encode())
    return lines


def send_tcp(port: int, lines: list[bytes]) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"\n".join(lines) + b"\n")


async def found(db: faults.Database, expected: set[tuple[str, str]]) -> set[tuple[str, str]]:
    hosts = sorted({host for _, host in expected})
    rows = await db.fetch(
        "SELECT DISTINCT rule_name, device_hostname FROM findings"
        " WHERE device_hostname = ANY($1::text[])",
        hosts,
    )
    return {(r["rule_name"], r["device_hostname"]) for r in rows or []} & expected


# ---------------------------------------------------------------------------------------------
# samples


def stream_lag(up: OpmasUp) -> dict[str, int] | None:
    """Messages not yet delivered, summed per stream over its consumers (`opmas status`)."""
    done = subprocess.run(
        [OPMAS, "status", "--json"], env=up.env, cwd=up.tmp, capture_output=True, text=True,
        check=False, timeout=60,
    )  # fmt: skip
    try:
        streams = json.loads(done.stdout)["streams"]
    except (ValueError, KeyError, TypeError):
        return None
    return {
        s["stream"]: sum(c.get("num_pending", 0) for c in s.get("consumers") or []) for s in streams
    }


async def memory_by_name(tree: ProcessTree, db: Any) -> tuple[dict[str, float], dict[str, float]]:
    """MB of RSS and of USS (private memory: what a leak grows; PostgreSQL's RSS also counts
    the shared buffers each backend touched) per process name (PostgreSQL backends named
    after their client)."""
    rss: dict[str, float] = defaultdict(float)
    uss: dict[str, float] = defaultdict(float)
    for sample in (await tree.snapshot(db, memory=True)).values():
        rss[sample.name] += sample.rss / 2**20
        uss[sample.name] += sample.uss / 2**20
    return dict(rss), dict(uss)


def growth(samples: list[dict[str, Any]], since: float) -> dict[str, Any]:
    """RSS growth per process and lag growth from the first sample at or after `since` to
    the last one."""
    window = [s for s in samples if s["t"] >= since]
    if len(window) < 2:
        return {"error": "fewer than two samples in the window"}
    first, last = window[0], window[-1]
    by_kind: dict[str, dict[str, Any]] = {}
    for kind in ("rss", "uss"):
        grown = {}
        for name, mb in last.get(kind, {}).items():
            before = first.get(kind, {}).get(name)
            if before:
                grown[name] = {"from_mb": round(before, 1), "to_mb": round(mb, 1),
                               "growth_pct": round(100 * (mb - before) / before, 1)}  # fmt: skip
        by_kind[kind] = dict(sorted(grown.items(), key=lambda kv: -kv[1]["growth_pct"]))
    lags = [sum((s["lag"] or {}).values()) for s in window]
    return {
        "window_s": round(last["t"] - first["t"]),
        **by_kind,
        "lag_first": lags[0],
        "lag_last": lags[-1],
        "lag_max": max(lags),
    }


# ---------------------------------------------------------------------------------------------
# soak


async def soak(args: argparse.Namespace, up: OpmasUp) -> dict[str, Any]:
    duration = args.minutes * 60
    plan = pipeline.SendPlan(
        "tcp", "127.0.0.1", up.tcp_port, up.api_url, None, str(pipeline.corpus_file(None)),
        args.rate, duration, False, (), 1000, 4, restamp=True,
    )  # fmt: skip
    sender, conn = _spawn(pipeline.sender_main, plan)
    db = faults.Database(lambda: up.database_url)
    own = await pipeline._connect(up.database_url)  # private there: the bench's own backend
    tree = ProcessTree(up.pid)
    tree.exclude.add(await own.fetchval("SELECT pg_backend_pid()"))
    incidents = scenario_incidents()
    try:
        await _recv(conn, sender)
        conn.send("go")
        began = time.time()
        samples, expected, rounds = await _soak_loop(args, up, tree, own, incidents, began)
        report = await _recv(conn, sender)
        await asyncio.sleep(60)  # the last incidents' findings
        got = await found(db, expected)
    finally:
        await own.close()
        await db.close()
        _end(sender)
    since = began + duration - args.window * 60
    return {
        "rate": args.rate,
        "minutes": args.minutes,
        "sent": report["sent"],
        "offered": report["offered"],
        "samples": samples,
        "growth": growth(samples, since),
        "incidents": {
            "rounds": rounds,
            "expected": len(expected),
            "found": len(got),
            "missing": sorted(f"{r} on {h}" for r, h in expected - got),
        },
    }


async def _soak_loop(
    args: argparse.Namespace,
    up: OpmasUp,
    tree: ProcessTree,
    own: Any,
    incidents: list[Incident],
    began: float,
) -> tuple[list[dict[str, Any]], set[tuple[str, str]], list[str]]:
    samples: list[dict[str, Any]] = []
    expected: set[tuple[str, str]] = set()
    rounds: list[str] = []
    next_sample, next_incident = began, began + 60.0
    while (now := time.time()) < began + args.minutes * 60:
        if now >= next_incident:
            prefix = f"soak{len(rounds)}"
            for incident in incidents:
                await asyncio.to_thread(send_tcp, up.tcp_port,
                                        incident_lines(incident, prefix, time.time()))  # fmt: skip
                expected |= {(rule, f"{prefix}-{host}") for rule, host in incident.expected}
            rounds.append(f"{prefix} at {now - began:.0f} s: {len(incidents)} incidents")
            next_incident += args.incident_every
        if now >= next_sample:
            rss, uss = await memory_by_name(tree, own)
            lag = await asyncio.to_thread(stream_lag, up)
            samples.append(
                {"t": now, "at_s": round(now - began), "rss": rss, "uss": uss, "lag": lag}
            )
            log.print(
                f"{now - began:5.0f} s  RSS {sum(rss.values()):.0f} MB"
                f"  USS {sum(uss.values()):.0f} MB  lag {lag}"
            )
            next_sample += SAMPLE_S
        await asyncio.sleep(1.0)
    return samples, expected, rounds


# ---------------------------------------------------------------------------------------------
# overload


async def overload(args: argparse.Namespace, up: OpmasUp) -> dict[str, Any]:
    """Normal rate, then --overload-rate over TCP and HTTP, then normal rate again."""
    token = up.cli("tokens", "create", "--name", "soak-overload").strip()
    tree = ProcessTree(up.pid)
    phases = (("before", args.rate, 60.0), ("overload", args.overload_rate, args.overload_seconds),
              ("after", args.rate, args.after_seconds))  # fmt: skip
    windows: list[dict[str, Any]] = []
    watcher = asyncio.create_task(_latency_windows(up, tree, windows))
    began, reports, base = time.time(), {}, 0
    running: list[tuple[str, BaseProcess, Connection, float]] = []
    try:
        for name, rate, seconds in phases:
            plan = faults.SendPlan("127.0.0.1", up.tcp_port, 0, up.api_url, token, rate // 2,
                                   transports=("http", "tcp"), seq_base=base)  # fmt: skip
            base += faults.ROUTERS * 10 * rate * int(seconds + 60)
            sender, conn = _spawn(faults.sender_main, plan)
            await _recv(conn, sender)
            conn.send("go")
            running.append((name, sender, conn, time.time()))
            await asyncio.sleep(seconds)
            conn.send("stop")
        done = await asyncio.gather(*(_report(conn, sender) for _, sender, conn, _ in running))
        for (name, sender, _, started), (report, at) in zip(running, done, strict=True):
            reports[name] = {
                "started_s": round(started - began),  # HTTP retried until 202
                "delivered_s": round(at - began),
                "ledgers": report["ledgers"],
            }
            _end(sender)
        await asyncio.sleep(30)
    finally:
        watcher.cancel()
        for _, sender, _, _ in running:
            _end(sender)
    return _overload_report(args, began, phases, reports, windows, tree)


async def _report(conn: Connection, sender: BaseProcess) -> tuple[Any, float]:
    """A sender's report and when it came (every line acknowledged or given up)."""
    report = await _recv(conn, sender)
    return report, time.time()


async def _latency_windows(up: OpmasUp, tree: ProcessTree, out: list[dict[str, Any]]) -> None:
    """Every 10 s: p99 arrival->stored of the window (store histogram) and total RSS."""
    before = await pipeline.scrape(up.api_url)
    while True:
        for _ in range(10):
            await asyncio.to_thread(tree.sample_rss)
            await asyncio.sleep(1.0)
        after = await pipeline.scrape(up.api_url)
        hist = pipeline.histogram_quantiles(before, after)
        rss = 0
        for proc in tree.processes():
            try:
                rss += proc.memory_info().rss
            except Exception:  # noqa: S112 - a process that just ended has no memory left
                continue
        if (hist.get("count") or 0) < 0:  # a process missing from one scrape: no window
            hist = {"p99_s": None, "count": None}
        out.append({"t": time.time(), "p99_s": hist.get("p99_s"), "stored": hist.get("count"),
                    "rss_mb": round(rss / 2**20)})  # fmt: skip
        before = after


def _overload_report(
    args: argparse.Namespace,
    began: float,
    phases: tuple[tuple[str, int, float], ...],
    reports: dict[str, Any],
    windows: list[dict[str, Any]],
    tree: ProcessTree,
) -> dict[str, Any]:
    dropped_at = began + phases[0][2] + phases[1][2]
    normal = next(
        (w for w in windows
         if w["t"] > dropped_at and w["p99_s"] is not None and w["p99_s"] < P99_NORMAL_S),
        None,
    )  # fmt: skip
    peak: dict[str, float] = defaultdict(float)
    for proc in tree.processes():
        name = pipeline._name(proc, {}, {})  # private there: names a process from its cmdline
        peak[name] += tree.peak_rss.get(proc.pid, 0) / 2**20
    senders = {}
    for name, report in reports.items():
        http, tcp = report["ledgers"]["http"], report["ledgers"]["tcp"]
        senders[name] = {
            "http_acknowledged": len(http["sent"]),
            "http_answers": dict(http["status"]),
            "http_retry_after": sorted(http["retry_after"]),
            "tcp_sent": len(tcp["sent"]),
            "tcp_blocked_s": round(tcp["blocked_s"], 1),
            "delivered_s": report["delivered_s"],
        }
    return {
        "rates": {name: rate for name, rate, _ in phases},
        "seconds": {name: s for name, _, s in phases},
        "senders": senders,
        "load_dropped_s": round(dropped_at - began),
        "latency_normal_after_drop_s": round(normal["t"] - dropped_at) if normal else None,
        "peak_rss_mb": {k: round(v) for k, v in sorted(peak.items(), key=lambda kv: -kv[1])},
        "peak_rss_total_mb": round(sum(peak.values())),
        "windows": [{**w, "at_s": round(w["t"] - began)} for w in windows],
    }


# ---------------------------------------------------------------------------------------------
# the sender processes


def _spawn(target: Any, plan: Any) -> tuple[BaseProcess, Connection]:
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    sender = ctx.Process(target=target, args=(plan, theirs), name="soak-sender")
    sender.start()
    return sender, ours


async def _recv(conn: Connection, sender: BaseProcess) -> Any:
    while not conn.poll(0):
        if not sender.is_alive():
            raise SystemExit(f"a sender process died (exit code {sender.exitcode})")
        await asyncio.sleep(0.1)
    return conn.recv()


def _end(sender: BaseProcess) -> None:
    if sender.is_alive():
        sender.terminate()
    sender.join(10)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60.0, help="soak length")
    ap.add_argument("--rate", type=int, default=CEILING // 3, help="normal lines/s")
    ap.add_argument("--window", type=float, default=None,
                    help="minutes at the end over which growth is measured (default 40, at "
                    "most two thirds of --minutes)")  # fmt: skip
    ap.add_argument("--incident-every", type=float, default=600.0, help="seconds between rounds")
    ap.add_argument("--overload", action="store_true", help="the overload run instead")
    ap.add_argument("--overload-rate", type=int, default=3 * CEILING, help="lines/s, TCP+HTTP")
    ap.add_argument("--overload-seconds", type=float, default=60.0)
    ap.add_argument("--after-seconds", type=float, default=180.0, help="normal rate after")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--keep", action="store_true", help="keep the data dir and log")
    args = ap.parse_args()
    if args.window is None:
        args.window = min(40.0, args.minutes * 2 / 3)
    return args


def main() -> None:
    args = parse_args()
    with OpmasUp(keep=args.keep) as up:
        log.print(f"opmas up ready: API {up.api_url}, data dir {up.data_dir}, pid {os.getpid()}")
        result = asyncio.run(overload(args, up) if args.overload else soak(args, up))
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return
    shown = {k: v for k, v in result.items() if k not in ("samples", "windows")}
    print(json.dumps(shown, indent=2, default=str))


if __name__ == "__main__":
    main()
