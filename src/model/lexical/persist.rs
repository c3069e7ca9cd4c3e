//! The lexical index kept in a directory between runs. tantivy writes each
//! commit's segments and then, atomically, the list of live ones, so a
//! process killed mid-write leaves the last commit readable. The store, not
//! this directory, is what makes catalog writes durable: at start-up the
//! index is reconciled with the store's items (by key and text hash), so a
//! change it missed, a crash between the two commits, or a directory from
//! an older version costs only the items that differ.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::Path;

use tantivy::directory::{Directory, MmapDirectory, INDEX_WRITER_LOCK};
use tantivy::{Index, IndexWriter, TantivyError, Term};

use super::{fingerprint, schema, LexicalError, LexicalIndex, FINGERPRINT, KEY};

/// Written with every commit. An index whose last commit carries another
/// format was cut into other terms (a change to `tokens`) and is emptied.
/// 2: measures (`16 GB` → `16gb`) and plurals' stems; 3: dimensions (`2x4`).
const FORMAT: &str = "shoprank-lexical-3";

/// Commits the writer's changes, marked with this version's format.
pub(super) fn commit(writer: &mut IndexWriter) -> Result<(), LexicalError> {
    let mut prepared = writer.prepare_commit()?;
    prepared.set_payload(FORMAT);
    prepared.commit()?;
    Ok(())
}

/// Deletes every file in `dir` but tantivy's lock files, holding the writer
/// lock meanwhile: refused (and nothing deleted) if another process holds it.
fn empty_if_unheld(dir: &Path) -> Result<(), LexicalError> {
    let io = |source| LexicalError::Io { path: dir.into(), source };
    let directory = MmapDirectory::open(dir).map_err(TantivyError::from)?;
    let _held = directory
        .acquire_lock(&INDEX_WRITER_LOCK)
        .map_err(|error| TantivyError::LockFailure(error, Some("emptying a damaged lexical index".into())))?;
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let lock = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(".tantivy-") && n.ends_with(".lock"));
        if path.is_file() && !lock {
            std::fs::remove_file(&path).map_err(io)?;
        }
    }
    Ok(())
}

/// An item the index should hold, while reconciling.
struct Wanted {
    fingerprint: u64,
    /// A live document already holds it as it is.
    kept: bool,
}

/// What [`LexicalIndex::reconcile`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Documents whose key and text matched an item: kept as they were.
    pub kept: usize,
    /// Items indexed afresh (new, or changed while the index was closed).
    pub added: usize,
    /// Documents removed (items gone or changed, duplicates).
    pub removed: usize,
}

impl LexicalIndex {
    /// The index kept in `dir`, created if missing. One that cannot be read
    /// (damaged, another schema) is emptied and started afresh, but only
    /// while this process holds the directory's writer lock: one another
    /// process holds is an error and left alone, as is any I/O error (it
    /// may pass; a rebuild at a million items costs half a minute).
    pub fn in_dir(dir: &Path) -> Result<Self, LexicalError> {
        match Self::open_dir(dir) {
            Err(error @ LexicalError::Tantivy(TantivyError::LockFailure(..) | TantivyError::IoError(_))) => Err(error),
            Err(error @ LexicalError::Io { .. }) => Err(error),
            Err(error) => {
                tracing::warn!(%error, path = %dir.display(), "the saved lexical index is unusable: building it again");
                empty_if_unheld(dir)?;
                Self::open_dir(dir)
            }
            result => result,
        }
    }

    fn open_dir(dir: &Path) -> Result<Self, LexicalError> {
        std::fs::create_dir_all(dir).map_err(|source| LexicalError::Io { path: dir.into(), source })?;
        let (schema, fields) = schema();
        let directory = MmapDirectory::open(dir).map_err(TantivyError::from)?;
        let index = Index::open_or_create(directory, schema)?;
        let format = index.load_metas()?.payload;
        let this = Self::over(index, fields, true)?;
        if format.as_deref().is_some_and(|f| f != FORMAT) {
            tracing::info!(path = %dir.display(), found = ?format, "the saved lexical index has another format: building it again");
            this.write(|writer| {
                writer.delete_all_documents()?;
                commit(writer)
            })?;
        }
        Ok(this)
    }

    /// Makes the index hold exactly `items` (key, handle, text): documents
    /// whose key and hash of handle and text match are kept, the rest
    /// removed, missing items added, in one commit. On a fresh index this
    /// indexes everything.
    ///
    /// `items` is walked twice (it is cheap to clone): once to hash each
    /// text, once to index the ones not kept, so no text is held meanwhile
    /// (with attributes each is a copy: a million of them would double the
    /// texts' memory during start-up).
    pub fn reconcile<'a, I>(&self, items: I) -> Result<Reconciled, LexicalError>
    where
        I: IntoIterator<Item = (&'a str, u64, Cow<'a, str>)>,
        I::IntoIter: Clone,
    {
        let items = items.into_iter();
        let mut wanted: HashMap<&str, Wanted> = items
            .clone()
            .map(|(key, handle, text)| (key, Wanted { fingerprint: fingerprint(handle, &text), kept: false }))
            .collect();
        let mut stale: HashSet<String> = HashSet::new();
        let searcher = self.reader.searcher();
        for segment in searcher.segment_readers() {
            let Some(keys) = segment.fast_fields().str(KEY)? else { continue };
            let prints = segment.fast_fields().u64(FINGERPRINT)?;
            // Each live document's fingerprint by its key's ordinal, then the
            // key dictionary read once in order: looking each key up by
            // ordinal would decode a dictionary block per document.
            #[derive(Clone, Copy)]
            enum Seen {
                No,
                Once(Option<u64>),
                /// A key on two live documents: never a match (both go).
                Twice,
            }
            let mut by_ord = vec![Seen::No; keys.num_terms()];
            for doc in segment.doc_ids_alive() {
                let Some(ord) = keys.term_ords(doc).next() else { continue };
                let seen = &mut by_ord[ord as usize];
                *seen = match seen {
                    Seen::No => Seen::Once(prints.first(doc)),
                    _ => Seen::Twice,
                };
            }
            let mut terms = keys.dictionary().stream().map_err(tantivy::TantivyError::from)?;
            while terms.advance() {
                let print = match by_ord.get(terms.term_ord() as usize) {
                    None | Some(Seen::No) => continue,
                    Some(Seen::Once(print)) => *print,
                    Some(Seen::Twice) => None,
                };
                let key = String::from_utf8_lossy(terms.key());
                match wanted.get_mut(key.as_ref()) {
                    Some(item) if !item.kept && print == Some(item.fingerprint) => item.kept = true,
                    _ => {
                        stale.insert(key.into_owned());
                    }
                }
            }
        }
        drop(searcher);
        self.write(|writer| self.catch_up(writer, &stale, &mut wanted, items))
    }

    /// The writes of [`Self::reconcile`], committed if there are any.
    fn catch_up<'a>(
        &self,
        writer: &mut IndexWriter,
        stale: &HashSet<String>,
        wanted: &mut HashMap<&str, Wanted>,
        items: impl Iterator<Item = (&'a str, u64, Cow<'a, str>)>,
    ) -> Result<Reconciled, LexicalError> {
        for key in stale {
            writer.delete_term(Term::from_field_text(self.fields.key, key));
            // A duplicate of a kept document: the delete took both.
            if let Some(item) = wanted.get_mut(key.as_str()) {
                item.kept = false;
            }
        }
        let kept = wanted.values().filter(|item| item.kept).count();
        let mut reconciled = Reconciled { removed: stale.len(), kept, added: 0 };
        for (key, handle, text) in items {
            if wanted.get(key).is_some_and(|item| !item.kept) {
                writer.add_document(self.document(key, handle, &text))?;
                reconciled.added += 1;
                // A key listed twice is indexed once.
                wanted.remove(key);
            }
        }
        if reconciled.added + reconciled.removed > 0 {
            commit(writer)?;
        }
        Ok(reconciled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::lexical::{CorpusStats, LexicalQuery};

    /// A directory for an index, removed with the guard.
    fn scratch() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lexical");
        (dir, path)
    }

    /// Each key's handle is its first letter's code.
    fn items<'a>(pairs: &[(&'a str, &'a str)]) -> Vec<(&'a str, u64, Cow<'a, str>)> {
        pairs.iter().map(|(k, t)| (*k, u64::from(k.as_bytes()[0]), Cow::Borrowed(*t))).collect()
    }

    fn found(index: &LexicalIndex, query: &str) -> Vec<String> {
        let stats = index.stats();
        let hits = index.search(&LexicalQuery::new(query, &stats), 10).unwrap();
        let mut keys: Vec<String> = hits.into_iter().map(|(h, _)| char::from(h as u8).to_string()).collect();
        keys.sort();
        keys
    }

    #[test]
    fn a_reopened_index_keeps_what_matches_and_catches_up_with_the_rest() {
        let (_dir, path) = scratch();
        {
            let index = LexicalIndex::in_dir(&path).unwrap();
            let first = index.reconcile(items(&[("a", "red mug"), ("b", "blue lamp"), ("c", "green kettle")])).unwrap();
            assert_eq!(first, Reconciled { kept: 0, added: 3, removed: 0 });
            // A change made at runtime is committed to the directory.
            index.apply([("d", Some((u64::from(b'd'), "red kettle")))]).unwrap();
        }
        let index = LexicalIndex::in_dir(&path).unwrap();
        assert_eq!(found(&index, "kettle"), ["c", "d"], "read back without reconciling");
        // While it was closed: b's text changed, c went, e came.
        let second = index
            .reconcile(items(&[("a", "red mug"), ("b", "blue desk lamp"), ("d", "red kettle"), ("e", "desk fan")]))
            .unwrap();
        assert_eq!(second, Reconciled { kept: 2, added: 2, removed: 2 });
        assert_eq!(found(&index, "desk"), ["b", "e"]);
        assert_eq!(found(&index, "kettle"), ["d"]);
        assert_eq!(index.stats().docs(), 4);
        let again = index
            .reconcile(items(&[("a", "red mug"), ("b", "blue desk lamp"), ("d", "red kettle"), ("e", "desk fan")]))
            .unwrap();
        assert_eq!(again, Reconciled { kept: 4, added: 0, removed: 0 }, "nothing to do");
    }

    #[test]
    fn a_damaged_index_is_built_again_and_one_in_use_is_left_alone() {
        let (_dir, path) = scratch();
        let index = LexicalIndex::in_dir(&path).unwrap();
        index.reconcile(items(&[("a", "red mug")])).unwrap();
        assert!(LexicalIndex::in_dir(&path).is_err(), "a second writer is refused");
        assert_eq!(found(&index, "mug"), ["a"], "and the first is untouched");
        drop(index);

        std::fs::write(path.join("meta.json"), "not json").unwrap();
        let index = LexicalIndex::in_dir(&path).unwrap();
        assert_eq!(index.stats().docs(), 0, "started afresh");
        assert_eq!(index.reconcile(items(&[("a", "red mug")])).unwrap().added, 1);
        assert_eq!(found(&index, "mug"), ["a"]);
    }

    #[test]
    fn a_damaged_index_another_process_holds_is_never_deleted() {
        let (_dir, path) = scratch();
        let holder = LexicalIndex::in_dir(&path).unwrap();
        holder.reconcile(items(&[("a", "red mug")])).unwrap();
        let files = || std::fs::read_dir(&path).unwrap().count();
        let before = files();
        std::fs::write(path.join("meta.json"), "not json").unwrap();
        assert!(LexicalIndex::in_dir(&path).is_err(), "refused while held");
        assert_eq!(files(), before, "nothing deleted under the holder");
        assert_eq!(found(&holder, "mug"), ["a"]);
    }

    #[test]
    fn a_key_on_two_documents_is_indexed_once_again() {
        let index = LexicalIndex::in_memory().unwrap();
        index
            .write(|writer| {
                for text in ["red mug", "red mug"] {
                    writer.add_document(index.document("a", u64::from(b'a'), text))?;
                }
                commit(writer)
            })
            .unwrap();
        assert_eq!(index.stats().docs(), 2);
        let reconciled = index.reconcile(items(&[("a", "red mug")])).unwrap();
        assert_eq!(reconciled, Reconciled { kept: 0, added: 1, removed: 1 });
        assert_eq!(index.stats().docs(), 1);
        assert_eq!(found(&index, "mug"), ["a"]);
    }

    #[test]
    fn an_index_of_another_format_is_emptied() {
        let (_dir, path) = scratch();
        {
            let index = LexicalIndex::in_dir(&path).unwrap();
            index.reconcile(items(&[("a", "red mug")])).unwrap();
            let mut writer = index.writer.lock().unwrap();
            let mut prepared = writer.prepare_commit().unwrap();
            prepared.set_payload("shoprank-lexical-0");
            prepared.commit().unwrap();
        }
        let index = LexicalIndex::in_dir(&path).unwrap();
        assert_eq!(index.stats().docs(), 0);
        assert_eq!(index.reconcile(items(&[("a", "red mug")])).unwrap(), Reconciled { kept: 0, added: 1, removed: 0 });
    }
}
