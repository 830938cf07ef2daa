"""Inputs the coverage-guided run (bench/fuzz.py) found failing, kept as regression tests."""

from __future__ import annotations

from opmas.ingest.framing import Framer


def test_digits_held_for_a_count_are_cut_to_the_size_at_close() -> None:
    """framing-crash-17913390: `845` with a 1-byte maximum came out whole at close (digits
    wait for the space of an octet count, so they were held, and close() did not cut them)."""
    framer = Framer(1)
    assert framer.feed(b"845") == []
    assert framer.close() == [(b"8", True)]


def test_a_bad_count_held_across_two_reads_is_one_framing_error() -> None:
    """Found by the split property (test_framing_properties): `0 abc` then `def\\n` counted the
    zero count twice, because the held frame was judged again when more bytes came."""
    framer = Framer(100)
    assert framer.feed(b"0 abc") == []
    assert framer.feed(b"def\n") == [(b"0 abcdef", False)]
    assert framer.framing_errors == 1
