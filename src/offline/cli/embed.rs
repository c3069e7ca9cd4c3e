//! `shoprank embed`: JSONL `{"id", "text"}` in, JSONL `{"id", "vector"}` out,
//! for precomputing a catalog's vectors or checking the encoder.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::config::Settings;
use crate::model::encoder::Encoder;

#[derive(Args)]
pub struct EmbedArgs {
    /// Input file (default: standard input).
    #[arg(long)]
    input: Option<PathBuf>,
    /// Output file (default: standard output).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 32)]
    batch: usize,
}

#[derive(serde::Deserialize)]
struct EmbedLine {
    id: serde_json::Value,
    text: String,
}

/// `shoprank embed`: JSONL `{"id", "text"}` in, JSONL `{"id", "vector"}` out.
pub(crate) fn embed(settings: &Settings, args: &EmbedArgs) -> Result<()> {
    let encoder = Encoder::open(&settings.encoder)?;
    let batch = args.batch.max(1);
    let reader: Box<dyn BufRead> = match &args.input {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    let mut writer: Box<dyn Write> = match &args.output {
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
        let vectors = encoder.embed(&texts, batch)?;
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
        let parsed: EmbedLine = serde_json::from_str(&line)
            .with_context(|| format!("line {}: expected {{\"id\": ..., \"text\": \"...\"}}", number + 1))?;
        pending.push(parsed);
        progress.inc(1);
        if pending.len() >= batch * 8 {
            flush(&mut pending, &mut writer)?;
        }
    }
    flush(&mut pending, &mut writer)?;
    writer.flush()?;
    progress.finish_and_clear();
    Ok(())
}
