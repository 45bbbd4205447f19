-- The MTA queue: one row per accepted message, one per recipient. The message content lives
-- in <queue>/messages/<id>, written and fsynced before the row is committed.

CREATE TABLE messages (
    id          TEXT PRIMARY KEY NOT NULL,
    sender      TEXT NOT NULL,              -- '' for the null sender
    ret         TEXT,                       -- DSN RET: FULL | HDRS
    env_id      TEXT,                       -- DSN ENVID
    body_type   TEXT NOT NULL DEFAULT '',   -- '' | 7BIT | 8BITMIME
    smtputf8    INTEGER NOT NULL DEFAULT 0,
    auth_user   TEXT,
    client      TEXT NOT NULL DEFAULT '',
    size        INTEGER NOT NULL,
    arrival     INTEGER NOT NULL            -- unix seconds
);

CREATE TABLE recipients (
    message_id   TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    position     INTEGER NOT NULL,
    address      TEXT NOT NULL,
    local        INTEGER NOT NULL,
    notify       TEXT NOT NULL DEFAULT '',  -- DSN NOTIFY, e.g. 'SUCCESS,FAILURE'
    orcpt        TEXT,                      -- DSN ORCPT, e.g. 'rfc822;a@example.org'
    status       TEXT NOT NULL DEFAULT 'pending', -- pending | deferred | sent | bounced
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_attempt INTEGER NOT NULL,
    last_attempt INTEGER,
    last_reply   TEXT,
    PRIMARY KEY (message_id, position)
);

CREATE INDEX recipients_due ON recipients (local, status, next_attempt);
