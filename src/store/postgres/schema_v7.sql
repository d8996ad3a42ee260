-- Version 7: the Alertmanager each silence was made in (its URL), so that
-- a reload pointing runbookd at another Alertmanager still expires it where
-- it is (empty: made before, in the one configured).
ALTER TABLE silences ADD COLUMN alertmanager TEXT NOT NULL DEFAULT '';
