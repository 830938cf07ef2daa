"""Which pipeline worker owns which device partition: leases in a NATS key-value bucket.

Every worker keeps a member key `w.<worker>` alive and, for each partition it owns, a lease
key `p.<partition>` naming it. The bucket's TTL ends both for a worker that stops renewing
(crashed, or stopped by SIGSTOP for longer than the TTL). The partitions are spread over the
live members in a fixed way (partition `p` goes to the `p mod n`-th member in sorted order),
so every worker computes the same plan from the same member list:

- a worker *acquires* a partition the plan gives it once nobody holds its lease (create only
  succeeds on a missing key: two workers can never both hold one);
- it *releases* a partition the plan gives to another: it stops consuming first, then deletes
  the lease, and the new owner takes it on its next round;
- a lease it holds is renewed with the revision it last wrote; if that fails someone else
  holds it (this worker was too slow), and the partition is dropped at once.

A worker joining or leaving moves only the partitions the plan moves, and a partition is
consumed by at most one worker at a time (between the old owner's release and the new
owner's acquisition nobody consumes it; its messages wait in the stream).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import nats.errors
import nats.js.errors
import structlog
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from opmas.bus.connect import Bus
from opmas.bus.subjects import Subjects
from opmas.errors import BusError

log = structlog.get_logger(__name__)

_NATS_ERRORS = (nats.errors.Error, asyncio.TimeoutError)


def lease_bucket(subjects: Subjects) -> str:
    """The key-value bucket of the leases, within the namespace."""
    ns = subjects.namespace
    return f"{ns.upper()}_PIPELINE_LEASES" if ns else "PIPELINE_LEASES"


def plan(members: list[str], partitions: int) -> dict[int, str]:
    """Partition -> the member that should own it (members sorted; empty: no plan)."""
    ordered = sorted(members)
    if not ordered:
        return {}
    return {p: ordered[p % len(ordered)] for p in range(partitions)}


@dataclass
class Changes:
    """What a round of `PartitionLeases.renew` decided."""

    acquired: set[int] = field(default_factory=set)  # start consuming these
    to_release: set[int] = field(default_factory=set)  # stop consuming, then `release`
    lost: set[int] = field(default_factory=set)  # another worker holds them now: stop at once
    not_renewed: str | None = None  # why some leases were not renewed (kept until their TTL)


class PartitionLeases:
    """The leases of one worker; see the module docstring. Not safe for concurrent rounds."""

    def __init__(self, bus: Bus, worker: str, partitions: int, *, ttl_s: float) -> None:
        self._bus = bus
        self.worker = worker
        self.partitions = partitions
        self._ttl_s = ttl_s
        self._kv: KeyValue | None = None
        self._held: dict[int, int] = {}  # partition -> revision of our lease
        self._member_rev: int | None = None

    @property
    def bucket(self) -> str:
        return lease_bucket(self._bus.subjects)

    @property
    def held(self) -> frozenset[int]:
        return frozenset(self._held)

    async def open(self) -> None:
        """Create or bind the bucket (idempotent; every worker may do it)."""
        js = self._bus.js
        try:
            self._kv = await js.key_value(self.bucket)
        except nats.js.errors.BucketNotFoundError:
            config = KeyValueConfig(
                bucket=self.bucket, history=1, ttl=self._ttl_s, storage=StorageType.FILE
            )
            try:
                self._kv = await js.create_key_value(config)
            except nats.js.errors.BadRequestError:  # created meanwhile by another worker
                self._kv = await js.key_value(self.bucket)
        except _NATS_ERRORS as exc:
            raise BusError(f"partition leases: cannot open bucket {self.bucket}: {exc!r}") from exc

    def _bucket(self) -> KeyValue:
        if self._kv is None:
            raise RuntimeError("PartitionLeases is not open")
        return self._kv

    async def members(self) -> list[str]:
        """The workers whose member key is alive."""
        try:
            keys = await self._bucket().keys()
        except nats.js.errors.NoKeysError:
            return []
        return sorted(key[2:] for key in keys if key.startswith("w."))

    async def _keep_member(self) -> None:
        kv, key, value = self._bucket(), f"w.{self.worker}", self.worker.encode()
        if self._member_rev is not None:
            try:
                self._member_rev = await kv.update(key, value, last=self._member_rev)
                return
            except nats.js.errors.KeyWrongLastSequenceError:
                pass  # expired (we were stopped too long): join again
        self._member_rev = await kv.put(key, value)

    async def renew(self) -> Changes:
        """One round: keep this worker a member, renew its leases, compute what to change.

        Raises BusError when NATS does not answer; the caller keeps what it holds until the
        TTL says otherwise, and tries again.
        """
        try:
            return await self._renew()
        except _NATS_ERRORS as exc:
            raise BusError(f"partition leases: {exc!r}") from exc

    async def _renew(self) -> Changes:
        kv = self._bucket()
        await self._keep_member()
        members = await self.members()
        if self.worker not in members:  # our own put is not visible yet: count ourselves
            members.append(self.worker)
        wanted = {p for p, owner in plan(members, self.partitions).items() if owner == self.worker}
        changes = Changes()
        held = list(self._held.items())
        # all at once: under load a KV write waits for a busy JetStream, and one after the
        # other they outlasted the TTL they were renewing
        renewed = await asyncio.gather(
            *(
                kv.update(f"p.{partition}", self.worker.encode(), last=revision)
                for partition, revision in held
            ),
            return_exceptions=True,
        )
        failure = next(
            (
                r
                for r in renewed
                if isinstance(r, BaseException)
                and not isinstance(r, nats.js.errors.KeyWrongLastSequenceError)
            ),
            None,
        )
        for (partition, _), result in zip(held, renewed, strict=True):
            if partition not in self._held:
                continue  # released while the round was out (a hand-over runs beside it)
            if isinstance(result, nats.js.errors.KeyWrongLastSequenceError):
                del self._held[partition]
                changes.lost.add(partition)
                log.warning("partition lease lost", partition=partition, worker=self.worker)
                continue
            if isinstance(result, int):
                self._held[partition] = result
            if partition not in wanted:
                changes.to_release.add(partition)
        if failure is not None:
            changes.not_renewed = repr(failure)
            return changes  # the others were renewed and what was lost is reported
        for partition in sorted(wanted - set(self._held)):
            try:
                self._held[partition] = await kv.create(f"p.{partition}", self.worker.encode())
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # still held by its previous owner: next round
            changes.acquired.add(partition)
        return changes

    async def release(self, partitions: set[int]) -> None:
        """Give up leases (after consuming them has stopped)."""
        kv = self._bucket()
        for partition in sorted(partitions):
            revision = self._held.pop(partition, None)
            if revision is None:
                continue
            with contextlib.suppress(*_NATS_ERRORS):
                await kv.delete(f"p.{partition}", last=revision)

    async def leave(self) -> None:
        """Release every lease and the membership, so the others take over at once."""
        await self.release(set(self._held))
        if self._member_rev is not None and self._kv is not None:
            with contextlib.suppress(*_NATS_ERRORS):
                await self._kv.delete(f"w.{self.worker}")
            self._member_rev = None
