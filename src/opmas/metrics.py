"""One /metrics for `opmas up`: its own registry plus the metrics of its child processes.

Children (components `opmas up` runs in a process of their own) answer a core NATS request
with their metrics in the OpenMetrics text format, which keeps a counter's `_total` and
`_created` samples in one family; the parent merges them family by family into its own, child
samples labelled `process="<component>"`, and writes each family once (one HELP and TYPE), so
that one scrape sees the whole pipeline and Prometheus accepts it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Self

import orjson
import structlog
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as openmetrics_exposition
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from opmas.bus.connect import Bus
from opmas.bus.scatter import gather_replies

log = structlog.get_logger(__name__)


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
                # prometheus_client's OpenMetrics module has no annotations
                text = openmetrics_exposition.generate_latest(REGISTRY)  # type: ignore[no-untyped-call]
                body = {"component": self._component, "openmetrics": text.decode()}
                await self._bus.nc.publish(msg.reply, orjson.dumps(body))

        self._sub = await self._bus.nc.subscribe(self._bus.subjects.metrics_request, cb=_answer)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()


async def child_metrics(
    bus: Bus, *, parent_pid: int, expected: int, wait_s: float = 1.0
) -> list[tuple[str, str]]:
    """(component, OpenMetrics text) of each child of `parent_pid` that answers in time."""
    replies = await gather_replies(
        bus,
        bus.subjects.metrics_request,
        str(parent_pid).encode(),
        wait_s=wait_s,
        expected=expected,
    )
    found: list[tuple[str, str]] = []
    for reply in replies:  # a reply that is not ours (empty, another shape) is left out
        try:
            body = orjson.loads(reply)
            found.append((str(body["component"]), str(body["openmetrics"])))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("unreadable metrics reply left out", size=len(reply))
    return found


class _Merged:
    """A collector yielding each family once: ours, with the children's samples labelled."""

    def __init__(self, own: Iterable[Metric], children: list[tuple[str, str]]) -> None:
        self._own = list(own)
        self._children = children

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for family in self._own:
            families[family.name] = family
        for component, text in self._children:
            for family in _parse(component, text):
                target = families.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type, family.unit)
                )
                if target.type != family.type:
                    log.warning(
                        "child metric family skipped",
                        family=family.name,
                        process=component,
                        child_type=family.type,
                        own_type=target.type,
                    )
                    continue
                target.samples.extend(
                    s._replace(labels={**s.labels, "process": component}) for s in family.samples
                )
        yield from families.values()


def _parse(component: str, text: str) -> list[Metric]:
    """A child's families; none if its text does not parse, so the scrape still succeeds."""
    try:
        # prometheus_client's OpenMetrics parser has no annotations
        return list(text_string_to_metric_families(text))  # type: ignore[no-untyped-call]
    except ValueError as exc:
        log.warning("child metrics unreadable", process=component, reason=str(exc))
        return []


def merged_exposition(children: list[tuple[str, str]]) -> bytes:
    """This process's metrics and its children's, in the Prometheus text format."""
    return generate_latest(_Merged(REGISTRY.collect(), children))  # type: ignore[arg-type,unused-ignore]
