-- The core schema: every table the services share (DESIGN.md).  Later migrations
-- extend it; none edits this file.

-- Node numbers for Snowflake ids made in Python (catena.ids.claim_node).
CREATE SEQUENCE snowflake_nodes MINVALUE 0 MAXVALUE 1022 START 0 CYCLE;

-- Ids made inside PostgreSQL use node 1023, which no process claims.
CREATE SEQUENCE snowflake_sql_sequence MINVALUE 0 MAXVALUE 4095 CYCLE;
CREATE FUNCTION catena_new_id() RETURNS bigint LANGUAGE sql VOLATILE AS $$
    SELECT ((floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint - 1704067200000) << 22)
           | (1023 << 12) | nextval('snowflake_sql_sequence')
$$;

-- The smallest id made at a given time: partitions of id-keyed tables are time ranges.
CREATE FUNCTION catena_id_at(ts timestamptz) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT greatest(floor(extract(epoch FROM ts) * 1000)::bigint - 1704067200000, 0) << 22
$$;

-- Monthly partitions of a table partitioned by RANGE (id), created ahead of time.
-- A month whose rows already landed in the default partition is left there.
CREATE FUNCTION catena_ensure_partitions(parent regclass, months_ahead integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    month_start timestamptz := date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    lo timestamptz;
    hi timestamptz;
    part text;
    made integer := 0;
    crowded boolean;
BEGIN
    FOR i IN 0..months_ahead LOOP
        lo := month_start + make_interval(months => i);
        hi := lo + interval '1 month';
        part := format('%s_y%sm%s', parent::text, to_char(lo AT TIME ZONE 'UTC', 'YYYY'),
                       to_char(lo AT TIME ZONE 'UTC', 'MM'));
        CONTINUE WHEN to_regclass(part) IS NOT NULL;
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s_default WHERE id >= %s AND id < %s)',
                       parent::text, catena_id_at(lo), catena_id_at(hi)) INTO crowded;
        CONTINUE WHEN crowded;
        EXECUTE format('CREATE TABLE %I PARTITION OF %s FOR VALUES FROM (%s) TO (%s)',
                       part, parent::text, catena_id_at(lo), catena_id_at(hi));
        made := made + 1;
    END LOOP;
    RETURN made;
END
$$;

CREATE TABLE portals (
    id bigint PRIMARY KEY,
    name text NOT NULL UNIQUE,
    domain text NOT NULL,
    owner_id bigint,
    api_key text NOT NULL UNIQUE,
    branding jsonb NOT NULL DEFAULT '{}',
    settings jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- Subscriber apps find their portal by Host, so a domain names one portal.
CREATE UNIQUE INDEX portals_domain ON portals (lower(domain)) WHERE domain <> '';

CREATE TABLE managers (
    id bigint PRIMARY KEY,
    portal_id bigint NOT NULL REFERENCES portals ON DELETE CASCADE,
    email text NOT NULL,
    name text NOT NULL,
    password_hash text NOT NULL,
    is_admin boolean NOT NULL DEFAULT false,
    is_content_admin boolean NOT NULL DEFAULT false,
    is_subscriber_admin boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (portal_id, email)
);
CREATE INDEX managers_email ON managers (email);
ALTER TABLE portals ADD FOREIGN KEY (owner_id) REFERENCES managers DEFERRABLE INITIALLY DEFERRED;

-- A manager session is a bearer secret; only its SHA-256 is stored.
CREATE TABLE manager_sessions (
    token_hash bytea PRIMARY KEY,
    manager_id bigint NOT NULL REFERENCES managers ON DELETE CASCADE,
    portal_id bigint NOT NULL REFERENCES portals ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX manager_sessions_manager ON manager_sessions (manager_id);

CREATE TABLE channels (
    id bigint PRIMARY KEY,
    portal_id bigint NOT NULL REFERENCES portals ON DELETE CASCADE,
    name text NOT NULL,
    title text NOT NULL,
    epg_source_name text,
    epg_channel_name text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (portal_id, name)
);
CREATE INDEX channels_portal_id ON channels (portal_id, id);

CREATE TABLE channel_logos (
    channel_id bigint PRIMARY KEY REFERENCES channels ON DELETE CASCADE,
    content_type text NOT NULL,
    data bytea NOT NULL,
    etag text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE packages (
    id bigint PRIMARY KEY,
    portal_id bigint NOT NULL REFERENCES portals ON DELETE CASCADE,
    name text NOT NULL,
    description text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (portal_id, name)
);
CREATE INDEX packages_portal_id ON packages (portal_id, id);

CREATE TABLE channel_packages (
    package_id bigint NOT NULL REFERENCES packages ON DELETE CASCADE,
    channel_id bigint NOT NULL REFERENCES channels ON DELETE CASCADE,
    portal_id bigint NOT NULL REFERENCES portals ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (package_id, channel_id)
);
CREATE INDEX channel_packages_channel ON channel_packages (channel_id);

CREATE TABLE portal_free_packages (
    portal_id bigint NOT NULL REFERENCES portals ON DELETE CASCADE,
    package_id bigint NOT NULL REFERENCES packages,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (portal_id, package_id)
);
CREATE INDEX portal_free_packages_package ON portal_free_packages (package_id);

CREATE TABLE subscribers (
    id bigint PRIMARY KEY,
    portal_id bigint NOT NULL REFERENCES portals ON DELETE CASCADE,
    name text NOT NULL,
    phone_country_code text NOT NULL,
    phone text NOT NULL,
    disabled boolean NOT NULL DEFAULT false,
    disabled_reason text,
    max_sessions integer,
    -- Bumped by reset_playback_token; tokens carry the version they were made for.
    token_version integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (portal_id, phone_country_code, phone)
);
CREATE INDEX subscribers_portal_id ON subscribers (portal_id, id);

CREATE TABLE subscriptions (
    subscriber_id bigint NOT NULL REFERENCES subscribers ON DELETE CASCADE,
    package_id bigint NOT NULL REFERENCES packages,
    portal_id bigint NOT NULL REFERENCES portals ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subscriber_id, package_id)
);
CREATE INDEX subscriptions_package ON subscriptions (package_id);

-- Bumped by every change that alters who may watch what (catena.entitlements).
CREATE TABLE entitlement_versions (
    portal_id bigint PRIMARY KEY REFERENCES portals ON DELETE CASCADE,
    version bigint NOT NULL DEFAULT 0
);

-- The operations log (API.md §8), partitioned by id, i.e. by month.
CREATE TABLE operations (
    id bigint NOT NULL,
    portal_id bigint NOT NULL,
    type text NOT NULL,
    subscriber_id bigint,
    package_id bigint,
    payload jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id)
) PARTITION BY RANGE (id);
CREATE TABLE operations_default PARTITION OF operations DEFAULT;
CREATE INDEX operations_portal ON operations (portal_id, id);
CREATE INDEX operations_subscriber ON operations (portal_id, subscriber_id, id)
    WHERE subscriber_id IS NOT NULL;
CREATE INDEX operations_package ON operations (portal_id, package_id, id)
    WHERE package_id IS NOT NULL;
CREATE INDEX operations_type ON operations (portal_id, type, id);
SELECT catena_ensure_partitions('operations', 3);

-- Background work of every kind (DESIGN.md "Jobs").
CREATE TABLE jobs (
    id bigint PRIMARY KEY,
    kind text NOT NULL,
    portal_id bigint REFERENCES portals ON DELETE CASCADE,
    target_id bigint,
    state text NOT NULL DEFAULT 'queued'
        CHECK (state IN ('queued', 'running', 'done', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    run_after timestamptz NOT NULL DEFAULT now(),
    locked_by text,
    heartbeat_at timestamptz,
    result jsonb,
    error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
-- One pending job per kind and target: a second request gets the same job.
CREATE UNIQUE INDEX jobs_pending ON jobs (kind, target_id) WHERE state IN ('queued', 'running');
CREATE INDEX jobs_queue ON jobs (kind, run_after) WHERE state = 'queued';
CREATE INDEX jobs_running ON jobs (heartbeat_at) WHERE state = 'running';

CREATE TABLE epg_sources (
    id bigint PRIMARY KEY,
    portal_id bigint NOT NULL REFERENCES portals ON DELETE CASCADE,
    name text NOT NULL,
    url text NOT NULL,
    period integer NOT NULL DEFAULT 1 CHECK (period >= 1),
    -- Minutes added to every programme time, for providers whose clocks are wrong.
    time_shift integer NOT NULL DEFAULT 0,
    last_fetch_id bigint,
    last_attempt_at timestamptz,
    http_etag text,
    http_last_modified text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (portal_id, name)
);

CREATE TABLE epg_fetches (
    id bigint PRIMARY KEY,
    portal_id bigint NOT NULL REFERENCES portals ON DELETE CASCADE,
    epg_source_id bigint NOT NULL REFERENCES epg_sources ON DELETE CASCADE,
    job_id bigint,
    status text NOT NULL CHECK (status IN ('pending', 'success', 'error', 'timeout')),
    message text NOT NULL DEFAULT '',
    channels integer NOT NULL DEFAULT 0,
    found_programs integer NOT NULL DEFAULT 0,
    imported_programs integer NOT NULL DEFAULT 0,
    deleted_programs integer NOT NULL DEFAULT 0,
    fetch_duration double precision,
    import_duration double precision,
    progress jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    fetched_at timestamptz
);
CREATE INDEX epg_fetches_source ON epg_fetches (epg_source_id, id);
CREATE INDEX epg_fetches_portal ON epg_fetches (portal_id, id);

CREATE TABLE epg_programs (
    id bigint NOT NULL,
    portal_id bigint NOT NULL,
    epg_source_id bigint NOT NULL REFERENCES epg_sources ON DELETE CASCADE,
    epg_channel_name text NOT NULL,
    start_at timestamptz NOT NULL,
    end_at timestamptz,
    title text NOT NULL,
    description text,
    genre text,
    rating text,
    language text,
    PRIMARY KEY (id)
);
CREATE INDEX epg_programs_source_start ON epg_programs (epg_source_id, start_at, id);
CREATE INDEX epg_programs_channel_start ON epg_programs (epg_source_id, epg_channel_name, start_at);

-- Play sessions (API.md §7), written by the gateway in batches, partitioned by id.
CREATE TABLE play_sessions (
    id bigint NOT NULL,
    portal_id bigint NOT NULL,
    subscriber_id bigint,
    channel_id bigint,
    channel_name text NOT NULL,
    program_id bigint,
    flussonic_id text NOT NULL,
    opened_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    closed_at timestamptz,
    active boolean NOT NULL DEFAULT true,
    bytes bigint NOT NULL DEFAULT 0,
    ip text,
    user_agent text,
    token text,
    device_id text,
    proto text,
    server text,
    PRIMARY KEY (id)
) PARTITION BY RANGE (id);
CREATE TABLE play_sessions_default PARTITION OF play_sessions DEFAULT;
CREATE INDEX play_sessions_portal ON play_sessions (portal_id, id);
CREATE INDEX play_sessions_subscriber ON play_sessions (portal_id, subscriber_id, id);
CREATE INDEX play_sessions_channel ON play_sessions (portal_id, channel_id, id);
CREATE INDEX play_sessions_flussonic ON play_sessions (flussonic_id);
CREATE INDEX play_sessions_active ON play_sessions (updated_at) WHERE active;
SELECT catena_ensure_partitions('play_sessions', 3);

CREATE TABLE webhooks (
    id bigint PRIMARY KEY,
    portal_id bigint NOT NULL REFERENCES portals ON DELETE CASCADE,
    url text NOT NULL,
    secret text NOT NULL,
    last_delivered_operation_id bigint,
    last_error text,
    last_attempt_at timestamptz,
    failures integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_portal ON webhooks (portal_id, id);
