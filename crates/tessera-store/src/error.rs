use tessera_domain::directory::InvalidInput;

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(
        "the database schema is at version {found}, newer than this Tessera build knows (version {known}); \
         run the Tessera release that last migrated this database, or a newer one"
    )]
    SchemaTooNew { found: i64, known: i64 },
    #[error("{entity} {id} was not found")]
    NotFound { entity: &'static str, id: String },
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    #[error("cannot open the database: {0}")]
    Config(String),
    /// A SCIM request that cannot be applied to the stored resource (a PATCH path that does
    /// not fit it, a member that does not exist).
    #[error(transparent)]
    Scim(#[from] tessera_scim::ScimError),
    /// A read on SQLite's direct read path failed.
    #[error("database read failed: {0}")]
    Read(String),
    /// A group commit failed: none of the writes it carried was kept.
    #[error("the transaction could not be committed: {0}")]
    CommitFailed(String),
    /// The caller's `If-Match` version is not the stored one.
    #[error("the resource has changed: it is at version {current}")]
    VersionMismatch { current: i64 },
    /// A governance rule refused the change (e.g. a membership beyond the allowed duration).
    #[error(transparent)]
    Refused(#[from] tessera_domain::governance::membership::Refusal),
}

impl StoreError {
    pub fn not_found(entity: &'static str, id: impl Into<String>) -> Self {
        StoreError::NotFound {
            entity,
            id: id.into(),
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }

    /// Whether the database refused this data (as opposed to being unreachable, timing out or
    /// failing for reasons unrelated to what was sent).
    pub fn is_rejected_data(&self) -> bool {
        match self {
            StoreError::Database(e) => matches!(e, sqlx::Error::Database(_)),
            StoreError::Conflict(_)
            | StoreError::Invalid(_)
            | StoreError::Scim(_)
            | StoreError::VersionMismatch { .. }
            | StoreError::Refused(_) => true,
            _ => false,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e
            && db.is_unique_violation()
        {
            // Callers that know which value clashed say so; the database's own message (which
            // names constraints and differs by backend) stays out of responses.
            tracing::debug!(error = %db.message(), "unique violation");
            return StoreError::Conflict("a unique value is already taken".into());
        }
        StoreError::Database(e)
    }
}
