-- Subscribers, play-session queries, the operations feed and webhooks (issue #4).

-- Billing looks subscribers up by phone alone, too.
CREATE INDEX subscribers_phone ON subscribers (portal_id, phone);

-- Dashboards poll the active sessions of a portal every few seconds.
CREATE INDEX play_sessions_portal_active ON play_sessions (portal_id, id) WHERE active;

-- The operations feed: each portal's operations numbered in commit order.
--
-- Operation ids are made when a transaction writes its row, not when it commits,
-- so a slow transaction can commit an id older than ids already visible; a reader
-- that followed ids would skip it.  A deferred trigger numbers each operation at
-- commit instead, under a per-portal advisory lock that is released only once
-- the commit is visible: whoever sees number n of a portal also sees every
-- smaller number of that portal that will ever exist.  Only portals with
-- webhooks are numbered into the table; webhook delivery follows it.
CREATE SEQUENCE operation_feed_seq;
CREATE TABLE operation_feed (
    portal_id bigint NOT NULL,
    seq bigint NOT NULL,
    operation_id bigint NOT NULL,
    PRIMARY KEY (portal_id, seq)
);

-- Advisory lock class 2001 (two-key form): the operations feed of one portal.
CREATE FUNCTION catena_operation_feed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(2001, hashint8(NEW.portal_id));
    -- Under READ COMMITTED this statement sees a webhook committed before the lock
    -- was granted; other isolation levels see an older snapshot, so number anyway.
    IF current_setting('transaction_isolation') = 'read committed'
       AND NOT EXISTS (SELECT 1 FROM webhooks WHERE portal_id = NEW.portal_id) THEN
        RETURN NULL;
    END IF;
    INSERT INTO operation_feed (portal_id, seq, operation_id)
    VALUES (NEW.portal_id, nextval('operation_feed_seq'), NEW.id);
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER operations_feed AFTER INSERT ON operations
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION catena_operation_feed();

-- Webhooks: delivery position in the feed, one registration per URL and portal.
ALTER TABLE webhooks
    ADD COLUMN last_delivered_seq bigint NOT NULL DEFAULT 0,
    ADD COLUMN last_delivered_at timestamptz;
CREATE UNIQUE INDEX webhooks_portal_url ON webhooks (portal_id, url);
CREATE INDEX webhooks_due ON webhooks (next_attempt_at);
