"""The `executor` component: runs approved actions (SSH command, signed webhook, notification)
and records how they ended.

- Finds work two ways: a message on actions.approved wakes it at once, and a poll of the
  database every `poll_s` finds anything a lost message would have hidden.
- Claims an action with the approved -> running transition, a compare-and-set (UPDATE ...
  WHERE status = 'approved' RETURNING): of two executors, a redelivered message or a restart,
  exactly one claim wins, and the row records which executor instance holds it.
- Checks the allowlist again (it may have changed since the action was proposed), then makes
  up to 1 + retry_count attempts, each bounded by timeout_seconds, with a doubling backoff.
  Each attempt is counted on the row before it is made; the outcome is recorded only while
  the action is still this executor's.
- Every `heartbeat_s` (and at start) it refreshes the heartbeat of the actions it runs and
  looks for running actions whose executor is gone (its process, on this machine), silent for
  `stale_s`, or past the action's whole time budget: those become `interrupted` ("may or may
  not have run on the router"). Nothing puts an action back to approved but an operator's retry.
Every transition is committed, then published on actions.<state>.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from datetime import UTC, datetime
from typing import Self

import structlog
from prometheus_client import Counter, Histogram
from sqlalchemy import or_, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from opmas.bus.connect import Bus
from opmas.bus.consume import Msg, PullConsumer
from opmas.bus.subjects import ActionState
from opmas.crypto import SecretKeys
from opmas.db.engine import session_factory
from opmas.errors import ActionError, BusError
from opmas.executor import claims, liveness
from opmas.executor.attempts import Outcome, refused, run_attempts
from opmas.executor.runners import Runners
from opmas.messages import Action
from opmas.models import IntendedAction
from opmas.orchestrator.allowlist import load_allowlist
from opmas.orchestrator.lifecycle import (
    action_message,
    action_messages,
    publish_action,
    transition,
)
from opmas.orchestrator.targets import load_policy
from opmas.settings import Settings

log = structlog.get_logger(__name__)

ACTIONS = Counter(
    "opmas_executor_actions_total", "Actions run to an end, by outcome.", ["action_type", "outcome"]
)
DURATION = Histogram(
    "opmas_executor_action_duration_seconds",
    "From claiming an action to recording its outcome, retries included.",
    ["action_type"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600),
)
INTERRUPTED = Counter(
    "opmas_executor_actions_interrupted_total",
    "Actions found running with no live executor, made interrupted, by reason.",
    ["reason"],
)
DURABLE = "executor"
BY = "executor"
HEARTBEAT_S = 5.0  # how often an executor says it is alive, and looks for orphans
STALE_S = 30.0  # silent this long: its executor is taken for gone
OVERDUE_MARGIN_S = 30.0  # past an action's whole time budget by this much: interrupted
STOP_RECORD_S = 5.0  # at a forced stop, the time left to record the actions in hand


class Executor:
    """Runs approved actions; one instance per process, several processes may share the DB.

    `heartbeat_s` and `stale_s`: how often it says it is alive (and looks for orphans), and
    how long another executor's silence means that executor is gone.
    """

    name = "executor"

    def __init__(
        self,
        engine: AsyncEngine,
        bus: Bus,
        settings: Settings,
        *,
        heartbeat_s: float = HEARTBEAT_S,
        stale_s: float = STALE_S,
    ) -> None:
        self._settings = settings.executor
        self._all_settings = settings  # protected targets: actions, bind addresses
        self._bus = bus
        self._sessions = session_factory(engine)
        self._runners = Runners(self._sessions, SecretKeys(settings).box, self._settings)
        self._consumer: PullConsumer | None = None
        self._wake = asyncio.Event()
        self._running: dict[int, asyncio.Task[ActionState | None]] = {}
        self.instance = liveness.instance_id()  # written on every action it claims
        self._heartbeat_s = heartbeat_s
        self._stale_s = stale_s
        self._watch_failing = False

    async def __aenter__(self) -> Self:
        self._consumer = PullConsumer(
            self._bus,
            self._bus.subjects.actions_stream,
            DURABLE,
            filter_subject=self._bus.subjects.actions(ActionState.APPROVED),
        )
        await self._consumer.__aenter__()
        await self.interrupt_orphans()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._consumer is not None:
            await self._consumer.__aexit__(None, None, None)

    def health(self) -> str | None:
        """None while healthy; else why its consumer makes no progress (`opmas status`)."""
        return self._consumer.health() if self._consumer is not None else None

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch approved actions until `stop`; then wait for the actions in hand (their
        heartbeat goes on meanwhile)."""
        listener = asyncio.create_task(self._listen(stop))
        watch = asyncio.create_task(self._watch())
        try:
            while not stop.is_set():
                await self.dispatch()
                await self._idle(stop)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, BusError):
                await listener
            try:
                if self._running:
                    await asyncio.gather(*self._running.values(), return_exceptions=True)
            finally:
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch

    async def _listen(self, stop: asyncio.Event) -> None:
        assert self._consumer is not None  # noqa: S101 - set by __aenter__
        while not stop.is_set():
            try:
                await self._consumer.run(self._wake_up, stop)
            except BusError as exc:
                log.warning("wake-up consumer failed", error=str(exc))
                await asyncio.sleep(self._settings.poll_s)

    async def _wake_up(self, msgs: list[Msg]) -> None:
        self._wake.set()

    async def _idle(self, stop: asyncio.Event) -> None:
        """Wait for a wake-up, a finished action, `stop` or the next poll."""
        waits = [asyncio.create_task(self._wake.wait()), asyncio.create_task(stop.wait())]
        await asyncio.wait(
            waits, timeout=self._settings.poll_s, return_when=asyncio.FIRST_COMPLETED
        )
        for wait in waits:
            wait.cancel()
        self._wake.clear()

    async def _watch(self) -> None:
        """Heartbeat and orphan search every `heartbeat_s` until cancelled; a failure (the
        database is down) is logged once, and the next round tries again."""
        while True:
            await asyncio.sleep(self._heartbeat_s)
            try:
                await self.heartbeat()
                await self.interrupt_orphans()
            except Exception as exc:  # the loop must outlive a database outage
                if not self._watch_failing:
                    log.warning("executor heartbeat failed", error=repr(exc))
                self._watch_failing = True
            else:
                if self._watch_failing:
                    log.info("executor heartbeat back")
                self._watch_failing = False

    async def heartbeat(self) -> int:
        """Tell other executors this one is alive: refresh the actions it runs; how many."""
        async with self._sessions() as session:
            beaten = await claims.beat(session, self.instance)
            await session.commit()
        return beaten

    async def dispatch(self) -> list[int]:
        """Start approved actions while fewer than `concurrency` run; their ids."""
        free = self._settings.concurrency - len(self._running)
        if free <= 0:
            return []
        async with self._sessions() as session:
            ids = await session.scalars(
                select(IntendedAction.id)
                .where(
                    IntendedAction.status == str(ActionState.APPROVED),
                    or_(
                        IntendedAction.scheduled_at.is_(None),
                        IntendedAction.scheduled_at <= text("now()"),
                    ),
                )
                .order_by(IntendedAction.id)
                .limit(free + len(self._running))
            )
            started = [i for i in ids if i not in self._running][:free]
        for action_id in started:
            task = asyncio.create_task(self.execute(action_id), name=f"action-{action_id}")
            self._running[action_id] = task
            task.add_done_callback(functools.partial(self._done, action_id))
        return started

    def _done(self, action_id: int, task: asyncio.Task[ActionState | None]) -> None:
        self._running.pop(action_id, None)
        self._wake.set()
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("action not recorded", action_id=action_id, error=repr(error))

    async def execute(self, action_id: int) -> ActionState | None:
        """Claim, run and record action `action_id`; its final state, None if it was not
        claimed or was taken from this executor meanwhile (found interrupted: what it did is
        then noted in the action's history)."""
        message = await self._claim(action_id)
        if message is None:
            return None
        started = time.monotonic()
        try:
            outcome = await self._perform(action_id, message)
        except asyncio.CancelledError:
            await self._interrupt_own(action_id)
            raise
        except Exception as exc:  # one action's bug must not stop the executor
            log.exception("action crashed", action_id=action_id)
            outcome = refused(f"executor error: {type(exc).__name__}: {exc}")
        attempts = await self._finish(action_id, outcome)
        if attempts is None:
            return None
        ACTIONS.labels(message.action_type, str(outcome.state)).inc()
        DURATION.labels(message.action_type).observe(time.monotonic() - started)
        log.info(
            "action finished",
            action_id=action_id,
            action_type=message.action_type,
            outcome=str(outcome.state),
            attempts=attempts,
            error=outcome.error,
        )
        return outcome.state

    async def _claim(self, action_id: int) -> Action | None:
        """approved -> running, stamped with this instance, in one transaction; None if
        another executor (or a reject) got there first."""
        async with self._sessions() as session:
            try:
                await transition(session, action_id, ActionState.RUNNING, by=BY)
            except ActionError:
                return None  # another executor took it, or it was rejected meanwhile
            await claims.stamp(session, action_id, self.instance)
            await session.commit()
            message = await action_message(session, action_id)
        await self._publish(message)
        return message

    async def _perform(self, action_id: int, message: Action) -> Outcome:
        async with self._sessions() as session:
            row = await session.get(IntendedAction, action_id)
            if row is None:
                return refused(f"action {action_id} vanished")
            if row.action_type != "notify":  # telling people about a router targets nothing
                hit = await self._protected(session, row, message)
                if hit is not None:
                    return refused(hit)
            try:
                attempt = await self._runners.prepare(session, row, message)
            except ActionError as exc:
                return refused(str(exc))
            tries, timeout_s = row.retry_count + 1, float(row.timeout_seconds)
        return await run_attempts(
            attempt,
            tries=tries,
            timeout_s=timeout_s,
            backoff_base_s=self._settings.retry_backoff_s,
            before=functools.partial(self._count_attempt, action_id),
        )

    async def _protected(
        self, session: AsyncSession, row: IntendedAction, message: Action
    ) -> str | None:
        """Why the action's target must not be touched (allowlist, protected target), or None."""
        allowlist = await load_allowlist(session)
        hit = allowlist.check_action(row.action_type, row.action_config, message.device_hostname)
        if hit is not None:
            return f"target is allowlisted: {hit}"
        targets = await load_policy(session, self._all_settings)
        return await targets.check_action(
            session, row.action_type, row.action_config, message.device_hostname
        )

    async def _count_attempt(self, action_id: int, number: int) -> bool:
        """Count the attempt on the row before it is made; False (attempt nothing more) when
        the action was taken from this executor meanwhile (found interrupted)."""
        async with self._sessions() as session:
            total = await claims.count_attempt(session, action_id, self.instance)
            await session.commit()
        if total is None:
            log.warning("action taken from this executor; no more attempts", action_id=action_id)
        return total is not None

    async def _finish(self, action_id: int, outcome: Outcome) -> int | None:
        """Record `outcome` if the action is still this executor's; the attempts counted on
        its row, or None when it was interrupted meanwhile (the outcome goes to its history)."""
        async with self._sessions() as session:
            attempts = await claims.lock_own(session, action_id, self.instance)
            if attempts is None:
                await self._note_late(session, action_id, outcome)
                return None
            await transition(
                session,
                action_id,
                outcome.state,
                by=BY,
                note=outcome.error,
                result=outcome.result,
                attempts=attempts,
            )
            await session.commit()
            message = await action_message(session, action_id)
        await self._publish(message)
        return attempts

    async def _note_late(self, session: AsyncSession, action_id: int, outcome: Outcome) -> None:
        error = f": {outcome.error}" if outcome.error else ""
        entry = {
            "state": str(ActionState.INTERRUPTED),
            "at": datetime.now(UTC).isoformat(),
            "by": BY,
            "note": f"its executor came back after it was interrupted: "
            f"the run ended {outcome.state}{error}",
        }
        noted = await claims.note_late_outcome(session, action_id, self.instance, entry)
        await session.commit()
        log.warning(
            "action ended after it was interrupted",
            action_id=action_id,
            outcome=str(outcome.state),
            noted=noted,
        )

    async def interrupt_orphans(self) -> list[int]:
        """Make `interrupted` every running action whose executor is gone, silent or past the
        action's time (see `claims.orphans`); their ids. An action of this executor's own that
        is past its time is also cancelled here."""
        async with self._sessions() as session:
            found = await claims.orphans(
                session,
                self.instance,
                stale_s=self._stale_s,
                margin_s=OVERDUE_MARGIN_S,
                backoff_s=self._settings.retry_backoff_s,
            )
            for orphan in found:
                note = orphan.explanation()
                result = claims.interrupted_result(note, orphan.reason, orphan.executor_id)
                await transition(
                    session, orphan.id, ActionState.INTERRUPTED, by=BY, note=note, result=result
                )
            await session.commit()
            messages = await action_messages(session, [o.id for o in found]) if found else []
        for message in messages:
            await self._publish(message)
        for orphan in found:
            INTERRUPTED.labels(orphan.reason).inc()
            own = self._running.get(orphan.id) if orphan.executor_id == self.instance else None
            if own is not None:
                own.cancel()
        if found:
            log.warning(
                "actions interrupted",
                action_ids=[o.id for o in found],
                reasons=[o.reason for o in found],
            )
        return [o.id for o in found]

    async def _interrupt_own(self, action_id: int) -> None:
        """This executor is stopped (or gave up) while it runs `action_id`: record it
        interrupted, if it is still its own, within STOP_RECORD_S."""
        orphan = claims.Orphan(action_id, self.instance, "stopped", 0.0, 0.0, 0, 0)
        note = orphan.explanation()
        try:
            async with asyncio.timeout(STOP_RECORD_S):
                async with self._sessions() as session:
                    if await claims.lock_own(session, action_id, self.instance) is None:
                        return
                    result = claims.interrupted_result(note, orphan.reason, self.instance)
                    await transition(
                        session, action_id, ActionState.INTERRUPTED, by=BY, note=note, result=result
                    )
                    await session.commit()
                    message = await action_message(session, action_id)
                await self._publish(message)
        except Exception as exc:  # recorded by the next executor's orphan search instead
            log.warning("interrupted action not recorded", action_id=action_id, error=repr(exc))
            return
        INTERRUPTED.labels(orphan.reason).inc()
        log.warning("action interrupted by a stop", action_id=action_id)

    async def _publish(self, message: Action) -> None:
        """Publish a committed transition; the row stays the truth if the bus is down."""
        try:
            await publish_action(self._bus, message)
        except BusError as exc:
            log.warning(
                "action transition not published",
                action_id=message.action_id,
                state=message.state,
                error=str(exc),
            )
