"""STATISTICAL rules: a key's rate per time bucket against its own EWMA baseline.

Matching events are counted per group key in buckets of `bucket_s` seconds of event time.
When a key's event falls in a later bucket, the key's open bucket is closed into its baseline
(an exponentially weighted mean and variance of the per-bucket count), and so is every empty
bucket in between, as a count of 0. The first bucket a key is seen in is partial and is not
learned. After `warmup_buckets` learned buckets, a bucket whose count is at least `min_count`
and above `mean + z_threshold * std` hits: NEW once per burst, then UPDATEs while the burst
lasts (`cooldown_s`, default one bucket), as THRESHOLD rules do. The std has a floor of
`sqrt(mean)` (a Poisson count's spread) and of `min_std`, so a perfectly steady key does not
fire on one extra event. Keys are bounded (LRU, evictions counted).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from opmas import trust
from opmas.agents.rules.types import Rule, RuleHit, event_time
from opmas.agents.rules.windows import Cooldown, KeyedLru
from opmas.errors import ConfigError
from opmas.messages import ParsedEvent


@dataclass(slots=True)
class Baseline:
    """One key's EWMA of the per-bucket count, and its open bucket."""

    bucket: int  # index of the open bucket: floor(ts / bucket_s)
    count: int = 0
    mean: float = 0.0
    var: float = 0.0
    learned: int = 0  # buckets folded into mean/var
    partial: bool = True  # the open bucket is the key's first, seen from its middle
    ids: set[str] = field(default_factory=set)
    evidence: deque[str] = field(default_factory=deque)
    trust: int = 2  # weakest trust rank of the open bucket's events (2: verified)

    def std(self, min_std: float) -> float:
        return math.sqrt(max(self.var, self.mean, min_std * min_std))


class StatisticalRule(Rule):
    """A key's per-bucket count far above its own EWMA baseline, after a warm-up."""

    def __init__(
        self,
        name: str,
        conditions: Sequence[object],
        *,
        group_by: Sequence[str],
        bucket_s: float = 60.0,
        alpha: float = 0.1,
        z_threshold: float = 4.0,
        warmup_buckets: int = 10,
        min_count: int = 5,
        min_std: float = 1.0,
        cooldown_s: float | None = None,
        max_keys: int = 100_000,
        evidence_limit: int = 20,
    ) -> None:
        super().__init__(name, conditions, group_by, evidence_limit)
        if not bucket_s > 0:
            raise ConfigError(f"rule {name!r}: bucket_s must be positive")
        if not 0 < alpha <= 1:
            raise ConfigError(f"rule {name!r}: alpha must be in (0, 1]")
        if not z_threshold > 0:
            raise ConfigError(f"rule {name!r}: z_threshold must be positive")
        for label, value in (("warmup_buckets", warmup_buckets), ("min_count", min_count)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"rule {name!r}: {label} must be a non-negative integer")
        if min_std < 0:
            raise ConfigError(f"rule {name!r}: min_std must not be negative")
        if cooldown_s is not None and cooldown_s < 0:
            raise ConfigError(f"rule {name!r}: cooldown_s must not be negative")
        if max_keys < 1:
            raise ConfigError(f"rule {name!r}: max_keys must be at least 1")
        self.bucket_s = float(bucket_s)
        self.alpha = float(alpha)
        self.z_threshold = float(z_threshold)
        self.warmup_buckets = warmup_buckets
        self.min_count = max(1, min_count)
        self.min_std = float(min_std)
        self.max_keys = max_keys
        self.cooldown = Cooldown(
            self.bucket_s if cooldown_s is None else cooldown_s, max_keys, evidence_limit
        )
        # after this many empty buckets in a row the baseline has decayed to nothing anyway
        self._max_gap = max(100, math.ceil(30 / self.alpha))
        self.late = 0
        self.duplicates = 0
        self.skipped_no_key = 0
        self._keys: KeyedLru[Baseline] = KeyedLru(max_keys)

    @property
    def evicted(self) -> int:
        """Keys dropped because `max_keys` was reached."""
        return self._keys.evicted

    def __len__(self) -> int:
        return len(self._keys)

    def baseline(self, key: str) -> Baseline | None:
        """The key's baseline (for inspection); does not touch LRU order."""
        return self._keys.get(key)

    def limit(self, key: str) -> float | None:
        """The count above which the key's open bucket is anomalous; None during warm-up."""
        state = self._keys.get(key)
        if state is None or state.learned < self.warmup_buckets:
            return None
        return state.mean + self.z_threshold * state.std(self.min_std)

    def _learn(self, state: Baseline, count: float) -> None:
        state.learned += 1
        alpha = max(self.alpha, 1.0 / state.learned)  # a plain mean while history is short
        diff = count - state.mean
        increment = alpha * diff
        state.mean += increment
        state.var = (1 - alpha) * (state.var + diff * increment)

    def _advance(self, state: Baseline, bucket: int) -> None:
        """Close the open bucket and the empty ones up to `bucket`, which opens."""
        if not state.partial:
            self._learn(state, state.count)
        for _ in range(min(bucket - state.bucket - 1, self._max_gap)):
            self._learn(state, 0)
        state.bucket = bucket
        state.count = 0
        state.partial = False
        state.ids.clear()
        state.evidence.clear()
        state.trust = 2

    def _state(self, key: str, bucket: int) -> Baseline:
        return self._keys.touch(
            key, lambda: Baseline(bucket=bucket, evidence=deque(maxlen=self.evidence_limit))
        )

    def evaluate(self, event: ParsedEvent) -> list[RuleHit]:
        if not self.matches(event):
            return []
        key = self.group_key(event)
        if key is None:
            self.skipped_no_key += 1
            return []
        ts = event_time(event)
        bucket = math.floor(ts / self.bucket_s)
        state = self._state(key, bucket)
        if bucket < state.bucket:
            self.late += 1  # its bucket is already learned
            return []
        if bucket > state.bucket:
            self._advance(state, bucket)
        if event.event_id in state.ids:
            self.duplicates += 1
            return []
        state.ids.add(event.event_id)
        state.evidence.append(event.event_id)
        state.trust = min(state.trust, trust.rank(event.trust))
        state.count += 1
        limit = self.limit(key)
        if limit is not None and state.count >= self.min_count and state.count > limit:
            new, burst = self.cooldown.hit(key, ts, bucket * self.bucket_s, state.count)
        else:
            open_burst = self.cooldown.open_burst(key, ts)
            if open_burst is None:
                return []
            new, burst = False, open_burst
            burst.total += 1
        burst.trust = min(burst.trust, state.trust)
        return [self._hit(new, key, state.count, burst, ts, state.evidence)]

    def expire(self, now: float) -> int:
        """Forget closed bursts (baselines stay until evicted: they are the rule's memory)."""
        self.cooldown.expire(now)
        return 0

    def state_size(self) -> tuple[int, int]:
        return len(self._keys), self._keys.evicted
