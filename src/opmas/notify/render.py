"""What the notifier says: one finding or action as a message, several as one digest (pure).

A history row's `payload` is `{"subject", "text", "severity"?, "finding"|"action": {...}}`;
the notifier writes it for findings, the executor for `notify` actions.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opmas.messages import Finding
from opmas.models.base import SEVERITIES

PREFIX = "[OPMAS]"
DIGEST_LIST_CAP = 20
"""Items listed in a digest's text; the rest are counted ("… and 17 more")."""

_RANK = {severity: rank for rank, severity in enumerate(SEVERITIES)}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
MAX_SUBJECT = 250


def one_line(text: str, limit: int = MAX_SUBJECT) -> str:
    """`text` without control characters (CR, LF, ESC... each run becomes one space), cut to
    `limit`: what a subject or headline taken from data may carry."""
    return _CONTROL.sub(" ", text).strip()[:limit]


@dataclass(frozen=True)
class Message:
    """One message to send: a subject line, a plain text body and the JSON a webhook gets."""

    subject: str
    text: str
    body: dict[str, Any] = field(default_factory=dict)


def finding_payload(finding: Finding) -> dict[str, Any]:
    """The history payload of `finding` as first seen: subject, text and its fields."""
    where = finding.device_hostname or finding.device_ip or "unknown device"
    subject = one_line(f"{PREFIX} {finding.severity}: {finding.rule_name} on {where}")
    lines = [
        finding.description,
        "",
        f"severity: {finding.severity}",
        f"domain: {finding.domain}",
        f"type: {finding.finding_type}",
        f"rule: {finding.rule_name}",
        f"device: {where}",
        f"first seen: {finding.finding_ts_utc}",
        f"count: {finding.count}",
        f"finding id: {finding.finding_id}",
    ]
    return {
        "subject": subject,
        "text": "\n".join(lines),
        "severity": finding.severity,
        "finding": {
            "finding_id": finding.finding_id,
            "domain": finding.domain,
            "severity": finding.severity,
            "finding_type": finding.finding_type,
            "rule_name": finding.rule_name,
            "agent_name": finding.agent_name,
            "description": finding.description,
            "device_hostname": finding.device_hostname,
            "device_ip": finding.device_ip,
            "finding_ts_utc": finding.finding_ts_utc,
            "count": finding.count,
            "details": finding.details,
        },
    }


def item_kind(payload: Mapping[str, Any]) -> str:
    """`finding`, `action` or `notification`: what a payload is about."""
    if "finding" in payload:
        return "finding"
    if "action" in payload:
        return "action"
    return "notification"


def item_severity(payload: Mapping[str, Any]) -> str:
    """The payload's severity (its own, or its finding's or action's); `info` when none."""
    candidates = [payload.get("severity")]
    for key in ("finding", "action"):
        inner = payload.get(key)
        if isinstance(inner, Mapping):
            candidates.append(inner.get("severity"))
    return next((str(s) for s in candidates if s in _RANK), "info")


def single(payload: Mapping[str, Any]) -> Message:
    """The message for one item: its own subject and text; JSON `{"type": <kind>, ...}`."""
    subject = one_line(str(payload.get("subject") or f"{PREFIX} {item_kind(payload)}"))
    text = str(payload.get("text") or subject)
    return Message(subject=subject, text=text, body={"type": item_kind(payload), **payload})


def digest(payloads: Sequence[Mapping[str, Any]], interval_s: float) -> Message:
    """One message for several items: counts in the subject, the most severe listed first.

    The text lists at most DIGEST_LIST_CAP items and says how many more there are; the JSON
    is `{"type": "digest", "count": N, "items": [...]}` with every item.
    """
    if len(payloads) == 1:
        return single(payloads[0])
    ordered = sorted(payloads, key=lambda p: -_RANK[item_severity(p)])
    by_severity = Counter(item_severity(p) for p in payloads)
    counts = [f"{by_severity[s]} {s}" for s in ("critical", "error") if by_severity[s]]
    detail = f" ({', '.join(counts)})" if counts else ""
    subject = (
        f"{PREFIX} {len(payloads)} {_noun(payloads)}{detail} in the last {_seconds(interval_s)} s"
    )
    lines = [f"- [{item_severity(p)}] {_headline(p)}" for p in ordered[:DIGEST_LIST_CAP]]
    if len(ordered) > DIGEST_LIST_CAP:
        lines.append(f"… and {len(ordered) - DIGEST_LIST_CAP} more")
    body = {"type": "digest", "count": len(payloads), "items": [dict(p) for p in ordered]}
    return Message(subject=subject, text="\n".join([subject, "", *lines]), body=body)


def _noun(payloads: Sequence[Mapping[str, Any]]) -> str:
    kinds = {item_kind(p) for p in payloads}
    return f"{kinds.pop()}s" if len(kinds) == 1 else "notifications"


def _headline(payload: Mapping[str, Any]) -> str:
    subject = one_line(str(payload.get("subject") or item_kind(payload)))
    return subject.removeprefix(PREFIX).strip()


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
