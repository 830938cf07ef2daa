"""Writes docs/events.md from the shipped parser files: `python -m opmas.parser.docs`.

Every event name, its fields, domain and event type come from parsing each pattern's own
example lines with the engine, so the page shows what the parser really produces.
"""

from __future__ import annotations

import sys

from opmas.parser.compiled import CompiledParser
from opmas.parser.engine import ParserEngine

ARRIVAL = 1795300000.0  # fixed arrival time, so year resolution in examples is stable
HEADER = """# Parsed events

Generated from `src/opmas/parser/programs/*.yaml` by `python -m opmas.parser.docs`; do not
edit by hand (a test checks that this file is up to date).

Each event carries `structured_fields.event` (the name below) and the fields listed; a field
is left out when the line does not have it. `domain` is the `log_source_type` the event is
routed to (`logs.parsed.<domain>`). A line from a known program that matches none of its
patterns gets the program's catch-all event `<program>_message` (dashes become `_`) with the
parser's default domain. Lines whose program has no parser, or that have no syslog header,
are stored with parser `unparsed` and domain `other`.

Timestamps without a zone (RFC 3164, `logread`) are read as UTC; a missing year is the latest
that puts the time no more than a day after the line's arrival (as rsyslog does), so `Mar 22`
received in December is March of the same year, and `Jan  1 00:00:01` received on Dec 31 is
the next year.

## Adding a parser

Put a YAML file in a directory named by the `parser_dirs` setting; a file with the name of a
shipped one (`hostapd.yaml`) replaces it, and a new file adds programs. `opmas explain LINE`
shows what a line gives. The keys (checked on load; errors name the file and line):

```yaml
name: myapp                 # parser_name becomes myapp_parser_v<version>
version: 1
programs: [myapp]           # syslog tags it handles
domain: other               # wifi | security | health | wan | other
event_type: LOG             # LOG | NETWORK | AUTH | PROCESS | ...
prefix: '^\\[(?P<uptime>[\\d.]+)\\] '   # optional, stripped before the patterns
fallback_event: '{program}_message'          # the catch-all event (default shown)
join: {fields: [ip, port]}  # optional: fill these from an earlier line of the same PID
patterns:                   # first match wins; matched from the start of the message
  - event: myapp_started    # may use {group}: lower-cased, non-words become _
    regex: 'started, version (?P<version>\\S+)'   # named groups become fields
    example: 'Sat Nov 21 10:00:01 2026 daemon.info myapp[1]: started, version 2'
    # optional: domain, event_type, severity (used when the line has no level),
    # fields (static), kv (group of key=value pairs), kv_aliases, kv_bare, lowercase,
    # domain_rules [{field, match, domain}], delegate {parser, group}, join remember|forget
```

User patterns run on RE2 (no backtracking, so no pattern can hang the parser): lookarounds
and backreferences are refused when the file is loaded.
"""


def render(engine: ParserEngine) -> str:
    """The whole events page as Markdown."""
    parts = [HEADER]
    for parser in sorted(engine.parsers, key=lambda p: p.spec.name):
        parts.append(_section(engine, parser))
    return "\n".join(parts)


def _section(engine: ParserEngine, parser: CompiledParser) -> str:
    spec = parser.spec
    lines = [
        f"## {spec.name} (`{parser.name}`)",
        "",
        spec.description,
        "",
        f"Programs: {', '.join(f'`{p}`' for p in spec.programs)}. "
        f"Default domain `{spec.domain}`, event type `{spec.event_type}`.",
        "",
        "| event | fields | domain | event type | example |",
        "|---|---|---|---|---|",
    ]
    seen: set[tuple[str, str]] = set()
    for pattern in parser.patterns:
        examples = pattern.spec.example
        for example in [examples] if isinstance(examples, str) else examples or []:
            event = engine.explain(example, ARRIVAL).event
            name = str(event.structured_fields.get("event", ""))
            fields = ", ".join(f"`{k}`" for k in event.structured_fields if k != "event")
            if (name, fields) in seen:
                continue
            seen.add((name, fields))
            row = [f"`{name}`", fields, event.log_source_type, event.event_type, _code(example)]
            lines.append("| " + " | ".join(row) + " |")
    fallback = spec.fallback_event.replace("{program}", "<program>")
    lines.append(f"| `{fallback}` | | {spec.domain} | {spec.event_type} | (any other line) |")
    return "\n".join(lines) + "\n"


def _code(text: str) -> str:
    return "`" + text.replace("|", "\\|").replace("`", "'") + "`"


def main() -> None:
    """Print the events page."""
    sys.stdout.write(render(ParserEngine.from_dirs()))


if __name__ == "__main__":
    main()
