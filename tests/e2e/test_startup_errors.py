"""Start-up and configuration mistakes end in one line that names the variable or port, with
exit status 2 and no traceback (`opmas --debug` shows it); CLI commands never create a data
dir."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.e2e.conftest import OPMAS, servers_using


def _opmas(
    args: list[str], env: dict[str, str], cwd: Path, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [OPMAS, *args],
        env={**env, **extra},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The single line on stderr of a command that failed on its configuration."""
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if not line.startswith("20")]  # logs
    assert len(errors) == 1, done.stderr
    return errors[0]


@contextmanager
def _taken(kind: socket.SocketKind) -> Iterator[int]:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        if kind is socket.SOCK_STREAM:
            sock.listen()
        yield int(sock.getsockname()[1])


def test_the_http_port_in_use_is_one_line_naming_it(
    opmas_env: dict[str, str], tmp_path: Path
) -> None:
    with _taken(socket.SOCK_STREAM) as port:
        done = _opmas(["up"], opmas_env, tmp_path, OPMAS_HTTP_PORT=str(port))
    assert _one_error_line(done) == (
        f"error: HTTP port {port} on 127.0.0.1 is in use: stop what listens there, or set"
        " OPMAS_HTTP_PORT"
    )
    assert servers_using(tmp_path / "data") == []


def test_debug_shows_the_traceback_too(opmas_env: dict[str, str], tmp_path: Path) -> None:
    with _taken(socket.SOCK_STREAM) as port:
        done = _opmas(["--debug", "up"], opmas_env, tmp_path, OPMAS_HTTP_PORT=str(port))
    assert done.returncode == 2
    assert "Traceback" in done.stderr
    assert done.stderr.rstrip().splitlines()[-1].startswith(f"error: HTTP port {port} on")


@pytest.mark.parametrize(
    "own_process",
    [
        pytest.param({}, id="ingest-in-up"),
        pytest.param({"OPMAS_RUNTIME__OWN_PROCESS": "ingest"}, id="ingest-in-a-child"),
    ],
)
def test_a_syslog_port_in_use_stops_up_with_one_line_instead_of_restarting(
    opmas_env: dict[str, str], tmp_path: Path, own_process: dict[str, str]
) -> None:
    with _taken(socket.SOCK_DGRAM) as port:
        done = _opmas(["up"], opmas_env, tmp_path, OPMAS_SYSLOG_UDP_PORT=str(port), **own_process)
    assert _one_error_line(done) == (
        f"error: syslog UDP port {port} on 127.0.0.1 is in use: stop what listens there, or"
        " set OPMAS_SYSLOG_UDP_PORT (-1: off)"
    )
    assert "restarting" not in done.stdout
    assert "ready    ingest" not in done.stdout
    assert servers_using(tmp_path / "data") == []


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("OPMAS_HTTP_PORT", "eighty", 'OPMAS_HTTP_PORT="eighty": Input should be a valid integer'),
        ("OPMAS_PARSER_DIRS", '["./a"', "OPMAS_PARSER_DIRS is not valid JSON"),
        ("OPMAS_RUNTIME__OWN_PROCESS", "parsr", "OPMAS_RUNTIME__OWN_PROCESS: unknown component"),
        ("OPMAS_CONFIG_FILE", "nope.yaml", "OPMAS_CONFIG_FILE names nope.yaml"),
    ],
)
def test_a_bad_value_is_one_line_naming_its_variable(
    opmas_env: dict[str, str], tmp_path: Path, variable: str, value: str, expected: str
) -> None:
    done = _opmas(["up"], opmas_env, tmp_path, **{variable: value})
    assert expected in _one_error_line(done)


def test_an_unknown_variable_is_warned_about_with_the_closest_name(
    opmas_env: dict[str, str], tmp_path: Path
) -> None:
    done = _opmas(["config", "show", "--json"], opmas_env, tmp_path, OPMAS_HTPP_PORT="9000")
    assert done.returncode == 0, done.stderr
    assert done.stderr == (
        "warning: OPMAS_HTPP_PORT is not an OPMAS setting and is ignored"
        " (did you mean OPMAS_HTTP_PORT?)\n"
    )


def test_list_settings_take_plain_comma_separated_values(
    opmas_env: dict[str, str], tmp_path: Path
) -> None:
    done = _opmas(
        ["config", "show", "--json"],
        opmas_env,
        tmp_path,
        OPMAS_PARSER_DIRS="./my-parsers,./more",
        OPMAS_RUNTIME__OWN_PROCESS="parser,store",
    )
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["parser_dirs"] == ["my-parsers", "more"]
    assert shown["runtime"]["own_process"] == ["parser", "store"]


@pytest.mark.parametrize(
    "command",
    [["findings", "list"], ["events", "list"], ["migrate"], ["notify", "channel", "list"]],
)
def test_a_cli_command_without_a_data_dir_says_where_it_looked_and_creates_none(
    opmas_env: dict[str, str], tmp_path: Path, command: list[str]
) -> None:
    env = {k: v for k, v in opmas_env.items() if k != "OPMAS_DATA_DIR"}
    done = _opmas(command, env, tmp_path)
    assert done.returncode != 0
    assert "Traceback" not in done.stdout + done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert (
        f"no OPMAS data dir at {tmp_path / 'opmas-data'}: run 'opmas up' first, or set"
        " OPMAS_DATA_DIR"
    ) in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_cli_command_on_a_data_dir_nobody_runs_on_says_so(
    opmas_env: dict[str, str], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    done = _opmas(["findings", "list"], opmas_env, tmp_path)
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1, done.stderr
    assert f"no OPMAS is running on {data}: run 'opmas up' first" in done.stderr
    assert list(data.iterdir()) == []
