//! Tessera's persistence over sqlx, on SQLite (the embedded default) and PostgreSQL.
//!
//! One [`Db`] value holds either pool; repository functions are written once and type-checked
//! against both backends through the [`with_pool!`] and [`with_conn!`] macros (sqlx's `Any`
//! driver is avoided: it cannot decode SQLite booleans and lacks most types). Every write happens
//! in a [`Tx`], and every state change records its audit entry in that same transaction.

pub mod admin_tokens;
pub mod audit;
mod db;
#[doc(hidden)]
pub use db::internal as db_internal;
pub mod directory;
mod error;
pub mod governance;
pub mod jobs;
pub mod request_log;
pub mod scim;
pub mod scim_tokens;
mod sql;
mod sqlite_checkpoint;
mod sqlite_fold;
mod sqlite_read;
mod sqlite_writer;
pub mod user_upload;

pub use db::{Backend, Db, DbTarget, PoolStats, SchemaState, Tx};
pub use error::{StoreError, StoreResult};

/// Who is making a change, carried into the audit entry of every write.
#[derive(Debug, Clone)]
pub struct ChangeContext {
    pub actor: tessera_domain::audit::Actor,
    pub request_id: Option<String>,
}

impl ChangeContext {
    pub fn new(actor: tessera_domain::audit::Actor) -> Self {
        ChangeContext {
            actor,
            request_id: None,
        }
    }

    pub fn with_request_id(mut self, request_id: impl Into<String>) -> Self {
        self.request_id = Some(request_id.into());
        self
    }

    /// Starts the audit event for an action by this actor.
    pub fn event(
        &self,
        action: &str,
        entity_kind: &str,
        entity_id: Option<&str>,
    ) -> tessera_domain::audit::AuditEvent {
        tessera_domain::audit::AuditEvent::new(self.actor.clone(), action, entity_kind, entity_id)
            .with_request_id(self.request_id.as_deref())
    }
}
