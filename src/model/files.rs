//! Locating the encoder's three files (config, tokenizer, weights): a local
//! directory, or a Hugging Face repo id fetched (and cached) through hf-hub.
//!
//! Weights come as `model.safetensors` or, for models published before
//! safetensors (moka-ai/m3e-small), as PyTorch's `pytorch_model.bin`. The
//! latter is a zip of pickled metadata and raw tensor data; Candle's reader
//! interprets the pickle opcodes it needs to find the tensors and never runs
//! pickled code, so a hostile file can fail to load but cannot execute.

use std::path::{Path, PathBuf};

/// The files a BERT encoder needs, plus a human-readable identity used in
/// metrics, the head spec and cache keys.
#[derive(Debug, Clone)]
pub struct EncoderFiles {
    pub config: PathBuf,
    pub tokenizer: PathBuf,
    pub weights: PathBuf,
    pub format: WeightsFormat,
    /// The name the encoder is known by, e.g. `all-MiniLM-L6-v2`.
    pub name: String,
}

/// How the weights file is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsFormat {
    /// `model.safetensors`: memory-mapped, no parsing.
    Safetensors,
    /// `pytorch_model.bin`: read whole through Candle's pickle reader.
    PyTorch,
}

impl WeightsFormat {
    /// The file name each format has in a Hugging Face model repo, in the
    /// order they are looked for.
    const FILES: [(&'static str, WeightsFormat); 2] =
        [("model.safetensors", WeightsFormat::Safetensors), ("pytorch_model.bin", WeightsFormat::PyTorch)];
}

#[derive(Debug, thiserror::Error)]
pub enum ModelFilesError {
    #[error(
        "encoder directory {dir} lacks {file}; run `scripts/fetch-model NAME` (all-MiniLM-L6-v2 \
         or m3e-small; a Docker image: build it with --build-arg MODELS=NAME) to download a model, \
         or point encoder.source at a directory or hub repo id"
    )]
    MissingLocalFile { dir: PathBuf, file: &'static str },
    #[error(
        "cannot fetch {file} of {repo}@{revision} from the Hugging Face Hub ({source}); \
         without network access, download the model once and set encoder.source to its directory \
         (a relative encoder.source is looked for under the working directory first)"
    )]
    Hub {
        repo: String,
        revision: String,
        file: &'static str,
        #[source]
        source: hf_hub::api::sync::ApiError,
    },
}

const CONFIG: &str = "config.json";
const TOKENIZER: &str = "tokenizer.json";
/// Named in errors when neither weights file is found.
const ANY_WEIGHTS: &str = "model.safetensors (or pytorch_model.bin)";

impl EncoderFiles {
    /// Resolves `source`: an existing directory is used as is; anything that
    /// looks like `owner/name` and is not a directory goes through hf-hub.
    pub(crate) fn resolve(source: &str, revision: &str) -> Result<Self, ModelFilesError> {
        let path = Path::new(source);
        // `models/m3e-small` reads as a repo id too: where its first part is
        // a local directory, it is a model not fetched yet, not a hub id.
        let local_parent = path.components().next().is_some_and(|first| Path::new(first.as_os_str()).is_dir());
        if path.is_dir() || local_parent || !looks_like_repo_id(source) {
            return Self::from_dir(path);
        }
        Self::from_hub(source, revision)
    }

    /// Uses a local directory holding the three files.
    pub fn from_dir(dir: &Path) -> Result<Self, ModelFilesError> {
        let missing = |file| ModelFilesError::MissingLocalFile { dir: dir.to_path_buf(), file };
        let [config, tokenizer] = [CONFIG, TOKENIZER].map(|file| dir.join(file));
        for (path, file) in [(&config, CONFIG), (&tokenizer, TOKENIZER)] {
            if !path.is_file() {
                return Err(missing(file));
            }
        }
        let (weights, format) = WeightsFormat::FILES
            .iter()
            .map(|&(file, format)| (dir.join(file), format))
            .find(|(path, _)| path.is_file())
            .ok_or_else(|| missing(ANY_WEIGHTS))?;
        let name =
            dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| dir.display().to_string());
        Ok(Self { config, tokenizer, weights, format, name })
    }

    /// Downloads (or finds in the hf-hub cache) the three files of `repo`:
    /// `model.safetensors` where the repo has it, else `pytorch_model.bin`.
    /// The hub client takes its endpoint, cache and token from the
    /// environment (`HF_ENDPOINT`, `HF_HOME`, `HF_TOKEN`), as hf-hub does.
    pub(crate) fn from_hub(repo: &str, revision: &str) -> Result<Self, ModelFilesError> {
        Self::from_hub_with(hf_hub::api::sync::ApiBuilder::from_env(), repo, revision)
    }

    /// As [`EncoderFiles::from_hub`], through the hub client `client`.
    fn from_hub_with(
        client: hf_hub::api::sync::ApiBuilder,
        repo: &str,
        revision: &str,
    ) -> Result<Self, ModelFilesError> {
        let hub_error = |file, source| ModelFilesError::Hub {
            repo: repo.to_string(),
            revision: revision.to_string(),
            file,
            source,
        };
        let api = client.with_progress(false).build().map_err(|e| hub_error("(client)", e))?;
        let repo_handle =
            api.repo(hf_hub::Repo::with_revision(repo.to_string(), hf_hub::RepoType::Model, revision.to_string()));
        let config = repo_handle.get(CONFIG).map_err(|e| hub_error(CONFIG, e))?;
        let tokenizer = repo_handle.get(TOKENIZER).map_err(|e| hub_error(TOKENIZER, e))?;
        let [(safetensors, _), (pytorch, _)] = WeightsFormat::FILES;
        let (weights, format) = match repo_handle.get(safetensors) {
            Ok(path) => (path, WeightsFormat::Safetensors),
            // Older repos have only the PyTorch file; an outage fails here
            // too, naming the file asked for last.
            Err(_) => (repo_handle.get(pytorch).map_err(|e| hub_error(ANY_WEIGHTS, e))?, WeightsFormat::PyTorch),
        };
        let name = repo.rsplit('/').next().unwrap_or(repo).to_string();
        Ok(Self { config, tokenizer, weights, format, name })
    }
}

/// `owner/name` with no further separators and no leading `.` or `/`.
fn looks_like_repo_id(source: &str) -> bool {
    let mut parts = source.split('/');
    matches!((parts.next(), parts.next(), parts.next()),
        (Some(owner), Some(name), None)
            if !owner.is_empty() && !name.is_empty() && !owner.starts_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_are_told_apart_from_paths() {
        assert!(looks_like_repo_id("sentence-transformers/all-MiniLM-L6-v2"));
        assert!(!looks_like_repo_id("models/all-MiniLM-L6-v2/"));
        assert!(!looks_like_repo_id("./models/x"));
        assert!(!looks_like_repo_id("/abs/path"));
        assert!(!looks_like_repo_id("plain"));
    }

    #[test]
    fn missing_local_file_names_the_file_and_the_fix() {
        let dir = std::env::temp_dir().join("shoprank-empty-model-dir");
        std::fs::create_dir_all(&dir).unwrap();
        let err = EncoderFiles::from_dir(&dir).unwrap_err().to_string();
        assert!(err.contains("config.json") && err.contains("fetch-model"), "{err}");
    }

    #[test]
    fn pytorch_weights_are_found_where_there_is_no_safetensors_file() {
        let dir = std::env::temp_dir().join(format!("shoprank-pth-model-dir-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for file in ["config.json", "tokenizer.json"] {
            std::fs::write(dir.join(file), "{}").unwrap();
        }
        let err = EncoderFiles::from_dir(&dir).unwrap_err().to_string();
        assert!(err.contains("model.safetensors (or pytorch_model.bin)"), "{err}");
        std::fs::write(dir.join("pytorch_model.bin"), "").unwrap();
        assert_eq!(EncoderFiles::from_dir(&dir).unwrap().format, WeightsFormat::PyTorch);
        std::fs::write(dir.join("model.safetensors"), "").unwrap();
        let files = EncoderFiles::from_dir(&dir).unwrap();
        assert_eq!(
            (files.format, files.weights.file_name().unwrap()),
            (WeightsFormat::Safetensors, "model.safetensors".as_ref())
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn offline_hub_fails_with_a_clear_message() {
        // This machine cannot reach the hub; a user's laptop offline neither.
        // A client pointed at a closed local port makes that deterministic
        // (without touching the process environment other tests read).
        let cache = std::env::temp_dir().join("shoprank-empty-hf-cache");
        let client =
            hf_hub::api::sync::ApiBuilder::new().with_endpoint("http://127.0.0.1:9".into()).with_cache_dir(cache);
        let err = EncoderFiles::from_hub_with(client, "no-such-owner/no-such-model", "main").unwrap_err().to_string();
        assert!(err.contains("no-such-owner/no-such-model") && err.contains("Hugging Face Hub"), "{err}");
        // A model directory not fetched yet, under a directory that exists,
        // is a missing local model (with the fix named), not a hub id.
        let err = EncoderFiles::resolve("src/no-such-model", "main").unwrap_err().to_string();
        assert!(err.contains("lacks config.json") && err.contains("fetch-model"), "{err}");
    }
}
