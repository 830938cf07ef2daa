"""Action policy: what a proposed action may do on its own, given how far its evidence and its
router are trusted, and how many actions its router already got this hour.

Only `ssh_command` and `webhook` actions are gated (they act outside OPMAS); a `notify` step
only tells people, like the notifier already does for every finding.

- An `ssh_command` step on a `discovered` router (seen in logs only), or on a hostname with
  no device row at all, is created `rejected` by `enrolment`, the reason in its history.
- An `auto` step runs at once only when its finding's trust is at least the step's (else the
  playbook's) `auto_min_trust`, `address` when unset; `untrusted` evidence is never auto. Below
  it the action is created `pending` with the reason in its history.
- `propose_untrusted=false`: steps resting on untrusted evidence are not proposed at all.
- At most `max_actions_per_device_hour` gated actions per router per hour run on their own;
  the excess is held `pending` (noted in its history, counted).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from prometheus_client import Counter
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from opmas import trust
from opmas.models import IntendedAction

log = structlog.get_logger(__name__)

GATED_TYPES = ("ssh_command", "webhook")
DEFAULT_AUTO_MIN_TRUST = trust.ADDRESS
AUTO_MIN_TRUSTS = (trust.ADDRESS, trust.VERIFIED)  # untrusted is never enough to run alone
RATE_WINDOW = timedelta(hours=1)

HELD = Counter(
    "opmas_orchestrator_actions_held_total",
    "Auto actions created pending instead, by reason (trust, rate_limit).",
    ["reason"],
)
NOT_PROPOSED = Counter(
    "opmas_orchestrator_untrusted_not_proposed_total",
    "Steps not proposed: their evidence is untrusted and propose_untrusted is false.",
)
RATE_LIMITED = Counter(
    "opmas_orchestrator_rate_limited_total",
    "Actions beyond max_actions_per_device_hour for their router (held pending).",
)


@dataclass(frozen=True)
class Verdict:
    """How a step starts: `state` None lets the playbook's mode decide; else the forced
    state, who decided and why."""

    state: str | None = None
    by: str | None = None
    note: str | None = None


def gated(action_type: str) -> bool:
    return action_type in GATED_TYPES


def step_verdict(
    action_type: str,
    mode: str,
    min_trust: str | None,
    evidence: str,
    device_enrolment: str | None,
    hostname: str | None,
) -> Verdict:
    """The policy's word on one step (before the rate limit): reject on a discovered router,
    hold an auto step whose evidence is weaker than its `auto_min_trust`."""
    if not gated(action_type):
        return Verdict()
    if action_type == "ssh_command" and device_enrolment is None:
        return Verdict("rejected", "enrolment", no_device_note(hostname))
    if action_type == "ssh_command" and device_enrolment == "discovered":
        note = (
            f"device {hostname} is discovered (seen in logs only), not enrolled: "
            f"opmas devices enrol {hostname} to let OPMAS act on it"
        )
        return Verdict("rejected", "enrolment", note)
    needed = min_trust if min_trust in AUTO_MIN_TRUSTS else DEFAULT_AUTO_MIN_TRUST
    if mode == "auto" and trust.rank(evidence) < trust.rank(needed):
        HELD.labels("trust").inc()
        note = f"evidence is {evidence}; auto needs {needed}: waits for approval"
        return Verdict("pending", None, note)
    return Verdict()


def no_device_note(hostname: str | None) -> str:
    """Why an SSH step for a router OPMAS has no device row for is created rejected."""
    if not hostname:
        return "no enrolled device: the finding names no router, so there is none to log in to"
    return (
        f"no enrolled device for hostname {hostname}: OPMAS logs in only to a router an "
        f"operator added (opmas devices add {hostname} --ip ADDRESS)"
    )


def proposable(action_type: str, evidence: str, propose_untrusted: bool) -> bool:
    """False for a gated step on untrusted evidence when such steps are not to be proposed."""
    if propose_untrusted or not gated(action_type) or evidence != trust.UNTRUSTED:
        return True
    NOT_PROPOSED.inc()
    return False


async def hold_over_limit(
    session: AsyncSession, rows: list[dict[str, Any]], limit: int, pending_ttl_s: float
) -> None:
    """Hold `pending` the gated rows beyond `limit` per router in the last hour (the rows
    already stored count, rejected ones do not); changes `rows` in place."""
    devices = {
        r["device_id"] for r in rows if r["device_id"] is not None and gated(r["action_type"])
    }
    if limit <= 0 or not devices:
        return
    now = datetime.now(UTC)
    counted = await session.execute(
        select(IntendedAction.device_id, func.count())
        .where(
            IntendedAction.device_id.in_(devices),
            IntendedAction.action_type.in_(GATED_TYPES),
            IntendedAction.status != "rejected",
            IntendedAction.created_at > now - RATE_WINDOW,
        )
        .group_by(IntendedAction.device_id)
    )
    used: dict[int, int] = {d: int(n) for d, n in counted.all() if d is not None}
    for row in rows:
        device_id = row["device_id"]
        if device_id is None or not gated(row["action_type"]) or row["status"] == "rejected":
            continue
        used[device_id] = used.get(device_id, 0) + 1
        if used[device_id] <= limit:
            continue
        RATE_LIMITED.inc()
        note = f"rate limit: more than {limit} actions for this router in the last hour"
        if row["status"] == "approved":
            HELD.labels("rate_limit").inc()
            row["history"] = [h for h in row["history"] if h["state"] != "approved"]
            row.update(
                status="pending",
                decided_at=None,
                decided_by=None,
                expires_at=now + timedelta(seconds=pending_ttl_s),
            )
            note += ": waits for approval"
        entry = {"state": "pending", "at": now.isoformat(), "by": "rate-limit", "note": note}
        row["history"].append(entry)
        if used[device_id] == limit + 1:  # once per router when it crosses the limit
            log.warning("action rate limit reached", device_id=device_id, limit=limit)
