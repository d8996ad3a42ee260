-- Version 14: every stored state is one runbookd knows. SQLite cannot add a
-- CHECK constraint to a table, so each column has a trigger for inserts and
-- one for updates that refuses any other value (a newer runbookd's
-- migration replaces them when it adds a state). The lists are the enums'
-- (a unit test compares them: store::tests::the_schemas_know_every_state).

CREATE TRIGGER runs_state_known_insert BEFORE INSERT ON runs
WHEN NEW.state NOT IN ('queued', 'running', 'awaiting_approval', 'succeeded', 'succeeded_with_failures', 'failed', 'timed_out', 'cancelled', 'interrupted', 'skipped', 'planned')
BEGIN SELECT RAISE(ABORT, 'runs.state: not a value runbookd knows'); END;
CREATE TRIGGER runs_state_known_update BEFORE UPDATE OF state ON runs
WHEN NEW.state NOT IN ('queued', 'running', 'awaiting_approval', 'succeeded', 'succeeded_with_failures', 'failed', 'timed_out', 'cancelled', 'interrupted', 'skipped', 'planned')
BEGIN SELECT RAISE(ABORT, 'runs.state: not a value runbookd knows'); END;

CREATE TRIGGER runs_phase_known_insert BEFORE INSERT ON runs
WHEN NEW.phase NOT IN ('remediation', 'resolution')
BEGIN SELECT RAISE(ABORT, 'runs.phase: not a value runbookd knows'); END;
CREATE TRIGGER runs_phase_known_update BEFORE UPDATE OF phase ON runs
WHEN NEW.phase NOT IN ('remediation', 'resolution')
BEGIN SELECT RAISE(ABORT, 'runs.phase: not a value runbookd knows'); END;

CREATE TRIGGER incidents_status_known_insert BEFORE INSERT ON incidents
WHEN NEW.status NOT IN ('investigating', 'identified', 'monitoring', 'resolved')
BEGIN SELECT RAISE(ABORT, 'incidents.status: not a value runbookd knows'); END;
CREATE TRIGGER incidents_status_known_update BEFORE UPDATE OF status ON incidents
WHEN NEW.status NOT IN ('investigating', 'identified', 'monitoring', 'resolved')
BEGIN SELECT RAISE(ABORT, 'incidents.status: not a value runbookd knows'); END;

CREATE TRIGGER timeline_status_known_insert BEFORE INSERT ON timeline
WHEN NEW.status IS NOT NULL AND NEW.status NOT IN ('investigating', 'identified', 'monitoring', 'resolved')
BEGIN SELECT RAISE(ABORT, 'timeline.status: not a value runbookd knows'); END;
CREATE TRIGGER timeline_status_known_update BEFORE UPDATE OF status ON timeline
WHEN NEW.status IS NOT NULL AND NEW.status NOT IN ('investigating', 'identified', 'monitoring', 'resolved')
BEGIN SELECT RAISE(ABORT, 'timeline.status: not a value runbookd knows'); END;

CREATE TRIGGER alerts_status_known_insert BEFORE INSERT ON alerts
WHEN NEW.status NOT IN ('firing', 'resolved')
BEGIN SELECT RAISE(ABORT, 'alerts.status: not a value runbookd knows'); END;
CREATE TRIGGER alerts_status_known_update BEFORE UPDATE OF status ON alerts
WHEN NEW.status NOT IN ('firing', 'resolved')
BEGIN SELECT RAISE(ABORT, 'alerts.status: not a value runbookd knows'); END;

CREATE TRIGGER approvals_state_known_insert BEFORE INSERT ON approvals
WHEN NEW.state NOT IN ('pending', 'approved', 'denied', 'timed_out', 'cancelled')
BEGIN SELECT RAISE(ABORT, 'approvals.state: not a value runbookd knows'); END;
CREATE TRIGGER approvals_state_known_update BEFORE UPDATE OF state ON approvals
WHEN NEW.state NOT IN ('pending', 'approved', 'denied', 'timed_out', 'cancelled')
BEGIN SELECT RAISE(ABORT, 'approvals.state: not a value runbookd knows'); END;

CREATE TRIGGER approvals_on_timeout_known_insert BEFORE INSERT ON approvals
WHEN NEW.on_timeout NOT IN ('deny', 'approve')
BEGIN SELECT RAISE(ABORT, 'approvals.on_timeout: not a value runbookd knows'); END;
CREATE TRIGGER approvals_on_timeout_known_update BEFORE UPDATE OF on_timeout ON approvals
WHEN NEW.on_timeout NOT IN ('deny', 'approve')
BEGIN SELECT RAISE(ABORT, 'approvals.on_timeout: not a value runbookd knows'); END;

CREATE TRIGGER outbox_state_known_insert BEFORE INSERT ON outbox
WHEN NEW.state NOT IN ('pending', 'sending', 'delivered', 'dead', 'suppressed')
BEGIN SELECT RAISE(ABORT, 'outbox.state: not a value runbookd knows'); END;
CREATE TRIGGER outbox_state_known_update BEFORE UPDATE OF state ON outbox
WHEN NEW.state NOT IN ('pending', 'sending', 'delivered', 'dead', 'suppressed')
BEGIN SELECT RAISE(ABORT, 'outbox.state: not a value runbookd knows'); END;

CREATE TRIGGER outbox_event_known_insert BEFORE INSERT ON outbox
WHEN NEW.event NOT IN ('incident_opened', 'run_started', 'run_succeeded', 'run_failed', 'step_failed', 'approval_requested', 'incident_acknowledged', 'incident_resolved', 'escalated', 'runs_rate_limited')
BEGIN SELECT RAISE(ABORT, 'outbox.event: not a value runbookd knows'); END;
CREATE TRIGGER outbox_event_known_update BEFORE UPDATE OF event ON outbox
WHEN NEW.event NOT IN ('incident_opened', 'run_started', 'run_succeeded', 'run_failed', 'step_failed', 'approval_requested', 'incident_acknowledged', 'incident_resolved', 'escalated', 'runs_rate_limited')
BEGIN SELECT RAISE(ABORT, 'outbox.event: not a value runbookd knows'); END;

CREATE TRIGGER escalations_state_known_insert BEFORE INSERT ON escalations
WHEN NEW.state NOT IN ('pending', 'fired', 'cancelled')
BEGIN SELECT RAISE(ABORT, 'escalations.state: not a value runbookd knows'); END;
CREATE TRIGGER escalations_state_known_update BEFORE UPDATE OF state ON escalations
WHEN NEW.state NOT IN ('pending', 'fired', 'cancelled')
BEGIN SELECT RAISE(ABORT, 'escalations.state: not a value runbookd knows'); END;
