"""The life of an intended action: which transitions are allowed, how one is recorded (a
compare-and-set on the row, appended to its `history`) and published on `actions.<state>`.

The orchestrator creates actions, `opmas actions approve|reject` decides them, the executor
runs them; all three go through `transition`, so an action is never run twice or decided
after it ran.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeVarTuple

import msgspec
from sqlalchemy import Select, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from opmas.bus.connect import Bus
from opmas.bus.publish import publish
from opmas.bus.subjects import ActionState
from opmas.errors import ActionError
from opmas.messages import Action, iso_utc
from opmas.models import Device, Finding, IntendedAction, Playbook

TRANSITIONS: dict[ActionState, frozenset[ActionState]] = {
    ActionState.PENDING: frozenset(
        {ActionState.APPROVED, ActionState.REJECTED, ActionState.EXPIRED}
    ),
    ActionState.APPROVED: frozenset({ActionState.RUNNING, ActionState.REJECTED}),
    ActionState.RUNNING: frozenset(
        {
            ActionState.SUCCEEDED,
            ActionState.FAILED,
            ActionState.TIMED_OUT,
            ActionState.INTERRUPTED,
        }
    ),  # never back to approved by itself: only an operator's retry runs an action again
}
FINAL_STATES = frozenset(
    {
        ActionState.SUCCEEDED,
        ActionState.FAILED,
        ActionState.TIMED_OUT,
        ActionState.REJECTED,
        ActionState.EXPIRED,
        ActionState.INTERRUPTED,
    }
)

RETRY_SOURCES = frozenset(
    {ActionState.FAILED, ActionState.TIMED_OUT, ActionState.INTERRUPTED}
)  # `opmas actions retry`

_TIME_COLUMN = {
    ActionState.APPROVED: "decided_at",
    ActionState.REJECTED: "decided_at",
    ActionState.RUNNING: "started_at",
    ActionState.SUCCEEDED: "finished_at",
    ActionState.FAILED: "finished_at",
    ActionState.TIMED_OUT: "finished_at",
    ActionState.EXPIRED: "finished_at",
    ActionState.INTERRUPTED: "finished_at",
}


def sources_of(state: ActionState) -> list[str]:
    """The states an action may be in to move to `state`."""
    return [str(src) for src, targets in TRANSITIONS.items() if state in targets]


async def transition(
    session: AsyncSession,
    action_id: int,
    to: ActionState,
    *,
    by: str | None = None,
    note: str | None = None,
    result: dict[str, Any] | None = None,
    attempts: int | None = None,
    sources: frozenset[ActionState] | None = None,
) -> IntendedAction:
    """Move action `action_id` to `to` if its current state allows it; flush, do not commit.

    `sources` replaces the states allowed by `TRANSITIONS` (a retry moves a failed action
    back to approved: `RETRY_SOURCES`).

    Concurrent callers are safe: the UPDATE only matches a row still in an allowed state, so
    of two executors (or an approve racing an expiry) exactly one wins.

    Raises:
        ActionError: no such action, or its state does not allow the move (message says which).
    """
    now = datetime.now(UTC)
    entry: dict[str, object] = {"state": str(to), "at": now.isoformat(), "by": by, "note": note}
    if attempts is not None:
        entry["attempt"] = attempts
    sets = ["status = :to", "history = history || CAST(:entry AS jsonb)"]
    params: dict[str, Any] = {
        "id": action_id,
        "to": str(to),
        "sources": sorted(map(str, sources)) if sources is not None else sources_of(to),
        "entry": msgspec.json.encode([entry]).decode(),
        "now": now,
    }
    column = _TIME_COLUMN.get(to)
    if column is not None:
        sets.append(f"{column} = :now")
    if to in (ActionState.APPROVED, ActionState.REJECTED) and by is not None:
        sets.append("decided_by = :by")
        params["by"] = by
    if result is not None:
        sets.append("result = CAST(:result AS jsonb)")
        params["result"] = msgspec.json.encode(result).decode()
    if to in (ActionState.SUCCEEDED, ActionState.FAILED, ActionState.TIMED_OUT):
        sets.append("executed_at = :now")
    if attempts is not None:
        sets.append("attempts = :attempts")
        params["attempts"] = attempts
    statement = text(
        f"UPDATE intended_actions SET {', '.join(sets)}"  # noqa: S608 - fixed column names
        " WHERE id = :id AND status = ANY(:sources) RETURNING id"
    )
    updated = (await session.execute(statement, params)).scalar_one_or_none()
    if updated is None:
        current = await session.scalar(
            select(IntendedAction.status).where(IntendedAction.id == action_id)
        )
        if current is None:
            raise ActionError(f"no action {action_id}")
        raise ActionError(f"action {action_id} is {current}; it cannot become {to}")
    row = await session.get(IntendedAction, action_id, populate_existing=True)
    assert row is not None  # noqa: S101 - just updated
    return row


async def action_message(session: AsyncSession, action_id: int) -> Action:
    """The bus message describing action `action_id` as it is now in the database."""
    found = await action_messages(session, [action_id])
    if not found:
        raise ActionError(f"no action {action_id}")
    return found[0]


Row = TypeVarTuple("Row")


def with_origin(query: Select[*Row]) -> Select[*Row]:
    """`query` over intended_actions joined (outer) to the action's device, finding (the
    partitioned table's key is id + created_at) and playbook, for their columns."""
    return (
        query.outerjoin(Device, Device.id == IntendedAction.device_id)
        .outerjoin(
            Finding,
            (Finding.id == IntendedAction.finding_id)
            & (Finding.created_at == IntendedAction.finding_created_at),
        )
        .outerjoin(Playbook, Playbook.id == IntendedAction.playbook_id)
    )


async def action_messages(session: AsyncSession, action_ids: list[int]) -> list[Action]:
    """`action_message` of several actions in one query, in id order (missing ids skipped)."""
    columns = (IntendedAction, Device.hostname, Device.ip_address, Finding.finding_uuid)
    query = (
        with_origin(select(*columns, Playbook.name))
        .where(IntendedAction.id.in_(action_ids))
        .order_by(IntendedAction.id)
        .execution_options(populate_existing=True)
    )
    now = iso_utc(datetime.now(UTC).timestamp())
    return [
        Action(
            action_id=row.id,
            action_uuid=str(row.action_uuid),
            state=row.status,
            action_type=row.action_type,
            action_config=row.action_config,
            execution_mode=row.execution_mode,
            device_hostname=hostname,
            device_ip=str(ip) if ip is not None else None,
            finding_uuid=str(finding_uuid) if finding_uuid is not None else None,
            incident_id=row.incident_id,
            playbook=playbook,
            description=row.description,
            attempts=row.attempts,
            result=row.result,
            ts_utc=now,
        )
        for row, hostname, ip, finding_uuid, playbook in await session.execute(query)
    ]


def action_msg_id(message: Action) -> str:
    """Nats-Msg-Id of a transition: a repeat of the same one is stored once."""
    return f"{message.action_uuid}:{message.state}:{message.attempts}"


async def publish_action(bus: Bus, message: Action) -> None:
    """Publish `message` on actions.<state>; a repeat of the same transition is a no-op."""
    await publish(
        bus,
        bus.subjects.actions(message.state),
        msgspec.json.encode(message),
        msg_id=action_msg_id(message),
    )
