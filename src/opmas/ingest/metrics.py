"""Prometheus metrics of the ingest component, and the cheap tally the hot path counts into.

Receivers add to a `Tally` (plain integers, no lock); the service folds it into the
Prometheus counters about once a second, so a counter never costs a lock per line.
"""

from __future__ import annotations

from collections import Counter as IntCounter
from collections import OrderedDict
from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge

RECEIVED = Counter("opmas_ingest_received_total", "Lines received.", ["transport"])
PUBLISHED = Counter("opmas_ingest_published_total", "Lines JetStream acknowledged on logs.raw.")
DROPPED = Counter(
    "opmas_ingest_dropped_total", "Lines dropped (UDP while the queue is full).", ["transport"]
)
TRUNCATED = Counter(
    "opmas_ingest_truncated_total", "Lines cut at the maximum message size.", ["transport"]
)
FRAMING_ERRORS = Counter(
    "opmas_ingest_framing_errors_total",
    "Zero or absurd RFC 6587 octet counts (the frame was read as a delimited one).",
    ["transport"],
)
REJECTED = Counter(
    "opmas_ingest_rejected_connections_total",
    "Connections closed at once because max_connections were open.",
    ["transport"],
)
IDLE_CLOSED = Counter(
    "opmas_ingest_idle_closed_total", "Connections closed after the idle timeout.", ["transport"]
)
PUBLISH_FAILED = Counter(
    "opmas_ingest_publish_failed_total", "Rounds of batch publishes that failed and were retried."
)
SOCKET_DROPS = Counter(
    "opmas_ingest_udp_socket_drops_total",
    "Datagrams the kernel dropped because the UDP receive buffer was full (Linux).",
)
CONNECTIONS = Gauge("opmas_ingest_connections", "Open syslog connections.", ["transport"])
PAUSED = Gauge("opmas_ingest_paused_connections", "Connections not read because the queue is full.")
QUEUED = Gauge("opmas_ingest_queued_lines", "Lines received and not yet acknowledged by the bus.")
QUEUED_BYTES = Gauge(
    "opmas_ingest_queued_bytes", "Bytes of lines received and not yet acknowledged by the bus."
)
SPOOLED = Gauge(
    "opmas_ingest_spooled_lines", "Lines in the spool, not yet acknowledged by the bus."
)
UNREAD = Gauge(
    "opmas_ingest_unread_bytes",
    "Bytes of logs.raw the pipeline has not read yet, as ingest last measured or counted them.",
)
BACKLOG_FULL = Gauge(
    "opmas_ingest_backlog_full",
    "1 while the unread part of logs.raw is at its bound and ingest slows the senders.",
)
SPOOLED_BYTES = Gauge("opmas_ingest_spooled_bytes", "Bytes of the spool files.")
SPOOL_LOST = Counter(
    "opmas_ingest_spool_lost_total",
    "Lines lost at a stop because the spool was full or not writable, or in a damaged file.",
)
SOURCE_DROPPED = Counter(
    "opmas_ingest_source_dropped_total",
    "UDP lines dropped because their source IP sent beyond its rate (source: the IP, or other).",
    ["transport", "source"],
)
SOURCE_REJECTED = Counter(
    "opmas_ingest_source_rejected_connections_total",
    "Connections refused because their source IP had its maximum open (source: the IP, or other).",
    ["transport", "source"],
)
OTHER = "other"


class SourceCounts:
    """Counts per (transport, source IP) with a bounded number of series: the `max_sources`
    most recently counted sources have their own; an older one is folded into source="other"
    (its series removed), and so is any source counted while `max_sources` wait to be folded.

    `add` is the cheap hot-path step; `fold()` (about once a second) moves into `metric`.
    """

    def __init__(self, metric: Counter, max_sources: int) -> None:
        self._metric = metric
        self._max = max_sources
        self._pending: IntCounter[tuple[str, str]] = IntCounter()
        self._totals: OrderedDict[tuple[str, str], int] = OrderedDict()

    def add(self, transport: str, source: str | None, count: int = 1) -> None:
        key = (transport, source or OTHER)
        if key not in self._pending and len(self._pending) >= self._max:
            key = (transport, OTHER)
        self._pending[key] += count

    def fold(self) -> None:
        for key, count in self._pending.items():
            self._metric.labels(*key).inc(count)
            if key[1] == OTHER:
                continue
            self._totals[key] = self._totals.pop(key, 0) + count  # now the most recent
            if len(self._totals) > self._max:
                (transport, source), total = self._totals.popitem(last=False)
                self._metric.remove(transport, source)
                self._metric.labels(transport, OTHER).inc(total)
        self._pending.clear()


@dataclass
class Tally:
    """Counts the receivers bump per line; `fold()` moves them into the Prometheus counters."""

    received: IntCounter[str] = field(default_factory=IntCounter)
    dropped: IntCounter[str] = field(default_factory=IntCounter)
    truncated: IntCounter[str] = field(default_factory=IntCounter)
    framing_errors: IntCounter[str] = field(default_factory=IntCounter)

    def fold(self) -> None:
        """Add the counts to the Prometheus counters and start again from zero."""
        for counts, metric in (
            (self.received, RECEIVED),
            (self.dropped, DROPPED),
            (self.truncated, TRUNCATED),
            (self.framing_errors, FRAMING_ERRORS),
        ):
            for transport, value in counts.items():
                if value:
                    metric.labels(transport).inc(value)
            counts.clear()
