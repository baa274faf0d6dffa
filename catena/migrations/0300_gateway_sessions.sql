-- The authorization gateway's additions to play-session recording (issue 5).

-- Flussonic's session UUID → the play session's Snowflake id.  Auth checks and
-- event-sink events of one viewing may reach different gateway processes in any
-- order; whichever batch arrives first claims the id here and every later one
-- lands on the same row.  play_sessions itself cannot hold a unique index on the
-- UUID because it is partitioned by id.
CREATE TABLE play_session_ids (
    flussonic_id text PRIMARY KEY,
    id bigint NOT NULL,
    portal_id bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX play_session_ids_created ON play_session_ids (created_at);

-- A session closed by the idle sweeper rather than by Flussonic: a later update
-- for it (delivered late, or replayed from a spool) reopens it.
ALTER TABLE play_sessions ADD COLUMN swept boolean NOT NULL DEFAULT false;

