//! Encoder throughput on the peer harness's corpus: product titles at batch
//! 1/8/32/128 (file order, as the peers are timed) and ~100-token user texts
//! at batch 1, for each backbone and precision of all-MiniLM-L6-v2, and for
//! the Chinese m3e-small on the same texts and on the corpus's Chinese titles.
//!
//! Before timing, each model's arithmetic per text is printed (multiply-adds
//! ×2 over its layers for the corpus's token counts in that model's own
//! vocabulary), so texts/s converts to GFLOP/s and the two models compare per
//! FLOP, not per text: their tokenizers cut the same text differently.
//!
//! `cargo bench --bench encoder`; texts/s = criterion's "thrpt".

#[path = "common.rs"]
mod common;

/// The allocator the `shoprank` binary uses (see src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::cell::Cell;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shoprank::{Encoder, EncoderFiles, Precision, Settings, TokenizedText};

/// `model`'s encoder (its preset's window) in `precision`; `reference`
/// picks candle-transformers' BertModel.
fn encoder(model: &str, precision: Precision, reference: bool) -> Encoder {
    let settings = Settings::load_with_preset(None, Some(model)).expect("preset").rooted_at(&common::repo_path(""));
    let settings = shoprank::EncoderSettings { precision, ..settings.encoder };
    let files =
        EncoderFiles::from_dir(&common::repo_path(&format!("models/{model}"))).expect("run scripts/fetch-model all");
    if reference {
        Encoder::load_reference(&files, &settings).expect("encoder")
    } else {
        Encoder::load(&files, &settings).expect("encoder")
    }
}

fn tokenized(encoder: &Encoder, texts: &[String]) -> Vec<TokenizedText> {
    texts.iter().map(|t| encoder.tokenize(t).expect("tokenize")).collect()
}

/// Floating-point operations of one forward pass over a text of `len` tokens
/// with `config` (the model's config.json): the linear layers (Q/K/V,
/// attention output, the two feed-forward products) and attention's two
/// products, 2 per multiply-add.
fn forward_flops(config: &serde_json::Value, len: usize) -> f64 {
    let size = |key: &str| config[key].as_u64().expect("size") as f64;
    let (h, i, layers) = (size("hidden_size"), size("intermediate_size"), size("num_hidden_layers"));
    let t = len as f64;
    layers * 2.0 * (t * (4.0 * h * h + 2.0 * h * i) + 2.0 * t * t * h)
}

fn describe(model: &str, set: &str, tokens: &[TokenizedText]) {
    let path = common::repo_path(&format!("models/{model}/config.json"));
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).expect("config")).unwrap();
    let n = tokens.len() as f64;
    let mean_tokens = tokens.iter().map(|t| t.len()).sum::<usize>() as f64 / n;
    let mflop = tokens.iter().map(|t| forward_flops(&config, t.len())).sum::<f64>() / n / 1e6;
    eprintln!("{model} {set}: {} texts, {mean_tokens:.1} tokens and {mflop:.1} MFLOP per text", tokens.len());
}

fn bench_titles(c: &mut Criterion, group: &str, tokens: &[TokenizedText], encoder: &Encoder, batches: &[usize]) {
    let mut group = c.benchmark_group(group);
    group.sample_size(10);
    for &batch in batches {
        let batches: Vec<Vec<&TokenizedText>> = tokens.chunks(batch).map(|c| c.iter().collect()).collect();
        group.throughput(Throughput::Elements(batch as u64));
        // The position survives criterion's samples, so the run goes
        // round the whole corpus as the peer harness does, not its start.
        let next = Cell::new(0);
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batches, |b, batches| {
            b.iter(|| {
                let out = encoder.embed_tokenized(&batches[next.get() % batches.len()]).expect("embed");
                next.set(next.get() + 1);
                out
            })
        });
    }
    group.finish();
}

fn bench_user_texts(c: &mut Criterion, group: &str, tokens: &[TokenizedText], encoder: &Encoder) {
    let mut group = c.benchmark_group(group);
    group.sample_size(20);
    group.throughput(Throughput::Elements(1));
    let next = Cell::new(0);
    group.bench_function("1", |b| {
        b.iter(|| {
            let out = encoder.embed_tokenized(&[&tokens[next.get() % tokens.len()]]).expect("embed");
            next.set(next.get() + 1);
            out
        })
    });
    group.finish();
}

fn bench_encoder(c: &mut Criterion) {
    common::configure_threads_once();
    let titles = common::corpus("titles.jsonl");
    let chinese_titles = common::corpus_where("titles.jsonl", "lang", "zh");
    let users = common::corpus("user_texts.jsonl");
    let variants = [
        ("all-MiniLM-L6-v2", "bertmodel-f32", Precision::F32, true),
        ("all-MiniLM-L6-v2", "fast-f32", Precision::F32, false),
        ("all-MiniLM-L6-v2", "fast-int8", Precision::Int8, false),
        ("m3e-small", "fast-f32", Precision::F32, false),
        ("m3e-small", "fast-int8", Precision::Int8, false),
    ];
    for (model, name, precision, reference) in variants {
        if EncoderFiles::from_dir(&common::repo_path(&format!("models/{model}"))).is_err() {
            eprintln!("SKIPPED {model} {name}: its weights are missing (scripts/fetch-model {model})");
            continue;
        }
        let encoder = encoder(model, precision, reference);
        let title_tokens = tokenized(&encoder, &titles);
        let user_tokens = tokenized(&encoder, &users);
        if name == "fast-f32" {
            describe(model, "titles", &title_tokens);
            describe(model, "user texts", &user_tokens);
        }
        // "encoder/<model>/<variant>/...": the MiniLM names kept their old
        // suffixes, so filters such as 'fast-f32/titles' still select them.
        bench_titles(c, &format!("encoder/{model}/{name}/titles"), &title_tokens, &encoder, &[1, 8, 32, 128]);
        bench_user_texts(c, &format!("encoder/{model}/{name}/user_text"), &user_tokens, &encoder);
        if model == "m3e-small" {
            let zh_tokens = tokenized(&encoder, &chinese_titles);
            if name == "fast-f32" {
                describe(model, "Chinese titles", &zh_tokens);
            }
            bench_titles(c, &format!("encoder/{model}/{name}/zh_titles"), &zh_tokens, &encoder, &[1, 32]);
        }
    }
}

criterion_group!(benches, bench_encoder);
criterion_main!(benches);
