"""Message kinds as `new-log-template` sees them: the scenario's expectations use the rule's
own template mining (`NoveltyRule.learn`), so they follow it when it changes."""

from __future__ import annotations

from opmas.agents.rules.novelty import NoveltyRule


class MessageKinds:
    """Which messages are of a kind never seen before, per program."""

    def __init__(self) -> None:
        self._rule = NoveltyRule("scenario-kinds")

    def learn(self, program: str, message: str) -> str | None:
        """Fold the message in; returns the new template's text when it is a new kind."""
        template = self._rule.learn(program, message, 0.0)
        return None if template is None else template.text
