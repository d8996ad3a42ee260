-- Version 9: approval steps. A run paused on an approval step is
-- `awaiting_approval` (its steps so far in runs.result); its approval row
-- waits for the first decision or its deadline.
CREATE TABLE approvals (
  id            INTEGER PRIMARY KEY,
  run_id        INTEGER NOT NULL REFERENCES runs(id),
  incident_id   INTEGER NOT NULL REFERENCES incidents(id),
  runbook       TEXT NOT NULL,
  step          TEXT NOT NULL,
  step_index    INTEGER NOT NULL,
  prompt        TEXT NOT NULL,
  requested_at  TEXT NOT NULL,
  deadline      TEXT NOT NULL,
  on_timeout    TEXT NOT NULL,       -- deny | approve
  state         TEXT NOT NULL,       -- pending | approved | denied | timed_out | cancelled
  decided_by    TEXT,
  decided_at    TEXT,
  comment       TEXT
);
CREATE INDEX approvals_run ON approvals(run_id);
CREATE INDEX approvals_incident ON approvals(incident_id);
CREATE INDEX approvals_due ON approvals(deadline) WHERE state = 'pending';
-- A run waiting for approval is still in progress for its alert.
DROP INDEX runs_in_progress;
CREATE INDEX runs_in_progress ON runs(runbook, fingerprint, phase) WHERE state IN ('queued', 'running', 'awaiting_approval');
