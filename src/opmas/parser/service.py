"""The `parser` component: consumes RawBatch from logs.raw, publishes ParsedBatch per domain.

Stateless but for the dropbear PID join, so it can run as several replicas sharing the durable
consumer. Each input batch gives at most one output message per domain, with the id
`<batch_id>:<domain>`, so a redelivered batch is de-duplicated by JetStream.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Self

import structlog
from prometheus_client import Counter

from opmas.bus.connect import Bus
from opmas.bus.consume import Msg, PullConsumer
from opmas.bus.publish import Publisher
from opmas.enrolled import EnrolledDevices
from opmas.messages import ParsedBatch, ParsedEvent, encode, raw_batch_decoder
from opmas.parser.engine import ParserEngine

log = structlog.get_logger(__name__)

PARSED = Counter("opmas_parser_events_total", "Lines parsed, by domain and parser.", ["domain"])
UNPARSED = Counter("opmas_parser_unparsed_total", "Lines no program parser recognised.")
DURABLE = "parser"


class ParserService:
    """Consume logs.raw, parse every line, publish to logs.parsed.<domain>."""

    name = "parser"

    def __init__(
        self,
        bus: Bus,
        engine: ParserEngine,
        *,
        fetch_batch: int = 16,
        enrolled: EnrolledDevices | None = None,
    ) -> None:
        self._bus = bus
        self._engine = engine
        self._fetch_batch = fetch_batch
        self._consumer: PullConsumer | None = None
        self._enrolled = enrolled  # grades `address` trust; without it no line gets it

    async def __aenter__(self) -> Self:
        if self._enrolled is not None:
            await self._enrolled.__aenter__()
            self._engine.enrolled = self._enrolled.addresses
        consumer = PullConsumer(
            self._bus, self._bus.subjects.logs_raw_stream, DURABLE, batch=self._fetch_batch
        )
        try:
            self._consumer = await consumer.__aenter__()
        except BaseException:
            if self._enrolled is not None:
                await self._enrolled.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._consumer is not None:
            await self._consumer.__aexit__(None, None, None)
        if self._enrolled is not None:
            await self._enrolled.__aexit__(None, None, None)

    async def run(self, stop: asyncio.Event) -> None:
        assert self._consumer is not None  # noqa: S101 - set by __aenter__
        await self._consumer.run(self.handle, stop)

    async def handle(self, msgs: list[Msg]) -> None:
        """Parse each RawBatch and publish its events; returns once JetStream acked them all."""
        publisher = Publisher(self._bus)
        for msg in msgs:
            batch = raw_batch_decoder.decode(msg.data)
            for domain, events in self.split(self._engine.parse_many(batch.items)).items():
                out = ParsedBatch(f"{batch.batch_id}:{domain}", events)
                await publisher.publish(
                    self._bus.subjects.logs_parsed(domain), encode(out), msg_id=out.batch_id
                )
        await publisher.flush()

    @staticmethod
    def split(events: list[ParsedEvent]) -> dict[str, list[ParsedEvent]]:
        """Events grouped by domain, in input order within each."""
        by_domain: dict[str, list[ParsedEvent]] = defaultdict(list)
        for event in events:
            by_domain[event.log_source_type].append(event)
        for domain, group in by_domain.items():
            PARSED.labels(domain).inc(len(group))
        unparsed = sum(1 for e in by_domain.get("other", ()) if e.parser_name == "unparsed")
        if unparsed:
            UNPARSED.inc(unparsed)
        return by_domain
