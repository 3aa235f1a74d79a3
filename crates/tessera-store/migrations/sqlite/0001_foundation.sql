-- Tessera foundation schema (SQLite). Keep in lockstep with ../postgres/0001_foundation.sql:
-- same tables, columns, types and indexes; only trigger syntax differs.
-- Portable types: TEXT UUIDv7 ids, BIGINT epoch-millisecond UTC timestamps, JSON as TEXT,
-- lower-cased shadow columns for case-insensitive matching.

CREATE TABLE data_sources (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    name_lower   TEXT NOT NULL,
    kind         TEXT NOT NULL,
    matching_key TEXT NOT NULL,
    settings     TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE UNIQUE INDEX data_sources_name ON data_sources (name_lower);

CREATE TABLE identities (
    id              TEXT PRIMARY KEY,
    data_source_id  TEXT NOT NULL REFERENCES data_sources (id),
    kind            TEXT NOT NULL,
    status          TEXT NOT NULL,
    user_name       TEXT NOT NULL,
    user_name_lower TEXT NOT NULL,
    external_id     TEXT,
    display_name    TEXT,
    given_name      TEXT,
    family_name     TEXT,
    email           TEXT,
    email_lower     TEXT,
    employee_number TEXT,
    department      TEXT,
    job_title       TEXT,
    manager_id      TEXT REFERENCES identities (id) ON DELETE SET NULL,
    extra           TEXT,
    version         BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
-- userName is unique per data source among identities that are not deleted (tombstones stay).
CREATE UNIQUE INDEX identities_user_name ON identities (data_source_id, user_name_lower) WHERE status <> 'deleted';
CREATE INDEX identities_external_id ON identities (data_source_id, external_id);
CREATE INDEX identities_email ON identities (data_source_id, email_lower);
CREATE INDEX identities_employee_number ON identities (data_source_id, employee_number);
CREATE INDEX identities_manager ON identities (manager_id);
CREATE INDEX identities_updated ON identities (data_source_id, updated_at);

CREATE TABLE groups (
    id                 TEXT PRIMARY KEY,
    data_source_id     TEXT NOT NULL REFERENCES data_sources (id),
    display_name       TEXT NOT NULL,
    display_name_lower TEXT NOT NULL,
    external_id        TEXT,
    description        TEXT,
    extra              TEXT,
    version            BIGINT NOT NULL,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL
);
CREATE UNIQUE INDEX groups_display_name ON groups (data_source_id, display_name_lower);
CREATE INDEX groups_external_id ON groups (data_source_id, external_id);
CREATE INDEX groups_updated ON groups (data_source_id, updated_at);

CREATE TABLE group_members (
    group_id    TEXT NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    member_kind TEXT NOT NULL CHECK (member_kind IN ('identity', 'group')),
    member_id   TEXT NOT NULL,
    added_at    BIGINT NOT NULL,
    PRIMARY KEY (group_id, member_kind, member_id)
);
CREATE INDEX group_members_member ON group_members (member_id, member_kind);

CREATE TABLE admin_tokens (
    id           TEXT PRIMARY KEY,
    label        TEXT NOT NULL,
    token_digest TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    revoked_at   BIGINT
);
CREATE UNIQUE INDEX admin_tokens_digest ON admin_tokens (token_digest);

-- Rows locked (by a no-op UPDATE) to serialise rare one-off work across processes.
CREATE TABLE store_locks (
    name TEXT PRIMARY KEY
);
INSERT INTO store_locks (name) VALUES ('admin_bootstrap');

CREATE TABLE audit_log (
    seq            BIGINT PRIMARY KEY,
    id             TEXT NOT NULL,
    occurred_at    BIGINT NOT NULL,
    actor_kind     TEXT NOT NULL,
    actor_id       TEXT,
    action         TEXT NOT NULL,
    entity_kind    TEXT NOT NULL,
    entity_id      TEXT,
    data_source_id TEXT,
    request_id     TEXT,
    details        TEXT NOT NULL,
    prev_hash      TEXT NOT NULL,
    hash           TEXT NOT NULL
);
CREATE UNIQUE INDEX audit_log_id ON audit_log (id);
CREATE INDEX audit_log_time ON audit_log (occurred_at);
CREATE INDEX audit_log_entity ON audit_log (entity_kind, entity_id);
CREATE INDEX audit_log_actor ON audit_log (actor_kind, actor_id);

-- The end of the chain: detects removal of the newest entries and serialises appends.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

CREATE TABLE api_events (
    id          TEXT PRIMARY KEY,
    occurred_at BIGINT NOT NULL,
    request_id  TEXT NOT NULL,
    surface     TEXT NOT NULL,
    method      TEXT NOT NULL,
    route       TEXT,
    path        TEXT NOT NULL,
    status      INTEGER NOT NULL,
    latency_us  BIGINT NOT NULL,
    caller_kind TEXT,
    caller_id   TEXT,
    remote_addr TEXT,
    user_agent  TEXT
);
CREATE INDEX api_events_time ON api_events (occurred_at);
CREATE INDEX api_events_request ON api_events (request_id);
CREATE INDEX api_events_caller ON api_events (caller_id, occurred_at);

CREATE TABLE api_event_details (
    api_event_id             TEXT PRIMARY KEY REFERENCES api_events (id) ON DELETE CASCADE,
    request_headers          TEXT NOT NULL,
    request_body             TEXT,
    request_body_truncated   BOOLEAN NOT NULL,
    response_headers         TEXT NOT NULL,
    response_body            TEXT,
    response_body_truncated  BOOLEAN NOT NULL
);

CREATE TABLE log_events (
    id          TEXT PRIMARY KEY,
    occurred_at BIGINT NOT NULL,
    level       TEXT NOT NULL,
    kind        TEXT NOT NULL,
    request_id  TEXT,
    method      TEXT,
    path        TEXT,
    route       TEXT,
    message     TEXT NOT NULL,
    detail      TEXT
);
CREATE INDEX log_events_time ON log_events (occurred_at);
CREATE INDEX log_events_request ON log_events (request_id);

CREATE TABLE jobs (
    id           TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    dedupe_key   TEXT,
    payload      TEXT NOT NULL,
    status       TEXT NOT NULL,
    run_at       BIGINT NOT NULL,
    interval_ms  BIGINT,
    attempts     INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    locked_by    TEXT,
    locked_until BIGINT,
    last_error   TEXT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
-- At most one live job per (kind, dedupe key): enqueueing twice is a no-op.
CREATE UNIQUE INDEX jobs_dedupe ON jobs (kind, dedupe_key) WHERE dedupe_key IS NOT NULL AND status IN ('queued', 'running');
CREATE INDEX jobs_due ON jobs (status, run_at);
