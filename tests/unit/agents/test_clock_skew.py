"""A router whose clock is far off (no NTP: 1970; a wrong zone) is counted at its lines'
arrival: its brute force is found although the fleet's clock expires state by event time.
Its stored time stays what it said; files and replays keep their own times."""

from __future__ import annotations

import time

import pytest

from opmas.agents.engine import RuleSet
from opmas.agents.pack import load_pack
from opmas.agents.rules.types import event_time, parse_iso
from opmas.messages import CLOCK_SKEW_S, Flag, RawLog, Transport
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


@pytest.mark.parametrize("stamp", ["1970-01-01T00:00:05Z", "2036-05-01T00:00:05Z"])
def test_a_skewed_routers_brute_force_is_found_at_its_arrival_time(stamp: str) -> None:
    ruleset = RuleSet.build(RULES)
    hits = []
    for n in range(12):
        (event, ok) = ENGINE.parse_many([bad_password(stamp, n), healthy(n)])
        assert Flag.CLOCK_SKEW in event.flags
        assert event.event_ts is not None
        assert event.event_ts.startswith(stamp[:4])  # stored as the router said
        assert event_time(event) == parse_iso(event.arrival_ts_utc)
        assert Flag.CLOCK_SKEW not in ok.flags
        hits += ruleset.evaluate(event)
        ruleset.evaluate(ok)
        ruleset.expire(event_time(ok))  # the fleet's clock, as the agents expire state
    assert {loaded.spec.name for loaded, _ in hits} == {"ssh-brute-force-fast"}


def test_a_line_within_the_skew_keeps_its_own_time() -> None:
    within = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - CLOCK_SKEW_S + 5))
    (event,) = ENGINE.parse_many([bad_password(within, 0)])
    assert Flag.CLOCK_SKEW not in event.flags
    assert event_time(event) == parse_iso(within)


@pytest.mark.parametrize("transport", [Transport.FILE, Transport.REPLAY])
def test_files_and_replays_keep_their_own_old_times(transport: str) -> None:
    (event,) = ENGINE.parse_many([bad_password("2024-03-01T10:00:00Z", 0, transport)])
    assert Flag.CLOCK_SKEW not in event.flags
    assert event_time(event) == parse_iso("2024-03-01T10:00:00Z")
