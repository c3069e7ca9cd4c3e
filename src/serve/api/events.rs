//! `POST /v1/events`: feedback from the storefront, validated per event
//! and stored durably before the answer (see `serve::event_writer`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use axum::extract::State;
use axum::{Extension, Json};

use super::error::{ApiError, ErrorKind, Problem};
use super::json::ApiJson;
use super::middleware::Abandon;
use super::openapi::EventsErrors;
use super::AppState;
use crate::serve::event_writer::SubmitError;
use crate::serve::variants::Variants;
use crate::store::event_log::{self, FeedbackEvent};

/// A batch of events; none is stored unless all are valid.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsRequest {
    /// At most `events.max_batch_events`. Kept as raw JSON text until each
    /// event is read on its own, so that every bad one is reported with its
    /// index rather than the first stopping the parse (and no JSON tree is
    /// built on the way).
    #[schema(value_type = Vec<EventIn>)]
    pub events: Vec<Box<serde_json::value::RawValue>>,
}

/// One event.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventIn {
    /// The storefront's id for this event, 1 to 256 bytes: a retry with
    /// the same id is stored once.
    pub event_id: String,
    /// 1 to 256 bytes.
    pub user_id: String,
    /// 1 to 256 bytes.
    pub item_id: String,
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// When it happened: an RFC 3339 string (`2026-11-29T10:15:00Z`) or Unix
    /// seconds; at most `events.max_future_hours` ahead of the server's clock.
    #[schema(value_type = Object)]
    pub timestamp: serde_json::Value,
    /// The `request_id` of the `/recommend` response that showed the item
    /// (at most 128 bytes): joins the event to its A/B variant.
    pub request_id: Option<String>,
    /// Items bought or added; a number > 0.
    pub quantity: Option<f64>,
    /// Unit price; a number >= 0.
    pub price: Option<f64>,
}

/// What happened to an item.
// One variant per `store::event_log::EventKind`, in its order: the order of
// the document's `enum` list and of serde's "expected one of" message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Impression,
    Click,
    AddToCart,
    Purchase,
}

impl From<EventKind> for event_log::EventKind {
    fn from(kind: EventKind) -> Self {
        match kind {
            EventKind::Impression => Self::Impression,
            EventKind::Click => Self::Click,
            EventKind::AddToCart => Self::AddToCart,
            EventKind::Purchase => Self::Purchase,
        }
    }
}

/// The answer once every event of the batch is durably stored.
#[derive(Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub(crate) struct EventsResponse {
    /// Events in the request.
    pub received: usize,
    /// Events stored by this request.
    pub stored: usize,
    /// Events already stored (same `event_id`), not stored again.
    pub duplicates: usize,
}

/// The rules every event meets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EventRules {
    pub max_batch_events: usize,
    pub max_future_ms: i64,
}

pub(super) const MAX_ID_BYTES: usize = 256;
const MAX_REQUEST_ID_BYTES: usize = 128;

impl EventsRequest {
    /// Every event, validated; or 422 listing each bad one.
    pub(crate) fn validate(
        self,
        rules: EventRules,
        now_ms: i64,
        variants: &Variants,
    ) -> Result<Vec<FeedbackEvent>, ApiError> {
        if self.events.is_empty() {
            return Err(ApiError::new(ErrorKind::EmptyEvents, "events: the list is empty"));
        }
        if self.events.len() > rules.max_batch_events {
            return Err(ApiError::new(
                ErrorKind::TooManyEvents,
                format!(
                    "events: {} given; the limit is {} (events.max_batch_events)",
                    self.events.len(),
                    rules.max_batch_events
                ),
            ));
        }
        let total = self.events.len();
        let mut events = Vec::with_capacity(total);
        let mut problems = Vec::new();
        for (index, raw) in self.events.iter().enumerate() {
            match event(raw.get(), rules, now_ms, variants) {
                Ok(event) => events.push(event),
                Err(error) => problems.push(Problem { index, error }),
            }
        }
        if !problems.is_empty() {
            let message = format!("{} of {total} events are invalid (see `problems`); none was stored", problems.len());
            return Err(ApiError::invalid_batch(ErrorKind::InvalidEvents, message, problems));
        }
        Ok(events)
    }
}

fn event(raw: &str, rules: EventRules, now_ms: i64, variants: &Variants) -> Result<FeedbackEvent, String> {
    if !raw.starts_with('{') {
        return Err("an event must be a JSON object".into());
    }
    let event: EventIn = serde_json::from_str(raw).map_err(|e| e.to_string())?;
    for (field, value) in [("event_id", &event.event_id), ("user_id", &event.user_id), ("item_id", &event.item_id)] {
        if value.trim().is_empty() || value.len() > MAX_ID_BYTES || value.contains(char::is_control) {
            return Err(format!("{field}: must be 1 to {MAX_ID_BYTES} bytes, not blank, without control characters"));
        }
    }
    if let Some(id) = &event.request_id {
        if id.is_empty() || id.len() > MAX_REQUEST_ID_BYTES || id.contains(char::is_control) {
            return Err(format!("request_id: must be 1 to {MAX_REQUEST_ID_BYTES} bytes, without control characters"));
        }
    }
    let timestamp_ms = timestamp_ms(&event.timestamp)?;
    if timestamp_ms > now_ms + rules.max_future_ms {
        return Err(format!(
            "timestamp: {} is more than {} h ahead of the server's clock (events.max_future_hours)",
            event.timestamp,
            rules.max_future_ms / 3_600_000
        ));
    }
    if let Some(quantity) = event.quantity {
        if !(quantity.is_finite() && quantity > 0.0) {
            return Err(format!("quantity: {quantity} is not a number > 0"));
        }
    }
    if let Some(price) = event.price {
        // Stored as f64, trained on as f32: a price past f32's range would
        // become infinite there.
        if !(price.is_finite() && (0.0..=f64::from(f32::MAX)).contains(&price)) {
            return Err(format!("price: {price} is not a number >= 0 within f32's range"));
        }
    }
    let variant = event.request_id.as_deref().and_then(|id| variants.of_request(id)).map(str::to_string);
    Ok(FeedbackEvent {
        event_id: event.event_id,
        user_id: event.user_id,
        item_id: event.item_id,
        kind: event.kind.into(),
        timestamp_ms,
        request_id: event.request_id,
        variant,
        quantity: event.quantity,
        price: event.price,
    })
}

/// Unix milliseconds from RFC 3339 text or Unix seconds.
fn timestamp_ms(value: &serde_json::Value) -> Result<i64, String> {
    // Years 1970 to 9999: what both engines and every clock agree on.
    const MAX_MS: f64 = 253_402_300_799_000.0;
    let ms = match value {
        serde_json::Value::Number(n) => n.as_f64().map(|s| s * 1000.0),
        serde_json::Value::String(text) => {
            chrono::DateTime::parse_from_rfc3339(text.trim()).ok().map(|t| t.timestamp_millis() as f64)
        }
        _ => None,
    };
    match ms {
        Some(ms) if ms.is_finite() && (0.0..=MAX_MS).contains(&ms) => Ok(ms.round() as i64),
        _ => Err(format!(
            "timestamp: {value} is neither an RFC 3339 time (2026-11-29T10:15:00Z) nor Unix seconds from 1970"
        )),
    }
}

/// `POST /v1/events`: stores a batch of feedback events durably before
/// answering; a retried event (same `event_id`) is stored once.
#[utoipa::path(
    post,
    path = "/v1/events",
    tag = "events",
    request_body = EventsRequest,
    responses((status = 200, description = "Every event is durably stored.", body = EventsResponse), EventsErrors)
)]
pub(super) async fn post_events(
    State(state): State<AppState>,
    Extension(abandon): Extension<Abandon>,
    ApiJson(request): ApiJson<EventsRequest>,
) -> Result<Json<EventsResponse>, ApiError> {
    let service = state.service()?;
    let events = request.validate(state.shared.event_rules, crate::store::now_ms(), service.variants())?;
    let writer = service.events().ok_or_else(|| ApiError::internal(&"this service keeps no store"))?;
    let received = events.len();
    let committed = writer.submit(events).map_err(|e| match e {
        full @ SubmitError::Full { .. } => ApiError::new(ErrorKind::Overloaded, full.to_string()),
        stopped @ SubmitError::Stopped => ApiError::store_unavailable(&stopped),
    })?;
    let ticket = state.ticket(&abandon);
    let committed = state
        .in_time(&ticket, async {
            committed.await.map_err(|_| ApiError::store_unavailable(&"the event writer stopped"))
        })
        .await?;
    let new = committed.map_err(|e| ApiError::store_unavailable(&e))?;
    // Counted in the metrics by the writer, request gone or not.
    let stored = new.iter().filter(|new| **new).count();
    Ok(Json(EventsResponse { received, stored, duplicates: received - stored }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_read_as_rfc3339_or_unix_seconds() {
        let t = timestamp_ms(&serde_json::json!("2011-11-01T00:00:00Z")).unwrap();
        assert_eq!(t, 1_320_105_600_000);
        assert_eq!(timestamp_ms(&serde_json::json!(1_320_105_600)).unwrap(), t);
        assert_eq!(timestamp_ms(&serde_json::json!("2011-11-01T01:00:00+01:00")).unwrap(), t);
        assert_eq!(timestamp_ms(&serde_json::json!(1_320_105_600.5)).unwrap(), t + 500);
        for bad in [serde_json::json!("yesterday"), serde_json::json!(-1), serde_json::json!(true)] {
            assert!(timestamp_ms(&bad).is_err(), "{bad}");
        }
    }
}
