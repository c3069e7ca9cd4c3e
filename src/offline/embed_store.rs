//! Embeddings of many texts for offline jobs (`train`, `eval`), with an
//! optional file that keeps them between runs: re-running an evaluation does
//! not re-encode thousands of texts. The file is named after the encoder,
//! its precision and window, so vectors of different encoders never mix.
//!
//! File format: `SREMB1`, the dimension (u32 LE), then records of text
//! length (u32 LE), UTF-8 text, `dim` f32 LE. Appended to; a truncated last
//! record (interrupted run) is cut off before the next append.
//!
//! The file holds the texts of every run (every log, every scale), so opening
//! it reads only an index of texts and offsets; a run loads the vectors of
//! the texts it asks for, and its memory grows with its own data.

use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};

use crate::model::encoder::EncoderError;
use crate::offline::text_embedder::TextEmbedder;

const MAGIC: &[u8; 6] = b"SREMB1";

#[derive(Debug, thiserror::Error)]
pub enum EmbedStoreError {
    #[error("embedding store {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Encoder(#[from] EncoderError),
}

pub struct EmbedStore {
    path: Option<PathBuf>,
    dim: usize,
    /// Text → byte offset of its vector in the file.
    on_disk: HashMap<String, u64>,
    /// Where the last whole record ends (a torn tail is cut before appending).
    valid_len: u64,
    /// The vectors this run asked for.
    vectors: HashMap<String, Vec<f32>>,
}

impl EmbedStore {
    /// Opens (or starts) the store for `encoder` in `dir`; `None` keeps
    /// everything in memory.
    pub fn open(dir: Option<&Path>, encoder: &dyn TextEmbedder) -> Result<Self, EmbedStoreError> {
        let dim = encoder.identity().dim;
        let path = dir.map(|d| d.join(format!("{}.emb", encoder.cache_key())));
        let mut store = Self { path, dim, on_disk: HashMap::new(), valid_len: 0, vectors: HashMap::new() };
        if let Some(path) = store.path.clone() {
            if path.exists() {
                store.read(&path).map_err(|source| EmbedStoreError::Io { path: path.clone(), source })?;
            }
        }
        Ok(store)
    }

    fn read(&mut self, path: &Path) -> std::io::Result<()> {
        let mut reader = BufReader::new(std::fs::File::open(path)?);
        let mut header = [0u8; 10];
        reader.read_exact(&mut header)?;
        let dim = u32::from_le_bytes(header[6..10].try_into().expect("4 bytes")) as usize;
        if &header[..6] != MAGIC || dim != self.dim {
            return Err(std::io::Error::other("not an embedding store of this encoder"));
        }
        let file_len = reader.get_ref().metadata()?.len();
        let vector_bytes = 4 * dim as u64;
        let mut offset = header.len() as u64;
        let mut length = [0u8; 4];
        while reader.read_exact(&mut length).is_ok() {
            let text_len = u32::from_le_bytes(length) as u64;
            let end = offset + 4 + text_len + vector_bytes;
            if end > file_len {
                break;
            }
            let mut text = vec![0u8; text_len as usize];
            reader.read_exact(&mut text)?;
            self.on_disk.insert(String::from_utf8_lossy(&text).into_owned(), offset + 4 + text_len);
            reader.seek_relative(vector_bytes as i64)?;
            offset = end;
        }
        self.valid_len = offset;
        Ok(())
    }

    /// Loads the stored vectors of `texts` this run has not loaded yet.
    fn load(&mut self, texts: &[&str]) -> Result<(), EmbedStoreError> {
        let wanted: Vec<(&str, u64)> = texts
            .iter()
            .filter(|t| !self.vectors.contains_key(**t))
            .filter_map(|t| self.on_disk.get(*t).map(|&offset| (*t, offset)))
            .collect();
        let Some(path) = self.path.as_ref().filter(|_| !wanted.is_empty()) else { return Ok(()) };
        let io = |source| EmbedStoreError::Io { path: path.clone(), source };
        let mut file = std::fs::File::open(path).map_err(io)?;
        let mut bytes = vec![0u8; 4 * self.dim];
        for (text, offset) in wanted {
            file.seek(std::io::SeekFrom::Start(offset)).map_err(io)?;
            file.read_exact(&mut bytes).map_err(io)?;
            let vector = bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect();
            self.vectors.insert(text.to_string(), vector);
        }
        Ok(())
    }

    /// Embeds the texts not yet stored (in length-sorted batches of 32, with
    /// a progress bar) and appends them to the file.
    pub(crate) fn embed_all(
        &mut self,
        encoder: &dyn TextEmbedder,
        texts: &[&str],
        what: &str,
    ) -> Result<(), EmbedStoreError> {
        self.load(texts)?;
        let mut missing: Vec<&str> = texts.iter().copied().filter(|t| !self.vectors.contains_key(*t)).collect();
        missing.sort_unstable();
        missing.dedup();
        if missing.is_empty() {
            return Ok(());
        }
        let progress = ProgressBar::new(missing.len() as u64).with_style(
            ProgressStyle::with_template("{msg:>16} {bar:40} {pos}/{len} texts ({per_sec}, eta {eta})")
                .expect("template"),
        );
        progress.set_message(what.to_string());
        let mut writer = self.writer()?;
        for chunk in missing.chunks(256) {
            let vectors = encoder.embed(chunk)?;
            for (text, vector) in chunk.iter().zip(vectors) {
                if let Some((path, w)) = writer.as_mut() {
                    write_record(w, text, &vector)
                        .map_err(|source| EmbedStoreError::Io { path: path.clone(), source })?;
                }
                self.vectors.insert(text.to_string(), vector);
            }
            progress.inc(chunk.len() as u64);
        }
        if let Some((path, mut w)) = writer {
            let io = |source| EmbedStoreError::Io { path: path.clone(), source };
            w.flush().map_err(io)?;
            self.valid_len = w.get_ref().metadata().map_err(io)?.len();
        }
        progress.finish_and_clear();
        Ok(())
    }

    fn writer(&self) -> Result<Option<(PathBuf, BufWriter<std::fs::File>)>, EmbedStoreError> {
        let Some(path) = &self.path else { return Ok(None) };
        let io = |source| EmbedStoreError::Io { path: path.clone(), source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let fresh = !path.exists();
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(io)?;
        if !fresh && file.metadata().map_err(io)?.len() > self.valid_len {
            // A torn record from an interrupted run: appending after it would
            // misalign everything that follows.
            file.set_len(self.valid_len).map_err(io)?;
        }
        let mut writer = BufWriter::new(file);
        if fresh {
            writer.write_all(MAGIC).map_err(io)?;
            writer.write_all(&(self.dim as u32).to_le_bytes()).map_err(io)?;
        }
        Ok(Some((path.clone(), writer)))
    }

    /// The vector of a text passed to `embed_all` before.
    pub(crate) fn get(&self, text: &str) -> &[f32] {
        self.vectors.get(text).map(Vec::as_slice).unwrap_or_else(|| panic!("text was not embedded: {text:?}"))
    }
}

fn write_record(writer: &mut impl Write, text: &str, vector: &[f32]) -> std::io::Result<()> {
    writer.write_all(&(text.len() as u32).to_le_bytes())?;
    writer.write_all(text.as_bytes())?;
    for x in vector {
        writer.write_all(&x.to_le_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::config::UserTextBudget;
    use crate::model::encoder::EncoderIdentity;
    use crate::model::user_text::UserSignals;

    /// A 3-d "encoder" that counts the texts it embeds.
    struct Counting(Cell<usize>);

    impl TextEmbedder for Counting {
        fn identity(&self) -> EncoderIdentity {
            EncoderIdentity { name: "counting".into(), dim: 3 }
        }
        fn cache_key(&self) -> String {
            "counting".into()
        }
        fn user_text(&self, _: UserTextBudget, _: UserSignals<'_>) -> Result<String, EncoderError> {
            Ok(String::new())
        }
        fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EncoderError> {
            self.0.set(self.0.get() + texts.len());
            Ok(texts.iter().map(|t| vec![t.len() as f32, 1.0, 2.0]).collect())
        }
    }

    #[test]
    fn stored_vectors_are_read_back_not_re_embedded_and_a_torn_tail_is_cut() {
        let dir = std::env::temp_dir().join(format!("shoprank-embed-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let encoder = Counting(Cell::new(0));
        let mut store = EmbedStore::open(Some(&dir), &encoder).unwrap();
        store.embed_all(&encoder, &["a", "bb"], "t").unwrap();
        store.embed_all(&encoder, &["bb", "ccc"], "t").unwrap();
        assert_eq!(encoder.0.get(), 3, "a text is embedded once");

        // An interrupted run leaves half a record behind.
        let file = dir.join("counting.emb");
        let mut bytes = std::fs::read(&file).unwrap();
        bytes.extend_from_slice(&[9, 0, 0, 0, b'x']);
        std::fs::write(&file, bytes).unwrap();

        let mut store = EmbedStore::open(Some(&dir), &encoder).unwrap();
        store.embed_all(&encoder, &["ccc", "dddd"], "t").unwrap();
        assert_eq!(encoder.0.get(), 4, "only the new text is embedded");
        assert_eq!(store.get("ccc"), &[3.0, 1.0, 2.0]);
        assert!(!store.vectors.contains_key("a"), "texts this run did not ask for stay on disk");

        let mut store = EmbedStore::open(Some(&dir), &encoder).unwrap();
        store.embed_all(&encoder, &["a", "bb", "ccc", "dddd"], "t").unwrap();
        assert_eq!(encoder.0.get(), 4, "everything was read back");
        assert_eq!(store.get("dddd"), &[4.0, 1.0, 2.0]);
        assert_eq!(store.get("a"), &[1.0, 1.0, 2.0]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
