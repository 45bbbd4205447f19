-- Contents of messages up to INLINE_MAX bytes (see queue/mod.rs), instead of a file in
-- messages/: the content then becomes durable in the same WAL fsync as its envelope.
CREATE TABLE contents (
    message_id TEXT PRIMARY KEY NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    data       BLOB NOT NULL
);
