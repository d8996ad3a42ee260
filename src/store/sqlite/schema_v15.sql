-- Version 15: budget-aware runbooks (DESIGN §12), as the PostgreSQL
-- store's schema_v10.sql.
-- An incident whose cost a policy judged too high must have a postmortem
-- (`postmortem_required`: the policies' reasons; NULL: not required).
ALTER TABLE incidents ADD COLUMN postmortem_required TEXT;
-- Four more notification events (the outbox's triggers, below).
-- An operator lets a frozen service's gate say yes for a while: who, why,
-- until when, and who ended it early. Kept as history.
CREATE TABLE gate_overrides (
  id         INTEGER PRIMARY KEY AUTOINCREMENT,
  service    TEXT NOT NULL,
  created_by TEXT NOT NULL,
  reason     TEXT NOT NULL,
  created_at TEXT NOT NULL,
  until      TEXT NOT NULL,
  ended_at   TEXT,
  ended_by   TEXT
);
CREATE INDEX gate_overrides_open ON gate_overrides(service) WHERE ended_at IS NULL;
-- A service's budget freeze as its policies last decided it (written by
-- the leader on each change, with the reasons, and the notifiers its freeze
-- policies named, JSON, told again when it unfreezes), and the service's
-- timeline of those changes.
CREATE TABLE budget_states (
  service    TEXT PRIMARY KEY,
  frozen     INTEGER NOT NULL CHECK (frozen IN (0, 1)),
  reasons    TEXT NOT NULL,
  notify     TEXT NOT NULL,
  since      TEXT NOT NULL
);
CREATE TABLE service_timeline (
  id         INTEGER PRIMARY KEY AUTOINCREMENT,
  service    TEXT NOT NULL,
  at         TEXT NOT NULL,
  author     TEXT NOT NULL,
  kind       TEXT NOT NULL,
  message    TEXT NOT NULL
);
CREATE INDEX service_timeline_service ON service_timeline(service, id);
-- A notification about a service's budget belongs to no incident: the
-- outbox is rebuilt with `incident_id` optional and a `service`.
CREATE TABLE outbox_new (
  id              INTEGER PRIMARY KEY,
  incident_id     INTEGER REFERENCES incidents(id),
  notification_id INTEGER REFERENCES notifications(id),
  fingerprint     TEXT,
  notifier        TEXT NOT NULL,
  event           TEXT NOT NULL,
  runbook         TEXT,
  run_id          INTEGER,
  step            TEXT,
  detail          TEXT NOT NULL,
  template        TEXT,
  state           TEXT NOT NULL,
  attempts        INTEGER NOT NULL DEFAULT 0,
  last_error      TEXT,
  created_at      TEXT NOT NULL,
  next_at         TEXT NOT NULL,
  owner           TEXT,
  lease_until     TEXT,
  delivered_at    TEXT,
  service         TEXT
);
INSERT INTO outbox_new (id, incident_id, notification_id, fingerprint, notifier, event, runbook, run_id, step, detail, template, state, attempts, last_error, created_at, next_at, owner, lease_until, delivered_at)
  SELECT id, incident_id, notification_id, fingerprint, notifier, event, runbook, run_id, step, detail, template, state, attempts, last_error, created_at, next_at, owner, lease_until, delivered_at FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_new RENAME TO outbox;
CREATE INDEX outbox_due ON outbox(next_at) WHERE state IN ('pending', 'sending');
CREATE INDEX outbox_incident ON outbox(incident_id);
CREATE INDEX outbox_dead ON outbox(id) WHERE state = 'dead';
CREATE TRIGGER outbox_state_known_insert BEFORE INSERT ON outbox
WHEN NEW.state NOT IN ('pending', 'sending', 'delivered', 'dead', 'suppressed')
BEGIN SELECT RAISE(ABORT, 'outbox.state: not a value runbookd knows'); END;
CREATE TRIGGER outbox_state_known_update BEFORE UPDATE OF state ON outbox
WHEN NEW.state NOT IN ('pending', 'sending', 'delivered', 'dead', 'suppressed')
BEGIN SELECT RAISE(ABORT, 'outbox.state: not a value runbookd knows'); END;
CREATE TRIGGER outbox_event_known_insert BEFORE INSERT ON outbox
WHEN NEW.event NOT IN ('incident_opened', 'run_started', 'run_succeeded', 'run_failed', 'step_failed', 'approval_requested', 'incident_acknowledged', 'incident_resolved', 'escalated', 'runs_rate_limited', 'verify_failed', 'postmortem_required', 'budget_frozen', 'budget_unfrozen')
BEGIN SELECT RAISE(ABORT, 'outbox.event: not a value runbookd knows'); END;
CREATE TRIGGER outbox_event_known_update BEFORE UPDATE OF event ON outbox
WHEN NEW.event NOT IN ('incident_opened', 'run_started', 'run_succeeded', 'run_failed', 'step_failed', 'approval_requested', 'incident_acknowledged', 'incident_resolved', 'escalated', 'runs_rate_limited', 'verify_failed', 'postmortem_required', 'budget_frozen', 'budget_unfrozen')
BEGIN SELECT RAISE(ABORT, 'outbox.event: not a value runbookd knows'); END;
