-- LightTech schema, version 7: login throttle rows leave the table once their window has passed.
-- Every counted attempt deletes a few rows whose window is over (the store bounds how many), so
-- made-up usernames no longer grow the table for ever; this index finds them without a scan,
-- and finds none at the cost of one index probe.
CREATE INDEX login_attempts_by_window ON login_attempts (window_start);
