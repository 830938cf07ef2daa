"""A set of compiled rules routed by event domain, and the findings their hits make.

Used alike by a running agent and by `opmas rules test`: `RuleSet.evaluate(event)` gives the
hits of the rules reading the event's domain; `FindingBook.fold` turns each hit into the
finding it opens or grows (one finding per burst, its count and evidence updated).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import msgspec

from opmas import trust
from opmas.agents.pack import DEFAULT_MAX_KEYS, RuleSpec, build_rule
from opmas.agents.rules import RuleHit
from opmas.agents.rules.conditions import as_number
from opmas.agents.rules.types import Rule
from opmas.errors import ConfigError
from opmas.messages import Finding, Flag, ParsedEvent, iso_utc

_Evaluate = Callable[[ParsedEvent], list[RuleHit]]
EVIDENCE_LIMIT = 20  # event ids kept per finding, the first ones of the burst
STATEFUL_TYPES = ("THRESHOLD", "CORRELATION")  # rules whose windows a replay rebuilds
MAX_ROUTES = 10_000


def fingerprint(spec: RuleSpec) -> bytes:
    """The rule's definition as bytes: equal fingerprints keep a rule's state on reload."""
    data = spec.to_dict()
    data.pop("examples", None)
    return msgspec.json.encode(data, order="sorted")


@dataclass(eq=False)
class LoadedRule:
    """A rule ready to run: its spec, its compiled engine and its row id in `agent_rules`."""

    spec: RuleSpec
    rule: Rule
    fingerprint: bytes
    rule_id: int | None = None
    events: frozenset[str] | None = None  # the `event` values it can match; None: any

    def __post_init__(self) -> None:
        self.events = required_events(self.spec)


def _event_names(conditions: Iterable[object]) -> frozenset[str] | None:
    """The values the `event` field must have for ANDed conditions to hold; None: any."""
    for condition in conditions:
        if not isinstance(condition, Mapping):
            continue
        if condition.get("field") not in ("event", "structured_fields.event"):
            continue
        operator, value = condition.get("operator"), condition.get("value")
        values = [value] if operator == "==" else value if operator == "in" else None
        if isinstance(values, list) and all(
            isinstance(v, str) and as_number(v) is None for v in values
        ):
            return frozenset(values)
    return None


def required_events(spec: RuleSpec) -> frozenset[str] | None:
    """The `event` values an event needs for the rule to look at it at all; None: any event
    (a rule with no such condition, or a step or excuse without one)."""
    if spec.type == "CORRELATION":
        per_step = [_event_names(step.conditions) for step in spec.steps or ()]
        known = [n for n in per_step if n is not None]
        return frozenset().union(*known) if per_step and len(known) == len(per_step) else None
    names = _event_names(spec.conditions)
    if names is not None and spec.unless_preceded_by is not None:
        excuse = _event_names(spec.unless_preceded_by.conditions)
        return None if excuse is None else names | excuse
    return names


@dataclass
class RuleSet:
    """Compiled rules indexed by the domain of the events they read."""

    rules: list[LoadedRule] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # rule name -> why it is not running

    def __post_init__(self) -> None:
        self._by_domain: dict[str, list[LoadedRule]] = {}
        for loaded in self.rules:
            for domain in loaded.spec.reads:
                self._by_domain.setdefault(domain, []).append(loaded)
        # (domain, event name) -> the rules that can match such an event, in rule order,
        # each with its bound `evaluate` (looked up once, not per event)
        self._routes: dict[tuple[str, str | None], list[tuple[LoadedRule, _Evaluate]]] = {}

    @classmethod
    def build(
        cls,
        specs: Iterable[RuleSpec],
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
        previous: RuleSet | None = None,
        rule_ids: dict[str, int] | None = None,
    ) -> RuleSet:
        """Compile the enabled specs; a rule unchanged since `previous` keeps its state.

        A spec that does not build is left out and named in `skipped` with the reason.
        """
        kept = {(r.spec.name, r.fingerprint): r for r in previous.rules} if previous else {}
        ids = rule_ids or {}
        rules: list[LoadedRule] = []
        skipped: dict[str, str] = {}
        for spec in specs:
            if not spec.enabled or spec.type == "FLEET":  # FLEET: opmas.agents.fleet runs them
                continue
            print_ = fingerprint(spec)
            old = kept.get((spec.name, print_))
            if old is not None:
                old.rule_id = ids.get(spec.name, old.rule_id)
                rules.append(old)
                continue
            try:
                rule = build_rule(spec, max_keys=max_keys)
            except ConfigError as exc:
                skipped[spec.name] = str(exc)
                continue
            rules.append(LoadedRule(spec, rule, print_, ids.get(spec.name)))
        return cls(rules, skipped)

    @property
    def domains(self) -> tuple[str, ...]:
        """The event domains some rule reads, sorted."""
        return tuple(sorted(self._by_domain))

    @property
    def replay_window_s(self) -> float:
        """How much history rebuilds every window: the longest THRESHOLD/CORRELATION window."""
        return max(
            (r.spec.window_s or 0.0 for r in self.rules if r.spec.type in STATEFUL_TYPES),
            default=0.0,
        )

    def evaluate(self, event: ParsedEvent) -> list[tuple[LoadedRule, RuleHit]]:
        """The hits of every rule reading the event's domain, in rule order.

        A rule that requires particular values of the `event` field is not even asked about
        other events (it could not match them): most events concern one or two rules.
        """
        name = event.structured_fields.get("event")
        route = (event.log_source_type, name if isinstance(name, str) else None)
        rules = self._routes.get(route)
        if rules is None:
            rules = self._route(route)
        found: list[tuple[LoadedRule, RuleHit]] = []
        for loaded, evaluate in rules:
            hits = evaluate(event)
            if hits:  # most events hit nothing: no loop over an empty list
                found.extend((loaded, hit) for hit in hits)
        return found

    def _route(self, route: tuple[str, str | None]) -> list[tuple[LoadedRule, _Evaluate]]:
        domain, name = route
        rules: list[tuple[LoadedRule, _Evaluate]] = [
            (loaded, loaded.rule.evaluate)
            for loaded in self._by_domain.get(domain, ())
            if loaded.events is None or name in loaded.events
        ]
        if len(self._routes) >= MAX_ROUTES:  # event names are few; this only bounds abuse
            self._routes.clear()
        self._routes[route] = rules
        return rules

    def expire(self, now: float) -> int:
        """Drop every rule's state that ended before `now` (event time); returns keys dropped."""
        return sum(loaded.rule.expire(now) for loaded in self.rules)

    def due(
        self, now: float, *, flush: bool = False
    ) -> list[tuple[LoadedRule, RuleHit, ParsedEvent]]:
        """The hits rules held back until monotonic time `now` (all with `flush`)."""
        return [
            (loaded, hit, event)
            for loaded in self.rules
            for hit, event in loaded.rule.due(now, flush=flush)
        ]

    def state_size(self) -> tuple[int, int]:
        """(keys held, keys evicted) over every rule."""
        keys = evicted = 0
        for loaded in self.rules:
            held, dropped = loaded.rule.state_size()
            keys += held
            evicted += dropped
        return keys, evicted


class _SafeFields(dict[str, object]):
    def __missing__(self, key: str) -> str:
        return "?"


def render(template: str, values: dict[str, object]) -> str:
    """`template` with {placeholders} from `values`; unknown ones become `?`."""
    try:
        return template.format_map(_SafeFields(values))
    except (ValueError, IndexError, AttributeError):
        return template


def _number(value: float | None) -> float | int | None:
    if value is None:
        return None
    return int(value) if float(value).is_integer() else value


@dataclass
class _Open:
    finding: Finding
    values: dict[str, object]


class FindingBook:
    """The findings of open bursts, so that each hit opens one or grows it.

    Bounded: past `max_open` findings the least recently hit is forgotten; a later hit of
    its burst starts from that hit's own event (same finding id, so readers still merge it).
    """

    def __init__(
        self,
        max_open: int = 100_000,
        evidence_limit: int = EVIDENCE_LIMIT,
        on_evict: Callable[[Finding], None] | None = None,
    ) -> None:
        self.max_open = max_open
        self.evidence_limit = evidence_limit
        self.on_evict = on_evict  # given each finding forgotten to stay under max_open
        self._open: OrderedDict[str, _Open] = OrderedDict()

    def __len__(self) -> int:
        return len(self._open)

    def fold(
        self, spec: RuleSpec, hit: RuleHit, event: ParsedEvent, domain: str
    ) -> tuple[Finding, bool]:
        """The finding after this hit, and whether the hit opened it."""
        entry = self._open.get(hit.finding_id)
        new = entry is None
        if entry is None:
            entry = self._open[hit.finding_id] = _new(spec, hit, event, domain)
            if len(self._open) > self.max_open:
                _, forgotten = self._open.popitem(last=False)
                if self.on_evict is not None:
                    self.on_evict(forgotten.finding)
        else:
            self._open.move_to_end(hit.finding_id)
        finding, values = entry.finding, entry.values
        details = finding.details
        count = max(_int(details.get("count")), hit.total)
        details["count"] = values["count"] = finding.count = count
        details["window_count"] = max(_int(details.get("window_count")), hit.count)
        if spec.distinct:  # "{count} ports": the distinct values, not the events
            values["count"] = details["window_count"]
        if hit.details:  # a novelty group: the templates or keys it lists so far
            details.update(hit.details)
        prior = details.get("trust")  # only ever weakens: the weakest of all its evidence
        details["trust"] = hit.trust if prior is None else trust.weakest((str(prior), hit.trust))
        finding.description = render(spec.description, values)
        last = _iso_utc(hit.event_ts)
        if finding.last_seen_utc is None or last > finding.last_seen_utc:
            finding.last_seen_utc = last
        evidence = finding.evidence_event_ids
        for event_id in hit.evidence:
            if len(evidence) >= self.evidence_limit:
                break
            if event_id not in evidence:
                evidence.append(event_id)
        return finding, new


_iso_utc = lru_cache(maxsize=4096)(iso_utc)  # the hits of a burst share their seconds


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


def _new(spec: RuleSpec, hit: RuleHit, event: ParsedEvent, domain: str) -> _Open:
    values: dict[str, object] = {
        "hostname": event.hostname,
        "process_name": event.process_name,
        "message": event.message,
        **event.structured_fields,
        "key": hit.key,
        "count": hit.count,
        "threshold": spec.threshold,
        "window_s": _number(spec.window_s),
    }
    details: dict[str, Any] = {"key": hit.key, "count": hit.total}
    if spec.window_s is not None:
        details["window_s"] = _number(spec.window_s)
    for name in spec.group_by or ():
        details[name] = values.get(name.removeprefix("structured_fields."))
    if Flag.REPLAY in event.flags:  # `opmas replay` without --notify: nobody is notified
        details["replay"] = True
    finding = Finding(
        finding_id=hit.finding_id,
        agent_name=spec.agent or "",
        finding_ts_utc=iso_utc(hit.event_ts),
        device_hostname=event.hostname,
        device_ip=event.source_ip,
        severity=spec.severity,
        finding_type=spec.finding_type,
        rule_name=spec.name,
        description=render(spec.description, values),
        details=details,
        evidence_event_ids=[],
        domain=domain,
    )
    return _Open(finding, values)


@dataclass(frozen=True)
class RuleMatch:
    """How one event bears on one rule, for `opmas explain`."""

    rule: str
    type: str
    agent: str
    key: str | None
    effect: str

    def render(self) -> str:
        key = f" [key {self.key}]" if self.key else ""
        return f"{self.rule} ({self.type}, {self.agent}): {self.effect}{key}"


def explain_rules(event: ParsedEvent, specs: Iterable[RuleSpec]) -> list[RuleMatch]:
    """The rules the event matches or would count towards, with the key it counts under.

    Rules that do not build are left out (`opmas rules test` reports them).
    """
    return RuleExplainer(specs).explain(event)


_ROUTED_TYPES = frozenset(
    ["PATTERN", "THRESHOLD", "CORRELATION", "STATISTICAL", "MACHINE_LEARNING"]
)


class RuleExplainer:
    """`explain_rules` for many events: each rule is compiled once, and an event is only
    shown to the rules reading its domain that can match its `event` field, as in RuleSet."""

    def __init__(self, specs: Iterable[RuleSpec]) -> None:
        self._rules: list[tuple[RuleSpec, Rule, frozenset[str] | None]] = []
        for spec in specs:
            if not spec.enabled:
                continue
            try:
                rule = build_rule(spec, max_keys=1)
            except ConfigError:
                continue
            events = required_events(spec) if spec.type in _ROUTED_TYPES else None
            self._rules.append((spec, rule, events))
        # (domain, event name) -> (spec, rule, what a match does; None: a CORRELATION)
        self._routes: dict[tuple[str, str | None], list[tuple[RuleSpec, Rule, str | None]]] = {}

    def explain(self, event: ParsedEvent) -> list[RuleMatch]:
        """The rules the event matches or would count towards, in rule order."""
        name = event.structured_fields.get("event")
        route = (event.log_source_type, name if isinstance(name, str) else None)
        rules = self._routes.get(route)
        if rules is None:
            rules = self._route(route)
        found: list[RuleMatch] = []
        for spec, rule, effect in rules:
            if effect is None:  # a CORRELATION: which of its steps match
                effect = _effect(spec, rule, event)
                if effect is not None:
                    found.append(RuleMatch(spec.name, spec.type, spec.agent or "", None, effect))
            elif rule.matches(event):
                key = rule.group_key(event)
                found.append(RuleMatch(spec.name, spec.type, spec.agent or "", key, effect))
        return found

    def _route(self, route: tuple[str, str | None]) -> list[tuple[RuleSpec, Rule, str | None]]:
        domain, name = route
        rules = [
            (spec, rule, None if spec.type == "CORRELATION" else _match_effect(spec))
            for spec, rule, events in self._rules
            if domain in spec.reads and (events is None or name in events)
        ]
        if len(self._routes) >= MAX_ROUTES:
            self._routes.clear()
        self._routes[route] = rules
        return rules


def _effect(spec: RuleSpec, rule: Rule, event: ParsedEvent) -> str | None:
    if spec.type == "CORRELATION":
        steps = [
            f"step {n} ({step.name or 'unnamed'})"
            for n, (step, compiled) in enumerate(
                zip(spec.steps or (), getattr(rule, "steps", ()), strict=False), 1
            )
            if compiled.matches(event)
        ]
        return f"matches {', '.join(steps)} of {len(spec.steps or ())}" if steps else None
    return _match_effect(spec) if rule.matches(event) else None


def _match_effect(spec: RuleSpec) -> str:
    """What a matching event does to a rule other than a CORRELATION."""
    if spec.type == "PATTERN":
        return "matches: opens a finding on its own"
    if spec.type == "THRESHOLD":
        what = f"distinct {spec.distinct}" if spec.distinct else "events"
        return f"counts towards {spec.threshold} {what} in {_number(spec.window_s)} s"
    if spec.type == "STATISTICAL":
        return f"counts towards its rate per {_number(spec.bucket_s)} s against its baseline"
    if spec.novelty == "key":
        return "a key never seen before opens a finding"
    return "its message template is checked for novelty"
