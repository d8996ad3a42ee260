-- Version 8: drills. A scheduled occurrence of a runbook's drill is claimed
-- once (the primary key), whichever process sees it first.
CREATE TABLE drills (
  runbook       TEXT NOT NULL,
  idx           INTEGER NOT NULL,
  scheduled_at  TEXT NOT NULL,
  owner         TEXT NOT NULL,
  claimed_at    TEXT NOT NULL,
  PRIMARY KEY (runbook, idx, scheduled_at)
);
