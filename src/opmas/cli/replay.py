"""`opmas replay FILE`: send a log file through the running pipeline, then summarise it.

Lines go straight onto logs.raw (transport `replay`) with ids chosen here, so the summary is
read back from what the pipeline stored: lines, parsed share, events per domain. They carry
the `replay` flag unless `--notify` is given: their findings are marked `details.replay` and
notify nobody, start no playbook. `--dry-run` parses and evaluates the file offline (the
shipped rules, as `opmas rules test`) and sends nothing.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import asyncpg
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from opmas.agents import offline
from opmas.agents.pack import load_pack
from opmas.bus.connect import NatsAuth, connect_bus
from opmas.bus.partition import by_partition
from opmas.bus.publish import Publisher
from opmas.cli.context import console, err_console, load_settings
from opmas.embedded import embedded_services, running_endpoints
from opmas.errors import ConfigError, OpmasError
from opmas.instance import Endpoints
from opmas.messages import Flag, RawBatch, RawLog, Transport, encode, new_id
from opmas.settings import Settings

BATCH = 500
SUMMARY_SQL = """
SELECT log_source_type AS domain, count(*) AS events,
       count(*) FILTER (WHERE parser_name <> 'unparsed') AS parsed
FROM events WHERE event_id = ANY($1::uuid[]) AND arrival_ts_utc >= $2
GROUP BY log_source_type ORDER BY log_source_type
"""


def read_lines(path: Path) -> list[str]:
    """Non-empty lines of a logread or remote-syslog file (comment lines `#` skipped)."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _chunks(lines: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(lines), size):
        yield lines[start : start + size]


async def _send(
    endpoints: Endpoints,
    settings: Settings,
    lines: list[str],
    *,
    rate: float | None,
    hostname: str | None,
    notify: bool,
    progress: Progress,
) -> tuple[list[str], float]:
    ids: list[str] = []
    flags = [] if notify else [Flag.REPLAY]
    started = time.time()
    task = progress.add_task("sending", total=len(lines))
    auth = NatsAuth.from_settings(settings)
    async with connect_bus(endpoints.nats_url, settings.bus, name="opmas-replay", auth=auth) as bus:
        publisher = Publisher(bus)
        for chunk in _chunks(lines, BATCH if rate is None else max(1, min(BATCH, int(rate)))):
            now = time.time()
            items = [
                RawLog(new_id(), now, line, Transport.REPLAY, flags=flags, hostname=hostname)
                for line in chunk
            ]
            ids.extend(item.event_id for item in items)
            for partition, group in by_partition(items, settings.pipeline.partitions).items():
                batch = RawBatch(new_id(), group)
                subject = bus.subjects.logs_raw_partition(partition)
                await publisher.publish(subject, encode(batch), msg_id=batch.batch_id)
            progress.advance(task, len(chunk))
            if rate is not None:
                await asyncio.sleep(max(0.0, started + len(ids) / rate - time.time()))
        await publisher.flush()
    return ids, started


async def _wait_stored(
    db_url: str, ids: list[str], since: float, timeout_s: float, progress: Progress
) -> list[asyncpg.Record]:
    task = progress.add_task("stored", total=len(ids))
    conn = await asyncpg.connect(db_url)
    try:
        deadline = time.monotonic() + timeout_s
        since_at = datetime.fromtimestamp(since - 1, UTC)
        while True:
            rows: list[asyncpg.Record] = await conn.fetch(SUMMARY_SQL, ids, since_at)
            stored = sum(row["events"] for row in rows)
            progress.update(task, completed=stored)
            if stored >= len(ids) or time.monotonic() > deadline:
                return rows
            await asyncio.sleep(0.5)
    finally:
        await conn.close()


def replay(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Log file to send.")],
    rate: Annotated[
        float | None, typer.Option(min=1, help="Lines per second (default: as fast as possible).")
    ] = None,
    hostname: Annotated[
        str | None, typer.Option(help="Hostname for lines that carry none (logread files).")
    ] = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for the pipeline to store.")] = 60,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Parse and evaluate the file offline; print what would be found."
        ),
    ] = False,
    notify: Annotated[
        bool,
        typer.Option(
            "--notify", help="Let the findings notify and start playbooks (default: they do not)."
        ),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="With --dry-run: one finding per line (JSON lines).")
    ] = False,
) -> None:
    """Send a log file (logread or remote syslog form) through the running pipeline.

    Its findings notify nobody and start no playbook unless --notify is given; --dry-run sends
    nothing and prints what the shipped rules would find.
    """
    lines = read_lines(file)
    if not lines:
        err_console.print(f"{file}: no lines to send")
        raise typer.Exit(1)
    if dry_run:
        _dry_run(lines, hostname, as_json=as_json)
        return
    settings = load_settings()

    unset = settings.database_url is None or settings.nats_url is None
    if unset and running_endpoints(settings.data_dir) is None:
        err_console.print(
            f"OPMAS is not running on {settings.data_dir.resolve()}: start `opmas up`"
        )
        raise typer.Exit(1)

    async def _replay(progress: Progress) -> list[asyncpg.Record]:
        async with embedded_services(settings) as endpoints:
            ids, started = await _send(
                endpoints,
                settings,
                lines,
                rate=rate,
                hostname=hostname,
                notify=notify,
                progress=progress,
            )
            return await _wait_stored(endpoints.database_url, ids, started, wait, progress)

    columns = (
        TextColumn("{task.description:>8}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, console=console) as progress:
            rows = asyncio.run(_replay(progress))
    except OpmasError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    _summary(len(lines), rows)


def _dry_run(lines: list[str], hostname: str | None, *, as_json: bool) -> None:
    """What the shipped rules find in `lines`, evaluated here in the lines' own time."""
    try:
        report = offline.run_lines(
            lines, load_pack(), default_hostname=hostname or offline.DEFAULT_HOSTNAME
        )
    except ConfigError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    if as_json:
        for finding in report.findings:
            sys.stdout.write(json.dumps(finding, ensure_ascii=False) + "\n")
        return
    for finding in report.findings:
        console.print(
            f"{finding['finding_ts_utc']} {finding['severity']:<8} {finding['finding_type']}"
            f" {finding['device_hostname']}: {finding['description']}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    types = Counter(f"{f['finding_type']} ({f['severity']})" for f in report.findings)
    table = Table("finding type", "findings")
    for name, count in sorted(types.items()):
        table.add_row(name, str(count))
    console.print(table)
    console.print(
        f"dry run: lines {report.lines}  parsed events {report.events}  "
        f"findings {len(report.findings)}  (nothing sent)",
        highlight=False,
    )


def _summary(sent: int, rows: list[asyncpg.Record]) -> None:
    stored = sum(row["events"] for row in rows)
    parsed = sum(row["parsed"] for row in rows)
    table = Table("domain", "events", "parsed by a program parser")
    for row in rows:
        table.add_row(row["domain"], str(row["events"]), str(row["parsed"]))
    console.print(table)
    share = 100 * parsed / stored if stored else 0.0
    console.print(f"lines {sent}  stored {stored}  parsed {share:.1f} %")
    if stored < sent:
        console.print(f"[yellow]{sent - stored} lines not stored yet[/yellow]")
        raise typer.Exit(1)
