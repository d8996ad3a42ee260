-- Version 4: firing alerts no runbook matched, one row per alert (by
-- fingerprint), so runbook authors can see their gaps.
CREATE TABLE unmatched_alerts (
  fingerprint TEXT PRIMARY KEY,
  alertname   TEXT NOT NULL,
  labels      TEXT NOT NULL,
  receiver    TEXT NOT NULL,
  first_seen  TEXT NOT NULL,
  last_seen   TEXT NOT NULL,
  seen        INTEGER NOT NULL
);
CREATE INDEX unmatched_alerts_last_seen ON unmatched_alerts(last_seen);
