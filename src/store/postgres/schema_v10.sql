-- Version 10: budget-aware runbooks (DESIGN §12), as the SQLite store's
-- schema_v15.sql.
-- An incident whose cost a policy judged too high must have a postmortem
-- (`postmortem_required`: the policies' reasons; NULL: not required).
ALTER TABLE incidents ADD COLUMN postmortem_required TEXT;
-- Four more notification events.
ALTER TABLE outbox DROP CONSTRAINT outbox_event_known;
ALTER TABLE outbox ADD CONSTRAINT outbox_event_known CHECK (event IN ('incident_opened', 'run_started', 'run_succeeded', 'run_failed', 'step_failed', 'approval_requested', 'incident_acknowledged', 'incident_resolved', 'escalated', 'runs_rate_limited', 'verify_failed', 'postmortem_required', 'budget_frozen', 'budget_unfrozen'));
-- An operator lets a frozen service's gate say yes for a while: who, why,
-- until when, and who ended it early. Kept as history.
CREATE TABLE gate_overrides (
  id         BIGSERIAL PRIMARY KEY,
  service    TEXT NOT NULL,
  created_by TEXT NOT NULL,
  reason     TEXT NOT NULL,
  created_at TIMESTAMPTZ NOT NULL,
  until      TIMESTAMPTZ NOT NULL,
  ended_at   TIMESTAMPTZ,
  ended_by   TEXT
);
CREATE INDEX gate_overrides_open ON gate_overrides(service) WHERE ended_at IS NULL;
-- A service's budget freeze as its policies last decided it (written by
-- the leader on each change, with the reasons, and the notifiers its freeze
-- policies named, JSON, told again when it unfreezes), and the service's
-- timeline of those changes.
CREATE TABLE budget_states (
  service    TEXT PRIMARY KEY,
  frozen     BOOLEAN NOT NULL,
  reasons    TEXT NOT NULL,
  notify     TEXT NOT NULL,
  since      TIMESTAMPTZ NOT NULL
);
CREATE TABLE service_timeline (
  id         BIGSERIAL PRIMARY KEY,
  service    TEXT NOT NULL,
  at         TIMESTAMPTZ NOT NULL,
  author     TEXT NOT NULL,
  kind       TEXT NOT NULL,
  message    TEXT NOT NULL
);
CREATE INDEX service_timeline_service ON service_timeline(service, id);
-- A notification about a service's budget belongs to no incident.
ALTER TABLE outbox ALTER COLUMN incident_id DROP NOT NULL;
ALTER TABLE outbox ADD COLUMN service TEXT;
