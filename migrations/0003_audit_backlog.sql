-- Audit records that could not be appended to the log (a full or failing
-- disk) while the change they describe went ahead (a revoke never waits for
-- the log). The writer appends them, oldest first, as soon as the log can
-- be written again, and deletes them here once they are in the log.
-- 1 when the grant's key install created the account's ~/.ssh (it had
-- none): the revoke removes it again if nothing else was put there.
ALTER TABLE grants ADD COLUMN ssh_dir_created INTEGER NOT NULL DEFAULT 0;

CREATE TABLE audit_backlog (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    -- The record as the engine asked for it (JSON), with `delayed_since`
    -- in its details.
    event  TEXT    NOT NULL
);
