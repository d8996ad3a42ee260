-- Version 11: an incident's commander (the person leading it: the first to
-- acknowledge, then whoever it is handed to); the checklist items people
-- ticked (who and when); re-runs, which belong to their incident and take
-- their original's place (`rerun_of`: the first run of what is re-run;
-- `rerun`: which re-run it is, part of the run key, so a re-run never
-- collides with the run it repeats and a double submission queues one);
-- runs skipped by a rate cap (people are told once per storm); a running
-- run's steps so far (`progress`) and when its owner last renewed its
-- lease (`heard_at`), so that a run taken over keeps them. The runs
-- table is rebuilt (SQLite cannot change a table's UNIQUE constraint), with
-- its states and phases checked.
ALTER TABLE incidents ADD COLUMN commander TEXT;
UPDATE incidents SET commander = acknowledged_by;
CREATE TABLE checklist_done (
  run_id   INTEGER NOT NULL REFERENCES runs(id),
  step     TEXT NOT NULL,
  done_by  TEXT NOT NULL,
  done_at  TEXT NOT NULL,
  PRIMARY KEY (run_id, step)
);
CREATE TABLE runs_v11 (
  id               INTEGER PRIMARY KEY,
  incident_id      INTEGER NOT NULL REFERENCES incidents(id),
  notification_id  INTEGER NOT NULL REFERENCES notifications(id),
  runbook          TEXT NOT NULL,
  fingerprint      TEXT NOT NULL,
  starts_at        TEXT NOT NULL,
  phase            TEXT NOT NULL CHECK (phase IN ('remediation', 'resolution')),
  state            TEXT NOT NULL CHECK (state IN ('queued', 'running', 'awaiting_approval', 'succeeded',
                     'succeeded_with_failures', 'failed', 'timed_out', 'cancelled', 'interrupted', 'skipped', 'planned')),
  reason           TEXT,
  queued_at        TEXT NOT NULL,
  started_at       TEXT,
  ended_at         TEXT,
  result           TEXT,                  -- the run's JSON record
  owner            TEXT,
  fence            INTEGER NOT NULL DEFAULT 0,
  lease_until      TEXT,
  attempt          INTEGER NOT NULL DEFAULT 0,
  idempotent       INTEGER NOT NULL DEFAULT 0,
  cancel_requested INTEGER NOT NULL DEFAULT 0,
  rerun_of         INTEGER REFERENCES runs(id),
  rerun            INTEGER NOT NULL DEFAULT 0,
  rate_limited     INTEGER NOT NULL DEFAULT 0,
  progress         TEXT,                  -- a running run's steps so far (JSON)
  heard_at         TEXT,                  -- its owner's last renewal
  -- A resent notification maps to the same key and never starts a second run.
  UNIQUE (runbook, fingerprint, starts_at, phase, rerun)
);
INSERT INTO runs_v11 (id, incident_id, notification_id, runbook, fingerprint, starts_at, phase, state, reason,
                      queued_at, started_at, ended_at, result, owner, fence, lease_until, attempt, idempotent, cancel_requested)
  SELECT id, incident_id, notification_id, runbook, fingerprint, starts_at, phase, state, reason,
         queued_at, started_at, ended_at, result, owner, fence, lease_until, attempt, idempotent, cancel_requested FROM runs;
DROP TABLE runs;
ALTER TABLE runs_v11 RENAME TO runs;
CREATE INDEX runs_state ON runs(state, id);
CREATE INDEX runs_incident ON runs(incident_id);
CREATE INDEX runs_in_progress ON runs(runbook, fingerprint, phase) WHERE state IN ('queued', 'running', 'awaiting_approval');
CREATE INDEX runs_recent ON runs(queued_at) WHERE state != 'skipped';
CREATE INDEX runs_rate_limited ON runs(runbook, ended_at) WHERE rate_limited = 1;
CREATE TRIGGER runs_queued_insert AFTER INSERT ON runs WHEN NEW.state = 'queued'
BEGIN UPDATE queue_depth SET n = n + 1; END;
CREATE TRIGGER runs_queued_leave AFTER UPDATE OF state ON runs WHEN OLD.state = 'queued' AND NEW.state != 'queued'
BEGIN UPDATE queue_depth SET n = n - 1; END;
CREATE TRIGGER runs_queued_enter AFTER UPDATE OF state ON runs WHEN OLD.state != 'queued' AND NEW.state = 'queued'
BEGIN UPDATE queue_depth SET n = n + 1; END;
