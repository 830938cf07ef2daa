"""The `orchestrator` component: consumes findings.>, stores each finding, correlates it into an
incident, turns matching playbooks into intended actions and publishes them on actions.<state>;
expires proposals nobody decided on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Self

import msgspec
import structlog
from prometheus_client import Counter
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from opmas import trust
from opmas.bus.connect import Bus
from opmas.bus.consume import GATHER_S, Msg, PullConsumer
from opmas.bus.publish import Publisher
from opmas.bus.subjects import ActionState
from opmas.db.engine import session_factory
from opmas.messages import Finding as FindingMessage
from opmas.messages import finding_decoder
from opmas.models import IntendedAction, Playbook
from opmas.orchestrator.allowlist import Allowlist, load_allowlist
from opmas.orchestrator.correlate import (
    finding_context,
    group_of,
    incident_context,
    is_replay,
)
from opmas.orchestrator.lifecycle import action_messages, action_msg_id, transition
from opmas.orchestrator.playbooks import ensure_default_playbooks
from opmas.orchestrator.policy import hold_over_limit
from opmas.orchestrator.propose import Origin, plan, save_actions
from opmas.orchestrator.store import (
    Attached,
    StoredFinding,
    attach_all,
    touch_incidents,
    upsert_findings,
)
from opmas.orchestrator.targets import TargetPolicy, load_policy
from opmas.settings import Settings

log = structlog.get_logger(__name__)

DURABLE = "orchestrator"
STORED = Counter("opmas_orchestrator_findings_stored_total", "Findings written or updated.")
INCIDENTS = Counter(
    "opmas_orchestrator_incident_changes_total",
    "Findings that opened an incident or changed its type, by the type.",
    ["incident_type"],
)
EXPIRED = Counter("opmas_orchestrator_actions_expired_total", "Proposals nobody decided on.")


class Orchestrator:
    """Findings in; findings, incidents and intended actions out. One transaction per finding."""

    name = "orchestrator"

    def __init__(self, engine: AsyncEngine, bus: Bus, settings: Settings) -> None:
        self._sessions = session_factory(engine)
        self._bus = bus
        self._settings = settings.orchestrator
        self._all_settings = settings  # protected targets: actions, bind addresses
        self._consumer: PullConsumer | None = None

    async def __aenter__(self) -> Self:
        async with self._sessions() as session, session.begin():
            added = await ensure_default_playbooks(session)
        if added:
            log.info("default playbooks loaded", playbooks=added)
        self._consumer = PullConsumer(  # a transaction of ~10 queries per batch: gather some
            self._bus, self._bus.subjects.findings_stream, DURABLE, batch=256, gather_s=GATHER_S
        )
        await self._consumer.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._consumer is not None:
            await self._consumer.__aexit__(None, None, None)

    def health(self) -> str | None:
        """None while healthy; else why its consumer makes no progress (`opmas status`)."""
        return self._consumer.health() if self._consumer is not None else None

    async def run(self, stop: asyncio.Event) -> None:
        assert self._consumer is not None  # noqa: S101 - set by __aenter__
        expiry = asyncio.create_task(self._expire_loop(stop))
        try:
            await self._consumer.run(self.handle, stop)
        finally:
            expiry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await expiry

    async def handle(self, msgs: list[Msg]) -> None:
        """The fetched findings in one transaction; actions published after its commit.
        (A batch that fails for good is handed back one message at a time by the consumer.)"""
        await self.process(*(finding_decoder.decode(msg.data) for msg in msgs))

    async def process(self, *findings: FindingMessage) -> list[int]:
        """Store, correlate and answer findings in one transaction, then publish the actions
        created; return their ids."""
        async with self._sessions() as session, session.begin():
            created = await self._process(session, findings)
        await self._publish(created)
        return created

    async def _process(
        self, session: AsyncSession, findings: Sequence[FindingMessage]
    ) -> list[int]:
        stored = await upsert_findings(session, findings)
        STORED.inc(len(stored))
        await touch_incidents(session, [s for s in stored if s.incident_id is not None])
        fresh = [(s, group_of(s.message, self._settings)) for s in stored if s.incident_id is None]
        attached = await attach_all(session, fresh, self._settings)
        allowlist = await load_allowlist(session)
        targets = await load_policy(session, self._all_settings)
        playbooks: dict[str, list[Playbook]] = {}
        rows: list[dict[str, Any]] = []
        for (found, _), joined in zip(fresh, attached, strict=True):
            rows += await self._plan(session, found, joined, allowlist, playbooks, targets)
        await hold_over_limit(
            session,
            rows,
            self._settings.max_actions_per_device_hour,
            self._settings.pending_ttl_s,
        )
        return await save_actions(session, rows)

    async def _plan(
        self,
        session: AsyncSession,
        found: StoredFinding,
        joined: Attached,
        allowlist: Allowlist,
        playbooks: dict[str, list[Playbook]],
        targets: TargetPolicy,
    ) -> list[dict[str, Any]]:
        """The actions a new finding calls for, and those of its incident's new type (none for
        a finding of `opmas replay` without --notify)."""
        message = found.message
        if is_replay(message):
            return []
        context = finding_context(message, found.device_config)
        ttl = self._settings.pending_ttl_s
        origin = Origin(
            found.id,
            found.created_at,
            joined.incident_id,
            found.device_id,
            message.device_hostname,
            f"finding:{message.finding_id}",
            trust.normalise(str(message.details.get("trust"))),
            found.device_enrolment,
        )
        untrusted = self._settings.propose_untrusted
        rows: list[dict[str, Any]] = []
        if found.inserted:
            rows += await plan(
                session,
                message.finding_type,
                context,
                origin,
                allowlist,
                ttl,
                playbooks,
                targets,
                propose_untrusted=untrusted,
            )
        if joined.new_type is not None:
            INCIDENTS.labels(joined.new_type).inc()
            scope = f"incident:{joined.incident_id}:{joined.new_type}"
            ctx = incident_context(context, joined.incident_id, joined.new_type, joined.details)
            rows += await plan(
                session,
                joined.new_type,
                ctx,
                replace(origin, dedupe_scope=scope),
                allowlist,
                ttl,
                playbooks,
                targets,
                propose_untrusted=untrusted,
            )
        return rows

    async def _publish(self, action_ids: list[int]) -> None:
        """Every created or changed action on actions.<state>, pipelined."""
        if not action_ids:
            return
        async with self._sessions() as session:
            messages = await action_messages(session, action_ids)
        publisher = Publisher(self._bus)
        for message in messages:
            await publisher.publish(
                self._bus.subjects.actions(message.state),
                msgspec.json.encode(message),
                msg_id=action_msg_id(message),
            )
        await publisher.flush()

    async def _expire_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.expire()
            except Exception:  # the loop must outlive a database hiccup
                log.exception("expiring actions failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._settings.expire_check_s)

    async def expire(self) -> int:
        """Pending actions past `expires_at` become expired; return how many."""
        now = datetime.now(UTC)
        async with self._sessions() as session, session.begin():
            due = list(
                (
                    await session.scalars(
                        select(IntendedAction.id).where(
                            IntendedAction.status == "pending", IntendedAction.expires_at < now
                        )
                    )
                ).all()
            )
            for action_id in due:
                await transition(
                    session, action_id, ActionState.EXPIRED, by="orchestrator", note="not decided"
                )
        EXPIRED.inc(len(due))
        await self._publish(due)
        return len(due)
