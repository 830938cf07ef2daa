"""`opmas incidents`: the problems the orchestrator grouped findings into; list, show,
acknowledge, resolve (with their open findings), assign and comment.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from opmas.cli import render
from opmas.cli.context import console
from opmas.cli.findings import (
    AsJson,
    By,
    FalsePositive,
    Limit,
    Severity,
    Status,
    check_choice,
    closing_status,
    move,
    needs_move,
    severities_from,
)
from opmas.models import Device, Finding, Incident, IncidentComment, IntendedAction
from opmas.models.base import FINDING_STATUSES, SEVERITIES

app = typer.Typer(help="Incidents: findings correlated into one problem.", no_args_is_help=True)

Ref = Annotated[str, typer.Argument(help="Id, uuid or unique uuid prefix.")]


async def get_incident(session: AsyncSession, ref: str, *, for_update: bool = False) -> Incident:
    """The incident named by id, uuid or unique uuid prefix."""
    return await render.lookup(
        session, Incident, ref, Incident.incident_uuid, what="incident", for_update=for_update
    )


@app.command("list")
def list_incidents(
    status: Status = None,
    severity: Severity = None,
    device: Annotated[
        str | None, typer.Option(help="Only incidents on this router (hostname), fleet-wide too.")
    ] = None,
    limit: Limit = 50,
    as_json: AsJson = False,
) -> None:
    """List incidents, most recently seen first."""
    check_choice(status, FINDING_STATUSES, "--status")
    check_choice(severity, SEVERITIES, "--severity")
    query = select(Incident).order_by(Incident.last_seen_at.desc(), Incident.id.desc())
    if status:
        query = query.where(Incident.status == status)
    if severity:
        query = query.where(Incident.severity.in_(severities_from(severity)))
    if device:  # the incident's router, or one of the routers a fleet-wide incident names
        query = query.outerjoin(Device, Device.id == Incident.device_id).where(
            or_(Device.hostname == device, Incident.details["devices"].contains([device]))
        )

    async def _fetch(session: AsyncSession) -> list[Incident]:
        return list((await session.scalars(query.limit(limit))).all())

    rows = render.with_session(_fetch)
    if as_json:
        render.print_json([render.row_dict(i) for i in rows])
        return
    render.print_table(
        ("id", "last seen (UTC)", "status", "severity", "type", "findings", "assignee", "title"),
        (_row(i) for i in rows),
        empty="no incidents",
    )


def _row(i: Incident) -> tuple[object, ...]:
    return (
        i.id,
        render.when(i.last_seen_at),
        i.status,
        i.severity,
        i.incident_type,
        i.finding_count,
        i.assignee,
        i.title,
    )


async def _incident_view(session: AsyncSession, ref: str) -> dict[str, Any]:
    incident = await get_incident(session, ref)
    view = render.row_dict(incident)
    findings = await session.scalars(
        select(Finding).where(Finding.incident_id == incident.id).order_by(Finding.created_at)
    )
    view["findings"] = [
        {"id": f.id, "severity": f.severity, "status": f.status, "description": f.description}
        for f in findings
    ]
    actions = await session.scalars(
        select(IntendedAction)
        .where(IntendedAction.incident_id == incident.id)
        .order_by(IntendedAction.id)
    )
    view["actions"] = [
        {"id": a.id, "action_type": a.action_type, "status": a.status, "description": a.description}
        for a in actions
    ]
    comments = await session.scalars(
        select(IncidentComment)
        .where(IncidentComment.incident_id == incident.id)
        .order_by(IncidentComment.created_at, IncidentComment.id)
    )
    view["comments"] = [
        {"at": render.jsonable(c.created_at), "author": c.author, "body": c.body} for c in comments
    ]
    return view


@app.command()
def show(ref: Ref, as_json: AsJson = False) -> None:
    """Show one incident with its findings, actions and comments."""

    async def _view(session: AsyncSession) -> dict[str, Any]:
        return await _incident_view(session, ref)

    view = render.with_session(_view)
    if as_json:
        render.print_json(view)
        return
    findings, actions, comments = view.pop("findings"), view.pop("actions"), view.pop("comments")
    render.print_fields(f"incident {view['id']}", view)
    render.print_table(
        ("finding", "severity", "status", "description"),
        ((f["id"], f["severity"], f["status"], f["description"]) for f in findings),
        empty="no findings",
    )
    render.print_table(
        ("action", "type", "status", "description"),
        ((a["id"], a["action_type"], a["status"], a["description"]) for a in actions),
        empty="no actions",
    )
    render.print_table(
        ("at (UTC)", "author", "comment"),
        ((c["at"], c["author"], c["body"]) for c in comments),
        empty="no comments",
    )


async def _close_findings(
    session: AsyncSession, incident_id: int, target: str, now: datetime
) -> int:
    """Close the open findings of an incident; return how many."""
    result = await session.execute(
        update(Finding)
        .where(Finding.incident_id == incident_id, Finding.status.in_(("new", "acknowledged")))
        .values(status=target, resolved_at=now)
        .returning(Finding.id)
    )
    return len(result.all())


def _change(ref: str, target: str, by: str) -> None:
    async def _work(session: AsyncSession) -> tuple[int, bool, int]:
        incident = await get_incident(session, ref, for_update=True)
        changed = needs_move(f"incident {incident.id}", incident.status, target)
        now = datetime.now(UTC)
        if changed:
            move(incident, target, by, now)
        closed = 0
        if target != "acknowledged":
            closed = await _close_findings(session, incident.id, target, now)
        return incident.id, changed, closed

    incident_id, changed, closed = render.with_session(_work)
    state = "is now" if changed else "was already"
    extra = f" ({closed} open finding(s) closed with it)" if closed else ""
    console.print(f"incident {incident_id} {state} {target}{extra}")


@app.command()
def ack(ref: Ref, by: By = None) -> None:
    """Acknowledge a new incident (a resolved one is refused)."""
    _change(ref, "acknowledged", by or render.current_user())


@app.command()
def resolve(ref: Ref, false_positive: FalsePositive = False, by: By = None) -> None:
    """Resolve an open incident and its open findings (or close them as false positives)."""
    _change(ref, closing_status(false_positive), by or render.current_user())


@app.command()
def assign(ref: Ref, user: Annotated[str, typer.Argument(help="Who handles it.")]) -> None:
    """Assign an incident to a user."""

    async def _work(session: AsyncSession) -> int:
        incident = await get_incident(session, ref, for_update=True)
        incident.assignee = user
        return incident.id

    console.print(f"incident {render.with_session(_work)} assigned to {user}")


@app.command()
def comment(
    ref: Ref,
    text: Annotated[str, typer.Argument(help="The comment.")],
    by: By = None,
) -> None:
    """Add a comment to an incident."""
    if not text.strip():
        raise typer.BadParameter("the comment is empty", param_hint="TEXT")

    async def _work(session: AsyncSession) -> int:
        incident = await get_incident(session, ref)
        session.add(
            IncidentComment(incident_id=incident.id, author=by or render.current_user(), body=text)
        )
        return incident.id

    console.print(f"comment added to incident {render.with_session(_work)}")
