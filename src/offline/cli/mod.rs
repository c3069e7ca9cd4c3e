//! The offline commands as the command line sees them: `train`, `eval`
//! ([`evaluate`]), `eval-search` ([`search`]), `replay` ([`replay`]), `embed` ([`embed`]), `scale-data` and
//! `scale-catalog` ([`scale`]),
//! `store import|export` and `report` ([`store`]), their arguments (clap)
//! and what each one runs, gathered in [`OfflineCommand`]: `main` flattens
//! it into its own subcommands and calls [`OfflineCommand::run`]. `anyhow`
//! is used at this edge, as in `main`.

mod embed;
mod evaluate;
mod replay;
mod scale;
mod search;
pub(crate) mod store;

pub(crate) use self::embed::{embed, EmbedArgs};
pub(crate) use self::evaluate::{eval, EvalArgs};
pub(crate) use self::replay::{replay, ReplayArgs};
pub(crate) use self::scale::{scale_catalog, scale_data, ScaleCatalogArgs, ScaleDataArgs};
pub(crate) use self::search::{eval_search, EvalSearchArgs};
pub(crate) use self::store::{report, ReportArgs, StoreCommand};

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use crate::config::Settings;
use crate::model::bundle::{Bundle, BundleManifest, TrainingRecord, BUNDLE_FORMAT};
use crate::model::encoder::{Arithmetic, Encoder};
use crate::model::versions;
use crate::offline::data::split::{parse_cutoff, PROTOCOL_T_TEST, PROTOCOL_T_VAL};
use crate::offline::data::{redacted, DataSource, Dataset};
use crate::offline::embed_store::EmbedStore;
use crate::offline::prepared::SplitSettings;
use crate::offline::train::{self, TrainOptions};

/// The offline subcommands of `shoprank` (beside `serve`).
#[derive(Subcommand)]
pub enum OfflineCommand {
    /// Train the scoring head on a purchase log or the store (EVAL_PROTOCOL v1 split) and write a bundle.
    Train(TrainArgs),
    /// Evaluate the bundle and the baselines with EVAL_PROTOCOL v1.
    Eval(EvalArgs),
    /// Search quality on a labelled query set from the bundle's catalog.
    EvalSearch(EvalSearchArgs),
    /// The test period day by day: each day's shoppers ranked with the
    /// bundle's statistics frozen and brought forward with the purchases since.
    Replay(ReplayArgs),
    /// Embed JSONL {"id", "text"} lines into JSONL {"id", "vector"} lines.
    Embed(EmbedArgs),
    /// Derive a larger log from a real one (replicated catalog and customers), for scaling runs.
    ScaleData(ScaleDataArgs),
    /// Write a large synthetic catalog with stored embeddings straight into the store
    /// (measures the catalog index: memory, restart, recall; not ranking quality).
    ScaleCatalog(ScaleCatalogArgs),
    /// Move a log into the store, or the store's log out to CSV.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Per A/B variant: impressions, clicks, add-to-carts, purchases and
    /// their rates, from the events in the store.
    Report(ReportArgs),
}

impl OfflineCommand {
    /// Runs the command on `settings` (loaded once by `main`).
    pub fn run(&self, settings: &Settings) -> Result<()> {
        match self {
            Self::Train(args) => train(settings, args),
            Self::Eval(args) => eval(settings, args),
            Self::EvalSearch(args) => eval_search(settings, args),
            Self::Replay(args) => replay(settings, args),
            Self::Embed(args) => embed(settings, args),
            Self::ScaleData(args) => scale_data(settings, args),
            Self::ScaleCatalog(args) => scale_catalog(settings, args),
            Self::Store(command) => store::run(settings, command),
            Self::Report(args) => report(settings, args),
        }
    }
}

/// A purchase log in files: the Online Retail CSV, or the generic format's
/// two files. Shared by every command that reads one.
#[derive(Args)]
pub(crate) struct LogFiles {
    /// The UCI Online Retail CSV (.csv or .csv.gz).
    #[arg(long, conflicts_with_all = ["events", "items"])]
    data: Option<PathBuf>,
    /// Generic format: events.csv (user_id,item_id,timestamp[,quantity,price]).
    #[arg(long, requires = "items")]
    events: Option<PathBuf>,
    /// Generic format: items.csv (item_id,text[,price]).
    #[arg(long, requires = "events")]
    items: Option<PathBuf>,
}

impl LogFiles {
    /// The importer for the files given, if any were.
    fn source(&self) -> Option<DataSource> {
        match (&self.data, &self.events, &self.items) {
            (Some(path), _, _) => Some(DataSource::OnlineRetail(path.clone())),
            (None, Some(events), Some(items)) => {
                Some(DataSource::Generic { events: events.clone(), items: items.clone() })
            }
            _ => None,
        }
    }
}

/// Where the purchase log comes from, and the test split's start.
#[derive(Args)]
pub(crate) struct DataArgs {
    #[command(flatten)]
    files: LogFiles,
    /// shoprank's store: its catalog and stored purchases. A directory or a
    /// postgres:// URL; given bare (`--store`), store.url from the config
    /// (SHOPRANK__STORE__URL), which keeps a password off the command line.
    #[arg(long, num_args = 0..=1, default_missing_value = "", conflicts_with_all = ["data", "events"])]
    store: Option<String>,
    /// Start of the test period: history is everything before it.
    #[arg(long, default_value = PROTOCOL_T_TEST)]
    test_start: String,
    /// Directory keeping text embeddings between runs ("" to disable).
    #[arg(long, default_value = "models/.cache")]
    cache_dir: String,
}

impl DataArgs {
    fn source(&self, settings: &Settings) -> Result<DataSource> {
        if let Some(source) = self.files.source() {
            return Ok(source);
        }
        let Some(url) = &self.store else {
            bail!("give the log with --data FILE, --events FILE --items FILE, or --store [URL]");
        };
        let mut store = settings.store.clone();
        if !url.is_empty() {
            store.url = url.clone();
        }
        Ok(DataSource::Store(store))
    }

    fn load(&self, settings: &Settings) -> Result<Dataset> {
        let source = self.source(settings)?;
        let started = Instant::now();
        let data = source.load().with_context(|| format!("loading {source}"))?;
        eprintln!("loaded {source} in {:.1}s: {}", started.elapsed().as_secs_f64(), data.report.summary());
        for example in data.report.examples.iter().take(3) {
            eprintln!("  e.g. {example}");
        }
        Ok(data)
    }

    fn cache_dir(&self) -> Option<&Path> {
        (!self.cache_dir.is_empty()).then(|| Path::new(&self.cache_dir))
    }

    pub(crate) fn test_start(&self) -> Result<i64> {
        parse_cutoff(&self.test_start).map_err(anyhow::Error::msg).context("--test-start")
    }
}

#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Inner validation split for model selection.
    #[arg(long, default_value = PROTOCOL_T_VAL)]
    val_start: String,
    #[arg(long, default_value_t = 3)]
    windows: usize,
    #[arg(long, default_value_t = 30)]
    window_days: i64,
    #[arg(long, default_value_t = 8)]
    negatives: usize,
    /// Share of examples shown as new products (statistics hidden).
    #[arg(long, default_value_t = 0.1)]
    cold_fraction: f64,
    /// Share of users who also get a search session: a pseudo-query drawn
    /// from the title of an item they bought, so the head learns what a
    /// query match is worth (0 turns search training off).
    #[arg(long, default_value_t = 0.3)]
    query_fraction: f64,
    /// Share of the search sessions whose query has one word mistyped (a
    /// letter dropped or two letters swapped, in a word of 5 letters or
    /// more), so the head learns what a typo-tolerant match is worth.
    #[arg(long, default_value_t = 0.1)]
    typo_fraction: f64,
    /// Draw a third of the negatives among the 100 items the history's
    /// recent-purchase EASE weights rank highest (hurts: see the model card).
    #[arg(long)]
    hard_negatives: bool,
    /// Share of the negatives drawn by popularity (the rest: uniformly).
    /// Any share above 0 teaches the head that popular items are less
    /// likely bought than they are: 0.5 gave inner NDCG@10 0.113, 0 gave
    /// 0.132 (one member, same examples otherwise).
    #[arg(long, default_value_t = 0.0)]
    popular_share: f64,
    #[arg(long, value_delimiter = ',', default_value = "128,32")]
    hidden: Vec<usize>,
    #[arg(long, default_value_t = 20)]
    max_epochs: usize,
    #[arg(long, default_value_t = 3)]
    patience: usize,
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    #[arg(long, default_value_t = 1e-3)]
    learning_rate: f64,
    #[arg(long, default_value_t = 1e-4)]
    weight_decay: f64,
    #[arg(long, default_value_t = 0.2)]
    dropout: f32,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// MLPs trained from different seeds whose logits the head averages
    /// (an ensemble beat its members on inner validation; 3 rather than 5
    /// since uniform negatives made each member train for more epochs).
    #[arg(long, default_value_t = 3)]
    members: usize,
    /// Skip retraining with the validation window added.
    #[arg(long)]
    no_refit: bool,
    /// Share of the validation window's users kept out of the refit: the
    /// calibration map is fitted on them, scored by the refit weights that
    /// ship (0 fits it on every validation user with the pre-refit weights,
    /// as bundles before this option did).
    #[arg(long, default_value_t = 0.25)]
    calibration_share: f64,
    /// Use at most N users per window (quick runs).
    #[arg(long)]
    max_users: Option<usize>,
    /// Most (validation user × catalog item) pairs ranked for model
    /// selection after each epoch; beyond it a seeded sample of the users is
    /// ranked (bounds memory: 92 bytes a pair).
    #[arg(long, default_value_t = 16_000_000)]
    max_validation_pairs: usize,
    /// Most training examples, about (windows and refit); beyond it each
    /// window keeps a seeded sample of its users (bounds epoch time).
    #[arg(long, default_value_t = 1_200_000)]
    max_examples: usize,
    /// The bundle directory to write (default: bundle.path from the config).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Treat --out as a directory of versions: write the bundle as a new
    /// version in it (never over an existing one), then point its CURRENT
    /// at it, so servers watching it (or told to reload) switch.
    #[arg(long)]
    versioned: bool,
    /// With --versioned: write the version but leave CURRENT as it is.
    #[arg(long, requires = "versioned")]
    no_publish: bool,
}

impl TrainArgs {
    /// The options as given; `train` checks them before any work.
    fn options(&self) -> Result<TrainOptions> {
        Ok(TrainOptions {
            t_test: self.data.test_start()?,
            t_val: parse_cutoff(&self.val_start).map_err(anyhow::Error::msg).context("--val-start")?,
            windows: self.windows,
            window_days: self.window_days,
            negatives: self.negatives,
            cold_fraction: self.cold_fraction,
            query_fraction: self.query_fraction,
            typo_fraction: self.typo_fraction,
            hard_negatives: self.hard_negatives,
            popular_share: self.popular_share,
            hidden: self.hidden.clone(),
            max_epochs: self.max_epochs,
            patience: self.patience,
            batch_size: self.batch_size,
            learning_rate: self.learning_rate,
            weight_decay: self.weight_decay,
            dropout: self.dropout,
            seed: self.seed,
            members: self.members,
            refit: !self.no_refit,
            calibration_share: self.calibration_share,
            max_users: self.max_users,
            max_validation_pairs: self.max_validation_pairs,
            max_examples: self.max_examples,
        })
    }
}

/// `shoprank train`: fits a head and writes a bundle.
pub(crate) fn train(settings: &Settings, args: &TrainArgs) -> Result<()> {
    let started = Instant::now();
    let options = args.options()?;
    // Saving replaces the output directory whole: a directory of versions
    // would lose every version and its CURRENT. Refused before any work.
    let out = args.out.clone().unwrap_or_else(|| settings.bundle.path.clone());
    if !args.versioned && out.join(versions::CURRENT_FILE).exists() {
        bail!(
            "{} is a directory of bundle versions (it has {}): add --versioned to write a new version into it",
            out.display(),
            versions::CURRENT_FILE
        );
    }
    let data = args.data.load(settings)?;
    let encoder = Encoder::open(&settings.encoder)?;
    if encoder.precision() != Arithmetic::F32 {
        eprintln!("note: training with {} encoder precision", encoder.precision().as_str());
    }
    let mut store = EmbedStore::open(args.data.cache_dir(), &encoder)?;
    let outcome = train::train(&data, &encoder, &SplitSettings::from_settings(settings), &mut store, &options)?;

    let (dir, version_dir) = if args.versioned {
        std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        let name = versions::claim(&out, &outcome.version)?;
        (out.join(&name), Some((out.clone(), name)))
    } else {
        (out.clone(), None)
    };
    let manifest = BundleManifest {
        format: BUNDLE_FORMAT,
        // A versioned bundle is named by its directory: `<version>.2` when a
        // retrain gave the same version again.
        version: version_dir.as_ref().map_or_else(|| outcome.version.clone(), |(_, name)| name.clone()),
        head: outcome.spec.clone(),
        training: Some(TrainingRecord {
            data: args.data.source(settings)?.to_string(),
            data_summary: data.report.summary(),
            date: chrono::Utc::now().format("%Y-%m-%d").to_string(),
            command: redacted(&std::env::args().collect::<Vec<_>>().join(" ")),
            options: serde_json::to_value(&options)?,
            examples: outcome.examples,
            best_epochs: outcome.best_epochs.clone(),
            epochs: outcome.log.clone(),
            seconds: started.elapsed().as_secs_f64(),
            stages: outcome.stages.clone(),
            limits: outcome.limits.clone(),
        }),
        validation: Some(outcome.validation),
        calibration: outcome.calibration.clone(),
    };
    if let Err(error) = Bundle::save(&dir, &manifest, &outcome.varmap, &outcome.stats) {
        if version_dir.is_some() {
            let _ = std::fs::remove_dir(&dir); // the claimed, still empty, directory
        }
        return Err(error.into());
    }
    if let Some((versions_dir, name)) = &version_dir {
        if args.no_publish {
            println!(
                "wrote version {name}; {} unchanged (--no-publish)",
                versions_dir.join(versions::CURRENT_FILE).display()
            );
        } else {
            versions::publish(versions_dir, name)?;
            println!("published version {name} in {}", versions_dir.join(versions::CURRENT_FILE).display());
        }
    }
    let v = outcome.validation;
    println!(
        "trained bundle {} in {:.0}s on {} examples (best epochs {:?})\n\
         inner validation (history < {}, truth to {}): NDCG@10 {:.4}  Recall@10 {:.4}  HR@10 {:.3}  MRR {:.3}  AUC {:.3}\n\
         wrote {}",
        manifest.version,
        started.elapsed().as_secs_f64(),
        outcome.examples,
        outcome.best_epochs,
        args.val_start,
        args.data.test_start,
        v.ndcg10,
        v.recall10,
        v.hit10,
        v.mrr,
        v.auc,
        dir.display()
    );
    Ok(())
}

/// Creates the directory `path` will be written into.
fn create_parent(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Train {
        #[command(flatten)]
        args: TrainArgs,
    }

    #[test]
    fn the_command_line_defaults_are_the_documented_options_and_valid() {
        let parsed = Train::try_parse_from(["train", "--data", "log.csv"]).unwrap();
        let options = parsed.args.options().unwrap();
        assert_eq!(options.validate(), Ok(()));
        let documented = crate::offline::train::tests_support::defaults();
        assert_eq!(serde_json::to_value(&options).unwrap(), serde_json::to_value(&documented).unwrap());
    }
}
