//! Encoder throughput on the peer harness's corpus: product titles at batch
//! 1/8/32/128 (file order, as the peers are timed) and ~100-token user texts
//! at batch 1, for each backbone and precision.
//!
//! `cargo bench --bench encoder`; texts/s = criterion's "thrpt".

#[path = "common.rs"]
mod common;

/// The allocator the `shoprank` binary uses (see src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shoprank::config::Precision;
use shoprank::model::encoder::{Encoder, TokenizedText};
use shoprank::model::files::EncoderFiles;

/// The encoder in `precision`; `reference` picks candle-transformers' BertModel.
fn encoder(precision: Precision, reference: bool) -> Encoder {
    let mut settings = common::settings().encoder;
    settings.precision = precision;
    let files = EncoderFiles::from_dir(&common::repo_path("models/all-MiniLM-L6-v2")).expect("run scripts/fetch-model");
    if reference {
        Encoder::load_reference(&files, &settings).expect("encoder")
    } else {
        Encoder::load(&files, &settings).expect("encoder")
    }
}

fn tokenized(encoder: &Encoder, texts: &[String]) -> Vec<TokenizedText> {
    texts.iter().map(|t| encoder.tokenize(t).expect("tokenize")).collect()
}

fn bench_encoder(c: &mut Criterion) {
    let titles = common::corpus("titles.jsonl");
    let users = common::corpus("user_texts.jsonl");
    let variants = [
        ("bertmodel-f32", Precision::F32, true),
        ("fast-f32", Precision::F32, false),
        ("fast-int8", Precision::Int8, false),
    ];
    for (name, precision, reference) in variants {
        let encoder = encoder(precision, reference);
        let title_tokens = tokenized(&encoder, &titles);
        let mut group = c.benchmark_group(format!("encoder/{name}/titles"));
        group.sample_size(10);
        for batch in [1usize, 8, 32, 128] {
            let batches: Vec<Vec<&TokenizedText>> = title_tokens.chunks(batch).map(|c| c.iter().collect()).collect();
            group.throughput(Throughput::Elements(batch as u64));
            group.bench_with_input(BenchmarkId::from_parameter(batch), &batches, |b, batches| {
                let mut next = 0;
                b.iter(|| {
                    let out = encoder.embed_tokenized(&batches[next % batches.len()]).expect("embed");
                    next += 1;
                    out
                })
            });
        }
        group.finish();

        let user_tokens = tokenized(&encoder, &users);
        let mut group = c.benchmark_group(format!("encoder/{name}/user_text"));
        group.sample_size(20);
        group.throughput(Throughput::Elements(1));
        group.bench_function("1", |b| {
            let mut next = 0;
            b.iter(|| {
                let out = encoder.embed_tokenized(&[&user_tokens[next % user_tokens.len()]]).expect("embed");
                next += 1;
                out
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench_encoder);
criterion_main!(benches);
