"""RuleSet (rules routed by domain, state kept across reloads), FindingBook, explain_rules,
rules checked as data (what `agent_rules` and `opmas rules apply` hold), unless_preceded_by."""

from __future__ import annotations

import sys

import pytest

from opmas.agents.engine import (
    FindingBook,
    RuleExplainer,
    RuleMatch,
    RuleSet,
    _effect,
    explain_rules,
    required_events,
)
from opmas.agents.offline import parse_lines
from opmas.agents.pack import RulePackError, RuleSpec, build_rule, check_rule_data, load_pack
from opmas.agents.registry import RuleRow
from opmas.agents.rules.types import PatternRule
from opmas.errors import ConfigError
from opmas.messages import ParsedEvent
from opmas.parser.engine import ParserEngine
from opmas.process import COMPONENT_NAMES, _units, expand

from .factory import T0, make_event

PACK = load_pack()
ENGINE = ParserEngine.from_dirs([])


def _spec(**changes: object) -> RuleSpec:
    base = next(r for r in PACK if r.name == "ssh-brute-force-fast").to_dict()
    base.update(changes)
    return check_rule_data(base)


def _bad_passwords(count: int, ip: str = "203.0.113.7") -> list[str]:
    return [
        f"Sat Nov 21 10:00:{n:02d} 2026 authpriv.warn dropbear[33{n:02d}]: Bad password attempt"
        f" for 'root' from {ip}:{50000 + n}"
        for n in range(count)
    ]


def test_rules_are_routed_by_the_domains_they_read() -> None:
    ruleset = RuleSet.build(PACK)
    assert ruleset.domains == ("health", "other", "security", "wan", "wifi")
    assert ruleset.replay_window_s == 3600  # ssh-brute-force-slow, the longest window
    (event,) = parse_lines(_bad_passwords(1), ENGINE)
    assert event.log_source_type == "security"
    event.hostname = "gw"
    names = {loaded.spec.name for loaded, _ in ruleset.evaluate(event)}
    assert names <= {r.name for r in PACK if "security" in r.reads}


def test_reload_keeps_the_state_of_unchanged_rules_only() -> None:
    events = parse_lines(_bad_passwords(3), ENGINE)
    for event in events:
        event.hostname = "gw"
    first = RuleSet.build([_spec()])
    for event in events:
        first.evaluate(event)
    same = RuleSet.build([_spec()], previous=first)
    assert same.rules[0] is first.rules[0]
    assert same.state_size()[0] == 1
    changed = RuleSet.build([_spec(threshold=4)], previous=first)
    assert changed.rules[0] is not first.rules[0]
    assert changed.state_size() == (0, 0)
    assert RuleSet.build([_spec(enabled=False)]).rules == []


def test_a_rule_that_cannot_build_is_skipped_with_its_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "opmas.agents.rules.correlation", None)
    correlation = next(r for r in PACK if r.type == "CORRELATION")
    ruleset = RuleSet.build([correlation, _spec(name="ok-rule")])
    assert [r.spec.name for r in ruleset.rules] == ["ok-rule"]
    assert "not available" in ruleset.skipped[correlation.name]


def test_finding_book_opens_once_then_grows() -> None:
    spec = _spec()
    ruleset = RuleSet.build([spec])
    book = FindingBook(max_open=10, evidence_limit=3)
    opened = []
    for event in parse_lines(_bad_passwords(7), ENGINE):
        event.hostname = "gw"
        for loaded, hit in ruleset.evaluate(event):
            finding, new = book.fold(loaded.spec, hit, event, "security")
            opened.append(new)
    assert opened == [True, False, False]
    assert finding.count == 7
    assert finding.details["key"] == "gw|203.0.113.7"
    assert finding.description == "SSH brute force from 203.0.113.7 (7 failed logins in 60 s)"
    assert len(finding.evidence_event_ids) == 3
    assert finding.last_seen_utc == "2026-11-21T10:00:06.000Z"
    assert finding.finding_ts_utc == "2026-11-21T10:00:04.000Z"


def test_finding_book_is_bounded() -> None:
    spec = _spec(threshold=1)
    ruleset = RuleSet.build([spec])
    book = FindingBook(max_open=2)
    for n in range(5):
        (event,) = parse_lines(_bad_passwords(1, ip=f"198.51.100.{n}"), ENGINE)
        event.hostname = "gw"
        for loaded, hit in ruleset.evaluate(event):
            book.fold(loaded.spec, hit, event, "security")
    assert len(book) == 2


def test_explain_names_the_rules_an_event_counts_towards() -> None:
    (event,) = parse_lines(_bad_passwords(1), ENGINE)
    event.hostname = "gw"
    matches = {m.rule: m for m in explain_rules(event, PACK)}
    assert matches["ssh-brute-force-fast"].effect == "counts towards 5 events in 60 s"
    assert matches["ssh-brute-force-fast"].key == "gw|203.0.113.7"
    assert matches["ssh-login-after-failures"].effect == "matches step 1 (failures) of 2"
    assert "wifi-auth-failure-rate" not in matches
    (quiet,) = parse_lines(["Sat Nov 21 10:00:00 2026 daemon.info crond[1]: USER root pid 2"])
    quiet.hostname = "gw"
    assert {m.rule for m in explain_rules(quiet, PACK)} <= {"new-log-template"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"severity": "urgent"}, "unknown severity"),
        ({"conditions": [{"field": "message", "operator": "regex", "value": "(a)\\1"}]}, "RE2"),
        ({"conditions": [{"field": "message", "operator": "like", "value": "x"}]}, "operator"),
        ({"threshold": None}, "needs 'threshold'"),
        ({"window_s": -5}, "must be positive"),
        ({"agent": "NopeAgent"}, "unknown or missing agent"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_a_rule_saved_as_data_is_checked_like_a_file(
    change: dict[str, object], message: str
) -> None:
    with pytest.raises(RulePackError, match=message):
        _spec(**change)


def test_a_seed_002_row_with_a_bare_condition_list_reads_as_a_pattern_rule() -> None:
    row = RuleRow(
        1,
        "root-login",
        "PATTERN",
        None,
        [{"field": "user", "operator": "==", "value": "root"}],
        True,
    )
    spec = check_rule_data(row.to_data("SecurityAgent"))
    assert spec.type == "PATTERN"
    assert spec.finding_type == "RootLogin"
    assert spec.severity == "warning"


def test_unless_preceded_by_excuses_an_event_after_the_excuse_only() -> None:
    rule = PatternRule(
        "unexpected-reboot",
        [{"field": "stage", "operator": "==", "value": "init"}],
        unless_preceded_by=[{"field": "stage", "operator": "==", "value": "shutdown"}],
        within_s=900,
    )
    assert rule.evaluate(make_event(ts=T0, stage="shutdown")) == []
    assert rule.evaluate(make_event(ts=T0 + 120, stage="init")) == []  # clean reboot
    assert len(rule.evaluate(make_event(ts=T0 + 1000, stage="init", hostname="ap2"))) == 1
    assert len(rule.evaluate(make_event(ts=T0 + 5000, stage="init"))) == 1  # excuse too old
    assert rule.state_size()[0] > 0
    rule.expire(T0 + 10_000)
    assert rule.state_size()[0] == 0  # the excuse and the bursts expired


def test_groups_expand_and_up_runs_the_agents_in_one_child() -> None:
    assert expand(["agents"]) == ("agent-wifi", "agent-security", "agent-health", "agent-wan")
    assert expand(["api", "agent-wan"]) == ("agent-wan", "api")
    with pytest.raises(ValueError, match="unknown component 'nope'"):
        expand(["nope"])
    units = _units(COMPONENT_NAMES, ["parser", "agents"])
    assert units["agents"] == expand(["agents"])
    assert "agent-wifi" not in units
    assert units["parser"] == ("parser",)
    assert "agents" not in _units(COMPONENT_NAMES, ["parser"])
    split = _units(COMPONENT_NAMES, ["agent-health", "agents"])
    assert split["agent-health"] == ("agent-health",)
    assert split["agents"] == ("agent-wifi", "agent-security", "agent-wan")


def test_rules_are_only_asked_about_events_they_can_match() -> None:
    by_name = {r.name: r for r in PACK}
    assert required_events(by_name["ssh-brute-force-fast"]) == frozenset(
        {"ssh_bad_password", "ssh_nonexistent_user"}
    )
    assert required_events(by_name["flash-full"]) is None  # a regex on the message: any event
    assert required_events(by_name["new-log-template"]) is None
    login = required_events(by_name["ssh-login-after-failures"])  # every step's events
    assert login is not None
    assert "ssh_password_auth_succeeded" in login
    assert "ssh_bad_password" in login
    numeric = _spec(conditions=[{"field": "event", "operator": "==", "value": "5"}])
    assert required_events(numeric) is None  # "5" also equals the number 5: not indexed
    ruleset = RuleSet.build(PACK)
    (event,) = parse_lines(_bad_passwords(1), ENGINE)
    event.hostname = "gw"
    asked = {r.spec.name for r, _ in ruleset._route(("security", "ssh_bad_password"))}
    assert "ssh-brute-force-fast" in asked
    assert "luci-login-failures" not in asked


def test_the_explainer_gives_what_explain_rules_gives_for_every_event() -> None:
    lines = [
        *_bad_passwords(3),
        "Sat Nov 21 10:00:01 2026 kern.err kernel: [ 1.5] jffs2: No space left on device",
        "Sat Nov 21 10:00:02 2026 daemon.info dropbear[9]: Password auth succeeded for 'root' "
        "from 203.0.113.7:50000",
        "Sat Nov 21 10:00:03 2026 daemon.notice netifd: Interface 'wan' is now down",
        "not a syslog line at all",
    ]
    explainer = RuleExplainer(PACK)
    seen: set[str] = set()
    for event in parse_lines(lines, ENGINE):
        expected = _every_rule_asked(event)
        assert explainer.explain(event) == expected
        assert explain_rules(event, PACK) == expected
        seen.update(m.rule for m in expected)
    assert {"ssh-brute-force-fast", "flash-full", "ssh-login-after-failures"} <= seen


def _every_rule_asked(event: ParsedEvent) -> list[RuleMatch]:
    """explain_rules without routing: every rule of the domain built and asked."""
    found = []
    for spec in PACK:
        if not spec.enabled or event.log_source_type not in spec.reads:
            continue
        try:
            rule = build_rule(spec, max_keys=1)
        except ConfigError:
            continue
        effect = _effect(spec, rule, event)
        if effect is not None:
            key = rule.group_key(event) if spec.type != "CORRELATION" else None
            found.append(RuleMatch(spec.name, spec.type, spec.agent or "", key, effect))
    return found
