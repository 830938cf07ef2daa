"""Prints docs/rules.md from the shipped pack: `python -m opmas.agents.docs > docs/rules.md`."""

from __future__ import annotations

import sys

from opmas.agents.pack import AGENT_DOMAINS, DEFAULT_LEARNING_S, RuleSpec, load_pack

_HEADER = """\
# Default rules

Generated from `src/opmas/agents/pack/*.yaml` by `python -m opmas.agents.docs`; do not edit by
hand (a test checks that this file is up to date).

Each rule reads the parsed events of its domains (`logs.parsed.<domain>`) and publishes
findings to `findings.<domain>`; field names are those of `docs/events.md`. One burst gives one
finding, updated (count, evidence) while it lasts. Try a rule on a file offline with
`opmas rules test FILE --rule NAME`; list them with `opmas rules list`.
"""


def _thresholds(rule: RuleSpec) -> str:
    group = ", ".join(f"`{g}`" for g in rule.group_by or ["hostname"])
    if rule.type == "THRESHOLD":
        what = f"distinct `{rule.distinct}` values" if rule.distinct else "events"
        text = f"at least {rule.threshold} {what} within {rule.window_s:g} s per {group}"
    elif rule.type == "PATTERN":
        text = f"each matching event, per {group}"
        if rule.unless_preceded_by is not None:
            excuse = rule.unless_preceded_by
            parts = " and ".join(
                f"`{c.get('field')} {c.get('operator')} {c.get('value', True)!r}`"
                for c in excuse.conditions
            )
            text += f", unless an event with {parts} came within {excuse.within_s:g} s before"
    elif rule.type == "CORRELATION":
        steps = " then ".join(f"{s.min_count} x {s.name or 'step'}" for s in rule.steps or ())
        joined = ", ".join(f"`{j}`" for j in rule.join_on or ())
        text = f"{steps} within {rule.window_s:g} s, joined on {joined}"
    elif rule.type == "STATISTICAL":
        text = (
            f"count per {rule.bucket_s:g} s bucket per {group} above its EWMA baseline by "
            f"z ≥ {rule.z_threshold:g}, after {rule.warmup_buckets} warm-up buckets and at "
            f"least {rule.min_count} events"
        )
    elif rule.novelty == "key":
        learning = rule.learning_s or 0
        text = f"a value of {group} never seen before (after the rule's first {learning:g} s)"
    else:
        learning = DEFAULT_LEARNING_S if rule.learning_s is None else rule.learning_s
        text = (
            f"a message template never seen before for {group}"
            f" (each one's first {learning:g} s is learned silently)"
        )
    if rule.cooldown_s:
        text += f"; cooldown {rule.cooldown_s:g} s"
    return text


def _conditions(rule: RuleSpec) -> list[str]:
    lists = (
        [("", rule.conditions)]
        if rule.type != "CORRELATION"
        else [(f"{s.name or 'step'}: ", s.conditions) for s in rule.steps or ()]
    )
    out = []
    for prefix, conditions in lists:
        parts = [
            f"`{c.get('field')} {c.get('operator')} {c.get('value', True)!r}`" for c in conditions
        ]
        out.append(prefix + (" and ".join(parts) if parts else "every event"))
    return out


def render(rules: list[RuleSpec]) -> str:
    """The Markdown page for `rules`, grouped by agent in pack order."""
    lines = [_HEADER]
    for agent in AGENT_DOMAINS:
        mine = [r for r in rules if r.agent == agent]
        if not mine:
            continue
        lines.append(f"## {agent}\n")
        lines.append("| rule | type | severity | finding type |")
        lines.append("|---|---|---|---|")
        lines.extend(
            f"| [`{r.name}`](#{r.name}) | {r.type} | {r.severity} | `{r.finding_type}` |"
            for r in mine
        )
        lines.append("")
        for rule in mine:
            lines.append(f"### {rule.name}\n")
            lines.append(f"{rule.description}\n")
            lines.append(
                f"- type: {rule.type}; severity: {rule.severity}; finding type: "
                f"`{rule.finding_type}`; reads: {', '.join(rule.reads)}"
                + ("" if rule.enabled else "; disabled")
            )
            lines.append(f"- fires on: {_thresholds(rule)}")
            for text in _conditions(rule):
                lines.append(f"- conditions: {text}")
            lines.append("- example lines:\n")
            lines.append("```")
            lines.extend(rule.examples)
            lines.append("```\n")
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    sys.stdout.write(render(load_pack()))


if __name__ == "__main__":
    main()
