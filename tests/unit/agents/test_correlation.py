"""CORRELATION rules: ordered steps joined on a key within a window, one NEW hit per burst."""

from __future__ import annotations

import msgspec
import pytest

from opmas.agents.rules import HitKind, RuleHit, finding_id
from opmas.agents.rules.correlation import CorrelationRule
from opmas.errors import ConfigError
from opmas.messages import ParsedEvent

from .factory import T0, make_event

BAD_PASSWORD = [{"field": "event_name", "operator": "==", "value": "ssh_bad_password"}]
SUCCEEDED = [{"field": "event_name", "operator": "==", "value": "ssh_password_auth_succeeded"}]
IP = "203.0.113.9"


def ssh_rule(**overrides: object) -> CorrelationRule:
    options: dict[str, object] = {"join_on": "structured_fields.src_ip", "window_s": 300}
    options.update(overrides)
    return CorrelationRule(
        "ssh_success_after_failures",
        [{"conditions": BAD_PASSWORD, "min_count": 5}, SUCCEEDED],
        **options,  # type: ignore[arg-type]
    )


def ssh(name: str, ts: float, ip: str = IP, event_id: str | None = None) -> ParsedEvent:
    return make_event(
        ts=ts,
        event_id=event_id or f"{name}-{ip}-{ts}",
        process_name="dropbear",
        message=name,
        event_name=name,
        src_ip=ip,
    )


def bad(start: float, n: int, step: float = 10.0, ip: str = IP) -> list[ParsedEvent]:
    return [ssh("ssh_bad_password", start + i * step, ip) for i in range(n)]


def ok(ts: float, ip: str = IP) -> ParsedEvent:
    return ssh("ssh_password_auth_succeeded", ts, ip)


def run(rule: CorrelationRule, events: list[ParsedEvent]) -> list[RuleHit]:
    return [hit for event in events for hit in rule.evaluate(event)]


def test_success_after_five_failures_from_the_same_ip_gives_one_new_hit() -> None:
    events = [*bad(T0, 5), ok(T0 + 60)]
    hits = run(ssh_rule(), events)
    assert [(h.kind, h.key, h.count, h.total) for h in hits] == [(HitKind.NEW, IP, 6, 6)]
    hit = hits[0]
    assert hit.burst_start == T0
    assert hit.event_ts == T0 + 60
    assert hit.evidence == tuple(e.event_id for e in events)
    assert hit.finding_id == finding_id("ssh_success_after_failures", IP, T0)


def test_success_without_prior_failures_gives_nothing() -> None:
    assert run(ssh_rule(), [ok(T0), ok(T0 + 10)]) == []


def test_four_failures_then_success_gives_nothing() -> None:
    assert run(ssh_rule(), [*bad(T0, 4), ok(T0 + 60)]) == []


def test_success_before_the_failures_gives_nothing() -> None:
    assert run(ssh_rule(), [ok(T0), *bad(T0 + 10, 5)]) == []


def test_success_after_the_window_gives_nothing() -> None:
    assert run(ssh_rule(), [*bad(T0, 5), ok(T0 + 301)]) == []


def test_success_just_inside_the_window_hits() -> None:
    hits = run(ssh_rule(), [*bad(T0, 5), ok(T0 + 300)])
    assert [h.kind for h in hits] == [HitKind.NEW]


def test_the_latest_failures_count_when_older_ones_fell_out_of_the_window() -> None:
    events = [*bad(T0, 1), *bad(T0 + 250, 5), ok(T0 + 320)]
    hits = run(ssh_rule(), events)
    assert [(h.kind, h.burst_start) for h in hits] == [(HitKind.NEW, T0 + 250)]


def test_success_from_another_ip_gives_nothing() -> None:
    assert run(ssh_rule(), [*bad(T0, 5), ok(T0 + 60, ip="198.51.100.1")]) == []


def test_more_activity_in_the_open_burst_updates_the_same_finding() -> None:
    rule = ssh_rule()
    first = run(rule, [*bad(T0, 5), ok(T0 + 60)])
    more = run(rule, [*bad(T0 + 70, 1), ok(T0 + 80)])
    assert [h.kind for h in more] == [HitKind.UPDATE, HitKind.UPDATE]
    assert {h.finding_id for h in more} == {first[0].finding_id}
    assert more[-1].total == 8
    assert more[-1].evidence[-1] == f"ssh_password_auth_succeeded-{IP}-{T0 + 80}"


def test_a_new_sequence_after_the_cooldown_gives_a_new_finding() -> None:
    rule = ssh_rule()
    first = run(rule, [*bad(T0, 5), ok(T0 + 60)])
    second = run(rule, [*bad(T0 + 1000, 5), ok(T0 + 1060)])
    assert [h.kind for h in second] == [HitKind.NEW]
    assert second[0].finding_id != first[0].finding_id


def test_out_of_order_delivery_inside_the_window_correlates_in_event_order() -> None:
    failures_late = [*bad(T0, 3), ok(T0 + 60), *bad(T0 + 30, 2)]
    hits = run(ssh_rule(), failures_late)
    assert [(h.kind, h.burst_start, h.event_ts) for h in hits] == [(HitKind.NEW, T0, T0 + 40)]
    success_early = [*bad(T0, 5), ok(T0 + 60)]
    success_early.insert(2, success_early.pop())
    assert [h.kind for h in run(ssh_rule(), success_early)] == [HitKind.NEW]
    success_first = [ok(T0 + 5), *bad(T0 + 10, 5)]  # in event time the success came first
    assert run(ssh_rule(), success_first) == []


def test_redelivered_events_give_nothing_and_replay_gives_the_same_id() -> None:
    events = [*bad(T0, 5), ok(T0 + 60)]
    rule = ssh_rule()
    ids = [h.finding_id for h in run(rule, events)]
    assert run(rule, events) == []
    assert rule.duplicates == len(events)
    assert ids == [h.finding_id for h in run(ssh_rule(), events)]


def test_events_without_the_join_field_are_skipped() -> None:
    rule = ssh_rule()
    event = make_event(ts=T0, event_name="ssh_bad_password")
    assert rule.evaluate(event) == []
    assert rule.skipped_no_key == 1


def test_wan_down_then_many_wifi_disconnects_on_the_same_router() -> None:
    rule = CorrelationRule(
        "wan_down_clients_drop",
        [
            [
                {"field": "log_source_type", "operator": "==", "value": "wan"},
                {"field": "event_name", "operator": "==", "value": "interface_down"},
            ],
            {
                "conditions": [
                    {"field": "event_name", "operator": "==", "value": "ap_sta_disconnected"}
                ],
                "min_count": 5,
            },
        ],
        join_on="hostname",
        window_s=120,
    )

    def wan_down(ts: float, host: str) -> ParsedEvent:
        event = make_event(ts=ts, hostname=host, process_name="netifd", event_name="interface_down")
        return msgspec.structs.replace(event, log_source_type="wan")

    def drops(start: float, host: str, n: int) -> list[ParsedEvent]:
        return [
            make_event(
                ts=start + i, hostname=host, event_name="ap_sta_disconnected", mac=f"aa:{i:02x}"
            )
            for i in range(n)
        ]

    other = run(rule, [wan_down(T0, "r2"), *drops(T0 + 5, "r1", 8)])
    assert other == []  # the WAN went down on another router
    hits = run(rule, [wan_down(T0 + 200, "r1"), *drops(T0 + 205, "r1", 7)])
    assert [(h.kind, h.key, h.count) for h in hits] == [
        (HitKind.NEW, "r1", 6),
        (HitKind.UPDATE, "r1", 6),
        (HitKind.UPDATE, "r1", 6),
    ]
    assert hits[0].burst_start == T0 + 200


def test_per_step_join_fields_join_different_field_names() -> None:
    rule = CorrelationRule(
        "dhcp_then_login",
        [
            [{"field": "event_name", "operator": "==", "value": "dhcp_ack"}],
            [{"field": "event_name", "operator": "==", "value": "login"}],
        ],
        join_on=[["client_ip"], ["src_ip"]],
        window_s=60,
    )
    events = [
        make_event(ts=T0, event_name="dhcp_ack", client_ip="192.168.1.50"),
        make_event(ts=T0 + 5, event_name="login", src_ip="192.168.1.50"),
    ]
    assert [(h.kind, h.key) for h in run(rule, events)] == [(HitKind.NEW, "192.168.1.50")]


def test_a_step_can_name_its_own_join_field() -> None:
    rule = CorrelationRule(
        "dhcp_then_login",
        [
            {"conditions": [{"field": "event_name", "operator": "==", "value": "dhcp_ack"}]},
            {
                "conditions": [{"field": "event_name", "operator": "==", "value": "login"}],
                "join_on": "src_ip",
            },
        ],
        join_on="client_ip",
        window_s=60,
    )
    events = [
        make_event(ts=T0, event_name="dhcp_ack", client_ip="10.0.0.2"),
        make_event(ts=T0 + 5, event_name="login", src_ip="10.0.0.2"),
    ]
    assert [h.key for h in run(rule, events)] == ["10.0.0.2"]


def test_a_composite_join_key_needs_every_part_equal() -> None:
    rule = ssh_rule(join_on=["hostname", "src_ip"])
    mixed = [*bad(T0, 5), ok(T0 + 60)]
    assert [h.key for h in run(rule, mixed)] == [f"ap1|{IP}"]


def test_correlation_keys_are_bounded_with_evictions_counted() -> None:
    rule = ssh_rule(max_keys=10)
    for i in range(50):
        run(rule, bad(T0 + i, 1, ip=f"198.51.100.{i}"))
    assert len(rule) == 10
    assert rule.evicted == 40


def test_expire_drops_idle_keys() -> None:
    rule = ssh_rule()
    run(rule, bad(T0, 2))
    assert rule.expire(T0 + 100) == 0
    assert rule.expire(T0 + 1000) == 1
    assert len(rule) == 0


@pytest.mark.parametrize(
    ("steps", "options", "message"),
    [
        ([], {}, "steps must be a non-empty list"),
        ([{"conditions": BAD_PASSWORD, "min_count": 0}], {}, "min_count must be a positive"),
        ([{"conditions": BAD_PASSWORD, "count": 2}], {}, "unknown key"),
        ([{"min_count": 2}], {}, "missing 'conditions'"),
        ([[{"field": "x", "operator": "~", "value": 1}]], {}, "unknown operator"),
        ([BAD_PASSWORD], {"window_s": 0}, "window_s must be positive"),
        ([BAD_PASSWORD], {"join_on": "a..b"}, "invalid field path"),
        ([BAD_PASSWORD, SUCCEEDED], {"join_on": [["a"]]}, "join_on per step needs 2"),
        ([BAD_PASSWORD], {"cooldown_s": -1}, "cooldown_s must not be negative"),
    ],
)
def test_invalid_correlation_rules_are_rejected(
    steps: list[object], options: dict[str, object], message: str
) -> None:
    settings: dict[str, object] = {"join_on": "src_ip", "window_s": 60, **options}
    with pytest.raises(ConfigError, match=message):
        CorrelationRule("bad", steps, **settings)  # type: ignore[arg-type]
