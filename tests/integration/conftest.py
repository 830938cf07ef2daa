"""Fixtures for running the CLI in-process as a user would."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No `OPMAS_*` from the outer environment (test selectors aside), the test's directory
    as working directory and its own data dir; returns the data dir."""
    for name in list(os.environ):
        if name.startswith("OPMAS_") and not name.startswith("OPMAS_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    monkeypatch.setenv("OPMAS_DATA_DIR", str(data))
    return data


@pytest.fixture
def cli_database(cli_env: Path, monkeypatch: pytest.MonkeyPatch, database_url: str) -> str:
    """`cli_env` pointed at this test's database."""
    monkeypatch.setenv("OPMAS_DATABASE_URL", database_url)
    return database_url
