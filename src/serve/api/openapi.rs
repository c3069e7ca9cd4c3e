//! The OpenAPI 3.1 document served at `GET /openapi.json`. The paths come
//! from the handlers' `#[utoipa::path]`s, the schemas from the request and
//! response types (their doc comments become the descriptions), and the
//! error answers from the tables below: each names the statuses a route can
//! answer with and, for each, the `kind`s its [`ErrorBody`] can carry.

use std::collections::BTreeMap;

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::{ContentBuilder, Ref, RefOr};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};

use super::error::{ErrorBody, KINDS};
use super::types::{CandidateIn, CatalogItemIn, HistoryItemIn};

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
        super::recommend,
        super::upsert_items,
        super::get_item,
        super::delete_item,
        super::post_events,
        super::reload,
        super::rollback,
        super::health,
        super::ready,
        super::metrics,
        super::openapi_json
    ),
    components(schemas(ErrorBody)),
    modifiers(&TitleAliases, &SharedErrors, &AdminBearer)
)]
pub struct ApiDoc;

/// The document, as `GET /openapi.json` serves it.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The schema of [`ErrorBody::kind`]: a string, one of [`KINDS`].
pub(super) fn error_kind() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some("What went wrong, for programs: stable across versions. Each answer lists its own."))
        .enum_values(Some(KINDS.iter().copied()))
}

/// One error status a route answers with, and the kinds it carries there.
/// A named one is shared by several routes: it is written once, in
/// `components.responses`, and referred to.
struct ErrorStatus {
    status: u16,
    name: Option<&'static str>,
    description: &'static str,
    kinds: &'static [&'static str],
}

const MALFORMED_JSON: ErrorStatus = ErrorStatus {
    status: 400,
    name: Some("MalformedJson"),
    description: "The body is not valid JSON.",
    kinds: &["malformed_json"],
};
const ROUTE_NOT_FOUND: ErrorStatus =
    ErrorStatus { status: 404, name: Some("NotFound"), description: "No route has this path.", kinds: &["not_found"] };
const ITEM_NOT_FOUND: ErrorStatus = ErrorStatus {
    status: 404,
    name: Some("ItemNotFound"),
    description: "No catalog item has this id.",
    kinds: &["item_not_found"],
};
const METHOD_NOT_ALLOWED: ErrorStatus = ErrorStatus {
    status: 405,
    name: Some("MethodNotAllowed"),
    description: "The path is served, but not with this method.",
    kinds: &["method_not_allowed"],
};
const BODY_TIMEOUT: ErrorStatus = ErrorStatus {
    status: 408,
    name: Some("BodyTimeout"),
    description: "The body did not arrive within `server.body_read_timeout_secs`.",
    kinds: &["body_timeout"],
};
const BODY_TOO_LARGE: ErrorStatus = ErrorStatus {
    status: 413,
    name: Some("BodyTooLarge"),
    description: "The body, as declared or as sent, is over `limits.max_body_bytes`.",
    kinds: &["body_too_large"],
};
const URI_TOO_LONG: ErrorStatus = ErrorStatus {
    status: 414,
    name: Some("UriTooLong"),
    description: "The request target is too long.",
    kinds: &["uri_too_long"],
};
const NO_CATALOG: ErrorStatus = ErrorStatus {
    status: 422,
    name: Some("NoCatalog"),
    description: "This service keeps no catalog.",
    kinds: &["no_catalog"],
};
const HEADERS_TOO_LARGE: ErrorStatus = ErrorStatus {
    status: 431,
    name: Some("HeadersTooLarge"),
    description: "Too many headers, or too many header bytes.",
    kinds: &["headers_too_large"],
};
const INTERNAL: ErrorStatus = ErrorStatus {
    status: 500,
    name: Some("Internal"),
    description: "An internal failure (logged; the body says no more).",
    kinds: &["internal"],
};
const BUSY: ErrorStatus = ErrorStatus {
    status: 503,
    name: Some("Unavailable"),
    description: "Not now: too many requests in flight or texts queued (`overloaded`), the request ran past \
        `server.request_timeout_secs` (`timeout`), the models are still loading (`not_ready`), or the encoder \
        has stopped and the process needs a restart (`encoder_stopped`).",
    kinds: &["overloaded", "timeout", "not_ready", "encoder_stopped"],
};

const BUSY_OR_STORE: ErrorStatus = ErrorStatus {
    status: 503,
    name: Some("UnavailableOrStore"),
    description: "Not now: as `Unavailable`, or the store cannot be written or read (`store_unavailable`: \
        PostgreSQL down, or its connection pool exhausted for `store.connect_timeout_secs`).",
    kinds: &["overloaded", "timeout", "not_ready", "encoder_stopped", "store_unavailable"],
};

/// Every named error answer, as `components.responses` holds them.
const SHARED: [ErrorStatus; 12] = [
    MALFORMED_JSON,
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
        let invalid = ErrorStatus {
            status: 422,
            name: None,
            description: "The body is JSON, but a field has the wrong type (`invalid_field`), a number is out of \
                range (`non_finite_number`), or a value breaks a rule or a limit: the kind names the rule, the \
                message the field.",
            kinds: &[
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
            ],
        };
        error_responses(HEAD.iter().chain(&[MALFORMED_JSON, BODY_TIMEOUT, invalid, INTERNAL, BUSY]))
    }
}

/// The errors of `PUT /v1/catalog/items`.
pub(super) struct UpsertErrors;

impl IntoResponses for UpsertErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let invalid = ErrorStatus {
            status: 422,
            name: None,
            description: "The body is JSON, but a field has the wrong type (`invalid_field`), a number is out of \
                range (`non_finite_number`), an item or the list breaks a rule, the catalog would grow past \
                `catalog.max_items` (`catalog_full`), or this service keeps no catalog (`no_catalog`).",
            kinds: &[
                "invalid_field",
                "non_finite_number",
                "empty_items",
                "too_many_items",
                "invalid_item",
                "catalog_full",
                "no_catalog",
            ],
        };
        error_responses(HEAD.iter().chain(&[MALFORMED_JSON, BODY_TIMEOUT, invalid, INTERNAL, BUSY_OR_STORE]))
    }
}

/// The errors of `POST /v1/events`.
pub(super) struct EventsErrors;

impl IntoResponses for EventsErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let invalid = ErrorStatus {
            status: 422,
            name: None,
            description: "The body is JSON, but `events` is missing or not a list of objects (`invalid_field`), \
                is empty or too long, or some events are invalid (`invalid_events`: `problems` lists each by \
                index; none of the batch was stored).",
            kinds: &["invalid_field", "non_finite_number", "empty_events", "too_many_events", "invalid_events"],
        };
        let unavailable = ErrorStatus {
            status: 503,
            name: None,
            description: "Not now: the event queue is full or too many requests are in flight (`overloaded`), \
                the commit ran past `server.request_timeout_secs` (`timeout`: the events may be stored; retrying \
                with the same ids is safe), the store cannot be written (`store_unavailable`), or the service is \
                still loading (`not_ready`, `encoder_stopped`).",
            kinds: &["overloaded", "timeout", "store_unavailable", "not_ready", "encoder_stopped"],
        };
        error_responses(HEAD.iter().chain(&[MALFORMED_JSON, BODY_TIMEOUT, invalid, INTERNAL, unavailable]))
    }
}

/// The errors of `POST /admin/reload` and `/admin/rollback`.
pub(super) struct AdminErrors;

impl IntoResponses for AdminErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let unauthorized = ErrorStatus {
            status: 401,
            name: None,
            description: "No `Authorization: Bearer` header, or the wrong token.",
            kinds: &["unauthorized"],
        };
        let disabled = ErrorStatus {
            status: 403,
            name: None,
            description: "The admin routes are off: `admin.token` is not set.",
            kinds: &["admin_disabled"],
        };
        let unknown = ErrorStatus {
            status: 404,
            name: None,
            description: "The bundle directory has no such version.",
            kinds: &["unknown_version"],
        };
        let nothing = ErrorStatus {
            status: 409,
            name: None,
            description: "No earlier bundle to roll back to.",
            kinds: &["nothing_to_roll_back"],
        };
        let refused = ErrorStatus {
            status: 422,
            name: None,
            description: "The bundle was refused (it does not load, was trained on another encoder, or fails the \
                warm-up check); the serving bundle is unchanged. Or the body is not a reload request.",
            kinds: &["bundle_refused", "invalid_field", "non_finite_number"],
        };
        let unready = ErrorStatus {
            status: 503,
            name: None,
            description: "The service is still loading (`not_ready`) or its encoder stopped (`encoder_stopped`).",
            kinds: &["not_ready", "encoder_stopped"],
        };
        error_responses(HEAD.iter().chain(&[
            MALFORMED_JSON,
            unauthorized,
            disabled,
            unknown,
            nothing,
            refused,
            INTERNAL,
            unready,
        ]))
    }
}

/// The errors of `GET` and `DELETE /v1/catalog/items/{id}`.
pub(super) struct ItemErrors;

impl IntoResponses for ItemErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        error_responses(HEAD.iter().chain(&[ITEM_NOT_FOUND, NO_CATALOG, INTERNAL, BUSY_OR_STORE]))
    }
}

/// The errors of `GET /health`.
pub(super) struct HealthErrors;

impl IntoResponses for HealthErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let stopped = ErrorStatus {
            status: 503,
            name: None,
            description: "The encoder has stopped: the process needs a restart.",
            kinds: &["encoder_stopped"],
        };
        error_responses(HEAD.iter().chain(&[stopped]))
    }
}

/// The errors of `GET /ready`.
pub(super) struct ReadyErrors;

impl IntoResponses for ReadyErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let unready = ErrorStatus {
            status: 503,
            name: None,
            description: "Not ready: the models are still loading (`not_ready`), or the encoder has stopped and \
                the process needs a restart (`encoder_stopped`).",
            kinds: &["not_ready", "encoder_stopped"],
        };
        error_responses(HEAD.iter().chain(&[unready]))
    }
}

/// The errors of the routes that only read the process's own state
/// (`/metrics`, `/openapi.json`).
pub(super) struct HeadErrors;

impl IntoResponses for HeadErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        error_responses(&HEAD)
    }
}

/// The answers, by status: a shared one by reference.
fn error_responses<'a>(errors: impl IntoIterator<Item = &'a ErrorStatus>) -> BTreeMap<String, RefOr<Response>> {
    let answer = |error: &ErrorStatus| match error.name {
        Some(name) => RefOr::Ref(Ref::from_response_name(name)),
        None => RefOr::T(error_response(error)),
    };
    errors.into_iter().map(|error| (error.status.to_string(), answer(error))).collect()
}

/// An [`ErrorBody`] answer whose `kind` is one of `error.kinds`; a 503 says
/// when to retry.
fn error_response(error: &ErrorStatus) -> Response {
    let kinds: Vec<String> = error.kinds.iter().map(|kind| format!("`{kind}`")).collect();
    let description = format!("{} Kind: {}.", error.description, kinds.join(", "));
    let kind = ObjectBuilder::new().schema_type(Type::String).enum_values(Some(error.kinds.iter().copied()));
    let schema = AllOfBuilder::new()
        .item(Ref::from_schema_name(ErrorBody::name()))
        .item(ObjectBuilder::new().property("kind", kind));
    let response = ResponseBuilder::new()
        .description(description)
        .content("application/json", ContentBuilder::new().schema(Some(schema)).build());
    let response = if error.status == 503 {
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

    /// The kinds the API's code answers with: the first snake_case string
    /// literal among the arguments of each `invalid(…)`, `price(…)`,
    /// `unavailable(…)` and `Self::new(…)` call.
    fn kinds_in_code() -> std::collections::BTreeSet<String> {
        let sources = [
            include_str!("error.rs"),
            include_str!("json.rs"),
            include_str!("middleware.rs"),
            include_str!("mod.rs"),
            include_str!("types.rs"),
            include_str!("events.rs"),
            include_str!("admin.rs"),
        ];
        let mut kinds = std::collections::BTreeSet::new();
        for source in sources {
            for call in
                ["invalid(", "price(", "unavailable(", "Self::new(", "invalid_batch(", "conflict(", "not_found_kind("]
            {
                for (at, _) in source.match_indices(call) {
                    let arguments = &source[at + call.len()..];
                    let (mut depth, mut literal, mut in_string) = (1, String::new(), false);
                    for c in arguments.chars() {
                        match (in_string, c) {
                            (false, '(') => depth += 1,
                            (false, ')') if depth == 1 => break,
                            (false, ')') => depth -= 1,
                            (false, '"') => (in_string, literal) = (true, String::new()),
                            (true, '"') => {
                                in_string = false;
                                let snake = literal.chars().all(|c| c.is_ascii_lowercase() || c == '_');
                                if depth == 1 && snake && !literal.is_empty() {
                                    kinds.insert(literal.clone());
                                    break;
                                }
                            }
                            (true, c) => literal.push(c),
                            _ => {}
                        }
                    }
                }
            }
        }
        kinds
    }

    /// [`KINDS`] lists every kind the code answers with, and no other.
    #[test]
    fn kinds_lists_what_the_code_answers_with() {
        let mut found = kinds_in_code();
        assert!(found.remove("client_closed"), "{found:?}");
        let listed: std::collections::BTreeSet<String> = KINDS.iter().map(|kind| kind.to_string()).collect();
        assert_eq!(found, listed);
    }

    /// Every kind is documented on some answer, and every documented kind is
    /// one of [`KINDS`].
    #[test]
    fn the_answers_cover_the_kinds() {
        let document = serde_json::to_value(document()).expect("the document serialises");
        let mut responses: Vec<&Value> =
            document["components"]["responses"].as_object().expect("components.responses").values().collect();
        for operations in document["paths"].as_object().expect("paths").values() {
            for operation in operations.as_object().expect("a path item").values() {
                responses.extend(operation["responses"].as_object().expect("responses").values());
            }
        }
        let mut documented = std::collections::BTreeSet::new();
        for response in responses {
            let Some(all_of) = response["content"]["application/json"]["schema"]["allOf"].as_array() else {
                continue;
            };
            for kind in all_of[1]["properties"]["kind"]["enum"].as_array().expect("an error answer's kinds") {
                let kind = kind.as_str().expect("a kind is a string");
                assert!(KINDS.contains(&kind), "{kind} is not in KINDS");
                documented.insert(kind);
            }
        }
        let undocumented: Vec<_> = KINDS.iter().filter(|kind| !documented.contains(*kind)).collect();
        assert!(undocumented.is_empty(), "no answer documents {undocumented:?}");
    }
}
