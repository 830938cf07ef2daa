"""Property tests of the HTTP body decoder: any body and Content-Type give RawLogs or one of
its own errors (413, 415, 422), valid batches come back line for line, and gzip fed in any
pieces unzips the same."""

from __future__ import annotations

import gzip
import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opmas.errors import ApiError
from opmas.ingest.http_body import GzipReader, PayloadTooLarge, gunzip, parse_body
from tests.unit.fuzz.strategies import FUZZ

MEDIA = st.sampled_from(
    ["application/json", "text/plain; charset=utf-8", "application/vnd+json", "text/html", ""]
)
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
LINES = st.text(
    st.characters(codec="utf-8", exclude_characters="\n\r\x00"),
    min_size=1,
    max_size=40,
)


@FUZZ
@given(st.binary(max_size=400) | JSONISH.map(lambda v: json.dumps(v).encode()), MEDIA)
def test_any_body_gives_raw_logs_or_its_own_error(body: bytes, media: str) -> None:
    error: ApiError | None = None
    try:
        items = parse_body(body, media, 64, 20)
    except ApiError as exc:
        error, items = exc, []
    if error is not None:
        assert error.status_code in (413, 415, 422)
        return
    assert 0 < len(items) <= 20
    for item in items:
        assert len(item.line.encode()) <= 64
        assert "\x00" not in item.line


@FUZZ
@given(st.lists(LINES, min_size=1, max_size=20))
def test_a_json_array_of_strings_comes_back_line_for_line(lines: list[str]) -> None:
    items = parse_body(json.dumps(lines).encode(), "application/json", 4096, 20)
    assert [item.line for item in items] == lines
    assert all(not item.flags for item in items)


@FUZZ
@given(st.lists(LINES.filter(lambda s: s.strip("\r")), min_size=1, max_size=20))
def test_a_text_body_comes_back_line_for_line(lines: list[str]) -> None:
    items = parse_body("\n".join(lines).encode(), "text/plain", 4096, 20)
    assert [item.line for item in items] == lines


@FUZZ
@given(st.lists(st.binary(max_size=200), min_size=1, max_size=3), st.lists(st.integers(0, 10**6)))
def test_gzip_members_fed_in_any_pieces_unzip_the_same(
    members: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(gzip.compress(member) for member in members)
    points = sorted({cut % (len(stream) + 1) for cut in cuts})
    reader = GzipReader(10_000)
    for a, b in itertools.pairwise([0, *points, len(stream)]):
        reader.feed(stream[a:b])
    assert reader.finish() == b"".join(members)


@FUZZ
@given(st.integers(1, 5000), st.integers(1, 4000))
def test_gunzip_never_gives_more_than_its_limit(size: int, limit: int) -> None:
    data = gzip.compress(b"a" * size)
    if size > limit:
        with pytest.raises(PayloadTooLarge):
            gunzip(data, limit)
    else:
        assert gunzip(data, limit) == b"a" * size
