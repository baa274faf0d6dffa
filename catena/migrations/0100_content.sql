-- Content (issue #3): renaming or deleting an EPG source rewrites the channels that
-- name it; this keeps that a lookup instead of a scan of the portal's channels.
CREATE INDEX channels_epg_source ON channels (portal_id, epg_source_name)
    WHERE epg_source_name IS NOT NULL;
