"""Conditions: each operator, numeric coercion, missing fields, and compile-time errors."""

from __future__ import annotations

import pytest
import re2  # type: ignore[import-untyped]  # google-re2 ships no type hints

from opmas.agents.rules import compile_conditions, field_getter
from opmas.agents.rules.conditions import required_words
from opmas.errors import ConfigError

from .factory import make_event


def matches(field: str, operator: str, value: object = None, **structured: object) -> bool:
    condition: dict[str, object] = {"field": field, "operator": operator}
    if value is not None:
        condition["value"] = value
    return compile_conditions([condition])(make_event(fields=structured))


def test_top_level_attribute_resolves_by_name() -> None:
    assert matches("hostname", "==", "ap1")
    assert not matches("hostname", "==", "ap2")


def test_bare_name_falls_back_to_structured_fields() -> None:
    assert matches("client_mac", "==", "aa:bb", client_mac="aa:bb")
    assert matches("structured_fields.client_mac", "==", "aa:bb", client_mac="aa:bb")


def test_dotted_path_descends_into_nested_dicts() -> None:
    event = make_event(wifi={"radio": {"channel": 36}})
    assert field_getter("wifi.radio.channel")(event) == 36
    assert field_getter("structured_fields.wifi.radio.channel")(event) == 36
    assert field_getter("wifi.radio.missing")(event) is None
    assert field_getter("wifi.radio.channel.deeper")(event) is None


def test_equality_coerces_numeric_strings_both_ways() -> None:
    assert matches("reason", "==", 7, reason="7")
    assert matches("reason", "==", "7", reason=7)
    assert matches("reason", "!=", 8, reason="7")
    assert not matches("reason", "==", "07x", reason=7)


def test_equality_between_strings_is_exact() -> None:
    assert not matches("code", "==", "007", code="7")


def test_ordering_operators_coerce_numeric_strings() -> None:
    assert matches("rssi", ">", -70, rssi="-65")
    assert matches("count", ">=", "25", count=25)
    assert matches("count", "<", 25.5, count="25")
    assert matches("count", "<=", 25, count=25.0)
    assert not matches("count", ">", 25, count="25")


def test_ordering_on_a_non_numeric_field_is_false() -> None:
    assert not matches("count", ">", 1, count="many")
    assert not matches("count", ">", 1, count=True)


def test_in_and_not_in_use_the_list_with_coercion() -> None:
    assert matches("reason", "in", [2, 7, 15], reason="7")
    assert matches("ssid", "in", ["home", "guest"], ssid="guest")
    assert matches("ssid", "not_in", ["home"], ssid="guest")
    assert not matches("ssid", "not_in", ["guest"], ssid="guest")


def test_contains_works_on_strings_and_lists() -> None:
    assert matches("message", "contains", "authentication failed")
    assert matches("tags", "contains", "psk", tags=["psk", "wpa2"])
    assert not matches("message", "contains", "deauth")


def test_startswith_and_regex() -> None:
    assert matches("message", "startswith", "wlan0:")
    assert matches("message", "regex", r"STA ([0-9a-f]{2}:){5}[0-9a-f]{2}")
    assert matches("reason", "regex", r"^1\d$", reason=15)
    assert not matches("message", "regex", r"^auth")


def test_exists_true_and_false() -> None:
    assert matches("client_mac", "exists", True, client_mac="aa:bb")
    assert matches("client_mac", "exists", False)
    assert not matches("client_mac", "exists", True)
    assert matches("hostname", "exists")  # value defaults to true


def test_a_missing_or_none_field_fails_every_operator_but_exists_false() -> None:
    for operator, value in [
        ("==", "x"),
        ("!=", "x"),
        (">", 1),
        ("in", ["x"]),
        ("not_in", ["x"]),
        ("contains", "x"),
        ("startswith", "x"),
        ("regex", "x"),
    ]:
        assert not matches("absent", operator, value), operator
    event = make_event(hostname=None)
    assert not compile_conditions([{"field": "hostname", "operator": "!=", "value": "x"}])(event)


def test_conditions_are_anded_and_an_empty_list_matches_everything() -> None:
    both = [
        {"field": "hostname", "operator": "==", "value": "ap1"},
        {"field": "reason", "operator": ">=", "value": 3},
        {"field": "process_name", "operator": "==", "value": "hostapd"},
    ]
    assert compile_conditions(both)(make_event(reason=3))
    assert not compile_conditions(both)(make_event(reason=2))
    assert compile_conditions([])(make_event())


@pytest.mark.parametrize(
    ("conditions", "message"),
    [
        ([{"field": "x", "operator": "~=", "value": 1}], "unknown operator '~='"),
        ([{"operator": "==", "value": 1}], "missing or empty 'field'"),
        ([{"field": "x", "operator": "in", "value": "a"}], "'in' needs a list"),
        ([{"field": "x", "operator": ">", "value": "big"}], "'>' needs a number"),
        ([{"field": "x", "operator": "exists", "value": "yes"}], "'exists' needs true or false"),
        ([{"field": "x", "operator": "=="}], "needs a 'value'"),
        ([{"field": "x", "operator": "==", "value": 1, "op": 2}], "unknown key(s) ['op']"),
        ([{"field": "a..b", "operator": "==", "value": 1}], "invalid field path"),
        (["hostname == ap1"], "must be a mapping"),
    ],
)
def test_invalid_conditions_are_rejected_at_compile_time(
    conditions: list[object], message: str
) -> None:
    with pytest.raises(ConfigError, match="condition 1") as caught:
        compile_conditions(conditions, rule="wifi_auth")
    assert message in str(caught.value)
    assert "rule 'wifi_auth'" in str(caught.value)


@pytest.mark.parametrize("pattern", [r"foo(?=bar)", r"(?<!x)y", r"(a)\1", r"("])
def test_regex_re2_cannot_compile_is_rejected_at_compile_time(pattern: str) -> None:
    with pytest.raises(ConfigError, match="not supported by RE2"):
        compile_conditions([{"field": "message", "operator": "regex", "value": pattern}])


def test_conditions_must_be_a_list() -> None:
    with pytest.raises(ConfigError, match="conditions must be a list"):
        compile_conditions("hostname == ap1")


@pytest.mark.parametrize(
    ("pattern", "words"),
    [
        ("invalid MIC|PSK-MISMATCH", (("invalid MIC", "PSK-MISMATCH"), False)),
        ("(?i)no space left|jffs2.*full", (("no space left", "jffs2"), True)),
        ("x(abc|abd)y", (("ab",), False)),
        ("(?i:abc)def", (("def",), False)),
        ("a|b", None),  # one character each: nothing worth a look
        (r"\d+", None),
        ("foo[[:space:]]bar", None),  # POSIX classes: Python would read `]bar` as a word
        (r"\Qa.b\E", None),  # RE2-only syntax
    ],
)
def test_a_regex_is_prefiltered_by_the_words_every_match_holds(
    pattern: str, words: tuple[tuple[str, ...], bool] | None
) -> None:
    assert required_words(pattern) == words


@pytest.mark.parametrize(
    "text",
    [
        "jffs2: No Space Left on device",
        "JFFS2 is full",
        "overlayfs: upper fs is full",
        "no space here",
        "nothing to see",
        "no \u017fpace left",  # long s, not ASCII: RE2 alone decides
        "\ufb00 JFFS2 FULL",
        "",
    ],
)
def test_a_prefiltered_regex_matches_exactly_what_re2_matches(text: str) -> None:
    pattern = r"(?i)no space left|jffs2.*full|overlay(?:fs)? .*\bfull\b"
    options = re2.Options()
    options.log_errors = False
    expected = re2.compile(pattern, options).search(text) is not None
    condition = {"field": "message", "operator": "regex", "value": pattern}
    assert compile_conditions([condition])(make_event(message=text)) is expected
