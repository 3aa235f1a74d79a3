-- The governance model: applications, resources, roles, accounts and grants.
-- Keep in lockstep with the other backend's 0003_governance.sql (the two files are identical).
--
-- Settings that resources and roles may override are nullable columns: NULL inherits from the
-- level above (see tessera-domain governance::settings). Lists and policies are JSON text.

CREATE TABLE applications (
    id                  TEXT PRIMARY KEY,
    name                TEXT NOT NULL,
    name_lower          TEXT NOT NULL,
    description         TEXT,
    icon                TEXT,
    connector_kind      TEXT NOT NULL,
    management_mode     TEXT NOT NULL,
    owner_kind          TEXT,
    owner_id            TEXT,
    maintainers         TEXT NOT NULL,
    default_workflow_id TEXT,
    settings            TEXT NOT NULL,
    -- CSV applications: the member file's columns and how its user keys match identities.
    member_format       TEXT NOT NULL,
    version             BIGINT NOT NULL,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL
);
CREATE UNIQUE INDEX applications_name ON applications (name_lower);
CREATE INDEX applications_kind ON applications (connector_kind, id);

CREATE TABLE resources (
    id             TEXT PRIMARY KEY,
    application_id TEXT NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    parent_id      TEXT REFERENCES resources (id) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    name_lower     TEXT NOT NULL,
    resource_type  TEXT NOT NULL,
    description    TEXT,
    external_id    TEXT,
    tags           TEXT NOT NULL,
    requestable    BOOLEAN,
    workflow_id    TEXT,
    durations      TEXT,
    owner_kind     TEXT,
    owner_id       TEXT,
    maintainers    TEXT,
    version        BIGINT NOT NULL,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);
-- Names are unique among siblings.
CREATE UNIQUE INDEX resources_name ON resources (application_id, COALESCE(parent_id, ''), name_lower);
CREATE INDEX resources_app ON resources (application_id, id);
CREATE INDEX resources_parent ON resources (parent_id);
CREATE INDEX resources_type ON resources (application_id, resource_type);
CREATE INDEX resources_external_id ON resources (application_id, external_id);

-- One row per tag (folded), so rules and list filters find tagged resources by index.
CREATE TABLE resource_tags (
    resource_id TEXT NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    tag_lower   TEXT NOT NULL,
    PRIMARY KEY (resource_id, tag_lower)
);
CREATE INDEX resource_tags_tag ON resource_tags (tag_lower, resource_id);

CREATE TABLE roles (
    id             TEXT PRIMARY KEY,
    resource_id    TEXT NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    application_id TEXT NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    name_lower     TEXT NOT NULL,
    description    TEXT,
    external_id    TEXT,
    sensitive      BOOLEAN NOT NULL,
    requestable    BOOLEAN,
    workflow_id    TEXT,
    durations      TEXT,
    version        BIGINT NOT NULL,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);
CREATE UNIQUE INDEX roles_name ON roles (resource_id, name_lower);
CREATE INDEX roles_app ON roles (application_id, id);
CREATE INDEX roles_resource ON roles (resource_id, id);

-- A role may require others to be held first.
CREATE TABLE role_prerequisites (
    role_id              TEXT NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    prerequisite_role_id TEXT NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    PRIMARY KEY (role_id, prerequisite_role_id)
);
CREATE INDEX role_prerequisites_required ON role_prerequisites (prerequisite_role_id);

CREATE TABLE accounts (
    id             TEXT PRIMARY KEY,
    application_id TEXT NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    identity_id    TEXT REFERENCES identities (id) ON DELETE SET NULL,
    user_key       TEXT NOT NULL,
    user_key_lower TEXT NOT NULL,
    display_name   TEXT,
    status         TEXT NOT NULL,
    version        BIGINT NOT NULL,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);
CREATE UNIQUE INDEX accounts_key ON accounts (application_id, user_key_lower);
CREATE INDEX accounts_app ON accounts (application_id, id);
CREATE INDEX accounts_identity ON accounts (identity_id);

CREATE TABLE grants (
    id             TEXT PRIMARY KEY,
    -- No cascade: deleting a role or application deletes its ended grants explicitly first,
    -- so a live grant (even one committed meanwhile) makes the delete fail instead of vanishing.
    role_id        TEXT NOT NULL REFERENCES roles (id),
    application_id TEXT NOT NULL REFERENCES applications (id),
    identity_id    TEXT REFERENCES identities (id),
    account_id     TEXT REFERENCES accounts (id) ON DELETE SET NULL,
    source         TEXT NOT NULL,
    status         TEXT NOT NULL,
    starts_at      BIGINT NOT NULL,
    ends_at        BIGINT,
    granted_by     TEXT,
    reason         TEXT,
    ended_at       BIGINT,
    ended_by       TEXT,
    end_reason     TEXT,
    version        BIGINT NOT NULL,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);
-- An identity holds a role at most once per source while the grant is live.
CREATE UNIQUE INDEX grants_live_identity ON grants (role_id, identity_id, source)
    WHERE identity_id IS NOT NULL AND status IN ('scheduled', 'active');
CREATE UNIQUE INDEX grants_live_account ON grants (role_id, account_id, source)
    WHERE identity_id IS NULL AND account_id IS NOT NULL AND status IN ('scheduled', 'active');
-- The expiry loop's two questions: which live grants have ended, which scheduled ones started.
CREATE INDEX grants_due_end ON grants (ends_at) WHERE ends_at IS NOT NULL AND status IN ('scheduled', 'active');
CREATE INDEX grants_due_start ON grants (starts_at) WHERE status = 'scheduled';
CREATE INDEX grants_identity ON grants (identity_id, role_id);
CREATE INDEX grants_role ON grants (role_id, id);
CREATE INDEX grants_app ON grants (application_id, id);
CREATE INDEX grants_account ON grants (account_id);

-- Matching an application's user keys to identities of any data source.
CREATE INDEX identities_user_name_any ON identities (user_name_lower);
CREATE INDEX identities_email_any ON identities (email_lower);
CREATE INDEX identities_employee_number_any ON identities (employee_number);
