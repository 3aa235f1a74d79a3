-- Rules (kept: a filter over resources or roles, and settings they set, also on new items) and
-- bulk actions (applied once, kept as a record). Keep in lockstep with the other backend's
-- 0005_rules.sql (the two files are identical).

CREATE TABLE rules (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    name_lower  TEXT NOT NULL,
    description TEXT,
    target      TEXT NOT NULL,
    filter      TEXT NOT NULL,
    actions     TEXT NOT NULL,
    priority    BIGINT NOT NULL,
    enabled     BOOLEAN NOT NULL,
    version     BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE UNIQUE INDEX rules_name ON rules (name_lower);
-- Creating a resource or role reads the enabled rules of its kind.
CREATE INDEX rules_target ON rules (target, enabled, priority);

CREATE TABLE bulk_actions (
    id         TEXT PRIMARY KEY,
    target     TEXT NOT NULL,
    filter     TEXT NOT NULL,
    actions    TEXT NOT NULL,
    reason     TEXT,
    matched    BIGINT NOT NULL,
    changed    BIGINT NOT NULL,
    -- The counts and the first changed items, with their settings before and after.
    report     TEXT NOT NULL,
    actor      TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Filters by resource type across applications.
CREATE INDEX resources_type_any ON resources (resource_type, id);
