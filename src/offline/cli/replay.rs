//! `shoprank replay`: the test period day by day, each day's shoppers ranked
//! with the bundle's statistics frozen and brought forward (see
//! `offline::replay`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::{create_parent, DataArgs};
use crate::config::Settings;
use crate::model::bundle::Bundle;
use crate::model::encoder::Encoder;
use crate::model::live_stats;
use crate::offline::data::split::parse_cutoff;
use crate::offline::embed_store::EmbedStore;
use crate::offline::replay::{self, ReplayModel};

#[derive(Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    data: DataArgs,
    /// End of the replay (default: the end of the log).
    #[arg(long)]
    test_end: Option<String>,
    /// Write the report as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// `shoprank replay`: frozen against live statistics, per week.
pub(crate) fn replay(settings: &Settings, args: &ReplayArgs) -> Result<()> {
    let started = Instant::now();
    let data = args.data.load(settings)?;
    let encoder = Encoder::open(&settings.encoder)?;
    let bundle = Bundle::load(&settings.bundle.path, &encoder.identity(), encoder.precision())?;
    let start = args.data.test_start()?;
    if live_stats::base_end(bundle.stats()) != Some(start) {
        bail!(
            "the bundle's statistics end at {}, not at --test-start {}: replay from where its history ends",
            bundle.stats().cutoff,
            args.data.test_start
        );
    }
    let end = match &args.test_end {
        Some(end) => parse_cutoff(end).map_err(anyhow::Error::msg).context("--test-end")?,
        None => data.events.last().map_or(start, |e| e.time + 1),
    };
    let mut store = EmbedStore::open(args.data.cache_dir(), &encoder)?;
    let model =
        ReplayModel { head: bundle.head(), base: bundle.stats(), encoder: &encoder, budget: settings.user_text };
    let report = replay::replay(&data, &model, &mut store, start, end)?;
    print!("{}", replay::format_replay(&report));
    println!(
        "bundle {} on encoder {} ({}); replayed in {:.0}s",
        bundle.version(),
        encoder.name(),
        encoder.precision().as_str(),
        started.elapsed().as_secs_f64()
    );
    if let Some(out) = &args.out {
        create_parent(out)?;
        std::fs::write(out, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", out.display()))?;
        println!("wrote {}", out.display());
    }
    Ok(())
}
