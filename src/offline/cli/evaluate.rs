//! `shoprank eval`: EVAL_PROTOCOL v1 for the bundle and the baselines on a
//! purchase log's test split (`offline::eval` computes; this prints, and
//! writes the JSON report and the chart).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::{create_parent, DataArgs};
use crate::config::Settings;
use crate::model::bundle::Bundle;
use crate::model::encoder::Encoder;
use crate::offline::data::split::{parse_cutoff, Split};
use crate::offline::embed_store::EmbedStore;
use crate::offline::eval::{self, Counts, EvalReport, RetrievalSizes, BASELINES, REFERENCES};
use crate::offline::prepared::{PreparedSplit, SplitSettings};

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    data: DataArgs,
    /// End of the test period (default: the end of the log). With
    /// --test-start 2011-10-01 --test-end 2011-11-01 this is the protocol's
    /// inner validation split, the one to compare settings on.
    #[arg(long)]
    test_end: Option<String>,
    /// Write the report as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write a PNG chart here: metrics per method and the head's training curve.
    #[arg(long)]
    chart: Option<PathBuf>,
    /// Evaluate the baselines only.
    #[arg(long)]
    baselines_only: bool,
    /// Rank for at most N test users, a sample drawn from --seed (large
    /// catalogs: time and memory grow with users × items). The report's
    /// counts say how many the split had.
    #[arg(long)]
    max_users: Option<usize>,
    /// Also rank two-stage, as a request without candidates is: retrieve
    /// the K items nearest the user text (plus catalog.related_k linked and
    /// catalog.popular_k popular ones), let the head rank those; reports
    /// the retrieval's recall and the `model-retrieve` row.
    #[arg(long, value_name = "K")]
    retrieve: Option<usize>,
    /// Seeds the random baseline and the --max-users sample.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// `shoprank eval`: EVAL_PROTOCOL v1 for the bundle and the baselines.
pub(crate) fn eval(settings: &Settings, args: &EvalArgs) -> Result<()> {
    let started = Instant::now();
    let data = args.data.load(settings)?;
    let encoder = Encoder::open(&settings.encoder)?;
    let bundle = if args.baselines_only {
        None
    } else {
        Some(Bundle::load(&settings.bundle.path, &encoder.identity(), encoder.precision())?)
    };
    let mut store = EmbedStore::open(args.data.cache_dir(), &encoder)?;
    let t_end = args.test_end.as_deref().map(parse_cutoff).transpose().map_err(anyhow::Error::msg)?;
    let mut split = Split::new(&data, args.data.test_start()?, t_end);
    let sampled_from = args.max_users.and_then(|max| split.sample_test_users(max, args.seed));
    let history_events = split.history.len();
    let prepared = PreparedSplit::new(split, &encoder, &SplitSettings::from_settings(settings), &mut store)?;
    let mut methods: Vec<&str> = BASELINES.iter().chain(REFERENCES.iter()).copied().collect();
    if bundle.is_some() {
        methods.extend(["model", eval::DEGRADED, eval::COLD]);
    }
    let head = bundle.as_ref().map(Bundle::head);
    let retrieval = match (args.retrieve, &head) {
        (Some(k), Some(_)) => Some(RetrievalSizes {
            retrieve_k: k,
            related_k: settings.catalog.related_k,
            popular_k: settings.catalog.popular_k,
        }),
        (Some(_), None) => bail!("--retrieve needs the model: drop --baselines-only"),
        (None, _) => None,
    };
    let evaluation = eval::evaluate(&prepared, &store, head, &methods, args.seed, true, retrieval)?;
    let report = EvalReport {
        protocol: "EVAL_PROTOCOL v1".into(),
        counts: Counts {
            test_users: prepared.split.test_users.len(),
            catalog_items: prepared.split.catalog.len(),
            history_events,
            sampled_from,
        },
        methods: evaluation.methods,
        retrieval: evaluation.retrieval,
        revenue: evaluation.revenue,
        calibration: evaluation.calibration,
    };
    print!("{}", eval::format_table(&report));
    if let Some(bundle) = &bundle {
        println!(
            "model = bundle {} on encoder {} ({}); scores {}",
            bundle.version(),
            encoder.name(),
            encoder.precision().as_str(),
            match bundle.calibration() {
                Some(c) => format!("calibrated on {} ({})", c.fitted_on.window, c.event),
                None => "uncalibrated (the bundle has no calibration: training-mix odds)".into(),
            }
        );
    }
    println!("evaluated in {:.0}s", started.elapsed().as_secs_f64());
    if let Some(out) = &args.out {
        create_parent(out)?;
        std::fs::write(out, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", out.display()))?;
        println!("wrote {}", out.display());
    }
    if let Some(chart) = &args.chart {
        let training = bundle.as_ref().and_then(|b| b.manifest().training.as_ref());
        create_parent(chart)?;
        eval::chart::write_chart(chart, &report, training.map_or(&[], |t| &t.epochs[..]))?;
        println!("wrote {}", chart.display());
    }
    Ok(())
}
