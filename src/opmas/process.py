"""One OPMAS process: shared resources, the chosen components under a supervisor, status.

`opmas up` runs every component here; `opmas run NAME` runs one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from opmas.agents.fleet_service import FleetStage
from opmas.agents.registry import AGENTS
from opmas.agents.service import DomainAgent
from opmas.api.server import ApiServer, bind
from opmas.db.maintenance import PartitionMaintainer
from opmas.enrolled import EnrolledDevices
from opmas.errors import ConfigError
from opmas.executor.service import Executor
from opmas.ingest.service import IngestService
from opmas.metrics import MetricsResponder
from opmas.notify.service import Notifier
from opmas.orchestrator.service import Orchestrator
from opmas.parser.engine import ParserEngine
from opmas.parser.service import ParserService
from opmas.pipeline.worker import PipelineWorker
from opmas.resources import Resources, open_resources
from opmas.runtime import ComponentFactory, ComponentState, Supervisor
from opmas.settings import Settings
from opmas.status import StatusResponder
from opmas.store.service import EventStore
from opmas.workers import CHILD_ENV, WorkerProcess

AGENT_COMPONENTS = tuple(AGENTS)  # agent-wifi, agent-security, agent-health, agent-wan
RESPONSE_COMPONENTS = ("orchestrator", "executor", "notifier")
COMPONENT_NAMES = (
    "maintenance",
    "store",
    "parser",
    *AGENT_COMPONENTS,
    "pipeline",
    "fleet",
    *RESPONSE_COMPONENTS,
    "ingest",
    "api",
)
"""Every component, in start order; `opmas run` accepts these names."""
UP_COMPONENTS = ("maintenance", "pipeline", "fleet", *RESPONSE_COMPONENTS, "ingest", "api")
"""What `opmas up` runs: the pipeline workers do the parser's, the agents' and the store's
work in one pass (`opmas run parser store agents` runs those stages separately instead)."""
GROUPS = {"agents": AGENT_COMPONENTS}
"""Names for several components at once: `opmas run agents`, `own_process: [agents]`."""


def expand(names: Sequence[str]) -> tuple[str, ...]:
    """Component names with groups replaced by their members, in start order.

    Raises:
        ValueError: a name is neither a component nor a group.
    """
    wanted: set[str] = set()
    for name in names:
        if name in GROUPS:
            wanted.update(GROUPS[name])
        elif name in COMPONENT_NAMES:
            wanted.add(name)
        else:
            known = ", ".join((*COMPONENT_NAMES, *GROUPS))
            raise ValueError(f"unknown component {name!r}; known: {known}")
    return tuple(name for name in COMPONENT_NAMES if name in wanted)


def _units(
    names: tuple[str, ...], own_process: Sequence[str], *, replicas: int = 1
) -> dict[str, tuple[str, ...]]:
    """What the supervisor runs: unit name -> its components. A component named in
    `own_process` is a unit alone; a group named there is one unit of its wanted members that
    are not named alone (`[agent-health, agents]`: health alone, the three others together).
    A pipeline in its own process runs as `replicas` processes (`pipeline`, `pipeline-2`...)."""
    alone = {n for n in own_process if n in COMPONENT_NAMES}
    group_of: dict[str, str] = {}
    for group, members in GROUPS.items():
        if group in own_process:
            for member in members:
                if member in names and member not in alone:
                    group_of.setdefault(member, group)
    units: dict[str, tuple[str, ...]] = {}
    for name in names:
        unit = group_of.get(name)
        if unit is None:
            units[name] = (name,)
            if name == "pipeline" and name in alone:
                units.update({f"pipeline-{n}": (name,) for n in range(2, replicas + 1)})
        elif unit not in units:
            units[unit] = tuple(n for n in names if group_of.get(n) == unit)
    return units


@dataclass
class Process:
    """An opened process, ready to `supervisor.run(stop)`."""

    resources: Resources
    supervisor: Supervisor
    api_socket: socket.socket | None
    children: int = 0  # components run in child processes

    @property
    def api_url(self) -> str | None:
        if self.api_socket is None:
            return None
        host, port = self.api_socket.getsockname()[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _factory(
    name: str, process: Process, *, own_process: bool = False, members: tuple[str, ...] = ()
) -> ComponentFactory:
    resources = process.resources
    if own_process:
        env = {
            **os.environ,
            "OPMAS_DATABASE_URL": resources.endpoints.database_url,
            "OPMAS_NATS_URL": resources.endpoints.nats_url,
        }
        runtime = resources.settings.runtime
        return lambda: WorkerProcess(
            name,
            env,
            components=members or (name,),
            ready_timeout_s=resources.settings.embedded.start_timeout_s,
            grace_s=runtime.shutdown_grace_s,
            abort=process.supervisor.halt,
        )
    if name == "api":
        return lambda: ApiServer(
            resources,
            sock=process.api_socket,
            supervisor=process.supervisor,
            children=process.children,
        )
    if name == "maintenance":
        return lambda: PartitionMaintainer(resources.engine, resources.settings.database)
    if name == "store":
        return lambda: EventStore(
            resources.endpoints.database_url,
            resources.bus,
            max_discovered=resources.settings.devices.max_discovered,
        )
    if name == "parser":
        return lambda: ParserService(
            resources.bus,
            ParserEngine.from_dirs(resources.settings.parser_dirs),
            enrolled=EnrolledDevices(resources.engine, resources.settings.ingest.trust_refresh_s),
        )
    if name == "ingest":
        return lambda: IngestService.from_settings(
            resources.settings, resources.bus, resources.engine
        )
    if name == "orchestrator":
        return lambda: Orchestrator(resources.engine, resources.bus, resources.settings)
    if name == "executor":
        return lambda: Executor(resources.engine, resources.bus, resources.settings)
    if name == "notifier":
        return lambda: Notifier(resources.engine, resources.bus, resources.settings)
    if name == "pipeline":
        return lambda: PipelineWorker(resources)
    if name == "fleet":
        return lambda: FleetStage(resources.engine, resources.bus, resources.settings.agents)
    if name in AGENTS:
        ident = AGENTS[name]
        return lambda: DomainAgent(
            ident, resources.engine, resources.bus, resources.settings.agents
        )
    raise ValueError(f"unknown component {name!r}; known: {', '.join(COMPONENT_NAMES)}")


@contextlib.asynccontextmanager
async def open_process(
    settings: Settings,
    names: tuple[str, ...],
    *,
    migrate_schema: bool,
    split: bool = False,
    on_status: Callable[[ComponentState], None] | None = None,
) -> AsyncIterator[Process]:
    """Open the resources, bind the API socket (so its address is known before start) and
    build the supervisor of `names`; answer status requests while open. With `split`
    (`opmas up`), the components named in `runtime.own_process` run in child processes."""
    names = expand(names)
    own = settings.runtime.own_process if split else []
    try:
        expand(own)
    except ValueError as exc:
        raise ConfigError(f"OPMAS_RUNTIME__OWN_PROCESS: {exc}") from None
    # bound before the servers start: a port in use fails at once, and says which
    sock = bind(settings.http_host, settings.http_port) if "api" in names else None
    try:
        async with open_resources(settings, migrate_schema=migrate_schema) as resources:
            process = Process(resources, Supervisor({}, settings.runtime), sock)
            units = _units(names, own, replicas=settings.pipeline.replicas)
            separate = {
                unit for unit, members in units.items() if unit in own or members != (unit,)
            }
            process.children = len(separate)
            factories = {
                unit: _factory(unit, process, own_process=unit in separate, members=members)
                for unit, members in units.items()
            }
            process.supervisor = Supervisor(factories, settings.runtime, on_status=on_status)
            states = process.supervisor.states
            async with (
                StatusResponder(resources.bus, lambda: states.values()),
                _metrics_for_parent(resources, names),
            ):
                yield process
    finally:
        if sock is not None:
            sock.close()


def _metrics_for_parent(
    resources: Resources, names: tuple[str, ...]
) -> contextlib.AbstractAsyncContextManager[object]:
    """In a child of `opmas up`, answer the parent's metrics requests; elsewhere nothing."""
    parent = os.environ.get(CHILD_ENV)
    if parent is None:
        return contextlib.nullcontext()
    return MetricsResponder(resources.bus, parent_pid=int(parent), component="+".join(names))


async def run_process(
    settings: Settings,
    names: tuple[str, ...],
    stop: asyncio.Event,
    *,
    migrate_schema: bool,
    split: bool = False,
    on_open: Callable[[Process], None] | None = None,
    on_status: Callable[[ComponentState], None] | None = None,
) -> None:
    """Run the named components until `stop` is set, then drain and close everything."""
    async with open_process(
        settings, names, migrate_schema=migrate_schema, split=split, on_status=on_status
    ) as process:
        if on_open is not None:
            on_open(process)
        await process.supervisor.run(stop)
