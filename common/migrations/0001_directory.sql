-- The user directory: local domains, users with argon2id hashes, and aliases.
CREATE TABLE domains (
    name        TEXT PRIMARY KEY NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE users (
    address     TEXT PRIMARY KEY NOT NULL,
    localpart   TEXT NOT NULL,
    domain      TEXT NOT NULL REFERENCES domains(name),
    password    TEXT NOT NULL,
    quota_bytes INTEGER NOT NULL DEFAULT 0,
    enabled     INTEGER NOT NULL DEFAULT 1,
    created_at  INTEGER NOT NULL
);
CREATE INDEX users_domain ON users(domain, created_at);

-- One row per (source, target). A source '@domain' is the domain's catch-all.
CREATE TABLE aliases (
    source      TEXT NOT NULL,
    target      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (source, target)
);
CREATE INDEX aliases_target ON aliases(target);
