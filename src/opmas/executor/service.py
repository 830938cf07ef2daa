"""The `executor` component: runs approved actions (SSH command, signed webhook, notification)
and records how they ended.

- Finds work two ways: a message on actions.approved wakes it at once, and a poll of the
  database every `poll_s` finds anything a lost message would have hidden.
- Claims an action with the approved -> running transition, a compare-and-set: of two
  executors exactly one runs it. At most `concurrency` actions run at the same time.
- Checks the allowlist again (it may have changed since the action was proposed), then makes
  up to 1 + retry_count attempts, each bounded by timeout_seconds, with a doubling backoff.
- At start, actions left running by a crashed executor long enough go back to approved.
Every transition is committed, then published on actions.<state>.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from typing import Self

import structlog
from prometheus_client import Counter, Histogram
from sqlalchemy import or_, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from opmas.bus.connect import Bus
from opmas.bus.consume import Msg, PullConsumer
from opmas.bus.subjects import ActionState
from opmas.crypto import SecretKeys
from opmas.db.engine import session_factory
from opmas.errors import ActionError, BusError
from opmas.executor.attempts import Outcome, refused, run_attempts
from opmas.executor.runners import Runners
from opmas.messages import Action
from opmas.models import IntendedAction
from opmas.orchestrator.allowlist import load_allowlist
from opmas.orchestrator.lifecycle import action_message, publish_action, transition
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
DURABLE = "executor"
BY = "executor"
RECOVERY_SLACK_S = 60
STALE_RUNNING = text(
    "status = 'running' AND started_at < now() - make_interval(secs => "
    "timeout_seconds * (retry_count + 1) + :slack + :backoff * (power(2, retry_count) - 1))"
)


class Executor:
    """Runs approved actions; one instance per process, several processes may share the DB."""

    name = "executor"

    def __init__(self, engine: AsyncEngine, bus: Bus, settings: Settings) -> None:
        self._settings = settings.executor
        self._all_settings = settings  # protected targets: actions, bind addresses
        self._bus = bus
        self._sessions = session_factory(engine)
        self._runners = Runners(self._sessions, SecretKeys(settings).box, self._settings)
        self._consumer: PullConsumer | None = None
        self._wake = asyncio.Event()
        self._running: dict[int, asyncio.Task[ActionState | None]] = {}

    async def __aenter__(self) -> Self:
        self._consumer = PullConsumer(
            self._bus,
            self._bus.subjects.actions_stream,
            DURABLE,
            filter_subject=self._bus.subjects.actions(ActionState.APPROVED),
        )
        await self._consumer.__aenter__()
        await self.recover()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._consumer is not None:
            await self._consumer.__aexit__(None, None, None)

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch approved actions until `stop`; then wait for the actions in hand."""
        listener = asyncio.create_task(self._listen(stop))
        try:
            while not stop.is_set():
                await self.dispatch()
                await self._idle(stop)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, BusError):
                await listener
            if self._running:
                await asyncio.gather(*self._running.values(), return_exceptions=True)

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
        """Claim, run and record action `action_id`; its final state, None if not claimed."""
        message = await self._claim(action_id)
        if message is None:
            return None
        started = time.monotonic()
        try:
            outcome = await self._perform(action_id, message)
        except Exception as exc:  # one action's bug must not stop the executor
            log.exception("action crashed", action_id=action_id)
            outcome = refused(f"executor error: {type(exc).__name__}: {exc}")
        await self._finish(action_id, outcome)
        ACTIONS.labels(message.action_type, str(outcome.state)).inc()
        DURATION.labels(message.action_type).observe(time.monotonic() - started)
        log.info(
            "action finished",
            action_id=action_id,
            action_type=message.action_type,
            outcome=str(outcome.state),
            attempts=len(outcome.attempts),
            error=outcome.error,
        )
        return outcome.state

    async def _claim(self, action_id: int) -> Action | None:
        async with self._sessions() as session:
            try:
                await transition(session, action_id, ActionState.RUNNING, by=BY)
            except ActionError:
                return None  # another executor took it, or it was rejected meanwhile
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
                allowlist = await load_allowlist(session)
                hit = allowlist.check_action(
                    row.action_type, row.action_config, message.device_hostname
                )
                if hit is not None:
                    return refused(f"target is allowlisted: {hit}")
                targets = await load_policy(session, self._all_settings)
                protected = await targets.check_action(
                    session, row.action_type, row.action_config, message.device_hostname
                )
                if protected is not None:
                    return refused(protected)
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
        )

    async def _finish(self, action_id: int, outcome: Outcome) -> None:
        made = sum(1 for record in outcome.attempts if record["attempt"] > 0)
        async with self._sessions() as session:
            await transition(
                session,
                action_id,
                outcome.state,
                by=BY,
                note=outcome.error,
                result=outcome.result,
                attempts=made,
            )
            await session.commit()
            message = await action_message(session, action_id)
        await self._publish(message)

    async def recover(self) -> list[int]:
        """Put actions left running by a stopped executor back to approved; their ids."""
        params = {"slack": RECOVERY_SLACK_S, "backoff": self._settings.retry_backoff_s}
        recovered: list[int] = []
        async with self._sessions() as session:
            ids = list(
                await session.scalars(select(IntendedAction.id).where(STALE_RUNNING), params)
            )
            for action_id in ids:
                note = "running too long: its executor stopped; run again"
                with contextlib.suppress(ActionError):  # it finished meanwhile
                    await transition(session, action_id, ActionState.APPROVED, by=BY, note=note)
                    await session.commit()
                    recovered.append(action_id)
                    await self._publish(await action_message(session, action_id))
        if recovered:
            log.warning("stale actions recovered", action_ids=recovered)
        return recovered

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
