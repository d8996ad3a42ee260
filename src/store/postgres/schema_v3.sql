-- Version 3: drills. A scheduled occurrence of a runbook's drill is claimed
-- once across replicas (the primary key).
CREATE TABLE drills (
  runbook       TEXT NOT NULL,
  drill         TEXT NOT NULL,      -- the drill's identity (runbook and settings)
  scheduled_at  TIMESTAMPTZ NOT NULL,
  owner         TEXT NOT NULL,
  claimed_at    TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (runbook, drill, scheduled_at)
);
