-- Play sessions an operator terminated (POST /play-sessions/{id}/terminate, issue 11):
-- close_reason is the operator's reason ('terminated' when none was given), NULL for
-- sessions closed by the viewer, the gateway or the sweeper; terminated_at is when.
-- Gateways that reconnect read the recent terminations (partial index: few rows) so
-- that one whose signal they missed is refused all the same.
ALTER TABLE play_sessions ADD COLUMN close_reason text;
ALTER TABLE play_sessions ADD COLUMN terminated_at timestamptz;
CREATE INDEX play_sessions_terminated ON play_sessions (terminated_at) WHERE terminated_at IS NOT NULL;
