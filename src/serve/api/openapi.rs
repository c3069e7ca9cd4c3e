//! The OpenAPI 3.1 document served at `GET /openapi.json`. The paths come
//! from the handlers' `#[utoipa::path]`s, the schemas from the request and
//! response types (their doc comments become the descriptions), and the
//! error answers from the tables below: each names, for a route, the
//! [`ErrorKind`]s its [`ErrorBody`] can carry, grouped by status; the status,
//! the `Retry-After` header and (unless the route says more) the description
//! come from the kinds themselves. One job, so one file: a route's error
//! table, the paths listed and the modifiers that finish the document
//! change together, and its tests (that every reference resolves, that the
//! tables cover the kinds) read them all.

use std::collections::BTreeMap;

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::{ContentBuilder, Ref, RefOr};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};

use super::catalog_types::CatalogItemIn;
use super::error::{ErrorBody, ErrorKind};
use super::types::{CandidateIn, HistoryItemIn};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "shoprank",
        version = env!("CARGO_PKG_VERSION"),
        description = "Product recommendations: a BERT text encoder and a scoring head rank the candidates a \
            request sends, or the items of the catalog kept here. Every error answer has the one `ErrorBody`; \
            a path that is not listed here answers 404 (`components.responses.NotFound`), a listed path asked \
            with another method 405 (`components.responses.MethodNotAllowed`)."
    ),
    paths(
        super::recommend::recommend,
        super::catalog::upsert_items,
        super::catalog::list_items,
        super::catalog::get_item,
        super::catalog::delete_item,
        super::events::post_events,
        super::admin::reload,
        super::admin::rollback,
        super::users::erase_user,
        super::probes::health,
        super::probes::ready,
        super::model::get_model,
        super::probes::metrics,
        super::probes::openapi_json
    ),
    components(schemas(ErrorBody)),
    modifiers(&TitleAliases, &SharedErrors, &AdminBearer)
)]
pub(crate) struct ApiDoc;

/// The document, as `GET /openapi.json` serves it.
pub(crate) fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The schema of [`ErrorBody::kind`]: a string, one of the answered
/// [`ErrorKind`]s.
pub(super) fn error_kind() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some("What went wrong, for programs: stable across versions. Each answer lists its own."))
        .enum_values(Some(ErrorKind::answered().map(ErrorKind::name)))
}

/// One error status a route answers with, and the kinds it carries there;
/// the status is theirs. A named one is shared by several routes: it is
/// written once, in `components.responses`, and referred to.
struct ErrorStatus {
    name: Option<&'static str>,
    /// What the answer means on this route; without one, each kind's doc.
    description: Option<&'static str>,
    kinds: &'static [ErrorKind],
}

impl ErrorStatus {
    /// The answer of one kind, named after it and described by its doc.
    const fn shared(kind: &'static [ErrorKind; 1]) -> Self {
        Self::named(kind[0].title(), kind)
    }

    /// An answer shared by several routes, described by its kinds' docs.
    const fn named(name: &'static str, kinds: &'static [ErrorKind]) -> Self {
        Self { name: Some(name), description: None, kinds }
    }

    /// Kinds of one status, described by their docs, for one route.
    const fn of(kinds: &'static [ErrorKind]) -> Self {
        Self { name: None, description: None, kinds }
    }

    /// Kinds of one status, and what they mean on one route.
    const fn described(description: &'static str, kinds: &'static [ErrorKind]) -> Self {
        Self { name: None, description: Some(description), kinds }
    }

    fn status(&self) -> u16 {
        self.kinds[0].code()
    }
}

/// A body that is not JSON, on a route that reads one; the request line or
/// a header not HTTP, on any route.
const MALFORMED: ErrorStatus =
    ErrorStatus::named("Malformed", &[ErrorKind::MalformedJson, ErrorKind::MalformedRequest]);
/// The request line or a header not HTTP, on a route that reads no body.
const MALFORMED_REQUEST: ErrorStatus = ErrorStatus::shared(&[ErrorKind::MalformedRequest]);
const ROUTE_NOT_FOUND: ErrorStatus = ErrorStatus::shared(&[ErrorKind::NotFound]);
const ITEM_NOT_FOUND: ErrorStatus = ErrorStatus::shared(&[ErrorKind::ItemNotFound]);
const METHOD_NOT_ALLOWED: ErrorStatus = ErrorStatus::shared(&[ErrorKind::MethodNotAllowed]);
const BODY_TIMEOUT: ErrorStatus = ErrorStatus::shared(&[ErrorKind::BodyTimeout]);
const BODY_TOO_LARGE: ErrorStatus = ErrorStatus::shared(&[ErrorKind::BodyTooLarge]);
const URI_TOO_LONG: ErrorStatus = ErrorStatus::shared(&[ErrorKind::UriTooLong]);
const NO_CATALOG: ErrorStatus = ErrorStatus::shared(&[ErrorKind::NoCatalog]);
const HEADERS_TOO_LARGE: ErrorStatus = ErrorStatus::shared(&[ErrorKind::HeadersTooLarge]);
const INTERNAL: ErrorStatus = ErrorStatus::shared(&[ErrorKind::Internal]);
const BUSY: ErrorStatus = ErrorStatus::named(
    "Unavailable",
    &[ErrorKind::Overloaded, ErrorKind::Timeout, ErrorKind::NotReady, ErrorKind::EncoderStopped],
);
const BUSY_OR_STORE: ErrorStatus = ErrorStatus::named(
    "UnavailableOrStore",
    &[
        ErrorKind::Overloaded,
        ErrorKind::Timeout,
        ErrorKind::NotReady,
        ErrorKind::EncoderStopped,
        ErrorKind::StoreUnavailable,
    ],
);

/// The 503 of a route that only needs the service loaded.
const UNREADY: ErrorStatus = ErrorStatus::of(&[ErrorKind::NotReady, ErrorKind::EncoderStopped]);

/// Every named error answer, as `components.responses` holds them.
const SHARED: [ErrorStatus; 13] = [
    MALFORMED,
    MALFORMED_REQUEST,
    ROUTE_NOT_FOUND,
    ITEM_NOT_FOUND,
    METHOD_NOT_ALLOWED,
    BODY_TIMEOUT,
    BODY_TOO_LARGE,
    URI_TOO_LONG,
    NO_CATALOG,
    HEADERS_TOO_LARGE,
    INTERNAL,
    BUSY,
    BUSY_OR_STORE,
];

/// What the request's head alone can be refused for: every route.
const HEAD: [ErrorStatus; 3] = [BODY_TOO_LARGE, URI_TOO_LONG, HEADERS_TOO_LARGE];

/// The errors of `POST /recommend`.
pub(super) struct RecommendErrors;

impl IntoResponses for RecommendErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let invalid = ErrorStatus::described(
            "The body is JSON, but a field has the wrong type (`invalid_field`), a number is out of range \
            (`non_finite_number`), or a value breaks a rule or a limit: the kind names the rule, the message the \
            field.",
            &[
                ErrorKind::InvalidField,
                ErrorKind::NonFiniteNumber,
                ErrorKind::MissingUserSignal,
                ErrorKind::TooManyHistoryItems,
                ErrorKind::TooManyCandidates,
                ErrorKind::InvalidCandidate,
                ErrorKind::DuplicateCandidateId,
                ErrorKind::InvalidTopK,
                ErrorKind::TooManyExplained,
                ErrorKind::InvalidDiversity,
                ErrorKind::InvalidDeadline,
                ErrorKind::TooManyExcluded,
                ErrorKind::InvalidFilters,
                ErrorKind::InvalidFacets,
                ErrorKind::EncoderBudget,
                ErrorKind::NoCatalog,
            ],
        );
        error_responses(HEAD.iter().chain(&[MALFORMED, BODY_TIMEOUT, invalid, INTERNAL, BUSY]))
    }
}

/// The errors of `PUT /v1/catalog/items`.
pub(super) struct UpsertErrors;

impl IntoResponses for UpsertErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let invalid = ErrorStatus::described(
            "The body is JSON, but a field has the wrong type (`invalid_field`), a number is out of range \
            (`non_finite_number`), an item or the list breaks a rule, the catalog would grow past \
            `catalog.max_items` (`catalog_full`), or this service keeps no catalog (`no_catalog`).",
            &[
                ErrorKind::InvalidField,
                ErrorKind::NonFiniteNumber,
                ErrorKind::EmptyItems,
                ErrorKind::TooManyItems,
                ErrorKind::InvalidItem,
                ErrorKind::CatalogFull,
                ErrorKind::NoCatalog,
            ],
        );
        error_responses(HEAD.iter().chain(&[MALFORMED, BODY_TIMEOUT, invalid, INTERNAL, BUSY_OR_STORE]))
    }
}

/// The errors of `POST /v1/events`.
pub(super) struct EventsErrors;

impl IntoResponses for EventsErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let invalid = ErrorStatus::described(
            "The body is JSON, but `events` is missing or not a list of objects (`invalid_field`), is empty or \
            too long, or some events are invalid (`invalid_events`: `problems` lists each by index; none of the \
            batch was stored).",
            &[
                ErrorKind::InvalidField,
                ErrorKind::NonFiniteNumber,
                ErrorKind::EmptyEvents,
                ErrorKind::TooManyEvents,
                ErrorKind::InvalidEvents,
            ],
        );
        let unavailable = ErrorStatus::described(
            "Not now: the event queue is full or too many requests are in flight (`overloaded`), the commit ran \
            past `server.request_timeout_secs` (`timeout`: the events may be stored; retrying with the same ids \
            is safe), the store cannot be written (`store_unavailable`), or the service is still loading \
            (`not_ready`, `encoder_stopped`).",
            &[
                ErrorKind::Overloaded,
                ErrorKind::Timeout,
                ErrorKind::StoreUnavailable,
                ErrorKind::NotReady,
                ErrorKind::EncoderStopped,
            ],
        );
        error_responses(HEAD.iter().chain(&[MALFORMED, BODY_TIMEOUT, invalid, INTERNAL, unavailable]))
    }
}

/// The errors of `POST /admin/reload` and `/admin/rollback`.
pub(super) struct AdminErrors;

impl IntoResponses for AdminErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let refused = ErrorStatus::described(
            "The bundle was refused (it does not load, was trained on another encoder, or fails the warm-up \
            check); the serving bundle is unchanged. Or the body is not a reload request.",
            &[ErrorKind::BundleRefused, ErrorKind::InvalidField, ErrorKind::NonFiniteNumber],
        );
        error_responses(HEAD.iter().chain(&[
            MALFORMED,
            ErrorStatus::of(&[ErrorKind::Unauthorized]),
            ErrorStatus::of(&[ErrorKind::AdminDisabled]),
            ErrorStatus::of(&[ErrorKind::UnknownVersion]),
            ErrorStatus::of(&[ErrorKind::NothingToRollBack]),
            refused,
            INTERNAL,
            UNREADY,
        ]))
    }
}

/// The errors of `DELETE /v1/users/{id}`.
pub(super) struct EraseErrors;

impl IntoResponses for EraseErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let unavailable = ErrorStatus::described(
            "Not now: the store cannot be written (`store_unavailable`; nothing may have been erased, or all of \
            it: repeating the erasure is safe), or the service is still loading (`not_ready`).",
            &[ErrorKind::StoreUnavailable, ErrorKind::NotReady],
        );
        error_responses(HEAD.iter().chain(&[
            MALFORMED_REQUEST,
            ErrorStatus::of(&[ErrorKind::Unauthorized]),
            ErrorStatus::of(&[ErrorKind::AdminDisabled]),
            ErrorStatus::of(&[ErrorKind::InvalidUserId]),
            INTERNAL,
            unavailable,
        ]))
    }
}

/// The errors of `GET` and `DELETE /v1/catalog/items/{id}`.
pub(super) struct ItemErrors;

impl IntoResponses for ItemErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        error_responses(HEAD.iter().chain(&[MALFORMED_REQUEST, ITEM_NOT_FOUND, NO_CATALOG, INTERNAL, BUSY_OR_STORE]))
    }
}

/// The errors of `GET /v1/catalog/items` (a page of the catalog).
pub(super) struct PageErrors;

impl IntoResponses for PageErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let invalid = ErrorStatus::described(
            "A query parameter does not parse, is not known, or `limit` is not 1 to 200 (`invalid_page`); or this \
            service keeps no catalog (`no_catalog`).",
            &[ErrorKind::InvalidPage, ErrorKind::NoCatalog],
        );
        error_responses(HEAD.iter().chain(&[MALFORMED_REQUEST, invalid, INTERNAL, BUSY]))
    }
}

/// The errors of `GET /health`.
pub(super) struct HealthErrors;

impl IntoResponses for HealthErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        error_responses(HEAD.iter().chain(&[MALFORMED_REQUEST, ErrorStatus::of(&[ErrorKind::EncoderStopped])]))
    }
}

/// The errors of `GET /ready` and `GET /v1/model`: both only need the
/// service loaded.
pub(super) struct ReadyErrors;

impl IntoResponses for ReadyErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        error_responses(HEAD.iter().chain(&[MALFORMED_REQUEST, UNREADY]))
    }
}

/// The errors of the routes that only read the process's own state
/// (`/metrics`, `/openapi.json`).
pub(super) struct RequestHeadErrors;

impl IntoResponses for RequestHeadErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        error_responses(HEAD.iter().chain(&[MALFORMED_REQUEST]))
    }
}

/// The answers, by status: a shared one by reference.
fn error_responses<'a>(errors: impl IntoIterator<Item = &'a ErrorStatus>) -> BTreeMap<String, RefOr<Response>> {
    let answer = |error: &ErrorStatus| match error.name {
        Some(name) => RefOr::Ref(Ref::from_response_name(name)),
        None => RefOr::T(error_response(error)),
    };
    errors.into_iter().map(|error| (error.status().to_string(), answer(error))).collect()
}

/// An [`ErrorBody`] answer whose `kind` is one of `error.kinds`; one whose
/// kinds say when to retry has a `Retry-After` header.
fn error_response(error: &ErrorStatus) -> Response {
    let description = match error.description {
        Some(description) => {
            let kinds: Vec<String> = error.kinds.iter().map(|kind| format!("`{kind}`")).collect();
            format!("{description} Kind: {}.", kinds.join(", "))
        }
        None => {
            let kinds: Vec<String> = error.kinds.iter().map(|kind| format!("`{kind}`: {}", kind.doc())).collect();
            kinds.join(" ")
        }
    };
    let kind = ObjectBuilder::new().schema_type(Type::String).enum_values(Some(error.kinds.iter().map(|k| k.name())));
    let schema = AllOfBuilder::new()
        .item(Ref::from_schema_name(ErrorBody::name()))
        .item(ObjectBuilder::new().property("kind", kind));
    let response = ResponseBuilder::new()
        .description(description)
        .content("application/json", ContentBuilder::new().schema(Some(schema)).build());
    let response = if error.kinds.iter().any(|kind| kind.retry_after().is_some()) {
        let seconds = ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0));
        response.header(
            "Retry-After",
            HeaderBuilder::new().schema(seconds).description(Some("Seconds to wait before trying again.")).build(),
        )
    } else {
        response
    };
    response.build()
}

/// Writes the shared error answers into `components.responses`.
struct SharedErrors;

impl Modify for SharedErrors {
    fn modify(&self, document: &mut utoipa::openapi::OpenApi) {
        let components = document.components.get_or_insert_with(Default::default);
        for (name, error) in SHARED.iter().filter_map(|error| Some((error.name?, error))) {
            components.responses.insert(name.to_string(), error_response(error).into());
        }
    }
}

/// The admin routes' `bearer` security scheme (`admin.token`).
struct AdminBearer;

impl Modify for AdminBearer {
    fn modify(&self, document: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = document.components.get_or_insert_with(Default::default);
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("`Authorization: Bearer <admin.token>`; the admin routes are off without a token."))
            .build();
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// serde's `#[serde(alias = "title")]` on `text`, which the derive cannot
/// see: an object may name its text `text` or `title`, one of the two.
struct TitleAliases;

impl Modify for TitleAliases {
    fn modify(&self, document: &mut utoipa::openapi::OpenApi) {
        let Some(components) = document.components.as_mut() else { return };
        for name in [HistoryItemIn::name(), CandidateIn::name(), CatalogItemIn::name()] {
            let Some(RefOr::T(Schema::Object(object))) = components.schemas.get(name.as_ref()) else { continue };
            let mut object = object.clone();
            let Some(text) = object.properties.get("text").cloned() else { continue };
            let mut title = text;
            if let RefOr::T(Schema::Object(title)) = &mut title {
                title.description = Some("Another name for `text`: give one of the two.".to_string());
            }
            object.properties.insert("title".to_string(), title);
            object.required.retain(|field| field != "text");
            let one_of = OneOfBuilder::new()
                .item(ObjectBuilder::new().required("text"))
                .item(ObjectBuilder::new().required("title"));
            let schema = AllOfBuilder::new().description(object.description.take()).item(object).item(one_of);
            components.schemas.insert(name.into_owned(), schema.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn every_ref<'a>(value: &'a Value, refs: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                refs.extend(map.get("$ref").and_then(Value::as_str));
                map.values().for_each(|v| every_ref(v, refs));
            }
            Value::Array(list) => list.iter().for_each(|v| every_ref(v, refs)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_resolves() {
        let document = serde_json::to_value(document()).expect("the document serialises");
        let mut refs = Vec::new();
        every_ref(&document, &mut refs);
        assert!(refs.len() > 20, "{refs:?}");
        for reference in refs {
            let pointer = reference.strip_prefix('#').expect("a local reference");
            assert!(document.pointer(pointer).is_some(), "{reference} resolves to nothing");
        }
    }

    /// Every answered [`ErrorKind`] is documented, each under its own status
    /// (a shared answer's kinds all of one status), and no other kind is.
    #[test]
    fn the_answers_cover_the_kinds() {
        let document = serde_json::to_value(document()).expect("the document serialises");
        // Each answer, with the status a route gives it (none for the shared ones).
        let shared = document["components"]["responses"].as_object().expect("components.responses");
        let mut answers: Vec<(Option<&str>, &Value)> = shared.values().map(|response| (None, response)).collect();
        for operations in document["paths"].as_object().expect("paths").values() {
            for operation in operations.as_object().expect("a path item").values() {
                let responses = operation["responses"].as_object().expect("responses");
                answers.extend(responses.iter().map(|(status, response)| (Some(status.as_str()), response)));
            }
        }
        let mut documented = std::collections::BTreeSet::new();
        for (status, response) in answers {
            let response = match response["$ref"].as_str().and_then(|r| r.strip_prefix('#')) {
                Some(pointer) => document.pointer(pointer).expect("the reference resolves"),
                None => response,
            };
            let Some(all_of) = response["content"]["application/json"]["schema"]["allOf"].as_array() else {
                continue;
            };
            let mut codes = std::collections::BTreeSet::new();
            for kind in all_of[1]["properties"]["kind"]["enum"].as_array().expect("an error answer's kinds") {
                let name = kind.as_str().expect("a kind is a string");
                let kind = ErrorKind::answered().find(|kind| kind.name() == name);
                let kind = kind.unwrap_or_else(|| panic!("{name} is not an answered ErrorKind"));
                codes.insert(kind.code().to_string());
                documented.insert(kind.name());
            }
            assert_eq!(codes.len(), 1, "an answer's kinds differ in status: {codes:?}");
            if let Some(status) = status {
                assert!(codes.contains(status), "kinds of {codes:?} documented under {status}");
            }
        }
        let undocumented: Vec<_> = ErrorKind::answered().filter(|kind| !documented.contains(kind.name())).collect();
        assert!(undocumented.is_empty(), "no answer documents {undocumented:?}");
    }
}
