"""MACHINE_LEARNING (novelty) rules: a log template never seen before for a program.

Online template mining over `message`, a compact Drain: a message is split on whitespace,
variable tokens (numbers, hex, IPv4/IPv6 addresses, MACs, paths with digits, quoted strings,
the value of `key=value` or `key:value`) are masked to `<*>`, and the masked tokens are
compared with the program's templates of the same length and anchor word (the first of the
first two tokens without a digit: `wlan0: AP-ENABLED` is anchored on `AP-ENABLED`). The most
similar template (equal tokens over length, wildcards in the template not counted) takes the
message when the similarity is at least `similarity`, its differing tokens becoming `<*>`;
otherwise the message starts a new template. Seen templates give nothing. Templates are the
fleet's (keyed by program), and a program is learned silently during its first `learning_s`
seconds of event time and its first `learning_events` messages, whichever ends later: a fresh
install (or a replayed file) reports no routine message as new, only kinds that appear once
the program's normal traffic is known.

New templates are reported in groups: one finding per router (`hostname`) and program per
`group_s` seconds, keyed `hostname|program` with the finding id fixed by the group's first
new template; each further new template in the group is an UPDATE hit listing the templates
so far (`details.templates`, the first `max_listed`; `details.count` counts them all), as a
THRESHOLD burst grows.

With `novelty="key"` the rule reports a key never seen before instead (a DHCP client MAC new
to the fleet): the rule learns silently during its own first `learning_s` seconds and
`learning_events` events, then new keys are grouped the same way, one finding per router per
`group_s` listing them (`details.keys`).

With `hold_s`, a new template or key is not reported at once but held that long (processing
time), and the occurrence with the earliest event time while it is held is the one judged:
reported on its router, or learned silently if it falls in the learning time. A pipeline
worker evaluates the sets of messages of its partitions in the order they were fetched, not
in event time, so a kind first logged by one router can be evaluated after the same kind
logged later by another; the hold makes the finding the same as in event-time order as long
as the partitions are less than `hold_s` apart. `due` gives the held hits whose time is up.

State is bounded by `max_templates` (least recently matched evicted, counted) and can be
exported and loaded as plain JSON-able data (held occurrences are not: a restart within
`hold_s` of a new kind misses its info finding).
"""

from __future__ import annotations

import heapq
import re
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from opmas import trust
from opmas.agents.rules.types import KEY_SEPARATOR, MISSING_KEY_PART, Rule, RuleHit, event_time
from opmas.agents.rules.windows import Burst
from opmas.errors import ConfigError
from opmas.messages import ParsedEvent

WILDCARD = "<*>"
NOVELTY_MODES = ("template", "key")
GROUP_S = 3600.0  # new templates of one router and program within this are one finding
MAX_LISTED = 20  # templates or keys a finding lists (its count says how many there are)
SHAPE_CACHE = 1 << 16
STATE_VERSION = 1

_UPTIME = re.compile(r"^\[\s*\d+\.\d+\]")
_QUOTED = re.compile(r"\"[^\"]*\"|'[^']*'")
_VARIABLE = re.compile(
    r"""
    [-+]?\d+(?:\.\d+)*[a-zA-Z%]{0,3}              # 12, -3, 1.5, 10.0.0, 100ms, 42%
    | 0[xX][0-9a-fA-F]+                           # 0x1f
    | [0-9a-fA-F]{8,}                             # long hex: hashes, ids
    | (?:\d{1,3}\.){3}\d{1,3}(?::\d+)?(?:/\d+)?   # IPv4, :port, /prefix
    | [0-9a-fA-F]{2}(?:[:-][0-9a-fA-F]{2}){5}     # MAC
    | [0-9a-fA-F]{0,4}(?::[0-9a-fA-F]{0,4}){2,7}(?:/\d+|%\S+)?  # IPv6, /prefix, %zone
    | \S*/\S*\d\S*                                # a path with digits
    | \S*\d\S*/\S*
    """,
    re.VERBOSE,
)
_LEAD = "([{<'\""
_TRAIL = ")]}>,;:.'\"!?"
_MAX_TOKEN = 200


def _mask_core(core: str) -> str:
    if not core or core == WILDCARD:
        return core
    if len(core) > _MAX_TOKEN:
        return WILDCARD if any(c.isdigit() for c in core) else core
    if _VARIABLE.fullmatch(core):
        return WILDCARD
    for separator in "=:":
        name, sep, value = core.partition(separator)
        if sep and name and value and _VARIABLE.fullmatch(value):
            return f"{name}{separator}{WILDCARD}"
    return core


_MASKED_MAX = 1 << 17


class _Masks(dict[str, str]):
    """token -> masked token: words repeat, so most lookups hit; cleared when full."""

    def __missing__(self, token: str) -> str:
        if len(self) >= _MASKED_MAX:
            self.clear()
        masked = self[token] = _mask_token(token)
        return masked


_MASKED = _Masks()


def mask_token(token: str) -> str:
    """The token with a variable core replaced by `<*>`, surrounding punctuation kept."""
    return _MASKED[token]


def _mask_token(token: str) -> str:
    start, end = 0, len(token)
    while start < end and token[start] in _LEAD:
        start += 1
    while end > start and token[end - 1] in _TRAIL:
        end -= 1
    core = token[start:end]
    masked = _mask_core(core)
    return token if masked is core else token[:start] + masked + token[end:]


def tokenize(message: str) -> list[str]:
    """The message's masked tokens: the kernel's `[ uptime]` prefix and quoted strings
    first (an uptime of 5 or 6 digits splits differently), then each whitespace token."""
    return list(_masked(message))


def _masked(message: str) -> tuple[str, ...]:
    """`tokenize` as a tuple: the shape of a message, looked up as it is."""
    if message.startswith("["):
        message = _UPTIME.sub(f"[{WILDCARD}]", message, count=1)
    if "'" in message or '"' in message:
        message = _QUOTED.sub(WILDCARD, message)
    return tuple(map(_MASKED.__getitem__, message.split()))  # a C loop; misses are masked


@dataclass(slots=True)
class Template:
    """A mined template: its tokens, the key (program) it belongs to, when first seen."""

    key: str
    tokens: list[str]
    first_seen: float
    count: int = 1

    @property
    def text(self) -> str:
        return " ".join(self.tokens)


@dataclass(slots=True)
class Held:
    """A new template or key waiting `hold_s` for an occurrence with an earlier event time."""

    text: str  # the template as first met (not as it generalised meanwhile), or the key
    key: str  # the program (novelty="key": the key)
    event: ParsedEvent  # the earliest occurrence so far
    ts: float  # its event time
    since: float  # monotonic time it was first held


@dataclass(slots=True)
class NoveltyGroup:
    """The new templates (or keys) of one router and program within `group_s`: one finding."""

    burst: Burst
    items: list[str] = field(default_factory=list)  # the first `max_listed`, in order


def _note_time(early: list[float], ts: float, k: int) -> None:
    """Keep the `k` smallest event times met in `early` (negated, a heap)."""
    if k <= 0:
        return
    if len(early) < k:
        heapq.heappush(early, -ts)
    elif -early[0] > ts:
        heapq.heapreplace(early, -ts)


def _among_first(early: list[float], ts: float, k: int) -> bool:
    """Whether `ts` is among the first `k` event times met (all are, while fewer are met)."""
    return k > 0 and (len(early) < k or ts <= -early[0])


def _heap(times: object) -> list[float]:
    if not isinstance(times, list):
        raise TypeError("event times must be a list")
    heap = [-float(t) for t in times]
    heapq.heapify(heap)
    return heap


def _anchor(token: str) -> bool:
    return WILDCARD not in token and not any(c.isdigit() for c in token)


def _group(tokens: Sequence[str]) -> tuple[int, str]:
    """Where a template lives: token count and its first constant word among the first two
    (`wlan0: AP-ENABLED` lives under `AP-ENABLED`, `[<*>] br-lan: ...` under `br-lan:`)."""
    return len(tokens), next((t for t in tokens[:2] if _anchor(t)), WILDCARD)


def _similarity(template: Sequence[str], tokens: Sequence[str]) -> tuple[float, int]:
    same = params = 0
    for mine, theirs in zip(template, tokens, strict=True):
        if mine == theirs:
            same += 1
        elif mine == WILDCARD:
            params += 1
    return same / len(tokens), params


class NoveltyRule(Rule):
    """A message whose template is new for its program (`group_by`, default process_name)."""

    def __init__(
        self,
        name: str,
        conditions: Sequence[object] = (),
        *,
        group_by: Sequence[str] = ("process_name",),
        max_templates: int = 50_000,
        similarity: float = 0.5,
        warmup_events: int = 0,
        learning_s: float = 0.0,
        novelty: str = "template",
        max_tokens: int = 200,
        learning_events: int = 0,
        group_s: float = GROUP_S,
        max_listed: int = MAX_LISTED,
        evidence_limit: int = 20,
        hold_s: float = 0.0,
    ) -> None:
        super().__init__(name, conditions, group_by, evidence_limit)
        if hold_s < 0:
            raise ConfigError(f"rule {name!r}: hold_s must not be negative")
        self.hold_s = float(hold_s)
        # id of a template (novelty="key": the key) -> its held occurrence, oldest hold first
        self._held: dict[int | str, Held] = {}
        if not 0 < similarity <= 1:
            raise ConfigError(f"rule {name!r}: similarity must be in (0, 1]")
        if max_templates < 1:
            raise ConfigError(f"rule {name!r}: max_templates must be at least 1")
        if isinstance(warmup_events, bool) or not isinstance(warmup_events, int):
            raise ConfigError(f"rule {name!r}: warmup_events must be an integer")
        if warmup_events < 0:
            raise ConfigError(f"rule {name!r}: warmup_events must not be negative")
        if max_tokens < 1:
            raise ConfigError(f"rule {name!r}: max_tokens must be at least 1")
        if learning_s < 0:
            raise ConfigError(f"rule {name!r}: learning_s must not be negative")
        if isinstance(learning_events, bool) or not isinstance(learning_events, int):
            raise ConfigError(f"rule {name!r}: learning_events must be an integer")
        if learning_events < 0:
            raise ConfigError(f"rule {name!r}: learning_events must not be negative")
        if not group_s > 0:
            raise ConfigError(f"rule {name!r}: group_s must be positive")
        if max_listed < 1:
            raise ConfigError(f"rule {name!r}: max_listed must be at least 1")
        if novelty not in NOVELTY_MODES:
            raise ConfigError(f"rule {name!r}: novelty must be one of {list(NOVELTY_MODES)}")
        self.novelty = novelty
        self._keys: OrderedDict[str, None] = OrderedDict()  # novelty="key": keys seen
        self._rule_first: float | None = None
        self.learning_s = float(learning_s)
        self.learning_events = learning_events
        self.group_s = float(group_s)
        self.max_listed = max_listed
        # key -> event time its first message was seen (bounded like the templates)
        self._first_seen: OrderedDict[str, float] = OrderedDict()
        # key -> messages seen, up to learning_events (bounded like the templates)
        # key -> the event times of its first `learning_events` messages in event-time order
        # (the smallest met so far, negated: a heap whose top is the latest of them)
        self._early: OrderedDict[str, list[float]] = OrderedDict()
        self._rule_early: list[float] = []  # novelty="key": the same over the rule
        # "hostname|program" (novelty="key": hostname) -> its open group, least recent first
        self._groups: OrderedDict[str, NoveltyGroup] = OrderedDict()
        # (key, masked tokens) -> its template: most messages repeat a known shape exactly
        self._shapes: dict[tuple[str, tuple[str, ...]], Template] = {}
        self.similarity = float(similarity)
        self.max_templates = max_templates
        self.warmup_events = warmup_events
        self.max_tokens = max_tokens
        self.seen_events = 0
        self.evicted = 0
        # templates by identity, least recently matched first
        self._lru: OrderedDict[int, Template] = OrderedDict()
        # key -> (token count, anchor word) -> templates
        self._index: dict[str, dict[tuple[int, str], list[Template]]] = {}

    def __len__(self) -> int:
        return len(self._lru)

    def group_key(self, event: ParsedEvent) -> str:
        """The program key: group_by values joined by `|`, a missing part written as `-`."""
        if self._key_part is not None:
            value = self._key_part(event)
            return (
                value
                if isinstance(value, str)
                else MISSING_KEY_PART
                if value is None
                else str(value)
            )
        parts = [
            v if isinstance(v := get(event), str) else MISSING_KEY_PART if v is None else str(v)
            for get in self._key_parts
        ]
        return KEY_SEPARATOR.join(parts) if parts else "*"

    def templates(self, program: str) -> list[str]:
        """The key's templates as text, in the order they were first seen."""
        groups = self._index.get(program, {})
        found = [t for group in groups.values() for t in group]
        return [t.text for t in sorted(found, key=lambda t: t.first_seen)]

    def _tokens(self, message: str) -> tuple[str, ...]:
        tokens = _masked(message)
        if len(tokens) > self.max_tokens:
            tokens = (*tokens[: self.max_tokens - 1], WILDCARD)
        return tokens

    def learn(self, key: str, message: str, ts: float) -> Template | None:
        """Fold a message into the key's templates; returns the template if it is new."""
        template, new = self._fold(key, message, ts)
        return template if new else None

    def _fold(self, key: str, message: str, ts: float) -> tuple[Template | None, bool]:
        """The template the message folds into (None for an empty message), and whether it
        is new."""
        tokens = self._tokens(message)
        if not tokens:
            return None, False
        shape = (key, tokens)
        known = self._shapes.get(shape)
        if known is not None and self._lru.get(id(known)) is known:  # seen this exact shape
            known.count += 1
            self._lru.move_to_end(id(known))
            return known, False
        if len(self._shapes) >= SHAPE_CACHE:
            self._shapes.clear()
        groups = self._index.setdefault(key, {})
        group = groups.setdefault(_group(tokens), [])
        best: Template | None = None
        best_score = (-1.0, -1)
        for template in group:
            score = _similarity(template.tokens, tokens)
            if score > best_score:
                best, best_score = template, score
        if best is not None and best_score[0] >= self.similarity:
            for i, (mine, theirs) in enumerate(zip(best.tokens, tokens, strict=True)):
                if mine != theirs:
                    best.tokens[i] = WILDCARD
            best.count += 1
            self._lru.move_to_end(id(best))
            self._shapes[shape] = best
            return best, False
        template = Template(key=key, tokens=list(tokens), first_seen=ts)
        self._add(template, group)
        self._shapes[shape] = template
        return template, True

    def _add(self, template: Template, group: list[Template]) -> None:
        group.append(template)
        self._lru[id(template)] = template
        while len(self._lru) > self.max_templates:
            _, old = self._lru.popitem(last=False)
            self._unindex(old)
            self._held.pop(id(old), None)
            self.evicted += 1

    def _unindex(self, template: Template) -> None:
        groups = self._index[template.key]
        index = _group(template.tokens)
        group = groups[index]
        group.remove(template)
        if not group:
            del groups[index]
            if not groups:
                del self._index[template.key]

    def evaluate(self, event: ParsedEvent) -> list[RuleHit]:
        if not event.message or not self.matches(event):
            return []
        key = self.group_key(event)
        ts = event_time(event)
        if self.novelty == "key":
            return self._new_key(key, ts, event)
        self._note(key, ts)
        template, new = self._fold(key, event.message, ts)
        self.seen_events += 1
        if template is None:
            return []
        if not new:
            self._earlier(id(template), event, ts)
            return []
        first = self._first_seen.get(key, ts)
        if self.seen_events <= self.warmup_events or ts < first + self.learning_s:
            return []  # learned silently (an earlier first message only makes that surer)
        return self._new(id(template), template.text, key, event, ts)

    def _new(
        self, ident: int | str, text: str, key: str, event: ParsedEvent, ts: float
    ) -> list[RuleHit]:
        """The hit of a new template or key: now, or once `hold_s` has passed (`due`)."""
        held = Held(text, key, event, ts, time.monotonic())
        if self.hold_s:
            self._held[ident] = held
            return []
        hit = self._judged(held)
        return [] if hit is None else [hit]

    def _earlier(self, ident: int | str, event: ParsedEvent, ts: float) -> None:
        """A held template or key seen again: an occurrence with an earlier event time takes
        its place (whether it falls in the learning is judged when the hold ends)."""
        held = self._held.get(ident)
        if held is not None and ts < held.ts:
            held.event, held.ts = event, ts

    def _judged(self, held: Held) -> RuleHit | None:
        """The hit of a held kind, or None if it turned out to fall in the learning: before
        the end of the learning time of the earliest message met since, or among the first
        `learning_events` messages in event time of those met since (other partitions'
        messages met meanwhile count, as in event-time order)."""
        if self._learning_at(held.key, held.ts):
            return None
        event = held.event
        host = event.hostname or MISSING_KEY_PART
        group = host if self.novelty == "key" else f"{host}{KEY_SEPARATOR}{self.group_key(event)}"
        return self._grouped(group, held.text, held.ts, event.event_id, trust.rank(event.trust))

    def due(self, now: float, *, flush: bool = False) -> list[tuple[RuleHit, ParsedEvent]]:
        """The held hits whose `hold_s` has passed at monotonic time `now` (all with `flush`),
        each with the event it reports, in the order they were held."""
        released: list[tuple[RuleHit, ParsedEvent]] = []
        while self._held:
            ident, held = next(iter(self._held.items()))
            if not flush and now - held.since < self.hold_s:
                break
            del self._held[ident]
            hit = self._judged(held)
            if hit is not None:
                released.append((hit, held.event))
        return released

    def _new_key(self, key: str, ts: float, event: ParsedEvent) -> list[RuleHit]:
        self.seen_events += 1
        if self._rule_first is None or ts < self._rule_first:
            self._rule_first = ts
        _note_time(self._rule_early, ts, max(self.warmup_events, self.learning_events))
        if key in self._keys:
            self._keys.move_to_end(key)
            self._earlier(key, event, ts)
            return []
        self._keys[key] = None
        if len(self._keys) > self.max_templates:
            old, _ = self._keys.popitem(last=False)
            self._held.pop(old, None)
            self.evicted += 1
        if ts < self._rule_first + self.learning_s:
            return []  # learned silently (an earlier first event only makes that surer)
        return self._new(key, key, key, event, ts)

    def _grouped(
        self, group_key: str, item: str, ts: float, event_id: str, trust_rank: int
    ) -> RuleHit:
        """The hit of a new template or key: NEW for the first of its group, else UPDATE."""
        group = self._groups.get(group_key)
        new = group is None or not -self.group_s < ts - group.burst.start < self.group_s
        if group is None or new:
            evidence: deque[str] = deque(maxlen=self.evidence_limit)
            group = NoveltyGroup(Burst(start=ts, last=ts, total=0, evidence=evidence))
            self._groups[group_key] = group
            if len(self._groups) > self.max_templates:
                self._groups.popitem(last=False)
        self._groups.move_to_end(group_key)
        burst = group.burst
        burst.total += 1
        burst.last = max(burst.last, ts)
        if len(group.items) < self.max_listed:
            group.items.append(item)
        if len(burst.evidence) < self.evidence_limit:
            burst.evidence.append(event_id)
        burst.trust = min(burst.trust, trust_rank)
        hit = self._hit(new, group_key, burst.total, burst, ts, burst.evidence)
        listed = "keys" if self.novelty == "key" else "templates"
        return replace(hit, details={"novelty": self.novelty, listed: list(group.items)})

    def _learning_at(self, key: str, ts: float) -> bool:
        """Whether a message of `key` at `ts` falls in the learning, as far as the messages
        met so far tell: before the end of the learning time, or among the first
        `learning_events` in event time (novelty="key": the rule's, `key` unused)."""
        if self.novelty == "key":
            first = self._rule_first if self._rule_first is not None else ts
            k = max(self.warmup_events, self.learning_events)
            return ts < first + self.learning_s or _among_first(self._rule_early, ts, k)
        first = self._first_seen.get(key, ts)
        if ts < first + self.learning_s:
            return True
        early = self._early.get(key)
        return bool(self.learning_events) and (
            early is None or _among_first(early, ts, self.learning_events)
        )

    def _note(self, key: str, ts: float) -> None:
        """Note a message of the program at `ts`: its first time, its first messages."""
        first = self._first_seen.get(key)
        if first is None:
            self._first_seen[key] = ts
            if len(self._first_seen) > self.max_templates:
                self._first_seen.popitem(last=False)
        elif ts < first:
            self._first_seen[key] = ts
        if self.learning_events:
            early = self._early.get(key)
            if early is None:
                early = self._early[key] = []
                if len(self._early) > self.max_templates:
                    self._early.popitem(last=False)
            _note_time(early, ts, self.learning_events)

    def expire(self, now: float) -> int:
        """Forget groups that closed before `now` (event time); returns how many."""
        dropped = 0
        while self._groups:
            key, group = next(iter(self._groups.items()))
            if now - group.burst.start < self.group_s:
                break
            del self._groups[key]
            dropped += 1
        return dropped

    def state_size(self) -> tuple[int, int]:
        return len(self._lru) + len(self._keys) + len(self._groups) + len(self._held), self.evicted

    def seed(self, messages: Iterable[tuple[str, str]], ts: float = 0.0) -> int:
        """Learn `(program, message)` pairs without hits; returns how many templates were new."""
        return sum(self.learn(key, message, ts) is not None for key, message in messages)

    def export(self) -> dict[str, Any]:
        """The mined templates as JSON-able data, least recently matched first."""
        return {
            "version": STATE_VERSION,
            "templates": [
                {"key": t.key, "template": t.text, "first_seen": t.first_seen, "count": t.count}
                for t in self._lru.values()
            ],
            "first_seen": dict(self._first_seen),
            "keys": list(self._keys),
            "rule_first": self._rule_first,
            "early": {key: sorted(-t for t in times) for key, times in self._early.items()},
            "rule_early": sorted(-t for t in self._rule_early),
            "groups": [
                {
                    "key": key,
                    "start": g.burst.start,
                    "last": g.burst.last,
                    "total": g.burst.total,
                    "items": g.items,
                    "evidence": list(g.burst.evidence),
                    "trust": g.burst.trust,
                }
                for key, g in self._groups.items()
            ],
        }

    def load(self, state: Mapping[str, Any]) -> None:
        """Replace the templates with exported ones; raises ConfigError if malformed."""
        if state.get("version") != STATE_VERSION or not isinstance(state.get("templates"), list):
            raise ConfigError(f"rule {self.name!r}: unsupported novelty state")
        loaded: list[Template] = []
        for item in state["templates"]:
            try:
                template = Template(
                    key=str(item["key"]),
                    tokens=str(item["template"]).split(),
                    first_seen=float(item["first_seen"]),
                    count=int(item.get("count", 1)),
                )
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise ConfigError(f"rule {self.name!r}: bad template in state: {exc}") from None
            if template.tokens:
                loaded.append(template)
        first_seen = state.get("first_seen", {})
        if not isinstance(first_seen, dict):
            raise ConfigError(f"rule {self.name!r}: bad first_seen in state")
        self._lru.clear()
        self._shapes.clear()
        self._index.clear()
        try:
            ordered = sorted((float(ts), str(key)) for key, ts in first_seen.items())
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"rule {self.name!r}: bad first_seen in state: {exc}") from None
        self._first_seen = OrderedDict((key, ts) for ts, key in ordered)
        keys, rule_first = state.get("keys", []), state.get("rule_first")
        if not isinstance(keys, list) or not isinstance(rule_first, int | float | None):
            raise ConfigError(f"rule {self.name!r}: bad keys in state")
        self._keys = OrderedDict((str(key), None) for key in keys[-self.max_templates :])
        self._rule_first = None if rule_first is None else float(rule_first)
        self._load_groups(state)
        for template in loaded:
            groups = self._index.setdefault(template.key, {})
            self._add(template, groups.setdefault(_group(template.tokens), []))

    def _load_groups(self, state: Mapping[str, Any]) -> None:
        """The learning counts and open groups of an export (absent from older exports)."""
        early, groups = state.get("early", {}), state.get("groups", [])
        if not isinstance(early, dict) or not isinstance(groups, list):
            raise ConfigError(f"rule {self.name!r}: bad groups in state")
        try:
            self._early = OrderedDict((str(k), _heap(v)) for k, v in early.items())
            self._rule_early = _heap(state.get("rule_early", []))
            self._groups = OrderedDict()
            for item in groups:
                evidence = deque(map(str, item["evidence"]), maxlen=self.evidence_limit)
                burst = Burst(
                    float(item["start"]), float(item["last"]), int(item["total"]), evidence
                )
                burst.trust = min(max(int(item.get("trust", 0)), 0), 2)  # older: untrusted
                items = [str(i) for i in item["items"]][: self.max_listed]
                self._groups[str(item["key"])] = NoveltyGroup(burst, items)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"rule {self.name!r}: bad groups in state: {exc}") from None
