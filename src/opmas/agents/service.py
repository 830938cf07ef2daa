"""A domain agent as a component: its rules from `agent_rules` over `logs.parsed.<domain>`,
its findings to `findings.<domain>`.

- Start: registers in `agents` (loading the shipped rule pack once), reads its rules and what
  its rules learned, subscribes to `agents.config.<name>`, and rebuilds its windows by
  replaying its stream from now minus its longest window up to where its durable consumer had
  acked, without publishing: a burst that straddles a restart is found once.
- Running: evaluates each event in its own time; a hit that opens a burst is published at
  once, the growth of an open burst at most every `update_interval_s` (same finding id,
  larger count). Findings are published before the events are acked.
- Every `heartbeat_s`: `status`/`last_heartbeat` in `agents` and a heartbeat message; every
  `rule_poll_s`: reloads the rules if a row changed (rules whose definition did not change
  keep their state; a row that is not a valid rule is logged and its last good version kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Self

import msgspec
import nats.errors
import nats.js.errors
import structlog
from nats.aio.msg import Msg as CoreMsg
from nats.aio.subscription import Subscription
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from opmas.agents import registry
from opmas.agents.engine import FindingBook, LoadedRule, RuleSet
from opmas.agents.growth import GrowingFindings
from opmas.agents.pack import RuleSpec, load_pack
from opmas.agents.registry import AgentIdentity
from opmas.agents.rules.types import RuleHit, event_time, parse_iso
from opmas.bus.connect import Bus
from opmas.bus.consume import Msg, PullConsumer, replay
from opmas.bus.publish import Publisher
from opmas.errors import BusError, ConfigError
from opmas.messages import Finding, ParsedEvent, parsed_batch_decoder
from opmas.settings import AgentSettings

log = structlog.get_logger(__name__)

EVENTS = Counter("opmas_agent_events_total", "Events evaluated by an agent.", ["agent"])
OPENED = Counter("opmas_agent_findings_total", "Findings opened, by rule.", ["agent", "rule"])
UPDATES = Counter("opmas_agent_finding_updates_total", "Updates of open findings sent.", ["agent"])
RELOADS = Counter("opmas_agent_rule_reloads_total", "Rule sets reloaded from the DB.", ["agent"])
KEYS = Gauge("opmas_agent_rule_keys", "Keys held in the rules' windows.", ["agent"])
EVICTED = Gauge("opmas_agent_rule_keys_evicted", "Keys evicted at max_keys_per_rule.", ["agent"])
LATENCY = Histogram(
    "opmas_agent_arrival_to_finding_seconds",
    "From the arrival of the event that opened a finding to its publication.",
    ["agent"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
UNKNOWN_HOST = "unknown"
FUTURE_SLACK_S = 300.0  # an event dated further ahead than this does not move the clock
PERMANENT = (msgspec.DecodeError,)
GC_THRESHOLD = (50_000, 50, 100)


_DECODED: OrderedDict[tuple[str, int], list[ParsedEvent]] = OrderedDict()
DECODED_BATCHES = 256  # agents of one process read the same batches at about the same time


def decoded(msg: Msg) -> list[ParsedEvent]:
    """The events of a logs.parsed message, decoded once per process: the agents running
    together (`opmas run agents`) share them instead of each decoding every batch."""
    meta = msg.metadata
    key = (meta.stream, meta.sequence.stream)
    events = _DECODED.get(key)
    if events is None:
        events = _DECODED[key] = parsed_batch_decoder.decode(msg.data).events
        if len(_DECODED) > DECODED_BATCHES:
            _DECODED.popitem(last=False)
    return events


def tune_gc() -> None:
    """Fewer garbage collections in an agent process: its windows hold millions of small
    long-lived objects, and each full collection walks them all (a pause of a second at
    100,000 keys per rule). Cycles are rare here, so collecting less often costs little."""
    threshold = gc.get_threshold()
    if threshold[0] < GC_THRESHOLD[0]:
        gc.set_threshold(*GC_THRESHOLD)


class ConfigPush(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What `agents.config.<name>` accepts; every key optional."""

    max_keys_per_rule: int | None = None
    update_interval_s: float | None = None
    heartbeat_s: float | None = None
    reload_rules: bool = False


class DomainAgent:
    """WiFi, Security, Health or WAN agent; see the module docstring."""

    def __init__(
        self,
        ident: AgentIdentity,
        engine: AsyncEngine,
        bus: Bus,
        settings: AgentSettings,
        *,
        pack: Sequence[RuleSpec] | None = None,
        fetch_batch: int = 16,
    ) -> None:
        self.ident = ident
        self.name = ident.component
        self._engine = engine
        self._bus = bus
        self._settings = settings.model_copy()
        self._pack = pack
        self._fetch_batch = fetch_batch
        self._agent_id = 0
        self._ruleset = RuleSet()
        self._version: tuple[int, int, datetime | None] | None = None
        self._book = FindingBook(max_open=settings.max_keys_per_rule)
        self._growth = GrowingFindings(bus, max_tracked=settings.max_keys_per_rule)
        self._fresh: list[tuple[Finding, float]] = []  # opened in this batch, arrival ts
        self._clock = 0.0  # newest event time seen (bounded by wall clock + slack)
        self._resubscribe = asyncio.Event()
        self._config_sub: Subscription | None = None
        self._status = "INACTIVE"
        self.fleet_rules: list[RuleSpec] = []  # their signal half runs where events are parsed
        self.generation = 0  # rules reloaded so many times
        self.events = 0
        self.opened = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        tune_gc()
        pack = list(self._pack) if self._pack is not None else load_pack()
        self._agent_id = await registry.register(self._engine, self.ident, pack)
        stored = await registry.agent_config(self._engine, self._agent_id)
        self._apply_config(
            {k: v for k, v in stored.items() if k in ConfigPush.__struct_fields__}, save=False
        )
        await self._reload_rules()
        await self._load_state()
        self._config_sub = await self._bus.nc.subscribe(
            self._bus.subjects.agent_config(self.ident.name), cb=self._on_config
        )
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if self._config_sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._config_sub.unsubscribe()
        with contextlib.suppress(BusError, TimeoutError, nats.errors.Error):
            await self._flush_updates(force=True)
        with contextlib.suppress(SQLAlchemyError, OSError):
            await self._save_state()
            status = "ERROR" if exc_type not in (None, asyncio.CancelledError) else "INACTIVE"
            await registry.set_status(self._engine, self._agent_id, status)

    def describe(self) -> str:
        keys, _ = self._ruleset.state_size()
        return (
            f"{len(self._ruleset.rules)} rules over logs.parsed."
            f"{{{','.join(self._ruleset.domains)}}}, {keys} keys"
        )

    @property
    def durable(self) -> str:
        return self.ident.component

    def _subjects(self) -> list[str]:
        return [self._bus.subjects.logs_parsed(d) for d in self._ruleset.domains]

    async def run(self, stop: asyncio.Event) -> None:
        start_time = await self._rebuild_windows()
        self._status = "ACTIVE"
        tasks = [
            asyncio.create_task(self._every(lambda: self._settings.heartbeat_s, self._heartbeat)),
            asyncio.create_task(self._every(lambda: self._settings.rule_poll_s, self._poll_rules)),
            asyncio.create_task(self._every(lambda: self._settings.state_save_s, self._save_state)),
        ]
        try:
            await self._heartbeat()
            while not stop.is_set():
                self._resubscribe.clear()
                await self._consume(stop, start_time)
                start_time = None
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- as a part of a pipeline worker ------------------------------------------------------

    @property
    def replay_span_s(self) -> float:
        """History that rebuilds every window of the rules (bounded by `replay_max_s`)."""
        return min(self._ruleset.replay_window_s, self._settings.replay_max_s)

    async def serve(self, stop: asyncio.Event) -> None:
        """Run as a part of a pipeline worker until `stop`: heartbeats, rule reloads, state
        saves, expiry and the republication of grown findings; the worker feeds the events
        (`evaluate`, then `publish_pending`)."""
        self._status = "ACTIVE"
        tasks = [
            asyncio.create_task(self._every(lambda: self._settings.heartbeat_s, self._heartbeat)),
            asyncio.create_task(self._every(lambda: self._settings.rule_poll_s, self._poll_rules)),
            asyncio.create_task(self._every(lambda: self._settings.state_save_s, self._save_state)),
            asyncio.create_task(self._every(lambda: 1.0, self._tick)),
        ]
        try:
            await self._heartbeat()
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _tick(self) -> None:
        self._ruleset.expire(self._clock)
        if self.release_held():
            await self.publish_pending()
        await self._flush_updates()

    async def publish_pending(self) -> None:
        """Publish the findings the last `evaluate` calls opened (and growth that is due)."""
        if self._fresh:
            await self._publish_fresh()
        if self._growth.pending:
            await self._flush_updates()

    async def _consume(self, stop: asyncio.Event, start_time: datetime | None) -> None:
        if not self._ruleset.domains:  # no rule: idle until the rules change or we stop
            waits = [
                asyncio.create_task(stop.wait()),
                asyncio.create_task(self._resubscribe.wait()),
            ]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for task in waits:
                task.cancel()
            return
        consumer = PullConsumer(
            self._bus,
            self._bus.subjects.logs_parsed_stream,
            self.durable,
            filter_subjects=self._subjects(),
            batch=self._fetch_batch,
            start_time=start_time,
            permanent=PERMANENT,
        )
        last_expire = time.monotonic()
        async with consumer:
            while not stop.is_set() and not self._resubscribe.is_set():
                msgs = await consumer.next_batch(stop, timeout=0.25)
                if msgs:
                    await consumer.process(msgs, self.handle, stop=stop)
                if self.release_held():
                    await self._publish_fresh()
                await self._flush_updates()
                if time.monotonic() - last_expire >= 1.0:
                    last_expire = time.monotonic()
                    self._ruleset.expire(self._clock)

    async def _every(self, period: Callable[[], float], job: Callable[[], Awaitable[None]]) -> None:
        """Run `job` every `period()`; a failure (a server down) is logged once, and once
        more when the job works again."""
        failing = False
        while True:
            await asyncio.sleep(period())
            try:
                await job()
            except (SQLAlchemyError, OSError, BusError, nats.errors.Error) as exc:
                if not failing:
                    log.warning(
                        "agent task failing",
                        agent=self.ident.name,
                        task=_name(job),
                        error=repr(exc),
                    )
                failing = True
            else:
                if failing:
                    log.info("agent task working again", agent=self.ident.name, task=_name(job))
                failing = False

    # -- events ------------------------------------------------------------------------------

    async def handle(self, msgs: list[Msg]) -> None:
        """Evaluate the events of each message; publish the findings they open as soon as
        their message is evaluated (not after the whole fetch), so latency stays low."""
        for msg in msgs:
            self.evaluate(decoded(msg), publish=True)
            if self._fresh:
                await self._publish_fresh()

    async def _publish_fresh(self) -> None:
        fresh, self._fresh = self._fresh, []
        publisher = Publisher(self._bus)
        for finding, _ in fresh:
            await self._growth.publish(publisher, finding)
        await publisher.flush()
        now = time.time()
        for _, arrival in fresh:
            LATENCY.labels(self.ident.name).observe(max(0.0, now - arrival))

    def evaluate(self, events: Sequence[ParsedEvent], *, publish: bool) -> None:
        """Run the rules over events; with `publish`, queue the findings they open or grow."""
        ruleset = self._ruleset
        ceiling = time.time() + FUTURE_SLACK_S
        for event in events:
            if event.hostname is None:
                event.hostname = event.source_ip or UNKNOWN_HOST
            ts = event_time(event)
            if ceiling > ts > self._clock:
                self._clock = ts
            for loaded, hit in ruleset.evaluate(event):
                self._fold(loaded, hit, event, publish=publish)
        self.events += len(events)
        EVENTS.labels(self.ident.name).inc(len(events))

    def release_held(self, *, flush: bool = False) -> int:
        """Fold the hits rules held back whose time is up (novelty: `hold_s`) and queue their
        findings; `publish_pending` sends them. Returns how many."""
        released = self._ruleset.due(time.monotonic(), flush=flush)
        for loaded, hit, event in released:
            self._fold(loaded, hit, event, publish=True)
        return len(released)

    def _fold(self, loaded: LoadedRule, hit: RuleHit, event: ParsedEvent, *, publish: bool) -> None:
        finding, new = self._book.fold(loaded.spec, hit, event, self.ident.domain)
        if not publish:
            return
        if new:
            self._fresh.append((finding, parse_iso(event.arrival_ts_utc)))
            self._growth.opened(finding)
            OPENED.labels(self.ident.name, loaded.spec.name).inc()
            self.opened += 1
        else:
            self._growth.grew(finding)

    async def _flush_updates(self, *, force: bool = False) -> None:
        """Republish grown findings whose last publication is `update_interval_s` old."""
        sent = await self._growth.flush(self._settings.update_interval_s, force=force)
        if sent:
            UPDATES.labels(self.ident.name).inc(sent)

    async def _rebuild_windows(self) -> datetime | None:
        """Replay history into the windows; the start time for a durable not yet created."""
        span = min(self._ruleset.replay_window_s, self._settings.replay_max_s)
        now = datetime.now(UTC)
        start = now - timedelta(seconds=span)
        stream = self._bus.subjects.logs_parsed_stream
        try:
            info = await self._bus.js.consumer_info(stream.name, self.durable)
        except nats.js.errors.NotFoundError:
            # first start: catch up on the recent history (what came in while the pipeline
            # ran before this agent) as live events
            return now - timedelta(seconds=self._settings.replay_max_s)
        last_seq = info.ack_floor.stream_seq if info.ack_floor else 0
        if span <= 0 or not last_seq or not self._ruleset.domains:
            return None
        replayed = 0
        started = time.monotonic()
        async for msgs in replay(
            self._bus, stream, filter_subjects=self._subjects(), start_time=start, last_seq=last_seq
        ):
            for msg in msgs:
                events = decoded(msg)
                self.evaluate(events, publish=False)
                replayed += len(events)
        log.info(
            "windows rebuilt",
            agent=self.ident.name,
            events=replayed,
            span_s=span,
            seconds=round(time.monotonic() - started, 2),
        )
        return None

    # -- rules, config, state ----------------------------------------------------------------

    async def _poll_rules(self) -> None:
        version = await registry.rules_version(self._engine, self._agent_id)
        if version != self._version:
            await self._reload_rules()

    async def _reload_rules(self, *, keep_state: bool = True) -> None:
        version = await registry.rules_version(self._engine, self._agent_id)
        rows = await registry.rule_rows(self._engine, self._agent_id)
        specs, errors = registry.specs_of(rows, self.ident.name)
        good = {spec.name for spec in specs}
        for name, error in errors.items():
            previous = next((r.spec for r in self._ruleset.rules if r.spec.name == name), None)
            if previous is not None and name not in good:
                specs.append(previous)
            log.error("invalid rule in agent_rules ignored", agent=self.ident.name, error=error)
        domains = self._ruleset.domains
        self._ruleset = RuleSet.build(
            specs,
            max_keys=self._settings.max_keys_per_rule,
            previous=self._ruleset if keep_state else None,
            rule_ids={row.name: row.id for row in rows},
        )
        for name, error in self._ruleset.skipped.items():
            log.error("rule cannot run", agent=self.ident.name, rule=name, error=error)
        self._version = version
        self.fleet_rules = [spec for spec in specs if spec.type == "FLEET" and spec.enabled]
        self.generation += 1
        RELOADS.labels(self.ident.name).inc()
        log.info(
            "rules loaded",
            agent=self.ident.name,
            rules=len(self._ruleset.rules),
            domains=",".join(self._ruleset.domains),
        )
        if self._ruleset.domains != domains:
            self._resubscribe.set()

    def _apply_config(self, data: dict[str, Any], *, save: bool = True) -> ConfigPush:
        push = msgspec.convert(data, ConfigPush)
        changes = {
            k: v
            for k, v in msgspec.structs.asdict(push).items()
            if v is not None and k != "reload_rules"
        }
        for key, value in changes.items():
            if not value > 0:
                raise msgspec.ValidationError(f"{key} must be positive")
        self._settings = self._settings.model_copy(update=changes)
        return push

    async def _on_config(self, msg: CoreMsg) -> None:
        try:
            data = msgspec.json.decode(msg.data)
            if not isinstance(data, dict):
                raise msgspec.ValidationError("expected a JSON object")
            before = self._settings.max_keys_per_rule
            push = self._apply_config(data)
            stored = {k: v for k, v in data.items() if k != "reload_rules"}
            if stored:
                await registry.merge_config(self._engine, self._agent_id, stored)
            if push.reload_rules or self._settings.max_keys_per_rule != before:
                await self._reload_rules(keep_state=self._settings.max_keys_per_rule == before)
            reply: dict[str, object] = {"ok": True, "config": self._settings.model_dump()}
            log.info("configuration pushed", agent=self.ident.name, **stored)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            reply = {"ok": False, "error": str(exc)}
        except SQLAlchemyError as exc:
            reply = {"ok": False, "error": f"could not store the configuration: {exc!r}"}
        if msg.reply:
            with contextlib.suppress(nats.errors.Error):
                await msg.respond(msgspec.json.encode(reply))

    async def _heartbeat(self) -> None:
        keys, evicted = self._ruleset.state_size()
        KEYS.labels(self.ident.name).set(keys)
        EVICTED.labels(self.ident.name).set(evicted)
        beat = {
            "agent": self.ident.name,
            "component": self.name,
            "type": self.ident.type,
            "status": self._status,
            "ts": time.time(),
            "rules": len(self._ruleset.rules),
            "domains": list(self._ruleset.domains),
            "events": self.events,
            "findings": self.opened,
            "keys": keys,
            "evicted": evicted,
            "invalid_rules": sorted(self._ruleset.skipped),
        }
        await self._bus.nc.publish(
            self._bus.subjects.heartbeat(self.ident.name), msgspec.json.encode(beat)
        )
        await registry.set_status(self._engine, self._agent_id, self._status)

    async def _load_state(self) -> None:
        states = await registry.load_state(self._engine, self._agent_id)
        for loaded in self._ruleset.rules:
            state = states.get(loaded.spec.name)
            load = getattr(loaded.rule, "load", None)
            if state is not None and callable(load):
                try:
                    load(state)
                except ConfigError as exc:  # a bad row must not stop the agent
                    log.warning("learned state ignored", rule=loaded.spec.name, error=str(exc))

    async def _save_state(self) -> None:
        states = {
            loaded.spec.name: export()
            for loaded in self._ruleset.rules
            if callable(export := getattr(loaded.rule, "export", None))
        }
        await registry.save_state(self._engine, self._agent_id, states)


def _name(job: Callable[[], Awaitable[None]]) -> str:
    return getattr(job, "__name__", "task").lstrip("_")
