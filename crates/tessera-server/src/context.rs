//! Per-request context: the request id and what later layers learn about the request (who the
//! caller is, whether an internal error was swallowed into a 500). It is reachable from
//! anywhere in the request's task through a task-local, so error mapping can quote the id.

use std::sync::{Arc, Mutex};

use crate::surface::Surface;

tokio::task_local! {
    static CURRENT: Arc<RequestContext>;
}

/// Who made the request, once authentication has decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub kind: &'static str,
    pub id: String,
}

#[derive(Debug)]
pub struct RequestContext {
    pub request_id: String,
    pub surface: Surface,
    caller: Mutex<Option<Caller>>,
    internal_error: Mutex<Option<String>>,
}

impl RequestContext {
    pub fn new(request_id: String, surface: Surface) -> Self {
        RequestContext {
            request_id,
            surface,
            caller: Mutex::new(None),
            internal_error: Mutex::new(None),
        }
    }

    pub fn set_caller(&self, caller: Caller) {
        *self.caller.lock().unwrap_or_else(|p| p.into_inner()) = Some(caller);
    }

    pub fn caller(&self) -> Option<Caller> {
        self.caller
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records the full detail of an error answered with a generic 500.
    pub fn set_internal_error(&self, detail: String) {
        *self
            .internal_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(detail);
    }

    pub fn take_internal_error(&self) -> Option<String> {
        self.internal_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Runs `fut` with this context as the current one.
    pub async fn scope<F: std::future::Future>(self: Arc<Self>, fut: F) -> F::Output {
        CURRENT.scope(self, fut).await
    }
}

/// The context of the request being handled, if any.
pub fn current() -> Option<Arc<RequestContext>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// The id of the request being handled, if any.
pub fn current_request_id() -> Option<String> {
    CURRENT.try_with(|c| c.request_id.clone()).ok()
}

/// Accepts a caller-supplied `X-Request-Id` when it is short and plain, else makes a new one.
pub fn request_id_from(header: Option<&http::HeaderValue>) -> String {
    header
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
                // An id is copied into every log line: never accept one shaped like a secret.
                && !tessera_domain::redact::is_sensitive_value(v)
        })
        .map(str::to_owned)
        .unwrap_or_else(tessera_domain::ids::new_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_accepted_only_when_plain() {
        let ok = http::HeaderValue::from_static("abc-123_x.y");
        assert_eq!(request_id_from(Some(&ok)), "abc-123_x.y");
        let bad = http::HeaderValue::from_static("a b<script>");
        assert_ne!(request_id_from(Some(&bad)), "a b<script>");
        let secret = http::HeaderValue::from_static("tsr_adm_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
        assert_ne!(
            request_id_from(Some(&secret)),
            "tsr_adm_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        );
        assert!(tessera_domain::ids::is_valid_id(&request_id_from(None)));
    }
}
