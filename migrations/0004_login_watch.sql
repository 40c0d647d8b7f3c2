-- Login watching (issue 18): where sshd's log has been read up to, and the
-- support sessions seen in it.

-- One row: the position after the last line handled, saved in the same
-- transaction as the audit chain head of what that line produced, so a
-- restart neither misses nor repeats a line.
CREATE TABLE login_position (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    -- What was followed: 'file:<path>' or 'journal'. A position saved for
    -- another source is not used.
    source  TEXT    NOT NULL,
    -- file: the file's inode and the offset after the last line read.
    -- journal: `cursor`, the last entry's cursor; while it is '' (no sshd
    -- entry seen yet), `offset` holds the Unix time reading started from.
    inode   INTEGER NOT NULL,
    offset  INTEGER NOT NULL,
    cursor  TEXT    NOT NULL DEFAULT ''
);

-- One row per support login (a login with a grant's key).
CREATE TABLE support_sessions (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    grant_id     INTEGER NOT NULL REFERENCES grants(id),
    ssh_username TEXT    NOT NULL,
    address      TEXT    NOT NULL,
    port         INTEGER NOT NULL,
    fingerprint  TEXT    NOT NULL,
    -- sshd's process for the session and its start time (clock ticks
    -- after boot, /proc/PID/stat), when known: only a process with both
    -- the same is ever signalled.
    pid          INTEGER,
    pid_start    INTEGER,
    -- 0: the login was outside its grant's window (audited as a warning).
    in_window    INTEGER NOT NULL,
    started_at   INTEGER NOT NULL,
    ended_at     INTEGER,
    -- logout, or the revoke's reason when supportauth ended it.
    end_reason   TEXT
);
CREATE INDEX support_sessions_open ON support_sessions (ended_at);
CREATE INDEX support_sessions_grant ON support_sessions (grant_id);
