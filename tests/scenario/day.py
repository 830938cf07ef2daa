"""A scripted day of a 10-router OpenWRT fleet: background traffic plus incidents at known times.

`build_day()` returns RFC 3164 lines as logd's remote logging sends them (with hostname), in
time order, and the findings a correct OPMAS must produce: one `Expected` per finding, keyed
like the finding's `details.key`. Everything comes from one seeded `random.Random`.

Background traffic never triggers a rule; every background message kind of a program shows up
within the first hour of the day somewhere in the fleet, while `new-log-template` is learning.
Message kinds first seen after a program's learning hour and its first `learning_events`
messages (most incident lines, and one deliberately new message) are expected
`new-log-template` findings, one per router and program per `group_s` (keyed
`hostname|program`); `MessageKinds` works them out with the template definition of
`opmas.agents.rules.novelty` (masked tokens; same length and first token; at least half the
tokens equal).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from opmas.agents.pack import load_pack
from tests.scenario.fleet import (
    FLEET,
    Expected,
    Injection,
    Record,
    Router,
    epoch,
    syslog_line,
)
from tests.scenario.incidents import Scenario
from tests.scenario.kinds import MessageKinds

LEARNING_S = 3600.0  # new-log-template learns each program's kinds silently this long
_NOVELTY_RULE = next(rule for rule in load_pack() if rule.name == "new-log-template")
LEARNING_EVENTS = _NOVELTY_RULE.learning_events or 0  # ... and its first messages
GROUP_S = _NOVELTY_RULE.group_s or 3600.0  # one finding per router and program this long

__all__ = ["Day", "Expected", "Injection", "build_day"]


@dataclass
class Day:
    """The scripted day: lines in time order, injections, and every finding expected."""

    base_date: date
    lines: list[str]
    records: list[Record]
    injections: list[Injection]
    expected: list[Expected]
    routers: list[Router]
    learning_ends: dict[str, float] = field(default_factory=dict)  # program -> epoch seconds

    def epoch(self, at: float) -> float:
        """Epoch seconds of `at` seconds after the day's midnight (UTC)."""
        return epoch(self.base_date, at)

    @property
    def incidents(self) -> list[Expected]:
        """Alias of `expected`: every (rule_name, device_hostname, key) to be found."""
        return self.expected


def _program(tag: str) -> str:
    return tag.split("[", 1)[0]


def _novelty(base: date, records: list[Record]) -> tuple[list[Expected], dict[str, float]]:
    """New-log-template findings: kinds first seen after their program's learning hour and
    first LEARNING_EVENTS messages, one per router and program per GROUP_S.

    Raises AssertionError if a background line is such a kind (the day would be wrong).
    """
    kinds = MessageKinds()
    first: dict[str, float] = {}
    seen: dict[str, int] = {}
    groups: dict[str, float] = {}  # "host|program" -> when its open group started
    expected: list[Expected] = []
    stray: list[str] = []
    for record in records:
        program = _program(record.tag)
        first.setdefault(program, record.at)
        seen[program] = seen.get(program, 0) + 1
        template = kinds.learn(program, record.message)
        learning = record.at < first[program] + LEARNING_S or seen[program] <= LEARNING_EVENTS
        if template is None or learning:
            continue
        if record.incident is None:
            stray.append(syslog_line(base, record))
        key = f"{record.host}|{program}"
        if key not in groups or abs(record.at - groups[key]) >= GROUP_S:
            groups[key] = record.at
            expected.append(Expected("new-log-template", record.host, key))
    assert not stray, "background kinds first seen after the learning hour:\n" + "\n".join(stray)
    ends = {p: epoch(base, t + LEARNING_S) for p, t in first.items()}
    return expected, ends


def build_day(base_date: date | None = None, seed: int = 20261121) -> Day:
    """The scripted day (default: yesterday, UTC, so year-less stamps resolve to it)."""
    base = base_date or (datetime.now(UTC) - timedelta(days=1)).date()
    builder = Scenario(seed)
    builder.background()
    builder.incidents()
    records = sorted(builder.records, key=lambda rec: rec.at)
    novelty, learning_ends = _novelty(base, records)
    expected = [e for inj in builder.injections for e in inj.expected] + novelty
    return Day(
        base_date=base,
        lines=[syslog_line(base, rec) for rec in records],
        records=records,
        injections=builder.injections,
        expected=expected,
        routers=list(FLEET),
        learning_ends=learning_ends,
    )
