"""Per-key sliding windows and burst cooldowns on event time (never the wall clock).

Both are bounded: at most `max_keys` keys, the least recently seen evicted and counted.
"""

from __future__ import annotations

import bisect
import uuid
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

# fixed forever: finding ids derived from it must not change between releases
FINDING_NAMESPACE = uuid.UUID("6f1d3c2e-8a4b-5e7f-9c0d-1b2a3c4d5e6f")


def finding_id(rule_name: str, key: str, burst_start: float) -> str:
    """A deterministic finding id from rule, key and burst start (millisecond precision)."""
    return str(uuid.uuid5(FINDING_NAMESPACE, f"{rule_name}\x1f{key}\x1f{burst_start:.3f}"))


_Item = tuple[float, str, str | None, int]  # (ts, item id, distinct value, trust rank)
_VERIFIED = 2  # trust.rank(trust.VERIFIED): a window or burst without weaker evidence


def _ts(item: tuple[float, Any, Any, Any]) -> float:
    return item[0]


def seen_at(
    items: Sequence[tuple[float, Any, Any, Any]], ts: float, item_id: str, at: int = 1
) -> bool:
    """Whether `items` (sorted by ts) hold `item_id` at time `ts`: a redelivered item comes
    back with its own timestamp, so only the items of that instant are compared."""
    i = bisect.bisect_left(items, ts, key=_ts)
    while i < len(items) and items[i][0] == ts:
        if items[i][at] == item_id:
            return True
        i += 1
    return False


@dataclass(slots=True)
class _Entries:
    """One key's window, sorted by ts; small, as there may be 100,000 of them per rule."""

    items: list[_Item] = field(default_factory=list)
    distinct: Counter[str] | None = None
    newest: float = float("-inf")
    untrusted: int = 0  # items of each trust rank below verified, for the window's trust
    address: int = 0


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
        self,
        key: str,
        ts: float,
        item_id: str,
        distinct_value: str | None = None,
        trust_rank: int = 0,
    ) -> tuple[int, bool]:
        """Like `add`, also telling whether the item was taken (not late, not a duplicate).

        `trust_rank` is `opmas.trust.rank` of the item's event (0: untrusted)."""
        entries = self._keys.touch(key, _Entries)
        if ts < entries.newest - self.window_s:
            self.late += 1
            return self._count(entries), False
        if ts <= entries.newest and seen_at(entries.items, ts, item_id):
            self.duplicates += 1
            return self._count(entries), False
        self._insert(entries, (ts, item_id, distinct_value, trust_rank))
        return self._count(entries), True

    def _insert(self, entries: _Entries, item: _Item) -> None:
        ts, _, value, rank = item
        if rank < _VERIFIED:
            if rank:
                entries.address += 1
            else:
                entries.untrusted += 1
        if ts >= entries.newest:
            entries.items.append(item)
            entries.newest = ts
        else:
            bisect.insort_right(entries.items, item, key=_ts)
        if value is not None:
            if entries.distinct is None:
                entries.distinct = Counter()
            entries.distinct[value] += 1
        self._expire(entries, entries.newest - self.window_s)
        extra = len(entries.items) - self.max_items_per_key
        if extra > 0:
            self._drop_oldest(entries, extra)

    def _expire(self, entries: _Entries, horizon: float) -> None:
        items = entries.items
        if items and items[0][0] < horizon:
            self._drop_oldest(entries, bisect.bisect_left(items, horizon, key=_ts))

    @staticmethod
    def _drop_oldest(entries: _Entries, count: int) -> None:
        distinct = entries.distinct
        if distinct is not None:
            for _, _, value, _ in entries.items[:count]:
                if value is not None:
                    distinct[value] -= 1
                    if not distinct[value]:
                        del distinct[value]
        if entries.untrusted or entries.address:
            for item in entries.items[:count]:
                if item[3] == 0:
                    entries.untrusted -= 1
                elif item[3] == 1:
                    entries.address -= 1
        del entries.items[:count]

    def _count(self, entries: _Entries) -> int:
        if self.distinct_field:
            return len(entries.distinct) if entries.distinct else 0
        return len(entries.items)

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

    def trust_rank(self, key: str) -> int:
        """The weakest trust rank of the items in the key's window (2, verified, if empty)."""
        entries = self._keys.get(key)
        if entries is None:
            return _VERIFIED
        return 0 if entries.untrusted else 1 if entries.address else _VERIFIED

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
    trust: int = _VERIFIED  # weakest trust rank of the events counted in it so far
    finding_id: str = ""  # of its rule and key, once asked (see Rule._hit); start never moves


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
