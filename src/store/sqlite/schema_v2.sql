-- Version 2: the number of queued runs, kept exact by triggers, so the
-- webhook's queue limit costs O(1) instead of a count over the queue.
CREATE TABLE queue_depth (n INTEGER NOT NULL);
INSERT INTO queue_depth (n) SELECT COUNT(*) FROM runs WHERE state = 'queued';
CREATE TRIGGER runs_queued_insert AFTER INSERT ON runs WHEN NEW.state = 'queued'
BEGIN UPDATE queue_depth SET n = n + 1; END;
CREATE TRIGGER runs_queued_leave AFTER UPDATE OF state ON runs WHEN OLD.state = 'queued' AND NEW.state != 'queued'
BEGIN UPDATE queue_depth SET n = n - 1; END;
CREATE TRIGGER runs_queued_enter AFTER UPDATE OF state ON runs WHEN OLD.state != 'queued' AND NEW.state = 'queued'
BEGIN UPDATE queue_depth SET n = n + 1; END;
CREATE INDEX incidents_status ON incidents(status);
