//! The training log from the store: the catalog's items (their texts and
//! prices) and the stored purchase events, in the same shape, order and
//! skip rules as the generic CSV format (`generic`). So a retrain from the
//! store and a training run on `shoprank store export`'s CSV files of the
//! same store build the same [`Dataset`], and the same head.

use super::{Dataset, DenseId, Event};
use crate::store::event_log::EventKind;
use crate::store::{Store, StoreError};

/// What skipped rows name as their file: line numbers count catalog items,
/// and purchases in time order (as `store export` would write them, header
/// first).
const CATALOG: &str = "the store's catalog";
const PURCHASES: &str = "the store's purchases";

/// Reads every catalog item, then every purchase, oldest first.
pub(crate) fn load(store: &dyn Store) -> Result<Dataset, StoreError> {
    let mut data = Dataset::default();
    let mut item_prices: Vec<Option<f32>> = Vec::new();
    for (index, stored) in store.load_all("")?.into_iter().enumerate() {
        // Trimmed, and empty ones skipped, as the CSV reader does.
        let item = stored.item;
        let (id, text) = (item.id.trim(), item.text.trim());
        if id.is_empty() || text.is_empty() {
            let line = index + 2;
            data.report.skip(CATALOG, line, "items.csv: empty item_id or text", &format!("item {:?}", item.id));
            continue;
        }
        let index = data.items.intern(id).index();
        if index < data.item_texts.len() {
            continue;
        }
        data.item_texts.push(Some(text.to_string()));
        item_prices.push(item.price);
    }
    let mut line = 1;
    store.scan(&[EventKind::Purchase], &mut |event| {
        line += 1;
        data.report.rows += 1;
        let Some(item) = data.items.get(event.item_id.trim()) else {
            data.report.skip(PURCHASES, line, "item_id not in items.csv", &format!("item_id {:?}", event.item_id));
            return;
        };
        let quantity = event.quantity.map_or(1.0, |q| q as f32);
        if quantity.is_nan() || quantity <= 0.0 {
            data.report.skip(PURCHASES, line, "quantity <= 0", &format!("quantity {quantity}"));
            return;
        }
        let price = event.price.map(|p| p as f32).filter(|p| p.is_finite()).or(item_prices[item.index()]);
        data.events.push(Event {
            user: data.users.intern(event.user_id.trim()),
            item,
            time: event.timestamp_ms.div_euclid(1000),
            quantity,
            price,
            text: None,
        });
        data.report.kept += 1;
    })?;
    Ok(data.finish())
}
