"""Initial schema: the tables of seed 002 and DESIGN.md, partitions, triggers.

Partitioning and unique keys. PostgreSQL requires the partition key in every unique
constraint of a partitioned table, and a foreign key to such a table must name its whole
primary key. So:

* `events` (daily on `arrival_ts_utc`) has the key (event_id, arrival_ts_utc). The arrival
  time travels with the event, so a redelivered batch hits the same key (ON CONFLICT DO
  NOTHING). Nothing references `events`; `device_id` has no foreign key to keep COPY fast.
* `findings` (monthly on `created_at`) keeps a bigint identity `id` with the key
  (id, created_at). `intended_actions` references it by (finding_id, finding_created_at)
  ON DELETE CASCADE, a plain foreign key that PostgreSQL 12+ enforces on partitions.
* `finding_uuid` must be unique across partitions for idempotent writes. A unique
  (finding_uuid, created_at) alone cannot promise that, so the small non-partitioned table
  `finding_ids` (finding_uuid primary key) registers each uuid with its `created_at`: a
  BEFORE INSERT trigger fills it and refuses a known uuid with another `created_at` as a
  unique violation, an AFTER DELETE trigger frees it. A writer that sets `created_at` to the
  finding's own time gets a plain `ON CONFLICT (finding_uuid, created_at)` upsert.

Each partitioned table has a DEFAULT partition, so no insert fails for want of a partition.
`opmas_ensure_partitions()` creates the partitions around a time (this migration calls it for
now) and is what `opmas.db.partitions.ensure_partitions` runs; `opmas_drop_partitions()` does
retention. `opmas_set_updated_at()` keeps `updated_at` current on every table that has one.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEVERITY = "('info', 'warning', 'error', 'critical')"
FINDING_STATUS = "('new', 'acknowledged', 'resolved', 'false_positive')"
DOMAIN = "('wifi', 'security', 'health', 'wan', 'other')"
SEVERITY_RANK = "ARRAY['info', 'warning', 'error', 'critical']::text[]"
TIMESTAMPS = """
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()"""

TABLES = [
    f"""CREATE TABLE opmas_config (
    id serial CONSTRAINT pk_opmas_config PRIMARY KEY,
    key varchar(255) NOT NULL CONSTRAINT uq_opmas_config_key UNIQUE,
    value jsonb NOT NULL,
    description text,{TIMESTAMPS}
)""",
    f"""CREATE TABLE devices (
    id serial CONSTRAINT pk_devices PRIMARY KEY,
    hostname varchar(255) NOT NULL CONSTRAINT uq_devices_hostname UNIQUE,
    ip_address inet NOT NULL CONSTRAINT uq_devices_ip_address UNIQUE,
    model varchar(255),
    firmware_version varchar(50),
    status varchar(20) NOT NULL DEFAULT 'active' CONSTRAINT ck_devices_status
        CHECK (status IN ('active', 'inactive', 'maintenance', 'decommissioned')),
    last_seen_at timestamptz,
    config jsonb,{TIMESTAMPS}
)""",
    f"""CREATE TABLE ssh_keys (
    id serial CONSTRAINT pk_ssh_keys PRIMARY KEY,
    device_id integer NOT NULL CONSTRAINT fk_ssh_keys_device_id_devices
        REFERENCES devices (id) ON DELETE CASCADE,
    key_type varchar(20) NOT NULL,
    encrypted_key text NOT NULL,
    key_fingerprint varchar(255) NOT NULL,
    is_active boolean NOT NULL DEFAULT true,{TIMESTAMPS}
)""",
    f"""CREATE TABLE agents (
    id serial CONSTRAINT pk_agents PRIMARY KEY,
    name varchar(255) NOT NULL CONSTRAINT uq_agents_name UNIQUE,
    type varchar(50) NOT NULL CONSTRAINT ck_agents_type
        CHECK (type IN ('WIFI', 'SECURITY', 'HEALTH', 'WAN')),
    description text,
    is_active boolean NOT NULL DEFAULT true,
    config jsonb,
    status varchar(20) NOT NULL DEFAULT 'INACTIVE' CONSTRAINT ck_agents_status
        CHECK (status IN ('ACTIVE', 'INACTIVE', 'ERROR', 'MAINTENANCE')),
    last_heartbeat timestamptz,{TIMESTAMPS}
)""",
    f"""CREATE TABLE agent_rules (
    id serial CONSTRAINT pk_agent_rules PRIMARY KEY,
    agent_id integer NOT NULL CONSTRAINT fk_agent_rules_agent_id_agents
        REFERENCES agents (id) ON DELETE CASCADE,
    name varchar(255) NOT NULL,
    description text,
    rule_type varchar(50) NOT NULL CONSTRAINT ck_agent_rules_rule_type
        CHECK (rule_type IN ('PATTERN', 'THRESHOLD', 'CORRELATION', 'STATISTICAL', 'MACHINE_LEARNING')),
    conditions jsonb NOT NULL,
    actions jsonb,
    priority integer NOT NULL DEFAULT 0,
    is_active boolean NOT NULL DEFAULT true,{TIMESTAMPS},
    CONSTRAINT uq_agent_rules_agent_id_name UNIQUE (agent_id, name)
)""",
    f"""CREATE TABLE playbooks (
    id serial CONSTRAINT pk_playbooks PRIMARY KEY,
    name varchar(255) NOT NULL CONSTRAINT uq_playbooks_name UNIQUE,
    description text,
    trigger_type varchar(50) NOT NULL,
    trigger_conditions jsonb,
    execution_mode varchar(20) NOT NULL DEFAULT 'manual' CONSTRAINT ck_playbooks_mode
        CHECK (execution_mode IN ('manual', 'auto')),
    is_active boolean NOT NULL DEFAULT true,{TIMESTAMPS}
)""",
    f"""CREATE TABLE playbook_steps (
    id serial CONSTRAINT pk_playbook_steps PRIMARY KEY,
    playbook_id integer NOT NULL CONSTRAINT fk_playbook_steps_playbook_id_playbooks
        REFERENCES playbooks (id) ON DELETE CASCADE,
    step_number integer NOT NULL,
    action_type varchar(50) NOT NULL,
    action_config jsonb NOT NULL,
    timeout_seconds integer NOT NULL DEFAULT 30,
    retry_count integer NOT NULL DEFAULT 0,{TIMESTAMPS},
    CONSTRAINT uq_playbook_steps_playbook_id_step_number UNIQUE (playbook_id, step_number),
    CONSTRAINT ck_playbook_steps_limits CHECK (timeout_seconds > 0 AND retry_count >= 0)
)""",
    f"""CREATE TABLE incidents (
    id serial CONSTRAINT pk_incidents PRIMARY KEY,
    incident_uuid uuid NOT NULL DEFAULT gen_random_uuid()
        CONSTRAINT uq_incidents_incident_uuid UNIQUE,
    title varchar(255) NOT NULL,
    incident_type varchar(100) NOT NULL,
    severity varchar(20) NOT NULL CONSTRAINT ck_incidents_severity CHECK (severity IN {SEVERITY}),
    status varchar(20) NOT NULL DEFAULT 'new' CONSTRAINT ck_incidents_status
        CHECK (status IN {FINDING_STATUS}),
    description text,
    device_id integer CONSTRAINT fk_incidents_device_id_devices
        REFERENCES devices (id) ON DELETE SET NULL,
    assignee varchar(150),
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    acknowledged_at timestamptz,
    resolved_at timestamptz,{TIMESTAMPS}
)""",
    f"""CREATE TABLE incident_comments (
    id serial CONSTRAINT pk_incident_comments PRIMARY KEY,
    incident_id integer NOT NULL CONSTRAINT fk_incident_comments_incident_id_incidents
        REFERENCES incidents (id) ON DELETE CASCADE,
    author varchar(150) NOT NULL,
    body text NOT NULL,{TIMESTAMPS}
)""",
    """CREATE TABLE finding_ids (
    finding_uuid uuid CONSTRAINT pk_finding_ids PRIMARY KEY,
    created_at timestamptz NOT NULL
)""",
    f"""CREATE TABLE findings (
    id bigint GENERATED BY DEFAULT AS IDENTITY,
    created_at timestamptz NOT NULL DEFAULT now(),
    finding_uuid uuid NOT NULL,
    domain varchar(20) CONSTRAINT ck_findings_domain CHECK (domain IN {DOMAIN}),
    agent_id integer CONSTRAINT fk_findings_agent_id_agents
        REFERENCES agents (id) ON DELETE SET NULL,
    agent_name varchar(255),
    rule_id integer CONSTRAINT fk_findings_rule_id_agent_rules
        REFERENCES agent_rules (id) ON DELETE SET NULL,
    rule_name varchar(255),
    device_id integer CONSTRAINT fk_findings_device_id_devices
        REFERENCES devices (id) ON DELETE SET NULL,
    device_hostname varchar(255),
    device_ip inet,
    finding_type varchar(50) NOT NULL,
    severity varchar(20) NOT NULL CONSTRAINT ck_findings_severity CHECK (severity IN {SEVERITY}),
    description text,
    details jsonb,
    status varchar(20) NOT NULL DEFAULT 'new' CONSTRAINT ck_findings_status
        CHECK (status IN {FINDING_STATUS}),
    evidence_event_ids uuid[] NOT NULL DEFAULT '{{}}',
    event_id uuid,
    finding_ts timestamptz,
    count integer NOT NULL DEFAULT 1 CONSTRAINT ck_findings_count_positive CHECK (count >= 1),
    incident_id integer CONSTRAINT fk_findings_incident_id_incidents
        REFERENCES incidents (id) ON DELETE SET NULL,
    assignee varchar(150),
    acknowledged_at timestamptz,
    resolved_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pk_findings PRIMARY KEY (id, created_at),
    CONSTRAINT uq_findings_finding_uuid_created_at UNIQUE (finding_uuid, created_at)
) PARTITION BY RANGE (created_at)""",
    f"""CREATE TABLE intended_actions (
    id serial CONSTRAINT pk_intended_actions PRIMARY KEY,
    action_uuid uuid NOT NULL DEFAULT gen_random_uuid()
        CONSTRAINT uq_intended_actions_action_uuid UNIQUE,
    finding_id bigint,
    finding_created_at timestamptz,
    playbook_id integer CONSTRAINT fk_intended_actions_playbook_id_playbooks
        REFERENCES playbooks (id) ON DELETE SET NULL,
    device_id integer CONSTRAINT fk_intended_actions_device_id_devices
        REFERENCES devices (id) ON DELETE SET NULL,
    status varchar(20) NOT NULL DEFAULT 'pending' CONSTRAINT ck_intended_actions_status
        CHECK (status IN ('pending', 'approved', 'running', 'succeeded', 'failed',
                          'timed_out', 'rejected', 'expired')),
    action_type varchar(50) NOT NULL,
    action_config jsonb NOT NULL,
    scheduled_at timestamptz,
    executed_at timestamptz,
    result jsonb,{TIMESTAMPS},
    CONSTRAINT fk_intended_actions_finding_id_findings FOREIGN KEY (finding_id, finding_created_at)
        REFERENCES findings (id, created_at) ON DELETE CASCADE ON UPDATE CASCADE,
    CONSTRAINT ck_intended_actions_finding_key_complete
        CHECK ((finding_id IS NULL) = (finding_created_at IS NULL))
)""",
    f"""CREATE TABLE events (
    event_id uuid NOT NULL,
    arrival_ts_utc timestamptz NOT NULL DEFAULT now(),
    source_ip inet,
    original_ts text,
    event_ts timestamptz,
    hostname varchar(255),
    process_name varchar(255),
    pid text,
    log_level varchar(20),
    facility varchar(20),
    event_type varchar(20) NOT NULL DEFAULT 'LOG' CONSTRAINT ck_events_event_type
        CHECK (event_type IN ('LOG', 'NETWORK', 'AUTH', 'FILE', 'PROCESS', 'REGISTRY', 'CUSTOM')),
    message text NOT NULL,
    parser_name varchar(100) NOT NULL DEFAULT 'unparsed',
    log_source_type varchar(20) NOT NULL DEFAULT 'other' CONSTRAINT ck_events_log_source_type
        CHECK (log_source_type IN {DOMAIN}),
    structured_fields jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    device_id integer,
    flags text[] NOT NULL DEFAULT '{{}}',
    CONSTRAINT pk_events PRIMARY KEY (event_id, arrival_ts_utc)
) PARTITION BY RANGE (arrival_ts_utc)""",
    f"""CREATE TABLE users (
    id serial CONSTRAINT pk_users PRIMARY KEY,
    username varchar(150) NOT NULL CONSTRAINT uq_users_username UNIQUE,
    email varchar(255) CONSTRAINT uq_users_email UNIQUE,
    password_hash text NOT NULL,
    role varchar(20) NOT NULL DEFAULT 'viewer' CONSTRAINT ck_users_role
        CHECK (role IN ('admin', 'operator', 'viewer')),
    is_active boolean NOT NULL DEFAULT true,
    last_login_at timestamptz,{TIMESTAMPS}
)""",
    f"""CREATE TABLE api_tokens (
    id serial CONSTRAINT pk_api_tokens PRIMARY KEY,
    name varchar(255) NOT NULL CONSTRAINT uq_api_tokens_name UNIQUE,
    token_hash varchar(64) NOT NULL CONSTRAINT uq_api_tokens_token_hash UNIQUE
        CONSTRAINT ck_api_tokens_token_hash_sha256 CHECK (token_hash ~ '^[0-9a-f]{{64}}$'),
    prefix varchar(16) NOT NULL,
    device_id integer CONSTRAINT fk_api_tokens_device_id_devices
        REFERENCES devices (id) ON DELETE SET NULL,
    scopes text[] NOT NULL DEFAULT '{{}}',
    expires_at timestamptz,
    last_used_at timestamptz,
    revoked_at timestamptz,{TIMESTAMPS}
)""",
    f"""CREATE TABLE log_sources (
    id serial CONSTRAINT pk_log_sources PRIMARY KEY,
    path text NOT NULL CONSTRAINT uq_log_sources_path UNIQUE,
    source_name varchar(255) NOT NULL,
    enabled boolean NOT NULL DEFAULT true,
    polling_interval double precision NOT NULL DEFAULT 1.0
        CONSTRAINT ck_log_sources_polling_interval_positive CHECK (polling_interval > 0),
    file_pattern text,
    recursive boolean NOT NULL DEFAULT false,
    last_monitored timestamptz,
    file_size bigint NOT NULL DEFAULT 0,
    last_offset bigint NOT NULL DEFAULT 0,
    inode bigint,{TIMESTAMPS},
    CONSTRAINT ck_log_sources_offsets_not_negative CHECK (file_size >= 0 AND last_offset >= 0)
)""",
    f"""CREATE TABLE notification_channels (
    id serial CONSTRAINT pk_notification_channels PRIMARY KEY,
    name varchar(255) NOT NULL CONSTRAINT uq_notification_channels_name UNIQUE,
    channel_type varchar(20) NOT NULL CONSTRAINT ck_notification_channels_type
        CHECK (channel_type IN ('email', 'slack', 'webhook')),
    config jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    encrypted_secret text,
    is_active boolean NOT NULL DEFAULT true,{TIMESTAMPS}
)""",
    f"""CREATE TABLE notification_rules (
    id serial CONSTRAINT pk_notification_rules PRIMARY KEY,
    name varchar(255) NOT NULL CONSTRAINT uq_notification_rules_name UNIQUE,
    min_severity varchar(20) NOT NULL DEFAULT 'warning' CONSTRAINT ck_notification_rules_min_severity
        CHECK (min_severity IN {SEVERITY}),
    max_severity varchar(20) NOT NULL DEFAULT 'critical' CONSTRAINT ck_notification_rules_max_severity
        CHECK (max_severity IN {SEVERITY}),
    domains text[] NOT NULL DEFAULT '{{}}',
    categories text[] NOT NULL DEFAULT '{{}}',
    enabled boolean NOT NULL DEFAULT true,
    digest_interval_s integer NOT NULL DEFAULT 0
        CONSTRAINT ck_notification_rules_digest_interval CHECK (digest_interval_s >= 0),{TIMESTAMPS},
    CONSTRAINT ck_notification_rules_severity_range CHECK (
        array_position({SEVERITY_RANK}, min_severity::text)
        <= array_position({SEVERITY_RANK}, max_severity::text))
)""",
    """CREATE TABLE notification_rule_channels (
    rule_id integer NOT NULL CONSTRAINT fk_notification_rule_channels_rule_id_notification_rules
        REFERENCES notification_rules (id) ON DELETE CASCADE,
    channel_id integer NOT NULL
        CONSTRAINT fk_notification_rule_channels_channel_id_notification_channels
        REFERENCES notification_channels (id) ON DELETE CASCADE,
    CONSTRAINT pk_notification_rule_channels PRIMARY KEY (rule_id, channel_id)
)""",
    f"""CREATE TABLE notification_history (
    id bigserial CONSTRAINT pk_notification_history PRIMARY KEY,
    finding_uuid uuid,
    incident_id integer CONSTRAINT fk_notification_history_incident_id_incidents
        REFERENCES incidents (id) ON DELETE SET NULL,
    channel_id integer CONSTRAINT fk_notification_history_channel_id_notification_channels
        REFERENCES notification_channels (id) ON DELETE SET NULL,
    channel varchar(255) NOT NULL,
    notification_type varchar(50) NOT NULL,
    status varchar(20) NOT NULL DEFAULT 'pending' CONSTRAINT ck_notification_history_status
        CHECK (status IN ('sent', 'failed', 'pending')),
    attempts integer NOT NULL DEFAULT 0 CONSTRAINT ck_notification_history_attempts
        CHECK (attempts >= 0),
    error_message text,
    sent_at timestamptz,{TIMESTAMPS}
)""",
    "CREATE TABLE findings_default PARTITION OF findings DEFAULT",
    "CREATE TABLE events_default PARTITION OF events DEFAULT",
]

INDEXES = {
    "idx_devices_status": "devices (status)",
    "idx_ssh_keys_device_id": "ssh_keys (device_id)",
    "idx_agent_rules_agent_id": "agent_rules (agent_id)",
    "idx_playbook_steps_playbook_id": "playbook_steps (playbook_id)",
    "idx_incidents_status": "incidents (status)",
    "idx_incidents_device_id": "incidents (device_id)",
    "idx_incident_comments_incident_id": "incident_comments (incident_id)",
    "idx_findings_device_id": "findings (device_id)",
    "idx_findings_created_at": "findings (created_at)",
    "idx_findings_status_created_at": "findings (status, created_at)",
    "idx_findings_device_hostname_created_at": "findings (device_hostname, created_at)",
    "idx_findings_agent_id": "findings (agent_id)",
    "idx_findings_rule_id": "findings (rule_id)",
    "idx_findings_incident_id": "findings (incident_id)",
    "idx_intended_actions_status": "intended_actions (status)",
    "idx_intended_actions_finding_id": "intended_actions (finding_id, finding_created_at)",
    "idx_intended_actions_playbook_id": "intended_actions (playbook_id)",
    "idx_intended_actions_device_id": "intended_actions (device_id)",
    "idx_events_hostname_arrival_ts_utc": "events (hostname, arrival_ts_utc)",
    "idx_events_log_source_type_arrival_ts_utc": "events (log_source_type, arrival_ts_utc)",
    "idx_events_structured_fields": "events USING gin (structured_fields jsonb_path_ops)",
    "idx_api_tokens_device_id": "api_tokens (device_id)",
    "idx_notification_rule_channels_channel_id": "notification_rule_channels (channel_id)",
    "idx_notification_history_finding_uuid": "notification_history (finding_uuid)",
    "idx_notification_history_status_created_at": "notification_history (status, created_at)",
    "idx_notification_history_incident_id": "notification_history (incident_id)",
    "idx_notification_history_channel_id": "notification_history (channel_id)",
}


SET_UPDATED_AT = """CREATE FUNCTION opmas_set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- clock_timestamp(): an UPDATE in the same transaction as the INSERT still moves it
    NEW.updated_at := clock_timestamp();
    RETURN NEW;
END
$$"""

REGISTER_FINDING = """CREATE FUNCTION opmas_register_finding() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    registered timestamptz;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF NEW.finding_uuid = OLD.finding_uuid AND NEW.created_at = OLD.created_at THEN
            RETURN NEW;
        END IF;
        DELETE FROM finding_ids WHERE finding_uuid = OLD.finding_uuid;
    END IF;
    INSERT INTO finding_ids (finding_uuid, created_at) VALUES (NEW.finding_uuid, NEW.created_at)
        ON CONFLICT (finding_uuid) DO NOTHING;
    IF NOT FOUND THEN
        SELECT created_at INTO registered FROM finding_ids WHERE finding_uuid = NEW.finding_uuid;
        IF registered <> NEW.created_at THEN
            RAISE EXCEPTION 'duplicate key value violates unique constraint "uq_findings_finding_uuid"'
                USING ERRCODE = 'unique_violation', CONSTRAINT = 'uq_findings_finding_uuid',
                      DETAIL = format('Key (finding_uuid)=(%s) already exists.', NEW.finding_uuid);
        END IF;
    END IF;
    RETURN NEW;
END
$$"""

UNREGISTER_FINDING = """CREATE FUNCTION opmas_unregister_finding() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM finding_ids WHERE finding_uuid = OLD.finding_uuid AND created_at = OLD.created_at;
    RETURN NULL;
END
$$"""

PARTITION_KEY = """CREATE FUNCTION opmas_partition_key(parent regclass) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT a.attname::text
    FROM pg_partitioned_table p
    JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
    WHERE p.partrelid = parent
$$"""

CREATE_PARTITION = """CREATE FUNCTION opmas_create_partition(
    parent text, part text, lower_bound timestamptz, upper_bound timestamptz
) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    key text := opmas_partition_key(parent::regclass);
    rows_in_range text := format('FROM %I WHERE %I >= %L AND %I < %L',
        parent || '_default', key, lower_bound, key, upper_bound);
    crowded boolean;
BEGIN
    IF to_regclass(quote_ident(part)) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE 'SELECT EXISTS (SELECT 1 ' || rows_in_range || ')' INTO crowded;
    IF crowded AND EXISTS (
        SELECT 1 FROM pg_constraint WHERE contype = 'f' AND confrelid = parent::regclass
    ) THEN
        -- moving rows out of the default partition would fire ON DELETE CASCADE: leave them
        RAISE NOTICE 'partition % not created: % holds rows in its range', part, parent || '_default';
        RETURN false;
    END IF;
    IF crowded THEN
        EXECUTE 'CREATE TEMP TABLE opmas_moved_rows ON COMMIT DROP AS SELECT * ' || rows_in_range;
        EXECUTE 'DELETE ' || rows_in_range;
    END IF;
    EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
        part, parent, lower_bound, upper_bound);
    IF crowded THEN
        EXECUTE format('INSERT INTO %I SELECT * FROM opmas_moved_rows', parent);
        DROP TABLE opmas_moved_rows;
    END IF;
    RETURN true;
END
$$"""

ENSURE_PARTITIONS = """CREATE FUNCTION opmas_ensure_partitions(
    days_ahead integer, months_ahead integer, as_of timestamptz DEFAULT now()
) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    today date := (as_of AT TIME ZONE 'UTC')::date;
    this_month date := date_trunc('month', as_of AT TIME ZONE 'UTC')::date;
    first_day date;
    next_first_day date;
    part text;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('opmas_partitions'));
    FOR i IN -1..days_ahead LOOP
        first_day := today + i;
        part := 'events_p' || to_char(first_day, 'YYYYMMDD');
        IF opmas_create_partition('events', part, first_day::timestamp AT TIME ZONE 'UTC',
                                  (first_day + 1)::timestamp AT TIME ZONE 'UTC') THEN
            RETURN NEXT part;
        END IF;
    END LOOP;
    FOR i IN 0..months_ahead LOOP
        first_day := (this_month + make_interval(months => i))::date;
        next_first_day := (first_day + interval '1 month')::date;
        part := 'findings_p' || to_char(first_day, 'YYYYMM');
        IF opmas_create_partition('findings', part, first_day::timestamp AT TIME ZONE 'UTC',
                                  next_first_day::timestamp AT TIME ZONE 'UTC') THEN
            RETURN NEXT part;
        END IF;
    END LOOP;
END
$$"""

DROP_PARTITIONS = """CREATE FUNCTION opmas_drop_partitions(parent text, before timestamptz)
RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    key text := opmas_partition_key(parent::regclass);
    part record;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('opmas_partitions'));
    FOR part IN
        SELECT c.relname::text AS name, (regexp_match(pg_get_expr(c.relpartbound, c.oid),
                   'TO \\(''([^'']+)''\\)'))[1]::timestamptz AS upper_bound
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = parent::regclass
        ORDER BY 2
    LOOP
        CONTINUE WHEN part.upper_bound IS NULL OR part.upper_bound > before;
        -- a DELETE first runs the cascades and triggers that DROP TABLE would skip
        IF EXISTS (SELECT 1 FROM pg_constraint WHERE contype = 'f' AND confrelid = parent::regclass)
        THEN
            EXECUTE format('DELETE FROM %I', part.name);
        END IF;
        EXECUTE format('ALTER TABLE %I DETACH PARTITION %I', parent, part.name);
        EXECUTE format('DROP TABLE %I', part.name);
        RETURN NEXT part.name;
    END LOOP;
    EXECUTE format('DELETE FROM %I WHERE %I < %L', parent || '_default', key, before);
END
$$"""

FUNCTIONS = {
    "opmas_set_updated_at()": SET_UPDATED_AT,
    "opmas_register_finding()": REGISTER_FINDING,
    "opmas_unregister_finding()": UNREGISTER_FINDING,
    "opmas_partition_key(regclass)": PARTITION_KEY,
    "opmas_create_partition(text, text, timestamptz, timestamptz)": CREATE_PARTITION,
    "opmas_ensure_partitions(integer, integer, timestamptz)": ENSURE_PARTITIONS,
    "opmas_drop_partitions(text, timestamptz)": DROP_PARTITIONS,
}

TABLE_NAMES = (
    "opmas_config",
    "devices",
    "ssh_keys",
    "agents",
    "agent_rules",
    "playbooks",
    "playbook_steps",
    "incidents",
    "incident_comments",
    "finding_ids",
    "findings",
    "intended_actions",
    "events",
    "users",
    "api_tokens",
    "log_sources",
    "notification_channels",
    "notification_rules",
    "notification_rule_channels",
    "notification_history",
)


WITHOUT_UPDATED_AT = ("finding_ids", "events", "notification_rule_channels")
UPDATED_AT_TABLES = tuple(name for name in TABLE_NAMES if name not in WITHOUT_UPDATED_AT)


def upgrade() -> None:
    """Create the tables, indexes, functions, triggers and the partitions around now."""
    for statement in TABLES:
        op.execute(statement)
    for name, target in INDEXES.items():
        op.execute(f"CREATE INDEX {name} ON {target}")
    for definition in FUNCTIONS.values():
        op.execute(definition)
    for table in UPDATED_AT_TABLES:
        op.execute(
            f"CREATE TRIGGER trg_{table}_updated_at BEFORE UPDATE ON {table}"
            " FOR EACH ROW EXECUTE FUNCTION opmas_set_updated_at()"
        )
    op.execute(
        "CREATE TRIGGER trg_findings_register_uuid"
        " BEFORE INSERT OR UPDATE OF finding_uuid, created_at ON findings"
        " FOR EACH ROW EXECUTE FUNCTION opmas_register_finding()"
    )
    op.execute(
        "CREATE TRIGGER trg_findings_unregister_uuid AFTER DELETE ON findings"
        " FOR EACH ROW EXECUTE FUNCTION opmas_unregister_finding()"
    )
    op.execute("SELECT opmas_ensure_partitions(7, 2)")


def downgrade() -> None:
    """Drop everything upgrade created: tables (with partitions and triggers), then functions."""
    for table in reversed(TABLE_NAMES):
        op.execute(f"DROP TABLE {table}")
    for signature in reversed(FUNCTIONS):
        op.execute(f"DROP FUNCTION {signature}")
