-- Version 9: every stored state is one runbookd knows (see the SQLite
-- store's schema_v14.sql): a CHECK constraint per column, named
-- <table>_<column>_known.

ALTER TABLE runs ADD CONSTRAINT runs_state_known CHECK (state IN ('queued', 'running', 'awaiting_approval', 'succeeded', 'succeeded_with_failures', 'failed', 'timed_out', 'cancelled', 'interrupted', 'skipped', 'planned'));
ALTER TABLE runs ADD CONSTRAINT runs_phase_known CHECK (phase IN ('remediation', 'resolution'));
ALTER TABLE incidents ADD CONSTRAINT incidents_status_known CHECK (status IN ('investigating', 'identified', 'monitoring', 'resolved'));
ALTER TABLE timeline ADD CONSTRAINT timeline_status_known CHECK (status IN ('investigating', 'identified', 'monitoring', 'resolved'));
ALTER TABLE alerts ADD CONSTRAINT alerts_status_known CHECK (status IN ('firing', 'resolved'));
ALTER TABLE approvals ADD CONSTRAINT approvals_state_known CHECK (state IN ('pending', 'approved', 'denied', 'timed_out', 'cancelled'));
ALTER TABLE approvals ADD CONSTRAINT approvals_on_timeout_known CHECK (on_timeout IN ('deny', 'approve'));
ALTER TABLE outbox ADD CONSTRAINT outbox_state_known CHECK (state IN ('pending', 'sending', 'delivered', 'dead', 'suppressed'));
ALTER TABLE outbox ADD CONSTRAINT outbox_event_known CHECK (event IN ('incident_opened', 'run_started', 'run_succeeded', 'run_failed', 'step_failed', 'approval_requested', 'incident_acknowledged', 'incident_resolved', 'escalated', 'runs_rate_limited'));
ALTER TABLE escalations ADD CONSTRAINT escalations_state_known CHECK (state IN ('pending', 'fired', 'cancelled'));
