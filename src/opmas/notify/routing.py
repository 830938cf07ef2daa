"""Which channels a finding goes to: the enabled notification rules it matches (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from opmas.messages import Finding
from opmas.models.base import SEVERITIES

_RANK = {severity: rank for rank, severity in enumerate(SEVERITIES)}


@dataclass(frozen=True)
class Route:
    """An enabled notification rule as the router needs it: what it matches, where it sends."""

    rule_id: int
    min_severity: str
    max_severity: str
    domains: tuple[str, ...]
    categories: tuple[str, ...]
    channel_ids: tuple[int, ...]
    digest_interval_s: float = 0.0


def matches(route: Route, finding: Finding) -> bool:
    """True when `finding` is within the rule's severity range, domains and categories.

    Empty `domains` or `categories` match everything; a category matches the finding's
    `finding_type` or its `rule_name`. An unknown severity matches nothing, nor does a finding
    of `opmas replay` run without --notify (`details.replay`).
    """
    if finding.details.get("replay") is True:
        return False
    rank = _RANK.get(finding.severity)
    if rank is None or not _RANK[route.min_severity] <= rank <= _RANK[route.max_severity]:
        return False
    if route.domains and finding.domain not in route.domains:
        return False
    return not route.categories or bool(
        {finding.finding_type, finding.rule_name} & set(route.categories)
    )


def channels_for(routes: Iterable[Route], finding: Finding) -> dict[int, int]:
    """`{channel_id: rule_id}` for every channel a matching rule sends to (first rule wins)."""
    chosen: dict[int, int] = {}
    for route in routes:
        if matches(route, finding):
            for channel_id in route.channel_ids:
                chosen.setdefault(channel_id, route.rule_id)
    return chosen


def channel_interval(routes: Sequence[Route], channel_id: int, default_s: float) -> float:
    """Seconds between two messages on a channel: the smallest `digest_interval_s` > 0 of the
    rules that route to it, else `default_s`."""
    own = [r.digest_interval_s for r in routes if channel_id in r.channel_ids]
    return min((s for s in own if s > 0), default=default_s)


def per_channel(routes: Iterable[Route]) -> set[Route]:
    """Each (rule, channel) pair as a route of one channel: what is new when a rule or a
    channel of a rule appears, or a rule's filters change."""
    return {replace(route, channel_ids=(c,)) for route in routes for c in route.channel_ids}
