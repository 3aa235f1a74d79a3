//! Configuration: built-in defaults, then a TOML file (`--config` or `TESSERA_CONFIG`), then
//! `TESSERA_*` environment variables (`__` separates sections: `TESSERA_REQUEST_LOG__RETENTION_DAYS`),
//! then command-line flags. `TESSERA_DATABASE_URL_FILE` and `TESSERA_BOOTSTRAP_TOKEN_FILE`
//! read those secrets from files.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use tessera_server::{RequestLogConfig, ServerConfig};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server listens on.
    pub listen: SocketAddr,
    /// Directory of the embedded SQLite database (`tessera.db`).
    pub data_dir: PathBuf,
    /// A `postgres://` URL switches to PostgreSQL; unset means SQLite in `data_dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// The first admin token, instead of a generated one (at least 32 characters).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootstrap_token: Option<String>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Largest body of a member or user list upload, in bytes.
    pub max_upload_bytes: usize,
    /// The URL clients reach Tessera at, for links in responses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    pub log: LogConfig,
    pub request_log: RequestLogConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `auto` (text on a terminal, JSON otherwise), `json` or `text`.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `info,tessera_server=debug`. `RUST_LOG` overrides it.
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Auto,
    Json,
    Text,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Auto,
            level: "info".into(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        let server = ServerConfig::default();
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./tessera-data"),
            database_url: None,
            bootstrap_token: None,
            max_body_bytes: server.max_body_bytes,
            max_upload_bytes: server.max_upload_bytes,
            public_url: None,
            log: LogConfig::default(),
            request_log: server.request_log,
        }
    }
}

/// Values given as command-line flags; only those present override.
#[derive(Debug, Default, Serialize)]
pub struct FlagOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
}

/// Secrets that may be read from a file named by `TESSERA_<KEY>_FILE`.
const FILE_SECRETS: [&str; 2] = ["database_url", "bootstrap_token"];

impl Config {
    /// Loads and validates the configuration. Errors name the offending key and its source.
    pub fn load(file: Option<&Path>, flags: FlagOverrides) -> Result<Config, String> {
        Self::load_from(file, flags, |name| std::env::var(name).ok())
    }

    fn load_from(
        file: Option<&Path>,
        flags: FlagOverrides,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, String> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(format!("config file {} does not exist", path.display()));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(Env::prefixed("TESSERA_").split("__").filter(|key| {
            let key = key.as_str().to_ascii_lowercase();
            key != "config" && !key.ends_with("_file")
        }));
        for key in FILE_SECRETS {
            let var = format!("TESSERA_{}_FILE", key.to_ascii_uppercase());
            if let Some(path) = env(&var) {
                let value = std::fs::read_to_string(&path)
                    .map_err(|e| format!("{key}: cannot read {var}={path}: {e}"))?;
                figment = figment.merge((key, value.trim_end_matches(['\r', '\n']).to_owned()));
            }
        }
        figment = figment.merge(Serialized::defaults(flags));
        let config: Config = figment.extract().map_err(|e| {
            e.into_iter()
                .map(|e| describe(&e))
                .collect::<Vec<_>>()
                .join("; ")
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        self.server_config().validate()?;
        if let Some(token) = &self.bootstrap_token
            && token.len() < tessera_domain::secret::MIN_SUPPLIED_SECRET_LEN
        {
            return Err(format!(
                "bootstrap_token: must be at least {} characters",
                tessera_domain::secret::MIN_SUPPLIED_SECRET_LEN
            ));
        }
        validate_log_level(&self.log.level)?;
        tessera_store::DbTarget::from_config(self.database_url.as_deref(), &self.data_dir)
            .map_err(|e| format!("database_url: {e}"))?;
        Ok(())
    }

    pub fn server_config(&self) -> ServerConfig {
        ServerConfig {
            max_body_bytes: self.max_body_bytes,
            max_upload_bytes: self.max_upload_bytes,
            // Validated in `validate`; an invalid value never reaches a server.
            public_url: self
                .public_url
                .as_deref()
                .map(|u| tessera_server::normalize_public_url(u).unwrap_or_else(|_| u.to_owned())),
            request_log: self.request_log.clone(),
        }
    }
}

/// Accepts `LEVEL` or `TARGET=LEVEL` directives separated by commas, so that a typo such as
/// `inof` fails start instead of being read as a target name that silences every log.
fn validate_log_level(filter: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let is_level = |s: &str| LEVELS.contains(&s.trim().to_ascii_lowercase().as_str());
    if filter.trim().is_empty() {
        return Err("log.level: must not be empty".into());
    }
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = directive
            .rsplit_once('=')
            .map_or(directive, |(_, level)| level);
        if !is_level(level) {
            return Err(format!(
                "log.level: {directive:?} is not a level (trace, debug, info, warn, error, off) or target=level"
            ));
        }
    }
    Ok(())
}

/// One figment error as `key: problem (source)`, never echoing a secret value.
fn describe(e: &figment::Error) -> String {
    let key = if e.path.is_empty() {
        "(top level)".to_owned()
    } else {
        e.path.join(".")
    };
    let source = e
        .metadata
        .as_ref()
        .map(|m| match &m.source {
            Some(src) => format!(" (from {} {src})", m.name),
            None => format!(" (from {})", m.name),
        })
        .unwrap_or_default();
    let kind = if FILE_SECRETS.iter().any(|s| key == *s) {
        "invalid value".to_owned()
    } else {
        e.kind.to_string()
    };
    format!("{key}: {kind}{source}")
}

#[cfg(test)]
// figment::Jail fixes the closure's error type (figment::Error), which clippy finds large.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn precedence_is_file_then_env_then_flag() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:1001\"\ndata_dir = \"/from-file\"\n[request_log]\nretention_days = 7\n").unwrap();
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            let c = Config::load_from(Some(&path), FlagOverrides::default(), |n| {
                std::env::var(n).ok()
            })
            .unwrap();
            assert_eq!(c.listen.port(), 1001);
            assert_eq!(c.request_log.retention_days, 7);

            jail.set_env("TESSERA_LISTEN", "127.0.0.1:1002");
            jail.set_env("TESSERA_REQUEST_LOG__RETENTION_DAYS", "9");
            let c = Config::load_from(Some(&path), FlagOverrides::default(), |n| {
                std::env::var(n).ok()
            })
            .unwrap();
            assert_eq!(c.listen.port(), 1002);
            assert_eq!(c.request_log.retention_days, 9);
            assert_eq!(c.data_dir, PathBuf::from("/from-file"));

            let flags = FlagOverrides {
                listen: Some("127.0.0.1:1003".into()),
                ..Default::default()
            };
            let c = Config::load_from(Some(&path), flags, |n| std::env::var(n).ok()).unwrap();
            assert_eq!(c.listen.port(), 1003);
            Ok(())
        });
    }

    #[test]
    fn invalid_values_name_their_key() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("TESSERA_LISTEN", "not-an-address");
            let e = Config::load_from(None, FlagOverrides::default(), |n| std::env::var(n).ok())
                .unwrap_err();
            assert!(e.starts_with("listen:"), "{e}");

            jail.clear_env();
            jail.set_env("TESSERA_REQUEST_LOG__RETENTION_DAYS", "0");
            let e = Config::load_from(None, FlagOverrides::default(), |n| std::env::var(n).ok())
                .unwrap_err();
            assert!(e.contains("request_log.retention_days"), "{e}");

            jail.clear_env();
            jail.set_env("TESSERA_LISTN", "127.0.0.1:1");
            let e = Config::load_from(None, FlagOverrides::default(), |n| std::env::var(n).ok())
                .unwrap_err();
            assert!(e.contains("listn"), "{e}");

            jail.clear_env();
            jail.set_env("TESSERA_LOG__LEVEL", "inof");
            let e = Config::load_from(None, FlagOverrides::default(), |n| std::env::var(n).ok())
                .unwrap_err();
            assert!(e.starts_with("log.level:"), "{e}");
            jail.set_env("TESSERA_LOG__LEVEL", "warn,tessera_server=debug");
            Config::load_from(None, FlagOverrides::default(), |n| std::env::var(n).ok()).unwrap();

            jail.clear_env();
            jail.set_env("TESSERA_DATABASE_URL", "mysql://x");
            let e = Config::load_from(None, FlagOverrides::default(), |n| std::env::var(n).ok())
                .unwrap_err();
            assert!(e.starts_with("database_url:"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn secrets_come_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "a-bootstrap-token-of-at-least-32-chars\n").unwrap();
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("TESSERA_BOOTSTRAP_TOKEN_FILE", path.display().to_string());
            let c = Config::load_from(None, FlagOverrides::default(), |n| std::env::var(n).ok())
                .unwrap();
            assert_eq!(
                c.bootstrap_token.as_deref(),
                Some("a-bootstrap-token-of-at-least-32-chars")
            );
            jail.set_env("TESSERA_BOOTSTRAP_TOKEN_FILE", "/nonexistent/file");
            let e = Config::load_from(None, FlagOverrides::default(), |n| std::env::var(n).ok())
                .unwrap_err();
            assert!(e.starts_with("bootstrap_token:"), "{e}");
            Ok(())
        });
    }
}
