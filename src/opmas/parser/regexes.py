"""Regexes of program parsers: Python `re` for shipped patterns, RE2 for user ones.

RE2 runs in linear time, so no user-written pattern can hang the parser; shipped patterns use
`re`, which is several times faster from Python. `literals` finds the fixed text a pattern
requires, which the compiled parsers test with `in` before running the regex.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from typing import Any, Protocol

import re2  # type: ignore[import-untyped]  # google-re2 ships no type hints

_SRE_PARSER: Any = importlib.import_module("re._parser")  # private: no stub, stable since 3.11
_SRE: Any = importlib.import_module("re._constants")
_RE2_ANCHOR_START = re2._re2.RE2.Anchor.ANCHOR_START
RegexError = (re.error, re2.error)


class MatchLike(Protocol):
    """The part of a regex match the engine uses (re.Match or an RE2 match)."""

    def groupdict(self) -> dict[str, str | Any]: ...

    def end(self) -> int: ...


class Matcher(Protocol):
    """A compiled regex matched from the start of a text."""

    @property
    def pattern(self) -> str: ...

    @property
    def groupindex(self) -> Mapping[str, int]: ...

    def match(self, text: str, /) -> MatchLike | None: ...


class Re2Match:
    """A successful RE2 match, decoded from UTF-8 byte spans."""

    __slots__ = ("_data", "_groups", "_spans")

    def __init__(self, data: bytes, spans: list[tuple[int, int]], groups: list[tuple[str, int]]):
        self._data = data
        self._spans = spans
        self._groups = groups

    def groupdict(self) -> dict[str, str | Any]:
        """Named groups; None for a group that did not take part."""
        data, spans = self._data, self._spans
        return {
            name: None if spans[i][0] < 0 else data[spans[i][0] : spans[i][1]].decode()
            for name, i in self._groups
        }

    def end(self) -> int:
        """End of the match, in characters."""
        return len(self._data[: self._spans[0][1]].decode(errors="replace"))


class Re2Pattern:
    """An RE2 regex with a `re`-like `match`; raises re2.error on an unsupported pattern."""

    def __init__(self, pattern: str) -> None:
        options = re2.Options()
        options.log_errors = False
        self.pattern = pattern
        self._regexp = re2.compile(pattern, options)._regexp
        self._groups = [(n.decode(), i) for n, i in self._regexp.NamedCapturingGroups()]
        self.groupindex: dict[str, int] = dict(self._groups)

    def match(self, text: str, /) -> Re2Match | None:
        """Match from the start of `text`."""
        data = text.encode("utf-8", "replace")
        spans = self._regexp.Match(_RE2_ANCHOR_START, data, 0, len(data))
        if spans[0][0] < 0:
            return None
        return Re2Match(data, spans, self._groups)


def compile_regex(pattern: str, *, shipped: bool) -> Matcher:
    """Python `re` for shipped patterns, RE2 for user ones (raises re.error / re2.error)."""
    if shipped:
        return re.compile(pattern)
    return Re2Pattern(pattern)


def literals(pattern: str) -> tuple[str | None, list[str]]:
    """The literal every match of `pattern` starts with, and every literal it contains.

    Literals shorter than two characters are left out; a pattern that ignores case has none.
    The contained literals come longest first.
    """
    try:
        tree = _SRE_PARSER.parse(pattern)
    except re.error:
        return None, []
    if tree.state.flags & re.IGNORECASE:
        return None, []
    items = flatten(tree)
    while items and items[0][0] is _SRE.AT:
        items = items[1:]
    runs: list[str] = []
    run: list[str] = []
    for op, arg in [*items, (None, None)]:
        if op is _SRE.LITERAL:
            run.append(chr(arg))
            continue
        if len(run) >= 2:
            runs.append("".join(run))
        run = []
    lead = runs[0] if runs and items[0][0] is _SRE.LITERAL else None
    return lead, sorted(set(runs), key=len, reverse=True)


def first_literal(pattern: str) -> str:
    """The character every match of `pattern` starts with, or "" when it varies."""
    try:
        items = flatten(_SRE_PARSER.parse(pattern))
    except re.error:
        return ""
    while items and items[0][0] is _SRE.AT:
        items = items[1:]
    if items and items[0][0] is _SRE.LITERAL:
        return chr(items[0][1])
    return ""


def flatten(items: Any) -> list[tuple[Any, Any]]:
    flat: list[tuple[Any, Any]] = []
    for op, arg in items:
        if op is _SRE.SUBPATTERN and not (arg[1] & re.IGNORECASE):
            flat.extend(flatten(arg[3]))
        else:
            flat.append((op, arg))
    return flat
