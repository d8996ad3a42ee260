-- Version 16: a run's start is noted on its incident after its claim (as
-- the PostgreSQL store's schema_v11.sql). `start_noted`: its timeline
-- entry, status change and notifications are in; a claim sets it false,
-- and whoever notes the start (the run's owner, its end, a takeover) sets
-- it true, once.
ALTER TABLE runs ADD COLUMN start_noted INTEGER NOT NULL DEFAULT 1 CHECK (start_noted IN (0, 1));
