-- Version 8: what an incident cost its services' SLOs (see the SQLite
-- store's schema_v13.sql).
ALTER TABLE incidents ADD COLUMN slo_budget TEXT, ADD COLUMN slo_affecting BOOLEAN;
CREATE TABLE slo_status (
  id           TEXT PRIMARY KEY,
  status       TEXT NOT NULL,
  refreshed_at TIMESTAMPTZ NOT NULL,
  took_ms      BIGINT NOT NULL
);
