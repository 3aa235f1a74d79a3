//! The governance model in the store: applications, resources, roles, accounts and grants.
//!
//! Every change runs in the caller's [`Tx`] and records its audit entry there, with the
//! entity's state before and after. Updates take a closure that edits the loaded entity, so the
//! rules of what may change live with the caller while loading, version checks, writing and
//! auditing live here once.

pub mod accounts;
pub mod applications;
pub mod grants;
pub mod group_access;
pub mod group_mappings;
pub mod member_upload;
pub mod resources;
pub(crate) mod role_cache;
pub mod roles;
pub mod rules;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tessera_domain::directory::InvalidInput;
use tessera_domain::governance::{Principal, PrincipalKind};

use crate::{ChangeContext, StoreError, StoreResult, Tx, with_conn};

pub(crate) fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("model types serialise to JSON")
}

pub(crate) fn from_json<T: DeserializeOwned>(column: &str, text: &str) -> StoreResult<T> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("invalid JSON in {column}: {e}")))
}

pub(crate) fn principal_from(
    column: &str,
    kind: Option<String>,
    id: Option<String>,
) -> StoreResult<Option<Principal>> {
    match (kind, id) {
        (Some(kind), Some(id)) => Ok(Some(Principal {
            kind: PrincipalKind::parse(&kind)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown {column} kind {kind:?}")))?,
            id,
        })),
        _ => Ok(None),
    }
}

/// Fails unless every principal names an identity (not deleted) or group that exists.
pub(crate) async fn check_principals<'a>(
    tx: &mut Tx,
    field: &'static str,
    principals: impl IntoIterator<Item = &'a Principal>,
) -> StoreResult<()> {
    for p in principals {
        let sql = match p.kind {
            PrincipalKind::Identity => {
                "SELECT COUNT(*) FROM identities WHERE id = $1 AND status <> 'deleted'"
            }
            PrincipalKind::Group => "SELECT COUNT(*) FROM groups WHERE id = $1",
        };
        let found: i64 = with_conn!(tx, |conn| {
            sqlx::query_scalar(sql)
                .bind(&p.id)
                .fetch_one(&mut *conn)
                .await?
        });
        if found == 0 {
            return Err(
                InvalidInput::new(field, format!("there is no {} {}", p.kind, p.id)).into(),
            );
        }
    }
    Ok(())
}

/// Fails when the caller's `If-Match` version is not the stored one.
pub(crate) fn check_version(expected: Option<i64>, current: i64) -> StoreResult<()> {
    match expected {
        Some(v) if v != current => Err(StoreError::VersionMismatch { current }),
        _ => Ok(()),
    }
}

/// A versioned write that found the row changed since it was read: with `If-Match` the
/// caller's version is stale (412); without, another writer was faster (409, try again).
pub(crate) fn lost_race(expected_version: Option<i64>, read_version: i64) -> StoreError {
    match expected_version {
        Some(_) => StoreError::VersionMismatch {
            current: read_version + 1,
        },
        None => StoreError::Conflict(
            "the item changed while this request was applied; read it and try again".into(),
        ),
    }
}

/// How an actor is written into `granted_by` and `ended_by`: `kind:id` (or just `kind`).
pub(crate) fn actor_ref(ctx: &ChangeContext) -> String {
    match &ctx.actor.id {
        Some(id) => format!("{}:{id}", ctx.actor.kind.as_str()),
        None => ctx.actor.kind.as_str().to_owned(),
    }
}

/// The values of a `LIKE` pattern that matches names starting with `prefix`, folded.
pub(crate) fn prefix_pattern(prefix: &str) -> String {
    let mut p = String::with_capacity(prefix.len() + 1);
    for c in tessera_domain::directory::fold(prefix).chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}
