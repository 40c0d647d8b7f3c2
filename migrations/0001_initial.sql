-- supportauth state, schema 1.
-- The store holds what *should* be on the host; the reconciler converges
-- the host to it. Times are Unix epoch seconds (UTC).

-- API tokens (reference §2). Only a SHA-256 of the token is kept.
CREATE TABLE api_tokens (
    name          TEXT    PRIMARY KEY NOT NULL,
    -- WHM user the token belongs to ("root"; resellers are not supported).
    owner         TEXT    NOT NULL DEFAULT 'root',
    token_hash    BLOB    NOT NULL,
    create_time   INTEGER NOT NULL,
    -- NULL: never expires.
    expires_at    INTEGER,
    -- JSON array of ACL names.
    acls          TEXT    NOT NULL,
    -- JSON array of addresses/CIDRs, NULL: usable from anywhere.
    whitelist_ips TEXT
);

-- One row per grant of access for (ticket_id, server_num). Rows are kept
-- after revocation as history; `state` is the intent log:
--   granting  recorded before the host is touched; a crash here is rolled back
--   active    every host change done and audited
--   revoking  recorded before removal; a crash here is finished on restart
--   revoked   gone from the host (end_reason says why)
--   failed    a grant that was rolled back
CREATE TABLE grants (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    ticket_id        INTEGER NOT NULL,
    server_num       INTEGER NOT NULL,
    state            TEXT    NOT NULL CHECK (state IN ('granting','active','revoking','revoked','failed')),
    -- 'local' (an admin or script) or 'portal'.
    source           TEXT    NOT NULL DEFAULT 'local',
    -- The user support logs in as (root or cp<ticket>.ssh or as requested).
    ssh_username     TEXT    NOT NULL,
    -- 1 when ssh_username is a temporary user we created and must delete.
    temp_user        INTEGER NOT NULL DEFAULT 0,
    -- 1 when we installed /etc/sudoers.d/ticket<ticket_id>.
    sudoers_dropin   INTEGER NOT NULL DEFAULT 0,
    -- The normalised public key ("type base64") and the comment that marks it.
    ssh_key          TEXT    NOT NULL,
    key_fingerprint  TEXT    NOT NULL,
    key_comment      TEXT    NOT NULL,
    -- JSON array of support source addresses in the key's from= option.
    access_ips       TEXT    NOT NULL,
    server_name      TEXT    NOT NULL DEFAULT '',
    ticket_subject   TEXT    NOT NULL DEFAULT '',
    ssh_ip           TEXT    NOT NULL DEFAULT '',
    ssh_port         INTEGER NOT NULL DEFAULT 22,
    whm_ip           TEXT    NOT NULL DEFAULT '',
    -- Last ticket status seen from the portal: OPEN, CLOSED or UNKNOWN.
    ticket_status    TEXT    NOT NULL DEFAULT 'OPEN',
    created_at       INTEGER NOT NULL,
    -- When access is set to end; NULL only when unlimited grants are allowed.
    expires_at       INTEGER,
    ended_at         INTEGER,
    -- revoke, expire, closed, rollback, reconcile, revoke_all
    end_reason       TEXT,
    granted_by       TEXT    NOT NULL DEFAULT ''
);

-- At most one live grant per ticket and server.
CREATE UNIQUE INDEX grants_live ON grants (ticket_id, server_num)
    WHERE state IN ('granting', 'active', 'revoking');
CREATE INDEX grants_state_expiry ON grants (state, expires_at);

-- The head of the audit hash chain, updated with every appended record, so
-- that truncating the log's tail is detected.
CREATE TABLE audit_head (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    seq   INTEGER NOT NULL,
    hash  TEXT    NOT NULL
);

-- Whitelist entries we added, per backend, so that removal takes away only
-- ours and keeps what the admin had before (reference §5).
CREATE TABLE whitelist_entries (
    backend          TEXT    NOT NULL,
    address          TEXT    NOT NULL,
    -- 1 when the admin already allowed this address before we added it.
    preexisting      INTEGER NOT NULL DEFAULT 0,
    added_at         INTEGER NOT NULL,
    PRIMARY KEY (backend, address)
);
