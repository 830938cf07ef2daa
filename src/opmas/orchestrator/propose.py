"""Playbook steps turned into intended actions: pending (manual, waits for approval) or
approved (auto, the executor runs it at once), never against an allowlisted target.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from prometheus_client import Counter
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from opmas import trust
from opmas.errors import ActionError
from opmas.executor.commands import build_command
from opmas.models import IntendedAction, Playbook, PlaybookStep
from opmas.orchestrator import policy
from opmas.orchestrator.allowlist import Allowlist
from opmas.orchestrator.playbooks import MissingField, matches, render
from opmas.orchestrator.targets import DECIDED_BY, TargetPolicy

log = structlog.get_logger(__name__)

PROPOSED = Counter(
    "opmas_orchestrator_actions_proposed_total",
    "Intended actions created, by the state they start in.",
    ["state"],
)
SKIPPED = Counter(
    "opmas_orchestrator_steps_skipped_total",
    "Playbook steps that could not become an action (missing field, invalid argument).",
)


@dataclass(frozen=True)
class Origin:
    """What an action answers: a finding (always) and its incident and router."""

    finding_id: int | None
    finding_created_at: datetime | None
    incident_id: int | None
    device_id: int | None
    device_hostname: str | None
    dedupe_scope: str  # "finding:<uuid>" or "incident:<id>"
    trust: str = trust.UNTRUSTED  # the finding's details["trust"]: weakest of its evidence
    device_enrolment: str | None = None  # of the router: enrolled, discovered


async def active_playbooks(session: AsyncSession, trigger: str) -> list[Playbook]:
    query = (
        select(Playbook)
        .where(Playbook.is_active, Playbook.trigger_type == trigger)
        .options(selectinload(Playbook.steps))
        .order_by(Playbook.id)
    )
    return list((await session.scalars(query)).all())


async def plan(
    session: AsyncSession,
    trigger: str,
    context: Mapping[str, Any],
    origin: Origin,
    allowlist: Allowlist,
    pending_ttl_s: float,
    cache: dict[str, list[Playbook]],
    targets: TargetPolicy | None = None,
    *,
    propose_untrusted: bool = True,
) -> list[dict[str, Any]]:
    """The `intended_actions` rows of every active playbook of `trigger` whose conditions
    hold (not yet written: see `save_actions`). `cache` keeps the playbooks per trigger for
    one transaction; an action against one of `targets` starts rejected."""
    if trigger not in cache:
        cache[trigger] = await active_playbooks(session, trigger)
    rows: list[dict[str, Any]] = []
    for playbook in cache[trigger]:
        if not matches(playbook.trigger_conditions, context):
            continue
        for step in playbook.steps:
            if not policy.proposable(step.action_type, origin.trust, propose_untrusted):
                continue
            row = _row(playbook, step, context, origin, allowlist, pending_ttl_s)
            if row is not None and targets is not None:
                await refuse_protected(session, row, targets, origin.device_hostname)
            if row is not None:
                rows.append(row)
    return rows


async def save_actions(session: AsyncSession, rows: list[dict[str, Any]]) -> list[int]:
    """Insert the planned rows in one statement; return the ids created (a redelivery
    creates none: `dedupe_key` is unique)."""
    if not rows:
        return []
    created = await session.execute(
        insert(IntendedAction)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
        .returning(IntendedAction.id, IntendedAction.status)
    )
    ids: list[int] = []
    for action_id, status in created:
        PROPOSED.labels(status).inc()
        ids.append(action_id)
    return sorted(ids)


def _row(
    playbook: Playbook,
    step: PlaybookStep,
    context: Mapping[str, Any],
    origin: Origin,
    allowlist: Allowlist,
    pending_ttl_s: float,
) -> dict[str, Any] | None:
    try:
        config = render(step.action_config, context)
        description = render(step.description or playbook.name, context)
        if step.action_type == "ssh_command":
            build_command(config)  # the arguments are valid before anyone is asked
    except (MissingField, ActionError) as exc:
        SKIPPED.inc()
        log.warning(
            "playbook step skipped", playbook=playbook.name, step=step.step_number, reason=str(exc)
        )
        return None
    now = datetime.now(UTC)
    mode = step.execution_mode or playbook.execution_mode
    protected = allowlist.check_action(step.action_type, config, origin.device_hostname)
    verdict = policy.step_verdict(
        step.action_type,
        mode,
        step.auto_min_trust or playbook.auto_min_trust,
        origin.trust,
        origin.device_enrolment,
        origin.device_hostname,
    )
    state, decided_by, history = _start(playbook, step, mode, protected, now, verdict)
    values = {
        "finding_id": origin.finding_id,
        "finding_created_at": origin.finding_created_at,
        "incident_id": origin.incident_id,
        "playbook_id": playbook.id,
        "device_id": origin.device_id,
        "status": state,
        "action_type": step.action_type,
        "action_config": config,
        "execution_mode": mode,
        "description": str(description)[:2000],
        "timeout_seconds": step.timeout_seconds,
        "retry_count": step.retry_count,
        "step_number": step.step_number,
        "dedupe_key": f"{playbook.id}:{step.step_number}:{origin.dedupe_scope}",
        "expires_at": now + timedelta(seconds=pending_ttl_s) if state == "pending" else None,
        "decided_at": now if state != "pending" else None,
        "decided_by": decided_by,
        "history": history,
        "evidence_trust": origin.trust,
    }
    return values


def _start(
    playbook: Playbook,
    step: PlaybookStep,
    mode: str,
    protected: str | None,
    now: datetime,
    verdict: policy.Verdict,
) -> tuple[str, str | None, list[dict[str, Any]]]:
    """The state an action starts in, who decided it, and its first history entries:
    pending (manual, or auto on evidence weaker than the step needs), approved by the
    playbook (auto), or rejected by the allowlist or because the router is not enrolled."""
    at = now.isoformat()
    note = f"playbook {playbook.name} step {step.step_number}"
    history: list[dict[str, Any]] = [
        {"state": "pending", "at": at, "by": "orchestrator", "note": note}
    ]
    if protected is not None:
        note = f"target allowlisted: {protected}"
        history.append({"state": "rejected", "at": at, "by": "allowlist", "note": note})
        return "rejected", "allowlist", history
    if verdict.state == "rejected":
        history.append({"state": "rejected", "at": at, "by": verdict.by, "note": verdict.note})
        return "rejected", verdict.by, history
    if verdict.state == "pending":
        history.append({"state": "pending", "at": at, "by": "trust", "note": verdict.note})
        return "pending", None, history
    if mode == "auto":
        history.append({"state": "approved", "at": at, "by": "playbook", "note": "auto step"})
        return "approved", "playbook", history
    return "pending", None, history


async def refuse_protected(
    session: AsyncSession, row: dict[str, Any], targets: TargetPolicy, hostname: str | None
) -> None:
    """Turn a planned row against a protected target into one rejected by `protected-target`,
    the reason in its history (a row the allowlist rejected stays as it is)."""
    if row["status"] == "rejected":
        return
    reason = await targets.check_action(session, row["action_type"], row["action_config"], hostname)
    if reason is None:
        return
    now = datetime.now(UTC)
    row["history"] = [  # the auto step's approval never happened
        *(entry for entry in row["history"] if entry["state"] == "pending"),
        {"state": "rejected", "at": now.isoformat(), "by": DECIDED_BY, "note": reason},
    ]
    row.update(status="rejected", decided_by=DECIDED_BY, decided_at=now, expires_at=None)
    log.warning("action against a protected target rejected", reason=reason)
