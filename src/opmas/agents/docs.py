"""Prints docs/rules.md from the shipped pack: `python -m opmas.agents.docs > docs/rules.md`."""

from __future__ import annotations

import sys

from opmas.agents.pack import AGENT_DOMAINS, DEFAULT_LEARNING_S, GROUP_S, RuleSpec, load_pack

_HEADER = """\
# Default rules

Generated from `src/opmas/agents/pack/*.yaml` by `python -m opmas.agents.docs`; do not edit by
hand (a test checks that this file is up to date).

Each rule reads the parsed events of its domains (`logs.parsed.<domain>`) and publishes
findings to `findings.<domain>`; field names are those of `docs/events.md`. One burst gives one
finding, updated (count, evidence) while it lasts. Try a rule on a file offline with
`opmas rules test FILE --rule NAME`; list them with `opmas rules list`.
"""


_APPLY = """\
## The rules the agents run, and your own

The agents run the rules stored in PostgreSQL (`agent_rules`); the pack below is loaded into it
on an agent's first start. `opmas rules list` and `opmas rules show NAME` read that table and
mark where a rule differs from the pack: `edited: <fields>`, `disabled`, `not in pack` (your
own rule), `deleted` (loaded once, then removed), `not loaded yet` (the agent has not started
since the rule was shipped); `--pack` shows the shipped files instead, offline.
`opmas rules enable NAME` / `disable NAME` switch a rule; running agents pick up every edit
within `OPMAS_AGENTS__RULE_POLL_S` (2 s), keeping the windows of unchanged rules.

`opmas rules apply FILE...` saves the rules of YAML files into `agent_rules` (a rule of the same
agent and name is replaced; nothing is saved if any rule is wrong, and every error names its
file and line). `opmas rules export [NAME...] [--output F]` writes stored rules in this same
format, so export, edit, apply is the way to change one; applying an export unchanged changes
nothing. A file:

```yaml
agent: SecurityAgent            # optional: the default agent of the rules below
domain: security                # optional: the default domain (else the agent's)
rules:
  - name: ssh-root-login        # kebab-case, unique per agent
    type: PATTERN               # PATTERN THRESHOLD CORRELATION STATISTICAL MACHINE_LEARNING FLEET
    severity: warning           # info, warning, error, critical (or LOW, MEDIUM, HIGH)
    finding_type: SshRootLogin  # CamelCase
    description: root logged in over SSH on {hostname} from {ip}   # {fields} of the event
    agent: SecurityAgent        # WiFiAgent, SecurityAgent, HealthAgent, WanAgent
    enabled: true
    conditions:                 # all must hold; operators: == != > >= < <= in not_in
      - {field: event, operator: '==', value: ssh_password_auth_succeeded}  # contains
      - {field: user, operator: '==', value: root}       # startswith regex (RE2) exists
    group_by: [hostname, ip]    # the key a finding is counted for
    cooldown_s: 600             # PATTERN, THRESHOLD, CORRELATION, STATISTICAL
    examples:                   # at least one line the rule matches
      - "Sat Nov 21 10:00:01 2026 authpriv.notice dropbear[3327]: Password auth succeeded
        for 'root' from 192.168.1.5:51234"
```

By type, also: THRESHOLD `threshold`, `window_s`, `group_by` (and `distinct: FIELD` to count
distinct values); PATTERN `unless_preceded_by: {conditions: [...], within_s: N}`; CORRELATION
`steps: [{name, conditions, min_count}]`, `join_on`, `window_s`; STATISTICAL `bucket_s`,
`z_threshold`, `warmup_buckets`, `min_count`; MACHINE_LEARNING `novelty: template|key`,
`learning_s`, `learning_events`, `group_s`, `hold_s` (see "Novelty findings" below); FLEET
`threshold`, `min_routers`, `window_s`, `group_by` (see "Fleet rules" below). `domains: [...]`
makes a rule read several domains. The rules below are examples of each.
"""


_FLEET = """\
## Fleet rules

Every other rule counts per router: an attacker who stays under each router's threshold
(3 failed SSH logins on each of 10 routers) is never seen by them. A FLEET rule counts across
the whole fleet, in two halves:

- Per router, where its lines are evaluated: each event that meets the rule's `conditions`
  adds 1 to a count for its key (`group_by`, e.g. `[ip]`: the attacker) and its router. These
  counts travel as compact signals (one per rule, key and router, covering at most 60 s of the
  router's event time) on `signals.fleet` to the one fleet stage (`opmas run fleet`).
- Fleet-wide, in the fleet stage: a key whose signals add up to at least `threshold` events
  from at least `min_routers` distinct routers within `window_s` seconds (event time) opens one
  finding, updated as the burst grows (same finding id, larger count, more routers) until
  `cooldown_s` (default: `window_s`) passes without a signal. The finding has no router
  (`device_hostname` is empty), domain and agent of its rule, and names the attacker and the
  routers: `details.key`, the `group_by` fields (`ip`), `devices` (sorted hostnames, the first
  100), `routers` (how many), `count`, `window_s`, `threshold`, `min_routers`, `trust` (the
  weakest of its evidence); its evidence is the first 20 event ids. The orchestrator files it
  with the other findings about the same attacker (`ip`, `src_ip`).

```yaml
  - name: ssh-brute-force-fleet
    type: FLEET
    severity: error
    finding_type: FleetSshBruteForce
    description: 'SSH brute force from {ip} across {routers} routers ({count} in {window_s} s)'
    conditions:
      - {field: event, operator: in, value: [ssh_bad_password, ssh_nonexistent_user]}
    group_by: [ip]         # the key counted across routers
    threshold: 20          # events of that key, all routers together ...
    min_routers: 3         # ... from at least this many routers
    window_s: 900
    cooldown_s: 900        # optional; default window_s
```

The description can use `{count}`, `{routers}`, `{devices}`, `{window_s}`, `{threshold}`,
`{min_routers}`, `{key}` and the `group_by` fields. `opmas rules test FILE` evaluates FLEET
rules too (lines without a hostname all count as one router, `local`). The fleet stage
rebuilds its windows after a restart by reading the signals of the last window and cooldown
again, so a burst that straddles a restart gives one finding.

## Time, and routers whose clock is wrong

Windows, cooldowns and learning run on the lines' own time (their timestamp, resolved to UTC),
so a file replayed later gives the findings it gave live. A rule's state expires on the
fleet's clock, though: a router that booted without NTP (1970), or logs local time in a zone
far from UTC, would have its lines expire before they were counted. So a line received over
UDP, TCP, TLS or HTTP whose own time is more than 60 s from its arrival is flagged
`clock_skew` and counted at its arrival time; the stored event keeps the time the router
wrote (`event_ts`) and the flag. Files (`opmas rules test`, `replay --dry-run`) and
`opmas replay` keep their own times.
"""


_NOVELTY = """\
## Novelty findings

The MACHINE_LEARNING rules (`new-log-template`, `dhcp-new-client-mac`) report what the fleet
has never shown before. They are information (`info`), never alerts:

- Learning: a program's templates are learned silently during its first `learning_s` seconds
  *of event time* (the lines' own timestamps, so a replayed file is learned in its own time,
  not the wall clock's) and its first `learning_events` messages, whichever ends later; a key
  rule learns during its own first `learning_s` seconds and `learning_events` events. A
  handful of lines is no vocabulary: without the count, each program of a short file reported
  its next kinds as new.
- Order: a new kind is judged `hold_s` seconds (15) after it is first met, and the
  occurrence with the earliest event time met meanwhile is the one judged: reported on its
  router, or learned silently when it falls in the learning time. A pipeline worker evaluates
  its partitions' messages in the order it fetched them, so a replayed day can show router B's
  evening before router A's morning; the hold makes the result that of event-time order as
  long as the partitions are less than `hold_s` apart. A restart within the hold of a new kind
  loses its finding (held kinds are not saved with the templates).
- Grouping: the new templates of one router and program within `group_s` (an hour) make one
  finding keyed `hostname|program` (a key rule: `hostname`), opened by the first of them and
  updated as more come, like a THRESHOLD burst. `details.templates` (or `details.keys`) lists
  the first 20, `details.count` counts them all, `details.novelty` is `template` or `key`.
- Incidents: a novelty finding joins the open incident of its router but never names it or
  raises its severity: an incident's title and severity come from its most severe finding
  that is not a novelty finding (the first one at that severity). An incident opened by
  novelty findings alone has severity `info` and the title `Novelty only on <router>: ...`;
  the first other finding that joins it takes over its title and severity.
- `opmas replay FILE` marks its findings `details.replay: true`; notifications and playbooks
  skip them unless the replay was run with `--notify`. `opmas replay --dry-run FILE` (or
  `opmas rules test FILE`) evaluates a file offline and sends nothing.
"""


def _grouping(rule: RuleSpec, what: str) -> str:
    per = "router" if rule.novelty == "key" else "router and program"
    return f"one finding per {per} per {rule.group_s or GROUP_S:g} s lists the new {what}"


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
    elif rule.type == "FLEET":
        text = (
            f"at least {rule.threshold} events from at least {rule.min_routers} routers within"
            f" {rule.window_s:g} s per {group}, all routers together"
        )
    elif rule.type == "STATISTICAL":
        text = (
            f"count per {rule.bucket_s:g} s bucket per {group} above its EWMA baseline by "
            f"z ≥ {rule.z_threshold:g}, after {rule.warmup_buckets} warm-up buckets and at "
            f"least {rule.min_count} events"
        )
    elif rule.novelty == "key":
        learning = rule.learning_s or 0
        text = (
            f"a value of {group} never seen before (after the rule's first {learning:g} s"
            f" and {rule.learning_events or 0} events); {_grouping(rule, 'values')}"
        )
    else:
        learning = DEFAULT_LEARNING_S if rule.learning_s is None else rule.learning_s
        text = (
            f"a message template never seen before for {group} (each one's first"
            f" {learning:g} s and {rule.learning_events or 0} messages are learned silently);"
            f" {_grouping(rule, 'templates')}"
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
    lines = [_HEADER, _APPLY, _FLEET, _NOVELTY]
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
