//! Purchase logs in, one shape out: a [`Dataset`] of purchase events with
//! interned user and item ids, whatever the source format. Training,
//! evaluation and the history statistics all start from it.
//!
//! - [`retail`]: the UCI Online Retail CSV as shipped, with EVAL_PROTOCOL v1's cleaning.
//! - [`generic`]: `events.csv` + `items.csv`, the format any shop can export.
//! - [`from_store`]: the catalog and the purchases of shoprank's own store.
//! - [`split`]: the protocol's time split, catalog, item texts and test users.

pub(crate) mod from_store;
pub(crate) mod generic;
pub(crate) mod retail;
pub(crate) mod split;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A dense index an [`Interner`] hands out for a string id.
pub trait DenseId: Copy + Eq + std::hash::Hash + Ord + std::fmt::Debug {
    fn from_index(index: usize) -> Self;
    fn index(self) -> usize;
}

/// Declares a `u32` newtype usable as an [`Interner`]'s index.
macro_rules! dense_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(u32);

        impl DenseId for $name {
            fn from_index(index: usize) -> Self {
                Self(u32::try_from(index).expect("fewer than 2^32 distinct ids"))
            }
            fn index(self) -> usize {
                self.0 as usize
            }
        }
    };
}

dense_id!(
    /// A user's interned index in one [`Dataset`].
    UserIdx
);
dense_id!(
    /// An item's interned index in one [`Dataset`]. Not a position in the
    /// history statistics ([`crate::model::stats::ItemPos`]): the two meet
    /// only through the item's id string.
    ItemIdx
);
dense_id!(
    /// A description's interned index (UCI rows each carry their own text).
    TextIdx
);

/// One purchase: who bought what, when, how many and at what unit price.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Event {
    pub user: UserIdx,
    pub item: ItemIdx,
    /// Seconds since the Unix epoch, shop-local time.
    pub time: i64,
    pub quantity: f32,
    /// Unit price; `None` when neither the event nor its item carries one.
    pub price: Option<f32>,
    /// The text this event carried, in [`Dataset::descriptions`]; `None`
    /// where texts come from a separate item table.
    pub text: Option<TextIdx>,
}

/// Interned ids: dense indices for the maths, original strings for output.
#[derive(Debug, Clone)]
pub struct Interner<I> {
    names: Vec<String>,
    index: HashMap<String, I>,
}

impl<I> Default for Interner<I> {
    fn default() -> Self {
        Self { names: Vec::new(), index: HashMap::new() }
    }
}

impl<I: DenseId> Interner<I> {
    pub(crate) fn intern(&mut self, name: &str) -> I {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = I::from_index(self.names.len());
        self.names.push(name.to_string());
        self.index.insert(name.to_string(), i);
        i
    }
    pub(crate) fn get(&self, name: &str) -> Option<I> {
        self.index.get(name).copied()
    }
    pub(crate) fn name(&self, i: I) -> &str {
        &self.names[i.index()]
    }
    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }
}

/// Rows read, kept, and skipped for each reason; reported, never silent.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ImportReport {
    pub rows: usize,
    pub kept: usize,
    /// Reason → number of rows skipped for it.
    pub skipped: std::collections::BTreeMap<String, usize>,
    /// Reason → number of rows kept with a value ignored (an unreadable
    /// optional price, say).
    pub warned: std::collections::BTreeMap<String, usize>,
    /// The first 10 skipped rows, each as `FILE, line N: reason: detail`,
    /// where the detail names the column, its value and what was expected.
    pub examples: Vec<String>,
}

impl ImportReport {
    /// Counts a row of `file` skipped for `reason` (the summary's key, so a
    /// fixed text); keeps the first few with `detail` (the column, the value
    /// found, what was expected; may be empty) for the person fixing the file.
    pub(crate) fn skip(&mut self, file: impl AsRef<Path>, line: usize, reason: &str, detail: &str) {
        *self.skipped.entry(reason.to_string()).or_default() += 1;
        if self.examples.len() < 10 {
            let detail = if detail.is_empty() { String::new() } else { format!(": {detail}") };
            self.examples.push(format!("{}, line {line}: {reason}{detail}", file.as_ref().display()));
        }
    }

    /// Counts a row of `file` kept with a value ignored for `reason`; keeps
    /// the first few with `detail`, as [`ImportReport::skip`] does.
    pub(crate) fn warn(&mut self, file: impl AsRef<Path>, line: usize, reason: &str, detail: &str) {
        *self.warned.entry(reason.to_string()).or_default() += 1;
        if self.examples.len() < 10 {
            self.examples.push(format!("{}, line {line}: {reason}: {detail}", file.as_ref().display()));
        }
    }

    /// The error for a source none of whose rows (in `path`) could be used:
    /// it names the first skipped row of that file.
    pub(crate) fn nothing_usable(&self, path: impl Into<PathBuf>) -> DataError {
        let path = path.into();
        let prefix = format!("{},", path.display());
        let first_skipped = self.examples.iter().find(|e| e.starts_with(&prefix)).or(self.examples.first()).cloned();
        DataError::Empty { path, summary: self.summary(), first_skipped }
    }

    pub(crate) fn summary(&self) -> String {
        let mut text = format!("{} rows read, {} kept", self.rows, self.kept);
        for (reason, count) in &self.skipped {
            text.push_str(&format!(", {count} skipped ({reason})"));
        }
        for (reason, count) in &self.warned {
            text.push_str(&format!(", {count} kept with a warning ({reason})"));
        }
        text
    }
}

/// A purchase log, events sorted by time.
#[derive(Debug, Default, Clone)]
pub struct Dataset {
    pub users: Interner<UserIdx>,
    pub items: Interner<ItemIdx>,
    pub events: Vec<Event>,
    /// Texts referenced by `Event::text` (UCI: each row's Description).
    pub descriptions: Interner<TextIdx>,
    /// Fixed item texts by item index (generic format); empty otherwise.
    pub item_texts: Vec<Option<String>>,
    pub report: ImportReport,
}

/// Which importer reads the data.
#[derive(Debug, Clone)]
pub enum DataSource {
    /// The UCI Online Retail CSV (`.csv` or `.csv.gz`).
    OnlineRetail(PathBuf),
    /// `events.csv` and `items.csv` in the generic format.
    Generic { events: PathBuf, items: PathBuf },
    /// shoprank's store: its catalog and its purchase events.
    Store(crate::config::StoreSettings),
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot open {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error("{path}, line {line}: {problem}")]
    Malformed { path: PathBuf, line: usize, problem: String },
    #[error("{path}: no usable rows ({summary}){}", first_skipped.as_ref().map(|e| format!("; the first skipped: {e}")).unwrap_or_default())]
    Empty { path: PathBuf, summary: String, first_skipped: Option<String> },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// As the command line gave it: the file, or `events + items`.
impl std::fmt::Display for DataSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataSource::OnlineRetail(path) => write!(f, "{}", path.display()),
            DataSource::Generic { events, items } => write!(f, "{} + {}", events.display(), items.display()),
            DataSource::Store(store) => write!(f, "store {}", redacted(&store.url)),
        }
    }
}

impl DataSource {
    pub fn load(&self) -> Result<Dataset, DataError> {
        match self {
            DataSource::OnlineRetail(path) => retail::load(path),
            DataSource::Generic { events, items } => generic::load(events, items),
            DataSource::Store(settings) => {
                let store =
                    crate::store::open(&settings.location(), crate::store::PoolLimits::from_settings(settings))?;
                let data = from_store::load(store.as_ref())?;
                if data.events.is_empty() {
                    return Err(data.report.nothing_usable(redacted(&settings.url)));
                }
                Ok(data)
            }
        }
    }
}

pub(crate) use crate::config::redacted;

/// A header's column name as written, less a spreadsheet's byte order mark
/// and surrounding spaces.
pub(crate) fn header_name(name: &str) -> &str {
    name.trim_start_matches('\u{feff}').trim()
}

/// The error for a header without the column `missing`: line 1, what the
/// header has, what is required, and `hint` (may be empty).
pub(crate) fn missing_column(
    path: &Path,
    header: &csv::StringRecord,
    missing: &str,
    required: &[&str],
    hint: &str,
) -> DataError {
    let found = header.iter().collect::<Vec<_>>().join(",");
    DataError::Malformed {
        path: path.into(),
        line: 1,
        problem: format!(
            "the header lacks the required column `{missing}` (it has: {found}; required: {}){hint}",
            required.join(",")
        ),
    }
}

/// Opens a log file, transparently un-gzipping `*.gz`.
pub(crate) fn open_maybe_gz(path: &Path) -> Result<Box<dyn std::io::Read>, DataError> {
    crate::model::open_maybe_gz(path).map_err(|source| DataError::Open { path: path.into(), source })
}

/// Parses `YYYY-MM-DD HH:MM:SS`, `YYYY-MM-DDTHH:MM:SS[Z]`, `YYYY-MM-DD` or
/// integer Unix seconds into Unix seconds.
pub fn parse_time(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<i64>() {
        return Some(seconds);
    }
    let text = text.trim_end_matches('Z');
    for format in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(text, format) {
            return Some(t.and_utc().timestamp());
        }
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp())
}

impl Dataset {
    /// Sorts events by time (stable: same-time events keep file order).
    pub(crate) fn finish(mut self) -> Self {
        self.events.sort_by_key(|e| e.time);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_time_formats_it_documents() {
        let t = parse_time("2011-11-01 00:00:00").unwrap();
        assert_eq!(parse_time("2011-11-01T00:00:00Z"), Some(t));
        assert_eq!(parse_time("2011-11-01"), Some(t));
        assert_eq!(parse_time(&t.to_string()), Some(t));
        assert_eq!(parse_time("yesterday"), None);
    }
}
