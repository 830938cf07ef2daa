"""The console the operator commands print on: the terminal's width on a terminal, and wide
enough never to cut or wrap a table cell when stdout is a pipe or a file."""

from __future__ import annotations

from rich.console import Console, ConsoleDimensions

PIPED_WIDTH = 100_000
"""Columns assumed when stdout is not a terminal (rich would assume 80, or the width of the
terminal stdin is attached to, and cut every wider table to it)."""


class WideWhenPipedConsole(Console):
    """A rich Console whose width is unbounded when it does not write to a terminal.

    Checked at every print, so that a console made at import time follows a stdout that is
    swapped later (a test runner). `COLUMNS`, when set, still wins.
    """

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        if self.is_terminal or self._width is not None or "COLUMNS" in self._environ:
            return size
        return ConsoleDimensions(PIPED_WIDTH, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size
