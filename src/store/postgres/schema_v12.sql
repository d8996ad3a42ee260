-- Version 12: runs' state and phase were checked twice, by version 6's
-- runs_state and runs_phase and by version 9's runs_state_known and
-- runs_phase_known. PostgreSQL evaluates every CHECK of a table on each
-- insert and update of one of its rows, reading the expression anew for
-- each statement, and a newer runbookd that adds a state replaces the
-- _known constraint only. Version 6's pair goes.
ALTER TABLE runs DROP CONSTRAINT runs_state, DROP CONSTRAINT runs_phase;
