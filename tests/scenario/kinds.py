"""Message kinds as `new-log-template` sees them: the spec the scenario's expectations follow."""

from __future__ import annotations

from opmas.agents.rules.novelty import WILDCARD, tokenize


class MessageKinds:
    """Which messages are of a kind never seen before, per program (the novelty rule's spec).

    A message's template is its masked tokens; it belongs to a program's template of the same
    length and first token (`<*>` if that token has a digit) when at least half of the tokens
    are equal, the differing ones becoming `<*>`; otherwise it is a new kind.
    """

    def __init__(self) -> None:
        self._templates: dict[tuple[str, int, str], list[list[str]]] = {}

    def learn(self, program: str, message: str) -> str | None:
        """Fold the message in; returns the new template's text when it is a new kind."""
        tokens = tokenize(message)
        if not tokens:
            return None
        first = WILDCARD if any(c.isdigit() for c in tokens[0]) else tokens[0]
        group = self._templates.setdefault((program, len(tokens), first), [])
        best, best_score = None, (-1.0, -1)
        for template in group:
            same = sum(a == b for a, b in zip(template, tokens, strict=True))
            params = sum(
                a == WILDCARD and b != WILDCARD for a, b in zip(template, tokens, strict=True)
            )
            score = (same / len(tokens), params)
            if score > best_score:
                best, best_score = template, score
        if best is not None and best_score[0] >= 0.5:
            for i, (mine, theirs) in enumerate(zip(best, tokens, strict=True)):
                if mine != theirs:
                    best[i] = WILDCARD
            return None
        group.append(list(tokens))
        return " ".join(tokens)
