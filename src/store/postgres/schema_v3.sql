-- Version 3: drills. A scheduled occurrence of a runbook's drill is claimed
-- once across replicas (the primary key).
CREATE TABLE drills (
  runbook       TEXT NOT NULL,
  idx           INTEGER NOT NULL,
  scheduled_at  TIMESTAMPTZ NOT NULL,
  owner         TEXT NOT NULL,
  claimed_at    TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (runbook, idx, scheduled_at)
);
