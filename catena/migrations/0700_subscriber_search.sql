-- Search in the subscriber list (GET /subscribers?q=): phone digits and names as
-- substrings, on any PostgreSQL (no extension needed: the embedded server of
-- `catena up` has no pg_trgm).
--
-- A GIN index holds, per subscriber, the 3-digit pieces of its phone (country
-- code and number together) and the 1-, 2- and 3-character pieces of its folded
-- name, each keyed with the portal and the kind ('p' phone, 'n' name).  A search
-- asks the index for the rows holding every piece of the query and checks each
-- with strpos: the index narrows, the check decides.

-- How names are compared: lower case, and ё read as е (people type either).
CREATE FUNCTION catena_fold(value text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
RETURN translate(lower(value), 'ё', 'е');

-- Folding (lower() of non-ASCII text) is slow: done once per write, not per search.
ALTER TABLE subscribers ADD COLUMN search_name text GENERATED ALWAYS AS (catena_fold(name)) STORED;

-- One function with one subquery: nesting SQL functions here costs ten times more
-- on every insert.  Repeated pieces are fine (GIN keeps each key once per row).
CREATE FUNCTION catena_subscriber_keys(portal_id bigint, search_name text, country_code text, phone text)
RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT COST 1000
RETURN ARRAY(
    SELECT portal_id::text || 'p' || substr(country_code || phone, i, 3)
    FROM generate_series(1, length(country_code || phone) - 2) AS i
    UNION ALL
    SELECT portal_id::text || 'n' || substr(search_name, i, n)
    FROM generate_series(1, length(search_name)) AS i, generate_series(1, 3) AS n);

-- The keys a query needs: its 3-character pieces, or itself when shorter.
CREATE FUNCTION catena_query_keys(portal_id bigint, kind text, value text) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
RETURN ARRAY(
    SELECT portal_id::text || kind || substr(value, i, least(length(value), 3))
    FROM generate_series(1, greatest(length(value) - 2, 1)) AS i);

-- fastupdate off: no pending list for searches to scan, no flush stalls on insert.
CREATE INDEX subscribers_search ON subscribers
    USING gin (catena_subscriber_keys(portal_id, search_name, phone_country_code, phone))
    WITH (fastupdate = off);
