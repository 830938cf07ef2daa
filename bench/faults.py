"""Fault campaign: numbered lines over HTTP, TCP and UDP while one fault at a time hits `opmas up`.

Each fault runs on a fresh `opmas up` (bench.pipeline.OpmasUp: every default, a throwaway data
dir, free loopback ports). A sender process of its own sends numbered lines at a steady rate over
each transport (HTTP: POST /api/v1/logs retried with the same Idempotency-Key until 202; TCP
syslog with reconnects; UDP syslog), the fault is injected, an SSH brute force (dropbear `Bad
password attempt` lines from one address) is sent during it, sending goes on, then the bench
drains. Every line carries its sequence number, so loss and duplicates are counted exactly from
`events`: per transport sent (HTTP: acknowledged) / stored / lost / duplicated, the time until
fresh lines are stored again after the fault, whether the brute force gave its finding, and what
`opmas up` left behind (zombies, lines abandoned at stop, dead-lettered messages).

  .venv/bin/python -m bench.faults                                   # every fault, 60 s each
  .venv/bin/python -m bench.faults --faults kill-postgres,kill-nats --seconds 45
  .venv/bin/python -m bench.faults --rate 1000 --markdown /tmp/faults.md --json

Run from the repository root (`-m`: the bench imports bench.pipeline). Needs root for
`disk-full` (a tmpfs mounted where the PostgreSQL cluster lives); it is reported as skipped
otherwise. Everything it starts or mounts is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
from bench.pipeline import (
    ATTACKERS,
    OPMAS,
    OpmasUp,
    _connect,  # private in bench.pipeline: the bench's own (uncounted) PostgreSQL connection
    source_address,
    ssh_threshold,
)
from rich.console import Console
from rich.table import Table

from opmas.embedded import cluster_dir

TRANSPORTS = ("http", "tcp", "udp")
ROUTERS = 4  # routers per transport, each with a source address (and TCP connection) of its own
SOURCE_BASE = {"tcp": 0, "udp": 10, "burst": 20}  # offsets into bench.pipeline.source_address
HTTP_BATCH_MAX = 2_000
HTTP_CONCURRENCY = 4
TICK_S = 0.02
FRESH_S = 5.0  # recovered: a line sent less than this long ago is stored
SETTLE_S = 20.0  # drain: no new row this long and nothing expected is growing: done
SEQ = re.compile(r"seq=(\d+)")
log = Console(stderr=True)


# ---------------------------------------------------------------------------------------------
# numbered lines


def stamp(style: str, at: float, started: float) -> tuple[str, bool]:
    """The timestamp of a line sent at `at`, and whether it is RFC 5424 (else RFC 3164).

    `now`: the router's clock is right. `ahead`: 150 days fast (RFC 3164 has no year). `epoch`:
    a router that booted without NTP, counting from 1970-01-01. `future`: ten years fast.
    """
    if style == "ahead":
        return time.strftime("%b %e %H:%M:%S", time.localtime(at + 150 * 86400)), False
    if style == "epoch":
        when = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=60 + at - started)
        return when.isoformat(timespec="milliseconds").replace("+00:00", "Z"), True
    if style == "future":
        when = datetime.fromtimestamp(at, UTC).replace(year=datetime.now(UTC).year + 10)
        return when.isoformat(timespec="milliseconds").replace("+00:00", "Z"), True
    return time.strftime("%b %e %H:%M:%S", time.localtime(at)), False


def syslog(pri: int, style: str, at: float, started: float, host: str, app: str, msg: str) -> bytes:
    """One syslog line in RFC 3164 (`<pri>stamp host app: msg`) or RFC 5424, as `style` says."""
    text, rfc5424 = stamp(style, at, started)
    program, _, pid = app.partition("[")
    if rfc5424:
        return f"<{pri}>1 {text} {host} {program} {pid.rstrip(']') or '-'} - - {msg}".encode()
    return f"<{pri}>{text} {host} {app}: {msg}".encode()


def numbered(transport: str, seq: int, style: str, started: float) -> bytes:
    """Line number `seq` of `transport`, from router `fault-<transport>-<seq mod ROUTERS>`."""
    now = time.time()
    host = f"fault-{transport}-{seq % ROUTERS}"
    return syslog(14, style, now, started, host, "faultgen", f"seq={seq:09d} sent={now:.3f}")


@dataclass(frozen=True)
class BurstPlan:
    """`lines` failed root logins from `attacker` on router `hostname`, 0.25 s apart, at `at_s`."""

    at_s: float
    hostname: str
    attacker: str
    lines: int
    style: str = "now"


@dataclass(frozen=True)
class SendPlan:
    """What the sender process sends: per transport `rate` lines/s; lines sent between
    `skew_s[0]` and `skew_s[1]` (from the start) carry a wrong clock (see `stamp`)."""

    host: str
    tcp_port: int
    udp_port: int
    api_url: str
    token: str
    rate: int
    bursts: tuple[BurstPlan, ...] = ()
    skew_s: tuple[float, float] | None = None
    skew_styles: tuple[tuple[str, str], ...] = (("http", "future"), ("tcp", "ahead"))
    http_deadline_s: float = 600.0  # retries of a batch end this long after sending stops
    transports: tuple[str, ...] = TRANSPORTS
    seq_base: int = 0  # a multiple of ROUTERS: senders after one another number on


@dataclass
class Ledger:
    """What one transport of the sender did: seqs sent (HTTP: acknowledged), lines that failed
    (TCP: a write that broke; UDP: sendto error; HTTP: given up), and how it was slowed."""

    sent: list[int] = field(default_factory=list)
    failed: int = 0
    retries: int = 0  # HTTP: re-posts of a batch; TCP: reconnects
    status: Counter[str] = field(default_factory=Counter)  # HTTP answers (and transport errors)
    retry_after: set[str] = field(default_factory=set)
    blocked_s: float = 0.0  # TCP: time writes waited for the server to read (backpressure)
    errors: list[str] = field(default_factory=list)

    def note(self, error: str) -> None:
        if len(self.errors) < 5:
            self.errors.append(error)


# ---------------------------------------------------------------------------------------------
# the sender: a process of its own


class Sender:
    """Numbered lines over the three transports at `plan.rate` each, until `stop` is set."""

    def __init__(self, plan: SendPlan) -> None:
        self.plan = plan
        self.started = time.time()
        self.stop = asyncio.Event()
        self.ledgers = {t: Ledger() for t in (*TRANSPORTS, "burst")}
        self.burst_marks: list[tuple[str, float]] = []
        self._skews = dict(plan.skew_styles) | {"udp": "epoch"}
        self.stopped_at = float("inf")

    def style(self, transport: str) -> str:
        window = self.plan.skew_s
        if window and window[0] <= time.time() - self.started < window[1]:
            return self._skews.get(transport, "now")
        return "now"

    def gave_up(self) -> bool:
        """Sending stopped longer than the deadline ago: blocked writes and retries end."""
        return time.time() > self.stopped_at + self.plan.http_deadline_s

    def due(self, share: float = 1.0) -> int:
        return int((time.time() - self.started) * self.plan.rate * share)

    async def run(self) -> None:
        wanted = self.plan.transports
        tasks = [asyncio.create_task(self._bursts())]
        if "http" in wanted:
            tasks.append(asyncio.create_task(self._http()))
        if "tcp" in wanted:
            tasks += [asyncio.create_task(self._tcp_router(i)) for i in range(ROUTERS)]
        if "udp" in wanted:
            tasks.append(asyncio.create_task(self._udp()))
        await asyncio.gather(*tasks)

    # -- TCP ---------------------------------------------------------------------------------
    async def _tcp_router(self, router: int) -> None:
        """Router `router` sends seqs router, router + ROUTERS, ... over its own connection."""
        conn = TcpConnection(self.plan, source_address(SOURCE_BASE["tcp"] + router), self.gave_up)
        ledger = self.ledgers["tcp"]
        k = 0
        while not self.stop.is_set():
            upto = self.due(1 / ROUTERS)
            base = self.plan.seq_base + router
            seqs = [base + ROUTERS * n for n in range(k, min(upto, k + HTTP_BATCH_MAX))]
            if seqs and await conn.write([numbered("tcp", s, self.style("tcp"), self.started)
                                          for s in seqs], ledger, self.stop):  # fmt: skip
                ledger.sent.extend(seqs)
            k += len(seqs)
            await asyncio.sleep(TICK_S)
        await conn.close()

    # -- UDP ---------------------------------------------------------------------------------
    async def _udp(self) -> None:
        socks = []
        for i in range(ROUTERS):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((source_address(SOURCE_BASE["udp"] + i), 0))
            socks.append(sock)
        ledger, seq = self.ledgers["udp"], self.plan.seq_base
        target = (self.plan.host, self.plan.udp_port)
        while not self.stop.is_set():
            upto = self.plan.seq_base + self.due()
            while seq < upto:
                line = numbered("udp", seq, self.style("udp"), self.started)
                try:
                    socks[seq % ROUTERS].sendto(line, target)
                    ledger.sent.append(seq)
                except OSError as exc:  # ENOBUFS: the sender's own queue is full
                    ledger.failed += 1
                    ledger.note(repr(exc))
                seq += 1
            await asyncio.sleep(TICK_S)
        for sock in socks:
            sock.close()

    # -- HTTP --------------------------------------------------------------------------------
    async def _http(self) -> None:
        """Every 100 ms, the lines due so far in one POST (at most HTTP_CONCURRENCY in flight)."""
        slots = asyncio.Semaphore(HTTP_CONCURRENCY)
        inflight: set[asyncio.Task[None]] = set()
        headers = {"Authorization": f"Bearer {self.plan.token}", "Content-Type": "text/plain"}
        async with httpx.AsyncClient(base_url=self.plan.api_url, headers=headers,
                                     timeout=30.0) as client:  # fmt: skip
            seq = base = self.plan.seq_base
            while not self.stop.is_set():
                upto = min(base + self.due(), seq + HTTP_BATCH_MAX)
                if upto > seq:
                    await slots.acquire()
                    upto = min(base + self.due(), seq + HTTP_BATCH_MAX)
                    batch = list(range(seq, upto))
                    body = b"\n".join(numbered("http", s, self.style("http"), self.started)
                                      for s in batch) + b"\n"  # fmt: skip
                    task = asyncio.create_task(self._post(client, batch, body, slots))
                    inflight.add(task)
                    task.add_done_callback(inflight.discard)
                    seq = upto
                await asyncio.sleep(0.1)
            if inflight:
                await asyncio.gather(*inflight)

    async def _post(
        self, client: httpx.AsyncClient, batch: list[int], body: bytes, slots: asyncio.Semaphore
    ) -> None:
        """Post until 202 with one Idempotency-Key; give up only on a 4xx that is not 408/429
        or when sending stopped more than `http_deadline_s` ago."""
        ledger, key = self.ledgers["http"], uuid.uuid4().hex
        try:
            while True:
                wait = 0.25
                try:
                    reply = await client.post("/api/v1/logs", content=body,
                                              headers={"Idempotency-Key": key})  # fmt: skip
                    ledger.status[str(reply.status_code)] += 1
                    if reply.status_code == 202:
                        ledger.sent.extend(batch)
                        return
                    if "Retry-After" in reply.headers:
                        ledger.retry_after.add(reply.headers["Retry-After"])
                        wait = min(float(reply.headers["Retry-After"]), 5.0)
                    if reply.status_code < 500 and reply.status_code not in (408, 429):
                        ledger.note(f"{reply.status_code} {reply.text[:200]}")
                        break
                except httpx.TransportError as exc:
                    ledger.status[type(exc).__name__] += 1
                if self.gave_up():
                    ledger.note("gave up at the deadline")
                    break
                ledger.retries += 1
                await asyncio.sleep(wait)
            ledger.failed += len(batch)
        finally:
            slots.release()

    # -- the brute force ---------------------------------------------------------------------
    async def _bursts(self) -> None:
        conn = TcpConnection(self.plan, source_address(SOURCE_BASE["burst"]), self.gave_up)
        ledger = self.ledgers["burst"]
        for burst in self.plan.bursts:
            for k in range(burst.lines):
                at = self.started + burst.at_s + 0.25 * k
                while time.time() < at:
                    if self.stop.is_set():
                        return await conn.close()
                    await asyncio.sleep(0.01)
                msg = f"Bad password attempt for 'root' from {burst.attacker}:{40000 + k}"
                line = syslog(84, burst.style, time.time(), self.started, burst.hostname,
                              "dropbear[2211]", msg)  # fmt: skip
                if await conn.write([line], ledger, self.stop):
                    ledger.sent.append(k)
            self.burst_marks.append((burst.hostname, time.time()))
        await conn.close()

    def finish(self) -> None:
        """Stop sending; HTTP batches in flight are retried until the deadline."""
        self.stopped_at = time.time()
        self.stop.set()

    def report(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "ledgers": {t: vars(ledger) for t, ledger in self.ledgers.items()},
            "burst_marks": self.burst_marks,
        }


class TcpConnection:
    """One router's TCP syslog connection (LF framing) from its own source address; reconnects
    after a failure. A write counts only once the kernel took it (drain returned)."""

    def __init__(self, plan: SendPlan, source: str, gave_up: Callable[[], bool]) -> None:
        self._target = (plan.host, plan.tcp_port)
        self._source = source
        self._gave_up = gave_up
        self._writer: asyncio.StreamWriter | None = None

    async def write(self, lines: list[bytes], ledger: Ledger, stop: asyncio.Event) -> bool:
        while self._writer is None:
            try:
                _, self._writer = await asyncio.open_connection(
                    *self._target, local_addr=(self._source, 0)
                )
            except OSError as exc:
                ledger.note(f"connect: {exc!r}")
                if stop.is_set():
                    ledger.failed += len(lines)
                    return False
                await asyncio.sleep(0.5)
        try:
            self._writer.write(b"\n".join(lines) + b"\n")
            began = time.monotonic()
            drain = asyncio.ensure_future(self._writer.drain())
            while not (await asyncio.wait({drain}, timeout=1.0))[0]:
                if self._gave_up():  # the server never read it: not sent
                    drain.cancel()
                    raise TimeoutError("the server stopped reading")
            drain.result()
            waited = time.monotonic() - began
            ledger.blocked_s += waited if waited > 0.05 else 0.0
            return True
        except OSError as exc:
            ledger.failed += len(lines)
            ledger.retries += 1
            ledger.note(f"write: {exc!r}")
            await self.close()
            return False

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
            self._writer = None


def sender_main(plan: SendPlan, conn: Connection) -> None:
    """Entry point of the sender process: ready, wait for go, send until told to stop, report."""
    conn.send("ready")
    conn.recv()
    conn.send(asyncio.run(_send(plan, conn)))


async def _send(plan: SendPlan, conn: Connection) -> dict[str, Any]:
    sender = Sender(plan)
    task = asyncio.create_task(sender.run())
    while not conn.poll(0):
        if task.done():
            break
        await asyncio.sleep(0.1)
    sender.finish()
    await task
    return sender.report()


# ---------------------------------------------------------------------------------------------
# the instance under test and its processes


class FaultUp(OpmasUp):
    """`opmas up` (bench.pipeline.OpmasUp) with extra settings, which can be restarted on the
    same data dir after a kill -9 and stopped cleanly with its log read."""

    def __init__(self, env: dict[str, str], *, keep: bool) -> None:
        super().__init__(keep=keep)
        self.env.update(env)

    def restart(self) -> None:
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [OPMAS, "up"], env=self.env, cwd=self.tmp, stdout=out, stderr=subprocess.STDOUT
            )
        self._wait_ready()  # private in bench.pipeline: ready, and no component starting

    def stop_cleanly(self) -> dict[str, Any]:
        """SIGINT and wait (as Ctrl-C does): exit code, seconds, what the log says it lost."""
        assert self.proc is not None
        began = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        try:
            code: int | str = self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            code = "killed after 120 s"
        text = self.log_path.read_text(errors="replace")
        abandoned = [int(n) for n in re.findall(r"lines abandoned at stop.*?lines=(\d+)", text)]
        return {
            "exit_code": code,
            "stop_s": round(time.monotonic() - began, 1),
            "lines_abandoned": sum(abandoned),
            "tracebacks": text.count("Traceback"),
        }


def process_kind(proc: psutil.Process, up_pid: int) -> str | None:
    """`up`, `pipeline`, `nats-server` or `postgres` (the postmaster), else None."""
    with contextlib.suppress(psutil.Error):
        cmdline = " ".join(proc.cmdline())
        if proc.pid == up_pid:
            return "up"
        if "opmas run pipeline" in cmdline or cmdline.endswith("opmas run pipeline"):
            return "pipeline"
        if proc.name() == "nats-server":
            return "nats-server"
        if proc.name() == "postgres" and proc.ppid() == up_pid:
            return "postgres"
    return None


def processes(up_pid: int) -> dict[str, list[psutil.Process]]:
    """The live processes of `opmas up` by kind (zombies under `zombie`)."""
    out: dict[str, list[psutil.Process]] = {}
    with contextlib.suppress(psutil.NoSuchProcess):
        root = psutil.Process(up_pid)
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                if proc.status() == psutil.STATUS_ZOMBIE:
                    out.setdefault("zombie", []).append(proc)
                    continue
                kind = process_kind(proc, up_pid)
                if kind:
                    out.setdefault(kind, []).append(proc)
    return out


# ---------------------------------------------------------------------------------------------
# the faults


@dataclass
class Run:
    """One fault's run: the instance, the fault's length, and what the injection noted."""

    up: FaultUp
    fault_s: float
    notes: list[str] = field(default_factory=list)
    killed: dict[str, int] = field(default_factory=dict)  # kind -> pid


Inject = Callable[[Run], Awaitable[None]]


@dataclass(frozen=True)
class Fault:
    """A fault: its name, what is done (shell terms, for the table) and how."""

    name: str
    what: str
    inject: Inject
    env: dict[str, str] = field(default_factory=dict)
    skew: bool = False


def kill(kind: str) -> Inject:
    async def inject(run: Run) -> None:
        procs = processes(run.up.pid).get(kind, [])
        if not procs:
            run.notes.append(f"no {kind} process to kill")
            return
        run.killed[kind] = procs[0].pid
        os.kill(procs[0].pid, signal.SIGKILL)
        if kind == "up":
            await _restart_up(run, procs[0])

    return inject


async def _restart_up(run: Run, killed: psutil.Process) -> None:
    """After kill -9 of `opmas up`: wait for its children to go (at most 15 s), start it again
    on the same data dir, note orphans and how long the restart took."""
    children = []
    with contextlib.suppress(psutil.Error):
        children = killed.children(recursive=True)
    _, alive = await asyncio.to_thread(psutil.wait_procs, children, 15)
    if alive:
        names = sorted({p.name() for p in alive if p.is_running()})
        run.notes.append(f"{len(alive)} children of the killed opmas up still alive after 15 s: "
                         f"{', '.join(names)}")  # fmt: skip
    began = time.monotonic()
    await asyncio.to_thread(run.up.restart)
    run.notes.append(f"restarted on the same data dir, ready in {time.monotonic() - began:.0f} s")


def stop_pipeline(run: Run) -> Awaitable[None]:
    return _stop(run, "pipeline")


async def _stop(run: Run, kind: str) -> None:
    """SIGSTOP the first process of `kind` for the fault's length, then SIGCONT."""
    procs = processes(run.up.pid).get(kind, [])
    if not procs:
        run.notes.append(f"no {kind} process to stop")
        return
    procs[0].suspend()
    try:
        await asyncio.sleep(run.fault_s)
    finally:
        with contextlib.suppress(psutil.Error):
            procs[0].resume()


def cluster_home(up: OpmasUp) -> Path:
    """Where the PostgreSQL cluster of `up`'s data dir lives when OPMAS runs as root."""
    return cluster_dir(up.data_dir, as_other_user=True).parent


async def fill_disk(run: Run) -> None:
    """Fill PostgreSQL's (small, tmpfs) filesystem to the last byte for the fault's length."""
    ballast = cluster_home(run.up) / "ballast"
    written = 0
    with contextlib.suppress(OSError), ballast.open("wb") as out:
        chunk = b"\0" * 2**20
        while True:
            written += out.write(chunk)
            out.flush()
    run.notes.append(f"filled with {written // 2**20} MiB of ballast")
    try:
        await asyncio.sleep(run.fault_s)
    finally:
        ballast.unlink(missing_ok=True)


async def nothing(run: Run) -> None:
    await asyncio.sleep(run.fault_s)


STREAM_BYTES = 1024 * 1024
DISK_MB = 256
FAULTS = {
    f.name: f
    for f in (
        Fault("baseline", "no fault", nothing),
        Fault("kill-pipeline", "kill -9 <pid of `opmas run pipeline`>", kill("pipeline")),
        Fault("kill-nats", "kill -9 <pid of nats-server>", kill("nats-server")),
        Fault("kill-postgres", "kill -9 <pid of the postgres postmaster>", kill("postgres")),
        Fault(
            "kill-up",
            "kill -9 <pid of `opmas up`>; `opmas up` again on the same data dir",
            kill("up"),
        ),
        Fault(
            "stop-pipeline",
            "kill -STOP <pipeline worker>; --fault-seconds; kill -CONT",
            stop_pipeline,
        ),
        Fault(
            "stream-full",
            f"OPMAS_BUS__LOGS_RAW__MAX_BYTES={STREAM_BYTES}; kill -STOP "
            "<pipeline worker> until LOGS_RAW is full; kill -CONT",
            stop_pipeline,
            env={"OPMAS_BUS__LOGS_RAW__MAX_BYTES": str(STREAM_BYTES)},
        ),
        Fault(
            "disk-full",
            f"PostgreSQL's cluster on a {DISK_MB} MiB tmpfs; fill it "
            "(dd until ENOSPC); --fault-seconds; rm the ballast",
            fill_disk,
        ),
        Fault(
            "clock-skew",
            "routers' clocks off for --fault-seconds: TCP lines +150 days (RFC 3164), UDP "
            "1970-01-01 (RFC 5424), HTTP +10 years (RFC 5424), brute force 1970-01-01",
            nothing,
            skew=True,
        ),
    )
}


# ---------------------------------------------------------------------------------------------
# what the database says

FRESH_SQL = """
SELECT split_part(hostname, '-', 2) AS transport,
       max(substring(message from 'sent=([0-9.]+)')::float8) AS newest
FROM events WHERE hostname LIKE 'fault-%' AND arrival_ts_utc > to_timestamp($1) GROUP BY 1"""
COUNT_SQL = """
SELECT split_part(hostname, '-', 2) AS transport, count(*) AS n
FROM events WHERE hostname LIKE 'fault-%' GROUP BY 1"""


class Database:
    """The bench's own connection to the instance's PostgreSQL, opened again after a failure
    (the server may be the fault); `None` from a query means unreachable right now."""

    def __init__(self, url: Callable[[], str]) -> None:
        self._url = url
        self._conn: asyncpg.Connection | None = None
        self.errors: Counter[str] = Counter()

    async def fetch(self, sql: str, *params: object) -> list[asyncpg.Record] | None:
        try:
            if self._conn is None or self._conn.is_closed():
                self._conn = await asyncio.wait_for(_connect(self._url()), 5)
            conn: asyncpg.Connection = self._conn
            rows: list[asyncpg.Record] = await conn.fetch(sql, *params, timeout=30)
            return rows
        except (
            OSError,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            asyncpg.InternalClientError,  # a connection left in a bad state by a timeout
            TimeoutError,
        ) as exc:
            self.errors[type(exc).__name__] += 1
            await self.close()
            return None

    async def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close(timeout=2)
            self._conn = None


async def watch_recovery(db: Database, since: float, stop: asyncio.Event) -> dict[str, float]:
    """Seconds from `since` until each transport had a line stored that was sent after `since`
    and less than FRESH_S ago (the system stores fresh lines again); polled every second."""
    recovered: dict[str, float] = {}
    while not stop.is_set() and len(recovered) < len(TRANSPORTS):
        rows = await db.fetch(FRESH_SQL, since)
        now = time.time()
        for row in rows or []:
            newest = row["newest"] or 0.0
            if row["transport"] not in recovered and newest > max(since, now - FRESH_S):
                recovered[row["transport"]] = round(now - since, 1)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    return recovered


async def drain(
    db: Database, sent: dict[str, int], burst_host: str, limit_s: float
) -> tuple[float, float | None]:
    """Wait until every sent line of HTTP and TCP is stored and the brute force has its finding,
    or nothing new was stored for SETTLE_S, or `limit_s` passed. Returns the seconds waited and
    when (epoch) every HTTP and TCP line was stored, if it was."""
    began = last_change = time.time()
    before: dict[str, int] = {}
    caught_up = None
    while time.time() - began < limit_s:
        rows = await db.fetch(COUNT_SQL)
        counts = {r["transport"]: int(r["n"]) for r in rows or []}
        if counts != before:
            before, last_change = counts, time.time()
        if caught_up is None and all(counts.get(t, 0) >= sent[t] for t in ("http", "tcp")):
            caught_up = time.time()
        if caught_up is not None and await findings(db, burst_host):
            break
        if time.time() - last_change > SETTLE_S:
            break
        await asyncio.sleep(1.0)
    return time.time() - began, caught_up


async def findings(db: Database, hostname: str) -> list[str]:
    rows = await db.fetch(
        "SELECT rule_name FROM findings WHERE device_hostname = $1 AND rule_name LIKE 'ssh%'",
        hostname,
    )
    return sorted({r["rule_name"] for r in rows or []})


async def tally(db: Database, ledgers: dict[str, Any]) -> dict[str, Any]:
    """Per transport: sent (HTTP: acknowledged), stored (distinct), lost, duplicated, stored
    though never counted sent (a write that broke after the kernel took part of it)."""
    rows = await db.fetch("SELECT hostname, message FROM events WHERE hostname LIKE 'fault-%'")
    if rows is None:
        return {"error": "PostgreSQL unreachable at the end"}
    stored: dict[str, Counter[int]] = {t: Counter() for t in TRANSPORTS}
    for row in rows:
        match = SEQ.search(row["message"] or "")
        transport = row["hostname"].split("-")[1]
        if match and transport in stored:
            stored[transport][int(match.group(1))] += 1
    out = {}
    for transport in TRANSPORTS:
        sent, kept = set(ledgers[transport]["sent"]), stored[transport]
        out[transport] = {
            "sent": len(sent),
            "failed": ledgers[transport]["failed"],
            "stored": len(kept),
            "lost": len(sent - set(kept)),
            "duplicated": sum(n - 1 for n in kept.values()),
            "unacknowledged_stored": len(set(kept) - sent),
        }
    return out


def status_problems(up: FaultUp) -> dict[str, Any]:
    """From `opmas status --json`: components not ACTIVE, restarts, DLQ size, down servers."""
    try:
        status = json.loads(up.cli("status", "--json"))
    except (SystemExit, ValueError) as exc:
        return {"error": str(exc)[-300:]}
    out: dict[str, Any] = {"raw_keys": sorted(status)}
    comps = status.get("components") or []
    out["components"] = [
        f"{c.get('name')} {c.get('status')} restarts={c.get('restarts')}"
        for c in comps
        if c.get("status") != "ACTIVE" or c.get("restarts")
    ]
    for stream in status.get("streams") or []:
        if str(stream.get("stream", "")).endswith("DLQ"):
            out["dlq_messages"] = stream.get("messages")
    return out


# ---------------------------------------------------------------------------------------------
# one fault


def run_fault(args: argparse.Namespace, fault: Fault, index: int) -> dict[str, Any]:
    """A fresh `opmas up`, the numbered send with `fault` injected, drain, counts, clean stop."""
    up = FaultUp(fault.env, keep=args.keep)
    home = cluster_home(up) if fault.name == "disk-full" else None
    if home is not None and os.geteuid() != 0:
        return {"fault": fault.name, "skipped": "needs root to mount a small filesystem"}
    try:
        if home is not None:
            home.mkdir(parents=True)
            opts = f"size={DISK_MB}m,mode=0711"
            subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(home)], check=True)
        with up:
            token = up.cli("tokens", "create", "--name", f"faults-{fault.name}").strip()
            result = asyncio.run(_measure(args, fault, index, up, token))
            result["status"] = status_problems(up)
            result["zombies"] = [p.pid for p in processes(up.pid).get("zombie", [])]
            result["servers_back"] = _servers_back(up, result["killed"])
            result["stop"] = up.stop_cleanly()
    finally:
        if home is not None:
            subprocess.run(["umount", "-l", str(home)], check=False)
            with contextlib.suppress(OSError):
                home.rmdir()
                home.parent.rmdir() if not any(home.parent.iterdir()) else None
    return result


def _servers_back(up: FaultUp, killed: dict[str, int]) -> dict[str, bool]:
    """Per killed server kind: is a new process of that kind running now?"""
    now = processes(up.pid)
    return {
        kind: any(p.pid != pid for p in now.get(kind, []))
        for kind, pid in killed.items()
        if kind != "up"
    }


async def _measure(
    args: argparse.Namespace, fault: Fault, index: int, up: FaultUp, token: str
) -> dict[str, Any]:
    warmup = max(5.0, (args.seconds - args.fault_seconds) / 3)
    burst_host = f"bf-{fault.name}"
    burst = BurstPlan(
        warmup + 2.0, burst_host, ATTACKERS[index % len(ATTACKERS)], ssh_threshold() + 1,
        "epoch" if fault.skew else "now",
    )  # fmt: skip
    plan = SendPlan(
        "127.0.0.1", up.tcp_port, up.udp_port, up.api_url, token, args.rate, (burst,),
        (warmup, warmup + args.fault_seconds) if fault.skew else None,
        http_deadline_s=args.drain,
    )  # fmt: skip
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    sender = ctx.Process(target=sender_main, args=(plan, theirs), name="faults-sender")
    sender.start()
    db = Database(lambda: up.database_url)
    run = Run(up, args.fault_seconds)
    try:
        await _recv(ours, sender)
        ours.send("go")
        began = time.time()
        await asyncio.sleep(warmup)
        injected = time.time()
        await fault.inject(run)
        # a kill is over at once; a stop, a full disk or a skew once lifted
        lifted = injected if fault.name.startswith("kill") else time.time()
        stop_watch = asyncio.Event()
        watch = asyncio.create_task(watch_recovery(db, lifted, stop_watch))
        await asyncio.sleep(max(0.0, began + args.seconds - time.time()))
        ours.send("stop")
        stopped = time.time()
        report = await _recv(ours, sender)
        sent = {t: len(report["ledgers"][t]["sent"]) for t in TRANSPORTS}
        drained, caught_up = await drain(db, sent, burst_host, args.drain)
        stop_watch.set()
        recovered = await watch
        result = {
            "fault": fault.name,
            "what": fault.what,
            "command": _command(args, fault),
            "send_s": round(time.time() - began - drained, 1),
            "drain_s": round(drained, 1),
            "counts": await tally(db, report["ledgers"]),
            "recovered_s": recovered,
            "caught_up_s": round(max(0.0, caught_up - stopped), 1) if caught_up else None,
            "brute_force": await findings(db, burst_host),
            "sender": _sender_summary(report["ledgers"]),
            "notes": run.notes,
            "killed": run.killed,
            "bench_db_errors": dict(db.errors),
        }
    finally:
        await db.close()
        if sender.is_alive():
            sender.terminate()
        sender.join(10)
    return result


async def _recv(conn: Connection, sender: multiprocessing.process.BaseProcess) -> Any:
    while not conn.poll(0):
        if not sender.is_alive():
            raise SystemExit(f"the sender process died (exit code {sender.exitcode})")
        await asyncio.sleep(0.1)
    return conn.recv()


def _sender_summary(ledgers: dict[str, Any]) -> dict[str, Any]:
    http, tcp = ledgers["http"], ledgers["tcp"]
    return {
        "http_answers": dict(http["status"]),
        "http_retry_after": sorted(http["retry_after"]),
        "http_retries": http["retries"],
        "tcp_blocked_s": round(tcp["blocked_s"], 1),
        "tcp_reconnects": tcp["retries"],
        "errors": {t: ledgers[t]["errors"] for t in ledgers if ledgers[t]["errors"]},
        "burst_lines_sent": len(ledgers["burst"]["sent"]),
    }


def _command(args: argparse.Namespace, fault: Fault) -> str:
    return (
        f"python -m bench.faults --faults {fault.name} --seconds {args.seconds:g} "
        f"--fault-seconds {args.fault_seconds:g} --rate {args.rate}"
    )


# ---------------------------------------------------------------------------------------------
# report


def cell(counts: dict[str, Any], transport: str) -> str:
    """`sent → stored` with lost and duplicated lines when there are any."""
    if "error" in counts:
        return str(counts["error"])
    c = counts[transport]
    text = f"{c['sent']:,} → {c['stored']:,}"
    extra = [f"**{c[k]:,} {k}**" for k in ("lost", "duplicated") if c[k]]
    if c["failed"]:
        extra.append(f"{c['failed']:,} not {'acknowledged' if transport == 'http' else 'sent'}")
    if c["unacknowledged_stored"]:
        extra.append(f"{c['unacknowledged_stored']:,} stored unacknowledged")
    return text + (f" ({', '.join(extra)})" if extra else "")


def what_happened(result: dict[str, Any]) -> str:
    parts = list(result["notes"])
    recovered = result["recovered_s"]
    missing = [t for t in TRANSPORTS if t not in recovered]
    if recovered:
        since = "the kill" if result["fault"].startswith("kill") else "the fault ended"
        parts.append(f"fresh lines stored again after {since}: " + ", ".join(
            f"{t} {s:g} s" for t, s in sorted(recovered.items())))  # fmt: skip
    if missing:
        parts.append(f"{'/'.join(missing)}: fresh lines not stored again while sending")
    if result["caught_up_s"] is not None:
        parts.append(
            f"every HTTP and TCP line stored {result['caught_up_s']:g} s after sending stopped"
        )
    else:
        parts.append("**HTTP/TCP lines still missing at the end of the drain**")
    for kind, back in result["servers_back"].items():
        parts.append(f"{kind} {'restarted' if back else '**not restarted**'}")
    sender = result["sender"]
    answers = {k: v for k, v in sender["http_answers"].items() if k != "202"}
    if answers:
        parts.append(f"HTTP non-202 answers {answers} (Retry-After {sender['http_retry_after']})")
    if sender["tcp_blocked_s"] >= 1.0:  # shorter waits are a busy machine
        parts.append(f"TCP writes blocked {sender['tcp_blocked_s']} s (backpressure)")
    if result["zombies"]:
        parts.append(f"**{len(result['zombies'])} zombie process(es)**")
    status = result["status"]
    if status.get("dlq_messages"):
        parts.append(f"**DLQ: {status['dlq_messages']} messages**")
    if status.get("components"):
        parts.append("status: " + "; ".join(status["components"]))
    stop = result["stop"]
    if stop["tracebacks"]:
        parts.append(f"{stop['tracebacks']} tracebacks in the log of `opmas up`")
    if stop["lines_abandoned"] or stop["exit_code"] != 0:
        parts.append(f"clean stop: exit {stop['exit_code']}, "
                     f"**{stop['lines_abandoned']} lines abandoned**")  # fmt: skip
    return "; ".join(parts) or "-"


def markdown(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    head = (
        "| fault | what was done | command | HTTP: acknowledged → stored | TCP: sent → stored "
        "| UDP: sent → stored | brute force found | what happened |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for r in results:
        if "skipped" in r:
            rows.append(f"| {r['fault']} | skipped: {r['skipped']} | | | | | | |")
            continue
        found = ", ".join(r["brute_force"]) or "**no**"
        rows.append(
            f"| {r['fault']} | {r['what']} | `{r['command']}` | {cell(r['counts'], 'http')} | "
            f"{cell(r['counts'], 'tcp')} | {cell(r['counts'], 'udp')} | {found} | "
            f"{what_happened(r)} |"
        )
    note = (
        f"\n{args.rate} lines/s per transport ({ROUTERS} routers each), {args.seconds:g} s per "
        f"fault, the fault {args.fault_seconds:g} s long (kill -9: at once), drain up to "
        f"{args.drain:g} s; `opmas up` at its defaults on {os.cpu_count()} cores.\n"
    )
    return head + "\n".join(rows) + "\n" + note


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--faults", default=",".join(FAULTS),
                    help=f"comma list of: {', '.join(FAULTS)}")  # fmt: skip
    ap.add_argument("--seconds", type=float, default=60.0, help="sending time per fault")
    ap.add_argument("--fault-seconds", type=float, default=20.0,
                    help="length of SIGSTOP, full disk, clock skew")  # fmt: skip
    ap.add_argument("--rate", type=int, default=500, help="lines/s per transport")
    ap.add_argument("--drain", type=float, default=180.0, help="max seconds of drain")
    ap.add_argument("--markdown", help="write the table to this file")
    ap.add_argument("--json", action="store_true", help="print every result as JSON")
    ap.add_argument("--keep", action="store_true", help="keep each data dir and log")
    args = ap.parse_args(argv)
    unknown = set(args.faults.split(",")) - set(FAULTS)
    if unknown:
        ap.error(f"unknown faults: {', '.join(sorted(unknown))}")
    if args.seconds < args.fault_seconds + 15:
        ap.error("--seconds must leave 15 s around the fault")
    return args


def main() -> None:
    args = parse_args()
    results = []
    for i, name in enumerate(args.faults.split(",")):
        log.print(f"[bold]fault {name}[/bold]: {FAULTS[name].what}")
        result = run_fault(args, FAULTS[name], i)
        results.append(result)
        log.print(json.dumps(result, default=str))
        if args.markdown:  # written after each fault, so a long campaign shows progress
            Path(args.markdown).write_text(markdown(results, args))
    table = Table("fault", "HTTP", "TCP", "UDP", "brute force", "what happened", title="faults")
    for r in results:
        if "skipped" in r:
            table.add_row(r["fault"], "skipped", r["skipped"], "", "", "")
            continue
        table.add_row(r["fault"], *(cell(r["counts"], t) for t in TRANSPORTS),
                      ", ".join(r["brute_force"]) or "no", what_happened(r))  # fmt: skip
    Console(width=200).print(table)
    if args.json:
        print(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
