"""Secrets stay out of sight: `opmas config show` and the `opmas up` banner never print a
password of the database or bus URL; the embedded servers refuse anonymous clients."""

from __future__ import annotations

import asyncio
import json
import stat
import subprocess
import time
from pathlib import Path

import asyncpg
import pytest

from tests.e2e.conftest import OPMAS, OpmasProcess
from tests.e2e.test_up import _wait_ready


def _password(url: str) -> str:
    return url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]


def _with_password(url: str, password: str) -> str:
    """`url` as is when it carries a password, else with user `opmas`... and `password`: the
    external test servers (trust auth, no NATS authorization) accept any, the embedded ones
    come with their own."""
    scheme, rest = url.split("://", 1)
    userinfo, at, address = rest.rpartition("@")
    if at and ":" in userinfo:
        return url
    user = userinfo if at else ("postgres" if scheme.startswith("postgres") else "opmas")
    return f"{scheme}://{user}:{password}@{address}"


@pytest.mark.parametrize("form", [[], ["--json"], ["--yaml"]])
def test_config_show_never_prints_a_url_password(
    opmas_env: dict[str, str], tmp_path: Path, form: list[str]
) -> None:
    env = {
        **opmas_env,
        "OPMAS_DATABASE_URL": "postgresql://opmas:db-pass-4711@db.example:5432/opmas",
        "OPMAS_NATS_URL": "nats://opmas:bus-pass-4712@nats.example:4222",
    }
    shown = subprocess.run(
        [OPMAS, "config", "show", *form], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "db-pass-4711" not in shown.stdout + shown.stderr
    assert "bus-pass-4712" not in shown.stdout + shown.stderr
    assert "nats.example" in shown.stdout  # the rest of the URL is still shown


async def _role(url: str) -> tuple[str, bool]:
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(
            "SELECT current_user AS name, rolsuper FROM pg_roles WHERE rolname = current_user"
        )
        assert row is not None
        return str(row["name"]), bool(row["rolsuper"])
    finally:
        await conn.close()


def test_up_with_embedded_servers_uses_credentials_it_never_prints(
    start_opmas: type[OpmasProcess], opmas_env: dict[str, str], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    up = start_opmas(["up"], opmas_env)
    _wait_ready(opmas_env["OPMAS_HTTP_PORT"])
    up.wait_for("ready    ingest")
    recorded = json.loads((data / "instance.json").read_text())
    assert stat.S_IMODE((data / "instance.json").stat().st_mode) == 0o600
    assert asyncio.run(_role(recorded["database_url"])) == ("opmas", False)
    secrets = [_password(recorded["database_url"]), _password(recorded["nats_url"])]
    secrets += [(data / n).read_text().strip() for n in ("postgres.password", "nats.password")]
    status = subprocess.run(  # a CLI command reaches both servers with the recorded credentials
        [OPMAS, "status", "--json"], env=opmas_env, cwd=tmp_path, capture_output=True, text=True
    )
    assert status.returncode == 0, status.stdout + status.stderr
    assert json.loads(status.stdout)["readiness"]["nats"] is True
    assert up.stop() == 0
    for secret in secrets:
        assert secret not in up.output
        assert secret not in status.stdout + status.stderr
    assert "at 127.0.0.1:" in up.output


def test_up_banner_shows_host_and_port_of_urls_with_passwords(
    start_opmas: type[OpmasProcess],
    opmas_env: dict[str, str],
    empty_database_url: str,
    nats_url: str,
) -> None:
    database_url = _with_password(empty_database_url, "db-pass-4713")
    bus_url = _with_password(nats_url, "bus-pass-4714")
    env = {**opmas_env, "OPMAS_DATABASE_URL": database_url, "OPMAS_NATS_URL": bus_url}
    env["OPMAS_BUS__NAMESPACE"] = f"s{int(time.time() * 1000)}"
    up = start_opmas(["up"], env)
    _wait_ready(opmas_env["OPMAS_HTTP_PORT"])
    assert up.stop() == 0
    for url in (database_url, bus_url):
        assert _password(url) not in up.output
        host_port = url.split("@", 1)[1].split("/", 1)[0]
        assert f"at {host_port}" in up.output
