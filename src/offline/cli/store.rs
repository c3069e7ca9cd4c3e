//! `shoprank store import|export` and `shoprank report`: moving logs into
//! and out of the store, and the A/B comparison over its events.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use super::LogFiles;
use crate::config::Settings;
use crate::offline::data::{Dataset, DenseId, ItemIdx};
use crate::store::catalog::CatalogItem;
use crate::store::event_log::{EventKind, FeedbackEvent};
use crate::store::{self, Store};

/// Which store a command works on: `--store URL`, else store.url.
#[derive(Args)]
pub(crate) struct StoreTarget {
    /// A directory (embedded store) or a postgres:// URL; default store.url
    /// from the config (SHOPRANK__STORE__URL).
    #[arg(long)]
    store: Option<String>,
}

impl StoreTarget {
    pub(crate) fn open(&self, settings: &Settings) -> Result<std::sync::Arc<dyn Store>> {
        let mut target = settings.store.clone();
        if let Some(url) = &self.store {
            target.url = url.clone();
        }
        Ok(store::open(&target.location(), store::PoolLimits::from_settings(&target))?)
    }
}

#[derive(Subcommand)]
pub enum StoreCommand {
    /// Load a purchase log into the store: its items into the catalog, its
    /// purchases as events. An event's id is a hash of its row (user, item,
    /// time, quantity, price) and the row's occurrence number, so importing
    /// the same log again, or a longer export of it, stores no imported row
    /// twice (purchases posted through /v1/events carry the storefront's ids
    /// and are not matched against imported rows).
    Import(ImportArgs),
    /// Write the store's catalog and purchases as the generic CSV format
    /// (items.csv, events.csv), which `shoprank train --events --items` reads.
    Export(ExportArgs),
}

#[derive(Args)]
pub struct ImportArgs {
    #[command(flatten)]
    files: LogFiles,
    #[command(flatten)]
    target: StoreTarget,
    /// Events per transaction.
    #[arg(long, default_value_t = 5_000)]
    batch: usize,
}

#[derive(Args)]
pub struct ExportArgs {
    #[command(flatten)]
    target: StoreTarget,
    /// Directory to write items.csv and events.csv into.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
pub struct ReportArgs {
    #[command(flatten)]
    target: StoreTarget,
}

pub(crate) fn run(settings: &Settings, command: &StoreCommand) -> Result<()> {
    match command {
        StoreCommand::Import(args) => import(settings, args),
        StoreCommand::Export(args) => export(settings, args),
    }
}

fn import(settings: &Settings, args: &ImportArgs) -> Result<()> {
    let Some(source) = args.files.source() else {
        bail!("give the log with --data FILE, or --events FILE --items FILE");
    };
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let started = std::time::Instant::now();
    let data = source.load().with_context(|| format!("loading {source}"))?;
    eprintln!("loaded {source}: {}", data.report.summary());
    let store = args.target.open(settings)?;
    let items = catalog_items(&data);
    for chunk in items.chunks(1_000) {
        store.upsert(chunk)?;
    }
    let mut stored = 0;
    let mut occurrences: HashMap<u64, usize> = HashMap::new();
    let events: Vec<FeedbackEvent> = data
        .events
        .iter()
        .map(|e| {
            let (user, item) = (data.users.name(e.user), data.items.name(e.item));
            // A missing price hashes as `NaN`, as it did when events kept it
            // so: ids of logs imported before stay the same.
            let price = e.price.unwrap_or(f32::NAN);
            let row = format!("{user}\u{1f}{item}\u{1f}{}\u{1f}{}\u{1f}{price}", e.time, e.quantity);
            let hash = xxhash_rust::xxh3::xxh3_64(row.as_bytes());
            let n = occurrences.entry(hash).or_default();
            *n += 1;
            (e, format!("import:{hash:016x}:{n}"))
        })
        .map(|(e, event_id)| FeedbackEvent {
            event_id,
            user_id: data.users.name(e.user).to_string(),
            item_id: data.items.name(e.item).to_string(),
            kind: EventKind::Purchase,
            timestamp_ms: e.time * 1000,
            request_id: None,
            variant: None,
            quantity: Some(f64::from(e.quantity)),
            price: e.price.map(f64::from),
        })
        .collect();
    for chunk in events.chunks(args.batch) {
        stored += store.append(&[chunk])?[0].iter().filter(|new| **new).count();
    }
    println!(
        "imported {} catalog items and {} purchases ({stored} new) into {} in {:.1}s",
        items.len(),
        events.len(),
        store.describe(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One catalog item per item of the log: its fixed text where the log has
/// an item table, else its most frequent description (ties: the
/// lexicographically smallest, as EVAL_PROTOCOL picks a text); the price of
/// its latest event, else the item table's.
fn catalog_items(data: &Dataset) -> Vec<CatalogItem> {
    let mut texts: HashMap<ItemIdx, HashMap<&str, usize>> = HashMap::new();
    let mut prices: HashMap<ItemIdx, f32> = HashMap::new();
    for event in &data.events {
        if let Some(text) = event.text {
            *texts.entry(event.item).or_default().entry(data.descriptions.name(text)).or_default() += 1;
        }
        if let Some(price) = event.price {
            prices.insert(event.item, price);
        }
    }
    (0..data.items.len())
        .filter_map(|index| {
            let item = ItemIdx::from_index(index);
            let fixed = data.item_texts.get(index).cloned().flatten();
            let text = fixed.or_else(|| {
                texts
                    .get(&item)?
                    .iter()
                    .max_by(|(ta, ca), (tb, cb)| ca.cmp(cb).then_with(|| tb.cmp(ta)))
                    .map(|(t, _)| t.to_string())
            })?;
            Some(CatalogItem {
                id: data.items.name(item).to_string(),
                text,
                price: prices.get(&item).copied(),
                available: true,
                attributes: serde_json::Value::Null,
            })
        })
        .collect()
}

fn export(settings: &Settings, args: &ExportArgs) -> Result<()> {
    let store = args.target.open(settings)?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let items_path = args.out.join("items.csv");
    let mut items = csv::Writer::from_path(&items_path).with_context(|| format!("writing {}", items_path.display()))?;
    items.write_record(["item_id", "text", "price"])?;
    let catalog = store.load_all("")?;
    for stored in &catalog {
        let item = &stored.item;
        items.write_record([
            item.id.as_str(),
            item.text.as_str(),
            &item.price.map(|p| p.to_string()).unwrap_or_default(),
        ])?;
    }
    items.flush()?;
    let events_path = args.out.join("events.csv");
    let mut events =
        csv::Writer::from_path(&events_path).with_context(|| format!("writing {}", events_path.display()))?;
    events.write_record(["user_id", "item_id", "timestamp", "quantity", "price"])?;
    let mut written = 0;
    let mut failed = None;
    store.scan(&[EventKind::Purchase], &mut |e| {
        if failed.is_some() {
            return;
        }
        // As f32 text: what training reads back is exactly what the store's
        // own reader (`from_store`) makes of the value.
        let number = |v: Option<f64>| v.map(|v| (v as f32).to_string()).unwrap_or_default();
        let record =
            [e.user_id, e.item_id, e.timestamp_ms.div_euclid(1000).to_string(), number(e.quantity), number(e.price)];
        match events.write_record(&record) {
            Ok(()) => written += 1,
            Err(error) => failed = Some(error),
        }
    })?;
    if let Some(error) = failed {
        return Err(error).with_context(|| format!("writing {}", events_path.display()));
    }
    events.flush()?;
    println!(
        "wrote {} items to {} and {written} purchases to {}",
        catalog.len(),
        items_path.display(),
        events_path.display()
    );
    Ok(())
}

/// `shoprank report`: per A/B variant, the events whose request_id named it,
/// with click-through and purchase rates per impression.
pub(crate) fn report(settings: &Settings, args: &ReportArgs) -> Result<()> {
    let store = args.target.open(settings)?;
    let counts = store.variant_counts()?;
    let mut variants: Vec<&str> = counts.iter().map(|c| c.variant.as_str()).collect();
    variants.dedup();
    println!("A/B report from {} ({} events stored)", store.describe(), store.event_count()?);
    println!(
        "{:<16} {:>12} {:>10} {:>12} {:>10} {:>22} {:>22}",
        "variant", "impressions", "clicks", "add_to_cart", "purchases", "CTR (95% CI)", "purchase rate (95% CI)"
    );
    for variant in variants {
        let count = |kind| counts.iter().find(|c| c.variant == variant && c.kind == kind).map_or(0, |c| c.events);
        let shown = count(EventKind::Impression);
        let clicks = count(EventKind::Click);
        let purchases = count(EventKind::Purchase);
        println!(
            "{variant:<16} {shown:>12} {clicks:>10} {:>12} {purchases:>10} {:>22} {:>22}",
            count(EventKind::AddToCart),
            rate(clicks, shown),
            rate(purchases, shown)
        );
    }
    Ok(())
}

/// `k / n` with its Wilson 95% interval, or `-` without impressions.
fn rate(k: u64, n: u64) -> String {
    if n == 0 {
        return "-".into();
    }
    let (low, high) = wilson(k.min(n), n);
    format!("{:.4} [{:.4}, {:.4}]", k as f64 / n as f64, low, high)
}

/// The Wilson score interval (z = 1.96) of a proportion k / n.
fn wilson(k: u64, n: u64) -> (f64, f64) {
    let (k, n, z) = (k as f64, n as f64, 1.96_f64);
    let p = k / n;
    let centre = p + z * z / (2.0 * n);
    let spread = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt();
    let scale = 1.0 + z * z / n;
    ((centre - spread) / scale, (centre + spread) / scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wilson_interval_holds_the_rate_and_stays_in_bounds() {
        let (low, high) = wilson(10, 100);
        assert!(low < 0.1 && 0.1 < high, "{low} {high}");
        assert!((low - 0.0552).abs() < 1e-3 && (high - 0.1744).abs() < 1e-3, "{low} {high}");
        let (low, high) = wilson(0, 10);
        assert!(low.abs() < 1e-12 && high < 0.35, "{low} {high}");
    }
}
