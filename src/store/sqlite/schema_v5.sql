-- Version 5: live-output chunks get ids that are never reused (a finished
-- run's chunks are deleted, and SQLite reuses plain rowids), so a client
-- resuming the live stream after id N never skips a later run's output.
CREATE TABLE step_output_v5 (
  id       INTEGER PRIMARY KEY AUTOINCREMENT,
  run_id   INTEGER NOT NULL REFERENCES runs(id),
  step     TEXT NOT NULL,
  seq      INTEGER NOT NULL,
  stream   TEXT NOT NULL,
  chunk    BLOB NOT NULL
);
INSERT INTO step_output_v5 (run_id, step, seq, stream, chunk)
  SELECT run_id, step, seq, stream, chunk FROM step_output ORDER BY rowid;
DROP TABLE step_output;
ALTER TABLE step_output_v5 RENAME TO step_output;
CREATE INDEX step_output_run ON step_output(run_id, seq);
