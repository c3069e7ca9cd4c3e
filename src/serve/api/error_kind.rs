//! Every kind of error answer, in one list: each kind's HTTP status, its
//! stable wire name (the body's `kind`), its `Retry-After` if it has one, and
//! one sentence for the client. The error body, the status map, the metrics'
//! `kind` label, the OpenAPI document's error schemas and README.md's table of
//! error kinds (`ErrorKind::markdown_table`, which a test compares) all read it. A new kind is one
//! entry here, and its use.

use axum::http::StatusCode;
use serde::{Serialize, Serializer};

/// The doc comments become [`ErrorKind::doc`]; the wire names must never
/// change (clients match on them).
macro_rules! error_kinds {
    ($( $(#[doc = $doc:literal])+ $variant:ident = $code:literal, $name:literal $(, retry_after = $retry:literal)?; )+) => {
        /// What went wrong, for programs: the `kind` of an error answer.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorKind {
            $( $(#[doc = $doc])+ $variant, )+
        }

        impl ErrorKind {
            /// Every kind, in declaration order (by status, `client_closed`
            /// last: nobody is there to read it).
            pub const ALL: &'static [ErrorKind] = &[$(ErrorKind::$variant),+];

            /// The stable wire name: the body's `kind`, the metrics' label.
            pub(crate) const fn name(self) -> &'static str {
                match self { $(ErrorKind::$variant => $name,)+ }
            }

            /// The HTTP status, as a number.
            pub(crate) const fn code(self) -> u16 {
                match self { $(ErrorKind::$variant => $code,)+ }
            }

            /// Seconds for the `Retry-After` header, for the kinds that say
            /// when to try again.
            pub(crate) const fn retry_after(self) -> Option<u32> {
                match self { $(ErrorKind::$variant => error_kinds!(@retry $($retry)?),)+ }
            }

            /// What the kind means, for a client: its doc comment.
            pub(crate) fn doc(self) -> &'static str {
                match self { $(ErrorKind::$variant => concat!($($doc),+).trim(),)+ }
            }

            /// The variant's name (`MalformedJson`): the name of its answer in
            /// the OpenAPI document's `components.responses`.
            pub(crate) const fn title(self) -> &'static str {
                match self { $(ErrorKind::$variant => stringify!($variant),)+ }
            }
        }
    };
    (@retry) => { None };
    (@retry $retry:literal) => { Some($retry) };
}

error_kinds! {
    /// The body is not JSON, or has trailing garbage.
    MalformedJson = 400, "malformed_json";
    /// The request line or a header is not HTTP/1.1 (answered by the
    /// connection, before any route; the connection then closes).
    MalformedRequest = 400, "malformed_request";
    /// An admin route without the right `Authorization: Bearer` token.
    Unauthorized = 401, "unauthorized";
    /// An admin route with no `admin.token` configured.
    AdminDisabled = 403, "admin_disabled";
    /// No route has this path.
    NotFound = 404, "not_found";
    /// GET or DELETE of an id the catalog does not hold.
    ItemNotFound = 404, "item_not_found";
    /// `POST /admin/reload` of a version the bundle directory does not have.
    UnknownVersion = 404, "unknown_version";
    /// The path is served, but not with this method.
    MethodNotAllowed = 405, "method_not_allowed";
    /// The body did not arrive within `server.body_read_timeout_secs` (10) of
    /// the headers.
    BodyTimeout = 408, "body_timeout";
    /// `POST /admin/rollback` with no earlier bundle.
    NothingToRollBack = 409, "nothing_to_roll_back";
    /// The body is over `limits.max_body_bytes` (2 MiB); a declared
    /// `Content-Length` over it is answered before any of the body is read.
    BodyTooLarge = 413, "body_too_large";
    /// The request target (path and query) is over 8 KiB (from 64 KiB on,
    /// answered by the connection, which then closes).
    UriTooLong = 414, "uri_too_long";
    /// A field has the wrong type, is missing, or is unknown (`topk`, a key in
    /// `filters` or in a catalog item); or a JSON array is where an object is
    /// expected (the body, `user`, `filters`, a candidate, a history item, a
    /// catalog item).
    InvalidField = 422, "invalid_field";
    /// A number is not finite (`1e999`).
    NonFiniteNumber = 422, "non_finite_number";
    /// No user signal: `user.query`, `user.text` and `user.history` are all
    /// empty.
    MissingUserSignal = 422, "missing_user_signal";
    /// More than `limits.max_history` (200) history items.
    TooManyHistoryItems = 422, "too_many_history_items";
    /// More than `limits.max_candidates` (1000) candidates.
    TooManyCandidates = 422, "too_many_candidates";
    /// A candidate with an empty `id` or `text`, or a negative price.
    InvalidCandidate = 422, "invalid_candidate";
    /// Two candidates with the same `id`.
    DuplicateCandidateId = 422, "duplicate_candidate_id";
    /// `top_k` is not a whole number >= 1 (`0`, `-0`, `2.5`).
    InvalidTopK = 422, "invalid_top_k";
    /// `explain` with `top_k` above 100.
    TooManyExplained = 422, "too_many_explained";
    /// `diversity` is outside [0, 1].
    InvalidDiversity = 422, "invalid_diversity";
    /// `deadline_ms` is not a whole number from 1 to
    /// `server.request_timeout_secs` × 1000 (10,000).
    InvalidDeadline = 422, "invalid_deadline";
    /// More than `limits.max_candidates` (1000) ids in `exclude`.
    TooManyExcluded = 422, "too_many_excluded";
    /// A `filters` price is not finite or negative, or `min_price` > `max_price`;
    /// or `filters.attributes` is not an object of names to a string or a
    /// non-empty list of strings, or is over its limits (16 names, 64 values
    /// each, 256 bytes each).
    InvalidFilters = 422, "invalid_filters";
    /// `facets` names more than 16 attributes, an empty one or one over 256
    /// bytes, or one twice.
    InvalidFacets = 422, "invalid_facets";
    /// The request's uncached texts hold more than
    /// `batching.max_request_tokens` (16,384) tokens.
    EncoderBudget = 422, "encoder_budget";
    /// No candidates and no catalog (only services built without one;
    /// `shoprank serve` always opens it).
    NoCatalog = 422, "no_catalog";
    /// `PUT /v1/catalog/items` with an empty `items` list.
    EmptyItems = 422, "empty_items";
    /// More than `catalog.max_upsert_items` (1000) items in one PUT.
    TooManyItems = 422, "too_many_items";
    /// An item with a blank id, one over 256 bytes or with control characters,
    /// an id twice, an empty `text` or one holding NUL, a bad `price`, or
    /// `attributes` that is not an object.
    InvalidItem = 422, "invalid_item";
    /// New items would take the catalog past `catalog.max_items` (1,000,000).
    CatalogFull = 422, "catalog_full";
    /// `GET /v1/catalog/items` with a `limit` that is not a whole number from 1
    /// to 200, or a query parameter it does not know.
    InvalidPage = 422, "invalid_page";
    /// `DELETE /v1/users/{id}` with an id no event can carry: blank, over 256
    /// bytes, or with control characters.
    InvalidUserId = 422, "invalid_user_id";
    /// `POST /v1/events` with an empty `events` list.
    EmptyEvents = 422, "empty_events";
    /// `POST /v1/events` with more than `events.max_batch_events` (1000) events.
    TooManyEvents = 422, "too_many_events";
    /// Some events are invalid (each listed in `problems` with its index;
    /// nothing stored).
    InvalidEvents = 422, "invalid_events";
    /// `POST /admin/reload` of a bundle that does not load, was trained on
    /// another encoder, or fails the warm-up check; the old one serves on.
    BundleRefused = 422, "bundle_refused";
    /// More than 100 headers, or more than 16 KiB of them (a head over
    /// 64 KiB is answered by the connection, which then closes).
    HeadersTooLarge = 431, "headers_too_large";
    /// Anything else: an internal failure (logged once; the body says no more).
    Internal = 500, "internal";
    /// More than `server.max_concurrent_requests` (64) admitted; the encoder
    /// queue (`batching.max_queued_texts`, 8192 texts) or the event queue full;
    /// or more encoder work queued ahead than `batching.max_queue_wait_ms`
    /// (1 s) or the request's time left allows (`Retry-After` then says up to
    /// 10 s, by the backlog). `/recommend` answers a full or backlogged
    /// encoder queue 200, `degraded`, instead.
    Overloaded = 503, "overloaded", retry_after = 1;
    /// Ranking, a catalog write or an event commit took longer than
    /// `server.request_timeout_secs` (10). A `/recommend` request past its
    /// own `deadline_ms` is answered 200, `degraded`, instead.
    Timeout = 503, "timeout", retry_after = 1;
    /// The models are still loading.
    NotReady = 503, "not_ready", retry_after = 2;
    /// The encoder thread has died (logged once); queued requests fail at once,
    /// and the process needs a restart.
    EncoderStopped = 503, "encoder_stopped", retry_after = 30;
    /// The store cannot be written or read (PostgreSQL down, or no pooled
    /// connection within `store.connect_timeout_secs`): events or catalog
    /// writes.
    StoreUnavailable = 503, "store_unavailable", retry_after = 2;
    /// Nobody waits for the answer: the client went away, or its request timed
    /// out and was answered so. Counted in the metrics, never sent.
    ClientClosed = 499, "client_closed";
}

impl ErrorKind {
    /// The kinds a client can read: all but [`ErrorKind::ClientClosed`].
    pub(crate) fn answered() -> impl Iterator<Item = ErrorKind> {
        Self::ALL.iter().copied().filter(|kind| *kind != ErrorKind::ClientClosed)
    }

    /// The answer's status.
    pub(crate) fn status(self) -> StatusCode {
        StatusCode::from_u16(self.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// README.md's table of error kinds: one row per answered kind, with its
    /// doc, its status (and `Retry-After`), and its name. A test checks that
    /// README.md holds it.
    #[cfg(test)]
    pub(crate) fn markdown_table() -> String {
        let mut table = String::from("| situation | status | `kind` |\n|---|---|---|\n");
        for kind in Self::answered() {
            let status = match kind.retry_after() {
                Some(seconds) => format!("{} + `Retry-After: {seconds}`", kind.code()),
                None => kind.code().to_string(),
            };
            table.push_str(&format!("| {} | {status} | `{}` |\n", kind.doc(), kind.name()));
        }
        table
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for ErrorKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_kind_has_a_status_a_unique_snake_case_name_and_a_doc() {
        let mut names = HashSet::new();
        for &kind in ErrorKind::ALL {
            assert_eq!(kind.status().as_u16(), kind.code(), "{kind:?}");
            assert!(names.insert(kind.name()), "{} twice", kind.name());
            assert!(kind.name().chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{kind:?}");
            assert!(kind.doc().ends_with('.') && !kind.doc().contains('|'), "{kind:?}: {}", kind.doc());
            assert_eq!(kind.retry_after().is_some(), kind.code() == 503, "{kind:?}: a 503 says when to retry");
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.name());
        }
        assert!(!ErrorKind::answered().any(|kind| kind == ErrorKind::ClientClosed));
    }

    /// README.md's table is the rendered one, row for row: to change it,
    /// change [`ErrorKind`] and paste [`ErrorKind::markdown_table`].
    #[test]
    fn the_readme_table_is_the_rendered_one() {
        let readme = include_str!("../../../README.md");
        let table = ErrorKind::markdown_table();
        let header = table.lines().next().expect("a header");
        assert_eq!(readme.matches(header).count(), 1, "README.md has one table of error kinds");
        let start = readme.find(header).expect("README.md has the table of error kinds");
        let in_readme: String =
            readme[start..].lines().take_while(|line| line.starts_with('|')).map(|line| format!("{line}\n")).collect();
        assert!(in_readme == table, "README.md's table of error kinds differs; it should be:\n{table}");
    }
}
