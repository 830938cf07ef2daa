"""Property tests of the TCP framer: any split of a byte stream into chunks gives the same
frames, held bytes stay within the bound whatever the octet counts claim, and every frame
sent whole in a valid framing comes out as sent."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from opmas.ingest.framing import MAX_COUNT_DIGITS, Frame, Framer
from tests.unit.fuzz.strategies import FUZZ

# Bytes a syslog stream is made of, with delimiters and digits frequent enough to matter.
_STREAM_BYTES = st.lists(
    st.sampled_from(
        [b"\n", b"\x00", b"\r", b" ", b"<", b">", b"1", b"2", b"9", b"0", b"x", b"\xc3"]
    )
    | st.sampled_from([b"0 ", b"3 <", b"12 ", b"12 <13>", b"007 <", b"999999999 <", b"1000000000 "])
    | st.binary(max_size=8),
    max_size=60,
).map(b"".join)


def _feed(max_message: int, chunks: list[bytes]) -> tuple[list[Frame], int, int]:
    """Frames, framing errors, and the most bytes held between two feeds."""
    framer = Framer(max_message)
    frames: list[Frame] = []
    held = 0
    for chunk in chunks:
        frames += framer.feed(chunk)
        held = max(held, framer.buffered)
    frames += framer.close()
    return frames, framer.framing_errors, held


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


@FUZZ
@given(_STREAM_BYTES, st.lists(st.integers(0, 10_000), max_size=12), st.integers(1, 64))
def test_any_split_of_a_stream_gives_the_same_frames(
    data: bytes, cuts: list[int], max_message: int
) -> None:
    whole, whole_errors, _ = _feed(max_message, [data])
    split, split_errors, _ = _feed(max_message, _split(data, cuts))
    bytewise, _, _ = _feed(max_message, [data[i : i + 1] for i in range(len(data))])
    assert split == whole
    assert bytewise == whole
    assert split_errors == whole_errors


@FUZZ
@given(_STREAM_BYTES, st.integers(1, 64))
def test_held_bytes_never_pass_the_message_size_and_a_count_prefix(
    data: bytes, max_message: int
) -> None:
    _, _, held = _feed(max_message, [data[i : i + 1] for i in range(len(data))])
    assert held <= max_message + MAX_COUNT_DIGITS + 1


@FUZZ
@given(st.integers(1, 10**9), st.binary(max_size=200), st.integers(1, 256))
def test_an_octet_count_that_lies_stays_bounded_and_ends_at_close(
    claimed: int, body: bytes, max_message: int
) -> None:
    """`claimed` bytes promised, `len(body)` sent, then the connection closes."""
    framer = Framer(max_message)
    frames = framer.feed(f"{claimed} <13>".encode() + body)
    assert framer.buffered <= max_message + MAX_COUNT_DIGITS + 1
    frames += framer.close()
    assert framer.buffered == 0
    assert all(len(data) <= max_message for data, _ in frames)


_MESSAGES = st.binary(min_size=1, max_size=40).map(lambda b: b"<13>" + b)


@FUZZ
@given(st.lists(_MESSAGES, min_size=1, max_size=8), st.lists(st.integers(0, 10_000), max_size=8))
def test_octet_counted_messages_come_out_as_sent(messages: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(str(len(m)).encode() + b" " + m for m in messages)
    frames, errors, _ = _feed(4096, _split(stream, cuts))
    expected = [m.rstrip(b"\r\n\x00") for m in messages]
    assert frames == [(m, False) for m in expected if m]
    assert errors == 0


@FUZZ
@given(
    st.lists(
        st.binary(min_size=1, max_size=40).filter(
            lambda b: not set(b) & {0x0A, 0x00} and b.strip(b"\r")
        ),
        min_size=1,
        max_size=8,
    ),
    st.sampled_from([b"\n", b"\x00", b"\r\n"]),
)
def test_delimited_lines_starting_with_pri_come_out_as_sent(
    lines: list[bytes], delimiter: bytes
) -> None:
    messages = [b"<13>" + line for line in lines]
    frames, _, _ = _feed(4096, [delimiter.join(messages) + delimiter])
    assert frames == [(m.rstrip(b"\r"), False) for m in messages]
