//! Extractors whose rejections are problem documents, and the shared shapes of requests and
//! responses: pages, ETags, `If-Match`.

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::response::{IntoResponse, Response};
use axum::{Json, extract::rejection::JsonRejection};
use http::request::Parts;
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tessera_store::directory::MAX_PAGE;
use utoipa::ToSchema;

use super::ApiError;

/// `Query` whose rejection is a problem document rather than axum's plain text.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
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
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::UnsupportedMediaType(
                "the body must be JSON (Content-Type: application/json)".into(),
            )),
            Err(JsonRejection::JsonDataError(e)) => Err(ApiError::bad_request(e.body_text())),
            Err(JsonRejection::JsonSyntaxError(e)) => Err(ApiError::bad_request(e.body_text())),
            Err(other) => Err(ApiError::bad_request(other.body_text())),
        }
    }
}

/// The version an `If-Match` header asks for; `None` when absent or `*`.
pub struct IfMatch(pub Option<i64>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(header::IF_MATCH) else {
            return Ok(IfMatch(None));
        };
        let value = value.to_str().map_err(|_| {
            ApiError::bad_request("If-Match must be an ETag this API returned, or *")
        })?;
        if value.trim() == "*" {
            return Ok(IfMatch(None));
        }
        match crate::scim::etag_versions(value).as_slice() {
            [version] => Ok(IfMatch(Some(*version))),
            // A tag we never issued cannot match the current version.
            [] => Err(ApiError::PreconditionFailed(
                "If-Match names no version of this resource".into(),
            )),
            _ => Err(ApiError::bad_request(
                "If-Match must carry exactly one ETag",
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
