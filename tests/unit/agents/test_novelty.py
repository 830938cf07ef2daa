"""Novelty rules: online template mining per program; never-seen templates of one router and
program within an hour are one finding that lists them."""

from __future__ import annotations

import json
import time

import pytest

from opmas.agents.rules import HitKind, RuleHit, finding_id
from opmas.agents.rules.novelty import WILDCARD, NoveltyRule, mask_token, tokenize
from opmas.errors import ConfigError
from opmas.messages import ParsedEvent

from .factory import T0, make_event


def hostapd(message: str, ts: float = T0, program: str | None = "hostapd") -> ParsedEvent:
    return make_event(ts=ts, process_name=program, message=message)


def run(rule: NoveltyRule, events: list[ParsedEvent]) -> list[RuleHit]:
    return [hit for event in events for hit in rule.evaluate(event)]


def authenticated(i: int) -> ParsedEvent:
    return hostapd(
        f"wlan{i % 2}: STA 3c:22:fb:{i:02x}:{i * 7 % 256:02x}:0{i % 10} IEEE 802.11: authenticated",
        ts=T0 + i,
    )


@pytest.mark.parametrize(
    ("token", "masked"),
    [
        ("1234", WILDCARD),
        ("-12.5", WILDCARD),
        ("100ms", WILDCARD),
        ("0x1f", WILDCARD),
        ("deadbeefcafe", WILDCARD),
        ("192.168.1.5:52100", WILDCARD),
        ("<10.0.0.2:4455>:", f"<{WILDCARD}>:"),
        ("aa:bb:cc:dd:ee:01,", f"{WILDCARD},"),
        ("2001:db8::1", WILDCARD),
        ("/dev/mtdblock5", WILDCARD),
        ("[12345.678901]", f"[{WILDCARD}]"),
        ("pid=233", f"pid={WILDCARD}"),
        ("total-vm:1234kB,", f"total-vm:{WILDCARD},"),
        ("wlan0:", "wlan0:"),
        ("/overlay", "/overlay"),
        ("AP-STA-CONNECTED", "AP-STA-CONNECTED"),
        ("authenticated", "authenticated"),
    ],
)
def test_variable_tokens_are_masked(token: str, masked: str) -> None:
    assert mask_token(token) == masked


def test_quoted_strings_are_masked_before_splitting() -> None:
    assert tokenize("Bad password attempt for 'some user' from 192.0.2.1:22") == [
        "Bad",
        "password",
        "attempt",
        "for",
        WILDCARD,
        "from",
        WILDCARD,
    ]


def test_varied_macs_and_addresses_form_one_template_and_hit_only_first() -> None:
    rule = NoveltyRule("novel_template")
    hits = run(rule, [authenticated(i) for i in range(30)])
    assert [h.kind for h in hits] == [HitKind.NEW]
    assert rule.templates("hostapd") == [
        f"{WILDCARD} STA {WILDCARD} IEEE {WILDCARD}: authenticated"
    ]


def test_a_new_wording_hits_once_keyed_by_router_and_program() -> None:
    rule = NoveltyRule("novel_template")
    seen = run(rule, [authenticated(i) for i in range(5)])
    radar = [
        hostapd(
            f"wlan1: DFS-RADAR-DETECTED freq={5260 + 20 * i} ht_enabled=1 chan_offset=0",
            T0 + 3600 + i,
        )
        for i in range(100, 103)
    ]
    hits = run(rule, radar)
    template = (
        f"wlan1: DFS-RADAR-DETECTED freq={WILDCARD} ht_enabled={WILDCARD} chan_offset={WILDCARD}"
    )
    assert [(h.kind, h.key) for h in seen] == [(HitKind.NEW, "ap1|hostapd")]
    assert [(h.kind, h.key, h.count, h.total) for h in hits] == [
        (HitKind.NEW, "ap1|hostapd", 1, 1)  # more than an hour after the first: a new group
    ]
    hit = hits[0]
    assert hit.details == {"novelty": "template", "templates": [template]}
    assert hit.burst_start == T0 + 3700
    assert hit.evidence == (radar[0].event_id,)
    assert hit.finding_id == finding_id("novel_template", "ap1|hostapd", T0 + 3700)


def test_new_templates_of_a_router_and_program_within_an_hour_grow_one_finding() -> None:
    rule = NoveltyRule("novel_template", max_listed=2)
    words = ["alpha", "bravo", "charlie", "delta"]
    events = [hostapd(f"{w} event happened now", T0 + 600 * i) for i, w in enumerate(words)]
    events.append(hostapd("echo event happened now", T0 + 3600))  # an hour on: a new group
    other = make_event(ts=T0 + 60, process_name="hostapd", hostname="ap2", message="zulu x")
    hits = run(rule, [*events[:1], other, *events[1:]])
    assert [(h.kind, h.key, h.total) for h in hits] == [
        (HitKind.NEW, "ap1|hostapd", 1),
        (HitKind.NEW, "ap2|hostapd", 1),
        (HitKind.UPDATE, "ap1|hostapd", 2),
        (HitKind.UPDATE, "ap1|hostapd", 3),
        (HitKind.UPDATE, "ap1|hostapd", 4),
        (HitKind.NEW, "ap1|hostapd", 1),
    ]
    grown = hits[4]
    assert grown.finding_id == hits[0].finding_id == finding_id("novel_template", "ap1|hostapd", T0)
    assert grown.details == {
        "novelty": "template",
        "templates": ["alpha event happened now", "bravo event happened now"],  # max_listed
    }
    assert grown.evidence == tuple(e.event_id for e in events[:4])
    assert hits[5].finding_id != grown.finding_id
    assert rule.expire(T0 + 3661) == 1  # ap2's group closed; ap1's second one is open


def test_similar_messages_merge_into_one_template_with_wildcards() -> None:
    rule = NoveltyRule("novel_template")
    first = run(rule, [hostapd("wlan0: interface state UNINITIALIZED->HT_SCAN")])
    second = run(rule, [hostapd("wlan0: interface state HT_SCAN->ENABLED")])
    assert len(first) == 1
    assert second == []
    assert rule.templates("hostapd") == [f"wlan0: interface state {WILDCARD}"]


def test_dissimilar_messages_of_the_same_shape_stay_apart() -> None:
    rule = NoveltyRule("novel_template", similarity=0.7)
    hits = run(rule, [hostapd("daemon started ok now"), hostapd("daemon crashed badly again")])
    assert len(hits) == 2
    assert len(rule.templates("hostapd")) == 2


def test_templates_are_per_program() -> None:
    rule = NoveltyRule("novel_template")
    line = "Out of memory: Killed process 123 (dnsmasq)"
    hits = run(rule, [hostapd(line, program="kernel"), hostapd(line, program="procd")])
    assert [h.key for h in hits] == ["ap1|kernel", "ap1|procd"]
    assert run(rule, [hostapd(line, program=None)])[0].key == "ap1|-"


def test_conditions_limit_which_events_are_mined() -> None:
    rule = NoveltyRule(
        "novel_kernel", [{"field": "process_name", "operator": "==", "value": "kernel"}]
    )
    assert run(rule, [hostapd("something new")]) == []
    assert rule.templates("hostapd") == []


def test_warm_up_events_learn_without_hits() -> None:
    rule = NoveltyRule("novel_template", warmup_events=2)
    events = [hostapd("alpha one"), hostapd("beta two three"), hostapd("gamma x y z")]
    assert [h.details for h in run(rule, events)] == [
        {"novelty": "template", "templates": ["gamma x y z"]}
    ]


def test_seeded_templates_give_no_hit() -> None:
    rule = NoveltyRule("novel_template")
    assert rule.seed([("hostapd", authenticated(1).message), ("dropbear", "Child connection")]) == 2
    assert run(rule, [authenticated(i) for i in range(2, 6)]) == []


def test_export_and_load_round_trip_through_json() -> None:
    rule = NoveltyRule("novel_template")
    run(rule, [authenticated(i) for i in range(3)])
    run(rule, [hostapd("wlan0: AP-ENABLED", T0 + 50)])
    state = json.loads(json.dumps(rule.export()))
    restored = NoveltyRule("novel_template")
    restored.load(state)
    assert restored.templates("hostapd") == rule.templates("hostapd")
    assert run(restored, [authenticated(9), hostapd("wlan0: AP-ENABLED")]) == []
    assert len(run(restored, [hostapd("wlan0: AP-DISABLED now")])) == 1


def test_loading_bad_state_is_rejected() -> None:
    rule = NoveltyRule("novel_template")
    with pytest.raises(ConfigError, match="unsupported novelty state"):
        rule.load({"version": 99, "templates": []})
    with pytest.raises(ConfigError, match="bad template"):
        rule.load({"version": 1, "templates": [{"key": "x"}]})


def test_replay_gives_the_same_ids() -> None:
    events = [authenticated(1), hostapd("wlan0: AP-ENABLED", T0 + 9)]
    events.append(hostapd("wlan0: AP-DISABLED", T0 + 4000))
    first = [h.finding_id for h in run(NoveltyRule("n"), events)]
    assert first == [h.finding_id for h in run(NoveltyRule("n"), events)]
    assert len(first) == 3
    assert len(set(first)) == 2


def test_templates_are_bounded_with_the_least_recently_matched_evicted() -> None:
    rule = NoveltyRule("novel_template", max_templates=3)
    words = ["alpha", "bravo", "charlie", "delta", "echo"]
    run(rule, [hostapd(f"{w} event happened") for w in words[:3]])
    run(rule, [hostapd("alpha event happened")])  # alpha is now the most recent
    run(rule, [hostapd(f"{w} event happened") for w in words[3:]])
    assert len(rule) == 3
    assert rule.evicted == 2
    assert rule.templates("hostapd") == [
        "alpha event happened",
        "delta event happened",
        "echo event happened",
    ]
    assert len(run(rule, [hostapd("bravo event happened")])) == 1  # forgotten: new again


def test_empty_messages_are_ignored() -> None:
    rule = NoveltyRule("novel_template")
    assert run(rule, [hostapd(""), hostapd("   ")]) == []
    assert len(rule) == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"similarity": 0}, "similarity must be in"),
        ({"max_templates": 0}, "max_templates must be at least 1"),
        ({"warmup_events": -1}, "warmup_events must not be negative"),
        ({"group_by": ["a..b"]}, "group_by: invalid field path"),
    ],
)
def test_invalid_novelty_rules_are_rejected(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        NoveltyRule("bad", **options)  # type: ignore[arg-type]


def test_each_program_is_learned_silently_during_its_first_learning_s() -> None:
    rule = NoveltyRule("novel_template", learning_s=3600)
    assert run(rule, [hostapd("wlan0: AP-ENABLED", T0)]) == []
    assert run(rule, [hostapd("wlan0: ACS-COMPLETED freq=2412", T0 + 3599)]) == []  # learning
    (hit,) = run(rule, [hostapd("wlan0: DFS-RADAR-DETECTED freq=5260", T0 + 3600)])
    assert hit.details is not None
    assert hit.details["templates"] == [f"wlan0: DFS-RADAR-DETECTED freq={WILDCARD}"]
    # a program first seen later gets its own learning hour
    assert run(rule, [hostapd("started", T0 + 7200, program="odhcpd")]) == []
    assert run(rule, [hostapd("something else entirely", T0 + 7300, program="odhcpd")]) == []
    assert len(run(rule, [hostapd("and one more kind", T0 + 10_801, program="odhcpd")])) == 1


def test_kernel_uptime_prefix_does_not_make_a_new_template() -> None:
    rule = NoveltyRule("novel_template", learning_s=60)
    line = "br-lan: port 2(lan2) entered disabled state"
    assert run(rule, [hostapd(f"[ 9000.000000] {line}", T0, program="kernel")]) == []
    assert run(rule, [hostapd(f"[19800.123456] {line}", T0 + 600, program="kernel")]) == []


def test_key_novelty_reports_each_new_key_once_after_the_rule_learned() -> None:
    rule = NoveltyRule("new_mac", group_by=["mac_address"], novelty="key", learning_s=3600)

    def lease(mac: str, ts: float) -> ParsedEvent:
        return make_event(ts=ts, message=f"DHCPACK(br-lan) 192.168.1.2 {mac}", mac_address=mac)

    assert run(rule, [lease("aa:00:00:00:00:01", T0), lease("aa:00:00:00:00:02", T0 + 10)]) == []
    assert run(rule, [lease("aa:00:00:00:00:03", T0 + 3000)]) == []  # still the first hour
    (hit,) = run(rule, [lease("aa:00:00:00:00:04", T0 + 3700)])
    assert (hit.key, hit.details) == ("ap1", {"novelty": "key", "keys": ["aa:00:00:00:00:04"]})
    assert (
        run(rule, [lease("aa:00:00:00:00:04", T0 + 3800), lease("aa:00:00:00:00:01", T0 + 4000)])
        == []
    )
    restored = NoveltyRule("new_mac", group_by=["mac_address"], novelty="key", learning_s=3600)
    restored.load(json.loads(json.dumps(rule.export())))
    assert run(restored, [lease("aa:00:00:00:00:02", T0 + 5000)]) == []
    (grown,) = run(restored, [lease("aa:00:00:00:00:05", T0 + 5000)])  # the restored group
    assert (grown.kind, grown.finding_id, grown.total) == (HitKind.UPDATE, hit.finding_id, 2)
    assert grown.details == {"novelty": "key", "keys": ["aa:00:00:00:00:04", "aa:00:00:00:00:05"]}


def test_unknown_novelty_mode_is_rejected() -> None:
    with pytest.raises(ConfigError, match="novelty must be one of"):
        NoveltyRule("x", novelty="values")


def test_a_program_is_learned_during_its_first_learning_events_messages_too() -> None:
    rule = NoveltyRule("novel_template", learning_s=60, learning_events=3)
    quiet = [hostapd("alpha one", T0), hostapd("beta two three", T0 + 4000)]
    assert run(rule, quiet) == []  # an hour on, but only 2 messages: still learning
    assert run(rule, [hostapd("gamma x y z", T0 + 4001)]) == []  # the 3rd message
    (hit,) = run(rule, [hostapd("delta is new", T0 + 4002)])
    assert hit.details == {"novelty": "template", "templates": ["delta is new"]}
    restored = NoveltyRule("novel_template", learning_s=60, learning_events=3)
    restored.load(json.loads(json.dumps(rule.export())))
    assert len(run(restored, [hostapd("echo is also new", T0 + 4003)])) == 1


def test_key_novelty_learns_during_the_rules_first_learning_events() -> None:
    rule = NoveltyRule("new_mac", group_by=["mac_address"], novelty="key", learning_events=2)

    def lease(mac: str, ts: float) -> ParsedEvent:
        return make_event(ts=ts, message=f"DHCPACK(br-lan) 192.168.1.2 {mac}", mac_address=mac)

    assert run(rule, [lease("aa:00:00:00:00:01", T0), lease("aa:00:00:00:00:02", T0 + 1)]) == []
    assert len(run(rule, [lease("aa:00:00:00:00:03", T0 + 2)])) == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"learning_events": -1}, "learning_events must not be negative"),
        ({"group_s": 0}, "group_s must be positive"),
        ({"max_listed": 0}, "max_listed must be at least 1"),
    ],
)
def test_invalid_grouping_options_are_rejected(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        NoveltyRule("bad", **options)  # type: ignore[arg-type]


def held_rule() -> NoveltyRule:
    return NoveltyRule("novel_template", learning_s=3600, hold_s=15)


def on(host: str, message: str, ts: float, program: str = "dropbear") -> ParsedEvent:
    return make_event(ts=ts, hostname=host, process_name=program, message=message)


def test_a_held_kind_is_reported_on_the_router_that_logged_it_first_in_event_time() -> None:
    rule = held_rule()
    # evaluated out of event-time order, as two partitions can be
    assert run(rule, [on("gw-b", "routine start", T0), on("gw-b", "odd thing", T0 + 7200)]) == []
    assert run(rule, [on("gw-a", "odd thing", T0 + 5000)]) == []
    assert rule.due(time.monotonic()) == []  # not yet: held for hold_s
    ((hit, event),) = rule.due(float("inf"))
    assert (hit.key, event.hostname, hit.event_ts) == ("gw-a|dropbear", "gw-a", T0 + 5000)
    assert hit.details == {"novelty": "template", "templates": ["odd thing"]}
    assert rule.due(float("inf"), flush=True) == []  # released once


def test_a_held_kind_met_earlier_in_the_learning_time_is_learned_silently() -> None:
    rule = held_rule()
    assert run(rule, [on("gw-b", "routine start", T0), on("gw-b", "odd thing", T0 + 7200)]) == []
    assert run(rule, [on("gw-a", "odd thing", T0 + 600)]) == []  # the first hour: learning
    assert rule.due(0.0, flush=True) == []


def test_without_a_hold_a_new_kind_is_reported_at_once() -> None:
    rule = NoveltyRule("novel_template", learning_s=3600)
    assert run(rule, [on("gw-b", "routine start", T0)]) == []
    (hit,) = run(rule, [on("gw-b", "odd thing", T0 + 7200)])
    assert hit.key == "gw-b|dropbear"
    assert rule.due(0.0, flush=True) == []


def test_a_held_key_moves_to_its_earliest_occurrence_too() -> None:
    rule = NoveltyRule(
        "new_mac", group_by=["mac_address"], novelty="key", learning_s=3600, hold_s=15
    )

    def lease(host: str, mac: str, ts: float) -> ParsedEvent:
        message = f"DHCPACK(br-lan) 192.168.1.2 {mac}"
        return make_event(ts=ts, hostname=host, message=message, mac_address=mac)

    assert run(rule, [lease("gw-b", "aa:00:00:00:00:01", T0)]) == []
    assert run(rule, [lease("gw-b", "aa:00:00:00:00:09", T0 + 9000)]) == []
    assert run(rule, [lease("gw-a", "aa:00:00:00:00:09", T0 + 4000)]) == []
    ((hit, event),) = rule.due(0.0, flush=True)
    assert (hit.key, event.hostname) == ("gw-a", "gw-a")
    assert hit.details == {"novelty": "key", "keys": ["aa:00:00:00:00:09"]}


def test_hold_s_must_not_be_negative() -> None:
    with pytest.raises(ConfigError, match="hold_s must not be negative"):
        NoveltyRule("x", hold_s=-1)


def test_the_first_learning_events_are_counted_in_event_time_when_a_hold_ends() -> None:
    rule = NoveltyRule("novel_template", learning_s=60, learning_events=30, hold_s=15)
    # gw-a's partition first: its 3 messages are not 30, yet its 2nd hour is past them all ...
    assert run(rule, [on("gw-a", "routine start", T0), on("gw-a", "odd thing", T0 + 7200)]) == []
    # ... once the other partition's 40 messages of the first hour are met
    assert run(rule, [on("gw-b", f"routine tick {i}", T0 + 60 + i) for i in range(40)]) == []
    ((hit, event),) = rule.due(0.0, flush=True)
    assert (hit.key, event.message) == ("gw-a|dropbear", "odd thing")
    # a kind met among the program's first 30 messages in event time is learned silently
    late = NoveltyRule("novel_template", learning_s=60, learning_events=30, hold_s=15)
    assert run(late, [on("gw-a", "routine start", T0), on("gw-a", "odd thing", T0 + 7200)]) == []
    assert run(late, [on("gw-b", f"routine tick {i}", T0 + 7300 + i) for i in range(40)]) == []
    assert late.due(0.0, flush=True) == []
