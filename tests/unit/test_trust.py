"""Trust levels: ordering and the weakest of a set of evidence."""

import pytest

from opmas import trust


def test_levels_are_ordered_weakest_first() -> None:
    assert trust.LEVELS == ("untrusted", "address", "verified")
    assert (trust.UNTRUSTED, trust.ADDRESS, trust.VERIFIED) == trust.LEVELS


@pytest.mark.parametrize(
    ("levels", "expected"),
    [
        (["verified", "verified"], "verified"),
        (["verified", "address"], "address"),
        (["address", "verified", "untrusted"], "untrusted"),
        (["verified", None], "untrusted"),
        (["verified", "bogus"], "untrusted"),
        ([], "untrusted"),
    ],
)
def test_weakest_returns_the_lowest_and_unknown_counts_as_untrusted(
    levels: list[str | None], expected: str
) -> None:
    assert trust.weakest(levels) == expected


def test_weakest_accepts_a_generator() -> None:
    assert trust.weakest(level for level in ("verified", "address")) == "address"


def test_normalise_maps_unknown_to_untrusted() -> None:
    assert trust.normalise("address") == "address"
    assert trust.normalise(None) == "untrusted"
    assert trust.normalise("root") == "untrusted"
