"""Bus payloads: RawBatch (logs.raw) -> ParsedBatch (logs.parsed.<domain>) -> Finding -> ...

Hot-path messages are msgspec Structs encoded as JSON: one bus message carries a batch of
lines or events, each keeping its own `event_id`; the batch has its own id for Nats-Msg-Id.
Version 1 of each format; a reader refuses a version it does not know.
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
from uuid_utils import uuid7

FORMAT_VERSION = 1


class Transport:
    """How a line reached OPMAS (plain constants: cheap to encode)."""

    UDP = "udp"
    TCP = "tcp"
    TLS = "tls"
    HTTP = "http"
    FILE = "file"
    REPLAY = "replay"


class Flag:
    """Marks on a line that was changed on its way in, stored with the event."""

    TRUNCATED = "truncated"  # longer than the maximum message size
    INVALID_UTF8 = "invalid_utf8"  # undecodable bytes replaced with U+FFFD
    NUL_REPLACED = "nul_replaced"  # NUL bytes replaced (PostgreSQL text cannot hold them)
    INVALID_PRI = "invalid_pri"  # a <PRI> out of range or malformed: kept as text
    PARSE_ERROR = "parse_error"  # the parser failed on the line: stored unparsed
    REPLAY = "replay"  # sent by `opmas replay` without --notify: its findings notify nobody
    INVALID_HOSTNAME = "invalid_hostname"  # replaced by the source address; see claimed_hostname
    HOSTNAME_MISMATCH = "hostname_mismatch"  # named another host than its authenticated sender
    # its own time is more than CLOCK_AHEAD_S after its arrival, or over a day before the
    # newest time of the other lines (a router without NTP, in 1970 or at its firmware's
    # build date): the rules count it at its arrival; event_ts keeps what the router said
    CLOCK_SKEW = "clock_skew"


CLOCK_AHEAD_S = 60.0
LIVE_TRANSPORTS = frozenset({Transport.UDP, Transport.TCP, Transport.TLS, Transport.HTTP})


class RawLog(msgspec.Struct, omit_defaults=True):
    """One received line with its arrival metadata; `line` is the text as received."""

    event_id: str
    arrival_ts: float  # seconds since the epoch, UTC
    line: str
    transport: str
    source_ip: str | None = None
    flags: list[str] = []
    # set when a client sent structured input (HTTP objects); parsing fills the rest
    hostname: str | None = None
    program: str | None = None
    level: str | None = None
    timestamp: str | None = None
    # the device the transport authenticated (bound ingest token, mapped TLS client
    # certificate): the line is attributed to it whatever it names, and trusted as verified
    bound_hostname: str | None = None


class RawBatch(msgspec.Struct, omit_defaults=True):
    """What travels on logs.raw."""

    batch_id: str
    items: list[RawLog]
    v: int = FORMAT_VERSION


class ParsedEvent(msgspec.Struct, omit_defaults=False):
    """A parsed log event: DESIGN.md's format, and the row in `events`."""

    event_id: str
    arrival_ts_utc: str  # ISO 8601, UTC, milliseconds, "Z"
    source_ip: str | None
    original_ts: str | None  # the timestamp text as it appeared in the line
    hostname: str | None
    process_name: str | None
    pid: str | None
    log_level: str | None  # EMERG ALERT CRIT ERR WARNING NOTICE INFO DEBUG
    facility: str | None
    event_type: str  # LOG NETWORK AUTH FILE PROCESS REGISTRY CUSTOM
    message: str
    parser_name: str
    log_source_type: str  # wifi security health wan other
    structured_fields: dict[str, object]
    event_ts: str | None = None  # the line's own time, resolved to UTC ISO 8601, if it had one
    transport: str | None = None
    flags: list[str] = []
    trust: str | None = None  # opmas.trust level of the line's origin; None counts as untrusted


class ParsedBatch(msgspec.Struct):
    """What travels on logs.parsed.<domain>: events of one domain."""

    batch_id: str
    events: list[ParsedEvent]
    v: int = FORMAT_VERSION


class Finding(msgspec.Struct, kw_only=True):
    """What travels on findings.<domain>: DESIGN.md's agent finding, one per message.

    A burst is published when it opens and again as it grows (same `finding_id`, larger
    `count`, `last_seen_utc` later): a reader keeps the version with the largest count.
    """

    finding_id: str
    agent_name: str
    finding_ts_utc: str  # when the burst opened (event time)
    device_hostname: str | None
    device_ip: str | None
    severity: str
    finding_type: str
    rule_name: str
    description: str
    details: dict[str, object]
    evidence_event_ids: list[str]
    domain: str
    count: int = 1
    last_seen_utc: str | None = None
    v: int = FORMAT_VERSION


class Action(msgspec.Struct, kw_only=True):
    """What travels on actions.<state>: an intended action after a transition, one per message.

    The database row is the truth; a message says "this action is now in `state`" so that the
    executor, the notifier and live views react without polling. Nats-Msg-Id is
    `<action_uuid>:<state>:<attempts>`.
    """

    action_id: int
    action_uuid: str
    state: str
    action_type: str
    action_config: dict[str, object]
    execution_mode: str
    device_hostname: str | None = None
    device_ip: str | None = None
    finding_uuid: str | None = None
    incident_id: int | None = None
    playbook: str | None = None
    description: str | None = None
    attempts: int = 0
    result: dict[str, object] | None = None
    ts_utc: str
    v: int = FORMAT_VERSION


raw_batch_encoder = msgspec.json.Encoder()
raw_batch_decoder = msgspec.json.Decoder(RawBatch)
parsed_batch_decoder = msgspec.json.Decoder(ParsedBatch)
parsed_event_decoder = msgspec.json.Decoder(ParsedEvent)
finding_decoder = msgspec.json.Decoder(Finding)
action_decoder = msgspec.json.Decoder(Action)
encode = raw_batch_encoder.encode


def new_id() -> str:
    """A time-ordered UUIDv7, as text."""
    return str(uuid7())


def iso_utc(ts: float) -> str:
    """Epoch seconds as ISO 8601 UTC with milliseconds and a `Z`."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Signal(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One router's share of a FLEET rule's key over a short span, for the fleet stage.

    `count` events of router `hostname` matched the signal half of rule `rule` (of agent
    `agent`) with group key `key`, between `first_ts` and `last_ts` (event time, epoch s).
    """

    agent: str
    rule: str
    key: str
    hostname: str
    count: int
    first_ts: float
    last_ts: float
    evidence: list[str] = []  # the first event ids counted, a few at most
    trust: str | None = None  # weakest opmas.trust level of the events counted


class SignalBatch(msgspec.Struct, omit_defaults=True):
    """What travels on signals.fleet: the signals of one drain of a worker's collector."""

    batch_id: str
    signals: list[Signal]
    dropped: int = 0  # matching events not counted because the collector was full
    v: int = FORMAT_VERSION


signal_batch_decoder = msgspec.json.Decoder(SignalBatch)
