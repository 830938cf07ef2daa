"""Rendering: one finding as a message, several items as one digest."""

from __future__ import annotations

from typing import Any

from opmas.messages import Finding
from opmas.notify.render import DIGEST_LIST_CAP, digest, finding_payload, single


def _finding(severity: str, n: int = 0) -> Finding:
    return Finding(
        finding_id=f"00000000-0000-7000-8000-{n:012d}",
        agent_name="SecurityAgent",
        finding_ts_utc="2026-11-22T10:00:00.000Z",
        device_hostname=f"router-{n}",
        device_ip=None,
        severity=severity,
        finding_type="SshBruteForce",
        rule_name="ssh-brute-force-fast",
        description="10 failed SSH logins",
        details={},
        evidence_event_ids=[],
        domain="security",
    )


def test_a_finding_payload_names_severity_rule_and_device() -> None:
    payload = finding_payload(_finding("critical", 7))

    assert payload["subject"] == "[OPMAS] critical: ssh-brute-force-fast on router-7"
    assert "10 failed SSH logins" in payload["text"]
    assert payload["finding"]["finding_id"].endswith("000000000007")


def test_a_single_item_is_sent_as_itself_with_its_type() -> None:
    payload = finding_payload(_finding("error"))

    message = single(payload)

    assert message.subject == payload["subject"]
    assert message.body == {"type": "finding", **payload}


def test_one_item_digest_is_the_item_itself() -> None:
    payload = finding_payload(_finding("error"))
    assert digest([payload], 60) == single(payload)


def test_digest_counts_severities_and_lists_the_most_severe_first_up_to_the_cap() -> None:
    severities = ["warning"] * 30 + ["error"] * 5 + ["critical"] * 2
    payloads = [finding_payload(_finding(s, i)) for i, s in enumerate(severities)]

    message = digest(payloads, 60)

    assert message.subject == "[OPMAS] 37 findings (2 critical, 5 error) in the last 60 s"
    lines = message.text.splitlines()[2:]
    assert lines[0].startswith("- [critical]")
    assert lines[2].startswith("- [error]")
    assert len(lines) == DIGEST_LIST_CAP + 1
    assert lines[-1] == f"… and {37 - DIGEST_LIST_CAP} more"
    assert message.body["type"] == "digest"
    assert message.body["count"] == 37
    assert len(message.body["items"]) == 37


def test_digest_of_warnings_and_actions_says_notifications_without_severity_counts() -> None:
    action: dict[str, Any] = {"subject": "[OPMAS] action done", "text": "ok", "action": {"id": 1}}
    message = digest([finding_payload(_finding("warning")), action], 2.5)

    assert message.subject == "[OPMAS] 2 notifications in the last 2.5 s"
    assert "- [info] action done" in message.text
