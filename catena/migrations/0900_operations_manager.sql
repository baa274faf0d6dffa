-- The managerEmail filter of GET /operations and the console's Operations screen
-- (who acted, as catena.operations.record writes it): one manager's page reads
-- only that manager's rows, in id order, instead of every operation's payload.
CREATE INDEX operations_manager ON operations (portal_id, (payload ->> 'managerEmail'), id);
