//! Embeddings of many texts for offline jobs (`train`, `eval`), with an
//! optional file that keeps them between runs: re-running an evaluation does
//! not re-encode thousands of texts. The file is named after the encoder,
//! its precision and window, so vectors of different encoders never mix.
//!
//! File format: `SREMB1`, the dimension (u32 LE), then records of text
//! length (u32 LE), UTF-8 text, `dim` f32 LE. Appended to; a truncated last
//! record (interrupted run) is ignored.

use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};

use crate::model::encoder::EncoderError;
use crate::offline::text_embedder::TextEmbedder;

const MAGIC: &[u8; 6] = b"SREMB1";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("embedding store {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Encoder(#[from] EncoderError),
}

pub struct EmbedStore {
    path: Option<PathBuf>,
    dim: usize,
    vectors: HashMap<String, Vec<f32>>,
}

impl EmbedStore {
    /// Opens (or starts) the store for `encoder` in `dir`; `None` keeps
    /// everything in memory.
    pub fn open(dir: Option<&Path>, encoder: &dyn TextEmbedder) -> Result<Self, StoreError> {
        let dim = encoder.identity().dim;
        let path = dir.map(|d| d.join(format!("{}.emb", encoder.cache_key())));
        let mut store = Self { path, dim, vectors: HashMap::new() };
        if let Some(path) = store.path.clone() {
            if path.exists() {
                store.read(&path).map_err(|source| StoreError::Io { path: path.clone(), source })?;
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
        let mut length = [0u8; 4];
        while reader.read_exact(&mut length).is_ok() {
            let mut text = vec![0u8; u32::from_le_bytes(length) as usize];
            let mut vector = vec![0u8; 4 * dim];
            if reader.read_exact(&mut text).is_err() || reader.read_exact(&mut vector).is_err() {
                break;
            }
            let vector = vector.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect();
            self.vectors.insert(String::from_utf8_lossy(&text).into_owned(), vector);
        }
        Ok(())
    }

    /// Embeds the texts not yet stored (in length-sorted batches of 32, with
    /// a progress bar) and appends them to the file.
    pub fn embed_all(&mut self, encoder: &dyn TextEmbedder, texts: &[&str], what: &str) -> Result<(), StoreError> {
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
                    write_record(w, text, &vector).map_err(|source| StoreError::Io { path: path.clone(), source })?;
                }
                self.vectors.insert(text.to_string(), vector);
            }
            progress.inc(chunk.len() as u64);
        }
        if let Some((path, mut w)) = writer {
            w.flush().map_err(|source| StoreError::Io { path, source })?;
        }
        progress.finish_and_clear();
        Ok(())
    }

    fn writer(&self) -> Result<Option<(PathBuf, BufWriter<std::fs::File>)>, StoreError> {
        let Some(path) = &self.path else { return Ok(None) };
        let io = |source| StoreError::Io { path: path.clone(), source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let fresh = !path.exists();
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(io)?;
        let mut writer = BufWriter::new(file);
        if fresh {
            writer.write_all(MAGIC).map_err(io)?;
            writer.write_all(&(self.dim as u32).to_le_bytes()).map_err(io)?;
        }
        Ok(Some((path.clone(), writer)))
    }

    /// The vector of a text passed to `embed_all` before.
    pub fn get(&self, text: &str) -> &[f32] {
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
