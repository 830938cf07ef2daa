"""The parser engine: RawLog -> ParsedEvent, pure and synchronous (the service adds the bus).

A line's header names its program; a dict lookup picks that program's parser, whose first
matching pattern names the event. A known program whose patterns all miss still gets its
parser's catch-all event; `unparsed` is for unknown programs and lines without a header.

The engine keeps one piece of state: a bounded LRU map (hostname, program, pid) -> fields
for parsers with a `join` (dropbear's `Child connection from ip:port` gives the address to
the same PID's later lines). The join therefore only works within one engine instance.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import OrderedDict
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from opmas import trust
from opmas.messages import CLOCK_AHEAD_S, LIVE_TRANSPORTS, Flag, ParsedEvent, RawLog, new_id
from opmas.parser import explain as explaining
from opmas.parser.compiled import CompiledParser, CompiledPattern, event_name
from opmas.parser.header import (
    FACILITIES,
    FAST_LOCAL,
    FAST_LOGREAD,
    FAST_REMOTE,
    LEVELS,
    MAX_PRI,
    SEVERITIES,
    Header,
    escaped_hostname,
    normalize_level,
    parse_header,
    split_tag,
    valid_hostname,
)
from opmas.parser.loader import load_parsers
from opmas.parser.spec import UNPARSED
from opmas.parser.timestamps import TimeResolver

INVALID_PRI = Flag.INVALID_PRI
PARSE_ERROR = Flag.PARSE_ERROR
GOOD_HOSTS_MAX = 4096
UNTRUSTED = trust.UNTRUSTED
UNKNOWN_HOST = "unknown"  # the hostname of an event with an invalid one and no source address
_RAW_TS_KINDS = ("iso", "bsd", "ctime")
_EOL = ("\n", "\r")
_LOCAL_INITIALS = frozenset("JFMASONDTW")  # first letters of month and weekday names
_WEEKDAYS = frozenset(("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"))
_BSD = ("rfc3164", "bsd")  # header format and timestamp kind
JoinKey = tuple[str | None, str | None, str]
# (structured fields, domain, event type, severity for lines without one, pattern matched)
Outcome = tuple[dict[str, object], str, str, str | None, CompiledPattern | None]


class ParserEngine:
    """Parses raw lines with a set of compiled program parsers; never raises on a line."""

    def __init__(
        self,
        parsers: Sequence[CompiledParser],
        *,
        join_size: int = 4096,
        cache_size: int = 8192,
        enrolled: dict[str, str] | None = None,
    ) -> None:
        self.parsers = list(parsers)
        # hostname -> registered IP of the enrolled devices (EnrolledDevices.addresses)
        self.enrolled: dict[str, str] = {} if enrolled is None else enrolled
        self._by_program: dict[str, CompiledParser] = {}
        for parser in self.parsers:  # later (user) parsers take a program over
            for program in parser.spec.programs:
                self._by_program[program] = parser
        self._time = TimeResolver(cache_size)
        self._lookup = self._by_program.get
        self._arrival_iso = self._time.arrival_iso
        self._resolve = self._time.resolve
        self._joins: OrderedDict[JoinKey, dict[str, object]] = OrderedDict()
        self._join_size = join_size
        self._good_hosts: set[str] = set()
        self._newest_day = ""  # date of the newest live line not flagged clock_skew
        self._floor = ""  # the day before it: a live line dated before is clock_skew

    @classmethod
    def from_dirs(cls, dirs: Sequence[Path] = (), **options: Any) -> ParserEngine:
        """An engine with the shipped parsers, overridden by those in `dirs`."""
        return cls(load_parsers(dirs), **options)

    def _host_ok(self, hostname: str) -> bool:
        """valid_hostname, remembering the valid ones (a fleet has few: a set test is ~10x
        cheaper than the regex)."""
        if not valid_hostname(hostname):
            return False
        if len(self._good_hosts) >= GOOD_HOSTS_MAX:
            self._good_hosts.clear()
        self._good_hosts.add(hostname)
        return True

    def parser_for(self, program: str | None) -> CompiledParser | None:
        """The parser of a program name (exact, then lower-case, then basename of a path)."""
        if not program:
            return None
        found = self._by_program.get(program)
        if found is None:
            found = self._by_program.get(program.lower())
        if found is None and "/" in program:
            found = self._by_program.get(program.rsplit("/", 1)[1])
        return found

    def parse(self, raw: RawLog) -> ParsedEvent:
        """Parse one line; a failure inside the engine gives an unparsed event, never raises."""
        try:
            return self._fast(raw) or self._parse(raw, None)
        except Exception:
            return self._failed(raw)

    def parse_many(self, raws: list[RawLog]) -> list[ParsedEvent]:
        """Parse a batch in order (the PID join sees earlier lines of the batch)."""
        events: list[ParsedEvent] = []
        append, fast, parse = events.append, self._fast, self._parse
        for raw in raws:
            try:
                append(fast(raw) or parse(raw, None))
            except Exception:
                append(self._failed(raw))
        return events

    def _fast(self, raw: RawLog) -> ParsedEvent | None:
        """`_parse` for the forms routers send most (remote syslog, plain RFC 3164, logread)
        from a known program and a known-good host; None sends the line to `_parse`.

        It gives exactly what `_parse` gives (a test compares them line by line); it only
        skips the Header object, the clean-up a clean line does not need, and the tracing.
        """
        line = raw.line
        first = line[:1]
        pri: int | None = None
        facility: str | None
        severity: str | None
        if first == "<":
            found = FAST_REMOTE.match(line)
            if found is None:
                return None
            pri_text, stamp, host, program, pid, message = found.groups()
            pri = int(pri_text)
            if pri > MAX_PRI:
                return None
            facility, severity = FACILITIES[pri >> 3], SEVERITIES[pri & 7]
            fmt, kind = _BSD
        elif first in _LOCAL_INITIALS and line[:3] not in _WEEKDAYS:
            found = FAST_LOCAL.match(line)
            if found is None:
                return None
            stamp, host, program, pid, message = found.groups()
            facility = severity = None
            fmt, kind = _BSD
        elif first in _LOCAL_INITIALS:
            found = FAST_LOGREAD.match(line)
            if found is None:
                return None
            stamp, facility, level_name, program, pid, message = found.groups()
            severity, host, fmt, kind = LEVELS[level_name], None, "logread", "ctime"
        else:
            return None
        if "\x00" in line or line[-1] in _EOL:  # not empty: found matched
            return None  # the clean-up changes the line: the header may read otherwise
        parser = self._lookup(program)
        hostname = host or raw.hostname
        if (
            parser is None
            or raw.bound_hostname is not None
            or (hostname and hostname not in self._good_hosts)
        ):  # what parse_header would say, without parsing again
            header = Header(fmt, message, stamp, kind, host, program, pid, facility, severity, pri)
            return self._parse(raw, None, header)
        if parser.prefix is not None:
            outcome = self._apply(parser, message, program, None)
        else:  # _apply without a prefix, inline
            pattern, groups = parser.first_match(message)
            if pattern is not None and pattern.simple:
                outcome = (
                    pattern.fields(groups, program), pattern.domain, pattern.event_type,
                    pattern.spec.severity, pattern,
                )  # fmt: skip
            else:
                outcome = self._outcome(parser, pattern, groups, program, None)
        fields, domain, event_type, default_severity, pattern = outcome
        if parser.spec.join is not None and pid is not None:
            self._join(parser, (hostname or raw.source_ip, program, pid), fields, pattern, None)
        arrival = raw.arrival_ts
        event_ts = self._resolve(kind, stamp, arrival)
        return ParsedEvent(
            raw.event_id,
            self._arrival_iso(arrival),
            raw.source_ip,
            stamp,
            hostname,
            program,
            pid,
            severity or normalize_level(raw.level) or default_severity,
            facility,
            event_type,
            message,
            parser.name,
            domain,
            fields,
            event_ts,
            raw.transport,
            self._skew(event_ts, raw, raw.flags),
            trust.grade(self.enrolled, hostname, raw.source_ip) if self.enrolled else UNTRUSTED,
        )

    def explain(
        self,
        line: str,
        arrival_ts: float | None = None,
        *,
        source_ip: str | None = None,
        bound_hostname: str | None = None,
    ) -> explaining.Explanation:
        """Parse `line` and report how: header format, parser choice, patterns tried, trust
        (as if it came from `source_ip`, or over a token or certificate of `bound_hostname`)."""
        arrival = time.time() if arrival_ts is None else arrival_ts
        trace = explaining.Trace()
        raw = RawLog(new_id(), arrival, line, "explain", source_ip, bound_hostname=bound_hostname)
        event = self._parse(raw, trace)
        return explaining.build(line, trace, event)

    def _parse(
        self, raw: RawLog, trace: explaining.Trace | None, header: Header | None = None
    ) -> ParsedEvent:
        line, flags = raw.line, raw.flags
        if "\x00" in line:
            line = line.replace("\x00", "\ufffd")
            flags = _flagged(flags, Flag.NUL_REPLACED)
        if line.endswith(_EOL):
            line = line.rstrip("\r\n")
        if line.startswith("\ufeff"):
            line = line[1:]
        if header is None:
            header = parse_header(line)
        if header.invalid_pri:
            flags = _flagged(flags, INVALID_PRI)
        program = header.program
        message = text = header.message
        parser = self._lookup(program) if program else None
        if parser is None:
            parser, program, message, text = self._unusual(header, raw, line)
        if trace is not None:
            trace.header = header
            trace.lookup = explaining.lookup_reason(program, parser, header)
        hostname = header.hostname or raw.hostname
        invalid_host = None
        if hostname and hostname not in self._good_hosts and not self._host_ok(hostname):
            invalid_host, hostname = hostname, raw.source_ip or UNKNOWN_HOST  # never injected
            flags = _flagged(flags, Flag.INVALID_HOSTNAME)
        claimed = None
        if raw.bound_hostname is not None:  # authenticated sender: never another router
            level = trust.VERIFIED
            if hostname and hostname.lower() != raw.bound_hostname.lower():
                claimed = hostname
                flags = _flagged(flags, Flag.HOSTNAME_MISMATCH)
            hostname = raw.bound_hostname
        else:
            level = trust.grade(self.enrolled, hostname, raw.source_ip)
        if trace is not None:
            trace.trust = explaining.trust_reason(level, hostname, raw, self.enrolled, claimed)
        if parser is None:
            fields: dict[str, object] = {}
            domain, event_type, severity, parser_name = "other", "LOG", None, UNPARSED
        else:
            outcome = self._apply(parser, text, program or parser.spec.name, trace)
            fields, domain, event_type, severity, pattern = outcome
            parser_name = parser.name
            if parser.spec.join is not None and header.pid is not None:
                key = (hostname or raw.source_ip, program, header.pid)
                self._join(parser, key, fields, pattern, trace)
        if header.structured_data:
            fields["sd"] = header.structured_data
        if header.sd_dropped:
            fields["sd_dropped"] = header.sd_dropped
        if claimed is not None:
            fields["claimed_hostname"] = claimed
        if invalid_host is not None:
            fields["claimed_hostname"] = escaped_hostname(invalid_host)
        stamp = header.timestamp
        if stamp is not None and header.ts_kind is not None:
            event_ts = self._resolve(header.ts_kind, stamp, raw.arrival_ts)
        else:
            event_ts = self._raw_ts(raw)
        return ParsedEvent(  # positional: about 4x faster than keywords (order pinned by a test)
            raw.event_id,
            self._arrival_iso(raw.arrival_ts),
            raw.source_ip,
            stamp or raw.timestamp,
            hostname,
            program,
            header.pid,
            header.severity or normalize_level(raw.level) or severity,
            header.facility,
            event_type,
            message,
            parser_name,
            domain,
            fields,
            event_ts,
            raw.transport,
            self._skew(event_ts, raw, flags),
            level,
        )

    def _skew(self, event_ts: str | None, raw: RawLog, flags: list[str]) -> list[str]:
        """`flags`, with CLOCK_SKEW when a live line's own time is more than CLOCK_AHEAD_S
        after its arrival, or dated over a day before the newest line met so far (ISO texts
        of one format compare as their times do). Behind is judged against the other lines,
        not the wall clock: a file of last month sent as a test is consistent with itself."""
        if event_ts is None or raw.transport not in LIVE_TRANSPORTS:
            return flags
        if event_ts > self._arrival_iso(raw.arrival_ts + CLOCK_AHEAD_S):
            return _flagged(flags, Flag.CLOCK_SKEW)
        if event_ts < self._floor:
            return _flagged(flags, Flag.CLOCK_SKEW)
        if event_ts[:10] > self._newest_day:
            self._newest_day = event_ts[:10]
            with contextlib.suppress(ValueError, OverflowError):  # year 1 has no day before
                day = date.fromisoformat(self._newest_day)
                self._floor = (day - timedelta(days=1)).isoformat()
        return flags

    def _unusual(
        self, header: Header, raw: RawLog, line: str
    ) -> tuple[CompiledParser | None, str | None, str, str]:
        """Parser, program, message and text to match when the tag is not a known program."""
        program, message = header.program, header.message
        parser = self.parser_for(program)
        if parser is None and header.format == "none":
            program, message = raw.program, line
            parser = self.parser_for(program)
        if parser is None and not program:
            split = split_tag(message)
            embedded = self.parser_for(split[0]) if split is not None else None
            if split is not None and embedded is not None:
                return embedded, program, message, split[2]
        return parser, program, message, message

    def _apply(
        self,
        parser: CompiledParser,
        text: str,
        program: str,
        trace: explaining.Trace | None,
    ) -> Outcome:
        """Strip the parser's prefix, find the first matching pattern, build its outcome."""
        prefix_fields: dict[str, str | Any] | None = None
        if parser.prefix is not None and text.startswith(parser.prefix_lead):
            found = parser.prefix.match(text)
            if found is not None:
                prefix_fields = found.groupdict()
                text = text[found.end() :]
        if trace is None:
            pattern, groups = parser.first_match(text)
            if pattern is not None and pattern.simple:
                fields = pattern.fields(groups, program)  # the common case, kept inline
                outcome: Outcome = (
                    fields, pattern.domain, pattern.event_type, pattern.spec.severity, pattern
                )  # fmt: skip
            else:
                outcome = self._outcome(parser, pattern, groups, program, trace)
        else:
            pattern, groups = parser.trace_match(text, trace.tried)
            outcome = self._outcome(parser, pattern, groups, program, trace)
        if prefix_fields:
            fields = outcome[0]
            for key, value in prefix_fields.items():
                if value and key[0] != "_" and key not in fields:
                    fields[key] = value
        return outcome

    @staticmethod
    def _outcome(
        parser: CompiledParser,
        pattern: CompiledPattern | None,
        groups: dict[str, str | Any],
        name: str,
        trace: explaining.Trace | None,
    ) -> Outcome:
        """Fields, domain, event type and severity of a match (or of the catch-all)."""
        spec = parser.spec
        fields: dict[str, object]
        if pattern is None:
            fields = {"event": event_name(spec.fallback_event, {"program": name})}
            outcome: Outcome = (fields, spec.domain, spec.event_type, None, None)
        else:
            fields = pattern.fields(groups, name)
            domain = pattern.domain_for(fields) if pattern.rules else pattern.domain
            outcome = (fields, domain, pattern.event_type, pattern.spec.severity, pattern)
            if pattern.delegate is not None and pattern.spec.delegate is not None:
                inner = groups.get(pattern.spec.delegate.group)
                outcome = _delegated(pattern.delegate, inner, name, outcome)
            if trace is not None:
                trace.pattern_index, trace.pattern_regex = pattern.index, pattern.spec.regex
                trace.delegated = pattern.delegate.name if pattern.delegate else None
        return outcome

    def _join(
        self,
        parser: CompiledParser,
        key: JoinKey,
        fields: dict[str, object],
        pattern: CompiledPattern | None,
        trace: explaining.Trace | None,
    ) -> None:
        """Remember a connection's fields, or fill the ones a later line of its PID lacks."""
        join = parser.spec.join
        action = pattern.spec.join if pattern is not None else None
        if join is None:
            return
        if action == "remember":
            self._joins[key] = {name: fields[name] for name in join.fields if name in fields}
            self._joins.move_to_end(key)
            if len(self._joins) > self._join_size:
                self._joins.popitem(last=False)
            return
        remembered = self._joins.pop(key, None) if action == "forget" else self._joins.get(key)
        for name, value in (remembered or {}).items():
            if name not in fields:
                fields[name] = value
                if trace is not None:
                    trace.joined[name] = value

    def _raw_ts(self, raw: RawLog) -> str | None:
        """The event time of a client-supplied RawLog.timestamp, if it can be read."""
        if raw.timestamp:
            for kind in _RAW_TS_KINDS:
                resolved = self._time.resolve(kind, raw.timestamp, raw.arrival_ts)
                if resolved is not None:
                    return resolved
        return None

    def _failed(self, raw: RawLog) -> ParsedEvent:
        """The unparsed event of a line the engine choked on."""
        line = raw.line.replace("\x00", "\ufffd") if isinstance(raw.line, str) else ""
        flags = _flagged(raw.flags if isinstance(raw.flags, list) else [], PARSE_ERROR)
        if line != raw.line:
            flags = _flagged(flags, Flag.NUL_REPLACED)
        arrival = raw.arrival_ts if isinstance(raw.arrival_ts, float | int) else 0.0
        if not math.isfinite(arrival) or not 0 <= arrival < 253402300800:
            arrival = 0.0
        return ParsedEvent(
            event_id=str(raw.event_id),
            arrival_ts_utc=self._time.arrival_iso(arrival),
            source_ip=raw.source_ip,
            original_ts=None,
            hostname=_checked_host(raw.bound_hostname or raw.hostname, raw.source_ip),
            process_name=None,
            pid=None,
            log_level=None,
            facility=None,
            event_type="LOG",
            message=line,
            parser_name=UNPARSED,
            log_source_type="other",
            structured_fields={},
            transport=raw.transport,
            flags=flags,
            trust=trust.VERIFIED if raw.bound_hostname else trust.UNTRUSTED,
        )


def _delegated(target: CompiledParser, text: str | None, name: str, outer: Outcome) -> Outcome:
    """Let `target`'s patterns name the event of `text` (netifd's wrapped udhcpc lines)."""
    if not text:
        return outer
    pattern, groups = target.first_match(text)
    if pattern is None:
        return outer
    inner = pattern.fields(groups, name)
    fields = {**outer[0], **inner}
    domain = pattern.domain_for(fields) if pattern.rules else pattern.domain
    return fields, domain, pattern.event_type, pattern.spec.severity or outer[3], outer[4]


def _checked_host(hostname: object, source_ip: str | None) -> str | None:
    """A failed line's hostname if valid, else its source address (or `unknown`)."""
    if hostname is None or (isinstance(hostname, str) and valid_hostname(hostname)):
        return hostname
    return source_ip or UNKNOWN_HOST


def _flagged(flags: list[str], flag: str) -> list[str]:
    return flags if flag in flags else [*flags, flag]
