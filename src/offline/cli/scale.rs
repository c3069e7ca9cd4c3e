//! `shoprank scale-data`: a larger log derived from a real one (see
//! `offline::scale_data`).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use super::DataArgs;
use crate::offline::scale_data::{self, ScaleOptions};

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
