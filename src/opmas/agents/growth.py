"""Findings published when their burst opens and republished as it grows, at most once per
interval: what a domain agent and the fleet stage both do with the findings they make."""

from __future__ import annotations

import time

from opmas.bus.connect import Bus
from opmas.bus.publish import Publisher
from opmas.messages import Finding, encode


class GrowingFindings:
    """Publication state of open findings: when each was last sent, which grew since.

    At most `2 * max_tracked` send times are kept (the older half dropped beyond that).
    """

    def __init__(self, bus: Bus, *, max_tracked: int) -> None:
        self._bus = bus
        self._max_tracked = max_tracked
        self._pending: dict[str, Finding] = {}  # grown findings not yet republished
        self._published: dict[str, float] = {}  # finding id -> monotonic time of last publish

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def opened(self, finding: Finding) -> None:
        """`finding` is about to be published whole: no growth of it is pending."""
        self._pending.pop(finding.finding_id, None)

    def grew(self, finding: Finding) -> None:
        self._pending[finding.finding_id] = finding

    async def publish(self, publisher: Publisher, finding: Finding) -> None:
        """Send `finding` on `findings.<domain>`; JetStream drops a repeat of the same count."""
        await publisher.publish(
            self._bus.subjects.findings(finding.domain),
            encode(finding),
            msg_id=f"{finding.finding_id}:{finding.count}",
        )
        self._published[finding.finding_id] = time.monotonic()
        if len(self._published) > 2 * self._max_tracked:
            oldest = sorted(self._published, key=self._published.__getitem__)
            for finding_id in oldest[: len(oldest) // 2]:
                del self._published[finding_id]

    async def flush(self, interval_s: float, *, force: bool = False) -> int:
        """Republish grown findings last sent `interval_s` ago (all with `force`); how many.

        The due ones are taken before publishing (another caller may flush meanwhile) and put
        back if publishing fails, to be due again next time.
        """
        if not self._pending:
            return 0
        now = time.monotonic()
        due = [
            f
            for f in self._pending.values()
            if force or now - self._published.get(f.finding_id, 0.0) >= interval_s
        ]
        if not due:
            return 0
        for finding in due:
            del self._pending[finding.finding_id]
        publisher = Publisher(self._bus)
        try:
            for finding in due:
                await self.publish(publisher, finding)
            await publisher.flush()
        except BaseException:
            for finding in due:
                self._pending.setdefault(finding.finding_id, finding)
            raise
        return len(due)
