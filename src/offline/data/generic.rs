//! Importer for the generic export format any shop can produce (UTF-8 CSV,
//! comma-separated, gzipped or not by the `.gz` ending, a header row naming
//! the columns in any order and any case):
//!
//! - `events.csv`: `user_id,item_id,timestamp[,quantity,price]` — one row per
//!   purchase. `timestamp` is `YYYY-MM-DD HH:MM:SS`, `YYYY-MM-DD HH:MM`, ISO
//!   8601 (`YYYY-MM-DDTHH:MM:SS[.fff][Z]`), `YYYY-MM-DD` or Unix seconds.
//!   Without `quantity` every purchase counts once; without `price` the
//!   event takes its item's price from `items.csv`, else it has none.
//! - `items.csv`: `item_id,text[,price]` — the product's title/description.
//!   Without `price` (or with it empty) the item has no price: its features
//!   use the median price of the items that have one (or 1 when none has).
//!
//! A file that cannot be read as such (a missing required column, broken
//! CSV quoting, text that is not UTF-8) stops the import with the file and
//! line. A row that breaks a rule (an empty id, an unknown item, a bad
//! timestamp, a quantity ≤ 0) is skipped, counted by reason and reported
//! with its line, column, value and what was expected.

use std::collections::HashMap;
use std::path::Path;

use super::{header_name, missing_column, open_maybe_gz, parse_time, DataError, Dataset, DenseId, Event};

/// What the `timestamp` column accepts, as a skipped row's detail says it.
const TIMESTAMP_FORMS: &str =
    "YYYY-MM-DD HH:MM:SS, YYYY-MM-DD HH:MM, YYYY-MM-DDTHH:MM:SS[.fff][Z], YYYY-MM-DD or Unix seconds";

/// One file's header: where each column is, by lower-cased name.
pub(crate) struct Columns {
    index: HashMap<String, usize>,
}

impl Columns {
    pub(crate) fn read(
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
            headers.iter().enumerate().map(|(i, h)| (header_name(h).to_ascii_lowercase(), i)).collect();
        if let Some(column) = required.iter().find(|c| !index.contains_key(**c)) {
            let separated = headers.len() == 1 && headers.iter().any(|h| h.contains(';') || h.contains('\t'));
            let hint = if separated {
                "; the file looks separated by `;` or tabs: shoprank reads comma-separated CSV"
            } else {
                ""
            };
            return Err(missing_column(path, headers, column, required, hint));
        }
        Ok(Self { index })
    }

    /// The column's value in `record`, trimmed; `None` when the column is
    /// absent or the value empty.
    pub(crate) fn get<'r>(&self, record: &'r csv::StringRecord, column: &str) -> Option<&'r str> {
        self.index.get(column).and_then(|&i| record.get(i)).map(str::trim).filter(|v| !v.is_empty())
    }
}

pub(crate) fn records(path: &Path) -> Result<csv::Reader<Box<dyn std::io::Read>>, DataError> {
    Ok(csv::ReaderBuilder::new().flexible(true).from_reader(open_maybe_gz(path)?))
}

/// A CSV record, or the error naming its file and line.
pub(crate) fn record_at(
    path: &Path,
    line: usize,
    record: csv::Result<csv::StringRecord>,
) -> Result<csv::StringRecord, DataError> {
    record.map_err(|e| DataError::Malformed { path: path.into(), line, problem: e.to_string() })
}

/// Reads `items.csv` into `data`'s item ids and texts (skipped rows counted
/// in its report); returns each item's price, by item index.
pub(crate) fn read_items(items_path: &Path, data: &mut Dataset) -> Result<Vec<Option<f32>>, DataError> {
    let mut item_prices: Vec<Option<f32>> = Vec::new();

    let mut reader = records(items_path)?;
    let columns = Columns::read(items_path, &mut reader, &["item_id", "text"])?;
    for (index, record) in reader.records().enumerate() {
        let line = index + 2;
        let record = record_at(items_path, line, record)?;
        let (Some(id), Some(text)) = (columns.get(&record, "item_id"), columns.get(&record, "text")) else {
            let detail = format!(
                "item_id {:?}, text {:?}",
                field(&columns, &record, "item_id"),
                field(&columns, &record, "text")
            );
            data.report.skip(items_path, line, "items.csv: empty item_id or text", &detail);
            continue;
        };
        let item = data.items.intern(id).index();
        if item < data.item_texts.len() {
            data.report.skip(
                items_path,
                line,
                "items.csv: duplicate item_id",
                &format!("item_id {id:?} (the first row is kept)"),
            );
            continue;
        }
        data.item_texts.push(Some(text.to_string()));
        let price = match columns.get(&record, "price") {
            None => None,
            Some(value) => match parse_price(value) {
                Some(price) => Some(price),
                None => {
                    // The item stays, without a price: price is optional.
                    data.report.warn(
                        items_path,
                        line,
                        "items.csv: price ignored (not a number >= 0)",
                        &format!("item_id {id:?}, price {value:?}"),
                    );
                    None
                }
            },
        };
        item_prices.push(price);
    }
    Ok(item_prices)
}

pub(crate) fn load(events_path: &Path, items_path: &Path) -> Result<Dataset, DataError> {
    let mut data = Dataset::default();
    let item_prices = read_items(items_path, &mut data)?;

    let mut reader = records(events_path)?;
    let columns = Columns::read(events_path, &mut reader, &["user_id", "item_id", "timestamp"])?;
    for (index, record) in reader.records().enumerate() {
        let line = index + 2;
        data.report.rows += 1;
        let record = record_at(events_path, line, record)?;
        match parse_event(&columns, &record, &mut data, &item_prices) {
            Ok(event) => {
                data.events.push(event);
                data.report.kept += 1;
            }
            Err(Skip { reason, detail }) => data.report.skip(events_path, line, reason, &detail),
        }
    }
    if data.events.is_empty() {
        return Err(data.report.nothing_usable(events_path));
    }
    Ok(data.finish())
}

/// A column's raw value, for a skipped row's detail (`""` when absent).
fn field<'r>(columns: &Columns, record: &'r csv::StringRecord, column: &str) -> &'r str {
    columns.index.get(column).and_then(|&i| record.get(i)).unwrap_or("")
}

/// A finite price `>= 0`.
fn parse_price(value: &str) -> Option<f32> {
    value.parse::<f32>().ok().filter(|p| p.is_finite() && *p >= 0.0)
}

/// Why an event row was skipped: the reason it is counted under, and the
/// column, value and expectation a person needs to fix it.
struct Skip {
    reason: &'static str,
    detail: String,
}

fn skip(reason: &'static str, detail: String) -> Skip {
    Skip { reason, detail }
}

fn parse_event(
    columns: &Columns,
    record: &csv::StringRecord,
    data: &mut Dataset,
    item_prices: &[Option<f32>],
) -> Result<Event, Skip> {
    let user = columns.get(record, "user_id").ok_or_else(|| skip("empty user_id", "column user_id is empty".into()))?;
    let item_id =
        columns.get(record, "item_id").ok_or_else(|| skip("empty item_id", "column item_id is empty".into()))?;
    let item = data.items.get(item_id).ok_or_else(|| {
        skip("item_id not in items.csv", format!("item_id {item_id:?} has no row in items.csv (with a text)"))
    })?;
    let timestamp =
        columns.get(record, "timestamp").ok_or_else(|| skip("empty timestamp", "column timestamp is empty".into()))?;
    let time = parse_time(timestamp)
        .ok_or_else(|| skip("bad timestamp", format!("timestamp {timestamp:?} is not one of {TIMESTAMP_FORMS}")))?;
    let quantity = match columns.get(record, "quantity") {
        None => 1.0,
        Some(q) => q
            .parse::<f32>()
            .ok()
            .filter(|q| !q.is_nan())
            .ok_or_else(|| skip("bad quantity", format!("quantity {q:?} is not a number")))?,
    };
    if quantity <= 0.0 {
        return Err(skip("quantity <= 0", format!("quantity {quantity} (returns and corrections are not purchases)")));
    }
    let price = match columns.get(record, "price") {
        None => item_prices[item.index()],
        Some(p) => Some(parse_price(p).ok_or_else(|| skip("bad price", format!("price {p:?} is not a number >= 0")))?),
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
        let items =
            write(&dir, "items.csv", "item_id,text,price\nA,Red mug,3.5\nB,Blue mug,\n,no id,1\nC,Green mug,abc\n");
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
                "2024-01-03,u3,C,1\n",
            ),
        );
        let data = load(&events, &items).unwrap();
        assert_eq!(data.events.len(), 3);
        assert_eq!(data.report.rows, 7);
        assert_eq!(data.report.skipped["bad timestamp"], 1);
        assert_eq!(data.report.skipped["item_id not in items.csv"], 1);
        assert_eq!(data.report.skipped["empty user_id"], 1);
        assert_eq!(data.report.skipped["quantity <= 0"], 1);
        assert_eq!(data.report.skipped["items.csv: empty item_id or text"], 1);
        assert_eq!(data.report.warned["items.csv: price ignored (not a number >= 0)"], 1);
        // Events are time-ordered; the price falls back to items.csv, or none.
        let first = data.events[0];
        assert_eq!(data.items.name(first.item), "A");
        assert_eq!(first.price, Some(3.5));
        assert_eq!(data.item_texts[first.item.index()].as_deref(), Some("Red mug"));
        assert!(data.events.iter().filter(|e| data.items.name(e.item) != "A").all(|e| e.price.is_none()));
        // Each skipped row names its file, line, column, value and what was expected.
        let example = |needle: &str| data.report.examples.iter().find(|e| e.contains(needle)).cloned();
        let bad_time = example("bad timestamp").unwrap();
        assert!(bad_time.contains("events.csv, line 4") && bad_time.contains("\"not-a-date\""), "{bad_time}");
        assert!(bad_time.contains("Unix seconds"), "{bad_time}");
        let unknown = example("not in items.csv").unwrap();
        assert!(unknown.contains("line 5") && unknown.contains("\"Z\""), "{unknown}");
    }

    #[test]
    fn missing_column_names_the_file_line_one_and_the_column() {
        let dir = temp_dir("header");
        let items = write(&dir, "items.csv", "item_id,text\nA,Red mug\n");
        let events = write(&dir, "events.csv", "user,item_id,timestamp\nu1,A,2024-01-01\n");
        let err = load(&events, &items).unwrap_err().to_string();
        assert!(err.contains("events.csv, line 1") && err.contains("`user_id`"), "{err}");
        let semicolons = write(&dir, "semi.csv", "user_id;item_id;timestamp\nu1;A;2024-01-01\n");
        let err = load(&semicolons, &items).unwrap_err().to_string();
        assert!(err.contains("separated by `;`"), "{err}");
    }

    #[test]
    fn a_byte_order_mark_and_any_case_in_the_header_are_read() {
        let dir = temp_dir("bom");
        let items = write(&dir, "items.csv", "\u{feff}Item_ID,Text\nA,Red mug\n");
        let events = write(&dir, "events.csv", "\u{feff}USER_ID,Item_Id,TimeStamp\nu1,A,2024-01-01\n");
        assert_eq!(load(&events, &items).unwrap().events.len(), 1);
    }

    #[test]
    fn broken_quoting_stops_with_the_line() {
        let dir = temp_dir("quoting");
        let items = write(&dir, "items.csv", "item_id,text\nA,Red mug\n");
        let events = write(&dir, "events.csv", "user_id,item_id,timestamp\nu1,A,2024-01-01\nu2,A,\"2024-01-02\nu3\n");
        let err = load(&events, &items);
        // The csv crate reads an unclosed quote to the end of the file as one
        // field: the row is then short a column or holds a bad timestamp,
        // and is skipped with its line, or the import stops at it.
        match err {
            Ok(data) => assert_eq!(data.report.rows, 2, "{:?}", data.report),
            Err(e) => assert!(e.to_string().contains("line 3"), "{e}"),
        }
    }

    #[test]
    fn a_log_with_no_usable_row_names_the_first_problem() {
        let dir = temp_dir("empty");
        let items = write(&dir, "items.csv", "item_id,text\nA,Red mug\n");
        let events = write(&dir, "events.csv", "user_id,item_id,timestamp\nu1,A,31/12/2024\n");
        let err = load(&events, &items).unwrap_err().to_string();
        assert!(err.contains("no usable rows") && err.contains("line 2") && err.contains("\"31/12/2024\""), "{err}");
    }
}
