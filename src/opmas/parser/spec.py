"""The schema of a program parser file (programs/*.yaml), checked by the loader.

A parser file names the programs it applies to, its default domain and event type, and an
ordered list of patterns; the first pattern whose regex matches the message wins. Named
groups become `structured_fields` (groups whose name starts with `_` are internal).
"""

from __future__ import annotations

from typing import Literal

import msgspec

Domain = Literal["wifi", "security", "health", "wan", "other"]
EventType = Literal["LOG", "NETWORK", "AUTH", "FILE", "PROCESS", "REGISTRY", "CUSTOM"]
Severity = Literal["EMERG", "ALERT", "CRIT", "ERR", "WARNING", "NOTICE", "INFO", "DEBUG"]
DOMAINS: tuple[str, ...] = ("wifi", "security", "health", "wan", "other")
UNPARSED = "unparsed"


class DomainRule(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Route the event to `domain` when field `field` matches regex `match`."""

    field: str
    match: str
    domain: Domain


class Delegate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Parse the text captured by `group` with parser `parser`'s patterns."""

    parser: str
    group: str


class Join(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Fields remembered per (hostname, program, pid) and filled into lines that lack them."""

    fields: list[str]


class PatternSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One event a program logs: a regex matched from the start of the message."""

    event: str  # may use {group} or {program}; the result is lower-cased, non-words -> _
    regex: str
    example: str | list[str] | None = None  # full log line(s); docs and tests use them
    description: str | None = None
    domain: Domain | None = None
    event_type: EventType | None = None
    severity: Severity | None = None  # log level for lines whose header carries none
    fields: dict[str, str] = {}  # static fields added to every match
    kv: str | None = None  # group whose `key=value` pairs become fields (keys lower-cased)
    kv_aliases: dict[str, str] = {}  # extra names for kv keys, e.g. src -> src_ip
    kv_bare: str | None = None  # field collecting the kv group's tokens without `=`
    lowercase: list[str] = []  # fields whose value is lower-cased
    domain_rules: list[DomainRule] = []  # first rule whose field matches decides the domain
    delegate: Delegate | None = None
    join: Literal["remember", "forget"] | None = None


class ParserSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One parser file; its parser_name is `<name>_parser_v<version>`."""

    name: str
    version: int
    programs: list[str]
    domain: Domain
    event_type: EventType
    description: str = ""
    prefix: str | None = None  # regex stripped before the patterns; its groups are fields
    fallback_event: str = "{program}_message"
    patterns: list[PatternSpec] = []
    join: Join | None = None

    @property
    def parser_name(self) -> str:
        """The versioned name stored in ParsedEvent.parser_name."""
        return f"{self.name}_parser_v{self.version}"
