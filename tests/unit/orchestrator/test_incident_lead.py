"""Which finding names an incident: the most severe that is not a novelty finding."""

from __future__ import annotations

from typing import Any

from opmas.messages import Finding
from opmas.orchestrator.correlate import (
    Group,
    is_novelty,
    is_replay,
    lent_severity,
    merge_details,
    takes_lead,
    title_of,
)

GROUP = Group("device:r1", 1800.0)


def finding(severity: str = "error", novelty: str | None = None, **details: Any) -> Finding:
    if novelty is not None:
        details["novelty"] = novelty
    return Finding(
        finding_id="00000000-0000-7000-8000-000000000001",
        agent_name="HealthAgent",
        finding_ts_utc="2026-11-22T10:00:00.000Z",
        device_hostname="r1",
        device_ip=None,
        severity=severity,
        finding_type="NeverSeenLogTemplate" if novelty else "OutOfMemory",
        rule_name="new-log-template" if novelty else "oom-killer",
        description="novel" if novelty else f"an {severity} finding",
        details=details,
        evidence_event_ids=[],
        domain="health",
    )


def test_a_novelty_finding_lends_at_most_info() -> None:
    assert lent_severity(finding("warning", novelty="template")) == "info"
    assert lent_severity(finding("error")) == "error"
    assert is_novelty(finding("info", novelty="key"))
    assert not is_novelty(finding("info"))


def test_an_incident_of_novelty_findings_alone_says_so_in_its_title() -> None:
    novel = finding("info", novelty="template")
    assert takes_lead({}, "info", novel)
    details = merge_details({}, novel, GROUP)
    assert details["novelty_only"] is True
    assert title_of("device_problem", details, novel.description) == "Novelty only on r1: novel"


def test_the_first_other_finding_takes_the_lead_from_novelty_findings() -> None:
    details = merge_details({}, finding("info", novelty="template"), GROUP)
    error = finding("error")
    assert takes_lead(details, "info", error)
    details = merge_details(details, error, GROUP)
    assert details["novelty_only"] is False
    assert title_of("device_problem", details, error.description) == "an error finding"


def test_a_novelty_finding_never_takes_the_lead_of_an_incident() -> None:
    details = merge_details({}, finding("warning"), GROUP)
    assert not takes_lead(details, "warning", finding("critical", novelty="template"))
    assert merge_details(details, finding("info", novelty="key"), GROUP)["novelty_only"] is False


def test_a_more_severe_finding_takes_the_lead_and_an_equal_one_does_not() -> None:
    details = merge_details({}, finding("warning"), GROUP)
    assert takes_lead(details, "warning", finding("error"))
    assert not takes_lead(details, "warning", finding("warning"))
    assert not takes_lead(details, "error", finding("warning"))


def test_an_incident_from_before_novelty_flags_is_not_novelty_only() -> None:
    old = {"devices": ["r1"], "finding_types": {"OutOfMemory": 1}}
    assert merge_details(old, finding("info", novelty="template"), GROUP)["novelty_only"] is False


def test_a_replayed_finding_is_recognised() -> None:
    assert is_replay(finding("error", replay=True))
    assert not is_replay(finding("error"))
