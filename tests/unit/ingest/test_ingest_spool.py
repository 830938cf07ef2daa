"""The ingest spool's files: whole or absent, damage detected, bounded, found again in order;
and the HTTP route's bound on bytes waiting for the bus."""

from __future__ import annotations

from pathlib import Path

import pytest

from opmas.api.routes.logs import PendingBytes
from opmas.ingest.spool import Spool, SpoolBusy, SpoolRecord, frame, unframe


def records(n: int, lines: int = 10) -> list[SpoolRecord]:
    return [SpoolRecord(f"id{i}", i % 4, 4, lines, b"payload %d" % i) for i in range(n)]


def write(spool: Spool, recs: list[SpoolRecord]) -> None:
    segment, data = spool.reserve(recs, frame(recs))
    spool.write(segment, data)


def test_records_survive_a_frame_round_trip() -> None:
    recs = records(3)
    assert unframe(frame(recs)) == (recs, True)


@pytest.mark.parametrize("cut", [1, 5, 9, 20])
def test_a_torn_or_corrupted_tail_keeps_the_records_before_it(cut: int) -> None:
    data = frame(records(3))
    intact, _ = unframe(data[:-cut])
    assert intact == records(2)
    flipped = bytearray(data)
    flipped[-1] ^= 0xFF
    assert unframe(bytes(flipped)) == (records(2), False)


def test_files_are_found_again_oldest_first_and_half_written_ones_removed(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", 1 << 20, fsync=True)
    assert spool.open() == []
    write(spool, records(2))
    write(spool, records(1, lines=7))
    (tmp_path / "spool" / ".00000000000000000002-5-abc.tmp").write_bytes(b"half")
    with pytest.raises(SpoolBusy, match="used by another ingest process"):
        Spool(tmp_path / "spool", 1 << 20).open()
    spool.close()
    again = Spool(tmp_path / "spool", 1 << 20)
    found = again.open()
    assert [s.lines for s in found] == [20, 7]
    assert again.nbytes == sum(s.nbytes for s in found) == spool.nbytes
    assert [again.read(s) for s in found] == [records(2), records(1, lines=7)]
    assert not list((tmp_path / "spool").glob("*.tmp"))
    write(again, records(1))  # numbered after the files it found
    assert sorted(p.name for p in (tmp_path / "spool").glob("*.spool"))[-1].startswith(
        "00000000000000000002-"
    )
    for segment in found:
        again.remove(segment)
    assert len(list((tmp_path / "spool").glob("*.spool"))) == 1


def test_the_bound_refuses_a_file_unless_the_spool_is_empty(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 100)
    spool.open()
    big = frame(records(5))
    assert len(big) > 100
    assert spool.has_room(len(big))  # empty: one file always fits
    write(spool, records(5))
    assert not spool.has_room(1)


def test_a_damaged_file_gives_what_is_intact(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    spool.open()
    write(spool, records(3))
    [segment] = spool.open()
    assert segment.path is not None
    segment.path.write_bytes(segment.path.read_bytes()[:-3])
    assert spool.read(segment) == records(2)


def test_pending_bytes_let_one_body_through_and_bound_the_rest() -> None:
    pending = PendingBytes(100)
    assert pending.take(500)  # alone: always
    assert not pending.take(1)
    pending.give_back(500)
    assert pending.take(60)
    assert pending.take(40)
    assert not pending.take(1)
