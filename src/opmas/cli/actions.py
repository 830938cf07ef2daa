"""`opmas actions`: the actions the orchestrator proposed; list, show, approve or reject
them, retry a failed, timed-out or interrupted one. A decision is committed, then published on
`actions.<state>` so the executor starts at once; `--wait` then follows the action to its
outcome.
"""

from __future__ import annotations

import asyncio
import json
import time
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
from opmas.orchestrator.lifecycle import (
    FINAL_STATES,
    RETRY_SOURCES,
    action_message,
    publish_action,
    transition,
)

app = typer.Typer(help="Intended actions: review, approve, reject.", no_args_is_help=True)

Refs = Annotated[list[str], typer.Argument(help="Ids, uuids or unique uuid prefixes.")]
RESULT_FIELDS = ("exit_status", "duration", "duration_s", "error", "command")
Wait = Annotated[
    bool,
    typer.Option("--wait", help="Wait for the outcome and print it; exit 1 unless it succeeded."),
]
WaitTimeout = Annotated[
    float,
    typer.Option(
        "--timeout", min=1, help="With --wait: give up after this many seconds (exit 124)."
    ),
]
INTERRUPTED_HINT = (
    "interrupted: its executor stopped while it ran, so it may or may not have run on the "
    "router. Nothing runs it again by itself: check the router, then `opmas actions retry ID` "
    "if it is still needed."
)
WAIT_POLL_S = 0.5
WAIT_TIMED_OUT = 124  # as timeout(1)
STDERR_TAIL = 5  # lines of stderr shown by --wait


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
        (
            "id",
            "created (UTC)",
            "status",
            "mode",
            "evidence",
            "device",
            "type",
            "attempts",
            "description",
        ),
        (
            (
                r["id"],
                r["created_at"][:19].replace("T", " "),
                r["status"],
                r["execution_mode"],
                r["evidence_trust"] or "untrusted",
                r["device_hostname"],
                r["action_type"],
                r["attempts"],
                r["description"],
            )
            for r in rows
        ),
        empty="no actions",
    )
    interrupted = [str(r["id"]) for r in rows if r["status"] == str(ActionState.INTERRUPTED)]
    if interrupted:
        console.print(f"[yellow]{', '.join(interrupted)} {INTERRUPTED_HINT}[/yellow]")


async def _action_view(session: AsyncSession, ref: str) -> dict[str, Any]:
    action = await get_action(session, ref)
    view = render.row_dict(action)
    device = await session.get(Device, action.device_id) if action.device_id else None
    playbook = await session.get(Playbook, action.playbook_id) if action.playbook_id else None
    view["device_hostname"] = device.hostname if device else None
    view["device_enrolment"] = device.enrolment if device else None
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
    if view["status"] == str(ActionState.INTERRUPTED):
        console.print(f"[yellow]{INTERRUPTED_HINT.replace('ID', str(view['id']))}[/yellow]")
    if view["action_type"] != "notify" and view.get("evidence_trust") in (None, "untrusted"):
        console.print(
            "[yellow]untrusted evidence:[/yellow] the log lines behind this action came from a "
            "source OPMAS cannot tie to the router; anyone able to send them could have."
        )
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


def decide(
    refs: list[str],
    to: ActionState,
    by: str,
    note: str | None,
    *,
    wait_s: float | None = None,
    retry: bool = False,
) -> None:
    """Move each action to `to` in its own transaction, then publish it; exit 1 if any failed.
    With `wait_s`, then wait for each action's outcome and print it (`report_outcomes`).

    The bus is connected first, so that nothing changes when it is down.
    """

    async def _work(session: AsyncSession, bus: Bus) -> tuple[list[str], list[Outcome]]:
        errors: list[str] = []
        decided: list[int] = []
        sources = RETRY_SOURCES if retry else None
        for ref in refs:
            try:
                action_id = (await get_action(session, ref)).id
                await transition(session, action_id, to, by=by, note=note, sources=sources)
                await session.commit()
            except OpmasError as exc:
                await session.rollback()
                errors.append(
                    f"{exc} (only a failed, timed_out or interrupted one is retried)"
                    if retry
                    else str(exc)
                )
                continue
            decided.append(action_id)
            console.print(f"action {action_id} {'retried: ' if retry else ''}{to}")
            try:
                await publish_action(bus, await action_message(session, action_id))
            except OpmasError as exc:
                errors.append(f"action {action_id} is {to} but was not published: {exc}")
        outcomes = await wait_outcomes(session, decided, wait_s) if wait_s else []
        return errors, outcomes

    errors, outcomes = render.with_session_and_bus(_work)
    code = report_outcomes(outcomes, wait_s) if wait_s else 0
    if errors:
        render.fail("; ".join(errors))
    if code:
        raise typer.Exit(code)


Outcome = tuple[int, str | None, dict[str, Any] | None, str | None, int]
# id, status (None: not finished), result, last note, attempts counted on the row


async def wait_outcomes(
    session: AsyncSession, action_ids: list[int], timeout_s: float
) -> list[Outcome]:
    """Poll until every action reached a final state or `timeout_s` passed; each action's
    (id, status, result, last note, attempts), status None when it had not finished."""
    deadline = time.monotonic() + timeout_s
    final = {str(state) for state in FINAL_STATES}
    done: dict[int, Outcome] = {}
    while True:
        await session.rollback()  # a fresh snapshot each time
        left = [i for i in action_ids if i not in done]
        rows = await session.execute(
            select(
                IntendedAction.id,
                IntendedAction.status,
                IntendedAction.result,
                IntendedAction.history,
                IntendedAction.attempts,
            ).where(IntendedAction.id.in_(left))
        )
        for action_id, status, result, history, attempts in rows:
            if status in final:
                note = history[-1].get("note") if history else None
                done[action_id] = (action_id, status, result, note, attempts)
        if len(done) == len(action_ids) or time.monotonic() >= deadline:
            break
        await asyncio.sleep(WAIT_POLL_S)
    return [done.get(i, (i, None, None, None, 0)) for i in action_ids]


def report_outcomes(outcomes: list[Outcome], timeout_s: float) -> int:
    """Print each outcome (exit status and stderr tail of a failure); the exit code: 0 when
    all succeeded, 124 when one had not finished, else 1."""
    code = 0
    for action_id, status, result, note, attempts in outcomes:
        if status is None:
            console.print(
                f"action {action_id} not finished after {timeout_s:g} s; "
                f"see `opmas actions show {action_id}`"
            )
            code = WAIT_TIMED_OUT
            continue
        summary = _summary(result, note, attempts)
        console.print(f"action {action_id} {status}: {summary}", highlight=False, markup=False)
        stderr = str((result or {}).get("stderr") or "").rstrip("\n")
        if status != "succeeded" and stderr:
            for line in stderr.splitlines()[-STDERR_TAIL:]:
                console.print(f"  stderr: {line}", markup=False, highlight=False)
        if status != "succeeded" and code == 0:
            code = 1
    return code


def _summary(result: dict[str, Any] | None, note: str | None, attempts: int) -> str:
    """One line: exit status, error, attempts (all counted on the row, retries included)."""
    if not result:
        return note or "no result"
    parts = []
    if result.get("exit_status") is not None:
        parts.append(f"exit status {result['exit_status']}")
    if result.get("error"):
        parts.append(str(result["error"]))
    parts.append(f"{attempts} attempt(s)")
    if result.get("duration_s") is not None:
        parts.append(f"{result['duration_s']} s")
    return ", ".join(parts)


@app.command()
def approve(refs: Refs, by: By = None, wait: Wait = False, timeout: WaitTimeout = 120) -> None:
    """Approve pending actions; the executor runs them at once."""
    decide(
        refs, ActionState.APPROVED, by or render.current_user(), None, wait_s=_wait(wait, timeout)
    )


@app.command()
def retry(
    refs: Refs,
    by: By = None,
    wait: Wait = False,
    timeout: WaitTimeout = 120,
) -> None:
    """Run failed, timed-out or interrupted actions again: back to approved, kept in their
    history; the executor makes a new round of attempts (the allowlist is checked again).
    Check the router first: an interrupted action may have run already."""
    who = by or render.current_user()
    decide(refs, ActionState.APPROVED, who, "retry", wait_s=_wait(wait, timeout), retry=True)


def _wait(wait: bool, timeout: float) -> float | None:
    return timeout if wait else None


@app.command()
def reject(
    refs: Refs,
    reason: Annotated[str | None, typer.Option(help="Why (kept in the history).")] = None,
    by: By = None,
) -> None:
    """Reject pending (or approved, not yet running) actions."""
    decide(refs, ActionState.REJECTED, by or render.current_user(), reason)
