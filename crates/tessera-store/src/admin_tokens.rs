//! Admin tokens: bearer credentials with every permission, for operators.
//! Only a SHA-256 digest of each token is stored.

use serde::Serialize;
use serde_json::json;
use tessera_domain::ids::new_id;
use tessera_domain::secret::{self, MIN_SUPPLIED_SECRET_LEN, SecretKind};

use crate::{ChangeContext, Db, StoreError, StoreResult, Tx, audit, with_conn, with_pool};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct AdminToken {
    pub id: String,
    pub label: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

const MAX_LABEL_LEN: usize = 200;

async fn insert(
    tx: &mut Tx,
    ctx: &ChangeContext,
    label: &str,
    digest: &str,
) -> StoreResult<AdminToken> {
    let label = label.trim();
    if label.is_empty()
        || label.chars().count() > MAX_LABEL_LEN
        || label.chars().any(char::is_control)
    {
        return Err(StoreError::Invalid(
            tessera_domain::directory::InvalidInput::new(
                "label",
                format!("must be 1 to {MAX_LABEL_LEN} printable characters"),
            ),
        ));
    }
    let token = AdminToken {
        id: new_id(),
        label: label.to_owned(),
        created_at: tx.now(),
        revoked_at: None,
    };
    with_conn!(tx, |conn| {
        sqlx::query("INSERT INTO admin_tokens (id, label, token_digest, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&token.id)
            .bind(&token.label)
            .bind(digest)
            .bind(token.created_at)
            .execute(&mut *conn)
            .await?;
    });
    audit::record(
        tx,
        ctx.event("admin_token.create", "admin_token", Some(&token.id))
            .with_details(json!({"label": token.label})),
    )
    .await?;
    Ok(token)
}

/// Creates a token and returns it with its value, which is never retrievable again.
pub async fn create(
    tx: &mut Tx,
    ctx: &ChangeContext,
    label: &str,
) -> StoreResult<(AdminToken, String)> {
    let issued =
        secret::issue(SecretKind::AdminToken).map_err(|e| StoreError::Config(e.to_string()))?;
    let token = insert(tx, ctx, label, &issued.digest).await?;
    Ok((token, issued.value))
}

/// What the start-up bootstrap did.
#[derive(Debug)]
pub enum Bootstrap {
    /// An active admin token already exists; nothing was created.
    AlreadyPresent,
    /// The operator-supplied token (`TESSERA_BOOTSTRAP_TOKEN`) was stored.
    StoredSupplied(AdminToken),
    /// A token was generated; its value must be shown to the operator once.
    Generated(AdminToken, String),
}

/// Ensures at least one active admin token exists, creating one if none does.
///
/// Serialised across processes by locking the `admin_bootstrap` row, so replicas starting
/// together create one token, not several.
pub async fn bootstrap(
    db: &Db,
    ctx: &ChangeContext,
    supplied: Option<&str>,
) -> StoreResult<Bootstrap> {
    if let Some(value) = supplied
        && value.len() < MIN_SUPPLIED_SECRET_LEN
    {
        return Err(StoreError::Invalid(
            tessera_domain::directory::InvalidInput::new(
                "bootstrap_token",
                format!("must be at least {MIN_SUPPLIED_SECRET_LEN} characters"),
            ),
        ));
    }
    let mut tx = db.begin().await?;
    let active: i64 = with_conn!(tx, |conn| {
        sqlx::query("UPDATE store_locks SET name = name WHERE name = 'admin_bootstrap'")
            .execute(&mut *conn)
            .await?;
        sqlx::query_scalar("SELECT COUNT(*) FROM admin_tokens WHERE revoked_at IS NULL")
            .fetch_one(&mut *conn)
            .await?
    });
    if active > 0 {
        return Ok(Bootstrap::AlreadyPresent);
    }
    let result = match supplied {
        Some(value) => {
            let digest = secret::digest(value);
            let known: i64 = with_conn!(tx, |conn| {
                sqlx::query_scalar("SELECT COUNT(*) FROM admin_tokens WHERE token_digest = $1")
                    .bind(&digest)
                    .fetch_one(&mut *conn)
                    .await?
            });
            if known > 0 {
                // A revoked token must never come back to life through configuration.
                return Err(StoreError::Conflict(
                    "the configured bootstrap token was revoked; set a new TESSERA_BOOTSTRAP_TOKEN, \
                     or unset it to have a token generated"
                        .into(),
                ));
            }
            Bootstrap::StoredSupplied(insert(&mut tx, ctx, "bootstrap", &digest).await?)
        }
        None => {
            let (token, value) = create(&mut tx, ctx, "bootstrap").await?;
            Bootstrap::Generated(token, value)
        }
    };
    tx.commit().await?;
    Ok(result)
}

/// Revokes a token; revoking twice is not an error but records nothing the second time.
pub async fn revoke(tx: &mut Tx, ctx: &ChangeContext, id: &str) -> StoreResult<AdminToken> {
    let now = tx.now();
    let (changed, token): (u64, Option<AdminToken>) = with_conn!(tx, |conn| {
        let changed = sqlx::query(
            "UPDATE admin_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        let token = sqlx::query_as(
            "SELECT id, label, created_at, revoked_at FROM admin_tokens WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
        (changed, token)
    });
    let token = token.ok_or_else(|| StoreError::not_found("admin token", id))?;
    if changed > 0 {
        audit::record(tx, ctx.event("admin_token.revoke", "admin_token", Some(id))).await?;
    }
    Ok(token)
}

pub async fn list(db: &Db) -> StoreResult<Vec<AdminToken>> {
    Ok(with_pool!(db, |pool| {
        sqlx::query_as("SELECT id, label, created_at, revoked_at FROM admin_tokens ORDER BY created_at, id LIMIT 1000")
            .fetch_all(pool)
            .await?
    }))
}

/// The active token whose value this is, if any. Looked up by digest on its unique index, then
/// compared again in constant time so no timing difference depends on the secret.
pub async fn authenticate(db: &Db, presented: &str) -> StoreResult<Option<AdminToken>> {
    let digest = secret::digest(presented);
    #[derive(sqlx::FromRow)]
    struct Row {
        id: String,
        label: String,
        token_digest: String,
        created_at: i64,
        revoked_at: Option<i64>,
    }
    const SQL: &str = "SELECT id, label, token_digest, created_at, revoked_at FROM admin_tokens \
         WHERE token_digest = $1 AND revoked_at IS NULL";
    // Every API request comes here first: on SQLite it takes the direct read path.
    let row: Option<Row> = match db.sqlite_readers() {
        Some(readers) => {
            let digest = digest.clone();
            readers
                .read(move |conn| {
                    let mut stmt = conn.prepare_cached(SQL)?;
                    let mut rows = stmt.query([&digest])?;
                    let Some(r) = rows.next()? else {
                        return Ok(None);
                    };
                    Ok(Some(Row {
                        id: r.get(0)?,
                        label: r.get(1)?,
                        token_digest: r.get(2)?,
                        created_at: r.get(3)?,
                        revoked_at: r.get(4)?,
                    }))
                })
                .await?
        }
        None => with_pool!(db, |pool| {
            sqlx::query_as(SQL)
                .bind(&digest)
                .fetch_optional(pool)
                .await?
        }),
    };
    Ok(row
        .filter(|r| secret::digests_match(&r.token_digest, &digest))
        .map(|r| AdminToken {
            id: r.id,
            label: r.label,
            created_at: r.created_at,
            revoked_at: r.revoked_at,
        }))
}
