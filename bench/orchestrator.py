"""Orchestrator benchmark: findings/s stored, correlated and answered; finding-to-action latency.

Starts PostgreSQL and nats-server embedded on a throwaway data dir (or uses --database-url and
--nats-url), runs the orchestrator component in this process as `opmas up` does, and publishes
--count findings on findings.<domain> at --rate findings/s: a mix of SSH brute force from
--attackers IPs over --routers routers (one block proposal each, attacker incidents that become
fleet-wide), hostapd crashes (an auto action), WAN flapping (an auto notify) and findings no
playbook answers; 10 % are burst updates of an earlier finding (same id, larger count).

Reports findings/s stored (publish start to the last row in `findings`), the latency from a
finding's publish to its action's message on actions.> (p50/p95/p99/max), and the counts of
findings, incidents and actions, which must match what was sent.

  .venv/bin/python bench/orchestrator.py                       # 5,000 findings at 500/s
  .venv/bin/python bench/orchestrator.py --count 20000 --rate 2000 --json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from opmas.bus.connect import Bus, connect_bus
from opmas.bus.publish import Publisher
from opmas.bus.streams import ensure_streams
from opmas.db import migrate
from opmas.db.engine import create_engine
from opmas.embedded import embedded_services, remove_outside_cluster
from opmas.messages import Finding, action_decoder, iso_utc
from opmas.models import Device, Incident, IntendedAction
from opmas.models import Finding as FindingRow
from opmas.orchestrator.service import Orchestrator
from opmas.settings import Settings

KINDS = (  # (weight, domain, agent, finding type, rule, answered by a playbook)
    (40, "security", "SecurityAgent", "SshBruteForce", "ssh-brute-force-fast", True),
    (10, "wifi", "WiFiAgent", "HostapdCrash", "wifi-hostapd-crash", True),
    (10, "wan", "WanAgent", "LinkFlapping", "wan-link-flapping", True),
    (40, "health", "HealthAgent", "OutOfMemory", "oom-killer", False),
)


def make_finding(rng: random.Random, args: argparse.Namespace, n: int) -> Finding:
    kind = rng.choices(KINDS, weights=[k[0] for k in KINDS])[0]
    _, domain, agent, ftype, rule, _ = kind
    router = rng.randrange(args.routers)
    details: dict[str, object] = {"hostname": f"r{router}", "count": 5}
    if domain == "security":
        details["ip"] = f"203.0.{rng.randrange(args.attackers) // 250}.{rng.randrange(250) + 1}"
    if domain == "wan":
        details["interface"] = "wan"
    return Finding(
        finding_id=str(uuid.uuid4()),
        agent_name=agent,
        finding_ts_utc=iso_utc(time.time() - 1),
        device_hostname=f"r{router}",
        device_ip=f"10.{router // 250}.{router % 250}.1",
        severity="error",
        finding_type=ftype,
        rule_name=rule,
        description=f"{ftype} #{n}",
        details=details,
        evidence_event_ids=[str(uuid.uuid4())],
        domain=domain,
        count=5,
    )


@contextlib.asynccontextmanager
async def servers(args: argparse.Namespace, tmp: Path) -> AsyncIterator[Settings]:
    given = {"database_url": args.database_url, "nats_url": args.nats_url}
    base = Settings(data_dir=tmp / "servers", env="dev", **{k: v for k, v in given.items() if v})
    try:
        async with embedded_services(base, start=True) as endpoints:
            await migrate.upgrade(endpoints.database_url)
            yield base.model_copy(
                update={
                    "database_url": SecretStr(endpoints.database_url),
                    "nats_url": endpoints.nats_url,
                }
            )
    finally:  # run as root, the cluster is in /var/lib/opmas
        remove_outside_cluster(base.data_dir)


async def publish_all(
    bus: Bus, findings: list[Finding], rate: float, sent: dict[str, float]
) -> None:
    publisher = Publisher(bus)
    start = time.perf_counter()
    for i, finding in enumerate(findings):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent.setdefault(finding.finding_id, time.perf_counter())
        await publisher.publish(
            bus.subjects.findings(finding.domain),
            msgspec.json.encode(finding),
            msg_id=f"{finding.finding_id}:{finding.count}",
        )
    await publisher.flush()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(7)
    findings = [make_finding(rng, args, n) for n in range(args.count)]
    for i in range(0, args.count, 10):  # burst updates of earlier findings
        findings[i] = msgspec.structs.replace(findings[max(i - 5, 0)], count=9)
    unique = {f.finding_id for f in findings}
    with tempfile.TemporaryDirectory(prefix="opmas-bench-orch-") as tmp:
        async with servers(args, Path(tmp)) as settings:
            assert settings.database_url is not None
            engine = create_engine(settings.database_url.get_secret_value())
            async with engine.begin() as conn:
                await conn.execute(
                    Device.__table__.insert(),
                    [
                        {"hostname": f"r{n}", "ip_address": f"10.{n // 250}.{n % 250}.1"}
                        for n in range(args.routers)
                    ],
                )
            async with connect_bus(str(settings.nats_url), settings.bus, name="bench") as bus:
                await ensure_streams(bus)
                latencies: list[float] = []
                sent: dict[str, float] = {}

                async def on_action(msg: Any) -> None:
                    action = action_decoder.decode(msg.data)
                    if action.finding_uuid in sent and action.state in ("pending", "approved"):
                        latencies.append(time.perf_counter() - sent[action.finding_uuid])

                sub = await bus.nc.subscribe(bus.subjects.actions_all, cb=on_action)
                stop = asyncio.Event()
                async with Orchestrator(engine, bus, settings) as orch:
                    task = asyncio.create_task(orch.run(stop))
                    began = time.perf_counter()
                    await publish_all(bus, findings, args.rate, sent)
                    published = time.perf_counter() - began
                    stored = 0
                    while stored < len(unique):
                        await asyncio.sleep(0.2)
                        async with AsyncSession(engine) as session:
                            stored = (
                                await session.scalar(select(func.count()).select_from(FindingRow))
                                or 0
                            )
                        if time.perf_counter() - began > args.timeout:
                            break
                    elapsed = time.perf_counter() - began
                    await asyncio.sleep(1.0)
                    stop.set()
                    await task
                await sub.unsubscribe()
                async with AsyncSession(engine) as session:
                    incidents = await session.scalar(select(func.count()).select_from(Incident))
                    actions = await session.scalar(select(func.count()).select_from(IntendedAction))
            await engine.dispose()
    latencies.sort()

    def pct(p: float) -> float:
        return (
            round(latencies[min(len(latencies) - 1, int(p * len(latencies)))], 4)
            if latencies
            else 0.0
        )

    return {
        "findings_published": len(findings),
        "unique_findings": len(unique),
        "stored": stored,
        "publish_s": round(published, 2),
        "elapsed_s": round(elapsed, 2),
        "findings_per_s": round(len(findings) / elapsed, 1),
        "incidents": incidents,
        "actions": actions,
        "action_latency_s": {
            "n": len(latencies),
            "p50": pct(0.50),
            "p95": pct(0.95),
            "p99": pct(0.99),
            "max": round(latencies[-1], 4) if latencies else 0.0,
            "mean": round(statistics.fmean(latencies), 4) if latencies else 0.0,
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--count", type=int, default=5000)
    ap.add_argument("--rate", type=float, default=500.0, help="findings/s offered")
    ap.add_argument("--routers", type=int, default=200)
    ap.add_argument("--attackers", type=int, default=500)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--database-url")
    ap.add_argument("--nats-url")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    result = asyncio.run(run(args))
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
