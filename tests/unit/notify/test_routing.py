"""Rule matching: severity range, domains, categories, and the channel interval."""

from __future__ import annotations

import pytest

from opmas.messages import Finding
from opmas.notify.routing import Route, channel_interval, channels_for, matches, per_channel


def _finding(severity: str = "error", domain: str = "security") -> Finding:
    return Finding(
        finding_id="00000000-0000-7000-8000-000000000001",
        agent_name="SecurityAgent",
        finding_ts_utc="2026-11-22T10:00:00.000Z",
        device_hostname="router-1",
        device_ip=None,
        severity=severity,
        finding_type="SshBruteForce",
        rule_name="ssh-brute-force-fast",
        description="d",
        details={},
        evidence_event_ids=[],
        domain=domain,
    )


def _route(rule_id: int = 1, channels: tuple[int, ...] = (1,), **kw: object) -> Route:
    fields: dict[str, object] = {
        "min_severity": "warning",
        "max_severity": "critical",
        "domains": (),
        "categories": (),
    }
    fields.update(kw)
    return Route(rule_id=rule_id, channel_ids=channels, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("severity", "expected"),
    [("info", False), ("warning", True), ("error", True), ("critical", False), ("bogus", False)],
)
def test_severity_must_lie_within_the_rule_range(severity: str, expected: bool) -> None:
    route = _route(min_severity="warning", max_severity="error")
    assert matches(route, _finding(severity)) is expected


def test_domains_when_set_must_contain_the_findings_domain() -> None:
    route = _route(domains=("wifi", "wan"))
    assert not matches(route, _finding(domain="security"))
    assert matches(route, _finding(domain="wan"))


@pytest.mark.parametrize(
    ("categories", "expected"),
    [((), True), (("SshBruteForce",), True), (("ssh-brute-force-fast",), True), (("X",), False)],
)
def test_categories_match_the_finding_type_or_the_rule_name(
    categories: tuple[str, ...], expected: bool
) -> None:
    assert matches(_route(categories=categories), _finding()) is expected


def test_each_channel_is_chosen_once_by_the_first_matching_rule() -> None:
    routes = [
        _route(1, (1, 2), min_severity="critical"),
        _route(2, (2, 3)),
        _route(3, (4,)),
    ]
    assert channels_for(routes, _finding("error")) == {2: 2, 3: 2, 4: 3}


def test_channel_interval_is_the_smallest_positive_rule_interval_else_the_default() -> None:
    routes = [
        _route(1, (1,), digest_interval_s=300.0),
        _route(2, (1, 2), digest_interval_s=120.0),
        _route(3, (2, 3), digest_interval_s=0.0),
    ]
    assert channel_interval(routes, 1, 60.0) == 120.0
    assert channel_interval(routes, 2, 60.0) == 120.0
    assert channel_interval(routes, 3, 60.0) == 60.0
    assert channel_interval(routes, 9, 60.0) == 60.0


def test_per_channel_splits_rules_into_one_route_per_channel_so_a_new_pair_stands_out() -> None:
    before = per_channel([_route(1, (1,)), _route(2, (1, 2))])
    after = per_channel([_route(1, (1, 3)), _route(2, (1, 2), min_severity="error")])

    assert before == {_route(1, (1,)), _route(2, (1,)), _route(2, (2,))}
    assert after - before == {
        _route(1, (3,)),
        _route(2, (1,), min_severity="error"),
        _route(2, (2,), min_severity="error"),
    }
