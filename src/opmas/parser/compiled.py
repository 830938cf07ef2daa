"""Compiled program parsers: the patterns of one YAML file, ready to match messages.

Patterns are bucketed by the literal they start with, and runs of patterns that share a
required literal sit behind it, so a message is tested against few regexes; results are
memoised per message text, since router logs repeat themselves.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opmas.parser.regexes import Matcher, MatchLike, first_literal
from opmas.parser.spec import ParserSpec, PatternSpec

_KV = re.compile(r"""([A-Za-z_][\w.-]*)=("[^"]*"|'[^']*'|[^\s,]*)""")
_NON_WORD = re.compile(r"[^a-z0-9]+")
_HOLE = re.compile(r"\{([^{}]*)\}")


def event_name(template: str, values: dict[str, Any]) -> str:
    """Fill `{group}` placeholders, then lower-case with non-word runs as `_`."""
    filled = template.format_map(_Blank(values)) if "{" in template else template
    return _NON_WORD.sub("_", filled.lower()).strip("_")


class _Blank(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return ""


def parse_kv(text: str, aliases: dict[str, str], bare_field: str | None) -> dict[str, object]:
    """`key=value` pairs of `text` (keys lower-cased, quotes removed)."""
    fields: dict[str, object] = {}
    for raw_key, value in _KV.findall(text) if "=" in text else ():
        if not value:
            continue
        if value[0] in "\"'" and len(value) >= 2:
            value = value[1:-1]
        key = _KEYS.get(raw_key)
        if key is None:
            if len(_KEYS) >= _CACHE_MAX:
                _KEYS.clear()
            key = _KEYS[raw_key] = raw_key.lower().replace("-", "_").replace(".", "_")
        fields[key] = value
        if aliases and key in aliases:
            fields[aliases[key]] = value
    if bare_field is not None:
        if '"' in text or "'" in text:
            bare = _KV.sub(" ", text).split()
        else:
            bare = [token for token in text.split() if "=" not in token]
        if bare:
            fields[bare_field] = " ".join(bare)
    return fields


_KEYS: dict[str, str] = {}  # raw kv key -> field name; a bounded cache of a pure function
_CACHE_MAX = 4096
_MEMO_MAX = 2048  # distinct messages remembered per parser
_MEMO_TEXT_MAX = 512  # longer messages are not remembered


@dataclass(eq=False)
class CompiledPattern:
    """One pattern, compiled; `fields` turns a match into structured fields."""

    index: int
    spec: PatternSpec
    matcher: Matcher
    lead: str | None  # literal the message must start with
    required: list[str]  # literals the message must contain, longest first
    rules: list[tuple[str, Matcher, str]]
    templated: bool
    delegate: CompiledParser | None = None
    domain: str = "other"  # the pattern's domain, else its parser's (set by CompiledParser)
    event_type: str = "LOG"
    plain: bool = False  # fields are just the named groups
    holes: tuple[str, ...] = ()  # placeholders of a templated event
    _names: dict[Any, str] = field(default_factory=dict, repr=False)

    @property
    def literal(self) -> str | None:
        """The longest literal the message must contain."""
        return self.required[0] if self.required else None

    simple: bool = False  # plain, and no domain rules nor delegate: the engine's fast path

    def fields(self, groups: dict[str, str | Any], program: str) -> dict[str, object]:
        """Structured fields of a match, `event` first; empty groups are left out."""
        spec = self.spec
        values: dict[str, object] = {"event": spec.event}
        if self.plain:
            for key, value in groups.items():
                if value:
                    values[key] = value
            return values
        for key, value in groups.items():
            if value and key[0] != "_":
                values[key] = value
        if spec.kv is not None and groups.get(spec.kv):
            for key, value in parse_kv(groups[spec.kv], spec.kv_aliases, spec.kv_bare).items():
                values.setdefault(key, value)
        if spec.fields:
            values.update(spec.fields)
        for name in spec.lowercase:
            value = values.get(name)
            if isinstance(value, str):
                values[name] = value.lower()
        if self.templated:
            values["event"] = self._event(groups, program)
        return values

    def _event(self, groups: dict[str, str | Any], program: str) -> str:
        """The event name of a templated pattern, cached per placeholder values."""
        holes = self.holes
        key: Any = (
            groups.get(holes[0])
            if len(holes) == 1
            else tuple([program if hole == "program" else groups.get(hole) for hole in holes])
        )
        name = self._names.get(key)
        if name is None:
            if len(self._names) >= _CACHE_MAX:
                self._names.clear()
            values = {**groups, "program": program}
            name = self._names[key] = event_name(self.spec.event, values) or self.spec.event
        return name

    def domain_for(self, fields: dict[str, object]) -> str:
        """The domain: the first rule whose field matches, else the pattern's."""
        for name, matcher, domain in self.rules:
            value = fields.get(name)
            if isinstance(value, str) and matcher.match(value) is not None:
                return domain
        return self.domain


_Entry = tuple[str, Callable[[str], MatchLike | None], "CompiledPattern"]
_Block = tuple[str, list[_Entry]]


def _blocks(patterns: list[CompiledPattern]) -> list[_Block]:
    """Runs of consecutive patterns sharing a required literal, each behind that literal.

    A message lacking a run's shared literal skips the whole run with one substring test;
    order is kept, so the first matching pattern is the same as trying them one by one.
    """
    blocks: list[_Block] = []
    run: list[CompiledPattern] = []
    shared: set[str] = set()
    for pattern in [*patterns, None]:
        common = shared & set(pattern.required) if pattern is not None and run else set()
        if pattern is not None and (common or not run):
            run.append(pattern)
            shared = common if len(run) > 1 else set(pattern.required)
            continue
        if run:
            gate = max(shared, key=len) if shared else ""
            blocks.append((gate, [(_rest(p.required, gate), p.matcher.match, p) for p in run]))
        run, shared = ([pattern], set(pattern.required)) if pattern is not None else ([], set())
    return blocks


def _rest(required: list[str], gate: str) -> str:
    """The literal worth testing once `gate` is known present ("" when none adds anything)."""
    for literal in required:
        if literal != gate and literal not in gate:
            return literal
    return ""


@dataclass(eq=False)
class CompiledParser:
    """One parser file, compiled: dispatch target for its programs.

    Patterns whose regex starts with a literal are filed under its first two characters,
    so a message is only tried against patterns that can match its start (plus the
    patterns that start with a group, in file order).
    """

    spec: ParserSpec
    path: Path
    shipped: bool
    prefix: Matcher | None
    patterns: list[CompiledPattern] = field(default_factory=list)
    _buckets: dict[str, list[_Block]] = field(default_factory=dict, repr=False)
    _unkeyed: list[_Block] = field(default_factory=list, repr=False)
    _memo: dict[str, tuple[CompiledPattern | None, dict[str, str | Any]]] = field(
        default_factory=dict, repr=False
    )

    name: str = ""  # the versioned parser name (`hostapd_parser_v1`), set by index()
    prefix_lead: str = ""  # first character(s) the prefix regex requires, set by index()

    def index(self) -> None:
        """Resolve defaults and build the leading-literal buckets, once patterns are final."""
        self.name = self.spec.parser_name
        if self.spec.prefix is not None:
            self.prefix_lead = first_literal(self.spec.prefix)
        for pattern in self.patterns:
            spec = pattern.spec
            pattern.domain = spec.domain or self.spec.domain
            pattern.event_type = spec.event_type or self.spec.event_type
            pattern.plain = not (
                pattern.templated
                or spec.kv
                or spec.fields
                or spec.lowercase
                or any(name[0] == "_" for name in pattern.matcher.groupindex)
            )
            holes = tuple(_HOLE.findall(spec.event))
            pattern.holes = ("program", *holes) if holes == ("program",) else holes
            pattern.simple = pattern.plain and not pattern.rules and spec.delegate is None
        keys = {p.lead[:2] for p in self.patterns if p.lead is not None}
        self._unkeyed = _blocks([p for p in self.patterns if p.lead is None])
        self._buckets = {
            key: _blocks([p for p in self.patterns if p.lead is None or p.lead[:2] == key])
            for key in keys
        }

    def first_match(self, text: str) -> tuple[CompiledPattern | None, dict[str, str | Any]]:
        """The first pattern matching `text`, and its named groups (shared: do not modify).

        Results are memoised per message text: router logs repeat the same messages a lot.
        """
        memo = self._memo
        found_before = memo.get(text)
        if found_before is not None:
            return found_before
        result: tuple[CompiledPattern | None, dict[str, str | Any]] = (None, {})
        for gate, entries in self._buckets.get(text[:2], self._unkeyed):
            if gate in text:
                for literal, match, pattern in entries:
                    if literal in text:
                        found = match(text)
                        if found is not None:
                            result = (pattern, found.groupdict())
                            break
                else:
                    continue
                break
        if len(text) <= _MEMO_TEXT_MAX:
            if len(memo) >= _MEMO_MAX:
                memo.clear()
            memo[text] = result
        return result

    def trace_match(
        self, text: str, trace: list[tuple[int, str]]
    ) -> tuple[CompiledPattern | None, dict[str, str | Any]]:
        """`first_match`, noting in `trace` why each earlier pattern was passed over."""
        for pattern in self.patterns:
            if pattern.lead is not None and not text.startswith(pattern.lead[:2]):
                trace.append((pattern.index, f"skipped: message does not start {pattern.lead!r}"))
                continue
            if pattern.literal is not None and pattern.literal not in text:
                trace.append((pattern.index, f"skipped: required text {pattern.literal!r} absent"))
                continue
            match = pattern.matcher.match(text)
            if match is not None:
                return pattern, match.groupdict()
            trace.append((pattern.index, "regex did not match"))
        return None, {}
