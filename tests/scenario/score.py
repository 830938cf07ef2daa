"""Matching findings to a scripted day's expectations: precision, recall, and what went wrong."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from opmas.agents.offline import run_lines
from opmas.agents.pack import load_pack
from opmas.parser.engine import ParserEngine
from tests.scenario.day import Day, Expected


@dataclass(frozen=True)
class Score:
    """Findings matched to expectations on (rule_name, device_hostname, details.key)."""

    found: frozenset[Expected]
    expected: frozenset[Expected]

    @property
    def hits(self) -> frozenset[Expected]:
        return self.found & self.expected

    @property
    def misses(self) -> list[Expected]:
        return sorted(self.expected - self.found)

    @property
    def false_positives(self) -> list[Expected]:
        return sorted(self.found - self.expected)

    @property
    def precision(self) -> float:
        return len(self.hits) / len(self.found) if self.found else 1.0

    @property
    def recall(self) -> float:
        return len(self.hits) / len(self.expected) if self.expected else 1.0

    def summary(self, label: str) -> str:
        return (
            f"{label}: {len(self.found)} findings, {len(self.expected)} expected, "
            f"precision {self.precision:.3f}, recall {self.recall:.3f}"
        )

    def problems(self, findings: Iterable[Mapping[str, Any]] = ()) -> str:
        """Misses and false positives, each on a line, with the finding's description."""
        described = {as_expected(f): f.get("description", "") for f in findings}
        lines = [f"missed: {e}" for e in self.misses]
        lines += [f"false positive: {e} -- {described.get(e, '')}" for e in self.false_positives]
        return "\n".join(lines)


def as_expected(finding: Mapping[str, Any]) -> Expected:
    """The (rule_name, device_hostname, details.key) of a finding in DESIGN.md's format."""
    details = finding.get("details") or {}
    return Expected(
        str(finding.get("rule_name")),
        str(finding.get("device_hostname")),
        str(details.get("key")),
    )


def score(findings: Iterable[Mapping[str, Any]], expected: Iterable[Expected]) -> Score:
    """Precision and recall of `findings` against `expected`; a repeated finding counts once."""
    return Score(frozenset(as_expected(f) for f in findings), frozenset(expected))


PROBE = "<30>Nov 21 10:00:01 probe dnsmasq-dhcp[1]: DHCPACK(br-lan) 192.168.1.5 aa:bb:cc:00:00:01 x"


def rules_without_learning() -> list[str]:
    """MACHINE_LEARNING rules of the shipped pack that report the very first thing they see."""
    engine = ParserEngine.from_dirs([])
    return sorted(
        spec.name
        for spec in load_pack()
        if spec.type == "MACHINE_LEARNING" and run_lines([PROBE], [spec], engine=engine).findings
    )


def _program(finding: Mapping[str, Any], day: Day, at: float) -> str | None:
    """The program whose line raised the finding."""
    lines = finding.get("evidence_lines")
    if lines:
        return day.records[lines[0] - 1].tag.split("[", 1)[0]
    key = str((finding.get("details") or {}).get("key", ""))
    if finding.get("rule_name") == "new-log-template":
        return key.split("|", 1)[0]
    first_part, host = key.split("|", 1)[0], finding.get("device_hostname")
    second = at - day.epoch(0)
    for record in day.records:
        if record.host == host and abs(record.at - second) < 1 and first_part in record.message:
            return record.tag.split("[", 1)[0]
    return None


def in_learning_hour(finding: Mapping[str, Any], day: Day) -> bool:
    """The finding was raised while its program was in its first hour of the day."""
    stamp = str(finding["finding_ts_utc"]).replace("Z", "+00:00")
    at = datetime.fromisoformat(stamp).timestamp()
    program = _program(finding, day, at)
    return program is not None and at < day.learning_ends.get(program, 0.0)


def set_aside(
    findings: Iterable[Mapping[str, Any]], day: Day, rules: Iterable[str]
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """(kept, set aside): findings of `rules` raised in their program's learning hour go aside.

    For MACHINE_LEARNING rules without a learning hour (see rules_without_learning): on a
    fresh install they report every routine thing once, which the scenario does not count.
    """
    names = set(rules)
    kept: list[Mapping[str, Any]] = []
    aside: list[Mapping[str, Any]] = []
    for finding in findings:
        quiet = finding.get("rule_name") in names and in_learning_hour(finding, day)
        (aside if quiet else kept).append(finding)
    return kept, aside
