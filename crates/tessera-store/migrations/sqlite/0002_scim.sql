-- SCIM provisioning. Keep in lockstep with the other backend's 0002_scim.sql.

-- The full record a data source sent (for SCIM: the normalised resource without id, meta,
-- active and members). The typed columns beside it are projections for governance and indexes.
ALTER TABLE identities RENAME COLUMN extra TO source_doc;
ALTER TABLE groups RENAME COLUMN extra TO source_doc;

-- A password a data source sent (Okta password sync), as an Argon2id PHC string; never returned.
ALTER TABLE identities ADD COLUMN password_hash TEXT;

-- Lists of a data source's identities in id order (SCIM paging).
CREATE INDEX identities_source_id ON identities (data_source_id, id);
CREATE INDEX groups_source_id ON groups (data_source_id, id);
CREATE INDEX groups_display_name_exact ON groups (data_source_id, display_name);

-- One row per e-mail value of an identity, case-folded, so that `emails[type eq "work"].value
-- eq "x"` (Entra's matching filter) is an index lookup.
CREATE TABLE identity_emails (
    identity_id    TEXT NOT NULL REFERENCES identities (id) ON DELETE CASCADE,
    position       INTEGER NOT NULL,
    data_source_id TEXT NOT NULL,
    value_folded   TEXT,
    type_folded    TEXT,
    display_folded TEXT,
    is_primary     BOOLEAN NOT NULL,
    PRIMARY KEY (identity_id, position)
);
CREATE INDEX identity_emails_value ON identity_emails (data_source_id, value_folded);

-- Bearer tokens of SCIM clients; each belongs to one data source. Only a SHA-256 digest is kept.
CREATE TABLE scim_tokens (
    id             TEXT PRIMARY KEY,
    data_source_id TEXT NOT NULL REFERENCES data_sources (id),
    label          TEXT NOT NULL,
    token_digest   TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    revoked_at     BIGINT
);
CREATE UNIQUE INDEX scim_tokens_digest ON scim_tokens (token_digest);
CREATE INDEX scim_tokens_source ON scim_tokens (data_source_id);
