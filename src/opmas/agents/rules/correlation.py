"""CORRELATION rules: an ordered sequence of steps, joined on a key, within a window.

Each step is a condition list, or `{"conditions": [...], "min_count": N, "join_on": ...}`.
The sequence completes when every step has at least `min_count` matches, each step's matches
strictly after the previous step's, and the last one within `window_s` of the first. Matches
are kept per key in event-time order, so out-of-order delivery inside the window is fine.

One completed sequence opens a burst (a NEW hit keyed by the first matched event's time);
further matches of any step while the burst is open (`cooldown_s`, default the window) UPDATE
it. Time is the event's own, never the wall clock. Keys are bounded (LRU, evictions counted).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from opmas import trust
from opmas.agents.rules.conditions import Getter, Predicate, compile_conditions, field_getter
from opmas.agents.rules.types import KEY_SEPARATOR, Rule, RuleHit, event_time
from opmas.agents.rules.windows import Cooldown, KeyedLru, seen_at
from opmas.errors import ConfigError
from opmas.messages import ParsedEvent

_STEP_KEYS = frozenset(["conditions", "min_count", "join_on"])

# (event time, arrival sequence, event id, trust rank): the sequence orders equal timestamps
_Match = tuple[float, int, str, int]


@dataclass(frozen=True, slots=True)
class Step:
    """One compiled step: its predicate, how many matches it needs, and its join key."""

    matches: Predicate
    min_count: int
    join_on: tuple[str, ...]
    key_parts: tuple[Getter, ...]

    def key(self, event: ParsedEvent) -> str | None:
        parts = []
        for get in self.key_parts:
            value = get(event)
            if value is None:
                return None
            parts.append(value if isinstance(value, str) else str(value))
        return KEY_SEPARATOR.join(parts)


@dataclass(slots=True)
class _KeyState:
    """One key's matches per step within the window, oldest first."""

    steps: list[list[_Match]]
    newest: float = float("-inf")


def _join_fields(value: object, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        fields: tuple[object, ...] = (value,)
    elif isinstance(value, Sequence) and not isinstance(value, bytes):
        fields = tuple(value)
    else:
        raise ConfigError(f"{where}: join_on must be a field path or a list of them")
    if not fields or not all(isinstance(f, str) for f in fields):
        raise ConfigError(f"{where}: join_on must be a field path or a list of them")
    return tuple(str(f) for f in fields)


def _per_step_join(join_on: object, n_steps: int, rule: str) -> list[tuple[str, ...]] | None:
    """join_on given as one list per step (a list of lists), else None."""
    if isinstance(join_on, str) or not isinstance(join_on, Sequence) or not join_on:
        return None
    if not all(isinstance(j, Sequence) and not isinstance(j, str) for j in join_on):
        return None
    if len(join_on) != n_steps:
        raise ConfigError(
            f"rule {rule!r}: join_on per step needs {n_steps} entries, got {len(join_on)}"
        )
    return [_join_fields(j, f"rule {rule!r}, step {i}") for i, j in enumerate(join_on, 1)]


def _compile_step(raw: object, join_on: tuple[str, ...], rule: str, number: int) -> Step:
    where = f"rule {rule!r}, step {number}"
    min_count: object = 1
    if isinstance(raw, Mapping):
        unknown = set(raw) - _STEP_KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {sorted(map(str, unknown))}")
        if "conditions" not in raw:
            raise ConfigError(f"{where}: missing 'conditions'")
        conditions = raw["conditions"]
        min_count = raw.get("min_count", 1)
        if "join_on" in raw:
            join_on = _join_fields(raw["join_on"], where)
    else:
        conditions = raw
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
        raise ConfigError(f"{where}: min_count must be a positive integer")
    try:
        matches = compile_conditions(conditions, rule=f"{rule} step {number}")
        key_parts = tuple(field_getter(f) for f in join_on)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return Step(matches, min_count, join_on, key_parts)


class CorrelationRule(Rule):
    """An ordered sequence of steps within `window_s` seconds of its first step, per join key.

    `join_on` is one field path or a list of them (a composite key, as `group_by`) for every
    step, or a list of such per step (a list of lists, one per step); a step given as a
    mapping may also name its own `join_on`. The joined values must be equal across steps
    (`src_ip` in one domain, `structured_fields.ip` in another).
    """

    def __init__(
        self,
        name: str,
        steps: Sequence[object],
        *,
        join_on: str | Sequence[str] | Sequence[Sequence[str]],
        window_s: float,
        cooldown_s: float | None = None,
        max_keys: int = 100_000,
        evidence_limit: int = 20,
        max_matches_per_step: int = 1_000,
    ) -> None:
        if isinstance(steps, str | bytes) or not isinstance(steps, Sequence) or not steps:
            raise ConfigError(f"rule {name!r}: steps must be a non-empty list")
        per_step = _per_step_join(join_on, len(steps), name)
        shared = _join_fields(join_on, f"rule {name!r}") if per_step is None else per_step[0]
        super().__init__(name, (), shared, evidence_limit)
        if not window_s > 0:
            raise ConfigError(f"rule {name!r}: window_s must be positive")
        if cooldown_s is not None and cooldown_s < 0:
            raise ConfigError(f"rule {name!r}: cooldown_s must not be negative")
        if max_keys < 1:
            raise ConfigError(f"rule {name!r}: max_keys must be at least 1")
        self.steps = tuple(
            _compile_step(raw, shared if per_step is None else per_step[i], name, i + 1)
            for i, raw in enumerate(steps)
        )
        if max_matches_per_step < max(s.min_count for s in self.steps):
            raise ConfigError(f"rule {name!r}: max_matches_per_step is below a step's min_count")
        self.window_s = float(window_s)
        self.max_keys = max_keys
        self.max_matches_per_step = max_matches_per_step
        self.cooldown = Cooldown(
            self.window_s if cooldown_s is None else cooldown_s, max_keys, evidence_limit
        )
        self.late = 0
        self.duplicates = 0
        self.skipped_no_key = 0
        self._keys: KeyedLru[_KeyState] = KeyedLru(max_keys)
        self._seq = 0

    @property
    def evicted(self) -> int:
        """Keys dropped because `max_keys` was reached."""
        return self._keys.evicted

    def __len__(self) -> int:
        return len(self._keys)

    def evaluate(self, event: ParsedEvent) -> list[RuleHit]:
        matched = [(i, step) for i, step in enumerate(self.steps) if step.matches(event)]
        if not matched:
            return []
        ts = event_time(event)
        hits: list[RuleHit] = []
        # an event matching steps with different join keys counts once per key
        by_key: dict[str, list[int]] = {}
        for i, step in matched:
            key = step.key(event)
            if key is None:
                self.skipped_no_key += 1
                continue
            by_key.setdefault(key, []).append(i)
        for key, indexes in by_key.items():
            hit = self._evaluate_key(key, indexes, event, ts)
            if hit is not None:
                hits.append(hit)
        return hits

    def _state(self, key: str) -> _KeyState:
        return self._keys.touch(key, lambda: _KeyState([[] for _ in self.steps]))

    def _evaluate_key(
        self, key: str, indexes: list[int], event: ParsedEvent, ts: float
    ) -> RuleHit | None:
        state = self._state(key)
        if ts < state.newest - self.window_s:
            self.late += 1
            return None
        if ts <= state.newest and any(
            seen_at(matches, ts, event.event_id, at=2) for matches in state.steps
        ):
            self.duplicates += 1
            return None
        self._seq += 1
        match: _Match = (ts, self._seq, event.event_id, trust.rank(event.trust))
        for i in indexes:
            self._insert(state, i, match)
        state.newest = max(state.newest, ts)
        self._expire(state, state.newest - self.window_s)
        last = state.steps[-1]
        if len(self.steps) - 1 in indexes:
            chain = self._chain(state, match)
        elif last and last[-1] > match:  # an earlier step delivered after the last step
            chain = self._chain(state, last[-1])
        else:
            chain = None
        if chain is not None:
            new, burst = self.cooldown.hit(key, ts, chain[0][0], len(chain))
            if new:
                burst.evidence.extend(m[2] for m in chain)
                burst.trust = min(burst.trust, *(m[3] for m in chain))
            else:
                burst.evidence.append(event.event_id)
                burst.trust = min(burst.trust, match[3])
        else:
            open_burst = self.cooldown.open_burst(key, ts)
            if open_burst is None:
                return None
            new, burst = False, open_burst
            burst.total += 1
            burst.evidence.append(event.event_id)
            burst.trust = min(burst.trust, match[3])
        count = len(chain) if chain is not None else sum(len(d) for d in state.steps)
        return self._hit(new, key, count, burst, ts, burst.evidence)

    def _insert(self, state: _KeyState, step: int, match: _Match) -> None:
        matches = state.steps[step]
        if not matches or match >= matches[-1]:
            matches.append(match)
        else:
            bisect.insort_right(matches, match)
        extra = len(matches) - self.max_matches_per_step
        if extra > 0:
            del matches[:extra]

    def _expire(self, state: _KeyState, horizon: float) -> None:
        for matches in state.steps:
            if matches and matches[0][0] < horizon:
                del matches[: bisect.bisect_left(matches, (horizon,))]

    def _chain(self, state: _KeyState, end: _Match) -> list[_Match] | None:
        """The latest-starting complete sequence that `end` (a last-step match) completes.

        Greedy from the last step backwards: each step takes its latest `min_count` matches
        before the earliest match taken by the step after it, which leaves the most room to
        the earlier steps, so a sequence exists only if this finds one.
        """
        bound: _Match = (end[0], end[1] + 1, end[2], end[3])  # `end` itself is taken
        taken: list[list[_Match]] = []
        for step, matches in zip(reversed(self.steps), reversed(state.steps), strict=True):
            stop = bisect.bisect_left(matches, bound)
            if stop < step.min_count:
                return None
            picked = [matches[i] for i in range(stop - step.min_count, stop)]
            taken.append(picked)
            bound = picked[0]
        chain = [m for picked in reversed(taken) for m in picked]
        if chain[-1][0] - chain[0][0] > self.window_s:
            return None
        return chain

    def expire(self, now: float) -> int:
        """Drop keys with nothing newer than `now - window_s` and closed bursts; returns keys."""
        horizon = now - self.window_s
        dropped = 0
        while self._keys:
            key, state = next(iter(self._keys.items()))
            if state.newest >= horizon:
                break
            del self._keys[key]
            dropped += 1
        self.cooldown.expire(now)
        return dropped

    def state_size(self) -> tuple[int, int]:
        return len(self._keys), self._keys.evicted
