-- Groups → roles: a data source's group gives its members (through nested groups too) a
-- platform role and application roles. Keep in lockstep with the other backend's
-- 0004_group_mappings.sql (the two files are identical).

CREATE TABLE group_mappings (
    id             TEXT PRIMARY KEY,
    data_source_id TEXT NOT NULL REFERENCES data_sources (id),
    -- Deleting a group deletes its mapping explicitly (audited) first; the cascade only backs it up.
    group_id       TEXT NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    platform_role  TEXT,
    priority       BIGINT NOT NULL,
    version        BIGINT NOT NULL,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);
-- One mapping per group: it says everything the group gives.
CREATE UNIQUE INDEX group_mappings_group ON group_mappings (group_id);
CREATE INDEX group_mappings_source ON group_mappings (data_source_id, id);

-- No cascade from roles: a role a mapping gives cannot be deleted until the mapping drops it.
CREATE TABLE group_mapping_roles (
    mapping_id TEXT NOT NULL REFERENCES group_mappings (id) ON DELETE CASCADE,
    role_id    TEXT NOT NULL REFERENCES roles (id),
    PRIMARY KEY (mapping_id, role_id)
);
CREATE INDEX group_mapping_roles_role ON group_mapping_roles (role_id);

-- The platform role the identity's mapped groups give, and the mapping it comes from.
-- NULL: in no group mapped to a platform role; the data source's default applies.
ALTER TABLE identities ADD COLUMN platform_role TEXT;
ALTER TABLE identities ADD COLUMN platform_role_mapping_id TEXT;

