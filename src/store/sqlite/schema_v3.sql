-- Version 3: when the incident's alerts ended (the latest endsAt Alertmanager
-- reported), beside when runbookd learned it (resolved_at): MTTR is
-- measured to the former, so Alertmanager's notification delay is not in it.
ALTER TABLE incidents ADD COLUMN alerts_ended_at TEXT;
