"""The executor's hold on the actions it runs: who claimed each one, its heartbeat, the attempts
it started, and the search for actions whose executor is gone, which become `interrupted`.

Every time comes from PostgreSQL's clock (`now()`), so executors on machines whose clocks
disagree still agree on who is late. Statements only flush; the caller commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from opmas.executor import liveness

# the longest a live executor can take: every attempt's timeout, the backoffs between them
BUDGET = (
    "make_interval(secs => timeout_seconds * (retry_count + 1)"
    " + :backoff * (power(2, retry_count) - 1) + :margin)"
)
LAST_SIGN = "coalesce(heartbeat_at, started_at, updated_at)"
OWNERS = text(
    "SELECT DISTINCT executor_id FROM intended_actions"
    " WHERE status = 'running' AND executor_id IS NOT NULL AND executor_id <> :me"
)
ORPHANS = text(
    "SELECT id, executor_id, timeout_seconds, retry_count,"  # noqa: S608 - fixed fragments
    " CASE WHEN executor_id = ANY(:gone) THEN 'gone'"
    f"  WHEN {LAST_SIGN} < now() - make_interval(secs => :stale)"
    "   AND executor_id IS DISTINCT FROM :me THEN 'silent'"
    "  ELSE 'overdue' END AS reason,"
    f" extract(epoch FROM now() - {LAST_SIGN}) AS silent_s,"
    " extract(epoch FROM now() - started_at) AS running_s"
    " FROM intended_actions WHERE status = 'running' AND ("
    "  (executor_id IS DISTINCT FROM :me AND (executor_id = ANY(:gone)"
    f"   OR {LAST_SIGN} < now() - make_interval(secs => :stale)))"
    f"  OR started_at < now() - {BUDGET})"
    " ORDER BY id FOR UPDATE SKIP LOCKED"
)


@dataclass(frozen=True)
class Orphan:
    """A running action whose executor is gone, silent, or past the action's time."""

    id: int
    executor_id: str | None
    reason: str  # gone, silent, overdue; stopped: its own executor is stopping
    silent_s: float
    running_s: float
    timeout_s: int
    tries: int

    def explanation(self) -> str:
        """Why it is interrupted, and what the operator does about it."""
        owner = liveness.pid_of(self.executor_id) if self.executor_id else "an older executor"
        if self.reason == "gone":
            why = f"its executor ({owner}) stopped while it ran (killed or crashed)"
        elif self.reason == "stopped":
            why = f"its executor ({owner}) was stopped before it finished"
        elif self.reason == "silent":
            why = f"its executor ({owner}) has not been heard from for {self.silent_s:.0f} s"
        else:
            why = (
                f"it was still running {self.running_s:.0f} s after it started, past its "
                f"{self.tries} attempt(s) of {self.timeout_s} s"
            )
        return f"interrupted: {why}; {UNKNOWN_OUTCOME} (opmas actions retry {self.id})"


UNKNOWN_OUTCOME = (
    "it may or may not have run on the router: check the router, and retry the action if it "
    "is still needed"
)


def interrupted_result(note: str, reason: str, executor_id: str | None) -> dict[str, Any]:
    """The `result` of an interrupted action: no attempt's outcome is known."""
    return {"outcome": "interrupted", "reason": reason, "error": note, "executor": executor_id}


async def stamp(session: AsyncSession, action_id: int, me: str) -> None:
    """Record that executor `me` runs action `action_id` (just moved to running)."""
    await session.execute(
        text("UPDATE intended_actions SET executor_id = :me, heartbeat_at = now() WHERE id = :id"),
        {"id": action_id, "me": me},
    )


async def beat(session: AsyncSession, me: str) -> int:
    """Refresh the heartbeat of every action executor `me` runs; how many."""
    result = await session.execute(
        text(
            "UPDATE intended_actions SET heartbeat_at = now()"
            " WHERE status = 'running' AND executor_id = :me"
        ),
        {"me": me},
    )
    return int(result.rowcount)  # type: ignore[attr-defined]  # CursorResult of an UPDATE


async def count_attempt(session: AsyncSession, action_id: int, me: str) -> int | None:
    """Count one more attempt of action `action_id`, before it is made; the total so far, or
    None when the action is no longer running on executor `me` (nothing may be attempted)."""
    total = await session.scalar(
        text(
            "UPDATE intended_actions SET attempts = attempts + 1, heartbeat_at = now()"
            " WHERE id = :id AND status = 'running' AND executor_id = :me RETURNING attempts"
        ),
        {"id": action_id, "me": me},
    )
    return None if total is None else int(total)


async def lock_own(session: AsyncSession, action_id: int, me: str) -> int | None:
    """Lock action `action_id` if executor `me` still runs it; its attempts, else None."""
    attempts = await session.scalar(
        text(
            "SELECT attempts FROM intended_actions"
            " WHERE id = :id AND status = 'running' AND executor_id = :me FOR UPDATE"
        ),
        {"id": action_id, "me": me},
    )
    return None if attempts is None else int(attempts)


async def orphans(
    session: AsyncSession, me: str, *, stale_s: float, margin_s: float, backoff_s: float
) -> list[Orphan]:
    """Lock and return the running actions to interrupt: another executor's that is gone
    (its process, on this node) or silent for `stale_s`, and anyone's (this executor's too)
    running `margin_s` past its whole time budget. A row another transaction holds is skipped."""
    here = liveness.node_id()
    owners = (await session.scalars(OWNERS, {"me": me})).all()
    gone = [owner for owner in owners if liveness.process_gone(owner, here)]
    params: dict[str, Any] = {
        "me": me,
        "gone": gone,
        "stale": stale_s,
        "margin": margin_s,
        "backoff": backoff_s,
    }
    return [
        Orphan(
            id=row.id,
            executor_id=row.executor_id,
            reason=row.reason,
            silent_s=float(row.silent_s or 0),
            running_s=float(row.running_s or 0),
            timeout_s=row.timeout_seconds,
            tries=row.retry_count + 1,
        )
        for row in await session.execute(ORPHANS, params)
    ]


async def note_late_outcome(
    session: AsyncSession, action_id: int, me: str, entry: dict[str, Any]
) -> bool:
    """Append `entry` to the history of an action executor `me` ran but that was interrupted
    meanwhile (its outcome is kept for the operator; the state stays); False if not so."""
    result = await session.execute(
        text(
            "UPDATE intended_actions SET history = history || CAST(:entry AS jsonb)"
            " WHERE id = :id AND status = 'interrupted' AND executor_id = :me"
        ),
        {"id": action_id, "me": me, "entry": msgspec.json.encode([entry]).decode()},
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]  # CursorResult of an UPDATE
