"""Domain agents: turn parsed events into findings (issue 4)."""
