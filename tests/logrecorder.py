"""A stand-in for a module's structlog logger that records what it is asked to log.

structlog caches a logger on first use once `opmas.logs.configure_logging` ran (an earlier
test may have run it), after which `structlog.testing.capture_logs` no longer sees it; tests of
"one log line per change" replace the module's `log` with this instead."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class LogRecorder:
    """`log.warning("event", key=value)` appends {"event", "log_level", key: value}."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def __getattr__(self, level: str) -> Callable[..., None]:
        def emit(event: str, *args: object, **fields: Any) -> None:
            self.entries.append({"event": event, "log_level": level, **fields})

        return emit

    @property
    def events(self) -> list[str]:
        return [entry["event"] for entry in self.entries]
