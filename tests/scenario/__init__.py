"""Scripted days of router logs with injected incidents, for end-to-end detection tests."""
