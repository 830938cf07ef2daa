"""Per-key sliding windows and burst cooldowns on event time (never the wall clock).

Both are bounded: at most `max_keys` keys, the least recently seen evicted and counted.
"""

from __future__ import annotations

import bisect
import uuid
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

# fixed forever: finding ids derived from it must not change between releases
FINDING_NAMESPACE = uuid.UUID("6f1d3c2e-8a4b-5e7f-9c0d-1b2a3c4d5e6f")


def finding_id(rule_name: str, key: str, burst_start: float) -> str:
    """A deterministic finding id from rule, key and burst start (millisecond precision)."""
    return str(uuid.uuid5(FINDING_NAMESPACE, f"{rule_name}\x1f{key}\x1f{burst_start:.3f}"))


@dataclass(slots=True)
class _Entries:
    """One key's window: (ts, item_id, distinct_value) sorted by ts."""

    items: deque[tuple[float, str, str | None]] = field(default_factory=deque)
    ids: set[str] = field(default_factory=set)
    distinct: Counter[str] = field(default_factory=Counter)
    newest: float = float("-inf")


V = TypeVar("V")


class KeyedLru(OrderedDict[str, V]):
    """Per-key state, at most `max_keys` keys: the least recently touched is evicted and counted."""

    def __init__(self, max_keys: int) -> None:
        super().__init__()
        self.max_keys = max_keys
        self.evicted = 0

    def touch(self, key: str, create: Callable[[], V]) -> V:
        """The state of `key`, made by `create` when new; marks it most recently seen."""
        state = self.get(key)
        if state is None:
            state = self[key] = create()
            if len(self) > self.max_keys:
                self.popitem(last=False)
                self.evicted += 1
        else:
            self.move_to_end(key)
        return state


class SlidingWindow:
    """Counts items per key within the last `window_s` seconds of that key's event time.

    The window of a key ends at the newest timestamp seen for it: an out-of-order item inside
    the window is inserted in place, one older than the window is dropped (`late`). An item id
    seen again within the window is ignored (`duplicates`): redelivery does not inflate counts.
    """

    def __init__(
        self,
        window_s: float,
        threshold: int,
        distinct_field: str | None = None,
        max_keys: int = 100_000,
        max_items_per_key: int = 10_000,
    ) -> None:
        if window_s <= 0 or threshold < 1 or max_keys < 1 or max_items_per_key < 1:
            raise ValueError("window_s, threshold, max_keys and max_items_per_key must be > 0")
        self.window_s = float(window_s)
        self.threshold = threshold
        self.distinct_field = distinct_field
        self.max_keys = max_keys
        self.max_items_per_key = max_items_per_key
        self.late = 0
        self.duplicates = 0
        self._keys: KeyedLru[_Entries] = KeyedLru(max_keys)

    @property
    def evicted(self) -> int:
        """Keys dropped because `max_keys` was reached."""
        return self._keys.evicted

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def add(self, key: str, ts: float, item_id: str, distinct_value: str | None = None) -> int:
        """Add an item and return the key's count (distinct count if distinct_field is set)."""
        return self.push(key, ts, item_id, distinct_value)[0]

    def push(
        self, key: str, ts: float, item_id: str, distinct_value: str | None = None
    ) -> tuple[int, bool]:
        """Like `add`, also telling whether the item was taken (not late, not a duplicate)."""
        entries = self._keys.touch(key, _Entries)
        if ts < entries.newest - self.window_s:
            self.late += 1
            return self._count(entries), False
        if item_id in entries.ids:
            self.duplicates += 1
            return self._count(entries), False
        self._insert(entries, (ts, item_id, distinct_value))
        return self._count(entries), True

    def _insert(self, entries: _Entries, item: tuple[float, str, str | None]) -> None:
        ts = item[0]
        if ts >= entries.newest:
            entries.items.append(item)
            entries.newest = ts
        else:
            at = bisect.bisect_right(entries.items, ts, key=lambda it: it[0])
            entries.items.insert(at, item)
        entries.ids.add(item[1])
        if item[2] is not None:
            entries.distinct[item[2]] += 1
        self._expire(entries, entries.newest - self.window_s)
        while len(entries.items) > self.max_items_per_key:
            self._pop_oldest(entries)

    def _expire(self, entries: _Entries, horizon: float) -> None:
        items = entries.items
        while items and items[0][0] < horizon:
            self._pop_oldest(entries)

    @staticmethod
    def _pop_oldest(entries: _Entries) -> None:
        _, item_id, value = entries.items.popleft()
        entries.ids.discard(item_id)
        if value is not None:
            entries.distinct[value] -= 1
            if not entries.distinct[value]:
                del entries.distinct[value]

    def _count(self, entries: _Entries) -> int:
        return len(entries.distinct) if self.distinct_field else len(entries.items)

    def count(self, key: str) -> int:
        """The key's current count (0 for an unknown key); does not touch LRU order."""
        entries = self._keys.get(key)
        return self._count(entries) if entries else 0

    def size(self, key: str) -> int:
        """How many items the key's window holds (not distinct)."""
        entries = self._keys.get(key)
        return len(entries.items) if entries else 0

    def oldest_ts(self, key: str) -> float | None:
        """Timestamp of the oldest item in the key's window: the window start."""
        entries = self._keys.get(key)
        return entries.items[0][0] if entries and entries.items else None

    def item_ids(self, key: str, limit: int = 20) -> list[str]:
        """The ids of the newest `limit` items in the key's window, oldest first."""
        entries = self._keys.get(key)
        if not entries:
            return []
        items = entries.items
        return [items[i][1] for i in range(max(0, len(items) - limit), len(items))]

    def expire(self, now: float) -> int:
        """Drop keys with nothing newer than `now - window_s`; returns how many were dropped.

        Walks from the least recently seen and stops at the first live key, so it is cheap to
        call often; keys seen out of event-time order may outlive their window until evicted.
        """
        horizon = now - self.window_s
        dropped = 0
        while self._keys:
            key, entries = next(iter(self._keys.items()))
            if entries.newest >= horizon:
                break
            del self._keys[key]
            dropped += 1
        return dropped


@dataclass(slots=True)
class Burst:
    """An open burst of one key: when it started, its last hit, and events counted in it."""

    start: float
    last: float
    total: int
    evidence: deque[str] = field(default_factory=lambda: deque(maxlen=20))


class Cooldown:
    """One burst gives one finding: a key's burst stays open until `seconds` pass without a hit.

    `hit` reports whether the hit opens a NEW burst (its start is the window start given by the
    caller, which keys the finding id) or continues the open one.
    """

    def __init__(self, seconds: float, max_keys: int = 100_000, evidence_limit: int = 20) -> None:
        if seconds < 0 or max_keys < 1 or evidence_limit < 1:
            raise ValueError("seconds must be >= 0, max_keys and evidence_limit > 0")
        self.seconds = float(seconds)
        self.evidence_limit = evidence_limit
        self.max_keys = max_keys
        self.evicted = 0
        self._bursts: OrderedDict[str, Burst] = OrderedDict()

    def __len__(self) -> int:
        return len(self._bursts)

    def open_burst(self, key: str, ts: float) -> Burst | None:
        """The key's burst if it is still open at `ts`, else None."""
        burst = self._bursts.get(key)
        if burst is None or ts - burst.last > self.seconds:
            return None
        return burst

    def hit(self, key: str, ts: float, window_start: float, count: int = 1) -> tuple[bool, Burst]:
        """Record a hit at `ts`; returns (is_new_burst, burst).

        A new burst starts at `window_start` with `total = count`; a hit in the open burst
        extends it and adds one to its total.
        """
        burst = self.open_burst(key, ts)
        if burst is not None:
            burst.last = max(burst.last, ts)
            burst.total += 1
            self._bursts.move_to_end(key)
            return False, burst
        evidence: deque[str] = deque(maxlen=self.evidence_limit)
        burst = Burst(start=min(window_start, ts), last=ts, total=count, evidence=evidence)
        self._bursts[key] = burst
        self._bursts.move_to_end(key)
        if len(self._bursts) > self.max_keys:
            self._bursts.popitem(last=False)
            self.evicted += 1
        return True, burst

    def expire(self, now: float) -> int:
        """Forget bursts closed by `now` (from the least recently hit); returns how many."""
        dropped = 0
        while self._bursts:
            key, burst = next(iter(self._bursts.items()))
            if now - burst.last <= self.seconds:
                break
            del self._bursts[key]
            dropped += 1
        return dropped
