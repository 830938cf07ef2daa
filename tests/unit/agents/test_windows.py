"""Sliding windows and cooldowns: expiry, distinct counts, bounded keys, out-of-order time."""

from __future__ import annotations

import pytest

from opmas.agents.rules import Cooldown, SlidingWindow, finding_id


def test_window_counts_items_within_the_window_and_expires_older_ones() -> None:
    window = SlidingWindow(60, threshold=3)
    assert [window.add("k", ts, f"e{ts}") for ts in (0, 10, 30, 60)] == [1, 2, 3, 4]
    assert window.add("k", 61, "e61") == 4  # the item at 0 left [1, 61]
    assert window.add("k", 200, "e200") == 1
    assert window.oldest_ts("k") == 200


def test_window_keys_are_counted_separately() -> None:
    window = SlidingWindow(60, threshold=3)
    window.add("a", 0, "1")
    window.add("a", 1, "2")
    assert window.add("b", 2, "3") == 1
    assert window.count("a") == 2
    assert window.count("unknown") == 0


def test_distinct_window_counts_distinct_values() -> None:
    window = SlidingWindow(60, threshold=3, distinct_field="username")
    assert window.add("ip", 0, "1", "root") == 1
    assert window.add("ip", 1, "2", "root") == 1
    assert window.add("ip", 2, "3", "admin") == 2
    assert window.add("ip", 3, "4", None) == 2  # no value: not a distinct one
    assert window.add("ip", 61, "5", "guest") == 3  # root@0 left; root@1 still in
    assert window.add("ip", 62, "6", "guest") == 2  # root@1 left too
    assert window.size("ip") == 4


def test_least_recently_seen_key_is_evicted_and_counted() -> None:
    window = SlidingWindow(60, threshold=1, max_keys=2)
    window.add("a", 0, "1")
    window.add("b", 1, "2")
    window.add("a", 2, "3")  # a is now the most recent
    window.add("c", 3, "4")
    assert window.evicted == 1
    assert "b" not in window
    assert "a" in window
    assert len(window) == 2


def test_out_of_order_item_inside_the_window_is_counted_in_place() -> None:
    window = SlidingWindow(60, threshold=1)
    window.add("k", 100, "late-but-ok-1")
    window.add("k", 110, "2")
    assert window.add("k", 90, "3") == 3
    assert window.oldest_ts("k") == 90
    assert window.item_ids("k") == ["3", "late-but-ok-1", "2"]


def test_out_of_order_item_older_than_the_window_is_dropped_as_late() -> None:
    window = SlidingWindow(60, threshold=1)
    window.add("k", 100, "1")
    assert window.add("k", 39, "2") == 1
    assert window.late == 1


def test_redelivered_item_is_not_counted_twice() -> None:
    window = SlidingWindow(60, threshold=1)
    window.add("k", 0, "same")
    assert window.push("k", 0, "same") == (1, False)
    assert window.duplicates == 1


def test_item_ids_are_bounded_to_the_newest() -> None:
    window = SlidingWindow(600, threshold=1)
    for i in range(30):
        window.add("k", i, f"e{i}")
    assert window.item_ids("k", limit=3) == ["e27", "e28", "e29"]


def test_items_per_key_are_bounded() -> None:
    window = SlidingWindow(600, threshold=1, max_items_per_key=5)
    counts = [window.add("k", i, f"e{i}") for i in range(8)]
    assert counts[-1] == 5


def test_expire_drops_keys_whose_window_ended() -> None:
    window = SlidingWindow(60, threshold=1)
    window.add("old", 0, "1")
    window.add("new", 100, "2")
    assert window.expire(now=100) == 1
    assert "old" not in window
    assert "new" in window


def test_invalid_window_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        SlidingWindow(0, threshold=1)


def test_cooldown_opens_one_burst_and_continues_it_while_hits_keep_coming() -> None:
    cooldown = Cooldown(60)
    new, burst = cooldown.hit("k", 100, window_start=50, count=25)
    assert new
    assert (burst.start, burst.total) == (50, 25)
    new, again = cooldown.hit("k", 150, window_start=90)
    assert not new
    assert again is burst
    assert burst.total == 26
    assert cooldown.open_burst("k", 210) is burst
    assert cooldown.open_burst("k", 211) is None
    new, later = cooldown.hit("k", 211, window_start=200)
    assert new
    assert later.start == 200


def test_cooldown_is_bounded_and_expires() -> None:
    cooldown = Cooldown(10, max_keys=2)
    for i, key in enumerate("abc"):
        cooldown.hit(key, i, i)
    assert cooldown.evicted == 1
    assert len(cooldown) == 2
    assert cooldown.expire(now=12) == 1  # b's burst closed; c's is still open
    assert len(cooldown) == 1


def test_finding_id_is_deterministic_and_depends_on_rule_key_and_start() -> None:
    first = finding_id("wifi_auth", "ap1|aa:bb", 100.0)
    assert first == finding_id("wifi_auth", "ap1|aa:bb", 100.0)
    assert (
        len({first, finding_id("x", "ap1|aa:bb", 100.0), finding_id("wifi_auth", "k", 100.0)}) == 3
    )
    assert first != finding_id("wifi_auth", "ap1|aa:bb", 100.001)
