//! The `shoprank` command line: `serve`, `train`, `eval`, `embed`.
//! `anyhow` lives here, at the edge; the library has typed errors.

use std::io::{BufRead, Write};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use shoprank::api::{self, AppState};
use shoprank::batcher::Embedder;
use shoprank::config::{Precision, Settings};
use shoprank::data::split::{parse_cutoff, Split, PROTOCOL_T_TEST, PROTOCOL_T_VAL};
use shoprank::data::DataSource;
use shoprank::embed_store::EmbedStore;
use shoprank::encoder::Encoder;
use shoprank::eval::prepared::PreparedSplit;
use shoprank::eval::{self, Counts, EvalReport, BASELINES, REFERENCES};
use shoprank::head::{self, EncoderIdentity, ScoringHead};
use shoprank::metrics::Metrics;
use shoprank::model_files::EncoderFiles;
use shoprank::ranker::Ranker;
use shoprank::stats::HistoryStats;
use shoprank::train::{self, TrainOptions};

/// mimalloc keeps freed tensor buffers for reuse; with the system allocator
/// every large activation was a fresh mmap whose pages the kernel had to zero
/// (6% of encoder time in a profile).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "shoprank", version, about = "Product ranking with a BERT encoder and a trained scoring head")]
struct Cli {
    /// Configuration file layered over the built-in defaults (env: SHOPRANK_CONFIG).
    #[arg(long, global = true, env = "SHOPRANK_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API.
    Serve {
        /// Bind address, overriding server.addr.
        #[arg(long)]
        addr: Option<std::net::SocketAddr>,
    },
    /// Train the scoring head on a purchase log (EVAL_PROTOCOL v1 split).
    Train(TrainArgs),
    /// Evaluate the head and the baselines with EVAL_PROTOCOL v1.
    Eval(EvalArgs),
    /// Embed JSONL {"id", "text"} lines into JSONL {"id", "vector"} lines.
    Embed {
        /// Input file (default: standard input).
        #[arg(long)]
        input: Option<PathBuf>,
        /// Output file (default: standard output).
        #[arg(long)]
        output: Option<PathBuf>,
        /// Texts per forward pass.
        #[arg(long, default_value_t = 32)]
        batch: usize,
    },
}

#[derive(Args)]
struct DataArgs {
    /// The UCI Online Retail CSV (.csv or .csv.gz).
    #[arg(long, conflicts_with_all = ["events", "items"])]
    data: Option<PathBuf>,
    /// Generic format: events.csv (user_id,item_id,timestamp[,quantity,price]).
    #[arg(long, requires = "items")]
    events: Option<PathBuf>,
    /// Generic format: items.csv (item_id,text[,price]).
    #[arg(long, requires = "events")]
    items: Option<PathBuf>,
    /// Start of the test period: history is everything before it.
    #[arg(long, default_value = PROTOCOL_T_TEST)]
    test_start: String,
    /// Directory keeping text embeddings between runs ("" to disable).
    #[arg(long, default_value = "models/.cache")]
    cache_dir: String,
}

impl DataArgs {
    fn source(&self) -> Result<DataSource> {
        match (&self.data, &self.events, &self.items) {
            (Some(path), _, _) => Ok(DataSource::OnlineRetail(path.clone())),
            (None, Some(events), Some(items)) => Ok(DataSource::Generic { events: events.clone(), items: items.clone() }),
            _ => bail!("give the log with --data FILE, or --events FILE --items FILE"),
        }
    }

    fn load(&self) -> Result<shoprank::data::Dataset> {
        let source = self.source()?;
        let started = Instant::now();
        let data = source.load().with_context(|| format!("loading {source:?}"))?;
        eprintln!("loaded {} in {:.1}s: {}", describe(&source), started.elapsed().as_secs_f64(), data.report.summary());
        for (line, reason) in data.report.examples.iter().take(3) {
            eprintln!("  e.g. line {line}: {reason}");
        }
        Ok(data)
    }

    fn cache_dir(&self) -> Option<&Path> {
        (!self.cache_dir.is_empty()).then(|| Path::new(&self.cache_dir))
    }
}

fn describe(source: &DataSource) -> String {
    match source {
        DataSource::OnlineRetail(path) => path.display().to_string(),
        DataSource::Generic { events, items } => format!("{} + {}", events.display(), items.display()),
    }
}

#[derive(Args)]
struct TrainArgs {
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
    /// Use at most N users per window (quick runs).
    #[arg(long)]
    max_users: Option<usize>,
    /// Where to write the head (weights; the spec and statistics go beside it
    /// as head.json and stats.json.gz unless the config names other paths).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct EvalArgs {
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
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SHOPRANK_LOG").unwrap_or_else(|_| "shoprank=info,warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let settings = Settings::load(cli.config.as_deref()).context("loading configuration")?;
    configure_threads(settings.encoder.threads)?;
    match cli.command {
        Command::Serve { addr } => serve(settings, addr),
        Command::Train(args) => run_train(settings, args),
        Command::Eval(args) => run_eval(settings, args),
        Command::Embed { input, output, batch } => run_embed(settings, input, output, batch),
    }
}

/// Sizes the one compute thread pool (rayon, which Candle's CPU kernels use).
fn configure_threads(threads: usize) -> Result<()> {
    if threads > 0 {
        // Candle's gemm reads the same variable rayon does.
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
        rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().context("starting the thread pool")?;
    }
    Ok(())
}

fn load_encoder(settings: &Settings) -> Result<Encoder> {
    let files = EncoderFiles::resolve(&settings.encoder.source, &settings.encoder.revision)?;
    let started = Instant::now();
    let encoder = Encoder::load(&files, &settings.encoder).with_context(|| format!("loading encoder {}", files.name))?;
    tracing::info!(encoder = encoder.name(), dim = encoder.dim(), precision = encoder.precision().as_str(),
        secs = started.elapsed().as_secs_f64(), "encoder loaded");
    Ok(encoder)
}

fn load_ranker(settings: &Settings, metrics: Metrics) -> Result<Ranker> {
    let encoder = Arc::new(load_encoder(settings)?);
    let identity = EncoderIdentity { name: encoder.name().to_string(), dim: encoder.dim() };
    let head = ScoringHead::load(&settings.head.weights, &settings.head.spec, &identity)
        .with_context(|| format!("loading the head {}", settings.head.weights.display()))?;
    let stats = HistoryStats::load(&settings.head.stats)?;
    let cache_entries = NonZeroUsize::new(settings.cache.max_entries).context("cache.max_entries")?;
    let embedder = Embedder::new(encoder, settings.batching.clone(), cache_entries, metrics.clone());
    Ok(Ranker::new(embedder, head, stats, settings.user_text, metrics))
}

fn serve(mut settings: Settings, addr: Option<std::net::SocketAddr>) -> Result<()> {
    if let Some(addr) = addr {
        settings.server.addr = addr;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let metrics = Metrics::new();
        let state = AppState::new(metrics.clone(), settings.limits.clone(), &settings.server);
        let listener = tokio::net::TcpListener::bind(settings.server.addr)
            .await
            .with_context(|| format!("binding {}", settings.server.addr))?;
        tracing::info!(addr = %listener.local_addr()?, "listening; loading models");

        // Load and warm up off the runtime; /ready turns 200 when done.
        let loading_state = state.clone();
        let loading_settings = settings.clone();
        let loading = tokio::task::spawn_blocking(move || -> Result<()> {
            let started = Instant::now();
            let ranker = Arc::new(load_ranker(&loading_settings, metrics)?);
            ranker.warm_up().context("warm-up request")?;
            loading_state.install(ranker);
            tracing::info!(secs = started.elapsed().as_secs_f64(), "ready");
            Ok(())
        });
        let grace = Duration::from_secs(settings.server.shutdown_grace_secs);
        let server = api::run(listener, state, shutdown_signal(), grace);
        tokio::pin!(server);
        tokio::select! {
            loaded = loading => {
                loaded.context("model loading task")??;
                server.await?;
            }
            result = &mut server => result?,
        }
        Ok(())
    })
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

fn run_train(settings: Settings, args: TrainArgs) -> Result<()> {
    let started = Instant::now();
    let data = args.data.load()?;
    let encoder = load_encoder(&settings)?;
    if encoder.precision() != Precision::F32 {
        eprintln!("note: training with {} encoder precision", encoder.precision().as_str());
    }
    let mut store = EmbedStore::open(args.data.cache_dir(), &encoder)?;
    let options = TrainOptions {
        t_test: parse_cutoff(&args.data.test_start).map_err(anyhow::Error::msg)?,
        t_val: parse_cutoff(&args.val_start).map_err(anyhow::Error::msg)?,
        windows: args.windows,
        window_days: args.window_days,
        negatives: args.negatives,
        cold_fraction: args.cold_fraction,
        hard_negatives: args.hard_negatives,
        popular_share: args.popular_share,
        hidden: args.hidden.clone(),
        max_epochs: args.max_epochs,
        patience: args.patience,
        batch_size: args.batch_size,
        learning_rate: args.learning_rate,
        weight_decay: args.weight_decay,
        dropout: args.dropout,
        seed: args.seed,
        members: args.members,
        refit: !args.no_refit,
        max_users: args.max_users,
    };
    let outcome = train::train(&data, &encoder, settings.user_text, &mut store, &options)?;

    let weights = args.out.clone().unwrap_or(settings.head.weights.clone());
    let (spec_path, stats_path) = match &args.out {
        Some(out) => (out.with_file_name("head.json"), out.with_file_name("stats.json.gz")),
        None => (settings.head.spec.clone(), settings.head.stats.clone()),
    };
    let mut spec = outcome.spec;
    spec.training = serde_json::json!({
        "data": describe(&args.data.source()?),
        "data_summary": data.report.summary(),
        "date": chrono::Utc::now().format("%Y-%m-%d").to_string(),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "options": options,
        "examples": outcome.examples,
        "best_epochs": outcome.best_epochs,
        "epochs": outcome.log,
        "seconds": started.elapsed().as_secs_f64(),
    });
    if let Some(dir) = weights.parent() {
        std::fs::create_dir_all(dir)?;
    }
    head::save(&outcome.varmap, &spec, &weights, &spec_path)?;
    outcome.stats.save(&stats_path)?;
    let v = outcome.validation;
    println!(
        "trained head {} in {:.0}s on {} examples (best epochs {:?})\n\
         inner validation (history < {}, truth to {}): NDCG@10 {:.4}  Recall@10 {:.4}  HR@10 {:.3}  MRR {:.3}  AUC {:.3}\n\
         wrote {}, {}, {}",
        spec.version, started.elapsed().as_secs_f64(), outcome.examples, outcome.best_epochs,
        args.val_start, args.data.test_start, v.ndcg10, v.recall10, v.hit10, v.mrr, v.auc,
        weights.display(), spec_path.display(), stats_path.display()
    );
    Ok(())
}

fn run_eval(settings: Settings, args: EvalArgs) -> Result<()> {
    let started = Instant::now();
    let data = args.data.load()?;
    let encoder = load_encoder(&settings)?;
    let head = if args.baselines_only {
        None
    } else {
        let identity = EncoderIdentity { name: encoder.name().to_string(), dim: encoder.dim() };
        Some(ScoringHead::load(&settings.head.weights, &settings.head.spec, &identity)?)
    };
    let mut store = EmbedStore::open(args.data.cache_dir(), &encoder)?;
    let t_test = parse_cutoff(&args.data.test_start).map_err(anyhow::Error::msg)?;
    let t_end = args.test_end.as_deref().map(parse_cutoff).transpose().map_err(anyhow::Error::msg)?;
    let split = Split::new(&data, t_test, t_end);
    let history_events = split.history.len();
    let prepared = PreparedSplit::new(split, &encoder, settings.user_text, &mut store)?;
    let mut methods: Vec<&str> = BASELINES.iter().chain(REFERENCES.iter()).copied().collect();
    if head.is_some() {
        methods.push("model");
    }
    let results = eval::evaluate(&prepared, &store, head.as_ref(), &methods, args.seed, true)?;
    let report = EvalReport {
        protocol: "EVAL_PROTOCOL v1".into(),
        counts: Counts {
            test_users: prepared.split.test_users.len(),
            catalog_items: prepared.split.catalog.len(),
            history_events,
        },
        methods: results,
    };
    print!("{}", eval::format_table(&report));
    if let Some(head) = &head {
        println!("model = head {} on encoder {} ({})", head.spec().version, encoder.name(), encoder.precision().as_str());
    }
    println!("evaluated in {:.0}s", started.elapsed().as_secs_f64());
    if let Some(out) = &args.out {
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(out, serde_json::to_string_pretty(&report)? + "\n").with_context(|| format!("writing {}", out.display()))?;
        println!("wrote {}", out.display());
    }
    if let Some(chart) = &args.chart {
        let training: Vec<train::EpochLog> = head
            .as_ref()
            .and_then(|h| serde_json::from_value(h.spec().training["epochs"].clone()).ok())
            .unwrap_or_default();
        if let Some(dir) = chart.parent() {
            std::fs::create_dir_all(dir)?;
        }
        eval::chart::write_chart(chart, &report, &training)?;
        println!("wrote {}", chart.display());
    }
    Ok(())
}

#[derive(serde::Deserialize)]
struct EmbedLine {
    id: serde_json::Value,
    text: String,
}

fn run_embed(settings: Settings, input: Option<PathBuf>, output: Option<PathBuf>, batch: usize) -> Result<()> {
    let encoder = load_encoder(&settings)?;
    let reader: Box<dyn BufRead> = match &input {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    let mut writer: Box<dyn Write> = match &output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let progress = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        indicatif::ProgressBar::new_spinner()
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut pending: Vec<EmbedLine> = Vec::new();
    let flush = |pending: &mut Vec<EmbedLine>, writer: &mut Box<dyn Write>| -> Result<()> {
        let texts: Vec<&str> = pending.iter().map(|l| l.text.as_str()).collect();
        let vectors = encoder.embed(&texts, batch.max(1))?;
        for (line, vector) in pending.drain(..).zip(vectors) {
            serde_json::to_writer(&mut *writer, &serde_json::json!({"id": line.id, "vector": vector}))?;
            writer.write_all(b"\n")?;
        }
        progress.set_message(format!("{} texts embedded", progress.position()));
        Ok(())
    };
    for (number, line) in reader.lines().enumerate() {
        let line = line.context("reading input")?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: EmbedLine =
            serde_json::from_str(&line).with_context(|| format!("line {}: expected {{\"id\": ..., \"text\": \"...\"}}", number + 1))?;
        pending.push(parsed);
        progress.inc(1);
        if pending.len() >= batch.max(1) * 8 {
            flush(&mut pending, &mut writer)?;
        }
    }
    flush(&mut pending, &mut writer)?;
    writer.flush()?;
    progress.finish_and_clear();
    Ok(())
}
