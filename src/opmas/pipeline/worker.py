"""The `pipeline` component: a line is decoded and parsed once, every agent's rules see it
where it is parsed, and it is stored in the same pass.

A worker owns a set of device partitions of logs.raw (`opmas.pipeline.leases`; several
workers split them). For each partition it runs a durable pull consumer
(`pipeline-<partition>`) whose every fetched set of RawBatches goes through:

1. decode (msgspec) and parse (`ParserEngine.parse_many`): one ParsedEvent per line;
2. store: `EventSink` COPYs the events of every partition waiting at that moment in one
   transaction, and returns once they are committed;
3. detect: each domain agent (`DomainAgent`, the same class `opmas run agent-wifi` runs)
   evaluates the events in its own time; the findings opened are published on
   `findings.<domain>`, and the FLEET rules' per-router counts on `signals.fleet` for the
   fleet stage (`opmas.agents.fleet_service`), which sees every router;
4. ack: the raw messages are acked once all of that is done (at-least-once: a crash before
   the ack redelivers them; the store skips what it holds, JetStream drops republished ids).

While PostgreSQL or NATS is down, each partition holds its sets in flight and retries them
(`PullConsumer`: transient failures are never dead-lettered); the partitions report as one
(`health()`: one log line when the outage or a stall begins and one when it ends).

When a worker takes a partition (start, or from a worker that left), it first rebuilds the
agents' windows by parsing that partition's recent history again (from now minus the
longest rule window, up to what the consumer acked) without storing or publishing, so a
burst that straddles a hand-over is found once. The agents keep their identity (rows in
`agents`, heartbeats, configuration push, rule reloads, metrics) as parts of the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import re
import socket
import time
import uuid
from collections import Counter as Tally
from collections import defaultdict
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Self

import msgspec
import nats.errors
import nats.js.errors
import structlog
from prometheus_client import Counter, Gauge

from opmas.agents.fleet import SignalCollector
from opmas.agents.pack import RuleSpec
from opmas.agents.registry import AGENTS
from opmas.agents.service import DomainAgent, tune_gc
from opmas.bus import dlq
from opmas.bus.consume import Handler, Msg, ProcessResult, PullConsumer, replay
from opmas.bus.failures import ConsumerHealth, PermanentError
from opmas.bus.publish import publish
from opmas.enrolled import EnrolledDevices
from opmas.errors import BusError, StoreError
from opmas.messages import (
    ParsedBatch,
    ParsedEvent,
    RawLog,
    SignalBatch,
    encode,
    parsed_batch_decoder,
    raw_batch_decoder,
)
from opmas.parser.engine import ParserEngine
from opmas.parser.service import PARSED, UNPARSED
from opmas.pipeline.leases import PartitionLeases
from opmas.pipeline.sink import EventSink
from opmas.resources import Resources

log = structlog.get_logger(__name__)

LINES = Counter("opmas_pipeline_lines_total", "Lines parsed, stored and evaluated.")
OWNED = Gauge("opmas_pipeline_partitions_owned", "Device partitions this worker consumes.")
HANDOVERS = Counter(
    "opmas_pipeline_partition_handovers_total", "Partitions taken or given up.", ["change"]
)
RULE_FAILURES = Counter(
    "opmas_pipeline_rule_failures_total",
    "Batches an agent's rules failed on (stored, not evaluated by that agent).",
    ["agent"],
)
PERMANENT = (msgspec.DecodeError,)
FETCH_WAIT_S = 2.5  # an idle partition asks again this often (stopping waits as long at most)
IN_FLIGHT = 4  # fetched sets of a partition being stored at once (acks may come out of order)
# Messages one pull asks for. Under load a logs.raw message holds 1,000 lines (~250 KB), and
# what every partition asked for is pushed while the worker is busy parsing: 16 x 8 of them
# stay under nats-server's 64 MiB of pending bytes per client, 16 x 64 did not (the server
# cut the worker off as a slow consumer, and its fetched messages came back 30 s later).
FETCH_BATCH = 8
DURABLE_PREFIX = "pipeline-"
_UNSAFE_KEY = re.compile(r"[^-_=a-zA-Z0-9]")


@dataclass
class Prepared:
    """A fetched set of RawBatches parsed and evaluated, waiting to be stored and published."""

    msgs: list[Msg]
    events: list[ParsedEvent]
    arrivals: list[float]
    signals: SignalBatch | None


def worker_id() -> str:
    """A name unique to this worker process: host, pid and a random part."""
    host = _UNSAFE_KEY.sub("_", socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class PipelineWorker:
    """See the module docstring."""

    name = "pipeline"

    def __init__(
        self,
        resources: Resources,
        *,
        pack: Sequence[RuleSpec] | None = None,
        worker: str | None = None,
        fetch_batch: int = FETCH_BATCH,
    ) -> None:
        settings = resources.settings
        self._bus = resources.bus
        self._settings = settings.pipeline
        self._replay_max_s = settings.agents.replay_max_s
        self._parser = ParserEngine.from_dirs(settings.parser_dirs)
        self._enrolled = EnrolledDevices(resources.engine, settings.ingest.trust_refresh_s)
        self._agents = [
            DomainAgent(ident, resources.engine, resources.bus, settings.agents, pack=pack)
            for ident in AGENTS.values()
        ]
        self._sink = EventSink(
            resources.endpoints.database_url, max_discovered=settings.devices.max_discovered
        )
        self.worker = worker or worker_id()
        self._leases = PartitionLeases(
            resources.bus, self.worker, self._settings.partitions, ttl_s=self._settings.lease_ttl_s
        )
        self._fetch_batch = fetch_batch
        # partition -> highest stream sequence this worker fetched from it: a partition taken
        # back (its lease had expired while the worker was busy) whose consumer acked no
        # further has its windows here already, and is not rebuilt again
        self._fetched: dict[int, int] = {}
        self._signals = SignalCollector(())
        self._generations: tuple[int, ...] = ()
        self._failures_logged: set[tuple[str, str]] = set()
        self._partitions: dict[int, tuple[asyncio.Event, asyncio.Task[None]]] = {}
        self._releasing: set[int] = set()  # being stopped, then released: still renewed
        self._handovers: set[asyncio.Task[None]] = set()
        self._health = ConsumerHealth(f"{DURABLE_PREFIX}*")
        self._stack = contextlib.AsyncExitStack()
        self.lines = 0

    async def __aenter__(self) -> Self:
        tune_gc()
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(self._enrolled)
            self._parser.enrolled = self._enrolled.addresses
            await stack.enter_async_context(self._sink)
            for agent in self._agents:
                await stack.enter_async_context(agent)
            await self._leases.open()
            self._stack = stack.pop_all()
        gc.freeze()  # what start-up loaded (parsers, rules) is never garbage: no collector scans
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()

    def describe(self) -> str:
        owned = ",".join(str(p) for p in sorted(self._partitions)) or "none yet"
        return f"worker {self.worker}, partitions {owned} of {self._settings.partitions}"

    def health(self) -> str | None:
        """None while healthy; else why the partitions make no progress (an outage of
        PostgreSQL or NATS while they hold their batches, or a stall)."""
        return self._health.reason()

    @property
    def owned(self) -> frozenset[int]:
        """The partitions this worker consumes now."""
        return frozenset(self._partitions)

    async def run(self, stop: asyncio.Event) -> None:
        agents = [asyncio.create_task(agent.serve(stop)) for agent in self._agents]
        agents.append(asyncio.create_task(self._replay_outages(), name="dlq-upgrade"))
        try:
            while not stop.is_set():
                await self._rebalance()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._settings.lease_refresh_s)
        finally:
            await self._stop_partitions(set(self._partitions))
            await asyncio.gather(*self._handovers, return_exceptions=True)
            with contextlib.suppress(BusError):
                await self._leases.leave()
            OWNED.set(0)
            for task in agents:
                task.cancel()
            await asyncio.gather(*agents, return_exceptions=True)

    # -- partitions ----------------------------------------------------------------------

    async def _rebalance(self) -> None:
        for partition, (_, task) in list(self._partitions.items()):
            if task.done():  # its consumer failed (NATS down...): start it again
                del self._partitions[partition]
                if not task.cancelled() and task.exception() is not None:
                    log.warning(
                        "partition consumer stopped", partition=partition, error=task.exception()
                    )
                self._start(partition)
        try:
            changes = await self._leases.renew()
        except BusError as exc:
            log.warning("partition leases not renewed", worker=self.worker, error=str(exc))
            return
        if changes.not_renewed:
            log.warning(
                "partition leases not renewed", worker=self.worker, error=changes.not_renewed
            )
        if changes.lost:  # another worker owns them already: stop at once, in the background
            self._background(self._stop_partitions(changes.lost))
        to_release = changes.to_release - self._releasing
        if to_release:  # stopping takes up to a fetch wait: the leases are renewed meanwhile
            self._releasing |= to_release
            self._background(self._hand_over(to_release))
        for partition in sorted(changes.acquired):
            self._start(partition)
        if changes.acquired:
            HANDOVERS.labels("acquired").inc(len(changes.acquired))
            log.info(
                "partitions taken",
                worker=self.worker,
                partitions=",".join(map(str, sorted(changes.acquired))),
            )
        OWNED.set(len(self._partitions))

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._handovers.add(task)
        task.add_done_callback(self._handovers.discard)

    async def _hand_over(self, partitions: set[int]) -> None:
        """Stop consuming `partitions`, then give up their leases for their new owner."""
        try:
            await self._stop_partitions(partitions)
            await self._leases.release(partitions)
            HANDOVERS.labels("released").inc(len(partitions))
        except BusError as exc:  # the leases expire by themselves
            log.warning("partition leases not released", worker=self.worker, error=str(exc))
        finally:
            self._releasing -= partitions

    def _start(self, partition: int) -> None:
        done = asyncio.Event()
        task = asyncio.create_task(self._consume(partition, done), name=f"partition:{partition}")
        self._partitions[partition] = (done, task)

    async def _stop_partitions(self, partitions: set[int]) -> None:
        """Stop consuming `partitions`, each after the batch in hand is finished."""
        stopping = [self._partitions.pop(p) for p in partitions if p in self._partitions]
        for done, _ in stopping:
            done.set()
        for _, task in stopping:
            with contextlib.suppress(asyncio.CancelledError, BusError, nats.errors.Error):
                await task
        OWNED.set(len(self._partitions))

    def _subjects(self, partition: int) -> list[str]:
        """One subject per consumer: a server before NATS 2.10 ignores a list of filters, and
        partition 0 would then read every partition. Lines on the bare `logs.raw` (no
        partition) are read by the separate `parser` stage only."""
        return [self._bus.subjects.logs_raw_partition(partition)]

    async def _consume(self, partition: int, stop: asyncio.Event) -> None:
        start_time = await self._rebuild(partition)
        consumer = PullConsumer(
            self._bus,
            self._bus.subjects.logs_raw_stream,
            f"{DURABLE_PREFIX}{partition}",
            filter_subjects=self._subjects(partition),
            batch=self._fetch_batch,
            start_time=start_time,
            permanent=PERMANENT,
            health=self._health,
        )
        inflight: set[asyncio.Task[ProcessResult]] = set()
        try:
            async with consumer:
                while not stop.is_set():
                    msgs = await consumer.next_batch(stop, timeout=FETCH_WAIT_S)
                    if not msgs:
                        continue
                    self._fetched[partition] = msgs[-1].metadata.sequence.stream
                    try:
                        prepared = self.prepare(msgs)
                    except PERMANENT:  # undecodable: one by one, the bad one dead-lettered
                        await consumer.process(msgs, self.handle, stop=stop)
                        continue
                    finish = self._finisher(prepared)
                    task = asyncio.create_task(consumer.process(msgs, finish, stop=stop))
                    inflight.add(task)
                    task.add_done_callback(inflight.discard)
                    while len(inflight) >= IN_FLIGHT:
                        await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
                if inflight:
                    await asyncio.wait(inflight)
        finally:
            for task in inflight:  # cancelled: their batches are redelivered, never lost
                task.cancel()

    async def _rebuild(self, partition: int) -> datetime | None:
        """Rebuild the windows from the partition's history; the start time of a new durable."""
        stream = self._bus.subjects.logs_raw_stream
        now = datetime.now(UTC)
        try:
            info = await self._bus.js.consumer_info(stream.name, f"{DURABLE_PREFIX}{partition}")
        except nats.js.errors.NotFoundError:
            # first start: catch up on recent history (lines that came before any worker)
            return now - timedelta(seconds=self._replay_max_s)
        last_seq = info.ack_floor.stream_seq if info.ack_floor else 0
        span = max((agent.replay_span_s for agent in self._agents), default=0.0)
        if span <= 0 or not last_seq or last_seq <= self._fetched.get(partition, 0):
            return None  # nothing to rebuild, or every acked line went through this worker
        started, lines = time.monotonic(), 0
        async for msgs in replay(
            self._bus,
            stream,
            filter_subjects=self._subjects(partition),
            start_time=now - timedelta(seconds=span),
            last_seq=last_seq,
        ):
            events, _ = self._parse(msgs)
            for agent in self._agents:
                agent.evaluate(events, publish=False)
            lines += len(events)
        if lines:
            log.info(
                "windows rebuilt",
                partition=partition,
                lines=lines,
                span_s=span,
                seconds=round(time.monotonic() - started, 2),
            )
        return None

    async def _replay_outages(self) -> None:
        """Upgrade step: dead letters older versions wrote for outages go back where they came
        from; those of the retired `store` stage (logs.parsed) are stored here."""
        take = {self._bus.subjects.logs_parsed_stream.name: self._store_letter}
        try:
            await dlq.replay_outages(self._bus, take)
        except (BusError, StoreError) as exc:  # left in the DLQ: tried again at next start
            log.warning("dead letters of past outages not replayed", error=str(exc))

    async def _store_letter(self, letter: dlq.DeadLetter) -> None:
        try:
            events = parsed_batch_decoder.decode(letter.data).events
        except msgspec.DecodeError as exc:
            raise PermanentError(f"dead letter {letter.seq} is no ParsedBatch: {exc}") from exc
        await self._sink.write(events, ())

    # -- the hot path --------------------------------------------------------------------

    def _parse(self, msgs: list[Msg]) -> tuple[list[ParsedEvent], list[float]]:
        items: list[RawLog] = []
        for msg in msgs:
            items.extend(raw_batch_decoder.decode(msg.data).items)
        return self._parser.parse_many(items), [item.arrival_ts for item in items]

    def prepare(self, msgs: list[Msg]) -> Prepared:
        """Decode, parse and evaluate every agent's rules over the lines of `msgs`, in order.

        Synchronous, so the batches of a partition are evaluated in the order they were
        fetched while earlier ones are still being stored. Raises msgspec.DecodeError for a
        message that is not a RawBatch.
        """
        events, arrivals = self._parse(msgs)
        _count(events)
        for agent in self._agents:
            try:
                agent.evaluate(events, publish=True)
            except Exception as exc:  # a rule's bug: the lines are still stored
                self._rule_failed(agent.ident.name, exc)
        return Prepared(msgs, events, arrivals, self._collect(events))

    async def finish(self, prepared: Prepared) -> None:
        """Store the events, publish the findings and signals they gave; raises to be retried."""
        msgs, events = prepared.msgs, prepared.events
        await self._sink.write(events, prepared.arrivals)
        await asyncio.gather(*(agent.publish_pending() for agent in self._agents))
        signals = prepared.signals
        if signals is not None:
            meta = msgs[0].metadata
            batch_id = f"{meta.stream}:{meta.sequence.stream}:{msgs[-1].metadata.sequence.stream}"
            signals.batch_id = batch_id
            await publish(self._bus, self._bus.subjects.signals, encode(signals), msg_id=batch_id)
        if self._settings.live_feed:
            await self._feed(events)
        self.lines += len(events)
        LINES.inc(len(events))

    async def handle(self, msgs: list[Msg]) -> None:
        """The whole pass over `msgs` (a retry, or messages taken one by one)."""
        await self.finish(self.prepare(msgs))

    def _finisher(self, prepared: Prepared) -> Handler:
        async def finish(msgs: list[Msg]) -> None:
            same = len(msgs) == len(prepared.msgs) and all(
                a is b for a, b in zip(msgs, prepared.msgs, strict=True)
            )
            await (self.finish(prepared) if same else self.handle(msgs))

        return finish

    def _rule_failed(self, agent: str, exc: Exception) -> None:
        RULE_FAILURES.labels(agent).inc()
        kind = (agent, type(exc).__name__)
        if kind not in self._failures_logged:  # once per agent and error type: no flood
            self._failures_logged.add(kind)
            log.error("rule evaluation failed", agent=agent, error=repr(exc), exc_info=exc)

    def _collect(self, events: list[ParsedEvent]) -> SignalBatch | None:
        """The FLEET rules' signals of `events`: per rule, key and router, a count."""
        generations = tuple(agent.generation for agent in self._agents)
        if generations != self._generations:  # rules reloaded: the signal halves follow
            self._generations = generations
            self._signals = SignalCollector([s for a in self._agents for s in a.fleet_rules])
        if not self._signals.rules:
            return None
        observe = self._signals.observe
        for event in events:
            observe(event)
        dropped = self._signals.dropped
        signals = self._signals.drain()
        return SignalBatch("", signals, dropped) if signals or dropped else None

    async def _feed(self, events: list[ParsedEvent]) -> None:
        """Core NATS, no stream: whoever listens now gets the events, nothing is kept."""
        by_domain: dict[str, list[ParsedEvent]] = defaultdict(list)
        for event in events:
            by_domain[event.log_source_type].append(event)
        for domain, group in by_domain.items():
            payload = encode(ParsedBatch(f"{group[0].event_id}:{domain}", group))
            with contextlib.suppress(nats.errors.Error):
                await self._bus.nc.publish(self._bus.subjects.live_parsed(domain), payload)


def _count(events: list[ParsedEvent]) -> None:
    """The parser's metrics: lines per domain, and lines no program parser recognised."""
    domains = Tally(event.log_source_type for event in events)
    for domain, n in domains.items():
        PARSED.labels(domain).inc(n)
    if "other" in domains:
        unparsed = sum(1 for e in events if e.parser_name == "unparsed")
        if unparsed:
            UNPARSED.inc(unparsed)
