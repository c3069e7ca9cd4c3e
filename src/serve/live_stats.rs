//! The serving side of live statistics (`model::live_stats`): every
//! `bundle.live_stats_secs` the service reads the purchases stored after its
//! bundle's history ended and serves that bundle with its statistics brought
//! forward. Each refresh starts again from the bundle's own statistics, so
//! an erased shopper's purchases (`DELETE /v1/users/{id}`) leave the counts
//! at the next refresh, and a reload or rollback starts from its bundle's.
//!
//! The clock is the newest stored purchase, not the wall clock: with no
//! purchase after the bundle's history, the bundle is served exactly as
//! trained (a demo bundle from 2011 does not see its counts fade for want
//! of events), and every replica of one PostgreSQL store computes the same
//! statistics from the same purchases.

use crate::model::live_stats::{self, Purchase};
use crate::model::stats::HistoryStats;
use crate::serve::catalog::Catalog;
use crate::store::event_log::EventKind;
use crate::store::{Store, StoreError};

/// The base brought forward with the stored purchases, and how many
/// purchases after the base's end it counted.
pub(crate) fn bring_forward(
    store: &dyn Store,
    catalog: Option<&Catalog>,
    base: &HistoryStats,
) -> Result<(HistoryStats, usize), StoreError> {
    let Some(end) = live_stats::base_end(base) else { return Ok((base.clone(), 0)) };
    let mut purchases = Vec::new();
    store.scan(&[EventKind::Purchase], &mut |event| {
        let time = event.timestamp_ms.div_euclid(1000);
        if time >= end {
            purchases.push(Purchase {
                user: event.user_id,
                item: event.item_id,
                time,
                price: event.price.map(|p| p as f32).filter(|p| p.is_finite()),
                quantity: event.quantity.map(|q| q as f32).filter(|q| q.is_finite()),
            });
        }
    })?;
    // One second past the newest purchase: windows end where the events do.
    let now = purchases.iter().map(|p| p.time + 1).max().unwrap_or(end);
    let view = catalog.map(|catalog| catalog.index().read());
    let text = |id: &str| view.as_ref().and_then(|view| view.get(id)).map(|(item, _)| item.text.clone());
    let counted = purchases.len();
    Ok((live_stats::merge(base, &purchases, now, text), counted))
}
