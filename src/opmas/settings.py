"""Settings for every component: environment (OPMAS_*) > bootstrap YAML file > defaults.

`Settings()` is built in `cli/` and in `api.app.create_app()` only; each component receives
its own sub-model.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from opmas.environment import OpmasEnvSource
from opmas.errors import ConfigError

DEFAULT_CONFIG_FILE = Path("config/opmas_config.yaml")
PLACEHOLDER_SECRETS = frozenset({"changeme", "change-me", "secret", "placeholder", "xxx"})
SECRET_KEY_FILE = "secret_key"  # noqa: S105 - a file name, not a secret


class DatabaseSettings(BaseModel):
    """Connection pool of the PostgreSQL engine."""

    pool_size: int = Field(10, ge=1, description="Connections kept open per process.")
    max_overflow: int = Field(10, ge=0, description="Extra connections allowed under load.")
    connect_timeout_s: float = Field(10.0, gt=0, description="Timeout to open a connection.")
    partitions_ahead_days: int = Field(
        7, ge=1, description="Daily `events` partitions created ahead of today."
    )
    partitions_ahead_months: int = Field(
        2, ge=1, description="Monthly `findings` partitions created ahead of this month."
    )
    events_retention_days: int = Field(
        30, ge=0, description="Daily `events` partitions older than this are dropped (0: keep)."
    )
    maintenance_interval_s: float = Field(
        3600.0, gt=0, description="How often partitions are created ahead and expired."
    )


class StreamLimits(BaseModel):
    """Retention limits of one JetStream stream."""

    max_age_s: int = Field(7 * 86400, ge=0, description="Oldest message kept (0: no limit).")
    max_bytes: int = Field(
        1024 * 1024 * 1024, ge=-1, description="Largest stream size in bytes (-1: no limit)."
    )


class BusSettings(BaseModel):
    """NATS JetStream: streams, consumers, retries."""

    namespace: str = Field(
        "",
        pattern=r"^[a-z0-9]*$",
        description="Prefix of every subject and stream name; isolates deployments and tests.",
    )
    duplicate_window_s: int = Field(
        120, ge=1, description="Window in which a repeated Nats-Msg-Id is dropped."
    )
    max_deliver: int = Field(
        5,
        ge=1,
        description=(
            "Deliveries after which a message whose handling fails with an error that is"
            " neither transient nor a bad payload (a bug) goes to dlq.<stream>."
        ),
    )
    max_unacked_deliveries: int = Field(
        20,
        ge=2,
        description=(
            "Deliveries without any outcome (the process died or hung every time) after which"
            " a message goes to dlq.<stream> unhandled; past `max_deliver` it is handled alone."
        ),
    )
    ack_wait_s: float = Field(30.0, gt=0, description="Time a consumer has to ack a message.")
    nak_delay_s: float = Field(1.0, ge=0, description="Base redelivery delay after a failure.")
    hold_min_s: float = Field(
        0.5, gt=0, description="First retry delay of messages held through a transient failure."
    )
    hold_max_s: float = Field(
        30.0, gt=0, description="Longest retry delay of messages held through a transient failure."
    )
    stall_after_s: float = Field(
        60.0,
        gt=0,
        description="A consumer with messages pending and none acked for this long is stalled.",
    )
    fetch_batch: int = Field(100, ge=1, description="Messages fetched per pull.")
    publish_timeout_s: float = Field(5.0, gt=0, description="Wait for a JetStream PubAck.")
    logs_raw: StreamLimits = StreamLimits()
    logs_parsed: StreamLimits = StreamLimits()
    findings: StreamLimits = StreamLimits(max_age_s=30 * 86400)
    signals: StreamLimits = StreamLimits(max_age_s=86400, max_bytes=256 * 1024 * 1024)
    actions: StreamLimits = StreamLimits(max_age_s=30 * 86400)
    dlq: StreamLimits = StreamLimits(max_age_s=30 * 86400)


class EmbeddedSettings(BaseModel):
    """The PostgreSQL and nats-server OPMAS starts itself when no URL is given."""

    postgres_port: int = Field(
        0, ge=0, le=65535, description="Port of the embedded PostgreSQL (0: a free port)."
    )
    nats_port: int = Field(
        0, ge=0, le=65535, description="Port of the embedded nats-server (0: a free port)."
    )
    start_timeout_s: float = Field(60.0, gt=0, description="Wait for a server to accept.")


class PipelineSettings(BaseModel):
    """The pipeline workers: parse, every agent's rules and the event store in one pass."""

    partitions: int = Field(
        16,
        ge=1,
        le=1024,
        description=(
            "Device partitions of logs.raw; all lines of one router share one. Change it only"
            " with every ingest and worker stopped."
        ),
    )
    replicas: int = Field(
        1, ge=1, le=64, description="Pipeline worker processes `opmas up` runs; they share them."
    )
    lease_ttl_s: float = Field(
        10.0, gt=0, description="A worker that stops renewing loses its partitions after this."
    )
    lease_refresh_s: float = Field(
        3.0, gt=0, description="How often a worker renews its leases and rebalances."
    )
    live_feed: bool = Field(
        False,
        description=(
            "Also publish parsed events on core NATS `live.parsed.<domain>` (no stream) for"
            " live views and external consumers."
        ),
    )


class RuntimeSettings(BaseModel):
    """Supervisor of the components."""

    restart_backoff_s: float = Field(1.0, gt=0, description="First delay before a restart.")
    restart_backoff_max_s: float = Field(60.0, gt=0, description="Longest delay between restarts.")
    shutdown_grace_s: float = Field(
        10.0, gt=0, description="Time given to drain in-flight work on stop."
    )
    own_process: list[str] = Field(
        default_factory=lambda: ["pipeline"],
        description=(
            "Components `opmas up` runs in child processes, to use more than one core; a group"
            " (`agents`) is one process of its members not named alone."
        ),
    )


class AgentSettings(BaseModel):
    """The domain agents (wifi, security, health, wan)."""

    heartbeat_s: float = Field(
        5.0, gt=0, description="Heartbeat on agents.heartbeat.<name> and in `agents`."
    )
    rule_poll_s: float = Field(
        2.0, gt=0, description="How often an agent checks `agent_rules` for edits."
    )
    max_keys_per_rule: int = Field(
        100_000, ge=1, description="Keys a rule tracks; the least recently seen are evicted."
    )
    update_interval_s: float = Field(
        1.0, ge=0, description="A growing finding is republished at most this often."
    )
    replay_max_s: float = Field(
        7200.0,
        ge=0,
        description=(
            "Longest history replayed at start to rebuild the windows; an agent's very first"
            " start also catches up on this much history."
        ),
    )
    state_save_s: float = Field(
        60.0, gt=0, description="How often learned state (log templates) is saved."
    )


class IngestSettings(BaseModel):
    """Tuning of the `ingest` component (syslog listeners, batching) and of POST /api/v1/logs."""

    batch_size: int = Field(1000, ge=1, description="Most lines per bus message on logs.raw.")
    flush_delay_ms: float = Field(
        50.0,
        gt=0,
        description=(
            "Partial batches are published this long after their first line (at most"
            " partitions / delay bus messages a second)."
        ),
    )
    max_queued_lines: int = Field(
        50_000, ge=1, description="Lines held before TCP pauses reading and UDP drops."
    )
    max_queued_bytes: int = Field(
        64 * 1024 * 1024,
        ge=65536,
        description="Bytes of lines held before TCP pauses reading and UDP drops.",
    )
    max_inflight_batches: int = Field(
        64, ge=1, description="Batches published and not yet acknowledged by JetStream."
    )
    max_unread_bytes: int = Field(
        64 * 1024 * 1024,
        ge=0,
        description=(
            "Bytes of logs.raw the pipeline may be behind (about 300 bytes a line); beyond,"
            " TCP pauses, UDP drops and POST /api/v1/logs answers 503 until it catches up"
            " (0: bounded by max_unread_share only)."
        ),
    )
    max_unread_share: float = Field(
        0.5,
        gt=0,
        le=0.9,
        description=(
            "Share of logs.raw's max_bytes the unread lines may take (the stream drops its"
            " oldest messages when full, read or not); beyond, ingest slows the senders."
        ),
    )
    backlog_poll_s: float = Field(
        1.0, gt=0, description="How often ingest measures how far the pipeline is behind."
    )
    spool_max_bytes: int = Field(
        256 * 1024 * 1024,
        ge=65536,
        description=(
            "Bytes of sealed syslog batches kept in data_dir/spool/ingest until JetStream"
            " acknowledges them (they outlive a bus outage and a restart); when full, TCP pauses"
            " and UDP drops."
        ),
    )
    spool_fsync: bool = Field(
        True, description="Fsync each spool file before publishing it (survives a power cut)."
    )
    http_max_pending_bytes: int = Field(
        64 * 1024 * 1024,
        ge=65536,
        description="Bytes of POST /api/v1/logs bodies waiting for JetStream; beyond: 503.",
    )
    max_connections: int = Field(
        10_000, ge=1, description="Open TCP and TLS syslog connections; more are refused."
    )
    max_connections_per_source: int = Field(
        16, ge=1, description="Open TCP and TLS syslog connections from one IP; more are refused."
    )
    udp_source_rate: float = Field(
        1000.0, gt=0, description="UDP lines/s one source IP may send; beyond its burst: dropped."
    )
    udp_source_burst: int = Field(
        10_000, ge=1, description="UDP lines one source IP may send at once above its rate."
    )
    udp_max_sources: int = Field(
        10_000, ge=1, description="Source IPs with their own UDP rate; the rest share one."
    )
    metrics_max_sources: int = Field(
        100, ge=1, description="Source IPs with their own drop counters; the rest: source=other."
    )
    idle_timeout_s: float = Field(
        300.0, gt=0, description="A syslog connection that sends nothing this long is closed."
    )
    tls_handshake_timeout_s: float = Field(
        10.0, gt=0, description="A TLS client must finish its handshake within this time."
    )
    udp_receive_buffer: int = Field(
        8 * 1024 * 1024,
        ge=0,
        description=(
            "SO_RCVBUF asked for the UDP socket (0: the kernel's default); the kernel caps it at"
            " net.core.rmem_max unless OPMAS runs with CAP_NET_ADMIN."
        ),
    )
    http_max_body: int = Field(
        10 * 1024 * 1024, ge=1, description="Largest POST /api/v1/logs body, also unzipped."
    )
    http_max_items: int = Field(
        10_000, ge=1, description="Most lines in one POST /api/v1/logs body; more: 413."
    )
    http_max_parses: int = Field(
        4, ge=1, description="POST /api/v1/logs bodies read and parsed at once; more: 503."
    )
    idempotency_ttl_s: int = Field(
        86_400, ge=60, description="How long an Idempotency-Key is remembered."
    )
    trust_refresh_s: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="How often ingest and parser reload the enrolled devices' registered IPs.",
    )


class OrchestratorSettings(BaseModel):
    """The `orchestrator`: findings stored, correlated into incidents, playbooks applied."""

    device_window_s: float = Field(
        1800.0, gt=0, description="Findings on one router this close together form one incident."
    )
    attack_window_s: float = Field(
        3600.0, gt=0, description="Findings naming one attacker IP this close form one incident."
    )
    uplink_min_wifi_findings: int = Field(
        1,
        ge=1,
        description="Wi-Fi client-drop findings beside a WAN-down finding that mean uplink/power.",
    )
    pending_ttl_s: float = Field(
        86_400.0, gt=0, description="A proposed action nobody approved expires after this."
    )
    expire_check_s: float = Field(30.0, gt=0, description="How often expiry is checked.")
    propose_untrusted: bool = Field(
        True,
        description="Propose (pending, never auto) SSH and webhook actions whose evidence is "
        "untrusted; false: do not propose them at all.",
    )
    max_actions_per_device_hour: int = Field(
        10,
        ge=0,
        description="SSH and webhook actions proposed per router per hour; the excess waits "
        "pending for approval (0: no limit).",
    )


class DevicesSettings(BaseModel):
    """Devices registered from their logs (`discovered`) before an operator enrols them."""

    max_discovered: int = Field(
        10_000, ge=1, description="Discovered devices kept; beyond it the least recently seen go."
    )


class ExecutorSettings(BaseModel):
    """The `executor`: runs approved actions over SSH, as webhooks or notifications."""

    poll_s: float = Field(
        2.0, gt=0, description="How often approved actions are looked for besides the bus."
    )
    concurrency: int = Field(8, ge=1, description="Actions run at the same time.")
    connect_timeout_s: float = Field(10.0, gt=0, description="SSH and HTTP connect timeout.")
    retry_backoff_s: float = Field(
        2.0, ge=0, description="Delay before the first retry; doubled each attempt."
    )


class ActionsSettings(BaseModel):
    """Targets no action may block or kick, besides the built-in ones (docs/security.md)."""

    protected_networks: list[str] = Field(
        default_factory=list,
        description="CIDRs (management networks) no action may target; comma list or JSON.",
    )
    allow_private_targets: bool = Field(
        False,
        description="Allow blocking RFC 1918, CGNAT 100.64/10 and ULA fc00::/7 addresses.",
    )

    @field_validator("protected_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        return [str(ipaddress.ip_network(item.strip(), strict=False)) for item in value]


class NotifierSettings(BaseModel):
    """The `notifier`: findings sent to email, Slack and webhook channels, digested."""

    digest_interval_s: float = Field(
        60.0,
        gt=0,
        description="At most one message per channel per interval; the rest form a digest.",
    )
    poll_s: float = Field(1.0, gt=0, description="How often due notifications are looked for.")
    max_attempts: int = Field(5, ge=1, description="Tries before a notification is failed.")
    retry_backoff_s: float = Field(
        5.0, ge=0, description="Delay before the first retry; doubled each attempt."
    )
    send_timeout_s: float = Field(15.0, gt=0, description="SMTP or HTTP send timeout.")
    backfill_s: float = Field(
        86400.0,
        ge=0,
        description="A new rule or channel also gets the new findings of this many seconds "
        "before it appeared (stored while nothing routed them); 0: none.",
    )
    backfill_max: int = Field(
        100, ge=0, description="At most this many of those per channel, the newest."
    )


class Settings(BaseSettings):
    """Root settings. Env `OPMAS_X` or `OPMAS_GROUP__X`; the YAML file uses the same names."""

    model_config = SettingsConfigDict(
        env_prefix="OPMAS_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    env: Literal["prod", "dev"] = Field("prod", description="`dev` allows placeholder secrets.")
    config_file: Path | None = Field(
        None, description="Bootstrap YAML file (default: config/opmas_config.yaml if present)."
    )
    data_dir: Path = Field(
        Path("./opmas-data"), description="Where embedded servers and generated secrets live."
    )
    database_url: SecretStr | None = Field(
        None, description="PostgreSQL URL (postgresql://...); unset: embedded PostgreSQL."
    )
    nats_url: SecretStr | None = Field(
        None,
        description="NATS URL (nats://user:password@host:4222, tls://...); unset: embedded.",
    )
    nats_creds: Path | None = Field(
        None, description="NATS .creds file (JWT and nkey seed) of nats_url's server."
    )
    nats_tls_ca: Path | None = Field(
        None, description="PEM CA bundle that signed nats_url's server certificate."
    )
    nats_tls_cert: Path | None = Field(
        None, description="PEM client certificate for nats_url's server (mutual TLS)."
    )
    nats_tls_key: Path | None = Field(
        None, description="PEM private key of nats_tls_cert (unset: inside the cert file)."
    )
    nats_sync: bool = Field(
        True, description="Embedded nats-server fsyncs every write (sync_interval: always)."
    )
    http_host: str = Field("127.0.0.1", description="Address the HTTP API listens on.")
    http_port: int = Field(8080, ge=0, le=65535, description="Port the HTTP API listens on.")
    http_max_concurrency: int = Field(
        1000, ge=1, description="Connections and requests the HTTP API serves at once; more: 503."
    )
    secret_key: SecretStr | None = Field(
        None, description="Encrypts stored secrets, signs tokens; unset: generated in data_dir."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Lowest level logged."
    )
    log_format: Literal["console", "json"] = Field("console", description="Log line format.")
    parser_dirs: list[Path] = Field(
        default_factory=list,
        description="Directories of extra parser YAML files; a file overrides a shipped one.",
    )
    syslog_host: str = Field("0.0.0.0", description="Address the syslog listeners bind.")  # noqa: S104
    syslog_udp_port: int = Field(
        5514, ge=-1, le=65535, description="Syslog UDP port (0: a free port, -1: off)."
    )
    syslog_tcp_port: int = Field(
        5514, ge=-1, le=65535, description="Syslog TCP port (0: a free port, -1: off)."
    )
    syslog_tls_port: int = Field(
        6514, ge=-1, le=65535, description="Syslog TLS port, RFC 5425 (0: free, -1: off)."
    )
    syslog_tls_cert: Path | None = Field(
        None, description="PEM certificate of the TLS listener; unset: no TLS listener."
    )
    syslog_tls_key: Path | None = Field(
        None, description="PEM private key of syslog_tls_cert (unset: inside the cert file)."
    )
    syslog_tls_ca: Path | None = Field(
        None, description="PEM CA bundle; set: TLS clients must present a certificate it signed."
    )
    syslog_tls_peers: dict[str, str] = Field(
        default_factory=dict,
        description="JSON map: client certificate SHA-256 fingerprint (hex) -> device hostname.",
    )
    syslog_max_message: int = Field(
        65536, ge=256, description="Longer syslog lines are truncated and flagged."
    )
    ingest_auth: bool = Field(
        True, description="POST /api/v1/logs requires a Bearer token (off: lab only)."
    )
    database: DatabaseSettings = DatabaseSettings()
    bus: BusSettings = BusSettings()
    embedded: EmbeddedSettings = EmbeddedSettings()
    runtime: RuntimeSettings = RuntimeSettings()
    ingest: IngestSettings = IngestSettings()
    agents: AgentSettings = AgentSettings()
    pipeline: PipelineSettings = PipelineSettings()
    devices: DevicesSettings = DevicesSettings()
    orchestrator: OrchestratorSettings = OrchestratorSettings()
    executor: ExecutorSettings = ExecutorSettings()
    notifier: NotifierSettings = NotifierSettings()
    actions: ActionsSettings = ActionsSettings()

    @field_validator("database_url")
    @classmethod
    def _postgres_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(
            ("postgresql://", "postgres://", "postgresql+asyncpg://")
        ):
            raise ValueError("must start with postgresql://")
        return value

    @field_validator("syslog_tls_peers")
    @classmethod
    def _fingerprints(cls, value: dict[str, str]) -> dict[str, str]:
        peers: dict[str, str] = {}
        for fingerprint, hostname in value.items():
            digest = fingerprint.replace(":", "").strip().lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError(f"{fingerprint!r} is not a SHA-256 fingerprint (64 hex digits)")
            peers[digest] = hostname
        return peers

    @field_validator("nats_url")
    @classmethod
    def _nats_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(
            ("nats://", "tls://", "ws://", "wss://")
        ):
            raise ValueError("must start with nats://, tls://, ws:// or wss://")
        return value

    @model_validator(mode="after")
    def _nats_client_options_need_a_url(self) -> Settings:
        named = ("nats_creds", "nats_tls_ca", "nats_tls_cert", "nats_tls_key")
        given = [n for n in named if getattr(self, n) is not None]
        if given and self.nats_url is None:
            raise ValueError(
                f"OPMAS_{given[0].upper()} is for your own NATS server: set OPMAS_NATS_URL too"
                " (the embedded nats-server has credentials of its own)"
            )
        if self.nats_tls_key is not None and self.nats_tls_cert is None:
            raise ValueError("OPMAS_NATS_TLS_KEY needs OPMAS_NATS_TLS_CERT")
        return self

    @model_validator(mode="after")
    def _no_placeholder_secret(self) -> Settings:
        key = self.secret_key.get_secret_value() if self.secret_key else None
        if key is not None and self.env != "dev":
            if key.strip().lower() in PLACEHOLDER_SECRETS:
                raise ValueError(
                    "OPMAS_SECRET_KEY is a placeholder: set a real one (or OPMAS_ENV=dev)"
                )
            if len(key) < 16:
                raise ValueError("OPMAS_SECRET_KEY must be at least 16 characters")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, OpmasEnvSource(settings_cls)]
        config_file = config_file_path()
        if config_file is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)


def config_file_path() -> Path | None:
    """The bootstrap YAML named by OPMAS_CONFIG_FILE, or the default one when it exists."""
    named = os.environ.get("OPMAS_CONFIG_FILE")
    if named:
        path = Path(named)
        if not path.is_file():
            raise ConfigError(f"OPMAS_CONFIG_FILE names {path}, which is not a file")
        return path
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


def ensure_secret_key(settings: Settings) -> Settings:
    """Return settings with a secret key: the configured one, or one kept in data_dir (0600)."""
    if settings.secret_key is not None:
        return settings
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path = settings.data_dir / SECRET_KEY_FILE
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
    return settings.model_copy(update={"secret_key": SecretStr(path.read_text().strip())})


def masked(settings: Settings) -> dict[str, Any]:
    """The effective configuration as plain data, secrets replaced by `**********`."""
    data: dict[str, Any] = settings.model_dump(mode="json")
    for name in ("secret_key", "database_url", "nats_url"):
        value = getattr(settings, name)
        if value is not None:
            data[name] = _mask(name, value.get_secret_value())
    return data


def secret_value(value: SecretStr | None) -> str | None:
    """The text of an optional secret setting."""
    return value.get_secret_value() if value is not None else None


def url_address(url: str) -> str:
    """`host:port` of a URL (the first of a comma list), never its user or password."""
    parts = urlsplit(url.split(",", 1)[0].strip())
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{host}:{port}" if port else host


def _mask(name: str, value: str) -> str:
    """A URL keeps its user name and host, loses its password or token (even one in the
    query, such as libpq's `password=`); any other secret is masked whole."""
    if name not in ("database_url", "nats_url"):
        return "**********"
    if "," in value:  # a list of servers
        return ",".join(_mask(name, part) for part in value.split(","))
    scheme, sep, rest = value.partition("://")
    if not sep:
        return "**********"
    authority, slash, tail = rest.partition("/")
    if "@" in authority:
        userinfo, _, hostport = authority.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        authority = f"{user}:**********@{hostport}" if colon else f"**********@{hostport}"
    if "password=" in tail.lower():
        tail = tail.split("?", 1)[0] + "?**********"
    return f"{scheme}://{authority}{slash}{tail}"
