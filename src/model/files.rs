//! Locating the encoder's three files: a local directory, or a Hugging Face
//! repo id fetched (and cached) through hf-hub.

use std::path::{Path, PathBuf};

/// The files a BERT encoder needs, plus a human-readable identity used in
/// metrics, the head spec and cache keys.
#[derive(Debug, Clone)]
pub struct EncoderFiles {
    pub config: PathBuf,
    pub tokenizer: PathBuf,
    pub weights: PathBuf,
    /// The name the encoder is known by, e.g. `all-MiniLM-L6-v2`.
    pub name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelFilesError {
    #[error(
        "encoder directory {dir} lacks {file}; run `scripts/fetch-model` to download \
         all-MiniLM-L6-v2, or point encoder.source at a directory or hub repo id"
    )]
    MissingLocalFile { dir: PathBuf, file: &'static str },
    #[error(
        "cannot fetch {file} of {repo}@{revision} from the Hugging Face Hub ({source}); \
         without network access, download the model once and set encoder.source to its directory"
    )]
    Hub {
        repo: String,
        revision: String,
        file: &'static str,
        #[source]
        source: hf_hub::api::sync::ApiError,
    },
}

const FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

impl EncoderFiles {
    /// Resolves `source`: an existing directory is used as is; anything that
    /// looks like `owner/name` and is not a directory goes through hf-hub.
    pub fn resolve(source: &str, revision: &str) -> Result<Self, ModelFilesError> {
        let path = Path::new(source);
        if path.is_dir() || !looks_like_repo_id(source) {
            return Self::from_dir(path);
        }
        Self::from_hub(source, revision)
    }

    /// Uses a local directory holding the three files.
    pub fn from_dir(dir: &Path) -> Result<Self, ModelFilesError> {
        let [config, tokenizer, weights] = FILES.map(|file| dir.join(file));
        for (path, file) in [&config, &tokenizer, &weights].into_iter().zip(FILES) {
            if !path.is_file() {
                return Err(ModelFilesError::MissingLocalFile { dir: dir.to_path_buf(), file });
            }
        }
        let name =
            dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| dir.display().to_string());
        Ok(Self { config, tokenizer, weights, name })
    }

    /// Downloads (or finds in the hf-hub cache) the three files of `repo`.
    pub fn from_hub(repo: &str, revision: &str) -> Result<Self, ModelFilesError> {
        let hub_error = |file, source| ModelFilesError::Hub {
            repo: repo.to_string(),
            revision: revision.to_string(),
            file,
            source,
        };
        let api = hf_hub::api::sync::ApiBuilder::from_env()
            .with_progress(false)
            .build()
            .map_err(|e| hub_error("(client)", e))?;
        let repo_handle =
            api.repo(hf_hub::Repo::with_revision(repo.to_string(), hf_hub::RepoType::Model, revision.to_string()));
        let [config, tokenizer, weights] = [0, 1, 2].map(|i| repo_handle.get(FILES[i]).map_err(|e| (FILES[i], e)));
        let config = config.map_err(|(f, e)| hub_error(f, e))?;
        let tokenizer = tokenizer.map_err(|(f, e)| hub_error(f, e))?;
        let weights = weights.map_err(|(f, e)| hub_error(f, e))?;
        let name = repo.rsplit('/').next().unwrap_or(repo).to_string();
        Ok(Self { config, tokenizer, weights, name })
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
    fn offline_hub_fails_with_a_clear_message() {
        // This machine cannot reach the hub; a user's laptop offline neither.
        // Pointing the endpoint at a closed local port makes that deterministic.
        std::env::set_var("HF_ENDPOINT", "http://127.0.0.1:9");
        let cache = std::env::temp_dir().join("shoprank-empty-hf-cache");
        std::env::set_var("HF_HOME", &cache);
        let err = EncoderFiles::from_hub("no-such-owner/no-such-model", "main").unwrap_err().to_string();
        assert!(err.contains("no-such-owner/no-such-model") && err.contains("Hugging Face Hub"), "{err}");
    }
}
