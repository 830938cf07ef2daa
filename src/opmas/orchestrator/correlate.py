"""Which incident a finding belongs to, and what an incident is once it holds several.

A finding naming an attacker IP (security domain: `ip`, `src_ip`...) joins the open incident of
that IP, whichever router reported it: one attacker on three routers is one `fleet_attack`,
not three incidents. Any other finding joins the open incident of its router within
`device_window_s`; a WAN-down finding beside Wi-Fi client drops on one router makes that
incident `uplink_or_power`.

An incident is named by its lead: its most severe finding that is not a novelty finding (the
first at that severity). Novelty findings (new log templates, new devices: `details.novelty`)
join incidents but never lead one nor raise its severity; an incident of novelty findings
alone is `info` and titled `Novelty only on <router>: ...` until another finding joins it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opmas.agents.pack import SEVERITY_ORDER
from opmas.messages import Finding
from opmas.settings import OrchestratorSettings

ATTACKER_FIELDS = ("ip", "src_ip", "source_ip")
WAN_DOWN_TYPES = frozenset({"InterfaceDown", "LinkFlapping", "PppoeLinkTimeouts", "WanFailover"})
WIFI_DROP_TYPES = frozenset({"HighClientChurn", "DeauthFlood"})
DEFAULT_CONNTRACK_MAX = 16384  # OpenWRT's /etc/sysctl.d/11-nf-conntrack.conf
MAX_PROPOSED_CONNTRACK = 262_144


@dataclass(frozen=True)
class Group:
    """The incident a finding goes to: its key, how long it stays open to new findings."""

    key: str
    window_s: float
    attacker_ip: str | None = None


def attacker_ip(finding: Finding) -> str | None:
    """The attacking address a security finding names, if any."""
    if finding.domain != "security":
        return None
    for name in ATTACKER_FIELDS:
        value = finding.details.get(name)
        if isinstance(value, str):
            try:
                return str(ipaddress.ip_address(value))
            except ValueError:
                continue
    return None


def group_of(finding: Finding, settings: OrchestratorSettings) -> Group:
    """The correlation group of `finding`."""
    ip = attacker_ip(finding)
    if ip is not None:
        return Group(f"attacker:{ip}", settings.attack_window_s, attacker_ip=ip)
    device = finding.device_hostname or finding.device_ip
    if device:
        return Group(f"device:{device}", settings.device_window_s)
    return Group(f"type:{finding.finding_type}", settings.device_window_s)


def is_novelty(finding: Finding) -> bool:
    """A novelty finding (MACHINE_LEARNING: new templates or keys): information only."""
    return finding.details.get("novelty") in ("template", "key")


def is_replay(finding: Finding) -> bool:
    """A finding of `opmas replay` run without --notify: it notifies nobody, acts on nothing."""
    return finding.details.get("replay") is True


def lent_severity(finding: Finding) -> str:
    """The severity a finding lends its incident: a novelty finding never more than info."""
    return "info" if is_novelty(finding) else finding.severity


def takes_lead(details: Mapping[str, Any], severity: str, finding: Finding) -> bool:
    """Whether `finding` names the incident it joins, given the incident's details and
    severity before it: the first finding does; after it, a finding that is not a novelty
    finding does when the incident held only novelty findings or it is more severe."""
    if not details.get("finding_types"):
        return True
    if is_novelty(finding):
        return False
    if details.get("novelty_only"):
        return True
    return SEVERITY_ORDER.index(finding.severity) > SEVERITY_ORDER.index(severity)


def merge_details(details: Mapping[str, Any], finding: Finding, group: Group) -> dict[str, Any]:
    """Incident details after adding `finding`: devices, domains and types seen, counts,
    whether it holds only novelty findings."""
    merged = dict(details)
    alone = merged.get("novelty_only", not merged.get("finding_types"))
    merged["novelty_only"] = bool(alone) and is_novelty(finding)
    devices = set(merged.get("devices", []))
    if finding.device_hostname or finding.device_ip:
        devices.add(finding.device_hostname or finding.device_ip)
    elif isinstance(routers := finding.details.get("devices"), list):  # a FLEET rule's finding
        devices.update(str(router) for router in routers)
    merged["devices"] = sorted(d for d in devices if d)
    merged["domains"] = sorted({*merged.get("domains", []), finding.domain})
    types: dict[str, int] = dict(merged.get("finding_types", {}))
    types[finding.finding_type] = types.get(finding.finding_type, 0) + 1
    merged["finding_types"] = types
    if group.attacker_ip is not None:
        merged["attacker_ip"] = group.attacker_ip
    return merged


def classify(details: Mapping[str, Any], min_wifi: int = 1) -> str:
    """The incident type its details show."""
    types: Mapping[str, int] = details.get("finding_types", {})
    if details.get("attacker_ip"):
        return "fleet_attack" if len(details.get("devices", [])) >= 2 else "attack"
    wan_down = any(t in WAN_DOWN_TYPES for t in types)
    wifi_drops = sum(n for t, n in types.items() if t in WIFI_DROP_TYPES)
    if wan_down and wifi_drops >= min_wifi:
        return "uplink_or_power"
    return "device_problem"


def title_of(incident_type: str, details: Mapping[str, Any], first_description: str) -> str:
    """A one-line title for the incident list."""
    devices: Sequence[str] = details.get("devices", [])
    if incident_type == "fleet_attack":
        return f"Attack from {details['attacker_ip']} on {len(devices)} routers"
    if incident_type == "attack":
        where = f" on {devices[0]}" if devices else ""
        return f"Attack from {details['attacker_ip']}{where}"
    if incident_type == "uplink_or_power":
        return f"Uplink or power loss on {', '.join(devices)}: WAN down while Wi-Fi clients drop"
    if details.get("novelty_only"):
        return f"Novelty only on {', '.join(devices) or '?'}: {first_description}"[:255]
    return first_description[:255]


def max_severity(*severities: str) -> str:
    """The most severe of `severities`."""
    return max(severities, key=SEVERITY_ORDER.index)


def finding_context(finding: Finding, device_config: Mapping[str, Any] | None) -> dict[str, Any]:
    """Values a playbook step may use as `{placeholders}`: the finding's details (its rule's
    group_by fields), its own fields, and derived values."""
    context: dict[str, Any] = dict(finding.details)
    context.update(
        hostname=finding.device_hostname or finding.device_ip or "",
        device_ip=finding.device_ip or "",
        severity=finding.severity,
        finding_type=finding.finding_type,
        rule_name=finding.rule_name,
        agent_name=finding.agent_name,
        domain=finding.domain,
        description=finding.description,
        count=finding.count,
        finding_id=finding.finding_id,
    )
    for alias, source in (("mac", "mac_address"), ("ip", "src_ip")):
        if alias not in context and source in context:
            context[alias] = context[source]
    current = _int((device_config or {}).get("nf_conntrack_max")) or _int(
        finding.details.get("conntrack_max")
    )
    context.setdefault("conntrack_max", current or DEFAULT_CONNTRACK_MAX)
    context["proposed_conntrack_max"] = min(
        2 * int(context["conntrack_max"]), MAX_PROPOSED_CONNTRACK
    )
    return context


def incident_context(
    base: Mapping[str, Any], incident_id: int, incident_type: str, details: Mapping[str, Any]
) -> dict[str, Any]:
    """`base` (a finding context) plus the incident's values, for incident playbooks."""
    devices: Sequence[str] = details.get("devices", [])
    return {
        **base,
        "incident_id": incident_id,
        "incident_type": incident_type,
        "attacker_ip": details.get("attacker_ip", ""),
        "devices": ", ".join(devices),
        "device_count": len(devices),
    }


def _int(value: object) -> int | None:
    try:
        return int(value) if value is not None else None  # type: ignore[call-overload]  # any JSON value
    except (TypeError, ValueError):
        return None
