-- runbookd on PostgreSQL, version 1: the same records as the SQLite store,
-- with leases and fences for several replicas.
CREATE TABLE notifications (
  id           BIGSERIAL PRIMARY KEY,
  received_at  TIMESTAMPTZ NOT NULL,
  receiver     TEXT NOT NULL,
  group_key    TEXT NOT NULL,
  status       TEXT NOT NULL,
  incident_id  BIGINT,
  body         BYTEA NOT NULL               -- the raw webhook body, for audit
);
CREATE TABLE incidents (
  id              BIGSERIAL PRIMARY KEY,    -- shown as INC-0001; gaps are possible, duplicates are not
  receiver        TEXT NOT NULL,
  group_key       TEXT NOT NULL,
  title           TEXT NOT NULL,
  severity        TEXT NOT NULL,
  status          TEXT NOT NULL,            -- investigating | identified | monitoring | resolved
  escalated       BOOLEAN NOT NULL DEFAULT false,
  services        TEXT NOT NULL DEFAULT '[]',
  runbooks        TEXT NOT NULL DEFAULT '[]',
  root_cause      TEXT,
  shadow          BOOLEAN NOT NULL DEFAULT false,
  created_at      TIMESTAMPTZ NOT NULL,
  updated_at      TIMESTAMPTZ NOT NULL,
  resolved_at     TIMESTAMPTZ,
  alerts_ended_at TIMESTAMPTZ
);
-- One open incident per Alertmanager group and receiver, whichever replica opens it.
CREATE UNIQUE INDEX incidents_open ON incidents(receiver, group_key) WHERE status <> 'resolved';
CREATE INDEX incidents_created ON incidents(created_at);
CREATE INDEX incidents_status ON incidents(status);
CREATE TABLE alerts (
  incident_id   BIGINT NOT NULL REFERENCES incidents(id),
  fingerprint   TEXT NOT NULL,
  starts_at     TEXT NOT NULL,
  status        TEXT NOT NULL,
  ends_at       TEXT NOT NULL,
  labels        TEXT NOT NULL,
  annotations   TEXT NOT NULL,
  generator_url TEXT NOT NULL,
  first_seen    TIMESTAMPTZ NOT NULL,
  last_seen     TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (incident_id, fingerprint, starts_at)
);
CREATE TABLE runs (
  id               BIGSERIAL PRIMARY KEY,
  incident_id      BIGINT NOT NULL REFERENCES incidents(id),
  notification_id  BIGINT NOT NULL REFERENCES notifications(id),
  runbook          TEXT NOT NULL,
  fingerprint      TEXT NOT NULL,
  starts_at        TEXT NOT NULL,
  phase            TEXT NOT NULL,           -- remediation | resolution
  state            TEXT NOT NULL,           -- queued | running | planned | skipped | cancelled | interrupted | <run outcome>
  reason           TEXT,
  queued_at        TIMESTAMPTZ NOT NULL,
  started_at       TIMESTAMPTZ,
  ended_at         TIMESTAMPTZ,
  result           TEXT,                    -- the run's JSON record
  owner            TEXT,                    -- the replica executing it
  fence            BIGINT NOT NULL DEFAULT 0,
  lease_until      TIMESTAMPTZ,
  attempt          INTEGER NOT NULL DEFAULT 0,
  idempotent       BOOLEAN NOT NULL DEFAULT false,
  cancel_requested BOOLEAN NOT NULL DEFAULT false,
  -- A notification resent, or sent by every Alertmanager peer, maps to the
  -- same key and never starts a second run.
  UNIQUE (runbook, fingerprint, starts_at, phase)
);
CREATE INDEX runs_queued ON runs(id) WHERE state = 'queued';
CREATE INDEX runs_running ON runs(lease_until) WHERE state = 'running';
-- One run of a runbook for an alert in progress at a time, whatever its
-- startsAt (Alertmanager's can drift between peers): two replicas ingesting
-- drifted copies at once cannot both queue one.
CREATE UNIQUE INDEX runs_in_progress ON runs(runbook, fingerprint, phase) WHERE state IN ('queued', 'running');
CREATE INDEX runs_incident ON runs(incident_id);
CREATE INDEX runs_runbook ON runs(runbook, id);
CREATE TABLE step_output (
  id       BIGSERIAL PRIMARY KEY,
  run_id   BIGINT NOT NULL REFERENCES runs(id),
  step     TEXT NOT NULL,
  seq      INTEGER NOT NULL,
  stream   TEXT NOT NULL,
  chunk    BYTEA NOT NULL
);
CREATE INDEX step_output_run ON step_output(run_id, seq);
CREATE TABLE timeline (
  id           BIGSERIAL PRIMARY KEY,
  incident_id  BIGINT NOT NULL REFERENCES incidents(id),
  at           TIMESTAMPTZ NOT NULL,
  author       TEXT NOT NULL,
  kind         TEXT NOT NULL,
  message      TEXT NOT NULL,
  status       TEXT
);
CREATE INDEX timeline_incident ON timeline(incident_id, id);
CREATE TABLE unmatched_alerts (
  fingerprint TEXT PRIMARY KEY,
  alertname   TEXT NOT NULL,
  labels      TEXT NOT NULL,
  receiver    TEXT NOT NULL,
  first_seen  TIMESTAMPTZ NOT NULL,
  last_seen   TIMESTAMPTZ NOT NULL,
  seen        BIGINT NOT NULL
);
CREATE INDEX unmatched_alerts_last_seen ON unmatched_alerts(last_seen);
-- Periodic duties (reaping expired leases) run on the holder of this lease only.
CREATE TABLE leader (
  name   TEXT PRIMARY KEY,
  owner  TEXT NOT NULL,
  until  TIMESTAMPTZ NOT NULL
);
