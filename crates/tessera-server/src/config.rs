//! Server settings (loaded by the binary from file, environment and flags).

use serde::{Deserialize, Serialize};

use crate::surface::Surface;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Largest request body accepted on any route, in bytes (larger: 413).
    pub max_body_bytes: usize,
    /// Largest body of an upload (`PUT` of a member or user list), in bytes.
    pub max_upload_bytes: usize,
    /// The URL clients reach Tessera at (`https://tessera.example.com`, no trailing slash),
    /// for the links Tessera puts in responses (SCIM `meta.location`, `$ref`). Unset: taken
    /// from each request's `Host` and `X-Forwarded-Proto`, which the client controls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    pub request_log: RequestLogConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_body_bytes: 1024 * 1024,
            max_upload_bytes: 64 * 1024 * 1024,
            public_url: None,
            request_log: RequestLogConfig::default(),
        }
    }
}

impl ServerConfig {
    /// The largest body this request may carry: uploads of member and user lists may be larger
    /// than other bodies.
    pub fn body_limit(&self, method: &http::Method, path: &str) -> usize {
        let upload = method == http::Method::PUT
            && path.starts_with("/api/v1/")
            && (path.ends_with("/members") || path.ends_with("/users"));
        if upload {
            self.max_upload_bytes
        } else {
            self.max_body_bytes
        }
    }
}

/// Checks a `public_url` and returns it without trailing slashes: an `http` or `https` URL
/// with a host and at most a path (no query, fragment or user info).
pub fn normalize_public_url(url: &str) -> Result<String, String> {
    let trimmed = url.trim().trim_end_matches('/');
    let invalid = |why: &str| Err(format!("public_url: {why} (got {url:?})"));
    let uri: http::Uri = match trimmed.parse() {
        Ok(uri) => uri,
        Err(_) => return invalid("not a URL"),
    };
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return invalid("must start with http:// or https://");
    }
    match uri.authority() {
        Some(a) if !a.host().is_empty() && !a.as_str().contains('@') => {}
        _ => return invalid("must name a host, without user info"),
    }
    if uri.query().is_some() || trimmed.contains('#') {
        return invalid("must not have a query or fragment");
    }
    Ok(trimmed.to_owned())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestLogConfig {
    /// Record an API event for every call.
    pub enabled: bool,
    /// Also record health, readiness and metrics calls (off: probes would flood the log).
    pub include_ops: bool,
    /// Keep request logs this many days; older rows are purged hourly.
    pub retention_days: i64,
    /// Which surfaces store redacted request and response bodies in API event details.
    pub bodies: BodyCapture,
    /// Largest part of each body kept, in bytes, after redaction.
    pub body_capture_bytes: usize,
    /// Rows waiting to be written; beyond this, new rows are dropped and counted.
    pub queue_capacity: usize,
    /// Body bytes the waiting rows may hold; beyond this, new rows keep their headers but not
    /// their bodies (and are counted as dropped).
    pub queue_max_body_bytes: usize,
}

impl Default for RequestLogConfig {
    fn default() -> Self {
        RequestLogConfig {
            enabled: true,
            include_ops: false,
            retention_days: 30,
            bodies: BodyCapture::default(),
            body_capture_bytes: 16 * 1024,
            queue_capacity: 16 * 1024,
            queue_max_body_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Per-surface switch for storing request and response bodies (headers are always stored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BodyCapture {
    pub api: bool,
    pub scim: bool,
    pub oauth: bool,
    pub ui: bool,
    pub ops: bool,
}

impl Default for BodyCapture {
    fn default() -> Self {
        BodyCapture {
            api: true,
            scim: true,
            oauth: true,
            ui: false,
            ops: false,
        }
    }
}

impl BodyCapture {
    pub fn for_surface(&self, surface: Surface) -> bool {
        match surface {
            Surface::Api => self.api,
            Surface::Scim => self.scim,
            Surface::OAuth => self.oauth,
            Surface::Ui => self.ui,
            Surface::Ops => self.ops,
        }
    }
}

impl ServerConfig {
    /// Checks values serde cannot, naming the offending key.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(url) = &self.public_url {
            normalize_public_url(url)?;
        }
        if self.max_body_bytes < 1024 {
            return Err("max_body_bytes: must be at least 1024".into());
        }
        if self.max_upload_bytes < self.max_body_bytes {
            return Err("max_upload_bytes: must be at least max_body_bytes".into());
        }
        if self.request_log.retention_days < 1 {
            return Err("request_log.retention_days: must be at least 1".into());
        }
        if self.request_log.queue_capacity < 16 {
            return Err("request_log.queue_capacity: must be at least 16".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_urls_are_checked_and_lose_trailing_slashes() {
        assert_eq!(
            normalize_public_url("https://idm.example.com/tessera/").unwrap(),
            "https://idm.example.com/tessera"
        );
        assert_eq!(
            normalize_public_url("http://localhost:8080").unwrap(),
            "http://localhost:8080"
        );
        for bad in [
            "idm.example.com",
            "ftp://idm.example.com",
            "https://user@idm.example.com",
            "https://idm.example.com/?a=b",
            "https://idm.example.com/#x",
            "https:///path",
            "",
        ] {
            assert!(normalize_public_url(bad).is_err(), "{bad}");
        }
    }
}
