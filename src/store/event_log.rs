//! Feedback events: what the storefront showed, and what its users clicked,
//! put in their carts and bought. They are the training log of the next
//! bundle (`shoprank train --store`) and, joined to the responses that
//! showed the items by `request_id`, the A/B comparison (`shoprank report`).

use super::StoreError;

/// What happened to an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    Impression,
    Click,
    AddToCart,
    Purchase,
}

impl EventKind {
    pub const ALL: [EventKind; 4] =
        [EventKind::Impression, EventKind::Click, EventKind::AddToCart, EventKind::Purchase];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EventKind::Impression => "impression",
            EventKind::Click => "click",
            EventKind::AddToCart => "add_to_cart",
            EventKind::Purchase => "purchase",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

/// A validated event, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackEvent {
    /// The storefront's id for the event: a retry with the same id is
    /// stored once (the first write wins).
    pub event_id: String,
    pub user_id: String,
    pub item_id: String,
    pub kind: EventKind,
    /// When it happened, Unix milliseconds.
    pub timestamp_ms: i64,
    /// The `/recommend` response that showed the item, if any.
    pub request_id: Option<String>,
    /// The A/B variant that `request_id` names.
    pub variant: Option<String>,
    pub quantity: Option<f64>,
    /// Unit price.
    pub price: Option<f64>,
}

/// How many events of one kind carry one variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariantCount {
    pub variant: String,
    pub kind: EventKind,
    pub events: u64,
}

/// The event half of the store.
pub trait EventStore: Send + Sync {
    /// Stores every event of every batch in one transaction (group commit:
    /// one durable commit for several requests). Returns, for each batch,
    /// which of its events were new; the others were stored before (or
    /// earlier in the same batch).
    fn append(&self, batches: &[&[FeedbackEvent]]) -> Result<Vec<Vec<bool>>, StoreError>;
    /// Calls `each` with every stored event of the given kinds, oldest
    /// first (same timestamp: arrival order).
    fn scan(&self, kinds: &[EventKind], each: &mut dyn FnMut(FeedbackEvent)) -> Result<(), StoreError>;
    /// Events per variant and kind, for those that name a variant.
    fn variant_counts(&self) -> Result<Vec<VariantCount>, StoreError>;
    /// Stored events in all.
    fn event_count(&self) -> Result<u64, StoreError>;
    /// Deletes every stored event of `user_id` (exactly as the events
    /// carried it), in one transaction, durable when this returns; returns
    /// how many there were (0 for a user with none: erasing twice is a
    /// no-op). `events` is the only table that holds a user id: the catalog
    /// and its change log hold items, and A/B variants are a hash of the id,
    /// never stored. A user's events are found by a scan (the table keeps no
    /// index but its primary key and `event_id`, so inserts stay cheap):
    /// erasure is rare, and a scan of millions of rows takes seconds.
    fn erase_user(&self, user_id: &str) -> Result<u64, StoreError>;
}
