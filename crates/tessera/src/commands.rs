//! The operator commands that work on the store directly (also while a server runs on it).

use std::process::ExitCode;

use tessera_domain::audit::Actor;
use tessera_store::{ChangeContext, Db, DbTarget, admin_tokens, audit};

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
