"""Run rules over a log file offline, like `fail2ban-regex`: event time comes from the lines.

Each line is parsed, each event goes in order to every rule reading its domain; a NEW hit
opens a finding and the UPDATE hits of the same burst fold into it (count and evidence).
"""

from __future__ import annotations

import string
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opmas.agents.pack import RuleSpec, build_rule
from opmas.agents.rules import RuleHit
from opmas.errors import ConfigError
from opmas.messages import ParsedEvent, RawLog, iso_utc
from opmas.parser.engine import ParserEngine

_LINE_NAMESPACE = uuid.UUID("0b6c4f0e-2d8a-5c3b-9e1f-7a6d5c4b3a29")
EVIDENCE_LIMIT = 20  # event ids kept per finding, the first ones of the burst
DEFAULT_HOSTNAME = "local"  # logread lines carry no hostname; device-keyed rules need one


@dataclass
class RunReport:
    """What a run saw: findings in order, plus counts for the summary."""

    findings: list[dict[str, Any]] = field(default_factory=list)
    lines: int = 0
    events: int = 0
    matches: Counter[str] = field(default_factory=Counter)  # hits per rule
    skipped: dict[str, str] = field(default_factory=dict)  # rule -> why it did not run


class _SafeFields(dict[str, object]):
    def __missing__(self, key: str) -> str:
        return "?"


def render(template: str, values: dict[str, object]) -> str:
    """`template` with {placeholders} from `values`; unknown ones become `?`."""
    try:
        return string.Formatter().vformat(template, (), _SafeFields(values))
    except (ValueError, IndexError, AttributeError):
        return template


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
    compiled: list[tuple[RuleSpec, Any]] = []
    for spec in selected:
        try:
            compiled.append((spec, build_rule(spec)))
        except ConfigError as exc:
            report.skipped[spec.name] = str(exc)
    events = parse_lines(lines, engine)
    report.events = sum(1 for e in events if e.parser_name != "unparsed")
    line_of = {event.event_id: n for n, event in enumerate(events, 1)}
    open_findings: dict[tuple[str, str], tuple[dict[str, Any], dict[str, object]]] = {}
    for event in events:
        if event.hostname is None:
            event.hostname = default_hostname
        for spec, rule in compiled:
            if event.log_source_type not in spec.reads:
                continue
            for hit in rule.evaluate(event):
                report.matches[spec.name] += 1
                _fold(spec, hit, event, open_findings, report, line_of)
    return report


def _fold(
    spec: RuleSpec,
    hit: RuleHit,
    event: ParsedEvent,
    open_findings: dict[tuple[str, str], tuple[dict[str, Any], dict[str, object]]],
    report: RunReport,
    line_of: dict[str, int],
) -> None:
    slot = (spec.name, hit.finding_id)
    if slot not in open_findings:
        open_findings[slot] = _finding(spec, hit, event)
        report.findings.append(open_findings[slot][0])
    finding, values = open_findings[slot]
    details = finding["details"]
    details["count"] = max(details["count"], hit.total)
    values["count"] = details["count"]
    finding["description"] = render(spec.description, values)
    details["window_count"] = max(details.get("window_count", 0), hit.count)
    evidence = finding["evidence_event_ids"]
    for event_id in hit.evidence:
        if len(evidence) >= EVIDENCE_LIMIT:
            break
        if event_id not in evidence:
            evidence.append(event_id)
    finding["evidence_lines"] = [line_of[i] for i in evidence if i in line_of]


def _finding(
    spec: RuleSpec, hit: RuleHit, event: ParsedEvent
) -> tuple[dict[str, Any], dict[str, object]]:
    """A new finding in DESIGN.md's format, and the values its description is rendered from."""
    values: dict[str, object] = {
        "hostname": event.hostname,
        "process_name": event.process_name,
        "message": event.message,
        **event.structured_fields,
        "key": hit.key,
        "count": hit.count,
        "threshold": spec.threshold,
        "window_s": _number(spec.window_s),
    }
    details: dict[str, Any] = {"key": hit.key, "count": hit.total}
    if spec.window_s is not None:
        details["window_s"] = _number(spec.window_s)
    for name in spec.group_by or ():
        details[name] = values.get(name.removeprefix("structured_fields."))
    finding: dict[str, Any] = {
        "finding_id": hit.finding_id,
        "agent_name": spec.agent,
        "finding_ts_utc": iso_utc(hit.event_ts),
        "device_hostname": event.hostname,
        "device_ip": event.source_ip,
        "severity": spec.severity,
        "finding_type": spec.finding_type,
        "rule_name": spec.name,
        "description": render(spec.description, values),
        "details": details,
        "evidence_event_ids": [],
    }
    return finding, values


def _number(value: float | None) -> float | int | None:
    if value is None:
        return None
    return int(value) if float(value).is_integer() else value
