"""Run `opmas` as a user would: a separate process, its output read line by line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.peers.ports import free_port

__all__ = ["OPMAS", "OpmasProcess", "free_port"]

OPMAS = str(Path(sys.executable).parent / "opmas")


class OpmasProcess:
    """A running `opmas ...` whose stdout lines are collected in the background."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [OPMAS, *args],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float = 60.0) -> float:
        """Seconds until a line containing `text` appeared; fails with the output otherwise."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if any(text in line for line in self.lines):
                return time.monotonic() - started
            if self.proc.poll() is not None:
                time.sleep(0.2)
                pytest.fail(
                    f"opmas exited ({self.proc.returncode}) before {text!r}:\n{self.output}"
                )
            time.sleep(0.05)
        pytest.fail(f"no {text!r} within {timeout}s:\n{self.output}")

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self.close()
        return code

    def close(self) -> None:
        # worker processes share the pipe and end a moment after their parent (death signal)
        self._reader.join(60)
        if self.proc.stdout is not None and not self._reader.is_alive():
            self.proc.stdout.close()


def servers_using(path: Path) -> list[psutil.Process]:
    """postgres or nats-server processes whose command line names `path`."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(path) in cmdline and proc.info["name"] in ("postgres", "nats-server"):
            found.append(proc)
    return found


@pytest.fixture
def opmas_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPMAS_")}
    env.update(
        OPMAS_DATA_DIR=str(tmp_path / "data"),
        OPMAS_HTTP_PORT=str(free_port()),
        OPMAS_NATS_SYNC="false",
        OPMAS_SYSLOG_HOST="127.0.0.1",
        OPMAS_SYSLOG_UDP_PORT="0",
        OPMAS_SYSLOG_TCP_PORT="0",
        OPMAS_SYSLOG_TLS_PORT="0",
        COLUMNS="200",
    )
    yield env
    remove_root_clusters(tmp_path)


@pytest.fixture
def start_opmas(tmp_path: Path) -> Iterator[type[OpmasProcess]]:
    started: list[OpmasProcess] = []

    class _Tracked(OpmasProcess):
        def __init__(self, args: list[str], env: dict[str, str], cwd: Path = tmp_path) -> None:
            super().__init__(args, env, cwd)
            started.append(self)

    yield _Tracked
    for each in started:
        if each.proc.poll() is None:
            each.proc.kill()
        each.proc.wait()
        each.close()
    remove_root_clusters(tmp_path)


def remove_root_clusters(tmp_path: Path) -> None:
    """Run as root, `opmas up` keeps its PostgreSQL cluster outside the data dir (in
    /var/lib/opmas); remove those of the test's data dirs with them."""
    from opmas.embedded import PG_LOCATION_FILE, remove_outside_cluster

    for record in tmp_path.rglob(PG_LOCATION_FILE):
        remove_outside_cluster(record.parent)
