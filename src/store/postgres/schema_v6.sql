-- Version 6: an incident's commander (the person leading it: the first to
-- acknowledge, then whoever it is handed to); the checklist items people
-- ticked (who and when); re-runs, which belong to their incident and take
-- their original's place (`rerun_of`: the first run of what is re-run;
-- `rerun`: which re-run it is, part of the run key, so a re-run never
-- collides with the run it repeats and a double submission queues one);
-- runs skipped by a rate cap (people are told once per storm); a running
-- run's steps so far (`progress`) and when its owner last renewed its
-- lease (`heard_at`), so that a run taken over keeps them; runs' states
-- and phases checked.
ALTER TABLE incidents ADD COLUMN commander TEXT;
UPDATE incidents SET commander = acknowledged_by;
CREATE TABLE checklist_done (
  run_id   BIGINT NOT NULL REFERENCES runs(id),
  step     TEXT NOT NULL,
  done_by  TEXT NOT NULL,
  done_at  TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (run_id, step)
);
ALTER TABLE runs ADD COLUMN rerun_of BIGINT REFERENCES runs(id);
ALTER TABLE runs ADD COLUMN rerun INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN rate_limited BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE runs ADD COLUMN progress TEXT;
ALTER TABLE runs ADD COLUMN heard_at TIMESTAMPTZ;
ALTER TABLE runs DROP CONSTRAINT runs_runbook_fingerprint_starts_at_phase_key;
ALTER TABLE runs ADD CONSTRAINT runs_key UNIQUE (runbook, fingerprint, starts_at, phase, rerun);
ALTER TABLE runs ADD CONSTRAINT runs_phase CHECK (phase IN ('remediation', 'resolution'));
ALTER TABLE runs ADD CONSTRAINT runs_state CHECK (state IN ('queued', 'running', 'awaiting_approval', 'succeeded',
  'succeeded_with_failures', 'failed', 'timed_out', 'cancelled', 'interrupted', 'skipped', 'planned'));
CREATE INDEX runs_recent ON runs(queued_at) WHERE state <> 'skipped';
CREATE INDEX runs_rate_limited ON runs(runbook, ended_at) WHERE rate_limited;
