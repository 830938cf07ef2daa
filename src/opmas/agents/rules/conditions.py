"""Rule conditions `{"field", "operator", "value"}`, validated and compiled into fast predicates.

A missing field and a field whose value is None are the same: they fail every operator but
`exists: false`. Strings compare as strings; a number compares numerically with a number or a
numeric string ("25"). Regexes run on RE2 (linear time; no lookarounds or backreferences).
"""

from __future__ import annotations

import math
import re._constants as sre_constants  # type: ignore[import-not-found]  # no stubs; sre_* warn
import re._parser as sre_parser  # type: ignore[import-not-found]  # no stubs; sre_* warn
import warnings
from collections.abc import Callable, Mapping, Sequence
from operator import attrgetter
from typing import Any

import re2  # type: ignore[import-untyped]  # google-re2 ships no type hints

from opmas.errors import ConfigError
from opmas.messages import ParsedEvent

Predicate = Callable[[ParsedEvent], bool]
Getter = Callable[[ParsedEvent], object]

OPERATORS = frozenset(
    ["==", "!=", ">", ">=", "<", "<=", "in", "not_in", "contains", "startswith", "regex", "exists"]
)
_KEYS = frozenset(["field", "operator", "value"])
_TOP_LEVEL = frozenset(ParsedEvent.__struct_fields__)
_SF = "structured_fields"
# tuples, not `int | float`: a union is built anew each time such an expression runs
_NUMBERS = (int, float)
_SEQUENCES = (list, tuple)


def as_number(value: object) -> float | None:
    """The value as a finite float if it is a number or a numeric string, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, _NUMBERS):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _is_number(value: object) -> bool:
    return isinstance(value, _NUMBERS) and not isinstance(value, bool)


def _descend(value: object, path: Sequence[str]) -> object:
    for part in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def field_getter(field: str) -> Getter:
    """A function reading `field` from an event: attribute, `structured_fields.X`, or bare X."""
    parts = field.split(".")
    if not field or not all(parts):
        raise ConfigError(f"invalid field path {field!r}")
    head, rest = parts[0], parts[1:]
    if head == _SF and rest:
        head, rest = rest[0], rest[1:]
    elif head in _TOP_LEVEL:
        if not rest:
            return attrgetter(head)  # a C call: no lambda frame per event
        return lambda event: _descend(getattr(event, head), rest)
    if not rest:
        return lambda event: event.structured_fields.get(head)
    return lambda event: _descend(event.structured_fields.get(head), rest)


def _equals(expected: object) -> Callable[[object], bool]:
    """Equality with numeric coercion; the returned test is never called with None."""
    if isinstance(expected, bool) or not (_is_number(expected) or isinstance(expected, str)):
        return lambda actual: actual == expected
    expected_number = as_number(expected)
    if _is_number(expected):
        return lambda actual: as_number(actual) == expected_number
    # a string: exact for strings, numeric against an actual number
    return lambda actual: (
        actual == expected
        or (
            expected_number is not None and _is_number(actual) and float(actual) == expected_number  # type: ignore[arg-type]
        )
    )


def _membership(values: list[object]) -> Callable[[object], bool]:
    exact = {v for v in values if v is not None and not isinstance(v, list | dict)}
    numbers = {n for v in values if (n := as_number(v)) is not None}
    plain_numbers = {float(v) for v in values if _is_number(v)}  # type: ignore[arg-type]

    def member(actual: object) -> bool:
        if _is_number(actual):
            return float(actual) in numbers  # type: ignore[arg-type]
        try:
            if actual in exact:
                return True
        except TypeError:  # unhashable (a list or dict field)
            return False
        if not plain_numbers:  # the common case: a list of words
            return False
        number = as_number(actual)
        return number is not None and number in plain_numbers

    return member


def _test(operator: str, value: object, where: str) -> Callable[[object], bool]:
    """The test one operator applies to a field value that is present (not None)."""
    if operator in ("==", "!="):
        return _equals(value)
    if operator in (">", ">=", "<", "<="):
        bound = as_number(value)
        if bound is None:
            raise ConfigError(f"{where}: operator {operator!r} needs a number, got {value!r}")
        compare: dict[str, Callable[[float, float], bool]] = {
            ">": float.__gt__,
            ">=": float.__ge__,
            "<": float.__lt__,
            "<=": float.__le__,
        }
        op = compare[operator]

        def ordered(actual: object) -> bool:
            number = as_number(actual)
            return number is not None and op(number, bound)

        return ordered
    if operator in ("in", "not_in"):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: operator {operator!r} needs a list, got {value!r}")
        return _membership(list(value))
    if operator in ("contains", "startswith"):
        if not isinstance(value, str):
            raise ConfigError(f"{where}: operator {operator!r} needs a string, got {value!r}")
        if operator == "startswith":
            return lambda actual: isinstance(actual, str) and actual.startswith(value)
        return lambda actual: (
            (isinstance(actual, str) and value in actual)
            or (isinstance(actual, _SEQUENCES) and value in actual)
        )
    # regex
    if not isinstance(value, str):
        raise ConfigError(f"{where}: operator 'regex' needs a pattern string, got {value!r}")
    options = re2.Options()
    options.log_errors = False
    try:
        search = _prefiltered(_found_by(re2.compile(value, options)), value)
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise ConfigError(
            f"{where}: regex {value!r} is not supported by RE2 ({reason}); "
            "lookarounds and backreferences are not allowed"
        ) from exc
    return lambda actual: (
        search(actual)
        if isinstance(actual, str)
        else isinstance(actual, _NUMBERS) and search(str(actual))
    )


_UNANCHORED = getattr(getattr(re2, "_Anchor", None), "UNANCHORED", None)
_NO_MATCH = (-1, -1)


def _found_by(pattern: Any) -> Callable[[str], bool]:
    """Whether `pattern` (compiled RE2) occurs in a text: RE2's own match call when the
    binding exposes it (the Python wrapper around it costs more than the match itself)."""
    regexp = getattr(pattern, "_regexp", None)
    if regexp is None or _UNANCHORED is None:
        return lambda text: pattern.search(text) is not None
    match = regexp.Match

    def found(text: str) -> bool:
        try:
            data = text.encode()
        except UnicodeEncodeError:  # a lone surrogate: let the wrapper deal with it
            return pattern.search(text) is not None
        return bool(match(_UNANCHORED, data, 0, len(data))[0] != _NO_MATCH)

    return found


def _prefiltered(found: Callable[[str], bool], pattern: str) -> Callable[[str], bool]:
    """`found`, skipped for an ASCII text that holds none of the words every match holds
    (a `regex` condition with no cheaper one before it runs on every event)."""
    required = required_words(pattern)
    if required is None:
        return found
    words, fold = required

    def search(text: str) -> bool:
        if text.isascii():  # ASCII case folding is plain lower(): the words tell for sure
            probe = text.lower() if fold else text
            for word in words:
                if word in probe:
                    return found(text)
            return False
        return found(text)

    return search


def required_words(pattern: str) -> tuple[tuple[str, ...], bool] | None:
    """Words one of which any text matching `pattern` contains, and whether they match
    case-insensitively (then lowercased); None when that cannot be told.

    Read with Python's regex parser, whose syntax is RE2's for what is looked at here (plain
    characters, groups, alternatives); a pattern it rejects or may read otherwise (POSIX
    classes) gets None, and only ASCII words are used.
    """
    if "[:" in pattern:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parsed = sre_parser.parse(pattern)
    except Exception:  # any syntax Python does not read: RE2 alone decides
        return None
    words = _needed(list(parsed))
    if not words or not all(w.isascii() for w in words):
        return None
    fold = bool(parsed.state.flags & sre_constants.SRE_FLAG_IGNORECASE)
    return tuple(w.lower() for w in words) if fold else tuple(words), fold


def _needed(items: list[tuple[Any, Any]]) -> list[str] | None:
    """Words one of which a match of this sequence of parsed items contains, or None."""
    run: list[str] = []
    best = ""
    for op, arg in items:
        if op is sre_constants.LITERAL:
            run.append(chr(arg))
            best = max(best, "".join(run), key=len)
        else:
            run = []
    if len(best) >= 3:
        return [best]
    for op, arg in items:
        if op is sre_constants.BRANCH:
            branches = [_needed(list(branch)) for branch in arg[1]]
            if all(branches):
                return [word for words in branches if words for word in words]
        elif op is sre_constants.SUBPATTERN and not arg[1] and not arg[2]:  # no flag change
            inner = _needed(list(arg[3]))
            if inner:
                return inner
    return [best] if best else None


def compile_condition(condition: object, *, where: str = "condition") -> Predicate:
    """Validate one condition and compile it; raises ConfigError naming what is wrong."""
    if not isinstance(condition, Mapping):
        raise ConfigError(f"{where}: must be a mapping with field, operator, value")
    unknown = set(condition) - _KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(map(str, unknown))}")
    field = condition.get("field")
    if not isinstance(field, str) or not field:
        raise ConfigError(f"{where}: missing or empty 'field'")
    where = f"{where} (field {field!r})"
    operator = condition.get("operator")
    if operator not in OPERATORS:
        raise ConfigError(
            f"{where}: unknown operator {operator!r}; expected one of {sorted(OPERATORS)}"
        )
    try:
        get = field_getter(field)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if operator == "exists":
        wanted = condition.get("value", True)
        if not isinstance(wanted, bool):
            raise ConfigError(f"{where}: operator 'exists' needs true or false, got {wanted!r}")
        if wanted:
            return lambda event: get(event) is not None
        return lambda event: get(event) is None
    if "value" not in condition or condition["value"] is None:
        raise ConfigError(f"{where}: operator {operator!r} needs a 'value'")
    test = _test(str(operator), condition["value"], where)
    if operator in ("!=", "not_in"):
        return lambda event: (actual := get(event)) is not None and not test(actual)
    return lambda event: (actual := get(event)) is not None and test(actual)


def compile_conditions(conditions: Sequence[object], *, rule: str | None = None) -> Predicate:
    """All conditions ANDed into one predicate (no conditions: every event matches)."""
    if isinstance(conditions, str | bytes) or not isinstance(conditions, Sequence):
        prefix = f"rule {rule!r}: " if rule else ""
        raise ConfigError(f"{prefix}conditions must be a list, got {type(conditions).__name__}")
    prefix = f"rule {rule!r}, " if rule else ""
    compiled = [
        compile_condition(c, where=f"{prefix}condition {i}") for i, c in enumerate(conditions, 1)
    ]
    # regexes last: an AND stops at the first false condition, and a regex costs the most
    costly = [isinstance(c, Mapping) and c.get("operator") == "regex" for c in conditions]
    predicates = tuple(
        p for p, slow in sorted(zip(compiled, costly, strict=True), key=lambda x: x[1])
    )
    if not predicates:
        return lambda event: True
    if len(predicates) == 1:
        return predicates[0]
    if len(predicates) == 2:
        first, second = predicates
        return lambda event: first(event) and second(event)

    def every(event: ParsedEvent) -> bool:
        for predicate in predicates:  # noqa: SIM110  # no generator per event on the hot path
            if not predicate(event):
                return False
        return True

    return every
