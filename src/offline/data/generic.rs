//! Importer for the generic export format any shop can produce:
//!
//! - `events.csv`: `user_id,item_id,timestamp[,quantity,price]` — one row per
//!   purchase; `timestamp` is `YYYY-MM-DD HH:MM:SS`, ISO 8601 or Unix seconds.
//! - `items.csv`: `item_id,text[,price]` — the product's title/description.
//!
//! Columns are found by header name, in any order. A missing required column
//! is an error naming line 1; a bad row is counted and reported, not fatal.

use std::collections::HashMap;
use std::path::Path;

use super::{open_maybe_gz, parse_time, DataError, Dataset, DenseId, Event};

struct Columns {
    index: HashMap<String, usize>,
}

impl Columns {
    fn read(
        path: &Path,
        reader: &mut csv::Reader<Box<dyn std::io::Read>>,
        required: &[&str],
    ) -> Result<Self, DataError> {
        let headers = reader.headers().map_err(|e| DataError::Malformed {
            path: path.into(),
            line: 1,
            problem: e.to_string(),
        })?;
        let index: HashMap<String, usize> =
            headers.iter().enumerate().map(|(i, h)| (h.trim().to_ascii_lowercase(), i)).collect();
        for column in required {
            if !index.contains_key(*column) {
                return Err(DataError::Malformed {
                    path: path.into(),
                    line: 1,
                    problem: format!(
                        "header lacks the required column `{column}` (found: {})",
                        headers.iter().collect::<Vec<_>>().join(",")
                    ),
                });
            }
        }
        Ok(Self { index })
    }

    fn get<'r>(&self, record: &'r csv::StringRecord, column: &str) -> Option<&'r str> {
        self.index.get(column).and_then(|&i| record.get(i)).map(str::trim).filter(|v| !v.is_empty())
    }
}

fn records(path: &Path) -> Result<csv::Reader<Box<dyn std::io::Read>>, DataError> {
    Ok(csv::ReaderBuilder::new().flexible(true).from_reader(open_maybe_gz(path)?))
}

pub fn load(events_path: &Path, items_path: &Path) -> Result<Dataset, DataError> {
    let mut data = Dataset::default();
    let mut item_prices: Vec<f32> = Vec::new();

    let mut reader = records(items_path)?;
    let columns = Columns::read(items_path, &mut reader, &["item_id", "text"])?;
    for (index, record) in reader.records().enumerate() {
        let line = index + 2;
        let record =
            record.map_err(|e| DataError::Malformed { path: items_path.into(), line, problem: e.to_string() })?;
        let (Some(id), Some(text)) = (columns.get(&record, "item_id"), columns.get(&record, "text")) else {
            data.report.skip(line, "items.csv: empty item_id or text");
            continue;
        };
        let item = data.items.intern(id).index();
        if item < data.item_texts.len() {
            data.report.skip(line, "items.csv: duplicate item_id");
            continue;
        }
        data.item_texts.push(Some(text.to_string()));
        item_prices.push(columns.get(&record, "price").and_then(|p| p.parse().ok()).unwrap_or(f32::NAN));
    }

    let mut reader = records(events_path)?;
    let columns = Columns::read(events_path, &mut reader, &["user_id", "item_id", "timestamp"])?;
    for (index, record) in reader.records().enumerate() {
        let line = index + 2;
        data.report.rows += 1;
        let record =
            record.map_err(|e| DataError::Malformed { path: events_path.into(), line, problem: e.to_string() })?;
        match parse_event(&columns, &record, &mut data, &item_prices) {
            Ok(event) => {
                data.events.push(event);
                data.report.kept += 1;
            }
            Err(reason) => data.report.skip(line, reason),
        }
    }
    if data.events.is_empty() {
        return Err(DataError::Empty { path: events_path.into(), summary: data.report.summary() });
    }
    Ok(data.finish())
}

fn parse_event(
    columns: &Columns,
    record: &csv::StringRecord,
    data: &mut Dataset,
    item_prices: &[f32],
) -> Result<Event, &'static str> {
    let user = columns.get(record, "user_id").ok_or("empty user_id")?;
    let item_id = columns.get(record, "item_id").ok_or("empty item_id")?;
    let item = data.items.get(item_id).ok_or("item_id not in items.csv")?;
    let time = parse_time(columns.get(record, "timestamp").ok_or("empty timestamp")?).ok_or("bad timestamp")?;
    let quantity = match columns.get(record, "quantity") {
        Some(q) => q.parse::<f32>().map_err(|_| "bad quantity")?,
        None => 1.0,
    };
    // NaN fails too: "NaN" parses as a number.
    if quantity.is_nan() || quantity <= 0.0 {
        return Err("quantity <= 0");
    }
    let price = match columns.get(record, "price") {
        Some(p) => p.parse::<f32>().map_err(|_| "bad price")?,
        None => item_prices[item.index()],
    };
    Ok(Event { user: data.users.intern(user), item, time, quantity, price, text: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, body).unwrap();
        path
    }

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("shoprank-generic-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn good_and_bad_rows_are_counted() {
        let dir = temp_dir("rows");
        let items = write(&dir, "items.csv", "item_id,text,price\nA,Red mug,3.5\nB,Blue mug,\n,no id,1\n");
        let events = write(
            &dir,
            "events.csv",
            concat!(
                "timestamp,user_id,item_id,quantity\n",
                "2024-01-02 10:00:00,u1,A,2\n",
                "1704200000,u2,B,1\n",
                "not-a-date,u1,A,1\n",
                "2024-01-03,u1,Z,1\n",
                "2024-01-03,,A,1\n",
                "2024-01-03,u3,A,-1\n",
            ),
        );
        let data = load(&events, &items).unwrap();
        assert_eq!(data.events.len(), 2);
        assert_eq!(data.report.rows, 6);
        assert_eq!(data.report.skipped["bad timestamp"], 1);
        assert_eq!(data.report.skipped["item_id not in items.csv"], 1);
        assert_eq!(data.report.skipped["empty user_id"], 1);
        assert_eq!(data.report.skipped["quantity <= 0"], 1);
        assert_eq!(data.report.skipped["items.csv: empty item_id or text"], 1);
        // Events are time-ordered; the price falls back to items.csv.
        let first = data.events[0];
        assert_eq!(data.items.name(first.item), "A");
        assert_eq!(first.price, 3.5);
        assert_eq!(data.item_texts[first.item.index()].as_deref(), Some("Red mug"));
    }

    #[test]
    fn missing_column_names_line_one() {
        let dir = temp_dir("header");
        let items = write(&dir, "items.csv", "item_id,text\nA,Red mug\n");
        let events = write(&dir, "events.csv", "user,item_id,timestamp\nu1,A,2024-01-01\n");
        let err = load(&events, &items).unwrap_err().to_string();
        assert!(err.contains("line 1") && err.contains("user_id"), "{err}");
    }
}
