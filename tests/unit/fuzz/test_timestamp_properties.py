"""Property tests of timestamp resolution: any text and arrival give None or ISO 8601 UTC, a
year-less time lands in the year before its arrival's day (never more than a day ahead), a
written time comes back as itself, and the caches never change an answer."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import assume, given
from hypothesis import strategies as st

from opmas.parser.timestamps import FUTURE_LIMIT_S, TimeResolver
from tests.unit.fuzz.strategies import FUZZ, MONTHS

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
KINDS = st.sampled_from(["bsd", "ctime", "iso", "luci"])
# 1971 .. 2099: arrivals a router could stamp (the resolver also takes any other)
ARRIVALS = st.floats(31_536_000.0, 4_102_444_800.0, allow_nan=False)
MOMENTS = st.datetimes(datetime(1971, 1, 1), datetime(2099, 12, 31), timezones=st.just(UTC))  # noqa: DTZ001 - hypothesis bounds are naive, the zone comes from `timezones`


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


@FUZZ
@given(KINDS, st.text(max_size=60), ARRIVALS | st.floats(0.0, 253402300799.0))
def test_any_text_gives_none_or_iso_utc(kind: str, text: str, arrival: float) -> None:
    result = TimeResolver().resolve(kind, text, arrival)
    assert result is None or ISO_UTC.fullmatch(result)


@FUZZ
@given(MOMENTS, ARRIVALS)
def test_a_year_less_time_is_within_the_year_before_a_day_after_arrival(
    moment: datetime, arrival: float
) -> None:
    assume((moment.month, moment.day) != (2, 29))  # Feb 29 may go back to the last leap year
    stamp = f"{MONTHS[moment.month - 1]} {moment.day:>2} {moment:%H:%M:%S}"
    result = TimeResolver().resolve("bsd", stamp, arrival)
    assert result is not None
    resolved = _epoch(result)
    assert arrival + FUTURE_LIMIT_S - 366 * 86_400 <= resolved <= arrival + FUTURE_LIMIT_S
    assert result[5:19] == moment.strftime("%m-%dT%H:%M:%S")


@FUZZ
@given(MOMENTS, st.integers(-14 * 60, 14 * 60), st.integers(0, 999_999))
def test_an_iso_time_with_any_offset_comes_back_as_the_same_instant(
    moment: datetime, offset_min: int, micros: int
) -> None:
    local = moment.replace(microsecond=micros).astimezone(timezone(timedelta(minutes=offset_min)))
    result = TimeResolver().resolve("iso", local.isoformat(), 1795300000.0)
    expected = local.astimezone(UTC)
    assert (
        result == expected.strftime("%Y-%m-%dT%H:%M:%S") + f".{expected.microsecond // 1000:03d}Z"
    )


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.sampled_from(MONTHS),
            st.integers(1, 31),
            st.integers(0, 23),
            st.integers(0, 59),
            st.integers(0, 59),
            st.integers(0, 86_400 * 800),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_the_caches_never_change_an_answer(
    calls: list[tuple[str, int, int, int, int, int]],
) -> None:
    """One resolver answering a stream (arrivals going back and forth around New Year) says
    what a fresh resolver says for each line alone."""
    shared = TimeResolver(cache_size=8)
    start = datetime(2025, 12, 1, tzinfo=UTC).timestamp()
    for month, day, hour, minute, second, delta in calls:
        stamp = f"{month} {day:>2} {hour:02d}:{minute:02d}:{second:02d}"
        arrival = start + delta
        assert shared.resolve("bsd", stamp, arrival) == TimeResolver().resolve(
            "bsd", stamp, arrival
        )


@FUZZ
@given(st.floats(0.0, 253402300799.0, allow_nan=False))
def test_arrival_iso_is_the_arrival_truncated_to_milliseconds(arrival: float) -> None:
    text = TimeResolver().arrival_iso(arrival)
    assert ISO_UTC.fullmatch(text)
    assert abs(_epoch(text) - arrival) < 0.0015


@FUZZ
@given(
    st.integers(0, 9999),
    st.integers(1, 12),
    st.integers(1, 28),
    st.sampled_from(["Z", "+14:00", "-14:00", "+00:00", "-23:59", "+2359"]),
)
def test_any_year_gives_a_time_the_store_can_read_or_none(
    year: int, month: int, day: int, zone: str
) -> None:
    """Years 1..9999 stay 4 digits (`0001-…`, which fromisoformat reads); a zone that pushes
    the instant out of that range, and year 0, give None instead of an error."""
    text = f"{year:04d}-{month:02d}-{day:02d}T23:59:59{zone}"
    result = TimeResolver().resolve("iso", text, 1795300000.0)
    if year == 0:
        assert result is None
        return
    written = datetime.fromisoformat(text.replace("Z", "+00:00"))
    try:
        expected: datetime | None = written.astimezone(UTC)
    except OverflowError:
        expected = None
    if expected is None:
        assert result is None
    else:
        assert result is not None
        assert datetime.fromisoformat(result) == expected
