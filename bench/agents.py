"""Agents benchmark: events/s the four domain agents sustain together, event-to-finding latency.

Starts PostgreSQL and nats-server embedded on a throwaway data dir (or uses --database-url and
--nats-url), runs the agents as `opmas up` does (the health agent, which reads every domain,
in one child process, the three others in another; --layout changes it), and publishes
ParsedBatch messages on logs.parsed.<domain> as the parser does (one batch per domain per 500
mixed events, at most 20 ms old) at --rate events/s for --duration s. No ingest, parser or
store in the loop.

The events are real parser output: each template line is parsed once at start, then its client
MAC or source IP is varied over --keys distinct values, round robin, so that the windows of the
THRESHOLD rules (wifi-auth-failure-rate, ssh-brute-force-*) and the novelty rule
(dhcp-new-client-mac) hold about --keys keys while staying below their thresholds.
Every --probe-every s a burst that must open a finding is injected, rotating over the four
agents (5 SSH bad passwords from a fresh IP, 25 invalid MICs from a fresh client, a conntrack
table full and a WAN down on a fresh router); its latency is from the publish of its last event
to the finding arriving on findings.>.

Reports the offered rate, the events each agent evaluated per second (from its heartbeats;
the health agent reads every domain, security reads security and other), consumer lag,
probe latency p50/p95/p99/max and misses, and CPU and RSS of the agents process, nats-server and
PostgreSQL over time.

  .venv/bin/python bench/agents.py                          # 20,000 events/s for 60 s
  .venv/bin/python bench/agents.py --rate 30000 --duration 30 --json
  .venv/bin/python bench/agents.py --find-max --rate 10000  # +25 % per step until it falls behind
  .venv/bin/python bench/agents.py --layout split           # one process per agent
  .venv/bin/python bench/agents.py --profile 200000         # in-process cProfile of the rules
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import os
import pstats
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import psutil

from opmas.agents.registry import AGENTS
from opmas.bus.connect import Bus, connect_bus
from opmas.bus.publish import Publisher
from opmas.bus.streams import ensure_streams
from opmas.messages import (
    ParsedBatch,
    ParsedEvent,
    RawLog,
    encode,
    finding_decoder,
    iso_utc,
    new_id,
)
from opmas.settings import Settings

OPMAS = str(Path(sys.executable).parent / "opmas")
READY_MARK = "ready    "
BATCH = 500  # events per parser input batch, split by domain as the parser does
FLUSH_S = 0.02
PMAC = "0e:ee:ee:ee:ee:ee"  # placeholders replaced per event
PIP = "198.18.254.254"
HEADER = "<{pri}>Nov 21 10:00:00 bench-r0000 "

FIREWALL_LINE = (
    "<4>kernel: [86412.112240] reject wan in: IN=eth1 OUT= MAC=00:11:22:33:44:55:66:77:88:99:aa:bb"
    ":08:00 SRC={ip} DST=198.51.100.2 LEN=40 TOS=0x00 PREC=0x00 TTL=243 ID=54321 PROTO=TCP"
    " SPT=44321 DPT=22 WINDOW=1024 RES=0x00 SYN URGP=0"
)

# (weight %, domain, event, key kind, PRI, program: message) as OpenWRT logs them
TEMPLATES: list[tuple[float, str, str, str | None, str]] = [
    (
        8,
        "wifi",
        "sta_authenticated",
        "mac",
        "<30>hostapd: phy0-ap0: STA {mac} IEEE 802.11: authenticated",
    ),
    (
        8,
        "wifi",
        "sta_associated",
        "mac",
        "<30>hostapd: phy0-ap0: STA {mac} IEEE 802.11: associated (aid 3)",
    ),
    (
        6,
        "wifi",
        "ap_sta_connected",
        "mac",
        "<29>hostapd: phy0-ap0: AP-STA-CONNECTED {mac} auth_alg=open",
    ),
    (6, "wifi", "ap_sta_disconnected", "mac", "<29>hostapd: phy0-ap0: AP-STA-DISCONNECTED {mac}"),
    (
        8,
        "wifi",
        "wpa_pairwise_handshake_completed",
        "mac",
        "<30>hostapd: phy1-ap0: STA {mac} WPA: pairwise key handshake completed (RSN)",
    ),
    (
        9,
        "wifi",
        "wpa_invalid_mic",
        "mac",
        "<30>hostapd: phy0-ap0: STA {mac} WPA: invalid MIC in msg 2/4 of 4-Way Handshake",
    ),
    (
        5,
        "other",
        "dhcpack",
        "mac",
        "<30>dnsmasq-dhcp[1141]: DHCPACK(br-lan) {ip} {mac} android-5f3a",
    ),
    (5, "other", "dhcprequest", "mac", "<30>dnsmasq-dhcp[1141]: DHCPREQUEST(br-lan) {ip} {mac}"),
    (
        7,
        "other",
        "dns_query",
        "ip",
        "<30>dnsmasq[1141]: query[A] connectivitycheck.gstatic.com from {ip}",
    ),
    (
        3,
        "other",
        "dns_answer",
        None,
        "<30>dnsmasq[1141]: reply connectivitycheck.gstatic.com is 142.250.74.99",
    ),
    (2, "security", "ssh_connection", "ip", "<86>dropbear[5000]: Child connection from {ip}:40000"),
    (
        9,
        "security",
        "ssh_bad_password",
        "ip",
        "<84>dropbear[5000]: Bad password attempt for 'root' from {ip}:40000",
    ),
    (
        2,
        "security",
        "ssh_exit_before_auth",
        "ip",
        "<86>dropbear[5000]: Exit before auth from <{ip}:40000>: (user 'root', 1 fails):"
        " Exited normally",
    ),
    (2, "security", "firewall_packet", "ip", FIREWALL_LINE),
    (2, "wan", "interface_up", None, "<29>netifd: Interface 'wan' is now up"),
    (3, "wan", "udhcpc_message", None, "<30>udhcpc: udhcpc: sending renew to 100.64.0.1"),
    (2, "wan", "ppp_local_ip", None, "<30>pppd[2345]: local  IP address 100.64.1.2"),
    (
        3,
        "wan",
        "udhcpc_message",
        None,
        "<30>udhcpc: udhcpc: lease of 100.64.3.7 obtained, lease time 3600",
    ),
    (4, "health", "device_link_state", None, "<29>netifd: Network device 'lan2' link is up"),
    (6, "health", "kernel_message", None, "<6>kernel: [86412.112240] phy0-ap0: Link is up"),
]

# probes: (agent, rule that must fire, events per burst, PRI, program: message)
PROBES: list[tuple[str, str, int, str]] = [
    (
        "SecurityAgent",
        "ssh-brute-force-fast",
        5,
        "<84>dropbear[5000]: Bad password attempt for 'root' from {ip}:40000",
    ),
    (
        "WiFiAgent",
        "wifi-auth-failure-rate",
        25,
        "<30>hostapd: phy0-ap0: STA {mac} WPA: invalid MIC in msg 2/4 of 4-Way Handshake",
    ),
    (
        "HealthAgent",
        "conntrack-table-full",
        1,
        "<4>kernel: [86412.112240] nf_conntrack: nf_conntrack: table full, dropping packet",
    ),
    ("WanAgent", "wan-interface-down", 1, "<29>netifd: Interface 'wan' is now down"),
]


def mac_of(k: int) -> str:
    return f"02:be:{(k >> 16) & 255:02x}:{(k >> 8) & 255:02x}:{k & 255:02x}:01"


def ip_of(k: int) -> str:
    return f"10.{(k >> 16) & 255}.{(k >> 8) & 255}.{k & 255}"


@dataclass
class Template:
    """One parsed line whose MAC/IP placeholders are replaced per event."""

    domain: str
    proto: ParsedEvent
    substitute: tuple[str, ...]  # structured fields holding a placeholder
    keyed: str | None
    next_key: int = 0


def _parse(lines: list[str]) -> list[ParsedEvent]:
    from opmas.parser.engine import ParserEngine

    engine = ParserEngine.from_dirs([])
    raws = []
    for line in lines:
        pri, text = line[1:].split(">", 1)
        raws.append(
            RawLog(new_id(), time.time(), HEADER.format(pri=pri) + text, "udp", "192.0.2.1")
        )
    return engine.parse_many(raws)


def build_templates() -> tuple[list[Template], list[float]]:
    """Parse every template once; refuse to run if the parser no longer produces what we mean."""
    lines = [t[4].format(mac=PMAC, ip=PIP) for t in TEMPLATES]
    out, weights = [], []
    for (weight, domain, event, keyed, _), proto in zip(TEMPLATES, _parse(lines), strict=True):
        got = (proto.log_source_type, proto.structured_fields.get("event"))
        if got != (domain, event):
            raise SystemExit(f"template for {event} parsed as {got}: update bench/agents.py")
        fields = proto.structured_fields
        subst = tuple(
            k for k, v in fields.items() if isinstance(v, str) and (PMAC in v or PIP in v)
        )
        out.append(Template(domain, proto, subst, keyed))
        weights.append(weight)
    return out, weights


class Generator:
    """Mixed events with keys spread round robin over `keys` clients on `hosts` routers."""

    def __init__(self, keys: int, hosts: int, seed: int = 7) -> None:
        self.templates, weights = build_templates()
        self.keys = keys
        self.hosts = [f"bench-r{i:04d}" for i in range(hosts)]
        rnd = random.Random(seed)
        # a fixed shuffled sequence of template indexes: the exact mix, cheap to draw
        self._order = rnd.choices(range(len(self.templates)), weights, k=100_003)
        self._pos = 0
        self._rnd = rnd

    def events(self, count: int, now_iso: str) -> dict[str, list[ParsedEvent]]:
        """`count` events by domain, stamped `now_iso`."""
        by_domain: dict[str, list[ParsedEvent]] = {}
        order, templates, n = self._order, self.templates, len(self._order)
        for _ in range(count):
            tpl = templates[order[self._pos]]
            self._pos = (self._pos + 1) % n
            if tpl.keyed:
                k = tpl.next_key
                tpl.next_key = (k + 1) % self.keys
                host = self.hosts[k % len(self.hosts)]
                event = self._vary(tpl, mac_of(k), ip_of(k), host, now_iso)
            else:
                event = msgspec.structs.replace(
                    tpl.proto,
                    event_id=new_id(),
                    arrival_ts_utc=now_iso,
                    event_ts=now_iso,
                    hostname=self._rnd.choice(self.hosts),
                )
            by_domain.setdefault(tpl.domain, []).append(event)
        return by_domain

    @staticmethod
    def _vary(tpl: Template, mac: str, ip: str, host: str, now_iso: str) -> ParsedEvent:
        fields = dict(tpl.proto.structured_fields)
        for name in tpl.substitute:
            fields[name] = str(fields[name]).replace(PMAC, mac).replace(PIP, ip)
        return msgspec.structs.replace(
            tpl.proto,
            event_id=new_id(),
            arrival_ts_utc=now_iso,
            event_ts=now_iso,
            hostname=host,
            message=tpl.proto.message.replace(PMAC, mac).replace(PIP, ip),
            structured_fields=fields,
        )


class Probes:
    """Bursts that must each open one finding; latency from the last event's publish."""

    def __init__(self) -> None:
        protos = _parse([p[3].format(mac=PMAC, ip=PIP) for p in PROBES])
        self.kinds = list(zip(PROBES, protos, strict=True))
        self.sent: dict[tuple[str, str], tuple[str, float]] = {}  # (rule, token) -> agent, ts
        self.latency: dict[str, list[float]] = {p[0]: [] for p in PROBES}
        self.late: dict[str, int] = Counter()
        self.other_findings: Counter[str] = Counter()
        self._n = 0

    def next_burst(self) -> tuple[str, ParsedBatch, tuple[str, str], str]:
        """(domain, batch, (rule, token), agent) of the next probe."""
        (agent, rule, count, _), proto = self.kinds[self._n % len(self.kinds)]
        self._n += 1
        n = self._n
        mac = f"06:00:00:{(n >> 16) & 255:02x}:{(n >> 8) & 255:02x}:{n & 255:02x}"
        ip = f"172.{16 + ((n >> 16) & 15)}.{(n >> 8) & 255}.{n & 255}"
        host = "bench-probe" if agent in ("SecurityAgent", "WiFiAgent") else f"probe-{n}"
        token = {"SecurityAgent": ip, "WiFiAgent": mac}.get(agent, host)
        now_iso = iso_utc(time.time())
        fields = {
            k: v.replace(PMAC, mac).replace(PIP, ip) if isinstance(v, str) else v
            for k, v in proto.structured_fields.items()
        }
        events = [
            msgspec.structs.replace(
                proto,
                event_id=new_id(),
                arrival_ts_utc=now_iso,
                event_ts=now_iso,
                hostname=host,
                message=proto.message.replace(PMAC, mac).replace(PIP, ip),
                structured_fields=dict(fields),
            )
            for _ in range(count)
        ]
        return proto.log_source_type, ParsedBatch(new_id(), events), (rule, token), agent

    def on_finding(self, data: bytes, received: float) -> None:
        finding = finding_decoder.decode(data)
        parts = str(finding.details.get("key", "")).split("|")
        for part in parts:
            hit = self.sent.pop((finding.rule_name, part), None)
            if hit is not None:
                agent, sent_at = hit
                self.latency[agent].append(received - sent_at)
                return
        if finding.count <= 1 or finding.rule_name not in {p[1] for p in PROBES}:
            self.other_findings[finding.rule_name] += 1

    def summary(self) -> dict[str, Any]:
        every = sorted(x for xs in self.latency.values() for x in xs)
        per_agent = {a: quantiles(sorted(xs)) for a, xs in self.latency.items()}
        missed = Counter(agent for agent, _ in self.sent.values())
        return {
            "sent": sum(len(xs) for xs in self.latency.values()) + len(self.sent),
            "missed": len(self.sent),
            "missed_by_agent": dict(missed),
            "all": quantiles(every),
            "by_agent": per_agent,
        }


def quantiles(ordered: list[float]) -> dict[str, Any]:
    if not ordered:
        return {"n": 0}

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 4)

    return {
        "n": len(ordered),
        "p50_s": pick(0.5),
        "p95_s": pick(0.95),
        "p99_s": pick(0.99),
        "max_s": round(ordered[-1], 4),
    }


@dataclass
class Watched:
    """CPU and RSS of one process tree, sampled."""

    name: str
    root: psutil.Process
    tree: bool = True  # with its children
    cpu0: float = 0.0
    last: tuple[float, float] = (0.0, 0.0)  # (monotonic, cpu seconds)
    samples: list[dict[str, float]] = field(default_factory=list)

    def procs(self) -> list[psutil.Process]:
        try:
            return [self.root, *(self.root.children(recursive=True) if self.tree else [])]
        except psutil.NoSuchProcess:
            return []

    def cpu_rss(self) -> tuple[float, int]:
        cpu, rss = 0.0, 0
        for p in self.procs():
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                cpu += t.user + t.system
                rss += p.memory_info().rss
        return cpu, rss

    def begin(self) -> None:
        cpu, _ = self.cpu_rss()
        self.cpu0 = cpu
        self.last = (time.monotonic(), cpu)
        self.samples = []

    def sample(self, elapsed: float) -> None:
        cpu, rss = self.cpu_rss()
        now = time.monotonic()
        cores = (cpu - self.last[1]) / max(1e-6, now - self.last[0])
        self.last = (now, cpu)
        self.samples.append(
            {"t_s": round(elapsed, 1), "cores": round(cores, 2), "rss_mb": rss / 2**20}
        )

    def report(self, seconds: float) -> dict[str, Any]:
        cpu, _ = self.cpu_rss()
        rss = [s["rss_mb"] for s in self.samples] or [0.0]
        return {
            "cpu_cores_avg": round((cpu - self.cpu0) / seconds, 2),
            "cpu_cores_peak": max((s["cores"] for s in self.samples), default=0.0),
            "rss_mb_start": round(rss[0], 1),
            "rss_mb_end": round(rss[-1], 1),
            "rss_mb_peak": round(max(rss), 1),
        }


@dataclass
class Beats:
    """The agents' heartbeats: cumulative events evaluated, keys held, domains read."""

    last: dict[str, dict[str, Any]] = field(default_factory=dict)
    history: dict[str, list[tuple[float, int]]] = field(default_factory=dict)

    def on_beat(self, data: bytes) -> None:
        beat = json.loads(data)
        self.last[beat["agent"]] = beat
        self.history.setdefault(beat["agent"], []).append((beat["ts"], beat["events"]))

    def events_at(self, agent: str, ts: float) -> tuple[float, int]:
        """The last (ts, events) reported at or before `ts`."""
        found = (ts, 0)
        for beat_ts, events in self.history.get(agent, []):
            if beat_ts <= ts:
                found = (beat_ts, events)
        return found


@contextlib.asynccontextmanager
async def servers(args: argparse.Namespace, tmp: Path) -> AsyncIterator[tuple[str, str]]:
    """(database URL, NATS URL): the given ones, or embedded servers on `tmp`."""
    from opmas.db import migrate
    from opmas.embedded import embedded_services, remove_outside_cluster

    given = {"database_url": args.database_url, "nats_url": args.nats_url}
    settings = Settings(
        data_dir=tmp / "servers", env="dev", **{k: v for k, v in given.items() if v}
    )
    try:
        async with embedded_services(settings, start=True) as endpoints:
            await migrate.upgrade(endpoints.database_url)
            async with connect_bus(endpoints.nats_url, settings.bus, name="bench-setup") as bus:
                await ensure_streams(bus)
            yield endpoints.database_url, endpoints.nats_url
    finally:  # run as root, the cluster is in /var/lib/opmas
        remove_outside_cluster(settings.data_dir)


LAYOUTS = {  # how the four agents are spread over processes
    "up": [["agent-health"], ["agent-wifi", "agent-security", "agent-wan"]],  # as `opmas up`
    "one": [["agents"]],  # `opmas run agents`: all four in one process
    "split": [[i.component] for i in AGENTS.values()],  # one process per agent
}


@contextlib.asynccontextmanager
async def agent_processes(
    db_url: str, nats_url: str, tmp: Path, *, layout: str
) -> AsyncIterator[list[tuple[str, psutil.Process]]]:
    """The agents as child processes laid out as `layout` (see LAYOUTS), once ready."""
    async with contextlib.AsyncExitStack() as stack:
        procs = []
        for names in LAYOUTS[layout]:  # one at a time: the first one loads the rule pack
            label = "+".join(names)
            procs.append(
                (label, await stack.enter_async_context(_child(names, db_url, nats_url, tmp)))
            )
        yield procs


@contextlib.asynccontextmanager
async def _child(
    names: list[str], db_url: str, nats_url: str, tmp: Path
) -> AsyncIterator[psutil.Process]:
    name = "+".join(names)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPMAS_")}
    env.update(
        OPMAS_DATABASE_URL=db_url,
        OPMAS_NATS_URL=nats_url,
        OPMAS_DATA_DIR=str(tmp / name),
        OPMAS_ENV="dev",
        OPMAS_AGENTS__HEARTBEAT_S="1",
    )
    log_path = tmp / f"{name}.log"
    proc = await asyncio.create_subprocess_exec(
        OPMAS,
        "run",
        *names,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    waiting = {i.component for i in AGENTS.values()} if names == ["agents"] else set(names)
    ready = asyncio.Event()

    async def relay() -> None:
        assert proc.stdout is not None  # stdout=PIPE
        with log_path.open("wb") as out:
            async for raw in proc.stdout:
                out.write(raw)
                out.flush()
                line = raw.decode(errors="replace")
                if line.startswith(READY_MARK):
                    waiting.discard(line[len(READY_MARK) :].split()[0])
                    if not waiting:
                        ready.set()

    relaying = asyncio.create_task(relay())
    try:
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait({waiter, relaying}, timeout=180, return_when="FIRST_COMPLETED")
        waiter.cancel()
        if not ready.is_set():
            raise SystemExit(f"{name} not ready; log:\n{log_path.read_text()[-3000:]}")
        print(f"{name} ready (pid {proc.pid}), log: {log_path}", file=sys.stderr)
        yield psutil.Process(proc.pid)
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 60)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        with contextlib.suppress(asyncio.CancelledError):
            await relaying


def server_watches(agents: list[tuple[str, psutil.Process]]) -> list[Watched]:
    """The agents process(es), and the nats-server and postgres we started (if embedded)."""
    found = [Watched(name, proc) for name, proc in agents]
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            cmd = " ".join(child.cmdline())
            if "nats-server" in cmd:
                found.append(Watched("nats-server", child))
            elif "postgres" in cmd and "-D" in cmd:
                found.append(Watched("postgres", child))
    found.append(Watched("bench (publisher)", psutil.Process(), tree=False))
    return found


class Run:
    """Publishes the load and the probes at one rate, and measures one step."""

    def __init__(self, bus: Bus, gen: Generator, probes: Probes, beats: Beats, args: Any) -> None:
        self.bus, self.gen, self.probes, self.beats, self.args = bus, gen, probes, beats, args
        self.published: Counter[str] = Counter()  # events by domain
        self.messages = 0

    async def _send(self, pub: Publisher, domain: str, batch: ParsedBatch) -> None:
        await pub.publish(
            self.bus.subjects.logs_parsed(domain), encode(batch), msg_id=batch.batch_id
        )
        self.published[domain] += len(batch.events)
        self.messages += 1

    async def lag(self) -> dict[str, int]:
        stream = self.bus.subjects.logs_parsed_stream.name
        out = {}
        for ident in AGENTS.values():
            try:
                info = await self.bus.js.consumer_info(stream, ident.component)
                out[ident.name] = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
            except Exception:  # a consumer not created yet counts as unknown
                out[ident.name] = -1
        return out

    async def step(self, rate: int, duration: float, watches: list[Watched]) -> dict[str, Any]:
        pub = Publisher(self.bus, max_pending=256)
        for w in watches:
            w.begin()
        sent0 = sum(self.published.values())
        pub0 = Counter(self.published)
        lags: list[dict[str, Any]] = []
        keys: list[dict[str, Any]] = []
        start_wall, started = time.time(), time.monotonic()
        next_probe = started + 1.0
        next_sample = started + self.args.sample_every
        sent = 0
        while (now := time.monotonic()) - started < duration:
            due = int((now - started) * rate) - sent
            now_iso = iso_utc(time.time())
            while due > 0:
                count = min(due, BATCH)
                for domain, events in self.gen.events(count, now_iso).items():
                    await self._send(pub, domain, ParsedBatch(new_id(), events))
                sent += count
                due -= count
            if now >= next_probe:
                domain, batch, key, agent = self.probes.next_burst()
                await self._send(pub, domain, batch)
                self.probes.sent[key] = (agent, time.time())
                next_probe = now + self.args.probe_every
            await pub.flush()
            if now >= next_sample:
                elapsed = now - started
                for w in watches:
                    w.sample(elapsed)
                lag = await self.lag()
                lags.append({"t_s": round(elapsed, 1), **lag})
                keys.append(
                    {"t_s": round(elapsed, 1)}
                    | {a: b.get("keys") for a, b in sorted(self.beats.last.items())}
                )
                next_sample = now + self.args.sample_every
            await asyncio.sleep(max(0.0, FLUSH_S - (time.monotonic() - now)))
        send_s = time.monotonic() - started
        end_wall = time.time()
        lag_at_end = await self.lag()
        drain_s = await self._drain(pub0)
        await asyncio.sleep(1.5)  # the last findings and heartbeats
        for w in watches:
            w.sample(time.monotonic() - started)
        total_s = time.monotonic() - started
        return self._result(
            rate, send_s, sum(self.published.values()) - sent0, pub0, start_wall, end_wall,
            lag_at_end, drain_s, lags, keys, watches, total_s,
        )  # fmt: skip

    def expected(self, agent: str) -> int:
        domains = self.beats.last.get(agent, {}).get("domains", [])
        return sum(self.published[d] for d in domains)

    async def _drain(self, pub0: Counter[str]) -> float | None:
        """Seconds until every agent evaluated every published event; None past --drain."""
        started = time.monotonic()
        while time.monotonic() - started < self.args.drain:
            lag = await self.lag()
            if all(v == 0 for v in lag.values()):
                return round(time.monotonic() - started, 2)
            await asyncio.sleep(0.2)
        return None

    def _result(
        self,
        rate: int,
        send_s: float,
        sent: int,
        pub0: Counter[str],
        start_wall: float,
        end_wall: float,
        lag_at_end: dict[str, int],
        drain_s: float | None,
        lags: list[dict[str, Any]],
        keys: list[dict[str, Any]],
        watches: list[Watched],
        total_s: float,
    ) -> dict[str, Any]:
        per_agent = {}
        for ident in AGENTS.values():
            t0, e0 = self.beats.events_at(ident.name, start_wall)
            t1, e1 = self.beats.events_at(ident.name, end_wall)
            beat = self.beats.last.get(ident.name, {})
            domains = beat.get("domains", [])
            offered = sum(self.published[d] - pub0[d] for d in domains)
            per_agent[ident.name] = {
                "domains": domains,
                "offered_events_per_s": round(offered / send_s),
                "evaluated_events_per_s": round((e1 - e0) / (t1 - t0)) if t1 > t0 else None,
                "evaluated_total": beat.get("events"),
                "expected_total": self.expected(ident.name),
                "keys": beat.get("keys"),
                "evicted": beat.get("evicted"),
                "lag_msgs_at_end": lag_at_end.get(ident.name),
            }
        evaluated = [a["evaluated_events_per_s"] or 0 for a in per_agent.values()]
        offered_eval = sum(a["offered_events_per_s"] for a in per_agent.values())
        return {
            "rate_target": rate,
            "send_s": round(send_s, 1),
            "published_events": sent,
            "published_events_per_s": round(sent / send_s),
            "published_by_domain": {d: self.published[d] - pub0[d] for d in sorted(self.published)},
            "messages_per_s": None,
            "evaluations_offered_per_s": offered_eval,
            "evaluations_done_per_s": sum(evaluated),
            # every published event evaluated by every agent reading its domain, per second
            "sustained_events_per_s": round(
                sent
                / send_s
                * min(
                    1.0,
                    *(
                        done / max(1, a["offered_events_per_s"])
                        for done, a in zip(evaluated, per_agent.values(), strict=True)
                    ),
                )
            ),
            "kept_up": drain_s is not None and drain_s <= 2.0,
            "drain_s": drain_s,
            "agents": per_agent,
            "probes": self.probes.summary(),
            "findings_other_than_probes": dict(self.probes.other_findings),
            "processes": {w.name: w.report(total_s) for w in watches},
            "rss_mb_over_time": {
                w.name: [(s["t_s"], round(s["rss_mb"], 1)) for s in w.samples]
                for w in watches
                if w.name.startswith("agent")
            },
            "cpu_cores_over_time": {
                w.name: [(s["t_s"], s["cores"]) for s in w.samples] for w in watches
            },
            "lag_msgs_over_time": lags,
            "keys_over_time": keys,
        }


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    gen = Generator(args.keys, args.hosts)
    probes = Probes()
    beats = Beats()
    with tempfile.TemporaryDirectory(prefix="opmas-bench-agents-") as tmp_name:
        tmp = Path(tmp_name)
        async with (
            servers(args, tmp) as (db_url, nats_url),
            agent_processes(db_url, nats_url, tmp, layout=args.layout) as agents,
            connect_bus(nats_url, Settings(env="dev").bus, name="bench-agents") as bus,
        ):

            async def on_finding(msg: Any) -> None:
                probes.on_finding(msg.data, time.time())

            async def on_beat(msg: Any) -> None:
                beats.on_beat(msg.data)

            await bus.nc.subscribe(bus.subjects.findings_all, cb=on_finding)
            for ident in AGENTS.values():
                await bus.nc.subscribe(bus.subjects.heartbeat(ident.name), cb=on_beat)
            await _until(lambda: len(beats.last) == len(AGENTS), 30)
            bench = Run(bus, gen, probes, beats, args)
            watches = server_watches(agents)
            results = []
            rate = args.rate
            while True:
                print(f"step: {rate} events/s for {args.duration} s", file=sys.stderr)
                result = await _step(bench, rate, args.duration, watches)
                results.append(result)
                print(render(result), file=sys.stderr)
                if not args.find_max or not _healthy(result):
                    break
                rate = int(rate * 1.25)
            return results


async def _step(bench: Run, rate: int, duration: float, watches: list[Watched]) -> dict[str, Any]:
    result = await bench.step(rate, duration, watches)
    result["messages_per_s"] = round(bench.messages / max(1.0, result["send_s"]))
    bench.messages = 0
    return result


def _healthy(result: dict[str, Any]) -> bool:
    p99 = result["probes"]["all"].get("p99_s")
    return bool(result["kept_up"]) and p99 is not None and p99 < 1.0


async def _until(check: Any, within_s: float) -> None:
    """Poll `check` (set by NATS callbacks, so no Event to wait on) for up to `within_s`."""
    for _ in range(int(within_s / 0.2)):
        if check():
            return
        await asyncio.sleep(0.2)


def render(r: dict[str, Any]) -> str:
    """The readable report of one step."""
    p = r["probes"]
    lines = [
        f"offered: {r['published_events_per_s']:,} events/s (target {r['rate_target']:,}) "
        f"over {r['send_s']} s, {r['published_events']:,} events in "
        f"{r['messages_per_s']} msgs/s; by domain {r['published_by_domain']}",
        f"sustained by all four agents: {r['sustained_events_per_s']:,} events/s; "
        f"evaluations: offered {r['evaluations_offered_per_s']:,}/s, "
        f"done {r['evaluations_done_per_s']:,}/s; kept up: {r['kept_up']} "
        f"(drained {r['drain_s']} s after the end)",
    ]
    for name, a in r["agents"].items():
        lines.append(
            f"  {name:14} reads {','.join(a['domains']):34}"
            f" offered {a['offered_events_per_s']:>7,}/s"
            f"  done {a['evaluated_events_per_s'] or 0:>7,}/s  lag@end {a['lag_msgs_at_end']} msgs"
            f"  keys {a['keys']} evicted {a['evicted']}"
        )
    q = p["all"]
    lines.append(
        f"probe latency event->finding: n={q.get('n')} p50 {q.get('p50_s')} s p95 "
        f"{q.get('p95_s')} s p99 {q.get('p99_s')} s max {q.get('max_s')} s; "
        f"missed {p['missed']} of {p['sent']} {p['missed_by_agent'] or ''}"
    )
    for agent, aq in p["by_agent"].items():
        lines.append(f"  {agent:14} p50 {aq.get('p50_s')} p99 {aq.get('p99_s')} n={aq.get('n')}")
    lines.append(f"other findings (background traffic): {r['findings_other_than_probes']}")
    for name, w in r["processes"].items():
        lines.append(
            f"  {name:18} cpu avg {w['cpu_cores_avg']} cores (peak {w['cpu_cores_peak']}), "
            f"rss start {w['rss_mb_start']} end {w['rss_mb_end']} peak {w['rss_mb_peak']} MB"
        )
    for name, rss in r["rss_mb_over_time"].items():
        points = ", ".join(f"{t:.0f}:{m:.0f}" for t, m in rss)
        lines.append(f"{name} rss over time (s:MB): {points}")
    if r["keys_over_time"]:
        lines.append(f"keys at end of sending: {r['keys_over_time'][-1]}")
    return "\n".join(lines)


def profile(count: int, keys: int) -> None:
    """cProfile of the four agents' rule evaluation in this process (decode + evaluate + fold)."""
    from opmas.agents.engine import FindingBook, RuleSet, agent_specs
    from opmas.agents.pack import load_pack
    from opmas.messages import parsed_batch_decoder

    gen = Generator(keys, 1000)
    now = time.time()
    blobs: list[tuple[str, bytes]] = []
    for i in range(0, count, BATCH):
        stamp = iso_utc(now + i / 20_000)
        for domain, events in gen.events(min(BATCH, count - i), stamp).items():
            blobs.append((domain, encode(ParsedBatch(new_id(), events))))
    specs = load_pack()

    def evaluate_all() -> tuple[int, float]:
        agents = []
        for ident in AGENTS.values():  # fresh windows each pass, as a new agent has
            agents.append((ident, RuleSet.build(agent_specs(specs, ident.name)), FindingBook()))
        evaluations = 0
        started = time.perf_counter()
        for domain, blob in blobs:
            for ident, ruleset, book in agents:
                if domain not in ruleset.domains:
                    continue
                for event in parsed_batch_decoder.decode(blob).events:
                    evaluations += 1
                    for loaded, hit in ruleset.evaluate(event):
                        book.fold(loaded.spec, hit, event, ident.domain)
        return evaluations, time.perf_counter() - started

    for label in ("plain", "under cProfile"):
        prof = cProfile.Profile()
        if label != "plain":
            prof.enable()
        evaluations, seconds = evaluate_all()
        prof.disable()
        print(
            f"{label}: {count:,} events, {evaluations:,} evaluations in {seconds:.2f} s: "
            f"{count / seconds:,.0f} events/s, {evaluations / seconds:,.0f} evaluations/s, one core"
        )
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(25)
    print(out.getvalue())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rate", type=int, default=20_000, help="events per second offered")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of sending (per step)")
    ap.add_argument("--keys", type=int, default=100_000, help="distinct client MACs / source IPs")
    ap.add_argument("--hosts", type=int, default=1000, help="distinct router hostnames")
    ap.add_argument("--probe-every", type=float, default=0.5, help="seconds between probes")
    ap.add_argument("--sample-every", type=float, default=3.0, help="seconds between samples")
    ap.add_argument("--drain", type=float, default=60.0, help="max seconds to wait for lag 0")
    ap.add_argument("--find-max", action="store_true", help="raise --rate 25 %% per step")
    ap.add_argument(
        "--layout",
        choices=sorted(LAYOUTS),
        default="up",
        help="agent processes: `up` as `opmas up` runs them (health alone, the three others"
        " together; default), `one` (`opmas run agents`), `split` (one per agent)",
    )
    ap.add_argument("--database-url", help="external PostgreSQL (127.0.0.1); default embedded")
    ap.add_argument("--nats-url", help="external nats-server (127.0.0.1); default embedded")
    ap.add_argument("--profile", type=int, metavar="N", help="only profile N events in-process")
    ap.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    args = ap.parse_args()
    if args.profile:
        profile(args.profile, args.keys)
        return
    results = asyncio.run(run(args))
    if args.json:
        print(json.dumps(results if args.find_max else results[0], indent=2))
    else:
        for result in results:
            print(render(result))


if __name__ == "__main__":
    main()
