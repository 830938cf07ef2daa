"""Decisions: what the executor blocked or banned on a router (a succeeded `nft_block_ip` or
`wifi_kick_ban`), until when, why, and whether it was lifted; and the action that lifts one.

A decision is `active` until its duration has passed since the block ran (`expired`: the
router dropped it by itself, nft set timeouts and hostapd bans expire on their own) or until
an unblock action naming it (`lifts_action_id`) succeeded (`lifted`). Lifting goes through
the same approval and allowlist rules as every other action.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from opmas.bus.subjects import ActionState
from opmas.errors import ActionError
from opmas.executor import commands
from opmas.models import Device, Finding, IntendedAction, Playbook
from opmas.orchestrator.allowlist import Allowlist
from opmas.orchestrator.lifecycle import with_origin

OPEN_STATES = ("pending", "approved", "running")


@dataclass(frozen=True)
class Blocking:
    """A command template that blocks something for a while, and its reverse."""

    target: str  # the argument naming what is blocked
    duration_arg: str
    default_s: int
    maximum_s: int
    reverse: str  # the template lifting it
    kind: str


BLOCKING = {
    "nft_block_ip": Blocking("ip", "timeout", 3600, commands.MAX_BLOCK_S, "nft_unblock_ip", "ip"),
    "wifi_kick_ban": Blocking("mac", "ban_s", 600, commands.MAX_BAN_S, "wifi_unban", "mac"),
}
LONGEST_S = max(b.maximum_s for b in BLOCKING.values())


@dataclass(frozen=True)
class Decision:
    """One block or ban as the operator sees it."""

    id: int
    state: str  # active, expired, lifted
    device: str | None
    kind: str  # ip, mac
    target: str
    since: datetime | None
    until: datetime | None
    template: str
    finding_type: str | None
    rule_name: str | None
    incident_id: int | None
    playbook: str | None
    description: str | None
    lifted_by: int | None  # the unblock action that succeeded
    lifting: int | None  # an unblock action still pending, approved or running

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def blocking_of(config: Mapping[str, Any]) -> Blocking | None:
    """The blocking template of an `ssh_command` action_config, or None."""
    template = config.get("template")
    return BLOCKING.get(template) if isinstance(template, str) else None


def args_of(config: Mapping[str, Any]) -> Mapping[str, Any]:
    args = config.get("args")
    return args if isinstance(args, Mapping) else {}


def duration_s(config: Mapping[str, Any]) -> int | None:
    """How long the block of `config` lasts on the router; None if it is not a block."""
    blocking = blocking_of(config)
    if blocking is None:
        return None
    try:
        return commands.seconds_arg(
            args_of(config), blocking.duration_arg, blocking.default_s, blocking.maximum_s
        )
    except ActionError:
        return None


def lift_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The action_config undoing the block of `config` (same address, set or interface).

    Raises:
        ActionError: `config` is not a block, or its arguments are invalid.
    """
    blocking = blocking_of(config)
    if blocking is None:
        raise ActionError(f"template {config.get('template')!r} is not a block or a ban")
    args = args_of(config)
    keep = ("ip", "set") if blocking.reverse == "nft_unblock_ip" else ("mac", "interface")
    lifted = {
        "template": blocking.reverse,
        "args": {k: args[k] for k in keep if args.get(k) is not None},
    }
    commands.build_command(lifted)  # the arguments are valid before anyone is asked
    return lifted


def normal_target(value: object) -> str:
    """An IP as `ipaddress` writes it, a MAC in lower case with colons."""
    text = str(value).strip()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text.lower().replace("-", ":")


def state_of(until: datetime | None, lifted_by: int | None, now: datetime) -> str:
    if lifted_by is not None:
        return "lifted"
    if until is not None and until <= now:
        return "expired"
    return "active"


def _query(device: str | None) -> Select[Any]:
    query = (
        with_origin(
            select(
                IntendedAction, Device.hostname, Finding.finding_type, Finding.rule_name
            ).add_columns(Playbook.name)
        )
        .where(
            IntendedAction.status == str(ActionState.SUCCEEDED),
            IntendedAction.action_type == "ssh_command",
            IntendedAction.action_config["template"].astext.in_(list(BLOCKING)),
        )
        .order_by(IntendedAction.finished_at.desc(), IntendedAction.id.desc())
    )
    if device:
        query = query.where((Device.hostname == device) | (func.host(Device.ip_address) == device))
    return query


async def list_decisions(
    session: AsyncSession,
    *,
    device: str | None = None,
    include_all: bool = False,
    ids: list[int] | None = None,
    limit: int = 1000,
    now: datetime | None = None,
) -> list[Decision]:
    """Decisions, newest first: only the active ones unless `include_all` (or `ids`)."""
    now = now or datetime.now(UTC)
    query = _query(device)
    if ids is not None:
        query = query.where(IntendedAction.id.in_(ids))
    elif not include_all:  # nothing older than the longest block can still be active
        query = query.where(IntendedAction.finished_at > now - timedelta(seconds=LONGEST_S))
    else:
        query = query.limit(limit)
    rows = (await session.execute(query)).all()
    lifts = await _lifts(session, [row[0].id for row in rows])
    found = [_decision(*row, lifts=lifts.get(row[0].id, []), now=now) for row in rows]
    if include_all or ids is not None:
        return found
    return [d for d in found if d.state == "active"][:limit]


async def _lifts(session: AsyncSession, ids: list[int]) -> dict[int, list[tuple[int, str]]]:
    """(id, status) of the unblock actions of each decision, oldest first."""
    if not ids:
        return {}
    rows = await session.execute(
        select(IntendedAction.lifts_action_id, IntendedAction.id, IntendedAction.status)
        .where(IntendedAction.lifts_action_id.in_(ids))
        .order_by(IntendedAction.id)
    )
    found: dict[int, list[tuple[int, str]]] = {}
    for lifts, action_id, status in rows:
        if lifts is not None:
            found.setdefault(lifts, []).append((action_id, status))
    return found


def _decision(
    action: IntendedAction,
    hostname: str | None,
    finding_type: str | None,
    rule_name: str | None,
    playbook: str | None,
    *,
    lifts: list[tuple[int, str]],
    now: datetime,
) -> Decision:
    config = action.action_config
    blocking = blocking_of(config)
    assert blocking is not None  # noqa: S101 - the query selects blocking templates only
    seconds = duration_s(config)
    since = action.finished_at or action.executed_at
    until = since + timedelta(seconds=seconds) if since is not None and seconds else None
    lifted_by = next((i for i, status in lifts if status == "succeeded"), None)
    lifting = next((i for i, status in lifts if status in OPEN_STATES), None)
    return Decision(
        id=action.id,
        state=state_of(until, lifted_by, now),
        device=hostname,
        kind=blocking.kind,
        target=normal_target(args_of(config).get(blocking.target)),
        since=since,
        until=until,
        template=str(config.get("template")),
        finding_type=finding_type,
        rule_name=rule_name,
        incident_id=action.incident_id,
        playbook=playbook,
        description=action.description,
        lifted_by=lifted_by,
        lifting=lifting,
    )


async def lift(
    session: AsyncSession,
    decision: Decision,
    *,
    by: str,
    approve: bool,
    allowlist: Allowlist,
    pending_ttl_s: float,
) -> IntendedAction:
    """Create the action lifting an active `decision`: pending (or approved if `approve`),
    rejected at once if its target is allowlisted; flushed, not committed.

    Raises:
        ActionError: the decision is not active, is being lifted already, or its router is no
            longer a device.
    """
    if decision.state != "active":
        raise ActionError(f"decision {decision.id} is {decision.state}; nothing to lift")
    if decision.lifting is not None:
        raise ActionError(f"decision {decision.id} is being lifted by action {decision.lifting}")
    block = await session.get(IntendedAction, decision.id)
    assert block is not None  # noqa: S101 - just listed
    if block.device_id is None:
        raise ActionError(
            f"decision {decision.id} has no device any more (removed): no router to lift it on"
        )
    config = lift_config(block.action_config)
    now = datetime.now(UTC)
    at = now.isoformat()
    history: list[dict[str, Any]] = [
        {"state": "pending", "at": at, "by": by, "note": f"lifts decision {decision.id}"}
    ]
    protected = allowlist.check_action("ssh_command", config, decision.device)
    if protected is not None:
        status, decided_by = "rejected", "allowlist"
        history.append(
            {
                "state": status,
                "at": at,
                "by": decided_by,
                "note": f"target allowlisted: {protected}",
            }
        )
    elif approve:
        status, decided_by = "approved", by
        history.append({"state": status, "at": at, "by": by, "note": None})
    else:
        status, decided_by = "pending", None
    action = IntendedAction(
        finding_id=block.finding_id,
        finding_created_at=block.finding_created_at,
        incident_id=block.incident_id,
        device_id=block.device_id,
        status=status,
        action_type="ssh_command",
        action_config=config,
        execution_mode="manual",
        description=f"{commands.describe(config)} on {decision.device} "
        f"(lifts decision {decision.id})",
        timeout_seconds=block.timeout_seconds,
        retry_count=block.retry_count,
        expires_at=now + timedelta(seconds=pending_ttl_s) if status == "pending" else None,
        decided_by=decided_by,
        decided_at=now if status != "pending" else None,
        lifts_action_id=decision.id,
        history=history,
    )
    session.add(action)
    await session.flush()
    return action
