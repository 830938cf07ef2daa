"""A finding's `details.trust` is the weakest trust of the events it rests on."""

from __future__ import annotations

import msgspec
import pytest

from opmas.agents.engine import FindingBook
from opmas.agents.pack import load_pack
from opmas.agents.rules.correlation import CorrelationRule
from opmas.agents.rules.novelty import NoveltyRule
from opmas.agents.rules.statistical import StatisticalRule
from opmas.agents.rules.types import PatternRule, ThresholdRule
from opmas.agents.rules.windows import SlidingWindow
from opmas.messages import ParsedEvent

from .factory import T0, make_event

FAILED = [{"field": "event", "operator": "==", "value": "auth_failed"}]
OK = [{"field": "event", "operator": "==", "value": "login"}]
SPEC = next(r for r in load_pack() if r.name == "ssh-brute-force-fast")


def ev(ts: float, trust: str | None, event: str = "auth_failed") -> ParsedEvent:
    return msgspec.structs.replace(make_event(ts=ts, event=event), trust=trust)


def fold(rule: PatternRule | ThresholdRule | CorrelationRule, events: list[ParsedEvent]) -> object:
    book = FindingBook()
    finding = None
    for event in events:
        for hit in rule.evaluate(event):
            finding, _ = book.fold(SPEC, hit, event, "security")
    assert finding is not None
    return finding.details["trust"]


def test_threshold_finding_from_verified_and_spoofed_lines_is_untrusted() -> None:
    rule = ThresholdRule("t", FAILED, threshold=3, window_s=60, group_by=["hostname"])
    # the spoofed line comes first and the verified one makes the threshold
    events = [ev(T0, "untrusted"), ev(T0 + 1, "verified"), ev(T0 + 2, "verified")]
    assert fold(rule, events) == "untrusted"


def test_threshold_finding_from_verified_lines_only_is_verified() -> None:
    rule = ThresholdRule("t", FAILED, threshold=3, window_s=60, group_by=["hostname"])
    assert fold(rule, [ev(T0 + i, "verified") for i in range(4)]) == "verified"


def test_an_open_finding_only_weakens_as_weaker_evidence_arrives() -> None:
    rule = PatternRule("p", FAILED, cooldown_s=60)
    events = [ev(T0, "verified"), ev(T0 + 1, "address"), ev(T0 + 2, "verified")]
    book = FindingBook()
    seen = []
    for event in events:
        for hit in rule.evaluate(event):
            finding, _ = book.fold(SPEC, hit, event, "security")
            seen.append(finding.details["trust"])
    assert seen == ["verified", "address", "address"]


def test_an_event_without_trust_counts_as_untrusted() -> None:
    rule = PatternRule("p", FAILED)
    assert fold(rule, [ev(T0, None)]) == "untrusted"


def test_correlation_finding_takes_the_weakest_step() -> None:
    rule = CorrelationRule("c", [FAILED, OK], join_on="hostname", window_s=60)
    events = [ev(T0, "address"), ev(T0 + 1, "verified", event="login")]
    assert fold(rule, events) == "address"


def test_statistical_and_novelty_hits_carry_the_weakest_trust() -> None:
    stat = StatisticalRule("s", FAILED, group_by=["hostname"], warmup_buckets=1, min_count=2)
    hits = []
    for minute in range(3):  # a quiet baseline of one event a minute, then a burst
        hits += stat.evaluate(ev(T0 + minute * 60, "verified"))
    for i in range(30):
        hits += stat.evaluate(ev(T0 + 180 + i, "untrusted" if i == 0 else "verified"))
    assert hits
    assert hits[-1].trust == "untrusted"
    novelty = NoveltyRule("n")
    (hit,) = novelty.evaluate(ev(T0, "address"))
    assert hit.trust == "address"
    restored = NoveltyRule("n")
    restored.load(novelty.export())
    assert restored._groups[next(iter(restored._groups))].burst.trust == 1  # kept across restarts


@pytest.mark.parametrize(("ranks", "expected"), [((2, 2), 2), ((2, 1), 1), ((1, 0, 2), 0)])
def test_a_window_knows_its_weakest_item_and_forgets_it_when_it_expires(
    ranks: tuple[int, ...], expected: int
) -> None:
    window = SlidingWindow(10, threshold=1)
    for i, rank in enumerate(ranks):
        window.push("k", T0 + i, f"e{i}", trust_rank=rank)
    assert window.trust_rank("k") == expected
    window.push("k", T0 + 100, "late", trust_rank=2)  # everything before left the window
    assert window.trust_rank("k") == 2
