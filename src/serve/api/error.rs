//! The one place where errors become HTTP statuses. 4xx bodies name the field
//! and the problem; 5xx bodies are opaque and the cause is logged once.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

pub(crate) use super::error_kind::ErrorKind;
use crate::serve::embed::EmbedError;
use crate::serve::ranker::RankError;

/// An error answer: a [`ErrorKind`] (which gives the status) and a message.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
    /// Seconds for the `Retry-After` header: the kind's own, unless the
    /// answer knows better.
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

/// Most per-element problems listed in one answer: with each message cut
/// to `MAX_MESSAGE_BYTES`, the body stays under 4 KB (the message says how
/// many elements were bad in all).
pub(crate) const MAX_PROBLEMS: usize = 10;

/// The body of every error answer.
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorBody<'a> {
    /// What went wrong, for people: a 4xx names the field and the problem, a
    /// 5xx says no more than its kind. A long message is cut short, ending
    /// in `…`.
    pub error: &'a str,
    /// What went wrong, for programs: an [`ErrorKind`], stable across versions.
    #[schema(schema_with = super::openapi::error_kind)]
    pub kind: ErrorKind,
    /// For a batch: each bad element and why (the first 10).
    #[serde(skip_serializing_if = "<[Problem]>::is_empty")]
    #[schema(value_type = Option<Vec<Problem>>)]
    pub problems: &'a [Problem],
}

impl ApiError {
    /// An answer of `kind`, with its status and its `Retry-After`.
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), retry_after: kind.retry_after(), problems: Vec::new() }
    }
    /// The answer's status: its kind's.
    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }
    pub(crate) fn body_too_large() -> Self {
        Self::new(ErrorKind::BodyTooLarge, "request body exceeds limits.max_body_bytes")
    }
    /// The body did not arrive within `server.body_read_timeout_secs` (408).
    pub(crate) fn body_timeout(seconds: u64) -> Self {
        Self::new(
            ErrorKind::BodyTimeout,
            format!("the request body did not arrive within {seconds} s (server.body_read_timeout_secs)"),
        )
    }
    pub(crate) fn uri_too_long(bytes: usize, limit: usize) -> Self {
        Self::new(ErrorKind::UriTooLong, format!("the request target is {bytes} bytes; the limit is {limit}"))
    }
    pub(crate) fn headers_too_large(count: usize, bytes: usize) -> Self {
        Self::new(
            ErrorKind::HeadersTooLarge,
            format!(
                "{count} headers of {bytes} bytes; the limits are {} headers and {} bytes",
                super::middleware::MAX_HEADERS,
                super::middleware::MAX_HEADER_BYTES
            ),
        )
    }
    /// Nobody waits for the answer: the client went away or the request
    /// timed out (its timeout was answered already). Never reaches a client.
    pub(crate) fn abandoned() -> Self {
        Self::new(ErrorKind::ClientClosed, "the client went away")
    }
    pub(crate) fn not_found(path: &str) -> Self {
        Self::new(ErrorKind::NotFound, format!("no route for {path}"))
    }
    /// A catalog item that is not there (404).
    pub(crate) fn item_not_found(id: &str) -> Self {
        Self::new(ErrorKind::ItemNotFound, format!("no catalog item with id `{id}`"))
    }
    /// This service keeps no catalog (only services built without one).
    pub(crate) fn no_catalog() -> Self {
        Self::new(ErrorKind::NoCatalog, "candidates: required, this service keeps no catalog")
    }
    pub(crate) fn method_not_allowed() -> Self {
        Self::new(ErrorKind::MethodNotAllowed, "method not allowed on this route")
    }
    pub(crate) fn not_ready() -> Self {
        Self::new(ErrorKind::NotReady, "models are still loading; retry shortly")
    }
    /// The encoder thread died: nothing can be ranked until a restart.
    pub(crate) fn encoder_stopped() -> Self {
        Self::new(ErrorKind::EncoderStopped, "the encoder has stopped; the service needs a restart")
    }
    pub(crate) fn timeout(seconds: u64) -> Self {
        Self::new(ErrorKind::Timeout, format!("the request took longer than {seconds} s (server.request_timeout_secs)"))
    }
    /// Some elements of a batch are invalid (422): each is listed.
    pub(crate) fn invalid_batch(kind: ErrorKind, message: impl Into<String>, mut problems: Vec<Problem>) -> Self {
        problems.truncate(MAX_PROBLEMS);
        for problem in &mut problems {
            problem.error = bounded(&problem.error).into_owned();
        }
        Self { problems, ..Self::new(kind, message) }
    }
    /// No or the wrong bearer token on an admin route (401).
    pub(crate) fn unauthorized() -> Self {
        Self::new(ErrorKind::Unauthorized, "this route needs `Authorization: Bearer <admin.token>`")
    }
    /// The admin routes are off: no admin.token is configured (403).
    pub(crate) fn admin_disabled() -> Self {
        Self::new(ErrorKind::AdminDisabled, "admin routes are off: set admin.token (SHOPRANK__ADMIN__TOKEN)")
    }
    /// The store cannot take the write now (its pool is exhausted, or
    /// PostgreSQL is down): logged with its cause, answered 503.
    pub(crate) fn store_unavailable(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "store write failed");
        Self::new(ErrorKind::StoreUnavailable, "the store is unavailable; retry shortly")
    }
    /// An internal failure: logged here with its cause, answered opaquely.
    pub(crate) fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "request failed");
        Self::new(ErrorKind::Internal, "internal error")
    }
}

impl From<RankError> for ApiError {
    fn from(error: RankError) -> Self {
        match error {
            RankError::Embed(EmbedError::QueueFull { queued, limit }) => ApiError::new(
                ErrorKind::Overloaded,
                format!("encoder queue is full ({queued} of {limit} texts waiting)"),
            ),
            // Retry once the work queued now is likely done.
            RankError::Embed(backlog @ EmbedError::Backlog { wait_ms, .. }) => ApiError {
                retry_after: Some(wait_ms.div_ceil(1000).clamp(1, 10) as u32),
                ..ApiError::new(ErrorKind::Overloaded, backlog.to_string())
            },
            RankError::Embed(budget @ EmbedError::OverBudget { .. }) => {
                ApiError::new(ErrorKind::EncoderBudget, budget.to_string())
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
pub(crate) const MAX_MESSAGE_BYTES: usize = 300;

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
        let mut response = (self.status(), body).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response.extensions_mut().insert(self.kind);
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
