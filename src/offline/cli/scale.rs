//! `shoprank scale-data`: a larger log derived from a real one (see
//! `offline::scale_data`); `shoprank scale-catalog`: a large catalog with
//! stored embeddings written straight into the store, for measuring the
//! serving catalog's memory, restart and retrieval at a million items.

use std::io::BufRead;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use rand::{Rng, SeedableRng};

use super::store::StoreTarget;
use super::DataArgs;
use crate::model::encoder::Encoder;
use crate::offline::scale_data::{self, ScaleOptions};
use crate::store::catalog::{CatalogItem, PendingItem};

#[derive(Args)]
pub struct ScaleDataArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Catalog size wanted (about: a whole number of replicas of the log's).
    #[arg(long)]
    catalog_items: usize,
    /// Events per item wanted (about).
    #[arg(long, default_value_t = 20.0)]
    events_per_item: f64,
    /// Share of purchases that go to the same product in another replica.
    #[arg(long, default_value_t = 0.05)]
    cross_share: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Directory to write events.csv and items.csv into.
    #[arg(long)]
    out: PathBuf,
}

/// `shoprank scale-data`: a larger log derived from a real one.
pub(crate) fn scale_data(settings: &crate::config::Settings, args: &ScaleDataArgs) -> Result<()> {
    if !(0.0..=1.0).contains(&args.cross_share)
        || args.events_per_item.is_nan()
        || args.events_per_item <= 0.0
        || args.catalog_items == 0
    {
        bail!("--catalog-items and --events-per-item must be positive and --cross-share a share in [0, 1]");
    }
    let data = args.data.load(settings)?;
    let options = ScaleOptions {
        items: args.catalog_items,
        events_per_item: args.events_per_item,
        cross_share: args.cross_share,
        seed: args.seed,
    };
    let report = scale_data::generate(&data, &options, &args.out)?;
    println!(
        "wrote {} items ({} replicas), {} customers, {} events ({} across replicas) to {}",
        report.items,
        report.replicas,
        report.customers,
        report.events,
        report.cross_replica_events,
        args.out.display()
    );
    Ok(())
}

#[derive(Args)]
pub struct ScaleCatalogArgs {
    #[command(flatten)]
    store: StoreTarget,
    /// Items to write (ids `sku-0` … `sku-{N-1}`; existing ones are replaced).
    #[arg(long)]
    items: usize,
    /// JSONL lines with a "text" field (e.g. benches/fixtures/titles.jsonl):
    /// the titles items are named after and whose embeddings they mix.
    #[arg(long)]
    titles: PathBuf,
    /// Titles embedded with the encoder (the first ones of the file).
    #[arg(long, default_value_t = 2000)]
    base_titles: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Items per store transaction.
const WRITE_CHUNK: usize = 10_000;

/// `shoprank scale-catalog`: `--items` catalog items with stored
/// embeddings, written straight into the store. Embedding a million titles
/// would take the encoder about 25 minutes on 2 cores, so only the base
/// titles are embedded; item `i` is named after title `a` (`"{a} #{i}"`)
/// and its vector is `0.7·e(a) + 0.3·e(b) + noise` (b another random
/// title, noise uniform in ±0.02 per dimension), normalised: real
/// embeddings' geometry, near-duplicates included, for measuring the
/// index (memory, restart, recall, latency), not ranking quality.
/// Deterministic for a seed. A restarted service loads them without
/// re-embedding (they are tagged with the configured encoder).
pub(crate) fn scale_catalog(settings: &crate::config::Settings, args: &ScaleCatalogArgs) -> Result<()> {
    if args.items == 0 || args.base_titles < 2 {
        bail!("--items must be positive and --base-titles at least 2");
    }
    let file = std::fs::File::open(&args.titles).with_context(|| format!("opening {}", args.titles.display()))?;
    let mut titles = Vec::new();
    for line in std::io::BufReader::new(file).lines().take(args.base_titles) {
        let value: serde_json::Value = serde_json::from_str(&line?).context("a titles line is not JSON")?;
        titles.push(value["text"].as_str().context("a titles line has no \"text\"")?.to_string());
    }
    if titles.len() < 2 {
        bail!("{} holds fewer than 2 titles", args.titles.display());
    }
    let started = Instant::now();
    let encoder = Encoder::open(&settings.encoder)?;
    let refs: Vec<&str> = titles.iter().map(String::as_str).collect();
    let vectors = encoder.embed(&refs, 64)?;
    let key = encoder.embedding_key();
    println!("embedded {} base titles in {:.1} s", titles.len(), started.elapsed().as_secs_f64());
    drop(encoder);
    let store = args.store.open(settings)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let started = Instant::now();
    let dim = vectors[0].len();
    for first in (0..args.items).step_by(WRITE_CHUNK) {
        let mut items = Vec::with_capacity(WRITE_CHUNK);
        let mut embedded = Vec::with_capacity(WRITE_CHUNK);
        for i in first..(first + WRITE_CHUNK).min(args.items) {
            let (a, b) = (rng.gen_range(0..titles.len()), rng.gen_range(0..titles.len()));
            let mut vector: Vec<f32> =
                (0..dim).map(|d| 0.7 * vectors[a][d] + 0.3 * vectors[b][d] + rng.gen_range(-0.02..0.02)).collect();
            let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            vector.iter_mut().for_each(|x| *x /= norm);
            let item = CatalogItem {
                id: format!("sku-{i}"),
                text: format!("{} #{i}", titles[a]),
                price: Some(1.0 + (i % 50) as f32),
                available: true,
                attributes: serde_json::Value::Null,
            };
            embedded.push((PendingItem { id: item.id.clone(), text: item.text.clone() }, vector));
            items.push(item);
        }
        store.upsert(&items)?;
        store.set_embeddings(&key, &embedded)?;
        if (first / WRITE_CHUNK).is_multiple_of(10) {
            eprintln!("{} items written", first + items.len());
        }
    }
    println!("wrote {} items with {dim}-d embeddings ({key}) in {:.1} s", args.items, started.elapsed().as_secs_f64());
    Ok(())
}
