-- Version 10: the Alertmanager silences runs made, recorded when made, so
-- that whoever finds the run ended (its executor, recovery after a crash, a
-- replica taking it over) expires them, and an `until: resolved` silence's
-- alert can be asked about (Alertmanager sends no resolution for an alert
-- it silences).
CREATE TABLE silences (
  id           TEXT PRIMARY KEY,         -- Alertmanager's silence id
  run_id       INTEGER NOT NULL REFERENCES runs(id),
  incident_id  INTEGER NOT NULL REFERENCES incidents(id),
  receiver     TEXT NOT NULL,
  group_key    TEXT NOT NULL,
  fingerprint  TEXT NOT NULL,
  starts_at    TEXT NOT NULL,
  alert        TEXT NOT NULL,            -- the alert as its incident holds it (JSON)
  until        TEXT NOT NULL CHECK (until IN ('run_end', 'resolved')),
  watched      INTEGER NOT NULL DEFAULT 0, -- 1: Alertmanager held the alert when the silence was made
  created_at   TEXT NOT NULL,
  ended_at     TEXT
);
CREATE INDEX silences_open ON silences(run_id) WHERE ended_at IS NULL;
-- Dead notifications, counted every second for /metrics.
CREATE INDEX outbox_dead ON outbox(id) WHERE state = 'dead';
-- A remediation run of the incident failed (people must act), apart from
-- `escalated`, which now means only that an escalation timer fired. Before,
-- one flag said both.
ALTER TABLE incidents ADD COLUMN run_failed INTEGER NOT NULL DEFAULT 0;
UPDATE incidents SET run_failed = escalated;
