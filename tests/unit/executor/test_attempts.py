"""The attempt loop: retries, backoff, timeouts and errors that are not retried."""

from __future__ import annotations

import asyncio
from typing import Any

from opmas.bus.subjects import ActionState
from opmas.errors import ActionError
from opmas.executor.attempts import AttemptFailed, backoff_s, run_attempts


class _Script:
    """An attempt that does, call after call, what it is told."""

    def __init__(self, *steps: str) -> None:
        self.steps = list(steps)
        self.calls = 0

    async def __call__(self) -> dict[str, Any]:
        step = self.steps[min(self.calls, len(self.steps) - 1)]
        self.calls += 1
        if step == "fail":
            raise AttemptFailed("exited with 3", {"exit_status": 3})
        if step == "hang":
            await asyncio.sleep(10)
        if step == "refuse":
            raise ActionError("host key of r1 changed")
        if step == "reset":
            raise ConnectionResetError("reset by peer")
        return {"exit_status": 0}


async def _run(script: _Script, tries: int, slept: list[float]) -> Any:
    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    return await run_attempts(script, tries=tries, timeout_s=0.05, backoff_base_s=2.0, sleep=sleep)


async def test_failures_are_retried_with_doubling_backoff_until_success() -> None:
    slept: list[float] = []
    script = _Script("fail", "reset", "ok")
    outcome = await _run(script, 4, slept)
    assert outcome.state is ActionState.SUCCEEDED
    assert script.calls == 3
    assert slept == [2.0, 4.0]
    assert [a["outcome"] for a in outcome.attempts] == ["failed", "failed", "succeeded"]
    assert outcome.result["exit_status"] == 0
    assert len(outcome.result["attempts"]) == 3


async def test_last_attempt_failing_fails_the_action_with_every_attempt_recorded() -> None:
    outcome = await _run(_Script("fail"), 3, [])
    assert outcome.state is ActionState.FAILED
    assert [a["attempt"] for a in outcome.attempts] == [1, 2, 3]
    assert outcome.result["exit_status"] == 3
    assert outcome.error == "AttemptFailed: exited with 3"


async def test_timeouts_are_retried_and_a_last_timeout_times_the_action_out() -> None:
    script = _Script("hang")
    outcome = await _run(script, 2, [])
    assert outcome.state is ActionState.TIMED_OUT
    assert script.calls == 2
    assert outcome.error == "timed out after 0.05 s"


async def test_action_errors_are_not_retried() -> None:
    script = _Script("refuse", "ok")
    outcome = await _run(script, 5, [])
    assert outcome.state is ActionState.FAILED
    assert script.calls == 1
    assert "host key of r1 changed" in (outcome.error or "")


def test_backoff_doubles_from_the_base() -> None:
    assert [backoff_s(1.5, n) for n in (1, 2, 3)] == [1.5, 3.0, 6.0]


async def test_each_attempt_is_announced_before_it_is_made() -> None:
    seen: list[tuple[int, int]] = []
    script = _Script("fail", "ok")

    async def before(number: int) -> bool:
        seen.append((number, script.calls))  # the calls made before this attempt
        return True

    outcome = await run_attempts(script, tries=3, timeout_s=0.05, backoff_base_s=0.0, before=before)
    assert outcome.state is ActionState.SUCCEEDED
    assert seen == [(1, 0), (2, 1)]


async def test_a_refused_announcement_ends_the_round_with_the_attempts_made() -> None:
    script = _Script("fail")

    async def before(number: int) -> bool:
        return number < 2  # the action was taken from this executor after attempt 1

    outcome = await run_attempts(script, tries=3, timeout_s=0.05, backoff_base_s=0.0, before=before)
    assert script.calls == 1
    assert [a["attempt"] for a in outcome.attempts] == [1]
    assert outcome.state is ActionState.FAILED
