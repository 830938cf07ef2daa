"""The scripted day of 10 routers through the offline engine: every incident, no other finding."""

from __future__ import annotations

import pytest

from opmas.agents.offline import run_lines
from opmas.agents.pack import load_pack
from opmas.parser.engine import ParserEngine
from tests.scenario.day import Day, build_day
from tests.scenario.score import rules_without_learning, score, set_aside


@pytest.fixture(scope="module")
def day() -> Day:
    return build_day()


def test_scripted_day_gives_every_incident_and_nothing_else(day: Day) -> None:
    report = run_lines(
        day.lines, load_pack(), engine=ParserEngine.from_dirs([]), default_hostname="unknown"
    )
    unlearned = rules_without_learning()
    findings, aside = set_aside(report.findings, day, unlearned)
    result = score(findings, day.expected)

    notes = [
        f"scenario day {day.base_date}: {len(day.lines)} lines from {len(day.routers)} routers",
        f"{len(day.injections)} injections, {len(day.expected)} expected findings",
    ]
    if unlearned:
        notes.append(
            f"no learning hour in {unlearned}: {len(aside)} findings raised in the first hour "
            "of their program set aside (a fresh install reports every known device once)"
        )
    notes.append(result.summary("offline engine"))
    print("\n" + "\n".join(notes))  # noqa: T201  # precision and recall, shown with pytest -s
    assert report.skipped == {}, report.skipped
    assert result.recall == 1.0, result.problems(findings)
    assert result.precision == 1.0, result.problems(findings)


def test_the_day_is_the_same_every_time(day: Day) -> None:
    again = build_day(day.base_date)
    assert again.lines == day.lines
    assert again.expected == day.expected


def test_the_day_has_incidents_of_every_domain_at_known_times(day: Day) -> None:
    assert {i.domain for i in day.injections} >= {"wifi", "security", "health", "wan"}
    assert len({r.hostname for r in day.routers}) == 10
    assert all(0 < i.at < 86_400 for i in day.injections)
    assert len(day.lines) >= 10 * 1000
    assert not any(e.rule_name == "unexpected-reboot" for e in day.expected)
