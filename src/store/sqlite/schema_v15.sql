-- Version 15: budget-aware runbooks (DESIGN §12), as the PostgreSQL
-- store's schema_v10.sql.
-- An incident whose cost a policy judged too high must have a postmortem
-- (`postmortem_required`: the policies' reasons; NULL: not required).
ALTER TABLE incidents ADD COLUMN postmortem_required TEXT;
-- Two more notification events.
DROP TRIGGER outbox_event_known_insert;
DROP TRIGGER outbox_event_known_update;
CREATE TRIGGER outbox_event_known_insert BEFORE INSERT ON outbox
WHEN NEW.event NOT IN ('incident_opened', 'run_started', 'run_succeeded', 'run_failed', 'step_failed', 'approval_requested', 'incident_acknowledged', 'incident_resolved', 'escalated', 'runs_rate_limited', 'verify_failed', 'postmortem_required')
BEGIN SELECT RAISE(ABORT, 'outbox.event: not a value runbookd knows'); END;
CREATE TRIGGER outbox_event_known_update BEFORE UPDATE OF event ON outbox
WHEN NEW.event NOT IN ('incident_opened', 'run_started', 'run_succeeded', 'run_failed', 'step_failed', 'approval_requested', 'incident_acknowledged', 'incident_resolved', 'escalated', 'runs_rate_limited', 'verify_failed', 'postmortem_required')
BEGIN SELECT RAISE(ABORT, 'outbox.event: not a value runbookd knows'); END;
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
