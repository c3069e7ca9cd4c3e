//! The wire format of `/recommend` and its validation into a
//! [`RankQuery`](crate::serve::ranker::RankQuery), and of the health
//! routes (the catalog's is in `catalog_types`). Every rule here is listed
//! in the README's "Limits and errors". The types derive their OpenAPI
//! schemas (`openapi`): their doc comments are the document's descriptions.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorKind};
use super::json;
use super::ranked::RankedItem;
use crate::config::Limits;
use crate::serve::catalog::attributes::{
    AttributeFilter, FacetCount, MAX_ATTRIBUTE_BYTES, MAX_FACETS, MAX_FILTER_ATTRIBUTES, MAX_FILTER_VALUES,
};
use crate::serve::catalog::index::ItemFilter;
use crate::serve::ranker::{Candidate, HistoryItem, Objective, RankQuery};

/// `POST /recommend`: who the user is, and what to rank (the given
/// candidates, or else the catalog).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecommendRequest {
    #[serde(deserialize_with = "json::object")]
    pub user: UserIn,
    /// Absent, null or empty: retrieve from the catalog.
    #[serde(default, deserialize_with = "json::optional_objects")]
    pub candidates: Option<Vec<CandidateIn>>,
    /// How many items to return: a whole number >= 1 (default
    /// `limits.default_top_k`). Read as any JSON number, so that `-0` or
    /// `2.5` get `invalid_top_k` rather than `invalid_field`.
    #[schema(value_type = Option<u64>, minimum = 1)]
    pub top_k: Option<serde_json::Number>,
    /// Ids never to return (the cart, what was just bought).
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default, deserialize_with = "json::object")]
    pub filters: FiltersIn,
    /// Maximal-marginal-relevance weight λ in [0, 1]; 0 (the default) is off.
    #[schema(minimum = 0, maximum = 1)]
    pub diversity: Option<f64>,
    /// Attach each item's reasons.
    #[serde(default)]
    pub explain: bool,
    /// Attribute names (at most 16, each 1 to 256 bytes, no repeats) whose
    /// values to count over the relevant candidates: the response's
    /// `facets`. Absent or empty: no `facets` in the response.
    #[serde(default)]
    pub facets: Vec<String>,
    /// What the order maximises: `conversion` (the default), the purchase
    /// probability; or `revenue`, probability × price (each item's
    /// `expected_revenue`). `score` is the probability either way.
    #[serde(default)]
    pub objective: ObjectiveIn,
    /// Milliseconds the request may wait for the encoder to embed its texts
    /// (the user text, the query, new history titles and candidates): a
    /// whole number from 1 to `server.request_timeout_secs` × 1000 (default
    /// `limits.default_deadline_ms`). Past it the request waits no longer,
    /// its queued texts are withdrawn, and it is answered from what needs no
    /// encoder, marked `degraded` (see the README's "Deadlines").
    #[schema(value_type = Option<u64>, minimum = 1)]
    pub deadline_ms: Option<serde_json::Number>,
}

/// Why an answer is degraded: ranked without embedding the request's texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DegradedReason {
    /// The texts were not embedded within `deadline_ms`, or the encoder's
    /// backlog was longer than the time left before it.
    Deadline,
    /// The encoder queue was full (`batching.max_queued_texts`).
    Overloaded,
}

impl DegradedReason {
    /// The wire name, also the `reason` label of
    /// `shoprank_degraded_answers_total`.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            DegradedReason::Deadline => "deadline",
            DegradedReason::Overloaded => "overloaded",
        }
    }
}

/// `conversion` or `revenue`.
#[derive(Debug, Default, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ObjectiveIn {
    /// Order by purchase probability.
    #[default]
    Conversion,
    /// Order by probability × price.
    Revenue,
}

impl From<ObjectiveIn> for Objective {
    fn from(objective: ObjectiveIn) -> Self {
        match objective {
            ObjectiveIn::Conversion => Objective::Conversion,
            ObjectiveIn::Revenue => Objective::Revenue,
        }
    }
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FiltersIn {
    /// Only available items (default true).
    pub available: Option<bool>,
    #[schema(minimum = 0)]
    pub min_price: Option<f64>,
    #[schema(minimum = 0)]
    pub max_price: Option<f64>,
    /// Exact matches on attributes: name → a value, or a non-empty list of
    /// values (any of them). An item passes when every named attribute has
    /// one of its values; a list-valued attribute matches if any element
    /// does; numbers and bools match their JSON text (`"42"`, `"true"`).
    /// At most 16 names, 64 values each, names and values at most 256 bytes.
    #[schema(value_type = Option<HashMap<String, AttributeValuesIn>>)]
    pub attributes: Option<serde_json::Value>,
}

/// The values a filtered attribute may have: one, or any of a list.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // Only the schema: `filters.attributes` is checked by hand, to name the field.
pub(crate) enum AttributeValuesIn {
    /// The one value.
    One(String),
    /// Any of these values: 1 to 64 of them.
    Any(Vec<String>),
}

/// At least one of `text`, `query` and `history` must say something.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserIn {
    /// The storefront's id for the user; echoed in logs only.
    pub id: Option<String>,
    /// Free-text profile ("likes gardening, buys for a café").
    pub text: Option<String>,
    /// The current search query.
    pub query: Option<String>,
    /// Recently bought or viewed products, most recent first: titles, or
    /// `{"id", "text"}` objects (ids enable co-purchase features).
    #[serde(default)]
    pub history: Vec<HistoryIn>,
}

/// A history entry: a title, or an item object.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum HistoryIn {
    /// The item's title.
    Title(String),
    /// The item, with its id if known.
    Item(#[serde(deserialize_with = "json::object")] HistoryItemIn),
}

/// A history item; `title` is accepted for `text`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoryItemIn {
    /// The item's id, if the storefront has one (enables co-purchase features).
    pub id: Option<String>,
    /// The item's title or description.
    #[serde(alias = "title")]
    pub text: String,
}

/// A candidate product. Fields other than these are accepted and ignored, so
/// a storefront can send its product objects as they are; `title` is
/// accepted for `text`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CandidateIn {
    /// Unique within the request.
    pub id: String,
    /// The product's title or description.
    #[serde(alias = "title")]
    pub text: String,
    #[schema(minimum = 0)]
    pub price: Option<f64>,
    /// Default true; `filters.available` drops unavailable candidates.
    pub available: Option<bool>,
    /// The product's attributes, for `filters.attributes` and `facets`
    /// (read like a catalog item's).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub attributes: serde_json::Value,
}

/// The ranked items, best first, and what served them.
#[derive(Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub(crate) struct RecommendResponse {
    pub items: Vec<RankedItem>,
    pub model: ModelInfo,
    /// The A/B variant that served this user (`default` without variants).
    pub variant: String,
    /// This response's id, `<variant>.<16 hex digits>`: send it back with
    /// the events of the items it showed (`POST /v1/events`).
    pub request_id: String,
    /// Time spent on the request, in milliseconds.
    pub took_ms: f64,
    /// Only when the request asks for `facets`: for each name asked for, the
    /// values of that attribute over the relevant candidates (with a search
    /// query, those not in the last, unrelated relevance band; without one,
    /// every candidate scored), after every filter and before `top_k`; most
    /// items first, then by value; at most 20 values a facet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facets: Option<BTreeMap<String, Vec<FacetValue>>>,
    /// Only when typo correction changed the search query: the query the
    /// items were ranked for (each word the catalog does not know replaced
    /// by its closest catalog term), for a "showing results for" line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrected_query: Option<String>,
    /// Only when true (absent otherwise): the request's texts could not be
    /// embedded in time, and the items were ranked from what needs no
    /// encoder: cached embeddings and the catalog's stored vectors, the
    /// history's co-purchase and recent-purchase links, popularity and the
    /// query's words. Scores and reasons are the head's, as usual; the
    /// request's own candidates without a known vector are left out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub degraded: bool,
    /// Why the answer is degraded; present only with `degraded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degraded_reason: Option<DegradedReason>,
}

/// A facet's value and how many relevant candidates have it.
#[derive(Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub(crate) struct FacetValue {
    /// The attribute's value (numbers and bools as their JSON text).
    pub value: String,
    #[schema(minimum = 1)]
    pub count: u64,
}

impl From<FacetCount> for FacetValue {
    fn from(FacetCount { value, count }: FacetCount) -> Self {
        Self { value, count: count as u64 }
    }
}

/// What served a response.
#[derive(Debug, Serialize, Deserialize, PartialEq, Clone, ToSchema)]
pub(crate) struct ModelInfo {
    /// The text encoder's name.
    pub encoder: String,
    /// The encoder's arithmetic (`f32`, `int8`).
    pub precision: String,
    /// The version of the bundle (the scoring head) that scored the items.
    pub head: String,
}

fn non_blank(text: Option<String>) -> Option<String> {
    text.filter(|t| !t.trim().is_empty())
}

impl RecommendRequest {
    /// How long the request may wait for the encoder: `deadline_ms`, else
    /// `limits.default_deadline_ms`; at most `request_timeout`.
    pub fn deadline(&self, limits: &Limits, request_timeout: Duration) -> Result<Duration, ApiError> {
        let Some(ms) = &self.deadline_ms else { return Ok(Duration::from_millis(limits.default_deadline_ms)) };
        let most = request_timeout.as_millis().min(u64::MAX as u128) as u64;
        match ms.as_u64().or_else(|| ms.as_f64().filter(|f| f.fract() == 0.0 && *f >= 1.0).map(|f| f as u64)) {
            Some(ms) if (1..=most).contains(&ms) => Ok(Duration::from_millis(ms)),
            _ => Err(ApiError::new(
                ErrorKind::InvalidDeadline,
                format!("deadline_ms must be a whole number from 1 to {most} (server.request_timeout_secs); got {ms}"),
            )),
        }
    }

    /// Checks every rule and limit; the error names the field.
    pub fn validate(self, limits: &Limits) -> Result<RankQuery, ApiError> {
        let query = non_blank(self.user.query);
        let profile = non_blank(self.user.text);
        if self.user.history.len() > limits.max_history {
            return Err(ApiError::new(
                ErrorKind::TooManyHistoryItems,
                format!("user.history has {} items; the limit is {}", self.user.history.len(), limits.max_history),
            ));
        }
        let history: Vec<HistoryItem> = self
            .user
            .history
            .into_iter()
            .map(|h| match h {
                HistoryIn::Title(text) => HistoryItem { id: None, text },
                HistoryIn::Item(HistoryItemIn { id, text }) => HistoryItem { id, text },
            })
            .filter(|h| !h.text.trim().is_empty())
            .collect();
        if query.is_none() && profile.is_none() && history.is_empty() {
            return Err(ApiError::new(
                ErrorKind::MissingUserSignal,
                "user needs at least one non-empty field of: text, query, history",
            ));
        }
        let given = self.candidates.unwrap_or_default();
        if given.len() > limits.max_candidates {
            return Err(ApiError::new(
                ErrorKind::TooManyCandidates,
                format!("candidates: {} given; the limit is {}", given.len(), limits.max_candidates),
            ));
        }
        let top_k = match self.top_k {
            None => limits.default_top_k,
            // `1.0` and `1e2` are whole numbers too, written as JSON floats.
            Some(k) => {
                match k.as_u64().or_else(|| k.as_f64().filter(|f| f.fract() == 0.0 && *f >= 1.0).map(|f| f as u64)) {
                    Some(k) if k >= 1 => usize::try_from(k).unwrap_or(usize::MAX),
                    _ => {
                        return Err(ApiError::new(
                            ErrorKind::InvalidTopK,
                            format!("top_k must be a whole number >= 1; got {k}"),
                        ))
                    }
                }
            }
        };
        if self.explain && top_k > MAX_EXPLAINED {
            return Err(ApiError::new(
                ErrorKind::TooManyExplained,
                format!("explain: at most {MAX_EXPLAINED} items are explained; top_k is {top_k}"),
            ));
        }
        let filter = filter(self.filters, self.exclude, limits)?;
        let facets = facets(self.facets)?;
        let diversity = match self.diversity {
            Some(d) if !(0.0..=1.0).contains(&d) => {
                return Err(ApiError::new(ErrorKind::InvalidDiversity, format!("diversity must be in [0, 1]; got {d}")))
            }
            d => d.unwrap_or(0.0) as f32,
        };
        let mut seen = HashSet::new();
        let mut candidates = Vec::with_capacity(given.len());
        for (i, c) in given.into_iter().enumerate() {
            if c.id.trim().is_empty() {
                return Err(ApiError::new(ErrorKind::InvalidCandidate, format!("candidates[{i}].id is empty")));
            }
            if c.text.trim().is_empty() {
                return Err(ApiError::new(ErrorKind::InvalidCandidate, format!("candidates[{i}].text is empty")));
            }
            if !seen.insert(c.id.clone()) {
                return Err(ApiError::new(
                    ErrorKind::DuplicateCandidateId,
                    format!("candidates[{i}].id `{}` appears more than once", c.id),
                ));
            }
            let price = price(ErrorKind::InvalidCandidate, &format!("candidates[{i}].price"), c.price)?;
            if !(c.attributes.is_object() || c.attributes.is_null()) {
                return Err(ApiError::new(
                    ErrorKind::InvalidCandidate,
                    format!("candidates[{i}].attributes must be a JSON object"),
                ));
            }
            candidates.push(Candidate {
                id: c.id,
                text: c.text,
                price,
                available: c.available.unwrap_or(true),
                attributes: c.attributes,
            });
        }
        let candidates = (!candidates.is_empty()).then_some(candidates);
        Ok(RankQuery {
            search: query,
            profile,
            history,
            candidates,
            top_k,
            filter,
            diversity,
            explain: self.explain,
            facets,
            objective: self.objective.into(),
        })
    }
}

/// A price as the API accepts it: absent, or finite, >= 0 and within f32;
/// else a 422 of `kind` naming `field`. Candidates, catalog items and the
/// price filters share this rule.
pub(super) fn price(kind: ErrorKind, field: &str, value: Option<f64>) -> Result<Option<f32>, ApiError> {
    match value {
        Some(p) if !p.is_finite() || p < 0.0 || p > f32::MAX as f64 => {
            Err(ApiError::new(kind, format!("{field} must be a finite number >= 0")))
        }
        p => Ok(p.map(|p| p as f32)),
    }
}

/// The request's filters and exclusions as one filter.
fn filter(filters: FiltersIn, exclude: Vec<String>, limits: &Limits) -> Result<ItemFilter, ApiError> {
    if exclude.len() > limits.max_candidates {
        return Err(ApiError::new(
            ErrorKind::TooManyExcluded,
            format!("exclude: {} ids given; the limit is {}", exclude.len(), limits.max_candidates),
        ));
    }
    let min_price = price(ErrorKind::InvalidFilters, "filters.min_price", filters.min_price)?;
    let max_price = price(ErrorKind::InvalidFilters, "filters.max_price", filters.max_price)?;
    if let (Some(min), Some(max)) = (min_price, max_price) {
        if min > max {
            return Err(ApiError::new(
                ErrorKind::InvalidFilters,
                format!("filters.min_price ({min}) is above filters.max_price ({max})"),
            ));
        }
    }
    Ok(ItemFilter {
        available_only: filters.available.unwrap_or(true),
        min_price,
        max_price,
        exclude: exclude.into_iter().collect(),
        attributes: attribute_filter(filters.attributes)?,
    })
}

/// `filters.attributes` checked (see `FiltersIn::attributes`); the error
/// names the field.
fn attribute_filter(attributes: Option<serde_json::Value>) -> Result<AttributeFilter, ApiError> {
    use serde_json::Value;
    let bad = |message: String| ApiError::new(ErrorKind::InvalidFilters, message);
    let attributes = match attributes {
        None | Some(Value::Null) => return Ok(AttributeFilter::default()),
        Some(Value::Object(attributes)) => attributes,
        Some(_) => return Err(bad("filters.attributes must be an object of attribute names to values".into())),
    };
    if attributes.len() > MAX_FILTER_ATTRIBUTES {
        return Err(bad(format!(
            "filters.attributes names {} attributes; the limit is {MAX_FILTER_ATTRIBUTES}",
            attributes.len()
        )));
    }
    let mut conditions = Vec::with_capacity(attributes.len());
    for (name, value) in attributes {
        if name.is_empty() || name.len() > MAX_ATTRIBUTE_BYTES {
            return Err(bad(format!(
                "filters.attributes: attribute names must be 1 to {MAX_ATTRIBUTE_BYTES} bytes; got `{}`",
                name.chars().take(32).collect::<String>()
            )));
        }
        let field = format!("filters.attributes.{name}");
        let values: Vec<(String, String)> = match value {
            Value::String(value) => vec![(field.clone(), value)],
            Value::Array(values) if !values.is_empty() && values.len() <= MAX_FILTER_VALUES => values
                .into_iter()
                .enumerate()
                .map(|(i, value)| match value {
                    Value::String(value) => Ok((format!("{field}[{i}]"), value)),
                    _ => Err(bad(format!("{field}[{i}] must be a string"))),
                })
                .collect::<Result<_, _>>()?,
            Value::Array(values) if !values.is_empty() => {
                return Err(bad(format!("{field} lists {} values; the limit is {MAX_FILTER_VALUES}", values.len())))
            }
            _ => return Err(bad(format!("{field} must be a string or a non-empty list of strings"))),
        };
        if let Some((field, _)) = values.iter().find(|(_, value)| value.len() > MAX_ATTRIBUTE_BYTES) {
            return Err(bad(format!("{field} is over {MAX_ATTRIBUTE_BYTES} bytes")));
        }
        conditions.push((name, values.into_iter().map(|(_, value)| value).collect()));
    }
    Ok(AttributeFilter::new(conditions))
}

/// `facets` checked: at most `MAX_FACETS` names, each 1 to
/// `MAX_ATTRIBUTE_BYTES` bytes, none repeated.
fn facets(names: Vec<String>) -> Result<Vec<String>, ApiError> {
    let bad = |message: String| ApiError::new(ErrorKind::InvalidFacets, message);
    if names.len() > MAX_FACETS {
        return Err(bad(format!("facets: {} names given; the limit is {MAX_FACETS}", names.len())));
    }
    let mut seen = HashSet::new();
    for (i, name) in names.iter().enumerate() {
        if name.is_empty() || name.len() > MAX_ATTRIBUTE_BYTES {
            return Err(bad(format!("facets[{i}] must be 1 to {MAX_ATTRIBUTE_BYTES} bytes")));
        }
        if !seen.insert(name) {
            return Err(bad(format!("facets[{i}] `{name}` appears more than once")));
        }
    }
    Ok(names)
}

/// The answer to `GET /health`.
#[derive(Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub(crate) struct HealthResponse {
    /// Always `ok`.
    #[schema(pattern = "^ok$")]
    pub status: String,
}

/// The answer to `GET /ready`: what serves requests now.
#[derive(Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub(crate) struct ReadyResponse {
    /// Always `ready`.
    #[schema(pattern = "^ready$")]
    pub status: String,
    #[serde(flatten)]
    pub model: ModelInfo,
    /// What the bundle's scores mean as probabilities.
    pub calibration: CalibrationInfo,
}

/// Whether `score` is a purchase probability at the shop's real rate.
#[derive(Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub(crate) struct CalibrationInfo {
    /// False for a bundle trained before calibration existed: its scores
    /// rank items, but are odds under the training mix (one purchase per
    /// eight non-purchases), far above real purchase rates.
    pub calibrated: bool,
    /// The event a calibrated score is the probability of; else why the
    /// scores are not probabilities and how to get calibrated ones.
    pub event: String,
    /// Where the map was fitted (`YYYY-MM-DD..YYYY-MM-DD`, end exclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// The purchase rate over the pairs it was fitted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_rate: Option<f64>,
}

/// Most items one request may have explained (each costs 64 head rows).
pub(crate) const MAX_EXPLAINED: usize = 100;
