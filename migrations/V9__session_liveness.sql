-- A run's safe point: the time (the database's clock) up to which everything it had
-- received was committed or durably spooled, as of its last heartbeat. A crashed run's gap
-- starts here, not at its last heartbeat (which beats on while trades wait in the channel,
-- the batch being gathered, or a commit) nor at the newest committed trade (which the
-- backfill's own commits moved).
ALTER TABLE sessions ADD COLUMN safe_until timestamptz;
