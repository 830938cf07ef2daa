"""One OPMAS per data dir: the lock, the instance file, and how CLI commands find the holder."""

from __future__ import annotations

import asyncio
import json
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from opmas import instance
from opmas.errors import DataDirError
from opmas.instance import Endpoints

ENDPOINTS = Endpoints("postgresql://u:pw@127.0.0.1:1/opmas", "nats://127.0.0.1:2", True, True)
HOLDER = """
import sys, time
from pathlib import Path
from opmas import instance
from opmas.instance import Endpoints
with instance.hold(Path(sys.argv[1])):
    endpoints = Endpoints("postgresql://u:pw@127.0.0.1:1/opmas", "nats://127.0.0.1:2", True, True)
    instance.record(Path(sys.argv[1]), endpoints, api_url="http://127.0.0.1:1234")
    print("held", flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding `tmp_path / "data"` until its stdin closes."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "data")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "held\n"
    yield proc
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(10)
    proc.stdout.close()


def test_a_second_holder_is_refused_naming_the_first(
    holder: subprocess.Popen[str], tmp_path: Path
) -> None:
    with pytest.raises(DataDirError) as refused, instance.hold(tmp_path / "data"):
        pass
    message = str(refused.value)
    assert f"pid {holder.pid}, started 20" in message
    assert "API http://127.0.0.1:1234" in message
    assert f"already runs on {tmp_path / 'data'}" in message
    assert "OPMAS_DATA_DIR" in message


def test_cli_commands_find_the_holder_and_its_servers(
    holder: subprocess.Popen[str], tmp_path: Path
) -> None:
    assert asyncio.run(instance.find(tmp_path / "data")) == ENDPOINTS
    assert instance.running(tmp_path / "data") == ENDPOINTS


def test_the_instance_file_is_private_and_gone_once_released(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with instance.hold(data):
        instance.record(data, ENDPOINTS, api_url="http://127.0.0.1:8080")
        path = data / instance.INSTANCE_FILE
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        recorded = json.loads(path.read_text())
        assert recorded["api_url"] == "http://127.0.0.1:8080"
        assert recorded["database_url"] == ENDPOINTS.database_url
        assert instance.is_held(data)
    assert not path.exists()
    assert not instance.is_held(data)
    with instance.hold(data):  # free again
        pass


def test_without_a_data_dir_cli_commands_fail_and_create_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "opmas-data"
    with pytest.raises(DataDirError, match=r"^no OPMAS data dir at .*: run 'opmas up' first"):
        asyncio.run(instance.find(missing))
    assert not missing.exists()


def test_a_data_dir_nobody_holds_is_not_running_whatever_files_are_left(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / instance.LOCK_FILE).write_text('{"pid": 1}')
    (data / instance.INSTANCE_FILE).write_text(json.dumps(ENDPOINTS.__dict__))  # a crash's
    with pytest.raises(DataDirError, match=r"^no OPMAS is running on .*OPMAS_DATABASE_URL"):
        asyncio.run(instance.find(data))
    assert instance.running(data) is None


def test_a_data_dir_that_cannot_be_made_is_one_line_naming_opmas_data_dir(
    tmp_path: Path,
) -> None:
    (tmp_path / "a-file").write_text("")
    with (
        pytest.raises(
            DataDirError, match=r"^cannot use .*a-file/data as data dir .*OPMAS_DATA_DIR"
        ),
        instance.hold(tmp_path / "a-file" / "data"),
    ):
        pass
