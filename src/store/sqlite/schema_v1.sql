-- runbookd store, version 1. Times are RFC 3339 UTC strings.
CREATE TABLE notifications (
  id           INTEGER PRIMARY KEY,
  received_at  TEXT NOT NULL,
  receiver     TEXT NOT NULL,
  group_key    TEXT NOT NULL,
  status       TEXT NOT NULL,
  incident_id  INTEGER,
  body         BLOB NOT NULL             -- the raw webhook body, for audit
);
CREATE TABLE incidents (
  id           INTEGER PRIMARY KEY,      -- shown as INC-0001
  receiver     TEXT NOT NULL,
  group_key    TEXT NOT NULL,
  title        TEXT NOT NULL,
  severity     TEXT NOT NULL,
  status       TEXT NOT NULL,            -- investigating | identified | monitoring | resolved
  escalated    INTEGER NOT NULL DEFAULT 0,
  services     TEXT NOT NULL DEFAULT '[]',
  runbooks     TEXT NOT NULL DEFAULT '[]',
  root_cause   TEXT,
  shadow       INTEGER NOT NULL DEFAULT 0,
  created_at   TEXT NOT NULL,
  updated_at   TEXT NOT NULL,
  resolved_at  TEXT
);
-- One open incident per Alertmanager group and receiver.
CREATE UNIQUE INDEX incidents_open ON incidents(receiver, group_key) WHERE status != 'resolved';
CREATE INDEX incidents_created ON incidents(created_at);
CREATE TABLE alerts (
  incident_id   INTEGER NOT NULL REFERENCES incidents(id),
  fingerprint   TEXT NOT NULL,
  starts_at     TEXT NOT NULL,
  status        TEXT NOT NULL,
  ends_at       TEXT NOT NULL,
  labels        TEXT NOT NULL,
  annotations   TEXT NOT NULL,
  generator_url TEXT NOT NULL,
  first_seen    TEXT NOT NULL,
  last_seen     TEXT NOT NULL,
  PRIMARY KEY (incident_id, fingerprint, starts_at)
);
CREATE TABLE runs (
  id              INTEGER PRIMARY KEY,
  incident_id     INTEGER NOT NULL REFERENCES incidents(id),
  notification_id INTEGER NOT NULL REFERENCES notifications(id),
  runbook         TEXT NOT NULL,
  fingerprint     TEXT NOT NULL,
  starts_at       TEXT NOT NULL,
  phase           TEXT NOT NULL,         -- remediation | resolution
  state           TEXT NOT NULL,         -- queued | running | planned | skipped | cancelled | interrupted | <run outcome>
  reason          TEXT,
  queued_at       TEXT NOT NULL,
  started_at      TEXT,
  ended_at        TEXT,
  result          TEXT,                  -- the run's JSON record
  -- A resent notification maps to the same key and never starts a second run.
  UNIQUE (runbook, fingerprint, starts_at, phase)
);
CREATE INDEX runs_state ON runs(state, id);
CREATE INDEX runs_incident ON runs(incident_id);
CREATE TABLE step_output (
  run_id   INTEGER NOT NULL REFERENCES runs(id),
  step     TEXT NOT NULL,
  seq      INTEGER NOT NULL,
  stream   TEXT NOT NULL,
  chunk    BLOB NOT NULL
);
CREATE INDEX step_output_run ON step_output(run_id, seq);
CREATE TABLE timeline (
  id           INTEGER PRIMARY KEY,
  incident_id  INTEGER NOT NULL REFERENCES incidents(id),
  at           TEXT NOT NULL,
  author       TEXT NOT NULL,
  kind         TEXT NOT NULL,             -- alert | run | step | status | update | note
  message      TEXT NOT NULL,
  status       TEXT
);
CREATE INDEX timeline_incident ON timeline(incident_id, id);
