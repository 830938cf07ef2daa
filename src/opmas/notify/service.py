"""The `notifier` component: findings.> matched against `notification_rules` and queued in
`notification_history`; a sender loop delivers the queue, one message per channel per
digest interval (a digest when several items are due).

- Queue: one pending row per (finding id, channel) on first sight, ON CONFLICT DO NOTHING,
  so that redeliveries and burst updates add nothing; the messages are acked after the commit.
- Send, every `poll_s`: for each active channel with due rows, the channel row is locked
  (SKIP LOCKED: another replica is sending on it) and, if nothing was sent on it within its
  interval, its due rows are locked and sent as one message, then marked sent under one
  digest id. A failure retries after `retry_backoff_s * 2**(attempts-1)` and gives up
  (`failed`) after `max_attempts`. Rows the executor queues (`notify` actions) go the same way.
- Backfill: a finding read while no rule routed it to a channel is only stored (by the
  orchestrator). When a (rule, channel) pair appears (a new rule, a rule enabled or changed;
  every pair at start), the stored findings still `new` from the last `backfill_s` are queued
  on it, at most `backfill_max` per channel, the newest: one digest, not a flood.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from typing import Self

import httpx
import msgspec
import structlog
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncEngine

from opmas.bus.connect import Bus
from opmas.bus.consume import GATHER_S, Msg, PullConsumer
from opmas.crypto import SecretKeys
from opmas.db.engine import session_factory
from opmas.messages import Finding, finding_decoder
from opmas.notify import history
from opmas.notify.channels import ChannelCrash, DeliveryError, deliver
from opmas.notify.render import digest
from opmas.notify.routing import Route, channel_interval, per_channel
from opmas.settings import Settings

log = structlog.get_logger(__name__)

RECEIVED = Counter("opmas_notifier_received_total", "Findings read from findings.>.")
QUEUED = Counter("opmas_notifier_queued_total", "Notifications queued (finding x channel).")
SENT = Counter("opmas_notifier_sent_total", "Messages delivered.", ["channel_type"])
FAILED = Counter("opmas_notifier_failed_total", "Deliveries that failed.", ["channel_type"])
GAVE_UP = Counter("opmas_notifier_gave_up_total", "Notifications failed for good.")
BACKFILLED = Counter(
    "opmas_notifier_backfilled_total", "Stored findings queued when a rule or channel appeared."
)
DURABLE = "notifier"
MAX_ITEMS_PER_MESSAGE = 5000


class Notifier:
    """Queue findings for the channels their rules name; send the queue, digested."""

    name = "notifier"

    def __init__(self, engine: AsyncEngine, bus: Bus, settings: Settings) -> None:
        self._bus = bus
        self._settings = settings.notifier
        self._keys = SecretKeys(settings)
        self._sessions = session_factory(engine)
        self._consumer: PullConsumer | None = None
        self._http: httpx.AsyncClient | None = None
        self._known_routes: set[Route] = set()

    async def __aenter__(self) -> Self:
        self._http = httpx.AsyncClient(timeout=self._settings.send_timeout_s)
        self._consumer = PullConsumer(
            self._bus,
            self._bus.subjects.findings_stream,
            DURABLE,
            permanent=(msgspec.DecodeError,),
            gather_s=GATHER_S,  # one transaction per batch: gather some
        )
        await self._consumer.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._consumer is not None:
            await self._consumer.__aexit__(None, None, None)
        if self._http is not None:
            await self._http.aclose()

    def health(self) -> str | None:
        """None while healthy; else why its consumer makes no progress (`opmas status`)."""
        return self._consumer.health() if self._consumer is not None else None

    async def run(self, stop: asyncio.Event) -> None:
        """Consume findings and send the queue until `stop` is set."""
        assert self._consumer is not None  # noqa: S101 - set by __aenter__
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._consumer.run(self.handle, stop))
            tasks.create_task(self._send_loop(stop))

    async def handle(self, msgs: list[Msg]) -> None:
        """Queue the findings of `msgs` in one transaction (raises to retry the batch)."""
        await self.queue([finding_decoder.decode(msg.data) for msg in msgs])

    async def queue(self, findings: list[Finding]) -> int:
        """Queue `findings` for their channels; return how many rows are new."""
        RECEIVED.inc(len(findings))
        async with self._sessions() as session, session.begin():
            routes = await history.load_routes(session)
            new = await history.queue_findings(session, findings, routes)
        QUEUED.inc(new)
        return new

    async def _send_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.backfill()
                await self.send_due()
            except Exception as exc:  # database down: log and try again next poll
                log.warning("sending notifications failed", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._settings.poll_s)

    async def backfill(self) -> int:
        """Queue recent stored findings for the (rule, channel) pairs that appeared since the
        last call (every pair at the first); return how many rows are new."""
        async with self._sessions() as session, session.begin():
            routes = per_channel(await history.load_routes(session))
            fresh = routes - self._known_routes
            new = 0
            if fresh and self._settings.backfill_s > 0 and self._settings.backfill_max > 0:
                since = datetime.now(UTC) - timedelta(seconds=self._settings.backfill_s)
                new = await history.backfill(
                    session,
                    sorted(fresh, key=_order),
                    since=since,
                    limit=self._settings.backfill_max,
                )
        self._known_routes = routes
        if new:
            BACKFILLED.inc(new)
            log.info("stored findings queued for new routes", routes=len(fresh), queued=new)
        return new

    async def send_due(self) -> int:
        """Send what is due on every channel whose interval has passed; return messages sent."""
        now = datetime.now(UTC)
        async with self._sessions() as session:
            channel_ids = await history.due_channel_ids(session, now)
            routes = await history.load_routes(session) if channel_ids else []
        sent = 0
        for channel_id in channel_ids:
            try:
                sent += await self._send_channel(channel_id, routes, now)
            except Exception as exc:  # one channel's trouble never keeps the others waiting
                log.warning("sending on a channel failed", channel_id=channel_id, error=repr(exc))
        return sent

    async def _send_channel(self, channel_id: int, routes: list[Route], now: datetime) -> int:
        """One message on one channel, if its interval has passed; 1 when delivered."""
        assert self._http is not None  # noqa: S101 - set by __aenter__
        interval = channel_interval(routes, channel_id, self._settings.digest_interval_s)
        async with self._sessions() as session, session.begin():
            channel = await history.lock_channel(session, channel_id)
            if channel is None:
                return 0
            last = await history.last_sent_at(session, channel_id)
            if last is not None and (now - last).total_seconds() < interval:
                return 0
            rows = await history.lock_due_rows(session, channel_id, now, MAX_ITEMS_PER_MESSAGE)
            if not rows:
                return 0
            fields = {"channel": channel.name, "channel_type": channel.channel_type}
            try:
                message = digest([row.payload or {} for row in rows], interval)
                await deliver(
                    channel, message, box=self._keys.box(), http=self._http, settings=self._settings
                )
            except Exception as exc:  # a bug in one channel fails its rows, not the loop
                expected = isinstance(exc, DeliveryError) and not isinstance(exc, ChannelCrash)
                error = (
                    str(exc) if isinstance(exc, DeliveryError) else f"{type(exc).__name__}: {exc}"
                )
                gave_up = await history.mark_failed(
                    session, rows, error, datetime.now(UTC), self._settings, final=not expected
                )
                FAILED.labels(channel.channel_type).inc()
                GAVE_UP.inc(gave_up)
                log.warning(
                    "delivery failed", **fields, items=len(rows), gave_up=gave_up, error=error
                )
                return 0
            digest_id = await history.mark_sent(session, rows, datetime.now(UTC))
        SENT.labels(channel.channel_type).inc()
        log.info("notification sent", **fields, items=len(rows), digest_id=str(digest_id))
        return 1


def _order(route: Route) -> tuple[int, tuple[int, ...]]:
    return route.rule_id, route.channel_ids
