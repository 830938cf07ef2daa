"""Run rules over a log file offline, like `fail2ban-regex`: event time comes from the lines.

Each line is parsed, each event goes in order to every rule reading its domain; a NEW hit
opens a finding and the UPDATE hits of the same burst fold into it (count and evidence), as
in a running agent (same RuleSet and FindingBook).
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from opmas.agents.engine import FindingBook, RuleSet
from opmas.agents.pack import RuleSpec
from opmas.errors import ConfigError
from opmas.messages import Finding, ParsedEvent, RawLog
from opmas.parser.engine import ParserEngine

_LINE_NAMESPACE = uuid.UUID("0b6c4f0e-2d8a-5c3b-9e1f-7a6d5c4b3a29")
LIVE_ONLY = ("domain", "count", "last_seen_utc", "v")  # Finding fields a report leaves out
DEFAULT_HOSTNAME = "local"  # logread lines carry no hostname; device-keyed rules need one


@dataclass
class RunReport:
    """What a run saw: findings in order, plus counts for the summary."""

    findings: list[dict[str, Any]] = field(default_factory=list)
    lines: int = 0
    events: int = 0
    matches: Counter[str] = field(default_factory=Counter)  # hits per rule
    skipped: dict[str, str] = field(default_factory=dict)  # rule -> why it did not run


def read_lines(path: Path) -> list[str]:
    """The non-empty lines of a file that are not `#` comments."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def parse_lines(
    lines: Sequence[str], engine: ParserEngine | None = None, *, arrival_ts: float | None = None
) -> list[ParsedEvent]:
    """Parsed events of `lines`, with ids derived from line number and text (repeatable)."""
    engine = engine or ParserEngine.from_dirs([])
    arrival = time.time() if arrival_ts is None else arrival_ts
    raws = [
        RawLog(str(uuid.uuid5(_LINE_NAMESPACE, f"{n}\x1f{line}")), arrival, line, "file")
        for n, line in enumerate(lines, 1)
    ]
    return engine.parse_many(raws)


def run_file(
    path: Path,
    rules: Sequence[RuleSpec],
    *,
    rule_name: str | None = None,
    engine: ParserEngine | None = None,
) -> list[dict[str, Any]]:
    """The findings the rules (or the one named) would produce over the file."""
    return run_lines(read_lines(path), rules, rule_name=rule_name, engine=engine).findings


def run_lines(
    lines: Sequence[str],
    rules: Sequence[RuleSpec],
    *,
    rule_name: str | None = None,
    engine: ParserEngine | None = None,
    default_hostname: str = DEFAULT_HOSTNAME,
) -> RunReport:
    """Parse `lines` and run the rules over them; see RunReport."""
    selected = [r for r in rules if r.enabled and (rule_name is None or r.name == rule_name)]
    if rule_name is not None and not selected:
        raise ConfigError(f"no enabled rule named {rule_name!r}")
    report = RunReport(lines=len(lines))
    ruleset = RuleSet.build(selected)
    report.skipped.update(ruleset.skipped)
    events = parse_lines(lines, engine)
    report.events = sum(1 for e in events if e.parser_name != "unparsed")
    line_of = {event.event_id: n for n, event in enumerate(events, 1)}
    book = FindingBook(max_open=len(events) + 1)
    found: dict[str, Finding] = {}
    for event in events:
        if event.hostname is None:
            event.hostname = default_hostname
        for loaded, hit in ruleset.evaluate(event):
            report.matches[loaded.spec.name] += 1
            finding, _ = book.fold(loaded.spec, hit, event, loaded.spec.domain or "other")
            found.setdefault(finding.finding_id, finding)
    for finding in found.values():
        data = msgspec.to_builtins(finding)
        for name in LIVE_ONLY:
            data.pop(name, None)
        data["evidence_lines"] = [line_of[i] for i in finding.evidence_event_ids if i in line_of]
        report.findings.append(data)
    return report
