-- The ticket-system session (OAuth2 tokens). One row at most. The
-- database file is 0600 in a 0700 directory; tokens are never logged.
CREATE TABLE portal_session (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    access_token   TEXT    NOT NULL,
    refresh_token  TEXT    NOT NULL,
    -- Unix time the access token stops working.
    expires_at     INTEGER NOT NULL,
    obtained_at    INTEGER NOT NULL
);
