-- Version 8: drills. A scheduled occurrence of a runbook's drill is claimed
-- once (the primary key), whichever process sees it first.
CREATE TABLE drills (
  runbook       TEXT NOT NULL,
  drill         TEXT NOT NULL,      -- the drill's identity (runbook and settings)
  scheduled_at  TEXT NOT NULL,
  owner         TEXT NOT NULL,
  claimed_at    TEXT NOT NULL,
  PRIMARY KEY (runbook, drill, scheduled_at)
);
