//! Accounts: an identity's account in an application, or one no identity matched.

use serde_json::json;
use tessera_domain::directory::{InvalidInput, fold};
use tessera_domain::governance::{Account, AccountStatus};
use tessera_domain::ids::new_id;

use super::applications;
use crate::directory::MAX_PAGE;
use crate::{ChangeContext, Db, StoreError, StoreResult, Tx, audit, with_conn, with_pool};

#[derive(sqlx::FromRow)]
struct AccountRow {
    id: String,
    application_id: String,
    identity_id: Option<String>,
    user_key: String,
    display_name: Option<String>,
    status: String,
    version: i64,
    created_at: i64,
    updated_at: i64,
}

const COLUMNS: &str = "id, application_id, identity_id, user_key, display_name, status, version, created_at, updated_at";

impl TryFrom<AccountRow> for Account {
    type Error = StoreError;
    fn try_from(r: AccountRow) -> StoreResult<Self> {
        Ok(Account {
            status: AccountStatus::parse(&r.status).ok_or_else(|| {
                StoreError::Corrupt(format!("unknown account status {:?}", r.status))
            })?,
            id: r.id,
            application_id: r.application_id,
            identity_id: r.identity_id,
            user_key: r.user_key,
            display_name: r.display_name,
            version: r.version,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

#[derive(Debug, Clone)]
pub struct NewAccount {
    pub application_id: String,
    pub identity_id: Option<String>,
    pub user_key: String,
    pub display_name: Option<String>,
    pub status: AccountStatus,
}

fn validate(a: &mut Account) -> StoreResult<()> {
    a.user_key = a.user_key.trim().to_owned();
    if a.user_key.is_empty() || a.user_key.chars().count() > 256 {
        return Err(InvalidInput::new("user_key", "must be 1-256 characters").into());
    }
    if a.user_key.chars().any(char::is_control) {
        return Err(InvalidInput::new("user_key", "must not contain control characters").into());
    }
    tessera_domain::governance::validate_description(a.display_name.as_deref())
        .map_err(|e| InvalidInput::new("display_name", e.reason))?;
    Ok(())
}

async fn check_identity(tx: &mut Tx, identity_id: Option<&str>) -> StoreResult<()> {
    let Some(id) = identity_id else {
        return Ok(());
    };
    if !tessera_domain::ids::is_valid_id(id) {
        return Err(InvalidInput::new("identity_id", format!("{id:?} is not a Tessera id")).into());
    }
    let found: i64 = with_conn!(tx, |conn| {
        sqlx::query_scalar("SELECT COUNT(*) FROM identities WHERE id = $1 AND status <> 'deleted'")
            .bind(id)
            .fetch_one(&mut *conn)
            .await?
    });
    if found == 0 {
        return Err(InvalidInput::new("identity_id", format!("there is no identity {id}")).into());
    }
    Ok(())
}

fn key_taken(key: &str) -> StoreError {
    StoreError::Conflict(format!("the application already has an account {key:?}"))
}

pub async fn create(tx: &mut Tx, ctx: &ChangeContext, new: NewAccount) -> StoreResult<Account> {
    applications::get_in(tx, &new.application_id).await?;
    let mut account = Account {
        id: new_id(),
        application_id: new.application_id,
        identity_id: new.identity_id,
        user_key: new.user_key,
        display_name: new.display_name,
        status: new.status,
        version: 1,
        created_at: tx.now(),
        updated_at: tx.now(),
    };
    validate(&mut account)?;
    check_identity(tx, account.identity_id.as_deref()).await?;
    let a = &account;
    let inserted = with_conn!(tx, |conn| {
        sqlx::query(
            "INSERT INTO accounts (id, application_id, identity_id, user_key, user_key_lower, \
             display_name, status, version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&a.id)
        .bind(&a.application_id)
        .bind(&a.identity_id)
        .bind(&a.user_key)
        .bind(fold(&a.user_key))
        .bind(&a.display_name)
        .bind(a.status.as_str())
        .bind(a.version)
        .bind(a.created_at)
        .bind(a.updated_at)
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected())
    });
    match inserted {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(key_taken(&account.user_key));
        }
        other => other?,
    };
    audit::record(
        tx,
        ctx.event("account.create", "account", Some(&account.id))
            .with_details(json!({ "after": account })),
    )
    .await?;
    Ok(account)
}

pub async fn get(db: &Db, id: &str) -> StoreResult<Account> {
    let sql = format!("SELECT {COLUMNS} FROM accounts WHERE id = $1");
    let row: Option<AccountRow> = with_pool!(db, |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(pool)
            .await?
    });
    row.ok_or_else(|| StoreError::not_found("account", id))?
        .try_into()
}

async fn get_in(tx: &mut Tx, id: &str) -> StoreResult<Account> {
    let sql = format!("SELECT {COLUMNS} FROM accounts WHERE id = $1");
    let row: Option<AccountRow> = with_conn!(tx, |conn| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?
    });
    row.ok_or_else(|| StoreError::not_found("account", id))?
        .try_into()
}

#[derive(Debug, Clone, Default)]
pub struct AccountFilter {
    pub application_id: Option<String>,
    pub identity_id: Option<String>,
    /// `Some(false)`: only accounts no identity matched.
    pub matched: Option<bool>,
}

/// A page of accounts in creation order, after the id `after`.
pub async fn list(
    db: &Db,
    filter: &AccountFilter,
    after: Option<&str>,
    limit: i64,
) -> StoreResult<Vec<Account>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM accounts WHERE ($1 IS NULL OR application_id = $1) \
         AND ($2 IS NULL OR identity_id = $2) \
         AND ($3 IS NULL OR (identity_id IS NOT NULL) = $3) \
         AND ($4 IS NULL OR id > $4) ORDER BY id LIMIT $5"
    );
    let rows: Vec<AccountRow> = with_pool!(db, |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(filter.application_id.as_deref())
            .bind(filter.identity_id.as_deref())
            .bind(filter.matched)
            .bind(after)
            .bind(limit.clamp(1, MAX_PAGE))
            .fetch_all(pool)
            .await?
    });
    rows.into_iter().map(Account::try_from).collect()
}

/// Loads the account, lets `change` edit it, and writes it back. It stays in its application.
pub async fn update(
    tx: &mut Tx,
    ctx: &ChangeContext,
    id: &str,
    expected_version: Option<i64>,
    change: impl FnOnce(&mut Account) -> StoreResult<()>,
) -> StoreResult<Account> {
    let before = get_in(tx, id).await?;
    super::check_version(expected_version, before.version)?;
    let mut account = before.clone();
    change(&mut account)?;
    if account.application_id != before.application_id {
        return Err(InvalidInput::new(
            "application_id",
            "an account cannot move to another application",
        )
        .into());
    }
    validate(&mut account)?;
    if account == before {
        return Ok(before);
    }
    if account.identity_id != before.identity_id {
        check_identity(tx, account.identity_id.as_deref()).await?;
    }
    account.version = before.version + 1;
    account.updated_at = tx.now();
    let a = &account;
    let updated = with_conn!(tx, |conn| {
        sqlx::query(
            "UPDATE accounts SET identity_id = $1, user_key = $2, user_key_lower = $3, \
             display_name = $4, status = $5, version = $6, updated_at = $7 \
             WHERE id = $8 AND version = $9",
        )
        .bind(&a.identity_id)
        .bind(&a.user_key)
        .bind(fold(&a.user_key))
        .bind(&a.display_name)
        .bind(a.status.as_str())
        .bind(a.version)
        .bind(a.updated_at)
        .bind(&a.id)
        .bind(before.version)
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected())
    });
    match updated {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(key_taken(&account.user_key));
        }
        Ok(0) => return Err(super::lost_race(expected_version, before.version)),
        other => other?,
    };
    if let (None, Some(identity)) = (&before.identity_id, &account.identity_id) {
        super::member_upload::link_account_grants(tx, ctx, id, identity).await?;
    }
    audit::record(
        tx,
        ctx.event("account.update", "account", Some(id))
            .with_details(json!({ "before": before, "after": account })),
    )
    .await?;
    Ok(account)
}

/// Deletes an account. Refused while a live grant is held through it.
pub async fn delete(
    tx: &mut Tx,
    ctx: &ChangeContext,
    id: &str,
    expected_version: Option<i64>,
) -> StoreResult<()> {
    let before = get_in(tx, id).await?;
    super::check_version(expected_version, before.version)?;
    let live: i64 = with_conn!(tx, |conn| {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM grants WHERE account_id = $1 AND status IN ('scheduled', 'active')",
        )
        .bind(id)
        .fetch_one(&mut *conn)
        .await?
    });
    if live > 0 {
        return Err(applications::has_live_grants("the account", live));
    }
    with_conn!(tx, |conn| {
        sqlx::query("DELETE FROM accounts WHERE id = $1")
            .bind(id)
            .execute(&mut *conn)
            .await?;
    });
    audit::record(
        tx,
        ctx.event("account.delete", "account", Some(id))
            .with_details(json!({ "before": before })),
    )
    .await?;
    Ok(())
}
