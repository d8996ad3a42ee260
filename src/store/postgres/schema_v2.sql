-- Version 2: telling people (DESIGN §9). Notifications wait in an outbox,
-- written in the same transaction as the event that caused them; escalation
-- timers are rows (fired once across replicas: SKIP LOCKED and a state
-- check); incidents keep their runbooks' notification rules and who
-- acknowledged them.
ALTER TABLE incidents ADD COLUMN notify TEXT NOT NULL DEFAULT '{}';
ALTER TABLE incidents ADD COLUMN acknowledged_at TIMESTAMPTZ;
ALTER TABLE incidents ADD COLUMN acknowledged_by TEXT;
CREATE TABLE outbox (
  id              BIGSERIAL PRIMARY KEY,
  incident_id     BIGINT NOT NULL REFERENCES incidents(id),
  notification_id BIGINT REFERENCES notifications(id),
  fingerprint     TEXT,
  notifier        TEXT NOT NULL,
  event           TEXT NOT NULL,
  runbook         TEXT,
  run_id          BIGINT,
  step            TEXT,
  detail          TEXT NOT NULL,
  template        TEXT,
  state           TEXT NOT NULL,
  attempts        INTEGER NOT NULL DEFAULT 0,
  last_error      TEXT,
  created_at      TIMESTAMPTZ NOT NULL,
  next_at         TIMESTAMPTZ NOT NULL,
  owner           TEXT,
  lease_until     TIMESTAMPTZ,
  delivered_at    TIMESTAMPTZ
);
CREATE INDEX outbox_due ON outbox(next_at) WHERE state IN ('pending', 'sending');
CREATE INDEX outbox_incident ON outbox(incident_id);
CREATE TABLE escalations (
  id           BIGSERIAL PRIMARY KEY,
  incident_id  BIGINT NOT NULL REFERENCES incidents(id),
  runbook      TEXT NOT NULL,
  rule         INTEGER NOT NULL,
  due_at       TIMESTAMPTZ NOT NULL,
  notify       TEXT NOT NULL,
  unless_      TEXT NOT NULL,
  message      TEXT,
  after_ms     BIGINT NOT NULL,
  state        TEXT NOT NULL,
  ended_at     TIMESTAMPTZ,
  reason       TEXT,
  UNIQUE (incident_id, runbook, rule)
);
CREATE INDEX escalations_due ON escalations(due_at) WHERE state = 'pending';
