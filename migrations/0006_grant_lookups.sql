-- Lookups that read every grant ever made (a full scan that grows with the
-- server's history): a grant's check of its slot's earlier key comments
-- (every grant of a ticket and server, ended ones included; the partial
-- index grants_live holds live rows only), and the login watcher's search
-- for the grants of a key fingerprint.
CREATE INDEX grants_slot ON grants (ticket_id, server_num);
CREATE INDEX grants_fingerprint ON grants (key_fingerprint);
