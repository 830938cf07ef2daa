"""PATTERN and THRESHOLD rules: one NEW hit per burst, then UPDATEs, deterministic ids."""

from __future__ import annotations

import msgspec
import pytest

from opmas.agents.rules import HitKind, PatternRule, RuleHit, ThresholdRule, event_time
from opmas.errors import ConfigError
from opmas.messages import ParsedEvent

from .factory import T0, make_event

AUTH_FAILED = [{"field": "message", "operator": "contains", "value": "authentication failed"}]


def auth_rule(**overrides: object) -> ThresholdRule:
    options: dict[str, object] = {
        "threshold": 25,
        "window_s": 60,
        "group_by": ["hostname", "client_mac"],
    }
    options.update(overrides)
    return ThresholdRule("wifi_auth_failures", AUTH_FAILED, **options)  # type: ignore[arg-type]


def failures(mac: str, start: float, n: int, step: float = 2.0) -> list[ParsedEvent]:
    return [
        make_event(ts=start + i * step, event_id=f"{mac}-{start + i * step}", client_mac=mac)
        for i in range(n)
    ]


def run(rule: ThresholdRule | PatternRule, events: list[ParsedEvent]) -> list[RuleHit]:
    return [hit for event in events for hit in rule.evaluate(event)]


def test_event_time_prefers_the_line_time_and_falls_back_to_arrival() -> None:
    assert event_time(make_event(ts=T0)) == T0
    assert event_time(make_event(ts=T0, event_ts=False)) == T0
    naive = msgspec.structs.replace(make_event(ts=T0), event_ts="2026-09-21T14:13:20")
    assert event_time(naive) == 1_790_000_000.0
    broken = msgspec.structs.replace(make_event(ts=T0), event_ts="yesterday")
    assert event_time(broken) == T0 + 5


def test_25_failures_in_60_s_give_one_new_hit_then_updates_with_growing_counts() -> None:
    rule = auth_rule()
    hits = run(rule, failures("aa:01", T0, 30))
    assert [h.kind for h in hits] == [HitKind.NEW] + [HitKind.UPDATE] * 5
    # a plain count keeps at most max(threshold, evidence) items per key: the window count
    # stops at 25, the burst's total (the finding's count) keeps growing
    assert [h.count for h in hits] == [25] * 6
    assert [h.total for h in hits] == [25, 26, 27, 28, 29, 30]
    assert len({h.finding_id for h in hits}) == 1
    first = hits[0]
    assert (first.rule, first.key, first.burst_start) == ("wifi_auth_failures", "ap1|aa:01", T0)
    assert len(first.evidence) == 20
    assert first.evidence[-1] == f"aa:01-{T0 + 48}"


def test_24_failures_in_60_s_give_no_hit() -> None:
    assert run(auth_rule(), failures("aa:01", T0, 24)) == []


def test_25_failures_spread_over_more_than_the_window_give_no_hit() -> None:
    assert run(auth_rule(), failures("aa:01", T0, 25, step=2.6)) == []


def test_a_second_client_is_counted_separately() -> None:
    rule = auth_rule()
    mixed = [
        e
        for pair in zip(failures("aa:01", T0, 25), failures("aa:02", T0, 24), strict=False)
        for e in pair
    ] + failures("aa:01", T0, 25)[24:]
    hits = run(rule, mixed)
    assert {h.key for h in hits} == {"ap1|aa:01"}
    more = run(rule, failures("aa:02", T0 + 60, 1))
    assert [(h.key, h.kind, h.count) for h in more] == [("ap1|aa:02", HitKind.NEW, 25)]
    assert more[0].finding_id != hits[0].finding_id


def test_a_later_burst_after_the_cooldown_gives_a_new_hit_with_another_id() -> None:
    rule = auth_rule()
    first = run(rule, failures("aa:01", T0, 25))
    second = run(rule, failures("aa:01", T0 + 1000, 25))
    assert [h.kind for h in first] == [HitKind.NEW]
    assert [h.kind for h in second] == [HitKind.NEW]
    assert second[0].burst_start == T0 + 1000
    assert first[0].finding_id != second[0].finding_id


def test_replaying_the_same_input_gives_the_same_ids() -> None:
    events = failures("aa:01", T0, 30) + failures("aa:01", T0 + 1000, 26)
    ids = [h.finding_id for h in run(auth_rule(), events)]
    assert ids == [h.finding_id for h in run(auth_rule(), events)]
    assert len(set(ids)) == 2


def test_redelivered_events_give_no_hit_and_do_not_inflate_the_count() -> None:
    rule = auth_rule()
    events = failures("aa:01", T0, 25)
    assert len(run(rule, events)) == 1
    assert run(rule, events[-3:]) == []
    assert rule.window.count("ap1|aa:01") == 25


def test_matching_events_below_threshold_in_an_open_burst_update_it() -> None:
    rule = auth_rule(cooldown_s=300)
    run(rule, failures("aa:01", T0, 25))
    hits = run(rule, failures("aa:01", T0 + 200, 1))  # window holds 1, burst still open
    assert [(h.kind, h.count, h.total) for h in hits] == [(HitKind.UPDATE, 1, 26)]


def test_events_without_the_group_key_are_skipped() -> None:
    rule = auth_rule(threshold=1)
    assert rule.evaluate(make_event()) == []
    assert rule.skipped_no_key == 1


def test_distinct_threshold_counts_distinct_values() -> None:
    rule = ThresholdRule(
        "ssh_user_enum",
        [{"field": "process_name", "operator": "==", "value": "dropbear"}],
        threshold=3,
        window_s=60,
        group_by=["src_ip"],
        distinct="username",
    )
    names = ["root", "root", "admin", "root", "guest"]
    events = [
        make_event(ts=T0 + i, process_name="dropbear", src_ip="198.51.100.7", username=name)
        for i, name in enumerate(names)
    ]
    hits = run(rule, events)
    assert [(h.kind, h.count, h.key) for h in hits] == [(HitKind.NEW, 3, "198.51.100.7")]


def test_threshold_keys_are_bounded() -> None:
    rule = auth_rule(threshold=2, max_keys=10)
    for i in range(50):
        run(rule, failures(f"mac{i}", T0 + i, 1))
    assert len(rule.window) == 10
    assert rule.window.evicted == 40


def test_pattern_rule_hits_once_per_event_and_groups_by_hostname() -> None:
    rule = PatternRule(
        "oom", [{"field": "message", "operator": "contains", "value": "Out of memory"}]
    )
    oom = [make_event(ts=T0 + i, message="Out of memory: Killed process 1") for i in range(2)]
    hits = run(rule, [*oom, make_event(ts=T0 + 3)])
    assert [(h.kind, h.key, h.count) for h in hits] == [(HitKind.NEW, "ap1", 1)] * 2
    assert hits[0].finding_id != hits[1].finding_id


def test_pattern_rule_with_cooldown_updates_one_finding() -> None:
    rule = PatternRule(
        "oom",
        [{"field": "message", "operator": "contains", "value": "Out of memory"}],
        group_by=["hostname", "process_name"],
        cooldown_s=300,
    )
    events = [make_event(ts=T0 + i * 10, message="Out of memory", hostname=None) for i in range(3)]
    hits = run(rule, events)
    assert [h.kind for h in hits] == [HitKind.NEW, HitKind.UPDATE, HitKind.UPDATE]
    assert hits[-1].total == 3
    assert hits[-1].key == "-|hostapd"
    assert hits[-1].evidence == tuple(e.event_id for e in events)
    assert run(rule, events[-1:]) == []  # redelivered


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"threshold": 0}, "threshold must be a positive integer"),
        ({"window_s": 0}, "window_s must be positive"),
        ({"group_by": ["a..b"]}, "group_by: invalid field path"),
        ({"distinct": ".x"}, "distinct: invalid field path"),
        ({"cooldown_s": -1}, "cooldown_s must not be negative"),
    ],
)
def test_invalid_threshold_rules_are_rejected(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        auth_rule(**options)
