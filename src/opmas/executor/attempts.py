"""The attempts of one action: each bounded by its timeout, retried with a doubling backoff,
summed up as the final state and the `result` the executor stores.

Permanent failures (ActionError: refused host key, allowlisted target, bad argument) end the
run at once; anything else that fails, and timeouts, are retried until the attempts run out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncssh
import httpx
from sqlalchemy.exc import SQLAlchemyError

from opmas.bus.subjects import ActionState
from opmas.errors import ActionError, OpmasError, SecretError

Attempt = Callable[[], Awaitable[dict[str, Any]]]
Sleep = Callable[[float], Awaitable[None]]
Before = Callable[[int], Awaitable[bool]]  # the attempt's number, 1-based; False: stop
PERMANENT: tuple[type[BaseException], ...] = (ActionError, SecretError)
RETRYABLE: tuple[type[BaseException], ...] = (
    OSError,  # connection refused or reset
    asyncssh.Error,
    httpx.HTTPError,
    SQLAlchemyError,
    OpmasError,
)
MAX_ERROR_CHARS = 2000


class AttemptFailed(OpmasError):
    """An attempt ran and failed (non-zero exit, HTTP error status): worth a retry."""

    def __init__(self, reason: str, result: dict[str, Any]) -> None:
        super().__init__(reason)
        self.result = result


@dataclass
class Outcome:
    """The final state of an action, the attempts made and what each one did."""

    state: ActionState
    attempts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def result(self) -> dict[str, Any]:
        """The last attempt's fields at the top level, plus every attempt under `attempts`."""
        last = self.attempts[-1] if self.attempts else {}
        return {**last, "outcome": str(self.state), "attempts": self.attempts}

    @property
    def error(self) -> str | None:
        return self.attempts[-1].get("error") if self.attempts else None


def refused(reason: str) -> Outcome:
    """The outcome of an action refused before any attempt (allowlist, bad config)."""
    return Outcome(ActionState.FAILED, [{"attempt": 0, "outcome": "refused", "error": reason}])


def backoff_s(base_s: float, failed: int) -> float:
    """Delay after failed attempt number `failed` (1-based): base * 2**(failed-1)."""
    return float(base_s * 2 ** max(failed - 1, 0))


async def run_attempts(
    attempt: Attempt,
    *,
    tries: int,
    timeout_s: float,
    backoff_base_s: float,
    sleep: Sleep = asyncio.sleep,
    before: Before | None = None,
) -> Outcome:
    """Call `attempt` up to `tries` times until it succeeds or fails for good.

    `before(number)` is awaited ahead of each attempt, outside its timeout: the executor
    counts the attempt on the action's row there, so a crash mid-attempt leaves it counted.
    When it returns False the round ends there, with the attempts made so far.
    """
    records: list[dict[str, Any]] = []
    state = ActionState.FAILED
    for number in range(1, tries + 1):
        if number > 1:
            await sleep(backoff_s(backoff_base_s, number - 1))
        if before is not None and not await before(number):
            break
        state, record = await _one(attempt, number, timeout_s)
        records.append(record)
        if state is ActionState.SUCCEEDED or record.get("permanent"):
            break
    return Outcome(state, records)


async def _one(
    attempt: Attempt, number: int, timeout_s: float
) -> tuple[ActionState, dict[str, Any]]:
    started = time.monotonic()
    record: dict[str, Any] = {"attempt": number}
    try:
        async with asyncio.timeout(timeout_s):
            record.update(await attempt())
        state = ActionState.SUCCEEDED
    except TimeoutError:
        state = ActionState.TIMED_OUT
        record["error"] = f"timed out after {timeout_s:g} s"
    except AttemptFailed as exc:
        state = ActionState.FAILED
        record.update(exc.result)
        record["error"] = _short(exc)
    except PERMANENT as exc:
        state = ActionState.FAILED
        record.update(error=_short(exc), permanent=True)
    except RETRYABLE as exc:
        state = ActionState.FAILED
        record["error"] = _short(exc)
    record["outcome"] = str(state)
    record["duration_s"] = round(time.monotonic() - started, 3)
    return state, record


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:MAX_ERROR_CHARS]
