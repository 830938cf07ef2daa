"""Turns a header's timestamp text into UTC ISO 8601, for ParsedEvent.event_ts.

Times without a zone (RFC 3164, `logread`) are taken as UTC: OpenWRT runs in UTC unless a
zone is configured, and a per-device zone setting can come later. A missing year is the latest
one that puts the time no more than a day after the line's arrival (as rsyslog does): a line is
never dated in the future of its arrival, beyond clock skew. Results are cached per distinct
text, so a stream costs a dict lookup per line, not a date parse.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

_MONTHS = {
    name: number
    for number, names in enumerate(
        (
            "jan gen ene janv jän",
            "feb fév févr fev",
            "mar mär mrt märz",
            "apr avr abr",
            "may mai mag mei",
            "jun giu juin jun",
            "jul lug juil",
            "aug ago aoû août",
            "sep set sept",
            "oct ott okt out",
            "nov",
            "dec dic déc dez",
        ),
        start=1,
    )
    for name in names.split()
}
_ZONES = {"UTC": 0, "GMT": 0, "Z": 0, "WET": 0, "WEST": 60, "CET": 60, "CEST": 120, "MET": 60,
          "MEST": 120, "EET": 120, "EEST": 180, "MSK": 180, "EST": -300, "EDT": -240,
          "CST": -360, "CDT": -300, "MST": -420, "MDT": -360, "PST": -480, "PDT": -420}  # fmt: skip
_BSD = re.compile(
    r"(?P<mon>[A-Z][a-z]{2}) +(?P<day>\d{1,2}) (?:(?P<year>\d{4}) )?(?P<h>\d\d):(?P<m>\d\d)"
    r":(?P<s>\d\d)(?:\.(?P<frac>\d+))?(?: (?P<year2>\d{4}))?$"
)
_CTIME = re.compile(
    r"[A-Z][a-z]{2} (?P<mon>[A-Z][a-z]{2}) +(?P<day>\d{1,2}) (?P<h>\d\d):(?P<m>\d\d):(?P<s>\d\d)"
    r" (?P<year>\d{4})$"
)
_ISO = re.compile(
    r"(?P<year>\d{4})-(?P<mon>\d\d)-(?P<day>\d\d)[T ](?P<h>\d\d):(?P<m>\d\d):(?P<s>\d\d)"
    r"(?:[.,](?P<frac>\d+))?(?P<zone>Z|[+-]\d\d:?\d\d)?$"
)
_LUCI = re.compile(
    r"(?P<day>\d{1,2})[ .]+(?P<mon>[^\W\d]+)\.? (?P<year>\d{4}),? (?P<h>\d{1,2}):(?P<m>\d\d)"
    r":(?P<s>\d\d)(?: (?P<zone>[A-Z]{1,5}|[+-]\d\d:?\d\d))?$"
)
FUTURE_LIMIT_S = 86_400.0  # a year-less time may lie this far after its arrival (clock skew)
_YEARS_BACK = 8  # Feb 29 may need up to 8 years back (1900, 2100 are not leap years)
_MILLIS = tuple(f".{ms:03d}Z" for ms in range(1000))
_TWO_DIGITS = tuple(f"{n:02d}" for n in range(60))
_PATTERNS = {"bsd": _BSD, "ctime": _CTIME, "iso": _ISO, "luci": _LUCI}

# (year or None, month, day, hour, minute, second, microsecond, zone offset in minutes)
Parts = tuple[int | None, int, int, int, int, int, int, int]


class TimeResolver:
    """Resolves timestamp texts to ISO 8601 UTC with bounded caches (one per engine)."""

    def __init__(self, cache_size: int = 8192) -> None:
        self._cache_size = cache_size
        self._parts: dict[tuple[str, str], Parts | None] = {}
        # text -> (kind, arrival range [lo, hi) over which the result holds, result)
        self._resolved: dict[str, tuple[str, float, float, str | None]] = {}
        self._seconds: dict[int, str] = {}
        self._minutes: dict[int, str] = {}  # epoch minute -> "YYYY-MM-DDTHH:MM:"

    def arrival_iso(self, ts: float) -> str:
        """Epoch seconds as ISO 8601 UTC with milliseconds and `Z` (as messages.iso_utc)."""
        second = int(ts)
        millis = int((ts - second) * 1000 + 0.0005)  # = round to microseconds, then truncate
        if millis >= 1000:
            second, millis = second + 1, millis - 1000
        text = self._seconds.get(second)
        if text is None:
            if len(self._seconds) >= self._cache_size:
                self._seconds.clear()
            minute, in_minute = divmod(second, 60)
            lead = self._minutes.get(minute)
            if lead is None:
                if len(self._minutes) >= self._cache_size:
                    self._minutes.clear()
                lead = datetime.fromtimestamp(minute * 60, UTC).strftime("%Y-%m-%dT%H:%M:")
                self._minutes[minute] = lead
            text = self._seconds[second] = lead + _TWO_DIGITS[in_minute]
        return text + _MILLIS[millis]

    def resolve(self, kind: str, text: str, arrival_ts: float) -> str | None:
        """The UTC ISO time of `text` read as `kind` (bsd, ctime, iso, luci), or None."""
        cached = self._resolved.get(text)
        if cached is not None and cached[0] == kind and cached[1] <= arrival_ts < cached[2]:
            return cached[3]
        found = self._by_minute(text, arrival_ts) if kind == "bsd" else None
        if found is None:
            found = self._resolve(kind, text, arrival_ts)
        if len(self._resolved) >= self._cache_size:
            self._resolved.clear()
        result, lo, hi = found
        self._resolved[text] = (kind, lo, hi, result)
        return result

    def _by_minute(self, text: str, arrival_ts: float) -> tuple[str | None, float, float] | None:
        """`_resolve` of `Mmm dd HH:MM:SS` from its minute's, which the cache likely holds.

        Second `s` of a minute is the minute's time plus `s` in the same year, and that year
        is the one the minute gets at an arrival `s` seconds earlier, so the result and its
        arrival range are the minute's shifted by `s`. None when `text` is not of that form.
        """
        second = text[13:]
        if len(second) != 2 or text[12] != ":" or not (second.isascii() and second.isdigit()):
            return None
        shift = int(second)
        if not 0 < shift < 60:
            return None  # second 0 is the minute itself: the general path reads it
        minute = text[:13] + "00"
        start = arrival_ts - shift
        found = self._resolved.get(minute)
        if found is None or found[0] != "bsd" or not found[1] <= start < found[2]:
            self.resolve("bsd", minute, start)
            found = self._resolved.get(minute)
        if found is None or (found[3] is not None and found[3][16:19] != ":00"):
            return None  # not cached (a cache just cleared), or a year of other than 4 digits
        result = found[3] and found[3][:17] + second + found[3][19:]
        return result, found[1] + shift, found[2] + shift

    def _resolve(self, kind: str, text: str, arrival_ts: float) -> tuple[str | None, float, float]:
        """The time, and the arrival range [lo, hi) over which it is the same."""
        anywhen = (-math.inf, math.inf)
        parts = self.parts(kind, text)
        if parts is None:
            return None, *anywhen
        year, rest = parts[0], parts[1:]
        if year is not None:
            moment = _moment(year, rest)
            return (None if moment is None else _iso(moment)), *anywhen
        arrival_year = datetime.fromtimestamp(arrival_ts, UTC).year
        hi = math.inf  # the arrival from which a later year's candidate would be allowed
        for candidate in range(arrival_year + 1, arrival_year - _YEARS_BACK, -1):
            moment = _moment(candidate, rest)
            if moment is None:
                continue
            epoch = moment.timestamp()
            if epoch - FUTURE_LIMIT_S > arrival_ts:
                hi = epoch - FUTURE_LIMIT_S
                continue
            return _iso(moment), epoch - FUTURE_LIMIT_S, hi
        return None, arrival_ts, arrival_ts + 1.0

    def parts(self, kind: str, text: str) -> Parts | None:
        """The fields of a timestamp text, or None when it cannot be read."""
        key = (kind, text)
        if key in self._parts:
            return self._parts[key]
        if len(self._parts) >= self._cache_size:
            self._parts.clear()
        pattern = _PATTERNS.get(kind)
        match = pattern.match(text) if pattern is not None else None
        result = _parts(match) if match is not None else None
        self._parts[key] = result
        return result


def _parts(match: re.Match[str]) -> Parts | None:
    groups = match.groupdict()
    month_text = groups["mon"]
    month = int(month_text) if month_text.isdigit() else _MONTHS.get(month_text.lower()[:4])
    if month is None:
        month = _MONTHS.get(month_text.lower()[:3])
    zone = _zone(groups.get("zone"))
    if month is None or zone is None:
        return None
    year_text = groups.get("year") or groups.get("year2")
    frac = (groups.get("frac") or "")[:6].ljust(6, "0")
    return (
        int(year_text) if year_text else None,
        month,
        int(groups["day"]),
        int(groups["h"]),
        int(groups["m"]),
        int(groups["s"]),
        int(frac),
        zone,
    )


def _zone(text: str | None) -> int | None:
    """Offset in minutes east of UTC; no zone is UTC; an unknown name is None."""
    if text is None:
        return 0
    if text[0] in "+-":
        digits = text[1:].replace(":", "")
        minutes = int(digits[:2]) * 60 + int(digits[2:])
        return minutes if text[0] == "+" else -minutes
    return _ZONES.get(text)


def _moment(year: int, rest: tuple[int, int, int, int, int, int, int]) -> datetime | None:
    """The UTC instant of the fields, or None when they name no day or fall outside years
    1..9999 once the zone is applied (`9999-12-31T23:59:59-14:00`)."""
    month, day, hour, minute, second, micro, zone = rest
    try:
        written = datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)
        return written - timedelta(minutes=zone)
    except (ValueError, OverflowError):
        return None


def _iso(moment: datetime) -> str:
    """ISO 8601 UTC with milliseconds and a 4-digit year (`0042-…`, as fromisoformat reads)."""
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:"
        f"{moment.minute:02d}:{moment.second:02d}.{moment.microsecond // 1000:03d}Z"
    )
