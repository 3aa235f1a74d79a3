//! `tessera`: the server and its command-line tools.

mod commands;
mod config;
mod demo;
mod demo_governance;
mod logging;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, FlagOverrides};

// glibc's allocator fragments and serialises under the many small, short-lived allocations of
// request handling and batched log writes; mimalloc measured markedly faster here (see
// docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tessera",
    version,
    about = "Identity governance and access management server"
)]
struct Cli {
    /// TOML configuration file (also `TESSERA_CONFIG`).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory of the embedded SQLite database.
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// `postgres://` URL to use PostgreSQL instead of SQLite.
    #[arg(long, global = true, value_name = "URL")]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// Address to listen on (default 127.0.0.1:8080).
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
    },
    /// Run the server on a fresh demo store filled with a small organisation.
    Demo {
        /// Address to listen on (default 127.0.0.1:8080).
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Manage admin tokens.
    #[command(subcommand)]
    AdminToken(AdminTokenCommand),
    /// Manage SCIM tokens (what Entra ID or Okta sends as its bearer token).
    #[command(subcommand)]
    ScimToken(ScimTokenCommand),
    /// Inspect the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Subcommand)]
enum ScimTokenCommand {
    /// Create a token for a SCIM data source (created if it does not exist); the token is
    /// printed alone on the last line of stdout.
    Create {
        /// The data source's name, such as "Entra ID".
        #[arg(long, value_name = "NAME")]
        data_source: String,
        #[arg(long, default_value = "cli")]
        label: String,
    },
    /// List tokens with their data sources (never their values).
    List,
    /// Revoke a token by id; it stops working at once, also in a running server.
    Revoke { id: String },
}

#[derive(Subcommand)]
enum AdminTokenCommand {
    /// Create a token; its value is printed alone on the last line of stdout.
    Create {
        #[arg(long, default_value = "cli")]
        label: String,
    },
    /// List tokens (never their values).
    List,
    /// Revoke a token by id; it stops working at once, also in a running server.
    Revoke { id: String },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the whole hash chain: exit 0 when intact, 1 naming the first broken entry.
    Verify,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config_file = cli
        .config
        .clone()
        .or_else(|| std::env::var_os("TESSERA_CONFIG").map(PathBuf::from));
    let listen = match &cli.command {
        Command::Serve { listen } | Command::Demo { listen } => listen.clone(),
        _ => None,
    };
    let is_demo = matches!(cli.command, Command::Demo { .. });
    let flags = FlagOverrides {
        listen,
        data_dir: cli
            .data_dir
            .clone()
            .or_else(|| is_demo.then(|| PathBuf::from(demo::DEFAULT_DIR))),
        database_url: cli.database_url.clone(),
    };
    let config = match Config::load(config_file.as_deref(), flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tessera: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    logging::init(&config.log);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tessera: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve { .. } => serve::run(config, None).await,
            Command::Demo { .. } => demo::run(config).await,
            Command::Migrate => commands::migrate(&config).await,
            Command::AdminToken(AdminTokenCommand::Create { label }) => {
                commands::admin_token_create(&config, &label).await
            }
            Command::AdminToken(AdminTokenCommand::List) => {
                commands::admin_token_list(&config).await
            }
            Command::AdminToken(AdminTokenCommand::Revoke { id }) => {
                commands::admin_token_revoke(&config, &id).await
            }
            Command::ScimToken(ScimTokenCommand::Create { data_source, label }) => {
                commands::scim_token_create(&config, &data_source, &label).await
            }
            Command::ScimToken(ScimTokenCommand::List) => commands::scim_token_list(&config).await,
            Command::ScimToken(ScimTokenCommand::Revoke { id }) => {
                commands::scim_token_revoke(&config, &id).await
            }
            Command::Audit(AuditCommand::Verify) => commands::audit_verify(&config).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tessera: {e:#}");
            ExitCode::from(2)
        }
    }
}
