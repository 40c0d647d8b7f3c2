-- Audit records that could not be appended to the log (a full or failing
-- disk) while the change they describe went ahead (a revoke never waits for
-- the log). The writer appends them, oldest first, as soon as the log can
-- be written again, and deletes them here once they are in the log.
CREATE TABLE audit_backlog (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    -- The record as the engine asked for it (JSON), with `delayed_since`
    -- in its details.
    event  TEXT    NOT NULL
);
