"""The fleet stage as a component: signals.fleet (SIGNALS) in, FLEET findings to
findings.<domain>.

- Start: makes sure every agent has its row and the shipped rules (as an agent's first start
  does), loads the FLEET rules of every agent from `agent_rules`, and rebuilds its windows by
  replaying SIGNALS from now minus its longest window and cooldown up to where its durable
  consumer had acked, without publishing: a burst that straddles a restart is found once.
- Running: folds each batch of signals; a finding that opens is published at once, the growth
  of an open one at most every `update_interval_s` (same finding id, larger count), with
  Nats-Msg-Id `<finding_id>:<count>`. Findings are published before the signals are acked.
- Every `rule_poll_s`: reloads the rules if a row of any agent changed (unchanged rules keep
  their windows).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Self

import msgspec
import nats.errors
import nats.js.errors
import structlog
from prometheus_client import Counter, Gauge
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from opmas.agents import registry
from opmas.agents.fleet import FleetRules, fleet_specs
from opmas.agents.growth import GrowingFindings
from opmas.agents.pack import RuleSpec, load_pack
from opmas.agents.registry import AGENTS
from opmas.bus.connect import Bus
from opmas.bus.consume import Msg, PermanentError, PullConsumer, replay
from opmas.bus.publish import Publisher
from opmas.errors import BusError
from opmas.messages import FORMAT_VERSION, Finding, Signal, signal_batch_decoder
from opmas.settings import AgentSettings

log = structlog.get_logger(__name__)

SIGNALS = Counter("opmas_fleet_signals_total", "Signals folded by the fleet stage.")
DROPPED = Counter(
    "opmas_fleet_signal_events_dropped_total", "Events collectors could not count (full)."
)
OPENED = Counter("opmas_fleet_findings_total", "Fleet findings opened, by rule.", ["rule"])
UPDATES = Counter("opmas_fleet_finding_updates_total", "Updates of open fleet findings sent.")
KEYS = Gauge("opmas_fleet_rule_keys", "Keys held in the fleet rules' windows.")
FUTURE_SLACK_S = 300.0  # a signal dated further ahead than this does not move the clock
DURABLE = "fleet"

Version = tuple[tuple[int, int, datetime | None], ...]


class FleetStage:
    """The one fleet-level stage; see the module docstring. Uses the agents' settings
    (`rule_poll_s`, `update_interval_s`, `max_keys_per_rule`, `replay_max_s`)."""

    name = "fleet"

    def __init__(
        self,
        engine: AsyncEngine,
        bus: Bus,
        settings: AgentSettings,
        *,
        pack: Sequence[RuleSpec] | None = None,
        fetch_batch: int = 64,
    ) -> None:
        self._engine = engine
        self._bus = bus
        self._settings = settings
        self._pack = pack
        self._fetch_batch = fetch_batch
        self._agent_ids: dict[str, int] = {}
        self._rules = FleetRules(max_keys=settings.max_keys_per_rule)
        self._version: Version | None = None
        self._growth = GrowingFindings(bus, max_tracked=settings.max_keys_per_rule)
        self._clock = 0.0  # newest signal time seen (bounded by wall clock + slack)
        self._consumer: PullConsumer | None = None  # while running
        self.signals = 0
        self.opened = 0

    async def __aenter__(self) -> Self:
        pack = list(self._pack) if self._pack is not None else load_pack()
        for ident in AGENTS.values():
            self._agent_ids[ident.name] = await registry.register(self._engine, ident, pack)
        await self._reload_rules()
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self._flush_updates(force=True)
        except (BusError, TimeoutError, nats.errors.Error) as error:
            log.warning("fleet updates not flushed", error=repr(error))

    def health(self) -> str | None:
        """None while healthy; else why its consumer makes no progress (`opmas status`)."""
        return self._consumer.health() if self._consumer is not None else None

    def describe(self) -> str:
        keys, _ = self._rules.state_size()
        return f"{len(self._rules.specs)} fleet rules over signals.fleet, {keys} keys"

    async def run(self, stop: asyncio.Event) -> None:
        start_time = await self._rebuild_windows()
        consumer = PullConsumer(
            self._bus,
            self._bus.subjects.signals_stream,
            DURABLE,
            filter_subject=self._bus.subjects.signals,
            batch=self._fetch_batch,
            start_time=start_time,
            permanent=(msgspec.DecodeError,),
        )
        last_expire = last_poll = time.monotonic()
        self._consumer = consumer
        async with consumer:
            while not stop.is_set():
                msgs = await consumer.next_batch(stop, timeout=0.25)
                if msgs:
                    await consumer.process(msgs, self.handle, stop=stop)
                await self._flush_updates()
                now = time.monotonic()
                if now - last_expire >= 1.0:
                    last_expire = now
                    self._rules.expire(self._clock)
                    KEYS.set(self._rules.state_size()[0])
                if now - last_poll >= self._settings.rule_poll_s:
                    last_poll = now
                    await self._poll_rules()

    # -- signals -----------------------------------------------------------------------------

    async def handle(self, msgs: list[Msg]) -> None:
        """Fold the signals of each message; publish what they open before returning."""
        fresh: list[Finding] = []
        for msg in msgs:
            fresh.extend(self.fold(_signals(msg.data), publish=True))
        if fresh:
            publisher = Publisher(self._bus)
            for finding in fresh:
                await self._growth.publish(publisher, finding)
            await publisher.flush()

    def fold(self, signals: list[Signal], *, publish: bool) -> list[Finding]:
        """Fold signals into the windows; the findings they open (growth is queued)."""
        ceiling = time.time() + FUTURE_SLACK_S
        for signal in signals:
            if ceiling > signal.last_ts > self._clock:
                self._clock = signal.last_ts
        self.signals += len(signals)
        SIGNALS.inc(len(signals))
        opened: list[Finding] = []
        for hit in self._rules.fold_hits(signals):
            if not publish:
                continue
            if hit.new:
                opened.append(hit.finding)
                self._growth.opened(hit.finding)
                OPENED.labels(hit.finding.rule_name).inc()
                self.opened += 1
            else:
                self._growth.grew(hit.finding)
        return opened

    async def _flush_updates(self, *, force: bool = False) -> None:
        """Republish grown findings whose last publication is `update_interval_s` old."""
        sent = await self._growth.flush(self._settings.update_interval_s, force=force)
        if sent:
            UPDATES.inc(sent)

    async def _rebuild_windows(self) -> datetime | None:
        """Replay recent signals into the windows; the start time for a durable not yet made."""
        span = min(self._rules.replay_window_s, self._settings.replay_max_s)
        now = datetime.now(UTC)
        stream = self._bus.subjects.signals_stream
        try:
            info = await self._bus.js.consumer_info(stream.name, DURABLE)
        except nats.js.errors.NotFoundError:  # first start: the recent signals, as live ones
            return now - timedelta(seconds=span)
        last_seq = info.ack_floor.stream_seq if info.ack_floor else 0
        if span <= 0 or not last_seq:
            return None
        replayed = 0
        async for msgs in replay(
            self._bus,
            stream,
            filter_subjects=[self._bus.subjects.signals],
            start_time=now - timedelta(seconds=span),
            last_seq=last_seq,
        ):
            for msg in msgs:
                try:
                    signals = _signals(msg.data)
                except (msgspec.DecodeError, PermanentError):
                    continue  # dead-lettered when it was first consumed
                self.fold(signals, publish=False)
                replayed += len(signals)
        log.info("fleet windows rebuilt", signals=replayed, span_s=span)
        return None

    # -- rules -------------------------------------------------------------------------------

    async def _poll_rules(self) -> None:
        try:
            if await self._rules_version() != self._version:
                await self._reload_rules()
        except SQLAlchemyError as exc:  # the database may come back: keep the rules we have
            log.warning("fleet rules not polled", error=repr(exc))

    async def _rules_version(self) -> Version:
        return tuple(
            [await registry.rules_version(self._engine, i) for i in self._agent_ids.values()]
        )

    async def _reload_rules(self) -> None:
        version = await self._rules_version()
        specs: list[RuleSpec] = []
        for agent, agent_id in self._agent_ids.items():
            rows = await registry.rule_rows(self._engine, agent_id)
            fleet_rows = [row for row in rows if row.type == "FLEET"]
            good, errors = registry.specs_of(fleet_rows, agent)
            for name, error in errors.items():
                previous = next((s for s in self._rules.specs if s.name == name), None)
                if previous is not None and previous.agent == agent:
                    good.append(previous)
                log.error("invalid fleet rule in agent_rules ignored", agent=agent, error=error)
            specs.extend(fleet_specs(good))
        self._rules = FleetRules(
            specs, max_keys=self._settings.max_keys_per_rule, previous=self._rules
        )
        self._version = version
        log.info("fleet rules loaded", rules=len(self._rules.specs))


def _signals(data: bytes) -> list[Signal]:
    batch = signal_batch_decoder.decode(data)
    if batch.v != FORMAT_VERSION:
        raise PermanentError(f"signal batch version {batch.v} not understood")
    if batch.dropped:
        DROPPED.inc(batch.dropped)
    return batch.signals
