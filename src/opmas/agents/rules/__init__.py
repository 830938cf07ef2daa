"""The pure rule engine: conditions, sliding windows and cooldowns, PATTERN and THRESHOLD rules.

No I/O here: agents feed events in and publish the hits that come out.
"""

from opmas.agents.rules.conditions import OPERATORS, Predicate, compile_conditions, field_getter
from opmas.agents.rules.types import HitKind, PatternRule, RuleHit, ThresholdRule, event_time
from opmas.agents.rules.windows import Burst, Cooldown, SlidingWindow, finding_id

__all__ = [
    "OPERATORS",
    "Burst",
    "Cooldown",
    "HitKind",
    "PatternRule",
    "Predicate",
    "RuleHit",
    "SlidingWindow",
    "ThresholdRule",
    "compile_conditions",
    "event_time",
    "field_getter",
    "finding_id",
]
