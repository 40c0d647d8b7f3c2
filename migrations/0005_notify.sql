-- Notification receivers (webhooks, mail; see src/notify). The audit log
-- is the queue: each receiver's cursor is the seq of the last record it is
-- done with (delivered, not wanted, given up or dropped over budget);
-- everything after it, up to the log's durable end, is pending. Only the
-- retry state of the record after the cursor is kept here.
CREATE TABLE notify_receivers (
    receiver        TEXT    PRIMARY KEY,   -- "webhook:<url>" or "mail"
    delivered_seq   INTEGER NOT NULL,
    -- Failed attempts at the record after the cursor, the first one's time.
    attempts        INTEGER NOT NULL DEFAULT 0,
    first_failed_at INTEGER,
    next_attempt_at INTEGER,
    last_success_at INTEGER,
    last_error      TEXT,
    last_error_at   INTEGER,
    delivered       INTEGER NOT NULL DEFAULT 0,
    given_up        INTEGER NOT NULL DEFAULT 0
);
