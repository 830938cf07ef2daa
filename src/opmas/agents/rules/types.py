"""PATTERN and THRESHOLD rules: `evaluate(event)` returns hits, NEW once per burst, then UPDATEs.

Time is the event's own (`event_ts`, else `arrival_ts_utc`), so replays give the same hits.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from opmas import trust
from opmas.agents.rules.conditions import Getter, compile_conditions, field_getter
from opmas.agents.rules.windows import Burst, Cooldown, KeyedLru, SlidingWindow, finding_id
from opmas.errors import ConfigError
from opmas.messages import Flag, ParsedEvent

KEY_SEPARATOR = "|"
MAX_DISTINCT_ITEMS = 10_000  # items a `distinct` window keeps per key
MISSING_KEY_PART = "-"


@lru_cache(maxsize=16_384)
def parse_iso(text: str) -> float:
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def event_time(event: ParsedEvent) -> float:
    """The event's time in epoch seconds: its own timestamp if it has a valid one, else
    arrival; arrival too when its router's clock is off (`Flag.CLOCK_SKEW`): a rule's state
    expires on the fleet's clock, so a burst stamped 1970 would never be counted."""
    if event.event_ts and not (event.flags and Flag.CLOCK_SKEW in event.flags):
        try:
            return parse_iso(event.event_ts)
        except ValueError:
            pass
    return parse_iso(event.arrival_ts_utc)


class HitKind(enum.StrEnum):
    NEW = "new"  # a burst opened: publish a finding
    UPDATE = "update"  # the open burst grew: update that finding's count and evidence


@dataclass(frozen=True, slots=True)
class RuleHit:
    """What a rule reports for one event; `finding_id` is the same for every hit of a burst."""

    rule: str
    kind: HitKind
    key: str
    count: int  # the window's count (distinct count with `distinct`); 1 for a PATTERN rule
    total: int  # events counted in this burst so far
    burst_start: float
    event_ts: float
    finding_id: str
    evidence: tuple[str, ...]  # event ids, oldest first, at most the rule's evidence_limit
    details: Mapping[str, object] | None = None  # set into the finding's details (novelty)
    trust: str = trust.UNTRUSTED  # weakest trust of the events counted in the burst so far

    @property
    def is_new(self) -> bool:
        return self.kind is HitKind.NEW


def _key_getters(group_by: Sequence[str], rule: str) -> tuple[Getter, ...]:
    if isinstance(group_by, str):
        group_by = [group_by]
    try:
        return tuple(field_getter(f) for f in group_by)
    except ConfigError as exc:
        raise ConfigError(f"rule {rule!r}: group_by: {exc}") from None


def _text(value: object) -> str:
    return value if isinstance(value, str) else str(value)


class Rule(ABC):
    """A compiled rule; subclasses keep their own bounded state."""

    def __init__(
        self,
        name: str,
        conditions: Sequence[object],
        group_by: Sequence[str],
        evidence_limit: int,
    ) -> None:
        if not name:
            raise ConfigError("a rule needs a name")
        if evidence_limit < 1:
            raise ConfigError(f"rule {name!r}: evidence_limit must be at least 1")
        self.name = name
        self.matches = compile_conditions(conditions, rule=name)
        self.group_by = (group_by,) if isinstance(group_by, str) else tuple(group_by)
        self._key_parts = _key_getters(self.group_by, name)
        self._key_part = self._key_parts[0] if len(self._key_parts) == 1 else None
        self.evidence_limit = evidence_limit

    def group_key(self, event: ParsedEvent) -> str | None:
        """The event's group key: group_by values joined by `|`; None if a part is missing."""
        if self._key_part is not None:  # one field: no list, no join
            value = self._key_part(event)
            return value if value is None or isinstance(value, str) else str(value)
        parts = []
        for get in self._key_parts:
            value = get(event)
            if value is None:
                return None
            parts.append(_text(value))
        return KEY_SEPARATOR.join(parts) if parts else "*"

    def _hit(
        self, new: bool, key: str, count: int, burst: Burst, ts: float, evidence: Sequence[str]
    ) -> RuleHit:
        if not burst.finding_id:  # a uuid5 costs more than the rest of a hit: once per burst
            burst.finding_id = finding_id(self.name, key, burst.start)
        return RuleHit(
            self.name,
            HitKind.NEW if new else HitKind.UPDATE,
            key,
            count,
            burst.total,
            burst.start,
            ts,
            burst.finding_id,
            tuple(evidence),
            None,
            trust.LEVELS[burst.trust],
        )

    @abstractmethod
    def evaluate(self, event: ParsedEvent) -> list[RuleHit]:
        """The hits this event causes (none, or one)."""

    def expire(self, now: float) -> int:
        """Drop state that ended before `now` (event time); returns keys dropped."""
        return 0

    def due(self, now: float, *, flush: bool = False) -> list[tuple[RuleHit, ParsedEvent]]:
        """Hits held back until monotonic time `now` (all of them with `flush`), each with the
        event it reports; only a rule that holds its judgement has any."""
        return []

    @abstractmethod
    def state_size(self) -> tuple[int, int]:
        """(keys held now, keys evicted so far because `max_keys` was reached)."""


class PatternRule(Rule):
    """One event whose fields satisfy all conditions; repeats within `cooldown_s` update it."""

    def __init__(
        self,
        name: str,
        conditions: Sequence[object],
        *,
        group_by: Sequence[str] = ("hostname",),
        cooldown_s: float = 0.0,
        unless_preceded_by: Sequence[object] | None = None,
        within_s: float = 0.0,
        max_keys: int = 100_000,
        evidence_limit: int = 20,
    ) -> None:
        super().__init__(name, conditions, group_by, evidence_limit)
        if cooldown_s < 0:
            raise ConfigError(f"rule {name!r}: cooldown_s must not be negative")
        if unless_preceded_by is not None and not within_s > 0:
            raise ConfigError(f"rule {name!r}: unless_preceded_by needs a positive within_s")
        self.cooldown = Cooldown(cooldown_s, max_keys, evidence_limit)
        # an event matching `unless` with the same key less than `within_s` before excuses it
        self._unless = (
            None
            if unless_preceded_by is None
            else compile_conditions(unless_preceded_by, rule=f"{name} (unless_preceded_by)")
        )
        self.within_s = float(within_s)
        self._preceded: KeyedLru[float] = KeyedLru(max_keys)

    def group_key(self, event: ParsedEvent) -> str:
        """Like Rule.group_key, with a missing part written as `-` (one event is enough)."""
        if self._key_part is not None:
            value = self._key_part(event)
            return MISSING_KEY_PART if value is None else _text(value)
        parts = [
            _text(v) if (v := g(event)) is not None else MISSING_KEY_PART for g in self._key_parts
        ]
        return KEY_SEPARATOR.join(parts) if parts else "*"

    def evaluate(self, event: ParsedEvent) -> list[RuleHit]:
        if self._unless is not None and self._unless(event):
            key, ts = self.group_key(event), event_time(event)
            last = self._preceded.touch(key, lambda: ts)
            self._preceded[key] = max(last, ts)
        if not self.matches(event):
            return []
        key = self.group_key(event)
        ts = event_time(event)
        if self._unless is not None:
            excuse = self._preceded.get(key)
            if excuse is not None and 0 <= ts - excuse <= self.within_s:
                return []
        open_burst = self.cooldown.open_burst(key, ts)
        if open_burst is not None and event.event_id in open_burst.evidence:
            return []  # redelivered
        new, burst = self.cooldown.hit(key, ts, ts)
        burst.evidence.append(event.event_id)
        burst.trust = min(burst.trust, trust.rank(event.trust))
        return [self._hit(new, key, 1, burst, ts, burst.evidence)]

    def expire(self, now: float) -> int:
        while self._preceded:
            key, ts = next(iter(self._preceded.items()))
            if now - ts <= self.within_s:
                break
            del self._preceded[key]
        return self.cooldown.expire(now)

    def state_size(self) -> tuple[int, int]:
        return len(self.cooldown) + len(self._preceded), self.cooldown.evicted


class ThresholdRule(Rule):
    """At least `threshold` matching events per group key within `window_s` seconds.

    With `distinct`, counts distinct values of that field instead. A burst stays open while
    hits keep coming within `cooldown_s` (default: the window); matching events below the
    threshold inside an open burst still update it, and only threshold hits extend it.
    """

    def __init__(
        self,
        name: str,
        conditions: Sequence[object],
        *,
        threshold: int,
        window_s: float,
        group_by: Sequence[str],
        distinct: str | None = None,
        cooldown_s: float | None = None,
        max_keys: int = 100_000,
        evidence_limit: int = 20,
    ) -> None:
        super().__init__(name, conditions, group_by, evidence_limit)
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
            raise ConfigError(f"rule {name!r}: threshold must be a positive integer")
        if not window_s > 0:
            raise ConfigError(f"rule {name!r}: window_s must be positive")
        if cooldown_s is not None and cooldown_s < 0:
            raise ConfigError(f"rule {name!r}: cooldown_s must not be negative")
        self.threshold = threshold
        self.distinct = distinct
        try:
            self._distinct = field_getter(distinct) if distinct else None
        except ConfigError as exc:
            raise ConfigError(f"rule {name!r}: distinct: {exc}") from None
        # a plain count needs no more than max(threshold, evidence) items per key to decide
        # and to show its evidence: with 100,000 keys that caps memory (a distinct count
        # needs its values, so it keeps the window's default cap)
        per_key = MAX_DISTINCT_ITEMS if distinct else max(threshold, evidence_limit)
        self.window = SlidingWindow(
            window_s, threshold, distinct, max_keys=max_keys, max_items_per_key=per_key
        )
        self.cooldown = Cooldown(window_s if cooldown_s is None else cooldown_s, max_keys)
        self.skipped_no_key = 0

    def evaluate(self, event: ParsedEvent) -> list[RuleHit]:
        if not self.matches(event):
            return []
        key = self.group_key(event)
        if key is None:
            self.skipped_no_key += 1
            return []
        ts = event_time(event)
        value = self._distinct(event) if self._distinct else None
        count, taken = self.window.push(
            key,
            ts,
            event.event_id,
            None if value is None else _text(value),
            trust.rank(event.trust),
        )
        if not taken:
            return []  # late or redelivered: already counted
        if count >= self.threshold:
            start = self.window.oldest_ts(key)
            new, burst = self.cooldown.hit(
                key, ts, ts if start is None else start, self.window.size(key)
            )
        else:
            open_burst = self.cooldown.open_burst(key, ts)
            if open_burst is None:
                return []
            new, burst = False, open_burst
            burst.total += 1
        evidence = self.window.item_ids(key, self.evidence_limit)
        burst.trust = min(burst.trust, self.window.trust_rank(key))
        return [self._hit(new, key, count, burst, ts, evidence)]

    def expire(self, now: float) -> int:
        """Drop keys and bursts that ended before `now` (event time); call now and then."""
        dropped = self.window.expire(now)
        self.cooldown.expire(now)
        return dropped

    def state_size(self) -> tuple[int, int]:
        return len(self.window), self.window.evicted + self.cooldown.evicted
