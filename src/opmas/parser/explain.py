"""Why a line parsed the way it did: the record behind `opmas explain`.

The engine fills a `Trace` while parsing when asked to; `Explanation` is the finished,
read-only account: header format and fields, the parser chosen and why, each pattern tried.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from opmas import trust
from opmas.messages import ParsedEvent, RawLog
from opmas.parser.header import Header

if TYPE_CHECKING:
    from opmas.parser.compiled import CompiledParser


@dataclass
class Trace:
    """Notes the engine takes while parsing one line (only when explaining)."""

    header: Header | None = None
    lookup: str = ""
    tried: list[tuple[int, str]] = field(default_factory=list)
    pattern_index: int | None = None
    pattern_regex: str | None = None
    delegated: str | None = None
    joined: dict[str, object] = field(default_factory=dict)
    trust: str = ""  # why the line gets its trust level


@dataclass(frozen=True)
class Explanation:
    """How one line was parsed: header, parser choice, patterns tried, and the result."""

    line: str
    header_format: str
    header: dict[str, object]
    parser_name: str
    reason: str
    pattern_index: int | None
    pattern_regex: str | None
    tried: list[tuple[int, str]]
    delegated_to: str | None
    joined: dict[str, object]
    event: ParsedEvent
    trust_reason: str = ""
    sd: dict[str, dict[str, str]] = field(default_factory=dict)  # RFC 5424 structured data

    @property
    def domain(self) -> str:
        """The domain (log_source_type) the event is routed to."""
        return self.event.log_source_type

    @property
    def structured_fields(self) -> dict[str, object]:
        """The event's structured fields."""
        return self.event.structured_fields

    def _structured_data(self) -> list[str]:
        """RFC 5424 structured data, one `[SD-ID] name="value"` line per element (repr-escaped:
        the values are the sender's)."""
        if not self.sd:
            return []
        lines = ["  structured data:"]
        for sd_id, params in self.sd.items():
            shown = " ".join(f"{name}={value!r}" for name, value in params.items())
            lines.append(f"    [{sd_id}] {shown}".rstrip())
        return lines

    def render(self) -> str:
        """A plain-text report for a terminal."""
        lines = [f"line:          {self.line!r}", f"header format: {self.header_format}"]
        lines += [f"  {key}: {value!r}" for key, value in self.header.items() if value]
        lines += self._structured_data()
        lines += [f"parser:        {self.parser_name}", f"why:           {self.reason}"]
        for index, outcome in self.tried:
            lines.append(f"  pattern {index}: {outcome}")
        if self.pattern_regex is not None:
            lines.append(f"matched:       pattern {self.pattern_index}: {self.pattern_regex}")
        if self.delegated_to:
            lines.append(f"delegated to:  {self.delegated_to}")
        if self.joined:
            lines.append(f"joined by pid: {self.joined}")
        lines += [
            f"event_type:    {self.event.event_type}",
            f"domain:        {self.domain}",
            f"log_level:     {self.event.log_level}",
            f"event_ts:      {self.event.event_ts}",
            "fields:",
        ]
        lines += [f"  {key}: {value!r}" for key, value in self.structured_fields.items()]
        if self.event.flags:
            lines.append(f"flags:         {', '.join(self.event.flags)}")
        lines.append(f"trust:         {self.event.trust} ({self.trust_reason})")
        return "\n".join(lines)


def build(line: str, trace: Trace, event: ParsedEvent) -> Explanation:
    """Freeze a trace and its event into an Explanation."""
    header = trace.header
    fields: dict[str, object] = {}
    if header is not None:
        fields = {
            "pri": header.pri,
            "facility": header.facility,
            "severity": header.severity,
            "timestamp": header.timestamp,
            "hostname": header.hostname,
            "program": header.program,
            "pid": header.pid,
            "msgid": header.msgid,
            "version": header.version,
            "invalid_pri": header.invalid_pri,
            "sd_dropped": header.sd_dropped,
        }
    return Explanation(
        line=line,
        header_format=header.format if header is not None else "none",
        header=fields,
        parser_name=event.parser_name,
        reason=trace.lookup,
        pattern_index=trace.pattern_index,
        pattern_regex=trace.pattern_regex,
        tried=list(trace.tried),
        delegated_to=trace.delegated,
        joined=dict(trace.joined),
        event=event,
        trust_reason=trace.trust,
        sd=dict(header.structured_data or {}) if header is not None else {},
    )


def lookup_reason(program: str | None, parser: CompiledParser | None, header: Header) -> str:
    """Why this parser (or none) was chosen for a line."""
    if parser is not None and not program:
        return f"empty tag; the message starts with a tag of {parser.name} ({parser.path.name})"
    if parser is not None:
        return f"program {program!r} -> {parser.name} ({parser.path.name})"
    if header.format == "none" and not program:
        return "no syslog header and no known program: unparsed"
    return f"no parser for program {program!r}: unparsed"


def trust_reason(
    level: str,
    hostname: str | None,
    raw: RawLog,
    enrolled: dict[str, str],
    claimed: str | None,
) -> str:
    """Why a line gets its trust level (`opmas explain`)."""
    if level == trust.VERIFIED:
        why = f"sent over an ingest token or client certificate of {raw.bound_hostname}"
        return why + (f"; it named {claimed!r}, attributed to the sender" if claimed else "")
    if level == trust.ADDRESS:
        return f"{hostname} is enrolled and the line came from its registered IP {raw.source_ip}"
    if not hostname:
        return "the line names no host"
    registered = enrolled.get(hostname)
    if registered is None and not enrolled and raw.transport == "explain":
        return "offline, nothing is enrolled: try --source-ip IP --enrolled HOST=IP"
    if registered is None:
        return f"{hostname} is not an enrolled device"
    if raw.source_ip is None:
        return f"no source address (offline: pass --source-ip; {hostname} is at {registered})"
    return f"{hostname} is enrolled at {registered}, the line came from {raw.source_ip}"
