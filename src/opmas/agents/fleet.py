"""FLEET rules: detection across routers that partitioning by router cannot break.

A FLEET rule has two halves. Where a router's lines are evaluated, `SignalCollector` counts
the events matching the rule's conditions per (rule, key, router) and hands out compact
`Signal`s (signals.fleet). At the one fleet stage, `FleetRules` folds the signals of every
router into per-(rule, key) windows and opens a finding when a key reaches `threshold` events
on at least `min_routers` distinct routers within `window_s`: one finding per burst, grown
as the burst grows, as a THRESHOLD rule does. Both are pure: no I/O, time from the events.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from opmas import trust
from opmas.agents.engine import EVIDENCE_LIMIT, MAX_ROUTES, fingerprint, render, required_events
from opmas.agents.pack import RuleSpec
from opmas.agents.rules.conditions import Getter, compile_conditions, field_getter
from opmas.agents.rules.types import KEY_SEPARATOR, event_time
from opmas.agents.rules.windows import KeyedLru, finding_id
from opmas.messages import Finding, ParsedEvent, Signal, iso_utc

UNKNOWN_HOST = "unknown"
SPAN_S = 60.0  # one signal covers at most this much event time of its router
SIGNAL_EVIDENCE = 5  # event ids a signal carries
MAX_AGGREGATES = 50_000  # aggregates a collector holds between two drains
MAX_DEVICES = 10_000  # distinct routers remembered per burst
LISTED_DEVICES = 100  # routers named in a finding's details
MAX_SEEN = 100_000  # signal ids remembered per key window, for redelivery

_Route = tuple[str, str | None]


def fleet_specs(specs: Iterable[RuleSpec]) -> list[RuleSpec]:
    """The enabled FLEET rules among `specs`."""
    return [spec for spec in specs if spec.type == "FLEET" and spec.enabled]


# -- the signal half: per event, where a router's lines are processed ---------------------


@dataclass(eq=False)
class _SignalHalf:
    index: int  # position in the collector: part of an aggregate's slot
    spec: RuleSpec
    matches: Callable[[ParsedEvent], bool]
    key_parts: tuple[Getter, ...]
    events: frozenset[str] | None

    def key(self, event: ParsedEvent) -> str | None:
        parts = []
        for get in self.key_parts:
            value = get(event)
            if value is None:
                return None
            parts.append(value if isinstance(value, str) else str(value))
        return KEY_SEPARATOR.join(parts)


@dataclass(slots=True)
class _Aggregate:
    first_ts: float
    last_ts: float
    count: int = 0
    evidence: list[str] = field(default_factory=list)
    trust: int = 2  # weakest opmas.trust rank of the events counted


class SignalCollector:
    """Counts the events matching each FLEET rule's conditions per (rule, key, router).

    `observe` is called for every parsed event; `drain` returns the aggregates since the
    previous drain and forgets them. An aggregate covers at most `span_s` of its router's event
    time (a later event starts a new one), so a rare drain does not blur the fleet windows. At
    most `max_aggregates` are held between drains; events that would need more are counted in
    `dropped`, not kept.
    """

    def __init__(
        self,
        specs: Iterable[RuleSpec],
        *,
        max_aggregates: int = MAX_AGGREGATES,
        span_s: float = SPAN_S,
        evidence: int = SIGNAL_EVIDENCE,
    ) -> None:
        if max_aggregates < 1 or not span_s > 0 or evidence < 0:
            raise ValueError("max_aggregates and span_s must be positive, evidence >= 0")
        self.max_aggregates = max_aggregates
        self.span_s = float(span_s)
        self.evidence = evidence
        self.dropped = 0  # since the last drain
        self.skipped_no_key = 0
        self._halves = [_signal_half(n, spec) for n, spec in enumerate(fleet_specs(specs))]
        self._routes: dict[_Route, list[_SignalHalf]] = {}
        self._open: dict[tuple[int, str, str], _Aggregate] = {}
        self._closed: list[tuple[int, str, str, _Aggregate]] = []

    def __len__(self) -> int:
        """Aggregates held now."""
        return len(self._open) + len(self._closed)

    @property
    def rules(self) -> tuple[RuleSpec, ...]:
        return tuple(half.spec for half in self._halves)

    def observe(self, event: ParsedEvent) -> None:
        """Count the event towards every FLEET rule whose conditions it meets."""
        name = event.structured_fields.get("event")
        route = (event.log_source_type, name if isinstance(name, str) else None)
        halves = self._routes.get(route)
        if halves is None:
            halves = self._route(route)
        for half in halves:
            if not half.matches(event):
                continue
            key = half.key(event)
            if key is None:
                self.skipped_no_key += 1
                continue
            self._count(half.index, key, event)

    def _count(self, index: int, key: str, event: ParsedEvent) -> None:
        host = event.hostname or event.source_ip or UNKNOWN_HOST
        ts = event_time(event)
        slot = (index, key, host)
        aggregate = self._open.get(slot)
        if aggregate is not None and abs(ts - aggregate.first_ts) > self.span_s:
            self._closed.append((index, key, host, aggregate))
            del self._open[slot]
            aggregate = None
        if aggregate is None:
            if len(self) >= self.max_aggregates:
                self.dropped += 1
                return
            aggregate = self._open[slot] = _Aggregate(ts, ts)
        aggregate.count += 1
        if ts < aggregate.first_ts:
            aggregate.first_ts = ts
        elif ts > aggregate.last_ts:
            aggregate.last_ts = ts
        if len(aggregate.evidence) < self.evidence:
            aggregate.evidence.append(event.event_id)
        aggregate.trust = min(aggregate.trust, trust.rank(event.trust))

    def _route(self, route: _Route) -> list[_SignalHalf]:
        domain, name = route
        halves = [
            half
            for half in self._halves
            if domain in half.spec.reads and (half.events is None or name in half.events)
        ]
        if len(self._routes) >= MAX_ROUTES:  # event names are few; this only bounds abuse
            self._routes.clear()
        self._routes[route] = halves
        return halves

    def drain(self) -> list[Signal]:
        """The aggregates since the last drain, as signals, oldest first; then forgets them."""
        closed, self._closed = self._closed, []
        items = closed + [(i, k, h, a) for (i, k, h), a in self._open.items()]
        self._open = {}
        self.dropped = 0
        signals = [
            Signal(
                agent=self._halves[index].spec.agent or "",
                rule=self._halves[index].spec.name,
                key=key,
                hostname=host,
                count=aggregate.count,
                first_ts=aggregate.first_ts,
                last_ts=aggregate.last_ts,
                evidence=aggregate.evidence,
                trust=trust.LEVELS[aggregate.trust],
            )
            for index, key, host, aggregate in items
        ]
        signals.sort(key=lambda s: s.last_ts)
        return signals


def _signal_half(index: int, spec: RuleSpec) -> _SignalHalf:
    return _SignalHalf(
        index,
        spec,
        compile_conditions(spec.conditions, rule=spec.name),
        tuple(field_getter(name) for name in spec.group_by or ()),
        required_events(spec),
    )


# -- the fleet half: over every router, at the fleet stage ----------------------------------


@dataclass(slots=True)
class _Item:
    ts: float  # the signal's last event time
    hostname: str
    count: int
    evidence: tuple[str, ...]
    first_ts: float
    signal_id: str | None
    trust: int


@dataclass(slots=True)
class _Burst:
    start: float
    last: float
    total: int
    devices: set[str]
    finding: Finding
    trust: int


@dataclass(slots=True)
class _KeyWindow:
    """One key's signals within the window, sorted by time, with running totals."""

    items: deque[_Item] = field(default_factory=deque)
    per_router: Counter[str] = field(default_factory=Counter)
    total: int = 0
    newest: float = float("-inf")
    seen: set[str] = field(default_factory=set)
    burst: _Burst | None = None

    def add(self, item: _Item, window_s: float) -> str | None:
        """Take the item; else why not: `late` (older than the window) or `duplicate`."""
        if item.ts < self.newest - window_s:
            return "late"
        self._expire(max(self.newest, item.ts) - window_s)
        if item.signal_id is not None:
            if item.signal_id in self.seen:
                return "duplicate"
            if len(self.seen) < MAX_SEEN:
                self.seen.add(item.signal_id)
        if item.ts >= self.newest:
            self.items.append(item)
            self.newest = item.ts
        else:  # out of order: rare, a small window; keep it sorted
            ordered = sorted([*self.items, item], key=lambda i: i.ts)
            self.items = deque(ordered)
        self.per_router[item.hostname] += item.count
        self.total += item.count
        return None

    def _expire(self, horizon: float) -> None:
        while self.items and self.items[0].ts < horizon:
            old = self.items.popleft()
            self.total -= old.count
            self.per_router[old.hostname] -= old.count
            if self.per_router[old.hostname] <= 0:
                del self.per_router[old.hostname]
            if old.signal_id is not None:
                self.seen.discard(old.signal_id)

    def evidence(self, limit: int) -> list[str]:
        found: list[str] = []
        for item in self.items:
            for event_id in item.evidence:
                if len(found) >= limit:
                    return found
                found.append(event_id)
        return found


@dataclass(eq=False)
class _FleetRule:
    spec: RuleSpec
    fingerprint: bytes
    keys: KeyedLru[_KeyWindow]

    @property
    def window_s(self) -> float:
        return float(self.spec.window_s or 0.0)

    @property
    def cooldown_s(self) -> float:
        return self.window_s if self.spec.cooldown_s is None else float(self.spec.cooldown_s)


@dataclass
class FleetHit:
    """A finding a fold opened (`new`) or grew."""

    finding: Finding
    new: bool


class FleetRules:
    """The fleet halves of FLEET rules: per-(rule, key) windows over every router's signals.

    Windows run on the signals' own times (a signal counts at its last event). A key's burst
    opens when its window holds at least `threshold` events from at least `min_routers`
    routers, and stays open while signals keep coming within `cooldown_s` (default: the
    window): the same finding id, its count, routers and evidence growing. At most `max_keys`
    keys per rule, the least recently seen evicted. A restart rebuilds the state by folding the
    signals of the last `replay_window_s` again (a signal seen twice is counted once).
    """

    def __init__(
        self,
        specs: Iterable[RuleSpec] = (),
        *,
        max_keys: int = 100_000,
        evidence_limit: int = EVIDENCE_LIMIT,
        previous: FleetRules | None = None,
    ) -> None:
        self.max_keys = max_keys
        self.evidence_limit = evidence_limit
        self.late = 0  # signals older than their key's window
        self.duplicates = 0  # signals seen before (redelivered, replayed twice)
        self.unknown = 0  # signals of no loaded rule
        kept: dict[tuple[str | None, str, bytes], _FleetRule] = {}
        if previous is not None and previous.max_keys == max_keys:  # unchanged rules keep state
            kept = {(r.spec.agent, r.spec.name, r.fingerprint): r for r in previous._rules.values()}
        self._rules: dict[tuple[str, str], _FleetRule] = {}
        for spec in fleet_specs(specs):
            print_ = fingerprint(spec)
            rule = kept.get((spec.agent, spec.name, print_))
            if rule is None:
                rule = _FleetRule(spec, print_, KeyedLru(max_keys))
            self._rules[(spec.agent or "", spec.name)] = rule

    @property
    def specs(self) -> list[RuleSpec]:
        return [rule.spec for rule in self._rules.values()]

    @property
    def replay_window_s(self) -> float:
        """History that rebuilds every window and open burst: the longest window + cooldown."""
        return max((r.window_s + r.cooldown_s for r in self._rules.values()), default=0.0)

    def fold(self, signals: Iterable[Signal]) -> list[Finding]:
        """The findings the signals open or grow, each once."""
        return [hit.finding for hit in self.fold_hits(signals)]

    def fold_hits(self, signals: Iterable[Signal]) -> list[FleetHit]:
        """Like `fold`, telling which findings were opened by these signals."""
        hits: dict[str, FleetHit] = {}
        for signal in sorted(signals, key=lambda s: s.last_ts):
            rule = self._rules.get((signal.agent, signal.rule))
            if rule is None:
                self.unknown += 1
                continue
            burst, new = self._fold_one(rule, signal)
            if burst is None:
                continue
            known = hits.get(burst.finding.finding_id)
            hits[burst.finding.finding_id] = FleetHit(
                burst.finding, new or bool(known and known.new)
            )
        return list(hits.values())

    def _fold_one(self, rule: _FleetRule, signal: Signal) -> tuple[_Burst | None, bool]:
        window = rule.keys.touch(signal.key, _KeyWindow)
        signal_id = f"{signal.hostname}\x1f{signal.evidence[0]}" if signal.evidence else None
        item = _Item(
            signal.last_ts,
            signal.hostname,
            signal.count,
            tuple(signal.evidence),
            signal.first_ts,
            signal_id,
            trust.rank(signal.trust),
        )
        refused = window.add(item, rule.window_s)
        if refused is not None:
            if refused == "late":
                self.late += 1
            else:
                self.duplicates += 1
            return None, False
        spec = rule.spec
        burst = window.burst
        if burst is not None and signal.last_ts - burst.last > rule.cooldown_s:
            burst = window.burst = None
        reached = window.total >= (spec.threshold or 0) and len(window.per_router) >= (
            spec.min_routers or 0
        )
        new = False
        if burst is None:
            if not reached:
                return None, False
            burst = window.burst = self._open(rule, signal.key, window)
            new = True
        else:
            burst.total += signal.count
            if len(burst.devices) < MAX_DEVICES:
                burst.devices.add(signal.hostname)
            burst.trust = min(burst.trust, item.trust)
            evidence = burst.finding.evidence_event_ids
            for event_id in signal.evidence:
                if len(evidence) >= self.evidence_limit:
                    break
                if event_id not in evidence:
                    evidence.append(event_id)
        if reached:
            burst.last = max(burst.last, signal.last_ts)
        self._update(rule, signal.key, burst, signal.last_ts)
        return burst, new

    def _open(self, rule: _FleetRule, key: str, window: _KeyWindow) -> _Burst:
        spec = rule.spec
        start = min(item.first_ts for item in window.items)
        finding = Finding(
            finding_id=finding_id(spec.name, key, start),
            agent_name=spec.agent or "",
            finding_ts_utc=iso_utc(start),
            device_hostname=None,
            device_ip=None,
            severity=spec.severity,
            finding_type=spec.finding_type,
            rule_name=spec.name,
            description="",
            details={},
            evidence_event_ids=window.evidence(self.evidence_limit),
            domain=spec.domain or "other",
        )
        devices = set(list(window.per_router)[:MAX_DEVICES])
        weakest = min(item.trust for item in window.items)
        return _Burst(start, window.newest, window.total, devices, finding, weakest)

    def _update(self, rule: _FleetRule, key: str, burst: _Burst, ts: float) -> None:
        spec = rule.spec
        finding = burst.finding
        group_by = spec.group_by or []
        parts = key.split(KEY_SEPARATOR, max(len(group_by) - 1, 0))
        listed = sorted(burst.devices)[:LISTED_DEVICES]
        details: dict[str, object] = {"key": key}
        for name, value in zip(group_by, parts, strict=False):
            details[name.removeprefix("structured_fields.")] = value
        details.update(
            devices=listed,
            count=burst.total,
            window_s=_number(rule.window_s),
            routers=len(burst.devices),
            min_routers=spec.min_routers,
            threshold=spec.threshold,
            trust=trust.LEVELS[burst.trust],
        )
        finding.details = details
        finding.count = burst.total
        values: dict[str, object] = dict(details)
        values["devices"] = ", ".join(listed) + (
            ", ..." if len(burst.devices) > len(listed) else ""
        )
        finding.description = render(spec.description, values)
        last = iso_utc(ts)
        if finding.last_seen_utc is None or last > finding.last_seen_utc:
            finding.last_seen_utc = last

    def expire(self, now: float) -> int:
        """Drop keys whose window and burst ended before `now` (event time); keys dropped.

        Walks each rule's keys from the least recently seen and stops at the first live one.
        """
        dropped = 0
        for rule in self._rules.values():
            horizon = now - rule.window_s
            while rule.keys:
                key, window = next(iter(rule.keys.items()))
                burst = window.burst
                if window.newest >= horizon or (
                    burst is not None and now - burst.last <= rule.cooldown_s
                ):
                    break
                del rule.keys[key]
                dropped += 1
        return dropped

    def state_size(self) -> tuple[int, int]:
        """(keys held, keys evicted) over every rule."""
        held = sum(len(rule.keys) for rule in self._rules.values())
        evicted = sum(rule.keys.evicted for rule in self._rules.values())
        return held, evicted


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


class FleetEvaluator:
    """Both halves in one process, for `opmas rules test`: each event goes to a collector,
    drained into the fleet rules every `drain_every` events and at the end."""

    def __init__(self, specs: Iterable[RuleSpec], *, drain_every: int = 1000) -> None:
        self.collector = SignalCollector(specs)
        self.rules = FleetRules(self.collector.rules)
        self.drain_every = drain_every
        self.matches: Counter[str] = Counter()  # events counted, per rule
        self._since_drain = 0

    def observe(self, event: ParsedEvent) -> list[Finding]:
        """Findings opened or grown when this event completes a drain period."""
        if not self.collector.rules:
            return []
        self.collector.observe(event)
        self._since_drain += 1
        if self._since_drain < self.drain_every:
            return []
        return self.finish()

    def finish(self) -> list[Finding]:
        """Drain what the collector holds into the fleet rules."""
        self._since_drain = 0
        signals = self.collector.drain()
        for signal in signals:
            self.matches[signal.rule] += signal.count
        return self.rules.fold(signals)
