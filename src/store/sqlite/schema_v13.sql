-- Version 13: what an incident cost its services' SLOs, recorded once after
-- it resolved (`slo_budget`: JSON, `[]` when its services have none), and
-- whether it spent budget (`slo_affecting`; NULL: not known, then sev1 and
-- sev2 count as SLO-affecting).
ALTER TABLE incidents ADD COLUMN slo_budget TEXT;
ALTER TABLE incidents ADD COLUMN slo_affecting INTEGER CHECK (slo_affecting IN (0, 1));
-- Every SLO's status as the leader replica last read it from Prometheus
-- (JSON), so that one replica's answer serves all.
CREATE TABLE slo_status (
  id           TEXT PRIMARY KEY,
  status       TEXT NOT NULL,
  refreshed_at TEXT NOT NULL,
  took_ms      INTEGER NOT NULL
);
