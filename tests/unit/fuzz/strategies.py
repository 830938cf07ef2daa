"""Hypothesis settings and generators shared by the property tests of the ingest and parser
edges: valid RFC 3164 / RFC 5424 lines built field by field, and byte streams to frame."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

FUZZ = settings(
    max_examples=200,
    deadline=None,  # the machine is shared: a slow example is not a failure
    database=None,  # nothing written into the work tree
    suppress_health_check=[HealthCheck.too_slow],
)

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_LABEL = st.from_regex(r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,14}[A-Za-z0-9])?", fullmatch=True)
hostnames = st.lists(_LABEL, min_size=1, max_size=3).map(".".join)
programs = st.from_regex(r"[A-Za-z][A-Za-z0-9_.-]{0,20}", fullmatch=True)
pids = st.none() | st.integers(1, 4_000_000).map(str)
pris = st.integers(0, 191)
# A message as a relay or a router writes it: printable text, not starting with a space
# (rsyslog's relayed MSG does, and the header drops exactly one).
messages = st.text(
    st.characters(min_codepoint=0x20, blacklist_categories=("Cs", "Cc", "Zl", "Zp")),
    max_size=80,
).filter(lambda text: not text.startswith((" ", "\ufeff")))
sd_names = st.from_regex(r"[!#-<>-\\^-~]{1,32}", fullmatch=True)
sd_values = st.text(
    st.characters(min_codepoint=0x20, blacklist_categories=("Cs", "Cc")), max_size=20
)


@dataclass(frozen=True)
class Line:
    """A generated syslog line and the fields it was built from."""

    text: str
    pri: int
    hostname: str
    program: str
    pid: str | None
    message: str
    timestamp: str
    sd: dict[str, dict[str, str]]


def sd_escape(value: str) -> str:
    """A PARAM-VALUE as RFC 5424 writes it: `"`, `\\` and `]` escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


@st.composite
def rfc3164_lines(draw: st.DrawFn) -> Line:
    """`<PRI>Mmm dd HH:MM:SS host tag[pid]: message`, as OpenWRT logd sends it."""
    pri, host, program, pid, message = (
        draw(pris), draw(hostnames), draw(programs), draw(pids), draw(messages)
    )  # fmt: skip
    month, day = draw(st.sampled_from(MONTHS)), draw(st.integers(1, 28))
    hour, minute, second = (
        draw(st.integers(0, 23)),
        draw(st.integers(0, 59)),
        draw(st.integers(0, 59)),
    )
    stamp = f"{month} {day:>2} {hour:02d}:{minute:02d}:{second:02d}"
    tag = program if pid is None else f"{program}[{pid}]"
    text = f"<{pri}>{stamp} {host} {tag}: {message}"
    return Line(text, pri, host, program, pid, message, stamp, {})


@st.composite
def structured_data(draw: st.DrawFn) -> dict[str, dict[str, str]]:
    """SD elements with distinct SD-IDs (what a valid line may carry)."""
    ids = draw(st.lists(sd_names, max_size=4, unique=True))
    return {sd_id: draw(st.dictionaries(sd_names, sd_values, max_size=4)) for sd_id in ids}


@st.composite
def rfc5424_lines(draw: st.DrawFn) -> Line:
    """`<PRI>VERSION TIMESTAMP HOST APP PROCID MSGID SD MSG` with any valid VERSION."""
    pri, host, program, pid, message = (
        draw(pris), draw(hostnames), draw(programs), draw(pids), draw(messages)
    )  # fmt: skip
    version = draw(st.integers(1, 999))
    year, month, day = (
        draw(st.integers(1970, 2100)),
        draw(st.integers(1, 12)),
        draw(st.integers(1, 28)),
    )
    date = f"{year:04d}-{month:02d}-{day:02d}"
    hour, minute, second = (
        draw(st.integers(0, 23)),
        draw(st.integers(0, 59)),
        draw(st.integers(0, 59)),
    )
    zone = draw(st.sampled_from(["Z", ".123Z", "+01:00", "-05:30", ".123456+00:00"]))
    stamp = f"{date}T{hour:02d}:{minute:02d}:{second:02d}{zone}"
    sd = draw(structured_data())
    sd_text = "".join(
        f"[{sd_id}" + "".join(f' {k}="{sd_escape(v)}"' for k, v in params.items()) + "]"
        for sd_id, params in sd.items()
    )
    msg = f" {message}" if message else ""
    text = f"<{pri}>{version} {stamp} {host} {program} {pid or '-'} - {sd_text or '-'}{msg}"
    return Line(text, pri, host, program, pid, message, stamp, sd)
