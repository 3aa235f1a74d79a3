//! SCIM tokens: bearer credentials of SCIM clients (Entra ID's "Secret Token", Okta's API
//! token). Each belongs to one data source and sees only that data source's users and groups.
//! Several may be active at once, so a token can be rotated without downtime. Only a SHA-256
//! digest is stored.

use serde::Serialize;
use serde_json::json;
use tessera_domain::directory::InvalidInput;
use tessera_domain::ids::new_id;
use tessera_domain::secret::{self, SecretKind};

use crate::{ChangeContext, Db, StoreError, StoreResult, Tx, audit, with_conn, with_pool};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ScimToken {
    pub id: String,
    pub data_source_id: String,
    pub label: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

const COLUMNS: &str = "id, data_source_id, label, created_at, revoked_at";
const MAX_LABEL_LEN: usize = 200;

/// Creates a token for a data source and returns it with its value, shown this once.
pub async fn create(
    tx: &mut Tx,
    ctx: &ChangeContext,
    data_source_id: &str,
    label: &str,
) -> StoreResult<(ScimToken, String)> {
    let label = label.trim();
    if label.is_empty()
        || label.chars().count() > MAX_LABEL_LEN
        || label.chars().any(char::is_control)
    {
        return Err(StoreError::Invalid(InvalidInput::new(
            "label",
            format!("must be 1 to {MAX_LABEL_LEN} printable characters"),
        )));
    }
    let issued =
        secret::issue(SecretKind::ScimToken).map_err(|e| StoreError::Config(e.to_string()))?;
    let token = ScimToken {
        id: new_id(),
        data_source_id: data_source_id.to_owned(),
        label: label.to_owned(),
        created_at: tx.now(),
        revoked_at: None,
    };
    let inserted = with_conn!(tx, |conn| {
        sqlx::query(
            "INSERT INTO scim_tokens (id, data_source_id, label, token_digest, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&token.id)
        .bind(&token.data_source_id)
        .bind(&token.label)
        .bind(&issued.digest)
        .bind(token.created_at)
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected())
    });
    match inserted {
        Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
            return Err(StoreError::not_found("data source", data_source_id));
        }
        other => other?,
    };
    audit::record(
        tx,
        ctx.event("scim_token.create", "scim_token", Some(&token.id))
            .with_data_source(data_source_id)
            .with_details(json!({"label": token.label})),
    )
    .await?;
    Ok((token, issued.value))
}

/// Revokes a token at once, in every process; revoking twice records nothing the second time.
pub async fn revoke(tx: &mut Tx, ctx: &ChangeContext, id: &str) -> StoreResult<ScimToken> {
    let now = tx.now();
    let (changed, token): (u64, Option<ScimToken>) = with_conn!(tx, |conn| {
        let changed = sqlx::query(
            "UPDATE scim_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        let sql = format!("SELECT {COLUMNS} FROM scim_tokens WHERE id = $1");
        let token = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
        (changed, token)
    });
    let token = token.ok_or_else(|| StoreError::not_found("SCIM token", id))?;
    if changed > 0 {
        audit::record(
            tx,
            ctx.event("scim_token.revoke", "scim_token", Some(id))
                .with_data_source(&token.data_source_id),
        )
        .await?;
    }
    Ok(token)
}

pub async fn list(db: &Db) -> StoreResult<Vec<ScimToken>> {
    let sql = format!("SELECT {COLUMNS} FROM scim_tokens ORDER BY created_at, id LIMIT 1000");
    Ok(with_pool!(db, |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
            .fetch_all(pool)
            .await?
    }))
}

/// The active token whose value this is, if any: found by digest on its unique index, then
/// compared again in constant time.
pub async fn authenticate(db: &Db, presented: &str) -> StoreResult<Option<ScimToken>> {
    if !presented.starts_with(SecretKind::ScimToken.prefix()) {
        return Ok(None);
    }
    let digest = secret::digest(presented);
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        token: ScimToken,
        token_digest: String,
    }
    let sql = format!(
        "SELECT {COLUMNS}, token_digest FROM scim_tokens WHERE token_digest = $1 AND revoked_at IS NULL"
    );
    // Every SCIM request comes here first: on SQLite it takes the direct read path.
    let row: Option<Row> = match db.sqlite_readers() {
        Some(readers) => {
            let digest = digest.clone();
            readers
                .read(move |conn| {
                    let mut stmt = conn.prepare_cached(&sql)?;
                    let mut rows = stmt.query([&digest])?;
                    let Some(r) = rows.next()? else {
                        return Ok(None);
                    };
                    Ok(Some(Row {
                        token: ScimToken {
                            id: r.get(0)?,
                            data_source_id: r.get(1)?,
                            label: r.get(2)?,
                            created_at: r.get(3)?,
                            revoked_at: r.get(4)?,
                        },
                        token_digest: r.get(5)?,
                    }))
                })
                .await?
        }
        None => with_pool!(db, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
                .bind(&digest)
                .fetch_optional(pool)
                .await?
        }),
    };
    Ok(row
        .filter(|r| secret::digests_match(&r.token_digest, &digest))
        .map(|r| r.token))
}
