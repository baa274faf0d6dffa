-- Live statistics (GET /stats, admin_api/stats.py): figures kept by the writers.
--
-- Counting 50,000 open sessions, 100,000 subscribers or a day of session opens at
-- every dashboard refresh costs tens to hundreds of milliseconds, however indexed
-- (play_sessions rows are rewritten every 30 s, so index-only scans still visit the
-- heap).  Instead, statement-level triggers with transition tables turn each
-- writing statement (one gateway batch, one sweep, one API change) into a few
-- small delta rows, and the reader sums them.  Whoever writes play_sessions,
-- subscribers or subscriptions - the gateway's batch merge and sweeper, the API,
-- COPY - keeps the figures right without knowing about them.
--
-- Delta tables are append-only: a statement never updates a shared row, so
-- gateways and API requests never wait on each other for a counter.
-- catena_stats_compact() (run by the admin API every minute) folds them into one
-- row per key.  The two per-subscriber tables are exact running counts, upserted
-- in subscriber order (a row lock per subscriber, taken in a fixed order); from
-- their before and after values come the "how many subscribers" figures, which
-- deltas alone cannot give.  catena_stats_recount() rebuilds everything from the
-- base tables.

-- Per-portal figures: 'subscribers', 'subscribers_disabled', 'subscribers_with_packages',
-- 'watchers' (subscribers with at least one open session).
CREATE TABLE stats_counters (
    portal_id bigint NOT NULL,
    name text NOT NULL,
    value bigint NOT NULL
);
CREATE INDEX stats_counters_portal ON stats_counters (portal_id, name);

-- Open sessions per channel (by the session's channel name).
CREATE TABLE stats_channel_viewers (
    portal_id bigint NOT NULL,
    channel_name text NOT NULL,
    viewers bigint NOT NULL
);
CREATE INDEX stats_channel_viewers_portal ON stats_channel_viewers (portal_id);

-- Sessions opened per hour (by opened_at), kept for 48 hours.
CREATE TABLE stats_session_opens (
    portal_id bigint NOT NULL,
    hour timestamptz NOT NULL,
    opened bigint NOT NULL
);
CREATE INDEX stats_session_opens_portal ON stats_session_opens (portal_id, hour);

-- Open sessions of each subscriber who has had one (rows at 0 are pruned).
CREATE TABLE stats_live_subscribers (
    subscriber_id bigint PRIMARY KEY,
    portal_id bigint NOT NULL,
    sessions integer NOT NULL
);

-- Explicit subscriptions of each subscriber who has one.
CREATE TABLE stats_subscriber_packages (
    subscriber_id bigint PRIMARY KEY,
    portal_id bigint NOT NULL,
    packages integer NOT NULL
);

-- Apply changes to the open sessions of (portal, channel, subscriber): +n / -n each.
CREATE FUNCTION catena_stats_live(portals bigint[], channels text[], subscribers bigint[], changes integer[])
RETURNS void LANGUAGE sql AS $$
    INSERT INTO stats_channel_viewers (portal_id, channel_name, viewers)
    SELECT x.portal_id, x.channel_name, sum(x.n)
    FROM unnest(portals, channels, changes) AS x(portal_id, channel_name, n)
    GROUP BY 1, 2 HAVING sum(x.n) <> 0;
    WITH d AS (
        SELECT x.subscriber_id, min(x.portal_id) AS portal_id, sum(x.n)::integer AS n
        FROM unnest(portals, subscribers, changes) AS x(portal_id, subscriber_id, n)
        WHERE x.subscriber_id IS NOT NULL
        GROUP BY x.subscriber_id HAVING sum(x.n) <> 0
    ), up AS (
        INSERT INTO stats_live_subscribers AS t (subscriber_id, portal_id, sessions)
        SELECT d.subscriber_id, d.portal_id, d.n FROM d ORDER BY d.subscriber_id
        ON CONFLICT (subscriber_id) DO UPDATE SET sessions = t.sessions + excluded.sessions
        RETURNING t.subscriber_id, t.portal_id, t.sessions
    )
    INSERT INTO stats_counters (portal_id, name, value)
    SELECT up.portal_id, 'watchers', sum((up.sessions > 0)::integer - (up.sessions - d.n > 0)::integer)
    FROM up JOIN d USING (subscriber_id)
    GROUP BY up.portal_id HAVING sum((up.sessions > 0)::integer - (up.sessions - d.n > 0)::integer) <> 0;
$$;

-- play_sessions: opens per hour on insert; open sessions per channel and subscriber
-- whenever a row's active, channel or subscriber changes.  A batch of progress
-- updates (most of the gateway's writes) changes none of them and stops at the join.
CREATE FUNCTION catena_stats_sessions() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    portals bigint[];
    channels text[];
    subscribers bigint[];
    changes integer[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO stats_session_opens (portal_id, hour, opened)
        SELECT r.portal_id, date_trunc('hour', r.opened_at, 'UTC'), count(*) FROM new_rows r GROUP BY 1, 2;
        SELECT array_agg(r.portal_id), array_agg(r.channel_name), array_agg(r.subscriber_id), array_agg(1)
        INTO portals, channels, subscribers, changes FROM new_rows r WHERE r.active;
    ELSIF TG_OP = 'UPDATE' THEN
        SELECT array_agg(x.portal_id), array_agg(x.channel_name), array_agg(x.subscriber_id), array_agg(x.n)
        INTO portals, channels, subscribers, changes
        FROM (
            SELECT o.id, o.portal_id, o.channel_name, o.subscriber_id, o.active,
                   n.portal_id AS n_portal, n.channel_name AS n_channel, n.subscriber_id AS n_subscriber,
                   n.active AS n_active
            FROM old_rows o JOIN new_rows n USING (id)
            WHERE (o.active, o.channel_name, o.subscriber_id, o.portal_id)
                  IS DISTINCT FROM (n.active, n.channel_name, n.subscriber_id, n.portal_id)
        ) c
        CROSS JOIN LATERAL (
            SELECT c.portal_id, c.channel_name, c.subscriber_id, -1 WHERE c.active
            UNION ALL
            SELECT c.n_portal, c.n_channel, c.n_subscriber, 1 WHERE c.n_active
        ) AS x(portal_id, channel_name, subscriber_id, n);
    ELSE
        SELECT array_agg(r.portal_id), array_agg(r.channel_name), array_agg(r.subscriber_id), array_agg(-1)
        INTO portals, channels, subscribers, changes FROM old_rows r WHERE r.active;
    END IF;
    IF portals IS NOT NULL THEN
        PERFORM catena_stats_live(portals, channels, subscribers, changes);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER stats_sessions_insert AFTER INSERT ON play_sessions
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION catena_stats_sessions();
CREATE TRIGGER stats_sessions_update AFTER UPDATE ON play_sessions
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION catena_stats_sessions();
CREATE TRIGGER stats_sessions_delete AFTER DELETE ON play_sessions
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION catena_stats_sessions();

-- subscribers: how many, how many disabled.
CREATE FUNCTION catena_stats_subscribers() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO stats_counters (portal_id, name, value)
        SELECT d.portal_id, k.name, k.value
        FROM (SELECT r.portal_id, count(*) AS total, count(*) FILTER (WHERE r.disabled) AS disabled
              FROM new_rows r GROUP BY r.portal_id) d
        CROSS JOIN LATERAL (VALUES ('subscribers', d.total), ('subscribers_disabled', d.disabled)) k(name, value)
        WHERE k.value <> 0;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO stats_counters (portal_id, name, value)
        SELECT d.portal_id, k.name, -k.value
        FROM (SELECT r.portal_id, count(*) AS total, count(*) FILTER (WHERE r.disabled) AS disabled
              FROM old_rows r GROUP BY r.portal_id) d
        CROSS JOIN LATERAL (VALUES ('subscribers', d.total), ('subscribers_disabled', d.disabled)) k(name, value)
        WHERE k.value <> 0;
    ELSE
        INSERT INTO stats_counters (portal_id, name, value)
        SELECT x.portal_id, 'subscribers_disabled', sum(x.n)
        FROM (SELECT r.portal_id, 1 AS n FROM new_rows r WHERE r.disabled
              UNION ALL
              SELECT r.portal_id, -1 FROM old_rows r WHERE r.disabled) x
        GROUP BY x.portal_id HAVING sum(x.n) <> 0;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER stats_subscribers_insert AFTER INSERT ON subscribers
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION catena_stats_subscribers();
CREATE TRIGGER stats_subscribers_update AFTER UPDATE ON subscribers
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION catena_stats_subscribers();
CREATE TRIGGER stats_subscribers_delete AFTER DELETE ON subscribers
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION catena_stats_subscribers();

-- subscriptions: how many subscribers have at least one explicit subscription.
CREATE FUNCTION catena_stats_subscriptions() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    subscribers bigint[];
    portals bigint[];
    changes integer[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(r.subscriber_id), array_agg(r.portal_id), array_agg(1)
        INTO subscribers, portals, changes FROM new_rows r;
    ELSE
        SELECT array_agg(r.subscriber_id), array_agg(r.portal_id), array_agg(-1)
        INTO subscribers, portals, changes FROM old_rows r;
    END IF;
    WITH d AS (
        SELECT x.subscriber_id, min(x.portal_id) AS portal_id, sum(x.n)::integer AS n
        FROM unnest(subscribers, portals, changes) AS x(subscriber_id, portal_id, n)
        GROUP BY x.subscriber_id
    ), up AS (
        INSERT INTO stats_subscriber_packages AS t (subscriber_id, portal_id, packages)
        SELECT d.subscriber_id, d.portal_id, d.n FROM d ORDER BY d.subscriber_id
        ON CONFLICT (subscriber_id) DO UPDATE SET packages = t.packages + excluded.packages
        RETURNING t.subscriber_id, t.portal_id, t.packages
    )
    INSERT INTO stats_counters (portal_id, name, value)
    SELECT up.portal_id, 'subscribers_with_packages',
           sum((up.packages > 0)::integer - (up.packages - d.n > 0)::integer)
    FROM up JOIN d USING (subscriber_id)
    GROUP BY up.portal_id HAVING sum((up.packages > 0)::integer - (up.packages - d.n > 0)::integer) <> 0;
    RETURN NULL;
END
$$;
CREATE TRIGGER stats_subscriptions_insert AFTER INSERT ON subscriptions
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION catena_stats_subscriptions();
CREATE TRIGGER stats_subscriptions_delete AFTER DELETE ON subscriptions
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION catena_stats_subscriptions();

-- Fold the delta rows into one per key; drop hours older than two days, running
-- counts back at zero and figures of deleted portals.  Serialised with the recount.
CREATE FUNCTION catena_stats_compact() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(8001, 0);
    WITH gone AS (DELETE FROM stats_counters RETURNING *)
    INSERT INTO stats_counters (portal_id, name, value)
    SELECT g.portal_id, g.name, sum(g.value) FROM gone g
    WHERE EXISTS (SELECT 1 FROM portals p WHERE p.id = g.portal_id)
    GROUP BY 1, 2 HAVING sum(g.value) <> 0;
    WITH gone AS (DELETE FROM stats_channel_viewers RETURNING *)
    INSERT INTO stats_channel_viewers (portal_id, channel_name, viewers)
    SELECT g.portal_id, g.channel_name, sum(g.viewers) FROM gone g
    WHERE EXISTS (SELECT 1 FROM portals p WHERE p.id = g.portal_id)
    GROUP BY 1, 2 HAVING sum(g.viewers) <> 0;
    WITH gone AS (DELETE FROM stats_session_opens RETURNING *)
    INSERT INTO stats_session_opens (portal_id, hour, opened)
    SELECT g.portal_id, g.hour, sum(g.opened) FROM gone g
    WHERE g.hour > now() - interval '48 hours' AND EXISTS (SELECT 1 FROM portals p WHERE p.id = g.portal_id)
    GROUP BY 1, 2;
    DELETE FROM stats_live_subscribers WHERE sessions = 0;
    DELETE FROM stats_subscriber_packages WHERE packages = 0;
END
$$;

-- Rebuild every figure from the base tables (after restoring a backup, dropping a
-- partition by hand, or to check the counters).  Writers of the three tables wait
-- while it runs.
CREATE FUNCTION catena_stats_recount() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(8001, 0);
    LOCK TABLE subscribers, subscriptions, play_sessions IN SHARE MODE;
    DELETE FROM stats_counters;
    DELETE FROM stats_channel_viewers;
    DELETE FROM stats_session_opens;
    DELETE FROM stats_live_subscribers;
    DELETE FROM stats_subscriber_packages;
    INSERT INTO stats_counters (portal_id, name, value)
    SELECT s.portal_id, k.name, k.value
    FROM (SELECT portal_id, count(*) AS total, count(*) FILTER (WHERE disabled) AS disabled
          FROM subscribers GROUP BY portal_id) s
    CROSS JOIN LATERAL (VALUES ('subscribers', s.total), ('subscribers_disabled', s.disabled)) k(name, value)
    WHERE k.value <> 0;
    INSERT INTO stats_subscriber_packages (subscriber_id, portal_id, packages)
    SELECT subscriber_id, min(portal_id), count(*) FROM subscriptions GROUP BY subscriber_id;
    INSERT INTO stats_counters (portal_id, name, value)
    SELECT portal_id, 'subscribers_with_packages', count(*) FROM stats_subscriber_packages GROUP BY portal_id;
    INSERT INTO stats_channel_viewers (portal_id, channel_name, viewers)
    SELECT portal_id, channel_name, count(*) FROM play_sessions WHERE active GROUP BY 1, 2;
    INSERT INTO stats_live_subscribers (subscriber_id, portal_id, sessions)
    SELECT subscriber_id, min(portal_id), count(*) FROM play_sessions
    WHERE active AND subscriber_id IS NOT NULL GROUP BY subscriber_id;
    INSERT INTO stats_counters (portal_id, name, value)
    SELECT portal_id, 'watchers', count(*) FROM stats_live_subscribers GROUP BY portal_id;
    INSERT INTO stats_session_opens (portal_id, hour, opened)
    SELECT portal_id, date_trunc('hour', opened_at, 'UTC'), count(*) FROM play_sessions
    WHERE id >= catena_id_at(now() - interval '72 hours') AND opened_at > now() - interval '48 hours'
    GROUP BY 1, 2;
END
$$;
SELECT catena_stats_recount();
