"""POST /api/v1/logs bodies: JSON and text parsing, limits, gzip; batch encoding and ids."""

from __future__ import annotations

import gzip
import uuid
from collections.abc import AsyncIterator

import pytest

from opmas.ingest.http_body import (
    PayloadTooLarge,
    Unprocessable,
    UnsupportedMediaType,
    gunzip,
    parse_body,
    read_body,
)
from opmas.ingest.idempotency import record_key, seeded_uuid7
from opmas.ingest.rawbatches import encode_batches
from opmas.messages import Flag, RawLog, Transport, raw_batch_decoder


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_read_body_joins_chunks_within_the_limit() -> None:
    body = await read_body(chunks(b"ab", b"cd"), content_length=None, encoding=None, limit=4)
    assert body == b"abcd"


async def test_read_body_stops_past_the_limit_even_without_content_length() -> None:
    with pytest.raises(PayloadTooLarge):
        await read_body(chunks(b"ab", b"cde"), content_length=None, encoding=None, limit=4)
    with pytest.raises(PayloadTooLarge):
        await read_body(chunks(), content_length="5", encoding=None, limit=4)


async def test_read_body_unzips_and_refuses_other_encodings() -> None:
    zipped = gzip.compress(b"hello")
    assert (
        await read_body(chunks(zipped), content_length=None, encoding="gzip", limit=100) == b"hello"
    )
    with pytest.raises(UnsupportedMediaType, match="br"):
        await read_body(chunks(b"x"), content_length=None, encoding="br", limit=100)


def test_gunzip_stops_a_zip_bomb_at_the_limit() -> None:
    with pytest.raises(PayloadTooLarge, match="unzipped"):
        gunzip(gzip.compress(b"\0" * 1_000_000), 1000)


@pytest.mark.parametrize(
    ("data", "reason"), [(b"not gzip", "not valid gzip"), (gzip.compress(b"abc")[:-6], "cut short")]
)
def test_gunzip_rejects_broken_input(data: bytes, reason: str) -> None:
    with pytest.raises(Unprocessable, match=reason):
        gunzip(data, 1000)


def test_json_strings_and_objects() -> None:
    body = b'["a", {"message": "b", "hostname": "r1", "program": "p", "level": "err", "x": 1}]'
    items = parse_body(body, "application/json; charset=utf-8", 100)
    assert [(i.line, i.hostname, i.program, i.level) for i in items] == [
        ("a", None, None, None),
        ("b", "r1", "p", "err"),
    ]
    assert {i.transport for i in items} == {Transport.HTTP}


def test_every_wrong_place_is_named_up_to_ten() -> None:
    body = b"[" + b",".join([b"{}"] * 12) + b"]"
    with pytest.raises(Unprocessable) as raised:
        parse_body(body, "application/json", 100)
    detail = raised.value.detail
    assert detail.startswith("body[0].message: field required; body[1].message: field required")
    assert detail.endswith("and 2 more")


def test_json_lines_are_truncated_and_nul_replaced() -> None:
    [item] = parse_body('["<13>ééééé\\u0000"]'.encode(), "application/json", 8)
    assert item.line == "<13>éé"
    assert item.flags == [Flag.TRUNCATED]
    [nul] = parse_body(b'["a\\u0000b"]', "application/json", 100)
    assert (nul.line, nul.flags) == ("a\ufffdb", [Flag.NUL_REPLACED])


def test_text_plain_truncates_long_lines() -> None:
    items = parse_body(b"short\n" + b"x" * 20 + b"\n", "text/plain", 10)
    assert [(i.line, i.flags) for i in items] == [("short", []), ("x" * 10, [Flag.TRUNCATED])]


def test_bad_timestamp_types() -> None:
    with pytest.raises(Unprocessable, match=r"body\[0\].timestamp: must be a string"):
        parse_body(b'[{"message": "m", "timestamp": true}]', "application/json", 100)
    with pytest.raises(Unprocessable, match=r"body\[0\].timestamp: not a valid epoch time"):
        parse_body(b'[{"message": "m", "timestamp": 1e300}]', "application/json", 100)


def test_seeded_ids_are_uuid7_deterministic_and_distinct() -> None:
    seed = record_key("token:1", "key")
    ids = [seeded_uuid7(1745013738.5, seed, i) for i in range(1000)]
    assert ids == [seeded_uuid7(1745013738.5, seed, i) for i in range(1000)]
    assert len(set(ids)) == 1000
    parsed = uuid.UUID(ids[0])
    assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
    assert int(parsed.hex[:12], 16) == 1745013738500
    assert seeded_uuid7(1745013738.5, record_key("token:2", "key"), 0) != ids[0]


def test_record_key_is_a_valid_kv_key_for_any_text() -> None:
    key = record_key("anonymous", "weird key / with spaces * and >")
    assert len(key) == 64
    assert key.isalnum()


def test_encode_batches_splits_until_each_message_fits() -> None:
    items = [RawLog(f"e{i}", 1.0, "x" * 100, Transport.UDP) for i in range(40)]
    messages = encode_batches("b1", items, 1500)
    assert len(messages) > 1
    assert all(len(payload) <= 1500 for _, payload, _ in messages)
    decoded = [raw_batch_decoder.decode(payload) for _, payload, _ in messages]
    assert [m for m, _, _ in messages] == [d.batch_id for d in decoded]
    assert [n for _, _, n in messages] == [len(d.items) for d in decoded]
    assert all(m.startswith("b1:") for m, _, _ in messages)
    assert [i.event_id for d in decoded for i in d.items] == [f"e{i}" for i in range(40)]


def test_encode_batches_cuts_a_single_line_that_cannot_fit() -> None:
    [(msg_id, payload, lines)] = encode_batches("b", [RawLog("e", 1.0, "\0" * 4000, "tcp")], 1600)
    [item] = raw_batch_decoder.decode(payload).items
    assert (msg_id, lines) == ("b", 1)
    assert len(item.line) == 200
    assert item.flags == [Flag.TRUNCATED]


async def test_read_body_unzips_every_member_fed_in_pieces() -> None:
    zipped = gzip.compress(b"one\n") + gzip.compress(b"two\n") + gzip.compress(b"three")
    pieces = [zipped[i : i + 7] for i in range(0, len(zipped), 7)]
    body = await read_body(chunks(*pieces), content_length=None, encoding="gzip", limit=100)
    assert body == b"one\ntwo\nthree"


@pytest.mark.parametrize(
    ("body", "count"),
    [
        (b'["a,b", "c\\",d", {"message": "e,f", "hostname": "g,h"}, "i"]', 4),
        (b'[{"message": "x", "timestamp": 1.5}, {"message": ",,,,"}]', 2),
    ],
)
def test_the_item_cap_counts_json_items_not_commas(body: bytes, count: int) -> None:
    assert len(parse_body(body, "application/json", 1000, max_items=count)) == count
    with pytest.raises(PayloadTooLarge, match=f"more than {count - 1} lines"):
        parse_body(body, "application/json", 1000, max_items=count - 1)
