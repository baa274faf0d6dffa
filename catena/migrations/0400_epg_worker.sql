-- The EPG worker (epg_worker): what an import needs beyond the core schema.

-- The fetch that wrote each programme.  An import writes its rows inside one
-- transaction and, just before committing, deletes the source's rows of every
-- other fetch: readers see the old guide or the new one, never a mix.
ALTER TABLE epg_programs ADD COLUMN fetch_id bigint;

-- What the guide in epg_programs was imported from.  http_etag/http_last_modified
-- (and the content hash) are trusted only while the URL and the time shift are the
-- ones they were recorded for; changing either makes the next update import again.
ALTER TABLE epg_sources
    ADD COLUMN imported_url text,
    ADD COLUMN imported_time_shift integer,
    ADD COLUMN imported_sha256 bytea;

-- epg_programs had a foreign key to epg_sources.  PostgreSQL checks a foreign key
-- row by row (a lookup and a row lock on the source for each of the millions of
-- rows of a large guide), which cost more than everything else the import asks of
-- the database and held the source locked for the whole import.  The importer
-- instead locks the source row once, just before it commits (FOR KEY SHARE, so a
-- concurrent delete waits for the commit and then removes the new rows), and this
-- trigger keeps ON DELETE CASCADE: deleting a source, or its portal, deletes its
-- programmes.
ALTER TABLE epg_programs DROP CONSTRAINT epg_programs_epg_source_id_fkey;

CREATE FUNCTION catena_epg_source_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM epg_programs WHERE epg_source_id = OLD.id;
    RETURN NULL;
END
$$;
CREATE TRIGGER epg_sources_delete_programs AFTER DELETE ON epg_sources
    FOR EACH ROW EXECUTE FUNCTION catena_epg_source_deleted();
