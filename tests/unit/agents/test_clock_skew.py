"""A router whose clock is far off (no NTP: 1970 or its firmware's build date; ahead) is
counted at its lines' arrival: its brute force is found although the fleet's clock expires
state by event time. Its stored time stays what it said; files and replays keep their own
times, and so does a whole fleet's old file sent live (the bench corpus)."""

from __future__ import annotations

import time

import pytest

from opmas.agents.engine import RuleSet
from opmas.agents.pack import load_pack
from opmas.agents.rules.types import event_time, parse_iso
from opmas.messages import Flag, RawLog, Transport
from opmas.parser.engine import ParserEngine

ENGINE = ParserEngine.from_dirs([])
RULES = [r for r in load_pack() if r.name == "ssh-brute-force-fast"]
NOW = time.time()


def bad_password(stamp: str, n: int, transport: str = Transport.TCP) -> RawLog:
    line = (
        f"<86>1 {stamp} skewed dropbear {3300 + n} - - Bad password attempt for 'root'"
        f" from 203.0.113.7:{50000 + n}"
    )
    return RawLog(f"id-{n}", NOW + n, line, transport)


def healthy(n: int) -> RawLog:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW + n))
    return RawLog(f"ok-{n}", NOW + n, f"<30>1 {stamp} good netifd - - - Interface up", "tcp")


@pytest.mark.parametrize(
    "stamp", ["1970-01-01T00:00:05Z", "2026-01-15T08:00:00Z", "2036-05-01T00:00:05Z"]
)
def test_a_skewed_routers_brute_force_is_found_at_its_arrival_time(stamp: str) -> None:
    ruleset = RuleSet.build(RULES)
    hits = []
    for n in range(12):
        (ok, event) = ENGINE.parse_many([healthy(n), bad_password(stamp, n)])
        assert Flag.CLOCK_SKEW in event.flags
        assert event.event_ts is not None
        assert event.event_ts.startswith(stamp[:4])  # stored as the router said
        assert event_time(event) == parse_iso(event.arrival_ts_utc)
        assert Flag.CLOCK_SKEW not in ok.flags
        hits += ruleset.evaluate(event)
        ruleset.evaluate(ok)
        ruleset.expire(event_time(ok))  # the fleet's clock, as the agents expire state
    assert {loaded.spec.name for loaded, _ in hits} == {"ssh-brute-force-fast"}


def test_a_line_a_minute_late_or_a_fleet_that_is_all_old_keeps_its_own_time() -> None:
    engine = ParserEngine.from_dirs([])
    late = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - 55))
    old = [bad_password(f"2026-11-21T10:00:{n:02d}Z", n) for n in range(3)]
    events = engine.parse_many([bad_password(late, 9), *old])
    assert events[0].flags == []
    assert all(Flag.CLOCK_SKEW in e.flags for e in events[1:])  # weeks behind the newest
    fleet = ParserEngine.from_dirs([]).parse_many(old)  # an old file sent live, alone
    assert [e.flags for e in fleet] == [[], [], []]
    assert event_time(fleet[0]) == parse_iso("2026-11-21T10:00:00Z")


@pytest.mark.parametrize("transport", [Transport.FILE, Transport.REPLAY])
def test_files_and_replays_keep_their_own_old_times(transport: str) -> None:
    (event,) = ENGINE.parse_many([bad_password("2024-03-01T10:00:00Z", 0, transport)])
    assert Flag.CLOCK_SKEW not in event.flags
    assert event_time(event) == parse_iso("2024-03-01T10:00:00Z")
