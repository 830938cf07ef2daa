"""Prometheus metrics of the ingest component, and the cheap tally the hot path counts into.

Receivers add to a `Tally` (plain integers, no lock); the service folds it into the
Prometheus counters about once a second, so a counter never costs a lock per line.
"""

from __future__ import annotations

from collections import Counter as IntCounter
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
