"""One /metrics for `opmas up`: its own registry plus the metrics of its child processes.

Children (components `opmas up` runs in a process of their own) answer a core NATS request
with their exposition text; the parent merges every family once, child samples labelled with
`process="<component>"`, so that one scrape sees the whole pipeline.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Self

import orjson
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from opmas.bus.connect import Bus
from opmas.bus.scatter import gather_replies


class MetricsResponder:
    """In a child process: answers its parent's metrics requests while open."""

    def __init__(self, bus: Bus, *, parent_pid: int, component: str) -> None:
        self._bus = bus
        self._parent = str(parent_pid).encode()
        self._component = component
        self._sub: Any = None

    async def __aenter__(self) -> Self:
        async def _answer(msg: Any) -> None:
            if msg.reply and msg.data == self._parent:
                body = {"component": self._component, "text": generate_latest().decode()}
                await self._bus.nc.publish(msg.reply, orjson.dumps(body))

        self._sub = await self._bus.nc.subscribe(self._bus.subjects.metrics_request, cb=_answer)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()


async def child_metrics(
    bus: Bus, *, parent_pid: int, expected: int, wait_s: float = 1.0
) -> list[tuple[str, str]]:
    """(component, exposition text) of each child of `parent_pid` that answers in time."""
    replies = await gather_replies(
        bus,
        bus.subjects.metrics_request,
        str(parent_pid).encode(),
        wait_s=wait_s,
        expected=expected,
    )
    bodies = [orjson.loads(reply) for reply in replies]
    return [(body["component"], body["text"]) for body in bodies]


class _Merged:
    """A collector yielding each family once: ours, then the children's labelled samples."""

    def __init__(self, own: Iterable[Metric], children: list[tuple[str, str]]) -> None:
        self._own = list(own)
        self._children = children

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for family in self._own:
            families[family.name] = family
        for component, text in self._children:
            for family in text_string_to_metric_families(text):
                target = families.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                target.samples.extend(
                    Sample(s.name, {**s.labels, "process": component}, s.value, s.timestamp)
                    for s in family.samples
                )
        yield from families.values()


def merged_exposition(children: list[tuple[str, str]]) -> bytes:
    """This process's metrics and its children's, in the Prometheus text format."""
    return generate_latest(_Merged(REGISTRY.collect(), children))  # type: ignore[arg-type,unused-ignore]
