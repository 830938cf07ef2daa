"""`opmas events list`: stored parsed events, newest first, filtered."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.table import Table
from sqlalchemy import text

from opmas.cli.context import console, err_console, load_settings
from opmas.db.engine import create_engine
from opmas.embedded import embedded_services
from opmas.errors import OpmasError

app = typer.Typer(help="Stored log events.", no_args_is_help=True)

DOMAINS = ("wifi", "security", "health", "wan", "other")
_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
QUERY = """
SELECT event_id::text, arrival_ts_utc, host(source_ip) AS source_ip, original_ts, event_ts,
       hostname, process_name, pid, log_level, facility, event_type, message, parser_name,
       log_source_type, structured_fields, flags, transport,
       COALESCE(trust, 'untrusted') AS trust
FROM events
WHERE (CAST(:domain AS text) IS NULL OR log_source_type = :domain)
  AND (CAST(:device AS text) IS NULL OR hostname = :device OR host(source_ip) = :device)
  AND (CAST(:since AS timestamptz) IS NULL OR arrival_ts_utc >= :since)
ORDER BY arrival_ts_utc DESC, event_id DESC
LIMIT :limit
"""


def parse_since(value: str | None, now: datetime | None = None) -> datetime | None:
    """`10m`, `2h`, `1d` before now, or an ISO 8601 time (UTC when it has no zone)."""
    if value is None:
        return None
    relative = _RELATIVE.match(value.strip())
    if relative:
        amount, unit = int(relative[1]), relative[2]
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[unit]: amount})
    try:
        when = datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter("use 10m, 2h, 1d or an ISO 8601 time") from exc
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _as_event(row: Any) -> dict[str, Any]:
    data = dict(row._mapping)
    data["arrival_ts_utc"] = _iso(data["arrival_ts_utc"])
    data["event_ts"] = _iso(data["event_ts"]) if data["event_ts"] else None
    return data


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def fetch_events(
    url: str, *, domain: str | None, device: str | None, since: datetime | None, limit: int
) -> list[dict[str, Any]]:
    """Events newest first, in the parsed-event format."""
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text(QUERY),
                {"domain": domain, "device": device, "since": since, "limit": limit},
            )
            return [_as_event(row) for row in rows]
    finally:
        await engine.dispose()


@app.command("list")
def list_events(
    domain: Annotated[
        str | None, typer.Option(help=f"Only this domain: {', '.join(DOMAINS)}.")
    ] = None,
    device: Annotated[str | None, typer.Option(help="Only this hostname or source IP.")] = None,
    since: Annotated[
        str | None, typer.Option(help="Only newer than: 10m, 2h, 1d or an ISO 8601 time.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="At most this many.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """List stored events, newest first."""
    if domain is not None and domain not in DOMAINS:
        raise typer.BadParameter(f"must be one of {', '.join(DOMAINS)}", param_hint="--domain")
    settings = load_settings()
    since_at = parse_since(since)

    async def _fetch() -> list[dict[str, Any]]:
        async with embedded_services(settings, with_nats=False) as endpoints:
            return await fetch_events(
                endpoints.database_url, domain=domain, device=device, since=since_at, limit=limit
            )

    try:
        events = asyncio.run(_fetch())
    except OpmasError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    if as_json:
        typer.echo(json.dumps(events, indent=2, default=str))
        return
    table = Table("arrival (UTC)", "host", "trust", "program", "domain", "event", "message")
    for event in events:
        table.add_row(
            event["arrival_ts_utc"][:23],
            event["hostname"] or event["source_ip"] or "",
            event["trust"],
            event["process_name"] or "",
            event["log_source_type"],
            str(event["structured_fields"].get("event", "")),
            event["message"][:120] if console.is_terminal else event["message"],
        )
    console.print(table)
