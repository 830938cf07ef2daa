"""The `orchestrator` component: consumes findings.>, stores each finding, correlates it into an
incident, turns matching playbooks into intended actions and publishes them on actions.<state>;
expires proposals nobody decided on.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Self

import structlog
from prometheus_client import Counter
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from opmas.bus.connect import Bus
from opmas.bus.consume import Msg, PullConsumer
from opmas.bus.subjects import ActionState
from opmas.db.engine import session_factory
from opmas.messages import Finding as FindingMessage
from opmas.messages import finding_decoder
from opmas.models import IntendedAction, Playbook
from opmas.orchestrator.allowlist import Allowlist, load_allowlist
from opmas.orchestrator.correlate import finding_context, group_of, incident_context
from opmas.orchestrator.lifecycle import action_message, publish_action, transition
from opmas.orchestrator.playbooks import ensure_default_playbooks
from opmas.orchestrator.propose import Origin, propose
from opmas.orchestrator.store import attach, touch_incident, upsert_finding
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


@dataclass
class Batch:
    """What one transaction reads once: the allowlist, the playbooks of each trigger."""

    allowlist: Allowlist
    playbooks: dict[str, list[Playbook]] = field(default_factory=dict)
    lookups: dict[object, Any] = field(default_factory=dict)  # devices, agent and rule ids


class Orchestrator:
    """Findings in; findings, incidents and intended actions out. One transaction per finding."""

    name = "orchestrator"

    def __init__(self, engine: AsyncEngine, bus: Bus, settings: Settings) -> None:
        self._sessions = session_factory(engine)
        self._bus = bus
        self._settings = settings.orchestrator
        self._consumer: PullConsumer | None = None

    async def __aenter__(self) -> Self:
        async with self._sessions() as session, session.begin():
            added = await ensure_default_playbooks(session)
        if added:
            log.info("default playbooks loaded", playbooks=added)
        self._consumer = PullConsumer(
            self._bus, self._bus.subjects.findings_stream, DURABLE, batch=64
        )
        await self._consumer.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._consumer is not None:
            await self._consumer.__aexit__(None, None, None)

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
        """Store, correlate and answer findings; return the ids of the actions created."""
        created: list[int] = []
        async with self._sessions() as session, session.begin():
            batch = Batch(await load_allowlist(session))
            for finding in findings:
                created += await self._process(session, finding, batch)
        await self._publish(created)
        return created

    async def _process(
        self, session: AsyncSession, finding: FindingMessage, batch: Batch
    ) -> list[int]:
        stored = await upsert_finding(session, finding, batch.lookups)
        STORED.inc()
        if stored.incident_id is not None:
            await touch_incident(session, stored.incident_id, finding)
            return []
        group = group_of(finding, self._settings)
        attached = await attach(session, stored, finding, group, self._settings)
        if attached.new_type is not None:
            INCIDENTS.labels(attached.new_type).inc()
        allowlist = batch.allowlist
        context = finding_context(finding, stored.device_config)
        created: list[int] = []
        if stored.inserted:
            origin = Origin(
                stored.id,
                stored.created_at,
                attached.incident_id,
                stored.device_id,
                finding.device_hostname,
                f"finding:{finding.finding_id}",
            )
            created += await propose(
                session,
                finding.finding_type,
                context,
                origin,
                allowlist,
                self._settings.pending_ttl_s,
                batch.playbooks,
            )
        if attached.new_type is not None:
            scope = f"incident:{attached.incident_id}:{attached.new_type}"
            origin = Origin(
                stored.id,
                stored.created_at,
                attached.incident_id,
                stored.device_id,
                finding.device_hostname,
                scope,
            )
            ctx = incident_context(
                context, attached.incident_id, attached.new_type, attached.details
            )
            created += await propose(
                session,
                attached.new_type,
                ctx,
                origin,
                allowlist,
                self._settings.pending_ttl_s,
                batch.playbooks,
            )
        return created

    async def _publish(self, action_ids: list[int]) -> None:
        if not action_ids:
            return
        async with self._sessions() as session:
            messages = [await action_message(session, action_id) for action_id in action_ids]
        for message in messages:
            await publish_action(self._bus, message)

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
