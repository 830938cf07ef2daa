"""FLEET rules: the per-router signal half (SignalCollector) and the fleet half (FleetRules)."""

from __future__ import annotations

import msgspec
import pytest

from opmas.agents.fleet import FleetEvaluator, FleetRules, SignalCollector
from opmas.agents.pack import RuleSpec, check_rule_data, load_pack
from opmas.agents.rules.types import parse_iso
from opmas.errors import ConfigError
from opmas.messages import (
    ParsedEvent,
    Signal,
    SignalBatch,
    encode,
    iso_utc,
    signal_batch_decoder,
)
from opmas.orchestrator.correlate import classify, group_of, merge_details
from opmas.settings import OrchestratorSettings
from tests.unit.agents.factory import T0, make_event

PACK = {rule.name: rule for rule in load_pack()}
SSH = PACK["ssh-brute-force-fleet"]
ATTACKER = "203.0.113.50"


def failure(host: str, ts: float, ip: str = ATTACKER, event_id: str | None = None) -> ParsedEvent:
    event = make_event(
        ts=ts,
        hostname=host,
        process_name="dropbear",
        message=f"Bad password attempt for 'root' from {ip}:50000",
        event="ssh_bad_password",
        ip=ip,
        user="root",
        event_id=event_id,
    )
    return msgspec.structs.replace(event, log_source_type="security", trust="address")


def distributed_attack(routers: int = 10, per_router: int = 3) -> list[ParsedEvent]:
    """`per_router` failures on each router, router after router, within 9 minutes."""
    return [
        failure(f"gw-{r:02d}", T0 + r * 54 + n * 17)
        for r in range(routers)
        for n in range(per_router)
    ]


def signals_per_router(events: list[ParsedEvent]) -> list[list[Signal]]:
    """The collector's drains when each router's events come in a batch of their own."""
    collector = SignalCollector([SSH])
    drains: list[list[Signal]] = []
    host = None
    for event in events:
        if host is not None and event.hostname != host:
            drains.append(collector.drain())
        host = event.hostname
        collector.observe(event)
    drains.append(collector.drain())
    return drains


def test_three_failures_on_each_of_ten_routers_in_nine_minutes_open_one_finding() -> None:
    rules = FleetRules([SSH])
    findings = {}
    for signals in signals_per_router(distributed_attack()):
        for finding in rules.fold(signals):
            findings[finding.finding_id] = finding
    (finding,) = findings.values()
    assert finding.rule_name == "ssh-brute-force-fleet"
    assert finding.agent_name == "SecurityAgent"
    assert finding.finding_type == "FleetSshBruteForce"
    assert finding.device_hostname is None
    assert finding.domain == "security"
    assert finding.details["ip"] == ATTACKER
    assert finding.details["devices"] == [f"gw-{r:02d}" for r in range(10)]
    assert finding.details["routers"] == 10
    assert finding.details["count"] == finding.count == 30
    assert finding.details["window_s"] == 900
    assert finding.details["trust"] == "address"
    assert len(finding.evidence_event_ids) == 20
    assert "across 10 routers" in finding.description
    assert ATTACKER in finding.description


def test_the_finding_opens_when_the_threshold_and_the_router_count_are_both_reached() -> None:
    rules = FleetRules([SSH])
    opened_at = None
    for index, signals in enumerate(signals_per_router(distributed_attack())):
        hits = rules.fold_hits(signals)
        if hits and opened_at is None:
            assert hits[0].new
            assert hits[0].finding.count == 21  # 7 routers x 3: the first total >= 20
            opened_at = index
        elif hits:
            assert not hits[0].new
    assert opened_at == 6


def test_the_same_attacker_on_one_router_only_gives_no_fleet_finding() -> None:
    events = [failure("gw-01", T0 + 10 * n) for n in range(60)]
    evaluator = FleetEvaluator([SSH])
    found = [f for event in events for f in evaluator.observe(event)] + evaluator.finish()
    assert found == []
    assert evaluator.matches["ssh-brute-force-fleet"] == 60


def test_many_attackers_on_many_routers_each_under_threshold_give_nothing() -> None:
    events = [
        failure(f"gw-{r:02d}", T0 + r, ip=f"198.51.100.{r}") for r in range(10) for _ in range(5)
    ]
    collector = SignalCollector([SSH])
    for event in events:
        collector.observe(event)
    assert FleetRules([SSH]).fold(collector.drain()) == []


def test_growth_updates_the_same_finding_with_a_larger_count() -> None:
    rules = FleetRules([SSH])
    seen: list[tuple[str, int, bool]] = []  # (finding id, count, new) as each fold returned
    for signals in signals_per_router(distributed_attack(routers=10)):
        seen.extend(
            (h.finding.finding_id, h.finding.count, h.new) for h in rules.fold_hits(signals)
        )
    ids = {finding_id for finding_id, _, _ in seen}
    assert len(ids) == 1
    assert [(count, new) for _, count, new in seen] == [
        (21, True),
        (24, False),
        (27, False),
        (30, False),
    ]
    late = [failure("gw-11", T0 + 600 + n) for n in range(2)]
    collector = SignalCollector([SSH])
    for event in late:
        collector.observe(event)
    (grown,) = rules.fold(collector.drain())
    assert grown.finding_id in ids
    assert grown.count == 32
    assert grown.details["routers"] == 11


def test_a_burst_over_then_a_new_one_gives_a_second_finding() -> None:
    rules = FleetRules([SSH])
    attack = distributed_attack()
    again = [
        msgspec.structs.replace(e, event_ts=e.event_ts and _later(e.event_ts, 3 * 3600))
        for e in attack
    ]
    ids: set[str] = set()
    for signals in signals_per_router(attack) + signals_per_router(again):
        ids.update(f.finding_id for f in rules.fold(signals))
    assert len(ids) == 2


def _later(iso: str, seconds: float) -> str:
    return iso_utc(parse_iso(iso) + seconds)


def test_signals_older_than_the_window_expire() -> None:
    rules = FleetRules([SSH])
    slow = [failure(f"gw-{r:02d}", T0 + r * 300) for r in range(10) for _ in range(3)]
    found = []
    for signals in signals_per_router(slow):
        found.extend(rules.fold(signals))
    # 3 per router every 5 minutes: a 15-minute window holds at most 4 routers, 12 failures
    assert found == []
    assert rules.state_size() == (1, 0)
    assert rules.expire(T0 + 9 * 300 + 901) == 1
    assert rules.state_size() == (0, 0)


def test_a_redelivered_signal_is_counted_once() -> None:
    rules = FleetRules([SSH])
    drains = signals_per_router(distributed_attack(routers=6))
    for signals in drains:
        assert rules.fold(signals) == []
        assert rules.fold(signals) == []  # again, as after a redelivery: 18 < 20 still
    assert (rules.late, rules.duplicates) == (0, 6)


def test_fleet_keys_are_bounded_evicting_the_least_recently_seen() -> None:
    rules = FleetRules([SSH], max_keys=100)
    collector = SignalCollector([SSH])
    for n in range(1000):
        collector.observe(failure("gw-01", T0 + n, ip=f"10.0.{n // 250}.{n % 250}"))
    rules.fold(collector.drain())
    assert rules.state_size() == (100, 900)


def test_the_collector_is_bounded_and_counts_what_it_dropped() -> None:
    collector = SignalCollector([SSH], max_aggregates=10)
    for n in range(25):
        collector.observe(failure("gw-01", T0 + n, ip=f"10.0.0.{n}"))
    collector.observe(failure("gw-01", T0 + 30, ip="10.0.0.1"))  # an aggregate it has
    assert len(collector) == 10
    assert collector.dropped == 15
    signals = collector.drain()
    assert len(signals) == 10
    assert sum(s.count for s in signals) == 11
    assert collector.dropped == 0
    assert len(collector) == 0


def test_one_signal_per_rule_key_and_router_with_times_and_a_few_evidence_ids() -> None:
    collector = SignalCollector([SSH])
    for n in range(8):
        collector.observe(failure("gw-01", T0 + n, event_id=f"a{n}"))
        collector.observe(failure("gw-02", T0 + n, event_id=f"b{n}"))
    other = make_event(ts=T0, hostname="gw-01", event="ssh_password_auth_succeeded", ip=ATTACKER)
    collector.observe(msgspec.structs.replace(other, log_source_type="security"))
    signals = sorted(collector.drain(), key=lambda s: s.hostname)
    assert [(s.hostname, s.count, s.key, s.rule, s.agent) for s in signals] == [
        ("gw-01", 8, ATTACKER, "ssh-brute-force-fleet", "SecurityAgent"),
        ("gw-02", 8, ATTACKER, "ssh-brute-force-fleet", "SecurityAgent"),
    ]
    assert signals[0].first_ts == T0
    assert signals[0].last_ts == T0 + 7
    assert signals[0].evidence == ["a0", "a1", "a2", "a3", "a4"]
    assert signals[0].trust == "address"
    assert collector.drain() == []


def test_an_aggregate_spans_at_most_a_minute_of_its_routers_time() -> None:
    collector = SignalCollector([SSH])
    for n in range(5):
        collector.observe(failure("gw-01", T0 + 40 * n))
    signals = collector.drain()
    assert [s.count for s in signals] == [2, 2, 1]
    assert all(s.last_ts - s.first_ts <= 60 for s in signals)


def test_a_signal_batch_round_trips_on_the_wire() -> None:
    collector = SignalCollector([SSH])
    for event in distributed_attack(routers=2):
        collector.observe(event)
    batch = SignalBatch("b-1", collector.drain())
    decoded = signal_batch_decoder.decode(encode(batch))
    assert decoded == batch
    assert decoded.v == 1


def test_a_fleet_rule_is_checked_like_any_other() -> None:
    data = SSH.to_dict()
    assert check_rule_data(data).type == "FLEET"
    for bad, message in (
        ({"min_routers": None}, "needs 'min_routers'"),
        ({"min_routers": 0}, "'min_routers' must be positive"),
        ({"distinct": "user"}, "'distinct' does not apply to a FLEET rule"),
    ):
        with pytest.raises(ConfigError, match=message):
            check_rule_data({**data, **bad})
    threshold = {k: v for k, v in data.items() if k != "min_routers"}
    with pytest.raises(ConfigError, match="'min_routers' does not apply"):
        check_rule_data({**threshold, "type": "THRESHOLD", "min_routers": 3})


def test_fleet_rules_keep_their_windows_when_the_rules_are_reloaded_unchanged() -> None:
    rules = FleetRules([SSH])
    drains = signals_per_router(distributed_attack())
    for signals in drains[:5]:
        rules.fold(signals)
    reloaded = FleetRules([SSH], previous=rules)
    assert reloaded.state_size() == (1, 0)
    edited = RuleSpec(**{**msgspec.structs.asdict(SSH), "threshold": 100})
    assert FleetRules([edited], previous=rules).state_size() == (0, 0)
    found = [f for signals in drains[5:] for f in reloaded.fold(signals)]
    assert found
    assert found[-1].count == 30


def test_a_fleet_finding_makes_a_fleet_attack_incident_naming_its_routers() -> None:
    rules = FleetRules([SSH])
    (finding,) = rules.fold(
        [s for signals in signals_per_router(distributed_attack()) for s in signals]
    )
    settings = OrchestratorSettings()
    group = group_of(finding, settings)
    assert group.attacker_ip == ATTACKER
    details = merge_details({}, finding, group)
    assert details["devices"] == [f"gw-{r:02d}" for r in range(10)]
    assert classify(details) == "fleet_attack"
