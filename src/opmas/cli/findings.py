"""`opmas findings list`: what the agents found, read from the FINDINGS stream."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import msgspec
import typer
from rich.markup import escape
from rich.table import Table

from opmas.agents.feed import read_findings
from opmas.agents.pack import SEVERITY_ORDER
from opmas.bus.connect import connect_bus
from opmas.cli.context import console, err_console, load_settings
from opmas.cli.events import parse_since
from opmas.embedded import embedded_services
from opmas.errors import OpmasError
from opmas.messages import Finding

app = typer.Typer(help="Findings of the agents.", no_args_is_help=True)


@app.command("list")
def list_findings(
    severity: Annotated[
        str | None,
        typer.Option(help=f"Only this severity or above: {', '.join(SEVERITY_ORDER)}."),
    ] = None,
    agent: Annotated[str | None, typer.Option(help="Only this agent (WiFiAgent...).")] = None,
    rule: Annotated[str | None, typer.Option(help="Only this rule.")] = None,
    device: Annotated[str | None, typer.Option(help="Only this hostname or IP.")] = None,
    since: Annotated[
        str | None, typer.Option(help="Published after: 10m, 2h, 1d or an ISO 8601 time.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1_000_000, help="At most this many.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """List findings, newest first, each with its latest count and evidence."""
    if severity is not None and severity not in SEVERITY_ORDER:
        raise typer.BadParameter(
            f"must be one of {', '.join(SEVERITY_ORDER)}", param_hint="--severity"
        )
    settings = load_settings()
    since_at = parse_since(since)

    async def _fetch() -> list[Finding]:
        async with (
            embedded_services(settings) as endpoints,
            connect_bus(endpoints.nats_url, settings.bus, name="opmas-cli") as bus,
        ):
            return await read_findings(bus, since=since_at)

    try:
        found = asyncio.run(_fetch())
    except OpmasError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    floor = SEVERITY_ORDER.index(severity) if severity else 0
    selected = [
        f
        for f in found
        if SEVERITY_ORDER.index(f.severity) >= floor
        and (agent is None or f.agent_name == agent)
        and (rule is None or f.rule_name == rule)
        and (device is None or device in (f.device_hostname, f.device_ip))
    ][:limit]
    if as_json:
        typer.echo(json.dumps(msgspec.to_builtins(selected), indent=2, ensure_ascii=False))
        return
    table = Table("opened (UTC)", "severity", "device", "type", "rule", "count", "description")
    for f in selected:
        table.add_row(
            f.finding_ts_utc[:19],
            f.severity,
            f.device_hostname or f.device_ip or "",
            f.finding_type,
            f.rule_name,
            str(f.count),
            escape(f.description[:100]),
        )
    console.print(table)
    if not selected:
        console.print("no findings")
