-- Content (issue 11): channel numbers, search on channels and packages, package
-- subscriber counts, the channels of an EPG guide.

-- Search is a case-insensitive substring match.  The embedded PostgreSQL of
-- `make up` ships no contrib extensions, so pg_trgm is not available everywhere;
-- the same idea is built from core pieces instead.  A text's n-grams (every
-- substring of 1, 2 and 3 characters, lower-cased) are hashed together with the
-- portal id into bigints, and a GIN index over that array (core array_ops) finds
-- the rows holding every n-gram of the query: the query itself when shorter than
-- three characters, else each of its trigrams.  The portal in the hash keeps one
-- portal's posting lists apart from every other's (a GIN index cannot lead with a
-- btree column without btree_gin, another contrib extension).  Candidates are
-- then checked with strpos on the stored lower-cased text; hash collisions only
-- ever add candidates, never lose rows.
--
-- Lines (E'\n') split a text: the API refuses control characters in a query,
-- so no n-gram spanning two lines can ever be asked for.
CREATE FUNCTION catena_search_grams(seed bigint, t text) RETURNS bigint[]
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE COST 10000 AS $$
DECLARE
    grams bigint[] := '{}';
    c text[];
    n integer;
    line text;
BEGIN
    FOREACH line IN ARRAY string_to_array(t, E'\n') LOOP
        c := string_to_array(line, NULL);
        n := coalesce(array_length(c, 1), 0);
        FOR i IN 1..n LOOP
            grams[cardinality(grams) + 1] := hashtextextended(c[i], seed);
            IF i < n THEN
                grams[cardinality(grams) + 1] := hashtextextended(c[i] || c[i + 1], seed);
            END IF;
            IF i + 1 < n THEN
                grams[cardinality(grams) + 1] := hashtextextended(c[i] || c[i + 1] || c[i + 2], seed);
            END IF;
        END LOOP;
    END LOOP;
    RETURN grams;
END
$$;

-- The n-grams every text containing q (already lower-cased) contains.
CREATE FUNCTION catena_search_query(seed bigint, q text) RETURNS bigint[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN length(q) < 3 THEN ARRAY[hashtextextended(q, seed)]
           ELSE ARRAY(SELECT DISTINCT hashtextextended(substr(q, i, 3), seed)
                      FROM generate_series(1, length(q) - 2) AS i) END
$$;

-- Channel numbers: optional, 1-99,999, unique within a portal when set.  Lists
-- are ordered by sort_number (the number, unnumbered channels after every
-- numbered one), then by id.
ALTER TABLE channels
    ADD COLUMN number integer CHECK (number BETWEEN 1 AND 99999),
    ADD COLUMN sort_number integer GENERATED ALWAYS AS (coalesce(number, 100000)) STORED,
    ADD COLUMN search text GENERATED ALWAYS AS (lower(name) || E'\n' || lower(title)) STORED;
CREATE UNIQUE INDEX channels_number ON channels (portal_id, number) WHERE number IS NOT NULL;
-- INCLUDE (search): a search walks this index and checks each row without
-- visiting the table (a title is at most 200 characters, so the entry stays far
-- below the btree's size limit).
CREATE INDEX channels_list ON channels (portal_id, sort_number, id) INCLUDE (search);
-- fastupdate off: channels change rarely, and a search then never scans a
-- pending list of recent inserts.
CREATE INDEX channels_search ON channels USING gin (catena_search_grams(portal_id, search))
    WITH (fastupdate = off);

-- Packages are listed by id; a description may be 2,000 characters, too long to
-- carry in a btree entry, so a search walk reads the table.
ALTER TABLE packages
    ADD COLUMN search text GENERATED ALWAYS AS (lower(name) || E'\n' || lower(description)) STORED;
CREATE INDEX packages_search ON packages USING gin (catena_search_grams(portal_id, search))
    WITH (fastupdate = off);

-- Explicit subscriptions per package, kept by the writers (a count(*) over the
-- subscriptions of a package with 100,000 subscribers costs ~10 ms, per package
-- on the page).  A statement-level trigger adds up each statement's changes and
-- applies them in package order.  Every transaction that changes subscriptions
-- changes them in one statement and bumps the portal's entitlement version after
-- it, so counter rows are always locked in one order.  Packages deleted in the
-- same transaction are skipped (their counter row goes with them).
CREATE TABLE package_subscriber_counts (
    package_id bigint PRIMARY KEY REFERENCES packages ON DELETE CASCADE,
    subscribers bigint NOT NULL
);

-- One function per trigger: a trigger with transition tables fires for a single
-- event, and PL/pgSQL resolves the table names when the function first runs.
CREATE FUNCTION catena_count_subscriptions_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO package_subscriber_counts AS c (package_id, subscribers)
    SELECT d.package_id, d.n FROM (SELECT package_id, count(*) AS n FROM added GROUP BY package_id) AS d
    JOIN packages p ON p.id = d.package_id
    ORDER BY d.package_id
    ON CONFLICT (package_id) DO UPDATE SET subscribers = c.subscribers + excluded.subscribers;
    RETURN NULL;
END
$$;

CREATE FUNCTION catena_count_subscriptions_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO package_subscriber_counts AS c (package_id, subscribers)
    SELECT d.package_id, -d.n FROM (SELECT package_id, count(*) AS n FROM removed GROUP BY package_id) AS d
    JOIN packages p ON p.id = d.package_id
    ORDER BY d.package_id
    ON CONFLICT (package_id) DO UPDATE SET subscribers = c.subscribers + excluded.subscribers;
    RETURN NULL;
END
$$;

CREATE FUNCTION catena_count_subscriptions_moved() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO package_subscriber_counts AS c (package_id, subscribers)
    SELECT d.package_id, d.delta
    FROM (
        SELECT package_id, sum(delta) AS delta
        FROM (SELECT package_id, 1 AS delta FROM added UNION ALL SELECT package_id, -1 FROM removed) AS x
        GROUP BY package_id
    ) AS d
    JOIN packages p ON p.id = d.package_id
    WHERE d.delta <> 0
    ORDER BY d.package_id
    ON CONFLICT (package_id) DO UPDATE SET subscribers = c.subscribers + excluded.subscribers;
    RETURN NULL;
END
$$;

CREATE TRIGGER subscriptions_count_added AFTER INSERT ON subscriptions
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION catena_count_subscriptions_added();
CREATE TRIGGER subscriptions_count_removed AFTER DELETE ON subscriptions
    REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION catena_count_subscriptions_removed();
CREATE TRIGGER subscriptions_count_moved AFTER UPDATE ON subscriptions
    REFERENCING OLD TABLE AS removed NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION catena_count_subscriptions_moved();

INSERT INTO package_subscriber_counts (package_id, subscribers)
SELECT package_id, count(*) FROM subscriptions GROUP BY package_id;

-- The channels an XMLTV guide declares (<channel id=...> with its display names),
-- written by the EPG importer with the programmes of the same fetch and replaced
-- with them atomically.
CREATE TABLE epg_guide_channels (
    epg_source_id bigint NOT NULL REFERENCES epg_sources ON DELETE CASCADE,
    fetch_id bigint NOT NULL,
    portal_id bigint NOT NULL,
    xmltv_id text NOT NULL,
    display_names text[] NOT NULL,
    PRIMARY KEY (epg_source_id, xmltv_id, fetch_id)
);
