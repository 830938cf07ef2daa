"""`opmas actions`: the actions the orchestrator proposed; list, show, and approve or reject
them. A decision is committed, then published on `actions.<state>` so the executor starts at
once.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from opmas.bus.connect import Bus
from opmas.bus.subjects import ActionState
from opmas.cli import render
from opmas.cli.context import console
from opmas.cli.findings import AsJson, By, Limit, check_choice
from opmas.errors import OpmasError
from opmas.models import Device, IntendedAction, Playbook
from opmas.models.actions import ACTION_STATUSES
from opmas.orchestrator.lifecycle import action_message, publish_action, transition

app = typer.Typer(help="Intended actions: review, approve, reject.", no_args_is_help=True)

Refs = Annotated[list[str], typer.Argument(help="Ids, uuids or unique uuid prefixes.")]
RESULT_FIELDS = ("exit_status", "duration", "duration_s", "error", "command")


async def get_action(session: AsyncSession, ref: str) -> IntendedAction:
    """The action named by id, uuid or unique uuid prefix."""
    return await render.lookup(
        session, IntendedAction, ref, IntendedAction.action_uuid, what="action"
    )


def _query(status: str | None, device: str | None, limit: int) -> Select[IntendedAction, str]:
    query = (
        select(IntendedAction, Device.hostname)
        .outerjoin(Device, Device.id == IntendedAction.device_id)
        .order_by(IntendedAction.created_at.desc(), IntendedAction.id.desc())
        .limit(limit)
    )
    if status:
        query = query.where(IntendedAction.status == status)
    if device:
        query = query.where((Device.hostname == device) | (func.host(Device.ip_address) == device))
    return query


@app.command("list")
def list_actions(
    status: Annotated[
        str | None, typer.Option(help=f"Only this status: {', '.join(ACTION_STATUSES)}.")
    ] = None,
    device: Annotated[str | None, typer.Option(help="Only this hostname or IP.")] = None,
    limit: Limit = 50,
    as_json: AsJson = False,
) -> None:
    """List intended actions, newest first."""
    check_choice(status, ACTION_STATUSES, "--status")
    query = _query(status, device, limit)

    async def _fetch(session: AsyncSession) -> list[dict[str, Any]]:
        rows = (await session.execute(query)).all()
        return [{**render.row_dict(a), "device_hostname": host} for a, host in rows]

    rows = render.with_session(_fetch)
    if as_json:
        render.print_json(rows)
        return
    render.print_table(
        ("id", "created (UTC)", "status", "mode", "device", "type", "attempts", "description"),
        (
            (
                r["id"],
                r["created_at"][:19].replace("T", " "),
                r["status"],
                r["execution_mode"],
                r["device_hostname"],
                r["action_type"],
                r["attempts"],
                r["description"],
            )
            for r in rows
        ),
        empty="no actions",
    )


async def _action_view(session: AsyncSession, ref: str) -> dict[str, Any]:
    action = await get_action(session, ref)
    view = render.row_dict(action)
    device = await session.get(Device, action.device_id) if action.device_id else None
    playbook = await session.get(Playbook, action.playbook_id) if action.playbook_id else None
    view["device_hostname"] = device.hostname if device else None
    view["playbook"] = playbook.name if playbook else None
    return view


@app.command()
def show(
    ref: Annotated[str, typer.Argument(help="Id, uuid or unique uuid prefix.")],
    as_json: AsJson = False,
) -> None:
    """Show one action: its config, every state it went through, and its result."""

    async def _view(session: AsyncSession) -> dict[str, Any]:
        return await _action_view(session, ref)

    view = render.with_session(_view)
    if as_json:
        render.print_json(view)
        return
    history, result, config = view.pop("history"), view.pop("result"), view.pop("action_config")
    render.print_fields(f"action {view['id']}", view)
    console.print("[bold]config[/bold]")
    console.print(json.dumps(config, indent=2, ensure_ascii=False), markup=False)
    render.print_table(
        ("state", "at (UTC)", "by", "attempt", "note"),
        (
            (h.get("state"), h.get("at"), h.get("by"), h.get("attempt"), h.get("note"))
            for h in history or []
        ),
        empty="no history",
    )
    _print_result(result, view["attempts"])


def _print_result(result: dict[str, Any] | None, attempts: int) -> None:
    if not result:
        console.print(f"no result yet (attempts: {attempts})")
        return
    shown = {name: result[name] for name in RESULT_FIELDS if name in result}
    others = {k: v for k, v in result.items() if k not in (*RESULT_FIELDS, "stdout", "stderr")}
    render.print_fields("result", {"attempts": attempts, **shown, **others})
    for stream in ("stdout", "stderr"):
        if result.get(stream):
            console.print(f"[bold]{stream}[/bold]")
            console.print(str(result[stream]).rstrip("\n"), markup=False, highlight=False)


def decide(refs: list[str], to: ActionState, by: str, note: str | None) -> None:
    """Move each action to `to` in its own transaction, then publish it; exit 1 if any failed.

    The bus is connected first, so that nothing changes when it is down.
    """

    async def _work(session: AsyncSession, bus: Bus) -> list[str]:
        errors: list[str] = []
        for ref in refs:
            try:
                action_id = (await get_action(session, ref)).id
                await transition(session, action_id, to, by=by, note=note)
                await session.commit()
            except OpmasError as exc:
                await session.rollback()
                errors.append(str(exc))
                continue
            console.print(f"action {action_id} {to}")
            try:
                await publish_action(bus, await action_message(session, action_id))
            except OpmasError as exc:
                errors.append(f"action {action_id} is {to} but was not published: {exc}")
        return errors

    errors = render.with_session_and_bus(_work)
    if errors:
        render.fail("; ".join(errors))


@app.command()
def approve(refs: Refs, by: By = None) -> None:
    """Approve pending actions; the executor runs them at once."""
    decide(refs, ActionState.APPROVED, by or render.current_user(), None)


@app.command()
def reject(
    refs: Refs,
    reason: Annotated[str | None, typer.Option(help="Why (kept in the history).")] = None,
    by: By = None,
) -> None:
    """Reject pending (or approved, not yet running) actions."""
    decide(refs, ActionState.REJECTED, by or render.current_user(), reason)
