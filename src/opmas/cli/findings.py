"""`opmas findings`: list, show, acknowledge and resolve the findings the orchestrator stored.

A finding (or an incident) moves new -> acknowledged -> resolved | false_positive; the rules of
that move live here and `opmas incidents` uses them too.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from opmas.cli import render
from opmas.cli.context import console
from opmas.cli.events import parse_since
from opmas.errors import OpmasError
from opmas.models import Event, Finding, Incident, IntendedAction
from opmas.models.base import FINDING_STATUSES, SEVERITIES

app = typer.Typer(
    help="Findings of the agents, as stored by the orchestrator.", no_args_is_help=True
)

OPEN_STATUSES = ("new", "acknowledged")
CLOSED_STATUSES = ("resolved", "false_positive")
EVIDENCE_BEFORE = timedelta(days=1)
EVIDENCE_AFTER = timedelta(hours=1)

Status = Annotated[
    str | None, typer.Option(help=f"Only this status: {', '.join(FINDING_STATUSES)}.")
]
Severity = Annotated[
    str | None, typer.Option(help=f"Only this severity or above: {', '.join(SEVERITIES)}.")
]
Limit = Annotated[int, typer.Option(min=1, max=100_000, help="At most this many.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
By = Annotated[str | None, typer.Option("--by", help="Who does it (default: your user name).")]
FalsePositive = Annotated[
    bool, typer.Option("--false-positive", help="Close as a false positive instead.")
]


def check_choice(value: str | None, choices: tuple[str, ...], hint: str) -> None:
    """Exit 2 when `value` is set and not one of `choices`."""
    if value is not None and value not in choices:
        raise typer.BadParameter(f"must be one of {', '.join(choices)}", param_hint=hint)


def severities_from(floor: str) -> tuple[str, ...]:
    """`floor` and every severity above it."""
    return SEVERITIES[SEVERITIES.index(floor) :]


def needs_move(label: str, current: str, target: str) -> bool:
    """True when `current` may become `target`, False when it already is `target`.

    Raises:
        OpmasError: the move is not allowed (e.g. acknowledging a resolved finding).
    """
    if current == target:
        return False
    if current in OPEN_STATUSES and (
        target in CLOSED_STATUSES or (current, target) == ("new", "acknowledged")
    ):
        return True
    raise OpmasError(f"{label} is {current}; it cannot become {target}")


def move(row: Finding | Incident, target: str, by: str | None, now: datetime) -> None:
    """Set the status of `row` with its timestamp; `by` becomes the assignee if it had none."""
    row.status = target
    if target == "acknowledged":
        row.acknowledged_at = now
    else:
        row.resolved_at = now
    if by and not row.assignee:
        row.assignee = by


def closing_status(false_positive: bool) -> str:
    return "false_positive" if false_positive else "resolved"


async def get_finding(session: AsyncSession, ref: str, *, for_update: bool = False) -> Finding:
    """The finding named by id, uuid or unique uuid prefix."""
    return await render.lookup(
        session, Finding, ref, Finding.finding_uuid, what="finding", for_update=for_update
    )


def _query(
    status: str | None,
    severity: str | None,
    agent: str | None,
    rule: str | None,
    device: str | None,
    since: datetime | None,
) -> Select[Finding]:
    query = select(Finding).order_by(Finding.created_at.desc(), Finding.id.desc())
    if status:
        query = query.where(Finding.status == status)
    if severity:
        query = query.where(Finding.severity.in_(severities_from(severity)))
    if agent:
        query = query.where(Finding.agent_name == agent)
    if rule:
        query = query.where(Finding.rule_name == rule)
    if device:
        query = query.where(
            (Finding.device_hostname == device) | (func.host(Finding.device_ip) == device)
        )
    if since:
        query = query.where(Finding.created_at >= since)
    return query


@app.command("list")
def list_findings(
    status: Status = None,
    severity: Severity = None,
    agent: Annotated[str | None, typer.Option(help="Only this agent (SecurityAgent...).")] = None,
    rule: Annotated[str | None, typer.Option(help="Only this rule.")] = None,
    device: Annotated[str | None, typer.Option(help="Only this hostname or IP.")] = None,
    since: Annotated[
        str | None, typer.Option(help="Opened after: 10m, 2h, 1d or an ISO 8601 time.")
    ] = None,
    limit: Limit = 50,
    as_json: AsJson = False,
) -> None:
    """List stored findings, newest first."""
    check_choice(status, FINDING_STATUSES, "--status")
    check_choice(severity, SEVERITIES, "--severity")
    query = _query(status, severity, agent, rule, device, parse_since(since)).limit(limit)

    async def _fetch(session: AsyncSession) -> list[Finding]:
        return list((await session.scalars(query)).all())

    rows = render.with_session(_fetch)
    if as_json:
        render.print_json([_as_json(f) for f in rows])
        return
    render.print_table(
        ("id", "opened (UTC)", "status", "severity", "device", "type", "rule", "count", "incident"),
        (_row(f) for f in rows),
        empty="no findings",
    )


def _as_json(f: Finding) -> dict[str, Any]:
    """Every column, plus `finding_ts_utc` as the FINDINGS stream messages named it."""
    return {**render.row_dict(f), "finding_ts_utc": render.when_iso(f.finding_ts or f.created_at)}


def _row(f: Finding) -> tuple[object, ...]:
    return (
        f.id,
        render.when(f.created_at),
        f.status,
        f.severity,
        f.device_hostname or f.device_ip,
        f.finding_type,
        f.rule_name,
        f.count,
        f.incident_id,
    )


async def _finding_view(session: AsyncSession, ref: str) -> dict[str, Any]:
    finding = await get_finding(session, ref)
    view = render.row_dict(finding)
    incident = await session.get(Incident, finding.incident_id) if finding.incident_id else None
    view["incident"] = (
        {"id": incident.id, "title": incident.title, "status": incident.status}
        if incident
        else None
    )
    actions = await session.scalars(
        select(IntendedAction)
        .where(
            IntendedAction.finding_id == finding.id,
            IntendedAction.finding_created_at == finding.created_at,
        )
        .order_by(IntendedAction.id)
    )
    view["actions"] = [
        {"id": a.id, "action_type": a.action_type, "status": a.status, "description": a.description}
        for a in actions
    ]
    view["evidence"] = await _evidence(session, finding)
    return view


async def _evidence(session: AsyncSession, finding: Finding) -> list[dict[str, Any]]:
    """The stored evidence events of `finding`, oldest first (ids whose daily partition was
    dropped are missing). Only the partitions of the finding's time range are searched:
    from a day before it opened (router clocks drift) to an hour after it was last stored."""
    ids = list(finding.evidence_event_ids or ())
    if not ids:
        return []
    opened = min(t for t in (finding.created_at, finding.finding_ts) if t is not None)
    stored = max(t for t in (finding.updated_at, finding.last_seen_at) if t is not None)
    rows = await session.execute(
        select(
            Event.event_id,
            Event.arrival_ts_utc,
            Event.event_ts,
            Event.hostname,
            func.host(Event.source_ip).label("source_ip"),
            Event.process_name,
            Event.message,
        )
        .where(
            Event.event_id.in_(ids),
            Event.arrival_ts_utc >= opened - EVIDENCE_BEFORE,
            Event.arrival_ts_utc <= stored + EVIDENCE_AFTER,
        )
        .order_by(Event.arrival_ts_utc, Event.event_id)
    )
    return [
        {
            "event_id": row.event_id,
            "time": row.event_ts or row.arrival_ts_utc,
            "arrival_ts_utc": row.arrival_ts_utc,
            "host": row.hostname or row.source_ip,
            "program": row.process_name,
            "message": row.message,
        }
        for row in rows
    ]


@app.command()
def show(
    ref: Annotated[str, typer.Argument(help="Id, uuid or unique uuid prefix.")],
    as_json: AsJson = False,
) -> None:
    """Show one finding: every field, its details, evidence, incident and actions."""

    async def _view(session: AsyncSession) -> dict[str, Any]:
        return await _finding_view(session, ref)

    view = render.with_session(_view)
    if as_json:
        render.print_json(view)
        return
    incident, actions = view.pop("incident"), view.pop("actions")
    evidence, evidence_ids = view.pop("evidence"), view.pop("evidence_event_ids")
    render.print_fields(f"finding {view['id']}", view)
    if incident:
        render.print_fields("incident", incident)
    _print_evidence(evidence, len(evidence_ids))
    render.print_table(
        ("action", "type", "status", "description"),
        ((a["id"], a["action_type"], a["status"], a["description"]) for a in actions),
        empty="no actions",
    )


def _print_evidence(evidence: list[dict[str, Any]], expected: int) -> None:
    """The evidence log lines as a table, and how many are no longer stored."""
    render.print_table(
        ("time (UTC)", "host", "program", "message"),
        ((render.when(e["time"]), e["host"], e["program"], e["message"]) for e in evidence),
        empty="no evidence events" if not expected else "evidence events no longer stored",
    )
    if evidence and len(evidence) < expected:
        console.print(f"{expected - len(evidence)} more evidence events are no longer stored")


def change_finding(ref: str, target: str, by: str | None) -> None:
    """Move one finding to `target` and say so; refusals exit 1."""

    async def _change(session: AsyncSession) -> tuple[int, bool]:
        finding = await get_finding(session, ref, for_update=True)
        changed = needs_move(f"finding {finding.id}", finding.status, target)
        if changed:
            move(finding, target, by, datetime.now(UTC))
        return finding.id, changed

    finding_id, changed = render.with_session(_change)
    if changed:
        console.print(f"finding {finding_id} is now {target}")
    else:
        console.print(f"finding {finding_id} was already {target}")


@app.command()
def ack(
    ref: Annotated[str, typer.Argument(help="Id, uuid or unique uuid prefix.")], by: By = None
) -> None:
    """Acknowledge a new finding (a resolved one is refused)."""
    change_finding(ref, "acknowledged", by or render.current_user())


@app.command()
def resolve(
    ref: Annotated[str, typer.Argument(help="Id, uuid or unique uuid prefix.")],
    false_positive: FalsePositive = False,
    by: By = None,
) -> None:
    """Resolve an open finding, or close it as a false positive."""
    change_finding(ref, closing_status(false_positive), by or render.current_user())
