"""STATISTICAL rules: a key's per-bucket count against its own EWMA baseline."""

from __future__ import annotations

import pytest

from opmas.agents.rules import HitKind, RuleHit, finding_id
from opmas.agents.rules.statistical import StatisticalRule
from opmas.errors import ConfigError
from opmas.messages import ParsedEvent

from .factory import T0, make_event

DISCONNECTS = [{"field": "event_name", "operator": "==", "value": "ap_sta_disconnected"}]
START = (T0 // 60) * 60  # a bucket boundary


def churn_rule(**overrides: object) -> StatisticalRule:
    options: dict[str, object] = {"group_by": ["hostname"]}
    options.update(overrides)
    return StatisticalRule("wifi_client_churn", DISCONNECTS, **options)  # type: ignore[arg-type]


def minute(index: int, n: int, host: str = "ap1") -> list[ParsedEvent]:
    """`n` events spread over minute `index` after START."""
    begin = START + index * 60
    return [
        make_event(ts=begin + i * 60 / n, hostname=host, event_name="ap_sta_disconnected")
        for i in range(n)
    ]


def steady(minutes: int, rates: list[int], host: str = "ap1", first: int = 0) -> list[ParsedEvent]:
    return [e for m in range(minutes) for e in minute(first + m, rates[m % len(rates)], host)]


def run(rule: StatisticalRule, events: list[ParsedEvent]) -> list[RuleHit]:
    return [hit for event in events for hit in rule.evaluate(event)]


def test_a_spike_after_a_steady_rate_gives_one_new_hit_then_updates() -> None:
    rule = churn_rule()
    assert run(rule, steady(20, [5, 4, 6, 5])) == []
    hits = run(rule, minute(20, 60))
    assert hits[0].kind is HitKind.NEW
    assert {h.kind for h in hits[1:]} == {HitKind.UPDATE}
    assert len({h.finding_id for h in hits}) == 1
    first = hits[0]
    assert first.key == "ap1"
    assert first.burst_start == START + 20 * 60
    assert first.finding_id == finding_id("wifi_client_churn", "ap1", START + 20 * 60)
    assert 5 <= first.count < 20
    assert hits[-1].count == 60
    assert hits[-1].total == 60
    assert len(hits[-1].evidence) == 20


def test_no_hit_during_the_warm_up() -> None:
    rule = churn_rule(warmup_buckets=10)
    events = [*steady(5, [5]), *minute(5, 60)]
    assert run(rule, events) == []


def test_a_key_with_a_steady_high_rate_does_not_fire() -> None:
    rule = churn_rule()
    assert run(rule, steady(60, [60, 55, 65, 58, 62])) == []


def test_a_spike_below_min_count_does_not_fire() -> None:
    rule = churn_rule(min_count=10)
    events = [*steady(20, [0, 1, 0]), *minute(20, 9)]
    assert run(rule, events) == []
    assert run(rule, minute(21, 12))[0].kind is HitKind.NEW


def test_empty_buckets_count_as_zero_when_time_passes() -> None:
    rule = churn_rule(warmup_buckets=3)
    run(rule, steady(15, [20]))
    before = rule.baseline("ap1")
    assert before is not None
    assert before.mean == pytest.approx(20)
    run(rule, minute(45, 1))  # 30 silent minutes later
    after = rule.baseline("ap1")
    assert after is not None
    assert after.learned == 14 + 30
    assert after.mean < 1


def test_keys_have_their_own_baselines() -> None:
    rule = churn_rule()
    run(rule, [*steady(20, [60], host="busy"), *steady(20, [2], host="quiet")])
    assert run(rule, minute(20, 60, host="busy")) == []
    assert run(rule, minute(20, 60, host="quiet"))[0].key == "quiet"


def test_replay_gives_the_same_ids_and_redelivery_does_not_count() -> None:
    events = [*steady(20, [5]), *minute(20, 40)]
    rule = churn_rule()
    ids = {h.finding_id for h in run(rule, events)}
    assert ids == {h.finding_id for h in run(churn_rule(), events)}
    assert len(ids) == 1
    assert run(rule, events[-5:]) == []
    assert rule.duplicates == 5
    baseline = rule.baseline("ap1")
    assert baseline is not None
    assert baseline.count == 40


def test_events_of_a_closed_bucket_are_late_and_ignored() -> None:
    rule = churn_rule()
    run(rule, steady(3, [5]))
    assert run(rule, minute(0, 1)) == []
    assert rule.late == 1


def test_a_later_spike_after_the_cooldown_is_a_new_finding() -> None:
    rule = churn_rule()
    run(rule, steady(20, [5]))
    first = run(rule, minute(20, 60))
    run(rule, steady(20, [5], first=21))
    second = run(rule, minute(41, 200))
    assert first[0].kind is HitKind.NEW
    assert second[0].kind is HitKind.NEW
    assert second[0].finding_id != first[0].finding_id


def test_statistical_keys_are_bounded_with_evictions_counted() -> None:
    rule = churn_rule(max_keys=10)
    for i in range(50):
        run(rule, minute(0, 1, host=f"ap{i}"))
    assert len(rule) == 10
    assert rule.evicted == 40


def test_limit_is_none_during_warm_up_and_then_mean_plus_z_std() -> None:
    rule = churn_rule(warmup_buckets=5, z_threshold=3)
    run(rule, steady(3, [9]))
    assert rule.limit("ap1") is None
    run(rule, steady(5, [9], first=3))
    assert rule.limit("ap1") == pytest.approx(9 + 3 * 3)  # the std floor is sqrt(mean)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"bucket_s": 0}, "bucket_s must be positive"),
        ({"alpha": 0}, "alpha must be in"),
        ({"alpha": 1.5}, "alpha must be in"),
        ({"z_threshold": 0}, "z_threshold must be positive"),
        ({"warmup_buckets": -1}, "warmup_buckets must be a non-negative integer"),
        ({"min_count": 2.5}, "min_count must be a non-negative integer"),
        ({"cooldown_s": -1}, "cooldown_s must not be negative"),
        ({"group_by": ["a..b"]}, "group_by: invalid field path"),
    ],
)
def test_invalid_statistical_rules_are_rejected(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        churn_rule(**options)
