-- Finds throttle rows whose window has passed without a scan (each attempt prunes a few).
CREATE INDEX login_attempts_by_window ON login_attempts(window_start);
