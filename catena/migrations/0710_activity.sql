-- When staff and subscribers were last seen (issue 11): a manager's last sign-in,
-- a subscriber's last app sign-in or play-session update.  The gateway writes
-- last_activity_at once per session batch for the subscribers in it, never per check.
ALTER TABLE managers ADD COLUMN last_login_at timestamptz;
ALTER TABLE subscribers ADD COLUMN last_activity_at timestamptz;
-- Room in each page for those updates to stay HOT (no index entries rewritten);
-- applies to pages written from now on.
ALTER TABLE subscribers SET (fillfactor = 90);
