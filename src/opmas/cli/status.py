"""`opmas status`: components, database and NATS reachability, stream depths, consumer lag."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from opmas.bus.connect import NatsAuth, connect_bus
from opmas.bus.streams import stream_report
from opmas.cli.context import console, load_settings
from opmas.db.engine import create_engine
from opmas.embedded import Endpoints, running_endpoints, server_states
from opmas.errors import OpmasError
from opmas.health import check_readiness
from opmas.settings import Settings, secret_value
from opmas.status import collect_status


def _endpoints(settings: Settings) -> Endpoints | None:
    """The configured servers, or those of the `opmas up` running on the data dir."""
    running = running_endpoints(settings.data_dir)
    db = settings.database_url.get_secret_value() if settings.database_url else None
    db = db or (running.database_url if running else None)
    nats = secret_value(settings.nats_url) or (running.nats_url if running else None)
    if db is None or nats is None:
        return None
    return Endpoints(db, nats, settings.database_url is None, settings.nats_url is None)


async def gather_status(settings: Settings, endpoints: Endpoints) -> dict[str, Any]:
    """Everything `opmas status` shows, as plain data; unreachable parts are reported."""
    report: dict[str, Any] = {"processes": [], "streams": []}
    engine = create_engine(endpoints.database_url, settings.database)
    try:
        try:
            auth = NatsAuth.from_settings(settings)
            async with connect_bus(
                endpoints.nats_url, settings.bus, name="opmas-status", auth=auth
            ) as bus:
                readiness = await check_readiness(engine, bus)
                report["processes"] = await collect_status(bus)
                report["streams"] = [
                    {**asdict(s), "consumers": [c._asdict() for c in s.consumers]}
                    for s in await stream_report(bus)
                ]
        except OpmasError as exc:  # NATS unreachable: the database is still asked
            readiness = await check_readiness(engine, None, str(exc))
        report["work"] = await work_queue(engine)
    finally:
        await engine.dispose()
    report["readiness"] = readiness.as_dict()
    report["servers"] = server_states(settings.data_dir.resolve())
    return report


WORK_QUERIES = {
    "actions": "SELECT status, count(*) FROM intended_actions GROUP BY status",
    "incidents": "SELECT status, count(*) FROM incidents GROUP BY status",
    "notifications": "SELECT status, count(*) FROM notification_history GROUP BY status",
}


async def work_queue(engine: AsyncEngine) -> dict[str, dict[str, int]] | None:
    """Counts by status of actions, incidents and notifications (None: database down)."""
    try:
        async with engine.connect() as conn:
            return {
                name: {row[0]: row[1] for row in await conn.execute(text(query))}
                for name, query in WORK_QUERIES.items()
            }
    except (DBAPIError, OSError):
        return None


def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show each component's state, database and NATS reachability, streams and lag."""
    settings = load_settings()
    endpoints = _endpoints(settings)
    if endpoints is None:
        message = f"no OPMAS is running on {settings.data_dir.resolve()} and no URLs are set"
        if as_json:
            typer.echo(json.dumps({"running": False, "reason": message}))
        else:
            console.print(message)
        raise typer.Exit(1)
    report = asyncio.run(gather_status(settings, endpoints))
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
    else:
        _print(report)
    raise typer.Exit(0 if report["readiness"].get("ready") else 1)


def _server_line(name: str, server: dict[str, Any]) -> str:
    """`postgres (embedded) up, restarted 1 time, last killed by SIGKILL at 10:02:11Z`."""
    line = f"{name} (embedded)  {_yes(server.get('up'))}"
    if server.get("restarts"):
        line += f", restarted {server['restarts']} time(s)"
    if server.get("last_exit"):
        line += f", last {escape(str(server['last_exit']))}"
    if not server.get("up") and server.get("last_error"):
        line += f"\n  [red]restart failed:[/red] {escape(str(server['last_error']))}"
    return line


def _detail(comp: dict[str, Any]) -> str:
    """What the detail column says: the error, or the detail and why it is degraded."""
    if comp["status"] in ("ERROR", "WAITING"):
        return str(comp.get("last_error") or "")
    parts = [
        str(comp.get("detail") or ""),
        f"degraded: {comp['degraded']}" if comp.get("degraded") else "",
    ]
    return "; ".join(p for p in parts if p)


def _yes(flag: object) -> str:
    return "[green]up[/green]" if flag else "[red]down[/red]"


def _print(report: dict[str, Any]) -> None:
    ready = report["readiness"]
    console.print(
        f"database  {_yes(ready.get('database'))}  schema {ready.get('schema_revision')}"
        f" (head {ready.get('schema_head')})"
    )
    console.print(f"NATS      {_yes(ready.get('nats'))}")
    for name, error in ready.get("errors", {}).items():
        console.print(f"  [red]{name}:[/red] {escape(error)}")
    for name, server in report.get("servers", {}).items():
        console.print(_server_line(name, server))
    components = Table("host", "pid", "component", "status", "restarts", "detail / last error")
    for process in report["processes"]:
        for comp in process["components"]:
            components.add_row(
                process["host"],
                str(process["pid"]),
                comp["name"],
                comp["status"],
                str(comp["restarts"]),
                escape(_detail(comp)),
            )
    console.print(components)
    streams = Table("stream", "messages", "bytes", "consumer", "lag", "ack pending")
    for stream in report["streams"]:
        size = (stream["stream"], str(stream["messages"]), str(stream["bytes"]))
        if not stream["consumers"]:
            streams.add_row(*size, "", "", "")
        for c in stream["consumers"]:
            streams.add_row(*size, c["durable"], str(c["num_pending"]), str(c["num_ack_pending"]))
    console.print(streams)
    work = report.get("work")
    if work:
        pending = work["actions"].get("pending", 0)
        open_incidents = work["incidents"].get("new", 0) + work["incidents"].get("acknowledged", 0)
        failed = work["actions"].get("failed", 0) + work["actions"].get("timed_out", 0)
        console.print(
            f"to do     {pending} action(s) waiting for approval (opmas actions list --status"
            f" pending), {open_incidents} open incident(s), {failed} action(s) failed,"
            f" {work['notifications'].get('failed', 0)} notification(s) failed"
        )
        interrupted = work["actions"].get("interrupted", 0)
        if interrupted:
            console.print(
                f"          [yellow]{interrupted} action(s) interrupted[/yellow]: they may or may"
                " not have run on the router (opmas actions list --status interrupted)"
            )
