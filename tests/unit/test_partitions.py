"""Device partitions: stable, one per router, and what `opmas up` runs of the pipeline."""

from __future__ import annotations

from opmas.bus.partition import by_partition, device_key, partition_of, partition_of_item
from opmas.messages import RawLog
from opmas.pipeline.leases import plan
from opmas.process import UP_COMPONENTS, _units


def _raw(line: str, **fields: str) -> RawLog:
    return RawLog("id", 0.0, line, "udp", **fields)


def test_the_partition_of_a_device_is_stable_and_ignores_case() -> None:
    assert partition_of("OpenWrt-R01", 16) == partition_of("openwrt-r01", 16)
    # CRC-32: the same in every process and release (a change would split routers' history)
    assert partition_of("OpenWrt-R01", 16) == 12
    assert {partition_of(f"gw-{n}", 16) for n in range(200)} == set(range(16))


def test_the_device_is_the_authenticated_then_the_named_then_the_sender() -> None:
    line = "<38>Nov 21 10:00:01 gw-lab dropbear[1]: Bad password attempt"
    assert device_key(_raw(line, source_ip="192.0.2.1")) == "gw-lab"
    assert device_key(_raw(line, bound_hostname="gw-real")) == "gw-real"
    assert device_key(_raw("no header at all", source_ip="192.0.2.9")) == "192.0.2.9"
    assert device_key(_raw("no header at all")) == "-"


def test_one_routers_lines_share_a_partition_whatever_the_transport() -> None:
    udp = _raw("<38>Nov 21 10:00:01 gw-lab dropbear[1]: x", source_ip="192.0.2.1")
    http = _raw("anything", hostname="gw-lab")
    assert partition_of_item(udp, 16) == partition_of_item(http, 16)
    assert partition_of_item(udp, 1) == 0
    groups = by_partition([udp, http, _raw("<38>Nov 21 10:00:01 gw-2 x: y")], 16)
    assert sorted(len(g) for g in groups.values()) == [1, 2]


def test_the_plan_gives_each_partition_one_member() -> None:
    owners = plan(["w2", "w1"], 5)
    assert owners == {0: "w1", 1: "w2", 2: "w1", 3: "w2", 4: "w1"}


def test_up_runs_the_pipeline_replicas_in_child_processes() -> None:
    units = _units(UP_COMPONENTS, ["pipeline"], replicas=3)
    assert units["pipeline"] == units["pipeline-2"] == units["pipeline-3"] == ("pipeline",)
    assert "pipeline-4" not in units
    assert "parser" not in units  # the workers do its work, and the store's
    assert "store" not in units
    assert _units(UP_COMPONENTS, [], replicas=3)["pipeline"] == ("pipeline",)
    assert "pipeline-2" not in _units(UP_COMPONENTS, [], replicas=3)
