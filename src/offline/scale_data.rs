//! Larger purchase logs derived from a real one, for measuring how training,
//! evaluation and serving scale with the catalog (`shoprank scale-data`).
//!
//! The real log is replicated `R` times (`R` = the wanted catalog size over
//! the log's, rounded): replica `r` has its own copy of every item (id
//! `r{r}-{id}`, the title varied by two words of its own from replica 1 on)
//! and its own copy of every customer (`r{r}-{id}`). Each customer copy is
//! kept with one probability for the whole log, chosen so the result has
//! about `events_per_item` events per item, and a kept customer keeps their
//! whole history: basket sizes, repeat buying, seasons and the time span stay
//! those of the real log, and so does the popularity skew, in expectation.
//! A share of every kept customer's purchases (`cross_share`) goes to the same
//! product in another replica, so the replicas are not islands: the
//! co-purchase graph links them as a larger store's would.
//!
//! Deterministic given the log and the seed. The result is written in the
//! generic format (`events.csv`, `items.csv`) that `train --events --items`
//! reads.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::offline::data::split::Split;
use crate::offline::data::Dataset;

/// Words that vary a replica's titles ("... VINTAGE LINEN").
const STYLES: [&str; 24] = [
    "VINTAGE", "RUSTIC", "MODERN", "CLASSIC", "DELUXE", "MINI", "JUMBO", "PASTEL", "BRIGHT", "NORDIC", "FRENCH",
    "RETRO", "GARDEN", "FESTIVE", "COUNTRY", "URBAN", "SUMMER", "WINTER", "GOLDEN", "SILVER", "ROYAL", "PETITE",
    "GRAND", "BOHO",
];
const MATERIALS: [&str; 24] = [
    "LINEN", "CERAMIC", "ENAMEL", "WOODEN", "GLASS", "COTTON", "PAPER", "TIN", "FELT", "WICKER", "VELVET", "CANVAS",
    "BAMBOO", "ZINC", "CORK", "JUTE", "WOOL", "SLATE", "COPPER", "RESIN", "LACE", "SATIN", "OAK", "PEWTER",
];

#[derive(Debug, Clone, Copy)]
pub(crate) struct ScaleOptions {
    /// Wanted catalog size (about; a whole number of replicas is made).
    pub items: usize,
    /// Wanted events per item (about).
    pub events_per_item: f64,
    /// Share of purchases moved to the same product in another replica.
    pub cross_share: f64,
    pub seed: u64,
}

/// What was written, for the log line and the tests.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ScaleReport {
    pub replicas: usize,
    pub items: usize,
    pub customers: usize,
    pub events: usize,
    pub cross_replica_events: usize,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ScaleError {
    #[error("the source log has no events")]
    Empty,
    #[error("writing {path}: {source}")]
    Write { path: String, source: std::io::Error },
}

/// The replica suffix of titles: none for replica 0, two words after.
fn variant(replica: usize) -> String {
    match replica {
        0 => String::new(),
        r => format!(" {} {}", STYLES[r % STYLES.len()], MATERIALS[(r / STYLES.len()) % MATERIALS.len()]),
    }
}

/// Generates the scaled log from `data` into `out/events.csv` and `out/items.csv`.
pub(crate) fn generate(data: &Dataset, options: &ScaleOptions, out: &Path) -> Result<ScaleReport, ScaleError> {
    if data.events.is_empty() {
        return Err(ScaleError::Empty);
    }
    // Every item's text, as a split over the whole log sees it.
    let everything = Split::new(data, i64::MAX, None);
    let items: BTreeMap<&str, &str> =
        everything.item_text.iter().map(|(&item, text)| (data.items.name(item), text.as_str())).collect();
    let replicas = ((options.items as f64 / items.len() as f64).round() as usize).max(1);
    let keep = (options.events_per_item * items.len() as f64 / data.events.len() as f64).min(1.0);

    let mut by_customer: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (index, event) in data.events.iter().enumerate() {
        if everything.item_text.contains_key(&event.item) {
            by_customer.entry(data.users.name(event.user)).or_default().push(index);
        }
    }

    std::fs::create_dir_all(out).map_err(|source| ScaleError::Write { path: out.display().to_string(), source })?;
    let write_error = |path: &Path| {
        let path = path.display().to_string();
        move |source| ScaleError::Write { path, source }
    };
    let items_path = out.join("items.csv");
    let mut items_file = std::io::BufWriter::new(std::fs::File::create(&items_path).map_err(write_error(&items_path))?);
    let mut items_csv = csv::Writer::from_writer(&mut items_file);
    let csv_error = |path: &Path| {
        let path = path.display().to_string();
        move |e: csv::Error| ScaleError::Write { path, source: e.into() }
    };
    items_csv.write_record(["item_id", "text"]).map_err(csv_error(&items_path))?;
    for replica in 0..replicas {
        let suffix = variant(replica);
        for (id, text) in &items {
            items_csv
                .write_record([format!("r{replica}-{id}"), format!("{text}{suffix}")])
                .map_err(csv_error(&items_path))?;
        }
    }
    items_csv.flush().map_err(write_error(&items_path))?;
    drop(items_csv);
    items_file.flush().map_err(write_error(&items_path))?;

    let events_path = out.join("events.csv");
    let mut events_file =
        std::io::BufWriter::new(std::fs::File::create(&events_path).map_err(write_error(&events_path))?);
    writeln!(events_file, "user_id,item_id,timestamp,quantity,price").map_err(write_error(&events_path))?;
    let mut rng = StdRng::seed_from_u64(options.seed);
    let mut report =
        ScaleReport { replicas, items: replicas * items.len(), customers: 0, events: 0, cross_replica_events: 0 };
    for replica in 0..replicas {
        for (customer, events) in &by_customer {
            if !rng.gen_bool(keep) {
                continue;
            }
            report.customers += 1;
            for &index in events {
                let event = &data.events[index];
                let item_replica = if replicas > 1 && rng.gen_bool(options.cross_share) {
                    report.cross_replica_events += 1;
                    // Any other replica, uniformly.
                    (replica + rng.gen_range(1..replicas)) % replicas
                } else {
                    replica
                };
                let price = event.price.map(|p| p.to_string()).unwrap_or_default();
                writeln!(
                    events_file,
                    "r{replica}-{},r{item_replica}-{},{},{},{price}",
                    csv_field(customer),
                    csv_field(data.items.name(event.item)),
                    event.time,
                    event.quantity,
                )
                .map_err(write_error(&events_path))?;
                report.events += 1;
            }
        }
    }
    events_file.flush().map_err(write_error(&events_path))?;
    Ok(report)
}

/// An id as one CSV field (quoted if it holds a comma or a quote).
fn csv_field(id: &str) -> std::borrow::Cow<'_, str> {
    if id.contains([',', '"', '\n']) {
        format!("\"{}\"", id.replace('"', "\"\"")).into()
    } else {
        id.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offline::data::split::tests::synthetic;
    use crate::offline::data::{generic, DenseId, UserIdx};

    fn user_ids(data: &Dataset) -> std::collections::BTreeSet<String> {
        (0..data.users.len()).map(|i| data.users.name(UserIdx::from_index(i)).to_string()).collect()
    }

    /// 40 customers over 10 products, 6 purchases each.
    fn source() -> Dataset {
        let days = ["2011-09-01", "2011-09-15", "2011-10-01", "2011-10-15", "2011-11-01", "2011-11-15"];
        let rows: Vec<(String, String, &str, String)> = (0..40)
            .flat_map(|c| {
                days.iter().enumerate().map(move |(k, day)| {
                    let item = (c * 3 + k * 7) % 10;
                    (format!("c{c}"), format!("P{item}"), *day, format!("PRODUCT {item}"))
                })
            })
            .collect();
        let borrowed: Vec<(&str, &str, &str, &str)> =
            rows.iter().map(|(c, i, d, t)| (c.as_str(), i.as_str(), *d, t.as_str())).collect();
        synthetic(&borrowed)
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("shoprank-scale-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn the_same_seed_writes_the_same_files_and_another_seed_does_not() {
        let data = source();
        let options = ScaleOptions { items: 40, events_per_item: 12.0, cross_share: 0.1, seed: 3 };
        let (a, b, c) = (scratch("a"), scratch("b"), scratch("c"));
        let report = generate(&data, &options, &a).unwrap();
        assert_eq!(generate(&data, &options, &b).unwrap(), report);
        generate(&data, &ScaleOptions { seed: 4, ..options }, &c).unwrap();
        for file in ["events.csv", "items.csv"] {
            assert_eq!(std::fs::read(a.join(file)).unwrap(), std::fs::read(b.join(file)).unwrap(), "{file}");
        }
        assert_ne!(std::fs::read(a.join("events.csv")).unwrap(), std::fs::read(c.join("events.csv")).unwrap());
        for dir in [a, b, c] {
            std::fs::remove_dir_all(dir).unwrap();
        }
    }

    #[test]
    fn the_scaled_log_has_the_asked_shape_and_reads_back_in_the_generic_format() {
        let data = source();
        let options = ScaleOptions { items: 40, events_per_item: 12.0, cross_share: 0.1, seed: 1 };
        let dir = scratch("shape");
        let report = generate(&data, &options, &dir).unwrap();
        assert_eq!((report.replicas, report.items), (4, 40), "10 products, 4 replicas");
        // 240 source events over 10 items: keep = 12 · 10 / 240 = 0.5 of the customers.
        let per_item = report.events as f64 / report.items as f64;
        assert!((8.0..16.0).contains(&per_item), "{per_item} events per item");
        let cross = report.cross_replica_events as f64 / report.events as f64;
        assert!((0.04..0.2).contains(&cross), "cross-replica share {cross}");
        assert_eq!(report.events, report.customers * 6, "kept customers keep their whole history");

        let scaled = generic::load(&dir.join("events.csv"), &dir.join("items.csv")).unwrap();
        assert_eq!(scaled.events.len(), report.events);
        assert_eq!(scaled.items.len(), 40);
        assert_eq!(user_ids(&scaled).len(), report.customers);
        assert!(user_ids(&scaled).iter().all(|u| u.starts_with('r')));
        let texts: std::collections::HashSet<&str> = scaled.item_texts.iter().flatten().map(String::as_str).collect();
        assert_eq!(texts.len(), 40, "every replica's titles are its own");
        assert!(texts.contains("PRODUCT 3") && texts.contains("PRODUCT 3 MODERN LINEN"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
