-- Version 6: leases and fences (the store interface PostgreSQL shares).
-- A claimed run has an owner, a lease renewed by heartbeat and a fence that
-- every write of the run must name; cancellation requests are rows, not
-- process memory; idempotent runbooks' runs are queued again (attempt
-- counted) instead of ending interrupted after a crash.
ALTER TABLE runs ADD COLUMN owner TEXT;
ALTER TABLE runs ADD COLUMN fence INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN lease_until TEXT;
ALTER TABLE runs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN idempotent INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
CREATE INDEX runs_in_progress ON runs(runbook, fingerprint, phase) WHERE state IN ('queued', 'running');
