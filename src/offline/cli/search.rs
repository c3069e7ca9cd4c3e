//! `shoprank eval-search`: search quality on a labelled query set built from
//! a bundle's catalog (see `offline::search_eval`). It needs no purchase
//! log: the bundle's statistics hold the catalog's titles.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use crate::config::Settings;
use crate::model::bundle::Bundle;
use crate::model::encoder::Encoder;
use crate::model::relevance::Banding;
use crate::offline::embed_store::EmbedStore;
use crate::offline::judged_typos;
use crate::offline::search_eval::{self, QuerySetRule};
use crate::offline::search_judged::{self, JudgedRule, JudgedScorer};

#[derive(Args)]
pub struct EvalSearchArgs {
    /// The bundle to evaluate (default: bundle.path from the config).
    #[arg(long)]
    bundle: Option<PathBuf>,
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// Relevant items per query (also the NDCG cutoff's ideal).
    #[arg(long, default_value_t = 10)]
    relevant: usize,
    /// Unrelated items per query.
    #[arg(long, default_value_t = 40)]
    distractors: usize,
    /// Seeds the query set. Choose settings on another seed than the one
    /// reported (the README reports seed 0; the margin was chosen on seed 1).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Relevance band width for `shipped` (default: search.relevance_margin).
    #[arg(long)]
    relevance_margin: Option<f32>,
    /// Relevance floor for `shipped` (default: search.relevance_floor).
    #[arg(long)]
    relevance_floor: Option<f32>,
    /// Lexical weight of relevance for `shipped` (default: search.lexical_weight).
    #[arg(long)]
    lexical_weight: Option<f32>,
    /// Directory keeping text embeddings between runs ("" to disable).
    #[arg(long, default_value = "models/.cache")]
    cache_dir: String,
    /// Write the report as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Measure on a judged query set instead (a directory with items.csv
    /// `item_id,text` and judgements.csv `query,item_id,gain`; see
    /// `offline::search_judged`): every query searches the whole catalog.
    #[arg(long, value_name = "DIR")]
    judged: Option<PathBuf>,
    /// With --judged: items with at least this gain are relevant (Recall@100).
    #[arg(long, default_value_t = 1.0, requires = "judged")]
    relevant_gain: f32,
    /// With --judged: measure again with one typo in each query (seeded;
    /// see `search_judged::with_typos`) and report the NDCG@10 kept.
    #[arg(long, value_name = "SEED", requires = "judged")]
    typos: Option<u64>,
    /// With --judged: queries with fewer relevant items are left out.
    #[arg(long, default_value_t = 1, requires = "judged")]
    min_relevant: usize,
}

impl EvalSearchArgs {
    /// The embedding cache `--cache-dir` names ("" keeps none).
    fn embed_store(&self, encoder: &Encoder) -> Result<EmbedStore> {
        let cache_dir = (!self.cache_dir.is_empty()).then(|| Path::new(&self.cache_dir));
        Ok(EmbedStore::open(cache_dir, encoder)?)
    }

    /// The configured relevance bands, with the command line's overrides.
    fn banding(&self, settings: &Settings) -> Banding {
        let mut banding = Banding::from_settings(&settings.search);
        banding.margin = self.relevance_margin.unwrap_or(banding.margin);
        banding.floor = self.relevance_floor.unwrap_or(banding.floor);
        banding.lexical_weight = self.lexical_weight.unwrap_or(banding.lexical_weight);
        banding
    }
}

pub(crate) fn eval_search(settings: &Settings, args: &EvalSearchArgs) -> Result<()> {
    let started = Instant::now();
    let encoder = Encoder::open(&settings.encoder)?;
    let dir = args.bundle.clone().unwrap_or_else(|| settings.bundle.path.clone());
    let bundle = Bundle::load(&dir, &encoder.identity(), encoder.precision())?;
    if let Some(judged) = &args.judged {
        return eval_judged(settings, args, judged, &encoder, &bundle, started);
    }
    let rule =
        QuerySetRule { queries: args.queries, relevant: args.relevant, distractors: args.distractors, seed: args.seed };
    let queries = search_eval::build_query_set(bundle.stats(), rule);
    if queries.len() < args.queries {
        eprintln!("note: the catalog yields {} eligible queries of the {} asked for", queries.len(), args.queries);
    }
    let mut store = args.embed_store(&encoder)?;
    let banding = args.banding(settings);
    let report = search_eval::evaluate_search(
        bundle.stats(),
        bundle.head(),
        &encoder,
        settings.user_text,
        &mut store,
        &queries,
        banding,
    )?;
    print!("{}", search_eval::format_search_table(&report));
    let sample: Vec<&str> = queries.iter().take(8).map(|q| q.text.as_str()).collect();
    println!("e.g. queries: {}", sample.join(", "));
    println!(
        "bundle {} on encoder {}; evaluated in {:.0}s",
        bundle.version(),
        encoder.name(),
        started.elapsed().as_secs_f64()
    );
    write_report(args.out.as_deref(), &report)
}

/// Writes the report as JSON to `out`, if given.
fn write_report(out: Option<&Path>, report: &impl serde::Serialize) -> Result<()> {
    let Some(out) = out else { return Ok(()) };
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(out, serde_json::to_string_pretty(report)? + "\n")
        .with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}

/// `eval-search --judged DIR`: the judged set's queries over its whole catalog.
fn eval_judged(
    settings: &Settings,
    args: &EvalSearchArgs,
    dir: &Path,
    encoder: &Encoder,
    bundle: &Bundle,
    started: Instant,
) -> Result<()> {
    let set = search_judged::load(dir).with_context(|| format!("reading the judged set in {}", dir.display()))?;
    let mut store = args.embed_store(encoder)?;
    let banding = args.banding(settings);
    let scorer = JudgedScorer {
        head: bundle.head(),
        stats: bundle.stats(),
        encoder,
        budget: settings.user_text,
        banding,
        retrieve_k: settings.catalog.retrieve_k,
        lexical_k: settings.catalog.lexical_k,
    };
    let rule = JudgedRule { relevant_gain: args.relevant_gain, min_relevant: args.min_relevant };
    let report = search_judged::evaluate(&set, rule, &scorer, &mut store)?;
    print!("{}", search_judged::format_judged_table(&report));
    if let Some(seed) = args.typos {
        let (clean, mistyped) = judged_typos::with_typos(&set, seed);
        let clean_report = search_judged::evaluate(&clean, rule, &scorer, &mut store)?;
        let typo_report = search_judged::evaluate(&mistyped, rule, &scorer, &mut store)?;
        println!("the {} queries with a word to mistype, clean:", clean.queries.len());
        print!("{}", search_judged::format_judged_table(&clean_report));
        println!("the same with one typo each (seed {seed}):");
        print!("{}", search_judged::format_judged_table(&typo_report));
        for (method, typo) in &typo_report.results {
            if let Some(clean) = clean_report.results.get(method) {
                println!(
                    "{method:<14} keeps {:.1}% of its clean NDCG@10",
                    100.0 * typo.ndcg10 / clean.ndcg10.max(1e-12)
                );
            }
        }
    }
    println!(
        "bundle {} on encoder {} ({}); evaluated in {:.0}s",
        bundle.version(),
        encoder.name(),
        encoder.precision().as_str(),
        started.elapsed().as_secs_f64()
    );
    write_report(args.out.as_deref(), &report)
}
