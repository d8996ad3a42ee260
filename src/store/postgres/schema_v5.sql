-- Version 5: the Alertmanager silences runs made, recorded when made, so
-- that whoever finds the run ended (its executor, a replica taking it over)
-- expires them, and an `until: resolved` silence's alert can be asked
-- about (Alertmanager sends no resolution for an alert it silences).
CREATE TABLE silences (
  id           TEXT PRIMARY KEY,         -- Alertmanager's silence id
  run_id       BIGINT NOT NULL REFERENCES runs(id),
  incident_id  BIGINT NOT NULL REFERENCES incidents(id),
  receiver     TEXT NOT NULL,
  group_key    TEXT NOT NULL,
  fingerprint  TEXT NOT NULL,
  starts_at    TEXT NOT NULL,
  alert        TEXT NOT NULL,            -- the alert as its incident holds it (JSON)
  until        TEXT NOT NULL CHECK (until IN ('run_end', 'resolved')),
  watched      BOOLEAN NOT NULL DEFAULT false, -- Alertmanager held the alert when the silence was made
  created_at   TIMESTAMPTZ NOT NULL,
  ended_at     TIMESTAMPTZ
);
CREATE INDEX silences_open ON silences(run_id) WHERE ended_at IS NULL;
-- Dead notifications, counted every second for /metrics.
CREATE INDEX outbox_dead ON outbox(id) WHERE state = 'dead';
-- A remediation run of the incident failed (people must act), apart from
-- `escalated`, which now means only that an escalation timer fired. Before,
-- one flag said both.
ALTER TABLE incidents ADD COLUMN run_failed BOOLEAN NOT NULL DEFAULT false;
UPDATE incidents SET run_failed = escalated;
