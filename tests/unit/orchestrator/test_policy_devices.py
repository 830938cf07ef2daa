"""The device check of the action policy: SSH steps need an enrolled router's row."""

from __future__ import annotations

from opmas.orchestrator.policy import step_verdict


def test_an_ssh_step_for_a_hostname_without_a_device_row_is_created_rejected() -> None:
    verdict = step_verdict("ssh_command", "manual", None, "address", None, "gw-unknown")
    assert (verdict.state, verdict.by) == ("rejected", "enrolment")
    assert verdict.note is not None
    assert verdict.note.startswith("no enrolled device for hostname gw-unknown")


def test_an_ssh_step_of_a_finding_naming_no_router_is_created_rejected() -> None:
    verdict = step_verdict("ssh_command", "auto", None, "verified", None, None)
    assert verdict.state == "rejected"
    assert "names no router" in (verdict.note or "")


def test_steps_that_log_in_nowhere_need_no_device() -> None:
    assert step_verdict("notify", "auto", None, "untrusted", None, None).state is None
    assert step_verdict("webhook", "manual", None, "address", None, None).state is None


def test_an_ssh_step_on_an_enrolled_router_is_left_to_the_playbook() -> None:
    assert step_verdict("ssh_command", "manual", None, "address", "enrolled", "r1").state is None
