//! The one place where errors become HTTP statuses. 4xx bodies name the field
//! and the problem; 5xx bodies are opaque and the cause is logged once.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::serve::embed::EmbedError;
use crate::serve::ranker::RankError;

/// An error answer: status, a stable machine-readable `kind`, and a message.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    /// Seconds for the `Retry-After` header of 503 answers.
    pub retry_after: Option<u32>,
    /// Per-element problems of a batch (`POST /v1/events`), at most
    /// [`MAX_PROBLEMS`], each message bounded like `message`.
    pub problems: Vec<Problem>,
}

/// What is wrong with one element of a batch.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Problem {
    /// The element's position in the batch, from 0.
    pub index: usize,
    pub error: String,
}

/// Most per-element problems listed in one answer.
pub const MAX_PROBLEMS: usize = 100;

/// Carried in the response's extensions so the metrics middleware can count
/// errors by kind.
#[derive(Debug, Clone, Copy)]
pub struct ErrorKind(pub &'static str);

/// The body of every error answer.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody<'a> {
    /// What went wrong, for people: a 4xx names the field and the problem, a
    /// 5xx says no more than its kind. A long message is cut short, ending
    /// in `…`.
    pub error: &'a str,
    /// What went wrong, for programs: one of [`KINDS`], stable across versions.
    #[schema(schema_with = super::openapi::error_kind)]
    pub kind: &'a str,
    /// For a batch: each bad element and why (the first 100).
    #[serde(skip_serializing_if = "<[Problem]>::is_empty")]
    #[schema(value_type = Option<Vec<Problem>>)]
    pub problems: &'a [Problem],
}

/// Every `kind` an answer can carry, by status; the OpenAPI document lists
/// them (`client_closed` is left out: nobody is there to read it).
pub const KINDS: &[&str] = &[
    // 400
    "malformed_json",
    // 404
    "not_found",
    "item_not_found",
    "unknown_version",
    // 405
    "method_not_allowed",
    // 408
    "body_timeout",
    // 413
    "body_too_large",
    // 414
    "uri_too_long",
    // 422: a field of the wrong type, a number out of range, then the rules.
    "invalid_field",
    "non_finite_number",
    "missing_user_signal",
    "too_many_history_items",
    "too_many_candidates",
    "invalid_candidate",
    "duplicate_candidate_id",
    "invalid_top_k",
    "too_many_explained",
    "invalid_diversity",
    "too_many_excluded",
    "invalid_filters",
    "encoder_budget",
    "no_catalog",
    "empty_items",
    "too_many_items",
    "invalid_item",
    "catalog_full",
    "empty_events",
    "too_many_events",
    "invalid_events",
    "bundle_refused",
    // 401
    "unauthorized",
    // 403
    "admin_disabled",
    // 409
    "nothing_to_roll_back",
    // 431
    "headers_too_large",
    // 500
    "internal",
    // 503, with a Retry-After header
    "overloaded",
    "timeout",
    "not_ready",
    "encoder_stopped",
    "store_unavailable",
];

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self { status, kind, message: message.into(), retry_after: None, problems: Vec::new() }
    }
    /// The body is not JSON at all (400).
    pub fn malformed_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed_json", message)
    }
    /// Valid JSON whose field has the wrong type, or a missing required field (422).
    pub fn invalid_field(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message)
    }
    /// A field's value breaks a rule or a limit (422). `kind` names the rule.
    pub fn invalid(kind: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, kind, message)
    }
    pub fn body_too_large() -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "request body exceeds limits.max_body_bytes")
    }
    /// The body did not arrive within `server.body_read_timeout_secs` (408).
    pub fn body_timeout(seconds: u64) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!("the request body did not arrive within {seconds} s (server.body_read_timeout_secs)"),
        )
    }
    pub fn uri_too_long(bytes: usize, limit: usize) -> Self {
        Self::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("the request target is {bytes} bytes; the limit is {limit}"),
        )
    }
    pub fn headers_too_large(count: usize, bytes: usize) -> Self {
        Self::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "{count} headers of {bytes} bytes; the limits are {} headers and {} bytes",
                super::middleware::MAX_HEADERS,
                super::middleware::MAX_HEADER_BYTES
            ),
        )
    }
    /// Nobody waits for the answer: the client went away or the request
    /// timed out (its timeout was answered already). Never reaches a client.
    pub fn abandoned() -> Self {
        Self::new(StatusCode::from_u16(499).expect("a valid status code"), "client_closed", "the client went away")
    }
    pub fn not_found(path: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("no route for {path}"))
    }
    /// A catalog item that is not there (404).
    pub fn item_not_found(id: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "item_not_found", format!("no catalog item with id `{id}`"))
    }
    /// This service keeps no catalog (only services built without one).
    pub fn no_catalog() -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "no_catalog", "candidates: required, this service keeps no catalog")
    }
    pub fn method_not_allowed() -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this route")
    }
    fn unavailable(kind: &'static str, message: impl Into<String>, retry_after: u32) -> Self {
        Self { retry_after: Some(retry_after), ..Self::new(StatusCode::SERVICE_UNAVAILABLE, kind, message) }
    }
    pub fn not_ready() -> Self {
        Self::unavailable("not_ready", "models are still loading; retry shortly", 2)
    }
    /// The encoder thread died: nothing can be ranked until a restart.
    pub fn encoder_stopped() -> Self {
        Self::unavailable("encoder_stopped", "the encoder has stopped; the service needs a restart", 30)
    }
    pub fn overloaded(message: impl Into<String>) -> Self {
        Self::unavailable("overloaded", message, 1)
    }
    pub fn timeout(seconds: u64) -> Self {
        Self::unavailable(
            "timeout",
            format!("the request took longer than {seconds} s (server.request_timeout_secs)"),
            1,
        )
    }
    /// Some elements of a batch are invalid (422): each is listed.
    pub fn invalid_batch(kind: &'static str, message: impl Into<String>, mut problems: Vec<Problem>) -> Self {
        problems.truncate(MAX_PROBLEMS);
        for problem in &mut problems {
            problem.error = bounded(&problem.error).into_owned();
        }
        Self { problems, ..Self::invalid(kind, message) }
    }
    /// No or the wrong bearer token on an admin route (401).
    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", "this route needs `Authorization: Bearer <admin.token>`")
    }
    /// The admin routes are off: no admin.token is configured (403).
    pub fn admin_disabled() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "admin routes are off: set admin.token (SHOPRANK__ADMIN__TOKEN)",
        )
    }
    pub fn conflict(kind: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, kind, message)
    }
    pub fn not_found_kind(kind: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, kind, message)
    }
    /// The store cannot take the write now (its pool is exhausted, or
    /// PostgreSQL is down): logged with its cause, answered 503.
    pub fn store_unavailable(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "store write failed");
        Self::unavailable("store_unavailable", "the store is unavailable; retry shortly", 2)
    }
    /// An internal failure: logged here with its cause, answered opaquely.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "request failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
    }
}

impl From<RankError> for ApiError {
    fn from(error: RankError) -> Self {
        match error {
            RankError::Embed(EmbedError::QueueFull { queued, limit }) => {
                ApiError::overloaded(format!("encoder queue is full ({queued} of {limit} texts waiting)"))
            }
            // Retry once the work queued now is likely done.
            RankError::Embed(backlog @ EmbedError::Backlog { wait_ms, .. }) => ApiError {
                retry_after: Some(wait_ms.div_ceil(1000).clamp(1, 10) as u32),
                ..ApiError::overloaded(backlog.to_string())
            },
            RankError::Embed(budget @ EmbedError::OverBudget { .. }) => {
                ApiError::invalid("encoder_budget", budget.to_string())
            }
            RankError::Embed(EmbedError::Abandoned) => ApiError::abandoned(),
            // Logged once, by the encoder thread as it died.
            RankError::Embed(EmbedError::Stopped) => ApiError::encoder_stopped(),
            RankError::NoCatalog => ApiError::no_catalog(),
            other => ApiError::internal(&other),
        }
    }
}

/// Longest `error` message sent, in bytes of its JSON text (escapes
/// included). Messages quote what the request sent (an unknown key, a bad
/// value, an id); a 1 MB key must not come back as a 1 MB error body.
pub const MAX_MESSAGE_BYTES: usize = 300;

/// `message` cut, at a character boundary, so that its JSON escaping takes
/// at most `MAX_MESSAGE_BYTES` bytes; it ends in an ellipsis when cut.
fn bounded(message: &str) -> std::borrow::Cow<'_, str> {
    let escaped = |c: char| match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{08}' | '\u{0c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    };
    if message.chars().map(escaped).sum::<usize>() <= MAX_MESSAGE_BYTES {
        return message.into();
    }
    let ellipsis = '…';
    let mut used = ellipsis.len_utf8();
    let mut end = 0;
    for (at, c) in message.char_indices() {
        used += escaped(c);
        if used > MAX_MESSAGE_BYTES {
            break;
        }
        end = at + c.len_utf8();
    }
    format!("{}{ellipsis}", &message[..end]).into()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = axum::Json(ErrorBody { error: &bounded(&self.message), kind: self.kind, problems: &self.problems });
        let mut response = (self.status, body).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response.extensions_mut().insert(ErrorKind(self.kind));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        assert_eq!(bounded("short"), "short");
        let long = format!("unknown field `{}`", "é".repeat(MAX_MESSAGE_BYTES));
        let cut = bounded(&long);
        assert!(cut.len() <= MAX_MESSAGE_BYTES, "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert!(cut.starts_with("unknown field `é"));
        // Control characters take six bytes each once escaped.
        let controls = "\u{1}".repeat(400);
        let json = serde_json::to_string(&bounded(&controls)).unwrap();
        assert!(json.len() <= MAX_MESSAGE_BYTES + 2, "{}", json.len());
    }
}
