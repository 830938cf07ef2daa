"""Every stream and subject name OPMAS uses; the only module that spells them out.

A namespace (setting `bus.namespace`) prefixes each subject (`<ns>.logs.raw`) and stream
(`<NS>_LOGS_RAW`) so that several deployments, or tests, share one NATS server safely.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Domain(StrEnum):
    """The domain a parsed event or a finding belongs to."""

    WIFI = "wifi"
    SECURITY = "security"
    HEALTH = "health"
    WAN = "wan"
    OTHER = "other"


class ActionState(StrEnum):
    """Life of an intended action; each transition is published on `actions.<state>`."""

    PENDING = "pending"
    APPROVED = "approved"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    REJECTED = "rejected"
    EXPIRED = "expired"
    INTERRUPTED = "interrupted"  # its executor stopped mid-run: may or may not have run


@dataclass(frozen=True)
class StreamSpec:
    """One JetStream stream: its name, the subjects it captures, its settings key."""

    name: str
    subjects: tuple[str, ...]
    limits_key: str


@dataclass(frozen=True)
class Subjects:
    """Subject and stream names, within one namespace."""

    namespace: str = ""

    def _subject(self, subject: str) -> str:
        return f"{self.namespace}.{subject}" if self.namespace else subject

    def _stream(self, name: str) -> str:
        return f"{self.namespace.upper()}_{name}" if self.namespace else name

    @property
    def logs_raw(self) -> str:
        """Raw lines of no partition: read by the separate `parser` stage, not the pipeline."""
        return self._subject("logs.raw")

    def logs_raw_partition(self, partition: int) -> str:
        """Raw lines of one device partition: every line of one router has the same."""
        return self._subject(f"logs.raw.{partition}")

    def live_parsed(self, domain: Domain | str) -> str:
        """Core NATS (no stream): parsed events for live views, when the pipeline feeds it."""
        return self._subject(f"live.parsed.{domain}")

    def logs_parsed(self, domain: Domain | str) -> str:
        return self._subject(f"logs.parsed.{domain}")

    @property
    def logs_parsed_all(self) -> str:
        return self._subject("logs.parsed.>")

    def findings(self, domain: Domain | str) -> str:
        return self._subject(f"findings.{domain}")

    @property
    def findings_all(self) -> str:
        return self._subject("findings.>")

    @property
    def signals(self) -> str:
        """Fleet signals: per-router aggregates the pipeline workers send to the fleet stage."""
        return self._subject("signals.fleet")

    def actions(self, state: ActionState | str) -> str:
        return self._subject(f"actions.{state}")

    @property
    def actions_all(self) -> str:
        return self._subject("actions.>")

    def dlq(self, stream: str) -> str:
        """Dead-letter subject of a stream, e.g. `dlq.LOGS_RAW`."""
        return self._subject(f"dlq.{stream}")

    @property
    def status_request(self) -> str:
        """Core NATS subject every running OPMAS process answers with its components' state."""
        return self._subject("opmas.status")

    def root(self, subject: str) -> str:
        """First two tokens of `subject` without the namespace (`logs.parsed`): a metric label."""
        prefix = f"{self.namespace}." if self.namespace else ""
        if prefix and subject.startswith(prefix):
            subject = subject[len(prefix) :]
        return ".".join(subject.split(".")[:2])

    @property
    def metrics_request(self) -> str:
        """Core NATS subject on which `opmas up` asks its child processes for their metrics."""
        return self._subject("opmas.metrics")

    def heartbeat(self, agent: str) -> str:
        return self._subject(f"agents.heartbeat.{agent}")

    def agent_config(self, agent: str) -> str:
        return self._subject(f"agents.config.{agent}")

    @property
    def logs_raw_stream(self) -> StreamSpec:
        subjects = (self.logs_raw, self._subject("logs.raw.*"))
        return StreamSpec(self._stream("LOGS_RAW"), subjects, "logs_raw")

    @property
    def logs_parsed_stream(self) -> StreamSpec:
        return StreamSpec(self._stream("LOGS_PARSED"), (self.logs_parsed_all,), "logs_parsed")

    @property
    def findings_stream(self) -> StreamSpec:
        return StreamSpec(self._stream("FINDINGS"), (self.findings_all,), "findings")

    @property
    def signals_stream(self) -> StreamSpec:
        return StreamSpec(self._stream("SIGNALS"), (self._subject("signals.>"),), "signals")

    @property
    def actions_stream(self) -> StreamSpec:
        return StreamSpec(self._stream("ACTIONS"), (self.actions_all,), "actions")

    @property
    def dlq_stream(self) -> StreamSpec:
        return StreamSpec(self._stream("DLQ"), (self._subject("dlq.>"),), "dlq")

    def streams(self) -> tuple[StreamSpec, ...]:
        """Every stream OPMAS creates, dead letters included."""
        return (
            self.logs_raw_stream,
            self.logs_parsed_stream,
            self.findings_stream,
            self.signals_stream,
            self.actions_stream,
            self.dlq_stream,
        )
