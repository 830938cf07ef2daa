"""`opmas status` shows a component whose child process did not answer as NOT_ANSWERING."""

from __future__ import annotations

from typing import Any

from opmas.status import mark_silent_children


def _process(pid: int, *components: dict[str, Any]) -> dict[str, Any]:
    return {"host": "vm", "pid": pid, "components": list(components)}


def test_a_child_that_did_not_answer_is_marked_and_one_that_did_is_not() -> None:
    up = _process(
        10,
        {"name": "pipeline", "status": "ACTIVE", "child_pid": 11},
        {"name": "agents", "status": "ACTIVE", "child_pid": 12},
        {"name": "api", "status": "ACTIVE", "child_pid": None},
        {"name": "fleet", "status": "ERROR", "child_pid": 13},
    )
    answers = [up, _process(12, {"name": "WiFiAgent", "status": "ACTIVE"})]
    mark_silent_children(answers)
    statuses = {c["name"]: c["status"] for c in up["components"]}
    assert statuses == {
        "pipeline": "NOT_ANSWERING",
        "agents": "ACTIVE",
        "api": "ACTIVE",
        "fleet": "ERROR",  # already shown as failing: its own error says more
    }
    assert "process 11 did not answer" in up["components"][0]["degraded"]
