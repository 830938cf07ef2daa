"""Idempotency-Key support of POST /api/v1/logs: a JetStream KV record per (client, key),
and ids derived from it so that a retry republishes exactly the same events.

A record is written `pending` before the first publish (fixing batch id and arrival time)
and `done` after the PubAcks; a retry of a done key publishes nothing.
"""

from __future__ import annotations

import hashlib
import uuid

import msgspec
import nats.errors
import nats.js.errors
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from opmas.bus.connect import Bus
from opmas.bus.subjects import Subjects
from opmas.errors import BusError

BUCKET = "INGEST_IDEMPOTENCY"
PENDING, DONE = "pending", "done"
_RAND_BITS = 74  # the random part of a UUIDv7: 12 bits rand_a + 62 bits rand_b
_RAND_MASK = (1 << _RAND_BITS) - 1
_NATS_ERRORS = (nats.errors.Error, TimeoutError)


def bucket_name(subjects: Subjects) -> str:
    """`<NS>_INGEST_IDEMPOTENCY`, or `INGEST_IDEMPOTENCY` without a namespace."""
    return f"{subjects.namespace.upper()}_{BUCKET}" if subjects.namespace else BUCKET


def record_key(client: str, key: str) -> str:
    """KV key of an Idempotency-Key sent by `client` (any text becomes a valid key)."""
    return hashlib.sha256(f"{client}\x00{key}".encode()).hexdigest()


def seeded_uuid7(ts: float, seed: str, index: int) -> str:
    """A UUIDv7 with the time `ts` whose random bits come from (`seed`, `index`): the same
    arguments give the same id, and ids of one seed differ for each index."""
    base = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:10], "big")
    rand = (base + index) & _RAND_MASK
    millis = int(ts * 1000) & ((1 << 48) - 1)
    value = (
        (millis << 80)
        | (0x7 << 76)
        | ((rand >> 62) << 64)
        | (0b10 << 62)
        | (rand & ((1 << 62) - 1))
    )
    return str(uuid.UUID(int=value))


class Record(msgspec.Struct):
    """What the KV bucket holds for one Idempotency-Key."""

    state: str
    batch_id: str
    arrival_ts: float
    count: int
    digest: str  # sha256 of the (unzipped) body: the same key with another body is a conflict


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Record).decode


class IdempotencyStore:
    """The KV bucket of Idempotency-Key records; every method raises BusError on NATS failure."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    @classmethod
    async def open(cls, bus: Bus, ttl_s: float) -> IdempotencyStore:
        """Open the bucket, creating it (idempotently) with a TTL of `ttl_s`."""
        name = bucket_name(bus.subjects)
        try:
            try:
                kv = await bus.js.key_value(name)
            except nats.js.errors.BucketNotFoundError:
                kv = await bus.js.create_key_value(
                    KeyValueConfig(bucket=name, history=1, ttl=ttl_s, storage=StorageType.FILE)
                )
        except _NATS_ERRORS as exc:
            raise BusError(f"cannot open the KV bucket {name}: {exc!r}") from exc
        return cls(kv)

    async def get(self, key: str) -> Record | None:
        try:
            entry = await self._kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return None
        except _NATS_ERRORS as exc:
            raise BusError(f"cannot read idempotency record: {exc!r}") from exc
        return _decode(entry.value) if entry.value else None

    async def begin(self, key: str, record: Record) -> Record:
        """Store `record` unless one exists; return the one that is stored now."""
        try:
            await self._kv.create(key, _encode(record))
        except nats.js.errors.KeyWrongLastSequenceError:
            existing = await self.get(key)
            if existing is None:
                raise BusError("idempotency record vanished while being created") from None
            return existing
        except _NATS_ERRORS as exc:
            raise BusError(f"cannot write idempotency record: {exc!r}") from exc
        return record

    async def complete(self, key: str, record: Record) -> None:
        done = msgspec.structs.replace(record, state=DONE)
        try:
            await self._kv.put(key, _encode(done))
        except _NATS_ERRORS as exc:
            raise BusError(f"cannot write idempotency record: {exc!r}") from exc
