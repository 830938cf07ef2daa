"""Whole-pipeline benchmark: `opmas up` at its defaults, fed lines by a separate sender process.

Starts `opmas up` as a user does (a throwaway OPMAS_DATA_DIR, every default but free loopback
ports), measures its idle CPU and memory, then a sender process (never this one) offers corpus
lines at a fixed rate or as fast as it can over TCP syslog (LF framing, one connection per
router), UDP syslog (one datagram per line, one source address per router) or HTTP
(POST /api/v1/logs batches with an ingest token and an Idempotency-Key, retried until 202).
While it runs, short SSH brute-force bursts on routers of their own are injected and timed to
their finding. Reported: lines offered/sent, stored lines/s (rows counted in `events`), loss
apart from undrained backlog, arrival->stored p50/p95/p99 (the store's histogram, and the
bench's own clock), line->finding p50/p99, CPU us per stored line and memory per process
(every descendant of `opmas up`, PostgreSQL backends named after the process they serve).
Everything is removed at the end unless --keep.

  .venv/bin/python bench/pipeline.py --transport tcp --rate 5000 --duration 30
  .venv/bin/python bench/pipeline.py --transport udp --rate 20000 --duration 60 --json
  .venv/bin/python bench/pipeline.py --transport http --rate 0 --duration 30
  .venv/bin/python bench/pipeline.py --find-ceiling --duration 15 --steps 5000,10000,20000
  .venv/bin/python bench/pipeline.py --corpus-e2e
  .venv/bin/python bench/pipeline.py --rate 6000 --duration 40 --profile 20

The default corpus is the 1 M-line file of ../shared/bench/gen_corpus.py, generated once into
~/.cache/opmas-bench/ (or $BENCH_CACHE_DIR); `--corpus FILE` takes any file of syslog lines
(with a truth.json beside it for --corpus-e2e). --profile needs py-spy in the virtualenv
(`.venv/bin/pip install py-spy`; a bench-only tool, not a project dependency).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import httpx
import psutil
import yaml
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Column, Table

from opmas.db.engine import plain_dsn
from opmas.embedded import remove_outside_cluster

OPMAS = str(Path(sys.executable).parent / "opmas")
REPO = Path(__file__).resolve().parent.parent
GEN_CORPUS = REPO.parent / "shared" / "bench" / "gen_corpus.py"
CORPUS_FILE = "corpus_rfc3164.log"
LATENCY_FAMILY = "opmas_store_arrival_to_stored_seconds"
BENCH_APP = "opmas-bench"
DEFAULT_STEPS = (5_000, 10_000, 20_000, 30_000, 40_000, 60_000, 80_000, 100_000)
CEILING_P99_S = 2.0
MIN_OFFERED_SHARE = 0.95  # a step whose sender could not offer 95 % of its rate did not hold it
SETTLE_S = 30.0  # stored count unchanged this long after sending: the rest is lost
FINDING_POLL_S = 0.05
TICK_S = 0.005
MAX_CHUNK = 2_000  # lines handed to the transport at once
MAX_SOURCES = 1_000
HOSTNAME = re.compile(rb"^<\d{1,3}>\w{3} [ \d]\d \d\d:\d\d:\d\d (\S+) ")
CORPUS_ATTACKERS = {"203.0.113.7", "203.0.113.66", "198.51.100.23", "198.51.100.201"}
CORPUS_ATTACKERS |= {"192.0.2.45", "192.0.2.199"}
ATTACKERS = [  # the TEST-NETs (RFC 5737) but the shared corpus's own attackers
    f"{net}.{host}"
    for net in ("203.0.113", "198.51.100", "192.0.2")
    for host in range(100, 255)
    if f"{net}.{host}" not in CORPUS_ATTACKERS
]

log = Console(stderr=True)


# ---------------------------------------------------------------------------------------------
# corpus


def corpus_file(given: str | None) -> Path:
    """The corpus to send: `given`, or the shared generator's 1 M-line file (made once)."""
    if given:
        return Path(given).resolve()
    cache = Path(os.environ.get("BENCH_CACHE_DIR", Path.home() / ".cache" / "opmas-bench"))
    out = cache / "corpus-20261121"
    if not (out / "truth.json").is_file():  # written last by the generator
        if not GEN_CORPUS.is_file():
            raise SystemExit(f"no --corpus and no generator at {GEN_CORPUS}")
        log.print(f"generating the 1 M-line corpus into {out} (once)")
        staged = cache / f"corpus-{os.getpid()}.tmp"
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir(parents=True)
        subprocess.run(
            [sys.executable, str(GEN_CORPUS), "--out", str(staged)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        shutil.rmtree(out, ignore_errors=True)
        staged.rename(out)
    return out / CORPUS_FILE


def truth_attackers(corpus: Path) -> list[str]:
    """Attacker IPs of the truth.json beside the corpus."""
    truth = corpus.parent / "truth.json"
    if not truth.is_file():
        raise SystemExit(f"--corpus-e2e needs {truth} beside the corpus")
    return sorted(json.loads(truth.read_text())["attackers"])


def ssh_threshold() -> int:
    """Failed logins that open an ssh-brute-force finding in the shipped rule pack."""
    import opmas.agents

    pack = Path(opmas.agents.__file__).parent / "pack" / "security.yaml"
    for rule in yaml.safe_load(pack.read_text()).get("rules", []):
        if str(rule.get("name", "")).startswith("ssh-brute-force") and "threshold" in rule:
            return int(rule["threshold"])
    return 5


# ---------------------------------------------------------------------------------------------
# the sender: a process of its own


@dataclass(frozen=True)
class Burst:
    """`lines` failed root logins from `attacker` on router `hostname`, `spacing_s` apart."""

    at_s: float
    hostname: str
    attacker: str
    lines: int
    spacing_s: float
    threshold: int


@dataclass(frozen=True)
class SendPlan:
    transport: str
    host: str
    port: int
    api_url: str
    token: str | None
    corpus: str
    rate: int  # 0: as fast as possible
    duration_s: float
    one_pass: bool  # send the corpus once, then stop (--corpus-e2e)
    bursts: tuple[Burst, ...]
    http_batch: int
    http_concurrency: int
    restamp: bool = False  # RFC 3164 stamps set to the sending time, as live routers send


_BSD_STAMP = re.compile(rb"^(<\d{1,3}>)[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d ")


def restamped(lines: list[bytes], now: float) -> list[bytes]:
    """`lines` with their RFC 3164 timestamp replaced by `now` (a line without one is kept)."""
    stamp = time.strftime("%b %e %H:%M:%S ", time.gmtime(now)).encode()
    return [_BSD_STAMP.sub(lambda m: m.group(1) + stamp, line, count=1) for line in lines]


class Output(Protocol):
    async def send(self, lines: list[bytes], sources: Sequence[int]) -> None: ...
    async def send_one(self, line: bytes, source: int) -> None: ...
    async def close(self) -> dict[str, Any]: ...


def source_address(index: int) -> str:
    """A loopback address of its own per router, as routers have (127.1.0.1, 127.1.0.2...)."""
    return f"127.1.{index // 250}.{index % 250 + 1}"


class TcpOutput:
    """One TCP syslog connection per router, LF framed; a slow server blocks the sender."""

    def __init__(self, host: str, port: int, sources: int) -> None:
        self._socks = [self._connect(host, port, source_address(i)) for i in range(sources)]

    @staticmethod
    def _connect(host: str, port: int, source: str) -> socket.socket:
        return socket.create_connection((host, port), source_address=(source, 0))

    async def send(self, lines: list[bytes], sources: Sequence[int]) -> None:
        groups: dict[int, list[bytes]] = defaultdict(list)
        for line, src in zip(lines, sources, strict=True):
            groups[src].append(line)
        for src, group in groups.items():
            group.append(b"")
            self._socks[src].sendall(b"\n".join(group))

    async def send_one(self, line: bytes, source: int) -> None:
        self._socks[source].sendall(line + b"\n")

    async def close(self) -> dict[str, Any]:
        for sock in self._socks:
            sock.close()
        return {}


class UdpOutput:
    """One datagram per line from each router's own source address."""

    def __init__(self, host: str, port: int, sources: int) -> None:
        self._target = (host, port)
        self._socks = []
        for i in range(sources):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((source_address(i), 0))
            self._socks.append(sock)
        self.failed = 0

    async def send(self, lines: list[bytes], sources: Sequence[int]) -> None:
        socks, target = self._socks, self._target
        for line, src in zip(lines, sources, strict=True):
            try:
                socks[src].sendto(line, target)
            except OSError:  # ENOBUFS: the sender's own queue is full
                self.failed += 1

    async def send_one(self, line: bytes, source: int) -> None:
        await self.send([line], [source])

    async def close(self) -> dict[str, Any]:
        for sock in self._socks:
            sock.close()
        return {"failed": self.failed}


class HttpOutput:
    """POST /api/v1/logs text/plain batches of `batch` lines (or 100 ms old), `concurrency` at
    once; each retried with its Idempotency-Key until 202 (up to 120 s)."""

    RETRYABLE = frozenset({408, 429, 500, 502, 503, 504})
    MAX_AGE_S = 0.1
    GIVE_UP_S = 120.0

    def __init__(self, api_url: str, token: str, batch: int, concurrency: int) -> None:
        self._client = httpx.AsyncClient(
            base_url=api_url,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain"},
            timeout=30.0,
            limits=httpx.Limits(max_connections=concurrency + 1),
        )
        self._batch = batch
        self._slots = asyncio.Semaphore(concurrency)
        self._pending: list[bytes] = []
        self._first_at = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        self.accepted = self.failed = self.retries = 0
        self.errors: list[str] = []

    async def send(self, lines: list[bytes], sources: Sequence[int]) -> None:
        if not self._pending:
            self._first_at = time.monotonic()
        self._pending.extend(lines)
        while len(self._pending) >= self._batch:
            await self._post(self._pending[: self._batch])
            del self._pending[: self._batch]
        if self._pending and time.monotonic() - self._first_at >= self.MAX_AGE_S:
            await self._post(self._pending)
            self._pending = []

    async def send_one(self, line: bytes, source: int) -> None:
        self._spawn([line])  # a burst line does not wait for a slot: it is timed

    async def _post(self, lines: list[bytes]) -> None:
        await self._slots.acquire()
        self._spawn(lines, slot=True)

    def _spawn(self, lines: list[bytes], *, slot: bool = False) -> None:
        task = asyncio.create_task(self._deliver(lines, slot=slot))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, lines: list[bytes], *, slot: bool) -> None:
        body = b"\n".join(lines) + b"\n"
        headers = {"Idempotency-Key": uuid.uuid4().hex}
        give_up = time.monotonic() + self.GIVE_UP_S
        last = "no answer"
        try:
            while time.monotonic() < give_up:
                try:
                    reply = await self._client.post("/api/v1/logs", content=body, headers=headers)
                except httpx.TransportError as exc:
                    last = repr(exc)
                    self._retry(last)
                    await asyncio.sleep(0.25)
                    continue
                if reply.status_code == 202:
                    self.accepted += len(lines)
                    return
                last = f"{reply.status_code} {reply.text[:200]}"
                if reply.status_code not in self.RETRYABLE:
                    break
                self._retry(last)
                await asyncio.sleep(float(reply.headers.get("Retry-After", "0.25")))
            self.failed += len(lines)
            self.errors.append(f"gave up on a batch: {last}")
        finally:
            if slot:
                self._slots.release()

    def _retry(self, reason: str) -> None:
        self.retries += 1
        if len(self.errors) < 5:
            self.errors.append(reason)

    async def close(self) -> dict[str, Any]:
        if self._pending:
            await self._post(self._pending)
            self._pending = []
        while self._tasks:
            await asyncio.gather(*list(self._tasks))
        await self._client.aclose()
        return {"accepted": self.accepted, "failed": self.failed, "retries": self.retries}


def load_corpus(path: str) -> tuple[list[bytes], bytes, int]:
    """The corpus's lines, each line's router as a source index (two bytes a line, native
    order, for a memoryview of "H") and the number of routers (at most MAX_SOURCES)."""
    lines = Path(path).read_bytes().splitlines()
    lines = [line for line in lines if line]
    names: dict[bytes, int] = {}
    index = bytearray(2 * len(lines))
    for i, line in enumerate(lines):
        match = HOSTNAME.match(line)
        name = match.group(1) if match else b""
        src = names.setdefault(name, len(names)) % MAX_SOURCES
        index[2 * i : 2 * i + 2] = src.to_bytes(2, sys.byteorder)
    return lines, bytes(index), min(len(names), MAX_SOURCES)


def burst_lines(burst: Burst, source: int, start: float) -> list[tuple[float, bytes, int, bool]]:
    """(when, line, source, is the threshold-th line) for each line of `burst`."""
    out: list[tuple[float, bytes, int, bool]] = []
    pid = 3000 + source
    for k in range(burst.lines):
        when = start + burst.at_s + k * burst.spacing_s
        stamp = time.strftime("%b %e %H:%M:%S", time.localtime(when))
        text = (
            f"<84>{stamp} {burst.hostname} dropbear[{pid}]: Bad password attempt for 'root'"
            f" from {burst.attacker}:{40000 + k}"
        )
        out.append((when, text.encode(), source, k + 1 == burst.threshold))
    return out


def open_output(plan: SendPlan, sources: int) -> Output:
    if plan.transport == "tcp":
        return TcpOutput(plan.host, plan.port, sources)
    if plan.transport == "udp":
        return UdpOutput(plan.host, plan.port, sources)
    assert plan.token is not None
    return HttpOutput(plan.api_url, plan.token, plan.http_batch, plan.http_concurrency)


def sender_main(plan: SendPlan, conn: Connection) -> None:
    """Entry point of the sender process: load, report ready, wait for go, send, report."""
    lines, index, routers = load_corpus(plan.corpus)
    output = open_output(plan, routers + len(plan.bursts))
    conn.send(("ready", len(lines)))
    conn.recv()
    report = asyncio.run(_send(plan, lines, index, routers, output))
    conn.send(report)


async def _send(
    plan: SendPlan, lines: list[bytes], index: bytes, routers: int, output: Output
) -> dict[str, Any]:
    sources = memoryview(index).cast("H")
    start = time.time()
    extra = sorted(
        (item for i, b in enumerate(plan.bursts) for item in burst_lines(b, routers + i, start)),
        key=lambda item: item[0],
    )
    total = len(lines) if plan.one_pass else None
    handed = pos = bursts_sent = 0
    timeline: list[tuple[float, int]] = [(start, 0)]
    marks: list[tuple[str, str, float]] = []
    while (now := time.time()) - start < plan.duration_s and (total is None or pos < total):
        while extra and extra[0][0] <= now:
            _, line, src, is_mark = extra.pop(0)
            await output.send_one(line, src)
            bursts_sent += 1
            if is_mark:
                burst = plan.bursts[src - routers]
                marks.append((burst.hostname, burst.attacker, time.time()))
        due = int((now - start) * plan.rate) - handed if plan.rate else MAX_CHUNK
        count = min(due, MAX_CHUNK, (total - pos) if total is not None else MAX_CHUNK)
        if count > 0:
            chunk, srcs = _slice(lines, sources, pos, count)
            if plan.restamp:
                chunk = restamped(chunk, now)
            await output.send(chunk, srcs)
            handed += count
            pos += count
            timeline.append((time.time(), handed + bursts_sent))
        await asyncio.sleep(TICK_S if plan.rate else 0)
    end = time.time()
    extra_report = await output.close()
    sent = handed + bursts_sent
    if "accepted" in extra_report:
        sent = extra_report["accepted"]
    elif "failed" in extra_report:
        sent -= extra_report["failed"]
    cpu = psutil.Process().cpu_times()
    return {
        "start": start,
        "end": end,
        "closed": time.time(),
        "offered": int(plan.rate * plan.duration_s) + bursts_sent if plan.rate else sent,
        "handed": handed + bursts_sent,
        "sent": sent,
        "burst_lines": bursts_sent,
        "timeline": timeline,
        "marks": marks,
        "cpu_s": round(cpu.user + cpu.system, 2),
        **extra_report,
    }


def _slice(
    lines: list[bytes], sources: memoryview, pos: int, count: int
) -> tuple[list[bytes], Sequence[int]]:
    """`count` lines from `pos`, wrapping round the corpus, and their sources."""
    size = len(lines)
    start = pos % size
    if start + count <= size:
        return lines[start : start + count], sources[start : start + count].tolist()
    head = size - start
    rest = count - head
    return (
        lines[start:] + lines[:rest],
        sources[start:].tolist() + sources[:rest].tolist(),
    )


# ---------------------------------------------------------------------------------------------
# the instance under test


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OpmasUp:
    """`opmas up` on a throwaway data dir with free loopback ports; on exit: SIGINT, wait, and
    the data dir (and a PostgreSQL cluster kept outside it) removed unless `keep`."""

    def __init__(self, *, keep: bool, ready_within_s: float = 180.0) -> None:
        self.keep = keep
        self.ready_within_s = ready_within_s
        self.tmp = Path(tempfile.mkdtemp(prefix="opmas-bench-pipeline-"))
        self.data_dir = self.tmp / "data"
        self.log_path = self.tmp / "opmas-up.log"
        self.http_port = _free_port(socket.SOCK_STREAM)
        self.tcp_port = _free_port(socket.SOCK_STREAM)
        self.udp_port = _free_port(socket.SOCK_DGRAM)
        self.api_url = f"http://127.0.0.1:{self.http_port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("OPMAS_")}
        self.env.update(
            OPMAS_DATA_DIR=str(self.data_dir),
            OPMAS_HTTP_PORT=str(self.http_port),
            OPMAS_SYSLOG_HOST="127.0.0.1",
            OPMAS_SYSLOG_TCP_PORT=str(self.tcp_port),
            OPMAS_SYSLOG_UDP_PORT=str(self.udp_port),
            OPMAS_SYSLOG_TLS_PORT="-1",
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.database_url = ""

    def __enter__(self) -> OpmasUp:
        with self.log_path.open("wb") as out:  # cwd: no config/opmas_config.yaml is picked up
            self.proc = subprocess.Popen(
                [OPMAS, "up"], env=self.env, cwd=self.tmp, stdout=out, stderr=subprocess.STDOUT
            )
        try:
            self._wait_ready()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.ready_within_s
        instance = self.data_dir / "instance.json"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"opmas up exited:\n{self.log_path.read_text()[-3000:]}")
            with contextlib.suppress(httpx.TransportError, OSError, ValueError, KeyError):
                if httpx.get(f"{self.api_url}/ready", timeout=2).status_code == 200:
                    url = json.loads(instance.read_text())["database_url"]
                    self.database_url = plain_dsn(url)
                    if self._components_started():
                        return
            time.sleep(0.2)
        raise SystemExit(f"opmas up not ready within {self.ready_within_s:.0f} s")

    def _components_started(self) -> bool:
        """No component (child processes included) is still starting; one in ERROR is
        reported and the bench goes on (the report shows what it costs)."""
        states = httpx.get(f"{self.api_url}/api/v1/status", timeout=2).json()["components"]
        if not states or any(c["status"] == "STARTING" for c in states):
            return False
        for comp in states:
            if comp["status"] != "ACTIVE":
                log.print(f"[yellow]component {comp['name']} is {comp['status']}: {comp}")
        return True

    def __exit__(self, *exc_info: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.keep:
            log.print(f"kept: {self.tmp} (opmas up log: {self.log_path})")
            return
        remove_outside_cluster(self.data_dir)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def cli(self, *argv: str) -> str:
        """Run an `opmas` command against this instance; its stdout."""
        done = subprocess.run(
            [OPMAS, *argv], env=self.env, cwd=self.tmp, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise SystemExit(f"opmas {' '.join(argv)} failed:\n{done.stderr[-2000:]}")
        return done.stdout

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


# ---------------------------------------------------------------------------------------------
# processes: CPU and memory of every descendant of `opmas up`


@dataclass
class ProcSample:
    name: str
    cpu_s: float
    rss: int = 0
    uss: int = 0
    pss: int = 0


class ProcessTree:
    """The processes of `opmas up` (itself and every descendant), named from their command
    line; PostgreSQL backends named after the process whose connection they serve."""

    def __init__(self, root_pid: int) -> None:
        self.root = psutil.Process(root_pid)
        self.exclude: set[int] = set()  # the bench's own PostgreSQL backends
        self.peak_rss: dict[int, int] = {}

    def processes(self) -> list[psutil.Process]:
        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    async def snapshot(
        self, db: asyncpg.Connection, *, memory: bool = False
    ) -> dict[int, ProcSample]:
        """CPU seconds (and memory when asked) of every process now, keyed by pid."""
        procs = self.processes()
        backends = {
            row["pid"]: (row["client_port"], row["application_name"], row["backend_type"])
            for row in await db.fetch(
                "SELECT pid, client_port, application_name, backend_type FROM pg_stat_activity"
            )
        }
        owners = _port_owners(procs, backends)
        out: dict[int, ProcSample] = {}
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                with proc.oneshot():
                    times = proc.cpu_times()
                    sample = ProcSample(_name(proc, backends, owners), times.user + times.system)
                    if memory:
                        info = proc.memory_full_info()
                        sample.rss, sample.uss = info.rss, info.uss
                        sample.pss = getattr(info, "pss", 0)
                out[proc.pid] = sample
        return out

    def sample_rss(self) -> None:
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                rss = proc.memory_info().rss
                self.peak_rss[proc.pid] = max(self.peak_rss.get(proc.pid, 0), rss)

    def python_pids(self) -> dict[int, str]:
        """OPMAS's own (Python) processes: pid -> name."""
        out = {}
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                name = _opmas_name(proc.cmdline())
                if name:
                    out[proc.pid] = name
        return out


def _opmas_name(cmdline: list[str]) -> str | None:
    for i, arg in enumerate(cmdline):
        if Path(arg).name == "opmas":
            return " ".join(["opmas", *cmdline[i + 1 :]])
    return None


def _port_owners(
    procs: list[psutil.Process], backends: dict[int, tuple[Any, str, str]]
) -> dict[int, str]:
    """Local TCP port -> name of the process that holds it (to name PostgreSQL backends)."""
    owners: dict[int, str] = {}
    for proc in procs:
        if proc.pid in backends:
            continue
        with contextlib.suppress(psutil.Error):
            name = _opmas_name(proc.cmdline())
            if name is None:
                continue
            for conn in proc.net_connections(kind="tcp"):
                owners[conn.laddr.port] = name
    return owners


def _name(
    proc: psutil.Process, backends: dict[int, tuple[Any, str, str]], owners: dict[int, str]
) -> str:
    cmdline = proc.cmdline()
    if proc.pid in backends:
        port, app, _ = backends[proc.pid]
        if port in owners:
            return f"postgres <- {owners[port]}"
        if app == BENCH_APP:
            return f"postgres <- {BENCH_APP}"
    opmas = _opmas_name(cmdline)
    if opmas:
        return opmas
    if "nats-server" in proc.name():
        return "nats-server"
    title = " ".join(cmdline).strip()
    if title.startswith("postgres:"):  # the process title PostgreSQL sets
        return "postgres: client backend" if "(" in title else title
    if proc.name().startswith("postgres"):
        return "postgres (postmaster)"
    return title[:60] or proc.name()


def cpu_groups(
    before: dict[int, ProcSample],
    after: dict[int, ProcSample],
    seconds: float,
    lines: int,
    peak_rss: dict[int, int] | None = None,
    exclude: set[int] | None = None,
) -> dict[str, Any]:
    """CPU (and memory of `after`) per process name and in total over a window. A process born
    in the window counts whole; one that ended in it is lost (counted in `exited`)."""
    groups: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    excluded = 0.0
    for pid, now in after.items():
        used = now.cpu_s - (before[pid].cpu_s if pid in before else 0.0)
        if exclude and pid in exclude:
            excluded += used
            continue
        group = groups[now.name]
        group["processes"] += 1
        group["cpu_s"] += used
        group["rss_mb"] += now.rss / 2**20
        group["uss_mb"] += now.uss / 2**20
        group["peak_rss_mb"] += max((peak_rss or {}).get(pid, 0), now.rss) / 2**20
    rows = []
    for name, group in sorted(groups.items(), key=lambda kv: -kv[1]["cpu_s"]):
        rows.append(_cpu_row(name, group, seconds, lines))
    total: dict[str, float] = defaultdict(float)
    for group in groups.values():
        for key, value in group.items():
            total[key] += value
    return {
        "window_s": round(seconds, 2),
        "lines": lines,
        "total": _cpu_row("total", total, seconds, lines),
        "processes": rows,
        "exited_in_window": len(set(before) - set(after)),
        "bench_queries_cpu_s": round(excluded, 2),
    }


def _cpu_row(name: str, group: dict[str, float], seconds: float, lines: int) -> dict[str, Any]:
    return {
        "process": name,
        "count": int(group["processes"]),
        "cpu_s": round(group["cpu_s"], 2),
        "cores": round(group["cpu_s"] / seconds, 3) if seconds else None,
        "us_per_line": round(1e6 * group["cpu_s"] / lines, 1) if lines else None,
        "rss_mb": round(group["rss_mb"], 1),
        "uss_mb": round(group["uss_mb"], 1),
        "peak_rss_mb": round(group["peak_rss_mb"], 1),
    }


# ---------------------------------------------------------------------------------------------
# what the database and /metrics say


class RowCounter:
    """Counts rows of `events` every `every_s` (or 8x the last count's duration, if longer)."""

    def __init__(self, db: asyncpg.Connection, every_s: float) -> None:
        self._db = db
        self._every_s = every_s
        self.samples: list[tuple[float, int]] = []
        self.last_change = time.time()
        self._task: asyncio.Task[None] | None = None

    async def count(self) -> int:
        return int(await self._db.fetchval("SELECT count(*) FROM events"))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            began = time.time()
            value = await self.count()
            took = time.time() - began
            if not self.samples or value != self.samples[-1][1]:
                self.last_change = time.time()
            self.samples.append((time.time(), value))
            await asyncio.sleep(max(self._every_s, 8 * took) - took)

    @property
    def latest(self) -> int:
        return self.samples[-1][1] if self.samples else 0

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class FindingWatch:
    """Polls `findings` every 50 ms; first time (bench clock) each (router, ip) and each ip
    was seen in a finding."""

    def __init__(self, db: asyncpg.Connection) -> None:
        self._db = db
        self.by_key: dict[tuple[str, str], float] = {}
        self.by_ip: dict[str, float] = {}
        self._last_id = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            rows = await self._db.fetch(
                "SELECT id, device_hostname, details->>'ip' AS ip FROM findings WHERE id > $1",
                self._last_id - 200,  # ids commit slightly out of order
            )
            seen = time.time()
            for row in rows:
                self._last_id = max(self._last_id, row["id"])
                ip = row["ip"] or ""
                self.by_key.setdefault((row["device_hostname"] or "", ip), seen)
                self.by_ip.setdefault(ip, seen)
            await asyncio.sleep(FINDING_POLL_S)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def scrape(api_url: str) -> dict[str, dict[str, float]] | None:
    """The API's merged /metrics: family -> {sample name + labels but `process`: value},
    summed over processes; None when it keeps failing (then the report says so)."""
    reason = ""
    async with httpx.AsyncClient(timeout=15) as client:
        for _ in range(20):
            try:
                reply = await client.get(f"{api_url}/metrics")
            except httpx.TransportError as exc:
                reason = repr(exc)
            else:
                if reply.status_code == 200:
                    return _families(reply.text)
                reason = f"{reply.status_code} {reply.text[:200]}"
            log.print(f"[yellow]/metrics failed ({reason}); retrying")
            await asyncio.sleep(0.5)
    log.print(f"[red]/metrics kept failing ({reason}): no histogram or counters for this run")
    return None


def _families(text: str) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = {k: v for k, v in sample.labels.items() if k != "process"}
            key = sample.name + json.dumps(labels, sort_keys=True)
            out[family.name][key] += sample.value
    return out


def histogram_quantiles(
    before: dict[str, dict[str, float]] | None, after: dict[str, dict[str, float]] | None
) -> dict[str, Any]:
    """p50/p95/p99 of the arrival->stored histogram over the window, interpolated in buckets."""
    if before is None or after is None:
        return {"error": "/metrics failed"}
    name = LATENCY_FAMILY
    if name not in after:
        name = next((n for n in after if n.endswith("arrival_to_stored_seconds")), name)
    buckets: dict[float, float] = defaultdict(float)
    for key, value in after.get(name, {}).items():
        if "_bucket" not in key:
            continue
        bound = float(json.loads(key[key.index("{") :])["le"])
        buckets[bound] += value - before.get(name, {}).get(key, 0.0)
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0.0
    out: dict[str, Any] = {"family": name, "count": int(total)}
    for q in (0.5, 0.95, 0.99):
        out[f"p{int(q * 100)}_s"] = _quantile(q, bounds, buckets, total)
    return out


def _quantile(q: float, bounds: list[float], cum: dict[float, float], total: float) -> float | None:
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        if cum[bound] >= rank:
            if bound == float("inf"):
                return lower  # beyond the last finite bucket: its bound is all we know
            share = (rank - below) / (cum[bound] - below) if cum[bound] > below else 1.0
            return round(lower + (bound - lower) * share, 4)
        lower, below = bound, cum[bound]
    return None


def counter_deltas(
    before: dict[str, dict[str, float]] | None, after: dict[str, dict[str, float]] | None
) -> dict[str, float] | None:
    """Growth of every drop, reject or failure counter over the window (non-zero only)."""
    if before is None or after is None:
        return None
    out: dict[str, float] = {}
    for name, samples in after.items():
        if not re.search(r"drop|reject|fail|duplicate", name):
            continue
        for key, value in samples.items():
            if key.split("{", 1)[0].endswith("_total"):
                delta = value - before.get(name, {}).get(key, 0.0)
                if delta:
                    out[key] = delta
    return out


def udp_socket_drops(port: int) -> int | None:
    """The kernel's drop counter of the UDP socket bound to `port` (/proc/net/udp)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                return int(fields[-1])
    return None


def percentiles(values: list[float], qs: Sequence[float] = (0.5, 0.95, 0.99)) -> dict[str, Any]:
    if not values:
        return {"samples": 0}
    ordered = sorted(values)
    out: dict[str, Any] = {"samples": len(ordered)}
    for q in qs:
        out[f"p{int(q * 100)}_s"] = round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)
    out["max_s"] = round(ordered[-1], 3)
    return out


def clock_latencies(
    timeline: list[tuple[float, int]], samples: list[tuple[float, int]], base: int
) -> list[float]:
    """For each count sample, its time minus the time that many lines had been sent."""
    out = []
    j = 0
    for when, value in samples:
        stored = value - base
        if stored <= 0:
            continue
        while j < len(timeline) and timeline[j][1] < stored:
            j += 1
        if j == len(timeline):
            break
        out.append(when - timeline[j][0])
    return out


# ---------------------------------------------------------------------------------------------
# one load window


@dataclass
class Bench:
    """What every load window of a run shares."""

    args: argparse.Namespace
    up: OpmasUp
    tree: ProcessTree
    db: asyncpg.Connection
    corpus: Path
    token: str | None
    threshold: int
    attackers: list[str] = field(default_factory=list)
    bursts: int = 0  # bursts planned so far, numbering routers and attackers


def plan_bursts(bench: Bench, duration_s: float) -> tuple[Burst, ...]:
    """Bursts every --burst-every s from 2 s until 4 s before the end, each on a router and
    from a TEST-NET address of its own (distinct over the whole bench, up to 450 bursts)."""
    every = bench.args.burst_every
    if bench.args.corpus_e2e or every <= 0:
        return ()
    lines = bench.threshold + 1
    out: list[Burst] = []
    at = 2.0
    while at + lines * 0.25 <= duration_s - 4.0:
        n = bench.bursts
        bench.bursts += 1
        attacker = ATTACKERS[n % len(ATTACKERS)]
        out.append(Burst(at, f"bench-bf-{n:04d}", attacker, lines, 0.25, bench.threshold))
        at += every
    return tuple(out)


async def run_load(bench: Bench, rate: int, duration_s: float) -> dict[str, Any]:
    """Offer `rate` lines/s (0: max) for `duration_s` from a sender process, then drain."""
    args, up = bench.args, bench.up
    bursts = plan_bursts(bench, duration_s)
    port = up.udp_port if args.transport == "udp" else up.tcp_port
    plan = SendPlan(
        args.transport, "127.0.0.1", port, up.api_url, bench.token, str(bench.corpus), rate,
        duration_s, bool(args.corpus_e2e), bursts, args.http_batch, args.http_concurrency,
    )  # fmt: skip
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    sender = ctx.Process(target=sender_main, args=(plan, theirs), name="bench-sender")
    sender.start()
    try:
        return await _measure(bench, rate, duration_s, plan, sender, ours)
    finally:
        if sender.is_alive():
            sender.terminate()
        sender.join(10)


async def _recv(conn: Connection, sender: BaseProcess) -> Any:
    while not conn.poll(0):
        if not sender.is_alive():
            raise SystemExit(f"the sender process died (exit code {sender.exitcode})")
        await asyncio.sleep(0.05)
    return conn.recv()


async def _measure(
    bench: Bench,
    rate: int,
    duration_s: float,
    plan: SendPlan,
    sender: BaseProcess,
    conn: Connection,
) -> dict[str, Any]:
    args, up, tree = bench.args, bench.up, bench.tree
    _, corpus_lines = await _recv(conn, sender)
    findings_db = await _connect(up.database_url)
    tree.exclude.add(await findings_db.fetchval("SELECT pg_backend_pid()"))
    counter = RowCounter(bench.db, args.count_every)
    watch = FindingWatch(findings_db)
    base = await counter.count()
    metrics_before = await scrape(up.api_url)
    udp_before = udp_socket_drops(up.udp_port) if args.transport == "udp" else None
    cpu_before = await tree.snapshot(bench.db)
    tree.peak_rss.clear()
    began = time.time()
    conn.send("go")
    counter.start()
    watch.start()
    sampler = asyncio.create_task(_sample_rss(tree))
    profile = asyncio.create_task(_profile(tree, args, duration_s)) if args.profile else None
    try:
        report = await _recv(conn, sender)
        drain = await _drain(bench, counter, watch, report["sent"] + base, report["marks"])
    finally:
        await counter.stop()
        await watch.stop()
        sampler.cancel()
        ended = time.time()
    stored = (counter.latest if counter.samples else await counter.count()) - base
    cpu_after = await tree.snapshot(bench.db, memory=True)
    metrics_after = await scrape(up.api_url)
    await findings_db.close()
    components = await _components(up.api_url)
    udp_after = udp_socket_drops(up.udp_port) if udp_before is not None else None
    result = {
        "transport": args.transport,
        "target_rate": rate or "max",
        "duration_s": duration_s,
        **_counts(report, stored, drain, counter, base, began),
        "latency_arrival_to_stored": {
            "histogram": histogram_quantiles(metrics_before, metrics_after),
            "bench_clock": percentiles(clock_latencies(report["timeline"], counter.samples, base)),
        },
        "line_to_finding": _finding_latency(report["marks"], watch),
        "counters": counter_deltas(metrics_before, metrics_after),
        "udp_kernel_drops": None if udp_after is None or udp_before is None
                            else udp_after - udp_before,
        "cpu": cpu_groups(
            cpu_before, cpu_after, ended - began, stored, tree.peak_rss, tree.exclude
        ),
        "components": components,
        "sender": {k: report[k] for k in ("cpu_s", "retries", "failed", "errors") if k in report},
    }  # fmt: skip
    if bench.attackers:
        result["e2e"] = _e2e(bench, watch, counter, base, corpus_lines, report, began)
    if profile is not None:
        result["profile"] = await profile
    return result


async def _components(api_url: str) -> list[str]:
    """Each component's status, restarts and last error after the run (/api/v1/status)."""
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            states = (await client.get(f"{api_url}/api/v1/status")).json()["components"]
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        return [f"/api/v1/status failed: {exc!r}"]
    return [
        f"{c['name']} {c['status']} restarts={c['restarts']} last_error={c['last_error']}"
        for c in states
        if c["status"] != "ACTIVE" or c["restarts"] or c["last_error"]
    ]


async def _connect(url: str) -> asyncpg.Connection:
    # no parallel workers: each count stays in the bench's own backend, whose CPU is left out
    return await asyncpg.connect(
        url,
        server_settings={"application_name": BENCH_APP, "max_parallel_workers_per_gather": "0"},
    )


async def _sample_rss(tree: ProcessTree) -> None:
    while True:
        await asyncio.to_thread(tree.sample_rss)
        await asyncio.sleep(1.0)


@dataclass
class Drain:
    seconds: float
    complete: bool  # every sent line stored
    growing: bool  # the count still grew at the deadline: the rest is backlog


async def _drain(
    bench: Bench,
    counter: RowCounter,
    watch: FindingWatch,
    target: int,
    marks: list[tuple[str, str, float]],
) -> Drain:
    """Wait until every sent line is stored (and every burst and attacker found), the count
    stops growing for SETTLE_S, or --drain runs out."""
    start = time.time()
    deadline = start + bench.args.drain
    wanted_keys = {(host, ip) for host, ip, _ in marks}
    stored_at = None
    while time.time() < deadline:
        stored_all = counter.latest >= target
        if stored_all and stored_at is None:
            stored_at = time.time()
        found_all = wanted_keys <= set(watch.by_key) and set(bench.attackers) <= set(watch.by_ip)
        if stored_all and found_all:
            return Drain(time.time() - start, True, False)
        if stored_at is not None and time.time() - stored_at > 10.0:  # a finding is missing
            return Drain(time.time() - start, True, False)
        if not stored_all and time.time() - counter.last_change > SETTLE_S:
            return Drain(time.time() - start, False, False)
        await asyncio.sleep(0.1)
    return Drain(time.time() - start, counter.latest >= target, counter.latest < target)


def _counts(
    report: dict[str, Any],
    stored: int,
    drain: Drain,
    counter: RowCounter,
    base: int,
    began: float,
) -> dict[str, Any]:
    sent = report["sent"]
    send_s = report["end"] - report["start"]
    missing = max(0, sent - stored)
    last = min((t for t, c in counter.samples if c - base >= stored), default=time.time())
    # the steady part of the sending (or, when the sender was done at once, of the storing)
    until = report["end"] if send_s >= 5.0 else last
    since = began + 0.2 * (until - began)
    window = [(t, c) for t, c in counter.samples if since <= t <= until]
    sustained = None
    if len(window) >= 2 and window[-1][0] - window[0][0] >= 1.0:
        sustained = (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0])
    return {
        "offered": report["offered"],
        "sent": sent,
        "send_s": round(send_s, 2),
        "sent_lines_per_s": round(sent / send_s) if send_s else None,
        "stored": stored,
        "stored_lines_per_s_sustained": round(sustained) if sustained is not None else None,
        "stored_lines_per_s_overall": round(stored / max(last - began, 1e-9)),
        "drain_s": round(drain.seconds, 1),
        "drained": drain.complete,
        "loss": None if drain.growing else missing,
        "backlog": missing if drain.growing else 0,
    }


def _finding_latency(marks: list[tuple[str, str, float]], watch: FindingWatch) -> dict[str, Any]:
    waits = [watch.by_key[(h, ip)] - t for h, ip, t in marks if (h, ip) in watch.by_key]
    out = percentiles(waits, (0.5, 0.99))
    out["bursts"] = len(marks)
    out["missing"] = [f"{h} {ip}" for h, ip, _ in marks if (h, ip) not in watch.by_key]
    return out


def _e2e(
    bench: Bench,
    watch: FindingWatch,
    counter: RowCounter,
    base: int,
    lines: int,
    report: dict[str, Any],
    began: float,
) -> dict[str, Any]:
    stored_at = next((t for t, c in counter.samples if c - base >= lines), None)
    found = {ip: round(watch.by_ip[ip] - began, 2) for ip in bench.attackers if ip in watch.by_ip}
    done = [stored_at - began if stored_at else None, *found.values()]
    complete = stored_at is not None and len(found) == len(bench.attackers)
    return {
        "corpus_lines": lines,
        "sent_in_s": round(report["end"] - began, 2),
        "all_stored_in_s": round(stored_at - began, 2) if stored_at else None,
        "attackers_found_in_s": found,
        "attackers_missing": sorted(set(bench.attackers) - set(found)),
        "end_to_end_s": round(max(d for d in done if d is not None), 2) if complete else None,
    }


# ---------------------------------------------------------------------------------------------
# profile


async def _profile(
    tree: ProcessTree, args: argparse.Namespace, duration_s: float
) -> dict[str, Any]:
    """py-spy on every OPMAS Python process for --profile s, after a short warm-up."""
    spy = Path(sys.executable).parent / "py-spy"
    if not spy.exists():
        return {"error": f"py-spy missing: {sys.executable} -m pip install py-spy"}
    warmup = min(5.0, duration_s / 4)
    if warmup + args.profile > duration_s:
        log.print("[yellow]--profile is longer than the load: the profile includes the drain")
    await asyncio.sleep(warmup)
    out_dir = Path(tempfile.mkdtemp(prefix="opmas-bench-pyspy-"))
    try:
        targets = tree.python_pids()
        runs = {}
        for pid in targets:
            runs[pid] = await asyncio.create_subprocess_exec(
                str(spy), "record", "--pid", str(pid), "--duration", str(int(args.profile)),
                "--rate", "100", "--format", "raw", "--function", "--nonblocking",
                "--output", str(out_dir / f"{pid}.txt"),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
        result: dict[str, Any] = {}
        for pid, proc in runs.items():
            _, err = await proc.communicate()
            path = out_dir / f"{pid}.txt"
            key = f"{targets[pid]} (pid {pid})"
            if proc.returncode != 0 or not path.exists():
                result[key] = {"error": err.decode()[-300:]}
                continue
            result[key] = top_functions(path.read_text())
        return result
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def top_functions(raw: str, top: int = 15) -> dict[str, Any]:
    """The functions with the most own samples in py-spy's raw (collapsed stack) output."""
    own: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        own[_short(stack.rsplit(";", 1)[-1]) or "(no Python frame)"] += int(count)
    total = sum(own.values())
    return {
        "samples": total,
        "top": [
            {"function": name, "own_pct": round(100 * n / total, 1)}
            for name, n in own.most_common(top)
        ],
    }


def _short(frame: str) -> str:
    for marker in ("site-packages/", "/src/", "/lib/python3"):
        if marker in frame:
            head, _, tail = frame.partition("(")
            return f"{head}({tail.split(marker, 1)[1]}"
    return frame


# ---------------------------------------------------------------------------------------------
# modes


async def bench_main(args: argparse.Namespace, up: OpmasUp, corpus: Path) -> dict[str, Any]:
    db = await _connect(up.database_url)
    tree = ProcessTree(up.pid)
    tree.exclude.add(await db.fetchval("SELECT pg_backend_pid()"))
    token = None
    if args.transport == "http":
        token = up.cli("tokens", "create", "--name", f"bench-{os.getpid()}").strip()
    attackers = truth_attackers(corpus) if args.corpus_e2e else []
    bench = Bench(args, up, tree, db, corpus, token, ssh_threshold(), attackers)
    result: dict[str, Any] = {"settings": _settings(args, corpus, bench.threshold)}
    try:
        result["idle"] = await measure_idle(bench)
        if args.find_ceiling:
            result.update(await find_ceiling(bench))
        else:
            rate = 0 if args.corpus_e2e else args.rate
            duration = float("inf") if args.corpus_e2e else args.duration
            log.print(f"load: {args.transport} at {rate or 'max'} lines/s for {duration} s")
            result["runs"] = [await run_load(bench, rate, duration)]
    finally:
        await db.close()
    return result


def _settings(args: argparse.Namespace, corpus: Path, threshold: int) -> dict[str, Any]:
    rmem = Path("/proc/sys/net/core/rmem_max")
    return {
        "transport": args.transport,
        "corpus": str(corpus),
        "cores": os.cpu_count(),
        "ssh_threshold": threshold,
        "net.core.rmem_max": int(rmem.read_text()) if rmem.exists() else None,
        "argv": sys.argv[1:],
    }


async def measure_idle(bench: Bench) -> dict[str, Any]:
    """CPU and memory of the whole instance with no traffic, after a short settle."""
    seconds = bench.args.idle
    if seconds <= 0:
        return {}
    log.print(f"idle: settling 5 s, then {seconds:.0f} s with no traffic")
    await asyncio.sleep(5.0)
    before = await bench.tree.snapshot(bench.db)
    await asyncio.sleep(seconds)
    after = await bench.tree.snapshot(bench.db, memory=True)
    return cpu_groups(before, after, seconds, 0, exclude=bench.tree.exclude)


async def find_ceiling(bench: Bench) -> dict[str, Any]:
    """Step the rate up until a step loses lines, leaves a backlog, misses p99 < 2 s or
    cannot even be offered; the highest step before that is the ceiling."""
    steps = [int(s) for s in bench.args.steps.split(",")] if bench.args.steps else DEFAULT_STEPS
    runs, ceiling = [], None
    for rate in steps:
        log.print(f"step: {bench.args.transport} at {rate} lines/s for {bench.args.duration} s")
        run = await run_load(bench, rate, bench.args.duration)
        run["verdict"] = step_verdict(run)
        runs.append(run)
        log.print(f"  -> {run['verdict']}")
        if run["verdict"] != "ok":
            break
        ceiling = rate
    return {"runs": runs, "ceiling": {"lines_per_s": ceiling, "p99_limit_s": CEILING_P99_S}}


def step_verdict(run: dict[str, Any]) -> str:
    latency = run["latency_arrival_to_stored"]
    p99 = latency["histogram"].get("p99_s", latency["bench_clock"].get("p99_s"))
    if run["backlog"]:
        return f"backlog of {run['backlog']} lines at the drain deadline"
    if run["loss"]:
        return f"lost {run['loss']} lines"
    if run["sent"] < MIN_OFFERED_SHARE * run["offered"]:
        return f"only {run['sent']} of {run['offered']} lines could be sent"
    if p99 is None or p99 >= CEILING_P99_S:
        return f"p99 arrival->stored {p99} s"
    return "ok"


# ---------------------------------------------------------------------------------------------
# report


def print_report(result: dict[str, Any]) -> None:
    out = Console(width=None if sys.stdout.isatty() else 130)
    for i, run in enumerate(result.get("runs", [])):
        out.print(_summary_table(run, f"run {i + 1}"))
        out.print(_process_table(run["cpu"], "CPU and memory under load (window: send + drain)"))
        for name, prof in run.get("profile", {}).items():
            out.print(_profile_table(name, prof))
    if result.get("idle"):
        out.print(_process_table(result["idle"], "idle (no traffic)"))
    if "ceiling" in result:
        out.print(f"[bold]ceiling[/bold]: {result['ceiling']['lines_per_s']} lines/s")


def _summary_table(run: dict[str, Any], title: str) -> Table:
    table = Table("measure", "value", title=f"{title}: {run['transport']} at {run['target_rate']}")
    hist = run["latency_arrival_to_stored"]["histogram"]
    own = run["latency_arrival_to_stored"]["bench_clock"]
    finding = run["line_to_finding"]
    rows = [
        ("offered / sent lines", f"{run['offered']} / {run['sent']} in {run['send_s']} s"),
        ("sent lines/s", run["sent_lines_per_s"]),
        ("stored lines", run["stored"]),
        ("stored lines/s sustained / overall", f"{run['stored_lines_per_s_sustained']} / "
         f"{run['stored_lines_per_s_overall']}"),
        ("loss / undrained backlog",
         f"{run['loss']} / {run['backlog']} (drain {run['drain_s']} s)"),
        ("arrival->stored p50/p95/p99 (histogram)", _ps(hist)),
        ("arrival->stored p50/p95/p99 (bench clock)", _ps(own)),
        ("line->finding p50/p99 (bursts found/sent)", f"{_ps(finding)} "
         f"({finding['bursts'] - len(finding['missing'])}/{finding['bursts']})"),
        ("CPU us/line, all processes", run["cpu"]["total"]["us_per_line"]),
        ("CPU cores, all processes", run["cpu"]["total"]["cores"]),
        ("RSS / USS total MB",
         f"{run['cpu']['total']['rss_mb']} / {run['cpu']['total']['uss_mb']}"),
        ("drop/reject/failure counters", json.dumps(run["counters"]) or "-"),
        ("UDP kernel drops", run["udp_kernel_drops"]),
        ("verdict", run.get("verdict", "-")),
    ]  # fmt: skip
    if "e2e" in run:
        rows.append(("end to end", json.dumps(run["e2e"])))
    for name, value in rows:
        table.add_row(name, str(value))
    return table


def _ps(stats: dict[str, Any]) -> str:
    keys = [k for k in ("p50_s", "p95_s", "p99_s") if k in stats]
    return " / ".join(str(stats[k]) for k in keys) + " s" if keys else "-"


def _process_table(cpu: dict[str, Any], title: str) -> Table:
    table = Table(
        Column("process", no_wrap=True), "n", "CPU s", "cores", "us/line", "RSS MB", "USS MB",
        "peak RSS MB",
        title=f"{title}, {cpu['window_s']} s",
    )  # fmt: skip
    for row in [*cpu["processes"], cpu["total"]]:
        table.add_row(
            row["process"], str(row["count"]), str(row["cpu_s"]), str(row["cores"]),
            str(row["us_per_line"]), str(row["rss_mb"]), str(row["uss_mb"]),
            str(row["peak_rss_mb"]),
        )  # fmt: skip
    return table


def _profile_table(name: str, prof: dict[str, Any]) -> Table:
    table = Table(
        "function (own time)", "%", title=f"py-spy: {name}, {prof.get('samples')} samples"
    )
    for row in prof.get("top", []):
        table.add_row(row["function"], str(row["own_pct"]))
    if "error" in prof:
        table.add_row(prof["error"], "")
    return table


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--transport", choices=("tcp", "udp", "http"), default="tcp")
    ap.add_argument(
        "--rate", type=int, default=5_000, help="lines/s offered (0: as fast as possible)"
    )
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of sending (per step)")
    ap.add_argument("--drain", type=float, default=None, help="max seconds to wait for storage "
                    "after sending (default 60; 240 with --corpus-e2e)")  # fmt: skip
    ap.add_argument("--idle", type=float, default=20.0, help="seconds of idle measure (0: none)")
    ap.add_argument("--corpus", help="file of syslog lines (default: the shared 1 M-line corpus)")
    ap.add_argument("--corpus-e2e", action="store_true",
                    help="send the whole corpus once at max rate over TCP; time to all stored "
                    "and every attacker of truth.json found")  # fmt: skip
    ap.add_argument("--find-ceiling", action="store_true", help="step the rate up (see --steps)")
    ap.add_argument("--steps", help="comma list of rates for --find-ceiling")
    ap.add_argument("--profile", type=float, default=0.0,
                    help="py-spy every OPMAS process for this many seconds under load")  # fmt: skip
    ap.add_argument("--burst-every", type=float, default=5.0,
                    help="seconds between injected SSH brute-force bursts (0: none)")  # fmt: skip
    ap.add_argument("--http-batch", type=int, default=1000, help="lines per POST")
    ap.add_argument("--http-concurrency", type=int, default=4, help="POSTs in flight")
    ap.add_argument("--count-every", type=float, default=0.5, help="seconds between row counts")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--keep", action="store_true", help="keep the data dir and log")
    args = ap.parse_args(argv)
    if args.corpus_e2e:
        if args.transport != "tcp" or args.find_ceiling:
            ap.error("--corpus-e2e sends over TCP and is not a --find-ceiling")
        args.drain = 240.0 if args.drain is None else args.drain
    args.drain = 60.0 if args.drain is None else args.drain
    if args.profile and args.find_ceiling:
        ap.error("--profile profiles one run, not a --find-ceiling")
    return args


def main() -> None:
    args = parse_args()
    corpus = corpus_file(args.corpus)
    log.print(f"starting opmas up (corpus {corpus})")
    with OpmasUp(keep=args.keep) as up:
        log.print(f"opmas up ready: API {up.api_url}, data dir {up.data_dir}")
        result = asyncio.run(bench_main(args, up, corpus))
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print_report(result)


if __name__ == "__main__":
    main()
