"""Parser files: user directories override shipped parsers; errors come with file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from opmas.errors import ConfigError
from opmas.parser import SHIPPED_DIR, ParserEngine, ParserFilesError, check_parser_dirs
from opmas.parser import load_parsers as load
from tests.unit.parser.conftest import raw

USER_HOSTAPD = """\
name: hostapd
version: 7
programs: [hostapd]
domain: wifi
event_type: NETWORK
patterns:
  - event: custom_seen
    regex: '^(?P<interface>\\S+): CUSTOM (?P<thing>\\w+)'
    example: 'Sat Nov 21 10:00:01 2026 daemon.info hostapd: wlan0: CUSTOM x'
"""

USER_NEW = """\
name: avahi
version: 1
programs: [avahi-daemon]
domain: other
event_type: LOG
fallback_event: mdns_message
patterns:
  - event: mdns_group_joined
    regex: 'Joining mDNS multicast group on interface (?P<interface>\\S+)'
"""


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_parsers_load_without_errors() -> None:
    assert check_parser_dirs() == []
    names = {parser.spec.name for parser in load()}
    assert {"hostapd", "dnsmasq", "dropbear", "kernel", "netifd", "pppd", "mwan3"} <= names
    assert all(path.suffix == ".yaml" for path in SHIPPED_DIR.iterdir() if path.is_file())


def test_a_user_file_with_a_shipped_name_replaces_the_shipped_parser(tmp_path: Path) -> None:
    write(tmp_path, "hostapd.yaml", USER_HOSTAPD)
    engine = ParserEngine.from_dirs([tmp_path])
    event = engine.parse(raw("<30>Nov 21 10:00:01 r hostapd: wlan0: CUSTOM thing"))
    assert event.parser_name == "hostapd_parser_v7"
    assert event.structured_fields == {
        "event": "custom_seen",
        "interface": "wlan0",
        "thing": "thing",
    }
    shipped_line = raw("<30>Nov 21 10:00:01 r hostapd: wlan0: AP-ENABLED")
    assert engine.parse(shipped_line).structured_fields == {"event": "hostapd_message"}


def test_a_user_parser_adds_a_program_without_code(tmp_path: Path) -> None:
    write(tmp_path, "avahi.yaml", USER_NEW)
    engine = ParserEngine.from_dirs([tmp_path])
    joined = engine.parse(
        raw(
            "Wed Apr 10 21:02:36 2024 daemon.info avahi-daemon[1]: "
            "Joining mDNS multicast group on interface br-lan.IPv4 with address 10.0.0.1."
        )
    )
    assert joined.parser_name == "avahi_parser_v1"
    assert joined.structured_fields == {"event": "mdns_group_joined", "interface": "br-lan.IPv4"}
    other = engine.parse(
        raw("Wed Apr 10 21:02:36 2024 daemon.info avahi-daemon[1]: Server startup complete.")
    )
    assert other.structured_fields == {"event": "mdns_message"}


def test_user_patterns_run_on_re2(tmp_path: Path) -> None:
    write(tmp_path, "avahi.yaml", USER_NEW)
    parser = next(p for p in load([tmp_path]) if p.spec.name == "avahi")
    assert not parser.shipped
    assert type(parser.patterns[0].matcher).__name__ == "Re2Pattern"


def test_a_user_pattern_that_re2_cannot_run_is_rejected_with_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path, "avahi.yaml", USER_NEW.replace("(?P<interface>\\S+)", "(?=x)(?P<interface>\\S+)")
    )
    errors = check_parser_dirs([tmp_path])
    assert len(errors) == 1
    assert errors[0].path == str(path)
    assert errors[0].line == 9
    assert "RE2" in str(errors[0])


def test_every_error_is_reported_with_file_and_line(tmp_path: Path) -> None:
    bad_yaml = write(tmp_path, "a_bad_yaml.yaml", "name: x\nprograms: [a\n")
    off_schema = write(tmp_path, "b_schema.yaml", USER_NEW.replace("domain: other", "domain: sky"))
    bad_regex = write(
        tmp_path,
        "c_regex.yaml",
        USER_NEW.replace("name: avahi", "name: avahi2")
        .replace("programs: [avahi-daemon]", "programs: [avahi2]")
        .replace("(?P<interface>\\S+)", "(?P<interface>\\S+"),
    )
    unknown_key = write(
        tmp_path,
        "d_unknown.yaml",
        USER_NEW.replace("name: avahi", "name: avahi3")
        .replace("programs: [avahi-daemon]", "programs: [avahi3]")
        .replace("    regex:", "    colour: red\n    regex:"),
    )
    errors = check_parser_dirs([tmp_path])
    where = {(Path(e.path or "").name, e.line) for e in errors}
    assert (bad_yaml.name, 3) in where
    assert (off_schema.name, 4) in where
    assert (bad_regex.name, 9) in where
    assert (unknown_key.name, 9) in where
    with pytest.raises(ParserFilesError) as raised:
        load([tmp_path])
    assert len(raised.value.errors) == len(errors) == 4
    assert isinstance(raised.value, ConfigError)
    assert f"{bad_regex}:9:" in str(raised.value)


def test_template_and_delegate_references_are_checked(tmp_path: Path) -> None:
    text = USER_NEW.replace("event: mdns_group_joined", "event: '{nothing}'").replace(
        "    regex:", "    delegate: {parser: nowhere, group: interface}\n    regex:"
    )
    path = write(tmp_path, "avahi.yaml", text)
    messages = [(str(e), e.line) for e in check_parser_dirs([tmp_path])]
    assert any("{nothing}" in message and line == 8 for message, line in messages)
    assert any("nowhere" in message and line == 9 for message, line in messages)
    assert all(str(path) in message for message, _ in messages)


def test_two_user_files_claiming_one_program_clash(tmp_path: Path) -> None:
    write(tmp_path, "one.yaml", USER_NEW)
    write(tmp_path, "two.yaml", USER_NEW.replace("name: avahi", "name: avahi_two"))
    errors = check_parser_dirs([tmp_path])
    assert any("avahi-daemon" in str(error) for error in errors)


def test_a_missing_user_directory_is_an_error(tmp_path: Path) -> None:
    errors = check_parser_dirs([tmp_path / "absent"])
    assert errors
    assert "not found" in str(errors[0])


def test_a_later_user_directory_overrides_an_earlier_one(tmp_path: Path) -> None:
    write(tmp_path / "a", "avahi.yaml", USER_NEW)
    write(tmp_path / "b", "avahi.yaml", USER_NEW.replace("version: 1", "version: 2"))
    engine = ParserEngine.from_dirs([tmp_path / "a", tmp_path / "b"])
    line = "Wed Apr 10 21:02:36 2024 daemon.info avahi-daemon[1]: hi"
    assert engine.parse(raw(line)).parser_name == "avahi_parser_v2"
