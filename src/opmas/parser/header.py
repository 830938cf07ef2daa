"""Syslog header parsing, the first step of the parser stage (RawLog.line -> Header).

Recognises RFC 5424, RFC 3164 (with or without PRI, hostname, year or ISO 8601 time), the
OpenWRT `logread` file format, LuCI's log-viewer rendering, raw `dmesg` and bare lines. One
cheap first-character test picks the regex to try, so a line costs one or two regex calls.
"""

from __future__ import annotations

import ipaddress
import re

import msgspec

FACILITIES = (
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
    "authpriv", "ftp", "ntp", "security", "console", "solaris-cron",
    "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
)  # fmt: skip
SEVERITIES = ("EMERG", "ALERT", "CRIT", "ERR", "WARNING", "NOTICE", "INFO", "DEBUG")
LEVELS = {
    "emerg": "EMERG", "panic": "EMERG", "alert": "ALERT", "crit": "CRIT", "critical": "CRIT",
    "err": "ERR", "error": "ERR", "warn": "WARNING", "warning": "WARNING", "notice": "NOTICE",
    "info": "INFO", "informational": "INFO", "debug": "DEBUG",
}  # fmt: skip
MAX_PRI = 191

_MONTH = "Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec"
_WEEKDAYS = frozenset(("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"))
_MONTHS = frozenset(_MONTH.split("|"))
_WEEKDAY_INITIALS = frozenset("MTWFS")
_MONTH_INITIALS = frozenset("JFMASOND")
_FACSEV = (
    r"(?P<fac>kern|user|mail|daemon|authpriv|auth|syslog|lpr|news|uucp|cron|ftp|ntp|security"
    r"|console|local[0-7]|mark)\.(?P<sev>emerg|panic|alert|crit|error|err|warning|warn|notice"
    r"|info|debug)"
)
_CTIME = re.compile(
    rf"(?P<stamp>(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) (?:{_MONTH}) {{1,2}}\d{{1,2}} \d\d:\d\d:\d\d"
    rf" \d{{4}})(?= )(?: \[\d+\.\d+\])?(?: {_FACSEV}(?=[: ]):?)? ?"
)
_BSD = re.compile(
    rf"(?:{_MONTH}) {{1,2}}\d{{1,2}} (?:\d{{4}} )?\d\d:\d\d:\d\d(?:\.\d{{1,9}})?(?: \d{{4}}(?= ))?"
)
_ISO = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d{1,9})?(?:Z|[+-]\d\d:?\d\d)?")
_FRAGMENT = re.compile(rf"{_FACSEV}:? ")
_DMESG = re.compile(r"\[\s*\d+\.\d+\]")
_LUCI = re.compile(rf"\[(?P<ts>[^\]]{{4,60}})\] {_FACSEV}:? ")
_TAG = re.compile(r"([^\s\[\]:]{0,64})(?:\[([^\]\s]{0,32})\])?:(?: |$)")
# One SD-ELEMENT as far as the header needs to know: brackets around anything with quoted
# strings (escapes exist only inside them: `[\]` is an element whose SD-ID is `\`);
# parse_sd checks each element against the RFC grammar.
_SD_LOOSE = r'\[(?:[^\]"]|"(?:[^"\\]|\\.)*")*\]'
_SD_LOOSE_ELEMENT = re.compile(_SD_LOOSE)
# VERSION is any 1 to 3 digits not starting with 0 (RFC 5424 §6); only 1 is defined so far,
# and a later one is read the same way rather than left unparsed. Fields longer than the RFC
# allows (APP-NAME 48, PROCID 128, MSGID 32, HOSTNAME 255) make the line not RFC 5424.
_RFC5424 = re.compile(
    r"(?P<version>[1-9]\d{0,2}) (?P<ts>\S{1,64}) (?P<host>\S{1,255}) (?P<app>\S{1,48})"
    rf" (?P<procid>\S{{1,128}}) (?P<msgid>\S{{1,32}}) (?P<sd>-|(?:{_SD_LOOSE})+)"
    r"(?: (?P<msg>.*))?\Z",
    re.DOTALL,
)
_PROCID = re.compile(r"[0-9]{1,10}(?::[0-9]{1,10})?")
_TAG_TAIL = r"([^\s:\[\]]{0,64})(?:\[(\d{1,10})\])?:(?: |$)(.*)"
# Fast paths for the two forms OpenWRT sends most (logd remote syslog, logread files):
# one regex, one groups() call. Anything unusual falls through to the general code.
FAST_REMOTE = re.compile(
    rf"<(\d{{1,3}})>((?:{_MONTH}) [ \d]\d \d\d:\d\d:\d\d) "
    rf"(?:([^\s:\[\]]+) (?=[^\s:\[\]]{{0,64}}(?:\[\d{{1,10}}\])?:(?: |$)))?{_TAG_TAIL}",
    re.DOTALL,
)
FAST_LOGREAD = re.compile(
    rf"((?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) (?:{_MONTH}) [ \d]\d \d\d:\d\d:\d\d \d{{4}}) "
    rf"{_FACSEV} {_TAG_TAIL}",
    re.DOTALL,
)
# RFC 3164 without PRI (`Mmm dd HH:MM:SS host tag: msg`, what file tools and relays write).
# The lookaheads leave to the general code what it reads differently: a 4-digit token after
# the time (a year) and a `facility.severity` token after the host.
_FACSEV_BARE = _FACSEV.replace("(?P<fac>", "(?:").replace("(?P<sev>", "(?:")
FAST_LOCAL = re.compile(
    rf"((?:{_MONTH}) [ \d]\d \d\d:\d\d:\d\d) (?!\d{{4}} )([^\s:\[\]]+) (?!{_FACSEV_BARE}:? )"
    rf"([^\s:\[\]]{{0,64}})(?:\[([0-9]{{1,10}})\])?:(?: |$)(.*)",
    re.DOTALL,
)
# RFC 5424 §6.3: SD-ID and PARAM-NAME are 1 to 32 printable ASCII characters but `=`, space,
# `]` and `"`; inside PARAM-VALUE only `\"`, `\\` and `\]` are escapes.
_SD_NAME = r"[!#-<>-\\^-~]{1,32}"
_SD_ELEMENT = re.compile(rf'\[({_SD_NAME})((?: {_SD_NAME}="(?:[^"\\]|\\.)*")*) ?\]')
_SD_PARAM = re.compile(rf' ({_SD_NAME})="((?:[^"\\]|\\.)*)"')
MAX_SD_ELEMENTS = 16
MAX_SD_PARAMS = 32  # per element
MAX_SD_VALUE = 1024  # characters of one PARAM-VALUE, after unescaping
_SD_UNESCAPE = re.compile(r"\\([\"\\\]])")
# Hostnames kept as sent: RFC 1123 labels (1 to 63 letters, digits, inner hyphens) plus `_`,
# which OpenWRT users put in names; anything else (spaces, control characters, `<>`) is not one.
_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)(?:\.(?!-)[A-Za-z0-9_-]{1,63}(?<!-))*\.?")
_IPV6_HOST = re.compile(r"[0-9A-Fa-f:.]{2,45}")
MAX_HOSTNAME = 255
MAX_CLAIMED = 300


class Header(msgspec.Struct, gc=False):
    """What the header of one line said; `message` is the text after the tag."""

    format: str  # rfc5424 rfc3164 rfc3164_iso logread logread_fragment luci dmesg none
    message: str
    timestamp: str | None = None
    ts_kind: str | None = None  # how timestamps.resolve reads `timestamp`
    hostname: str | None = None
    program: str | None = None
    pid: str | None = None
    facility: str | None = None
    severity: str | None = None
    pri: int | None = None
    invalid_pri: bool = False
    msgid: str | None = None
    structured_data: dict[str, dict[str, str]] | None = None
    sd_dropped: int = 0  # SD elements or parameters left out, or values cut (see parse_sd)
    version: int | None = None  # RFC 5424 VERSION


def valid_hostname(text: str) -> bool:
    """Whether `text` may stand as an event's hostname: dot-separated labels of letters,
    digits, `-` (not first or last) and `_`, 255 characters at most, or an IPv6 address."""
    if len(text) > MAX_HOSTNAME:
        return False
    if _HOSTNAME.fullmatch(text) is not None:
        return True
    if ":" in text and _IPV6_HOST.fullmatch(text) is not None:
        try:
            ipaddress.IPv6Address(text)
        except ValueError:
            return False
        return True
    return False


def escaped_hostname(text: str) -> str:
    """An invalid hostname as it may be stored and shown: control and non-ASCII characters
    escaped (`\\n`, `\\x1b`), cut to MAX_CLAIMED characters."""
    return text[:MAX_CLAIMED].encode("unicode_escape").decode("ascii")


def normalize_level(text: str | None) -> str | None:
    """`warn`, `Warning`, `WARNING` -> `WARNING`; unknown names -> None."""
    return LEVELS.get(text.lower()) if text else None


def parse_header(line: str) -> Header:
    """Split one line into its header fields and message; never raises.

    A PRI above 191 or not a number (`<999>`, `<x>`) is dropped and reported with
    `invalid_pri`; the rest of the line is then read as if it had no PRI.
    """
    first = line[:1]
    if first == "<":
        fast = FAST_REMOTE.match(line)
        if fast is not None:
            pri_text, stamp, host, program, pid, message = fast.groups()
            pri = int(pri_text)
            if pri <= MAX_PRI:
                facility, severity = FACILITIES[pri >> 3], SEVERITIES[pri & 7]
                return Header(
                    "rfc3164", message, stamp, "bsd", host, program, pid, facility, severity, pri
                )
    elif first in _WEEKDAY_INITIALS:
        fast = FAST_LOGREAD.match(line)
        if fast is not None:
            stamp, facility, severity, program, pid, message = fast.groups()
            return Header(
                "logread", message, stamp, "ctime", None, program, pid, facility, LEVELS[severity]
            )
    if first in _MONTH_INITIALS:
        fast = FAST_LOCAL.match(line)
        if fast is not None:
            stamp, host, program, pid, message = fast.groups()
            return Header("rfc3164", message, stamp, "bsd", host, program, pid)
    return _slow(line)


def hostname_of(line: str) -> str | None:
    """The hostname `line`'s header names (what parse_header, after the engine's clean-up,
    gives as `hostname`), or None; a few times cheaper than a parse. The ingest picks the
    partition of a line with it, before any parsing."""
    first = line[:1]
    if first == "<":
        fast = FAST_REMOTE.match(line)
        if fast is not None and int(fast.group(1)) <= MAX_PRI:
            return fast.group(3)
    else:
        if first in _MONTH_INITIALS:
            fast = FAST_LOCAL.match(line)
            if fast is not None:
                return fast.group(2)
        if first in _WEEKDAY_INITIALS and FAST_LOGREAD.match(line) is not None:
            return None  # logread lines never name a host
    if "\x00" in line:
        line = line.replace("\x00", "\ufffd")
    return parse_header(line.rstrip("\r\n").removeprefix("\ufeff")).hostname


def _slow(line: str) -> Header:
    if line[:1] != "<":
        return _after_pri(line, None, False)
    close = line.find(">", 1, 6)
    if close < 0:
        return _after_pri(line, None, False)
    token = line[1:close]
    rest = line[close + 1 :]
    if not (token.isascii() and token.isdigit()) or int(token) > MAX_PRI:
        return _after_pri(rest, None, True)
    pri = int(token)
    if "1" <= rest[:1] <= "9" and " " in rest[1:5]:
        match = _RFC5424.match(rest)
        if match is not None:
            return _rfc5424(match, pri)
    return _after_pri(rest, pri, False)


def _after_pri(rest: str, pri: int | None, invalid: bool) -> Header:
    head = rest[:3]
    if head in _WEEKDAYS:
        match = _CTIME.match(rest)
        if match is not None:
            body = rest[match.end() :]
            return _tagged(
                "logread", body, match.group("stamp"), "ctime", None, pri, invalid, match
            )
    if head in _MONTHS:
        match = _BSD.match(rest)
        if match is not None and rest[match.end() : match.end() + 1] == " ":
            return _hosted("rfc3164", rest, match.group(), "bsd", match.end() + 1, pri, invalid)
    first = rest[:1]
    if first.isdigit():
        match = _ISO.match(rest)
        if match is not None and rest[match.end() : match.end() + 1] == " ":
            return _hosted("rfc3164_iso", rest, match.group(), "iso", match.end() + 1, pri, invalid)
    elif first == "[":
        if _DMESG.match(rest) is not None:
            return _with_pri(Header("dmesg", rest, program="kernel"), pri, invalid)
        match = _LUCI.match(rest)
        if match is not None:
            body = rest[match.end() :]
            return _tagged("luci", body, match.group("ts"), "luci", None, pri, invalid, match)
    elif "a" <= first <= "z":
        match = _FRAGMENT.match(rest)
        if match is not None:
            body = rest[match.end() :]
            return _tagged("logread_fragment", body, None, None, None, pri, invalid, match)
    if pri is not None or invalid:
        return _tagged("rfc3164", rest, None, None, None, pri, invalid, None)
    return _tagged("none", rest, None, None, None, None, False, None)


def split_tag(text: str) -> tuple[str, str | None, str] | None:
    """`tag[pid]: rest` -> (tag, pid, rest), or None when `text` does not start with a tag."""
    tag = _TAG.match(text)
    if tag is None:
        return None
    program, pid = _program(tag)
    return program, pid, text[tag.end() :]


def _with_pri(header: Header, pri: int | None, invalid: bool) -> Header:
    if pri is None:
        return msgspec.structs.replace(header, invalid_pri=True) if invalid else header
    return msgspec.structs.replace(
        header, facility=_facility(pri), severity=SEVERITIES[pri & 7], pri=pri
    )


def _facility(pri: int) -> str:
    return FACILITIES[pri >> 3]


def _tagged(
    fmt: str,
    body: str,
    stamp: str | None,
    kind: str | None,
    host: str | None,
    pri: int | None,
    invalid: bool,
    facsev: re.Match[str] | None,
) -> Header:
    """A header whose next token is the tag (no hostname can follow)."""
    facility, severity = _levels(pri, facsev)
    program = pid = None
    tag = _TAG.match(body)
    if tag is not None:
        program, pid = _program(tag)
        body = body[tag.end() :]
    return Header(fmt, body, stamp, kind, host, program, pid, facility, severity, pri, invalid)


def _hosted(
    fmt: str, rest: str, stamp: str, kind: str, start: int, pri: int | None, invalid: bool
) -> Header:
    """RFC 3164 after its timestamp: `[hostname] [facility.severity] tag: message`."""
    body = rest[start:]
    if _TAG.match(body) is not None:
        return _tagged(fmt, body, stamp, kind, None, pri, invalid, None)
    space = body.find(" ")
    if space <= 0:
        return _tagged(fmt, body, stamp, kind, None, pri, invalid, None)
    host = body[:space]
    body = body[space + 1 :]
    facsev = _FRAGMENT.match(body)
    if facsev is not None:
        body = body[facsev.end() :]
    return _tagged(fmt, body, stamp, kind, host, pri, invalid, facsev)


def _levels(pri: int | None, facsev: re.Match[str] | None) -> tuple[str | None, str | None]:
    if pri is not None:
        return _facility(pri), SEVERITIES[pri & 7]
    if facsev is not None and facsev.group("fac") is not None:
        return facsev.group("fac"), LEVELS[facsev.group("sev")]
    return None, None


def _program(tag: re.Match[str]) -> tuple[str, str | None]:
    """The tag's program and PID: `monit[2340:0]` is monit with PID `2340:0` (pid:thread);
    brackets holding anything else stay in the name (`banIP-[0.2.0]`, a version)."""
    name, pid = tag.group(1), tag.group(2)
    if pid is None or _PROCID.fullmatch(pid) is not None:
        return name, pid
    return f"{name}[{pid}]", None


def _rfc5424(match: re.Match[str], pri: int) -> Header:
    def nil(value: str) -> str | None:
        return None if value == "-" else value

    stamp = nil(match.group("ts"))
    message = match.group("msg") or ""
    if message[:1] == " ":
        # rsyslog relaying an RFC 3164 line keeps the space that followed its tag in MSG
        # (`... dropbear 1234 - -  Bad password`): drop one, so it reads like the original.
        message = message[1:]
    if message[:1] == "\ufeff":
        message = message[1:]
    sd_text = match.group("sd")
    sd, dropped = (None, 0) if sd_text == "-" else parse_sd(sd_text)
    return Header(
        "rfc5424",
        message,
        stamp,
        "iso" if stamp else None,
        nil(match.group("host")),
        nil(match.group("app")),
        nil(match.group("procid")),
        _facility(pri),
        SEVERITIES[pri & 7],
        pri,
        False,
        nil(match.group("msgid")),
        sd or None,
        dropped,
        int(match.group("version")),
    )


def parse_structured_data(text: str) -> dict[str, dict[str, str]]:
    """RFC 5424 STRUCTURED-DATA as `{sd-id: {param: value}}` with escapes undone (parse_sd)."""
    return parse_sd(text)[0]


def parse_sd(text: str) -> tuple[dict[str, dict[str, str]], int]:
    """RFC 5424 STRUCTURED-DATA as `{sd-id: {param: value}}`, and how much was left out.

    `\\"`, `\\\\` and `\\]` in a value are undone; any other backslash stays as sent. The
    first element of an SD-ID wins: RFC 5424 forbids a repeated SD-ID, and a later one (a
    relay's, or a forgery) neither overwrites nor merges into the first, it is left out. Left
    out and counted too: elements that break the grammar (an SD-ID or PARAM-NAME over 32
    characters, spaces, `=`, `"` or `]` in a name), elements past MAX_SD_ELEMENTS, parameters
    past MAX_SD_PARAMS; values longer than MAX_SD_VALUE characters are cut (also counted).
    A PARAM-NAME repeated inside one element (the RFC allows it) keeps its first value; the
    others are counted.
    """
    elements: dict[str, dict[str, str]] = {}
    dropped = 0
    for loose in _SD_LOOSE_ELEMENT.finditer(text):
        element = _SD_ELEMENT.fullmatch(loose.group())
        sd_id = element.group(1) if element is not None else None
        if sd_id is None or sd_id in elements or len(elements) >= MAX_SD_ELEMENTS:
            dropped += 1
            continue
        params: dict[str, str] = {}
        for param in _SD_PARAM.finditer(element.group(2)) if element is not None else ():
            name = param.group(1)
            if name in params:
                dropped += 1
                continue
            if len(params) >= MAX_SD_PARAMS:
                dropped += 1
                continue
            value = param.group(2)
            if "\\" in value:
                value = _SD_UNESCAPE.sub(r"\1", value)
            if len(value) > MAX_SD_VALUE:
                value = value[:MAX_SD_VALUE]
                dropped += 1
            params[name] = value
        elements[sd_id] = params
    return elements, dropped
