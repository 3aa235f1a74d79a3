//! The operator commands that work on the store directly (also while a server runs on it).

use std::process::ExitCode;

use tessera_domain::audit::Actor;
use tessera_domain::directory::{DataSourceKind, MatchingKey};
use tessera_store::directory;
use tessera_store::{ChangeContext, Db, DbTarget, admin_tokens, audit, scim_tokens};

use crate::config::Config;
/// Opens the server's existing store without creating it or changing its schema.
async fn open_db(config: &Config) -> anyhow::Result<Db> {
    let target = DbTarget::from_config(config.database_url.as_deref(), &config.data_dir)?;
    Ok(Db::open_existing(&target, std::sync::Arc::new(tessera_domain::SystemClock)).await?)
}

fn cli_context() -> ChangeContext {
    ChangeContext::new(Actor::cli())
}

pub async fn migrate(config: &Config) -> anyhow::Result<ExitCode> {
    let target = DbTarget::from_config(config.database_url.as_deref(), &config.data_dir)?;
    let db = Db::connect(&target, std::sync::Arc::new(tessera_domain::SystemClock)).await?;
    let state = db.migrate().await?;
    println!(
        "Database {} is at schema version {}.",
        target.describe(),
        state.applied.unwrap_or(0)
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn admin_token_create(config: &Config, label: &str) -> anyhow::Result<ExitCode> {
    let db = open_db(config).await?;
    let mut tx = db.begin().await?;
    let (token, value) = admin_tokens::create(&mut tx, &cli_context(), label).await?;
    tx.commit().await?;
    println!(
        "Created admin token {} (label {:?}). Store it now; it is not shown again:",
        token.id, token.label
    );
    println!("{value}");
    Ok(ExitCode::SUCCESS)
}

pub async fn admin_token_list(config: &Config) -> anyhow::Result<ExitCode> {
    let db = open_db(config).await?;
    let tokens = admin_tokens::list(&db).await?;
    println!("{:<36}  {:<8}  {:<25}  LABEL", "ID", "STATUS", "CREATED");
    for t in tokens {
        let status = if t.revoked_at.is_some() {
            "revoked"
        } else {
            "active"
        };
        println!(
            "{:<36}  {:<8}  {:<25}  {}",
            t.id,
            status,
            tessera_server::rfc3339(t.created_at),
            t.label
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn admin_token_revoke(config: &Config, id: &str) -> anyhow::Result<ExitCode> {
    let db = open_db(config).await?;
    let mut tx = db.begin().await?;
    match admin_tokens::revoke(&mut tx, &cli_context(), id).await {
        Ok(token) => {
            tx.commit().await?;
            println!(
                "Revoked admin token {} (label {:?}).",
                token.id, token.label
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if e.is_not_found() => {
            eprintln!("tessera: no admin token with id {id}");
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}

/// Finds the SCIM data source by name or creates it, then issues a token for it, in one
/// transaction.
pub async fn scim_token_create(
    config: &Config,
    data_source: &str,
    label: &str,
) -> anyhow::Result<ExitCode> {
    let db = open_db(config).await?;
    let (token, value, source, created) =
        issue_scim_token(&db, &cli_context(), data_source, label).await?;
    if created {
        println!(
            "Created SCIM data source {:?} ({}).",
            source.name, source.id
        );
    }
    println!(
        "Created SCIM token {} for data source {:?} (label {:?}). Store it now; it is not shown again:",
        token.id, source.name, token.label
    );
    println!("{value}");
    Ok(ExitCode::SUCCESS)
}

/// Shared with the demo: the data source named `name` (created as a SCIM source if missing)
/// and a new token for it.
pub async fn issue_scim_token(
    db: &Db,
    ctx: &ChangeContext,
    name: &str,
    label: &str,
) -> anyhow::Result<(
    scim_tokens::ScimToken,
    String,
    tessera_domain::directory::DataSource,
    bool,
)> {
    let mut tx = db.begin().await?;
    let (source, created) = match directory::find_data_source_by_name(db, name).await? {
        Some(source) if source.kind == DataSourceKind::Scim => (source, false),
        Some(source) => anyhow::bail!(
            "data source {:?} is a {} data source, not a SCIM one",
            source.name,
            source.kind
        ),
        None => (
            directory::create_data_source(
                &mut tx,
                ctx,
                name,
                DataSourceKind::Scim,
                MatchingKey::UserName,
            )
            .await?,
            true,
        ),
    };
    let (token, value) = scim_tokens::create(&mut tx, ctx, &source.id, label).await?;
    tx.commit().await?;
    Ok((token, value, source, created))
}

pub async fn scim_token_list(config: &Config) -> anyhow::Result<ExitCode> {
    let db = open_db(config).await?;
    let tokens = scim_tokens::list(&db).await?;
    let sources = directory::list_data_sources(&db).await?;
    println!(
        "{:<36}  {:<8}  {:<25}  {:<24}  LABEL",
        "ID", "STATUS", "CREATED", "DATA SOURCE"
    );
    for t in tokens {
        let status = if t.revoked_at.is_some() {
            "revoked"
        } else {
            "active"
        };
        let source = sources
            .iter()
            .find(|s| s.id == t.data_source_id)
            .map_or(t.data_source_id.as_str(), |s| s.name.as_str());
        println!(
            "{:<36}  {:<8}  {:<25}  {:<24}  {}",
            t.id,
            status,
            tessera_server::rfc3339(t.created_at),
            source,
            t.label
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn scim_token_revoke(config: &Config, id: &str) -> anyhow::Result<ExitCode> {
    let db = open_db(config).await?;
    let mut tx = db.begin().await?;
    match scim_tokens::revoke(&mut tx, &cli_context(), id).await {
        Ok(token) => {
            tx.commit().await?;
            println!("Revoked SCIM token {} (label {:?}).", token.id, token.label);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if e.is_not_found() => {
            eprintln!("tessera: no SCIM token with id {id}");
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn audit_verify(config: &Config) -> anyhow::Result<ExitCode> {
    let db = open_db(config).await?;
    match audit::verify(&db).await {
        Ok(summary) => {
            println!(
                "Audit chain intact: {} entries, head hash {}.",
                summary.entries, summary.head_hash
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(audit::VerifyError::Broken(b)) => {
            println!("Audit chain BROKEN at entry {}: {b}.", b.seq());
            Ok(ExitCode::from(1))
        }
        Err(audit::VerifyError::Store(e)) => Err(e.into()),
    }
}
