//! Extractors whose rejections are problem documents, and the shared shapes of requests and
//! responses: pages, ETags, `If-Match`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tessera_store::directory::MAX_PAGE;
use utoipa::ToSchema;

use super::ApiError;
use crate::AppState;

/// `Query` whose rejection is a problem document rather than axum's plain text. NUL is
/// refused in every parameter: no value may carry one, and PostgreSQL cannot store it.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if parts
            .uri
            .query()
            .is_some_and(|q| q.contains("%00") || q.contains('\0'))
        {
            return Err(ApiError::bad_request(
                "query parameters must not contain NUL characters",
            ));
        }
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

/// `Path` whose rejection (e.g. an undecodable segment) is a problem document.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

/// A path id: anything that is not a Tessera id cannot name anything, so it is a 404.
pub struct ApiId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ApiId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let ApiPath(id) = ApiPath::<String>::from_request_parts(parts, state).await?;
        if tessera_domain::ids::is_valid_id(&id) {
            Ok(ApiId(id))
        } else {
            Err(ApiError::NotFound(format!("{id:?} is not a Tessera id")))
        }
    }
}

/// A JSON body (`application/json` or any `+json` type) whose rejections are problem documents.
/// Strings carrying NUL are refused wherever they are: no field may hold one.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        if !media_type(req.headers()).is_some_and(|m| is_json(&m)) {
            return Err(ApiError::UnsupportedMediaType(
                "the body must be JSON (Content-Type: application/json)".into(),
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(state.config.max_body_bytes)
            } else {
                ApiError::bad_request(e.body_text())
            }
        })?;
        json_body(&bytes).map(ApiJson)
    }
}

/// Parses a JSON body, refusing NUL in any string.
pub fn json_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    if holds_nul(&value) {
        return Err(ApiError::bad_request(
            "strings in the body must not contain NUL characters",
        ));
    }
    T::deserialize(value).map_err(|e| ApiError::bad_request(format!("the body does not fit: {e}")))
}

/// The media type of a request body, lower-cased, without parameters.
pub fn media_type(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
}

pub fn is_json(media_type: &str) -> bool {
    media_type == "application/json"
        || (media_type.starts_with("application/") && media_type.ends_with("+json"))
}

fn holds_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(holds_nul),
        serde_json::Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

/// The `If-Match` header. Judged by [`IfMatch::version`], which handlers call after the body
/// has been read, so a bad body is reported before a stale version.
pub struct IfMatch(Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(IfMatch(parts.headers.get(header::IF_MATCH).map(|v| {
            String::from_utf8_lossy(v.as_bytes()).into_owned()
        })))
    }
}

impl IfMatch {
    /// The version asked for; `None` when there is no header or it is `*`. A malformed header
    /// is a 400; a well-formed tag this API never issued can match nothing: 412.
    pub fn version(&self) -> Result<Option<i64>, ApiError> {
        let Some(value) = self.0.as_deref().map(str::trim) else {
            return Ok(None);
        };
        if value == "*" {
            return Ok(None);
        }
        let opaque = value.strip_prefix("W/").unwrap_or(value);
        let quoted = opaque.len() >= 2
            && opaque.starts_with('"')
            && opaque.ends_with('"')
            && !opaque[1..opaque.len() - 1].contains('"');
        if !quoted {
            return Err(ApiError::bad_request(
                "If-Match must be one ETag this API returned (W/\"<version>\"), or *",
            ));
        }
        match opaque[1..opaque.len() - 1].parse::<i64>() {
            Ok(v) => Ok(Some(v)),
            Err(_) => Err(ApiError::PreconditionFailed(
                "If-Match names no version of this resource".into(),
            )),
        }
    }
}

/// A JSON response with `ETag: W/"<version>"`, and `Location` when created.
pub fn versioned<T: Serialize>(status: StatusCode, version: i64, body: &T) -> Response {
    let mut response = (status, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("W/\"{version}\"")) {
        response.headers_mut().insert(header::ETAG, v);
    }
    response
}

/// A created resource: 201 with its ETag and `Location`.
pub fn created<T: Serialize>(location: &str, version: i64, body: &T) -> Response {
    let mut response = versioned(StatusCode::CREATED, version, body);
    if let Ok(v) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

pub const DEFAULT_PAGE: i64 = 100;

pub fn check_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::BadRequest {
            detail: format!("limit must be between 1 and {MAX_PAGE}"),
            errors: Some(serde_json::json!([{"field": "limit", "reason": "out of range"}])),
        }),
    }
}

/// One page of a list.
#[derive(Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

/// Builds a page: a full page has a next cursor (the last item's key).
pub fn page<T, V>(
    items: Vec<T>,
    limit: i64,
    key: impl Fn(&T) -> String,
    view: impl Fn(T) -> V,
) -> Page<V> {
    let next_after = (items.len() as i64 == limit)
        .then(|| items.last().map(&key))
        .flatten();
    Page {
        items: items.into_iter().map(view).collect(),
        next_after,
    }
}

/// Parses an RFC 3339 timestamp from a request into epoch milliseconds.
pub fn parse_time(field: &'static str, value: &str) -> Result<i64, ApiError> {
    time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|_| ApiError::BadRequest {
            detail: format!("{field} must be an RFC 3339 date-time, e.g. 2026-12-31T17:00:00Z"),
            errors: Some(
                serde_json::json!([{"field": field, "reason": "not an RFC 3339 date-time"}]),
            ),
        })
}
