//! A directory of bundle versions, so that retraining never overwrites the
//! bundle a server is using and a rollback has something to go back to:
//!
//! ```text
//! models/bundles/
//!   CURRENT                      one line: the version to serve
//!   2011-12-09-s7-x3-e6_1_3/     a bundle (bundle.json, head.safetensors, stats.json.gz)
//!   2011-12-16-s7-x3-e5_2_3/
//! ```
//!
//! `shoprank train --out DIR --versioned` claims a new directory beside the
//! others, saves the bundle into it, and then points `CURRENT` at it; servers load what `CURRENT` names
//! (on `POST /admin/reload`, or by watching it). `bundle.path` may also name
//! one bundle directory (it holds `bundle.json`): then there is one version.
//!
//! `CURRENT` is replaced by rename, after an fsync, so a reader sees the old
//! name or the new one, never a torn line; a version directory is complete
//! before it gets its name (`Bundle::save` writes into a staging directory).

use std::io::Write;
use std::path::{Path, PathBuf};

use super::bundle::MANIFEST_FILE;

pub(crate) const CURRENT_FILE: &str = "CURRENT";

#[derive(Debug, thiserror::Error)]
pub enum VersionsError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{dir} holds neither a bundle ({MANIFEST_FILE}) nor a {CURRENT_FILE} file naming a version")]
    NoCurrent { dir: PathBuf },
    #[error("`{version}` is not a version name: use letters, digits, `.`, `_` and `-` (at most 128)")]
    BadName { version: String },
    #[error("{dir} has no version `{version}`")]
    Unknown { dir: PathBuf, version: String },
}

/// Where a server's bundles come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BundleSource {
    /// One bundle directory: reloading re-reads it.
    Single(PathBuf),
    /// A directory of versions with a `CURRENT` pointer.
    Versions(PathBuf),
}

impl BundleSource {
    /// A path holding `bundle.json` is one bundle; any other, a directory
    /// of versions.
    pub(crate) fn at(path: &Path) -> Self {
        if path.join(MANIFEST_FILE).is_file() {
            BundleSource::Single(path.to_path_buf())
        } else {
            BundleSource::Versions(path.to_path_buf())
        }
    }

    /// The directory of the bundle to serve now, and its name in the
    /// versions directory (`None` for a single bundle).
    pub(crate) fn current(&self) -> Result<(PathBuf, Option<String>), VersionsError> {
        match self {
            BundleSource::Single(dir) => Ok((dir.clone(), None)),
            BundleSource::Versions(dir) => {
                let version = read_current(dir)?.ok_or_else(|| VersionsError::NoCurrent { dir: dir.clone() })?;
                Ok((self.version(&version)?, Some(version)))
            }
        }
    }

    /// The directory of `version`, which must exist.
    pub(crate) fn version(&self, version: &str) -> Result<PathBuf, VersionsError> {
        check_name(version)?;
        let dir = match self {
            BundleSource::Single(dir) | BundleSource::Versions(dir) => dir,
        };
        let path = dir.join(version);
        if !path.join(MANIFEST_FILE).is_file() {
            return Err(VersionsError::Unknown { dir: dir.clone(), version: version.to_string() });
        }
        Ok(path)
    }

    /// What `CURRENT` says now (`None` for a single bundle, or no file).
    pub(crate) fn current_name(&self) -> Result<Option<String>, VersionsError> {
        match self {
            BundleSource::Single(_) => Ok(None),
            BundleSource::Versions(dir) => read_current(dir),
        }
    }
}

fn check_name(version: &str) -> Result<(), VersionsError> {
    let fine = !version.is_empty()
        && version.len() <= 128
        && !version.starts_with('.')
        && version.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if fine {
        Ok(())
    } else {
        Err(VersionsError::BadName { version: version.to_string() })
    }
}

fn read_current(dir: &Path) -> Result<Option<String>, VersionsError> {
    let path = dir.join(CURRENT_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text.trim().to_string()).filter(|name| !name.is_empty())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(VersionsError::Io { path, source }),
    }
}

/// Claims a directory for `version` in `dir` that nothing has yet, by
/// creating it (an atomic test-and-set, so two trainings running at once
/// never get the same one): the version itself, else `<version>.2`,
/// `<version>.3`… (a retrain on the same data and seed gets the same
/// version). Returns the name; the bundle is then saved into it.
#[cfg_attr(not(feature = "offline"), allow(dead_code))] // training's
pub(crate) fn claim(dir: &Path, version: &str) -> Result<String, VersionsError> {
    check_name(version)?;
    for n in 1.. {
        let name = if n == 1 { version.to_string() } else { format!("{version}.{n}") };
        match std::fs::create_dir(dir.join(&name)) {
            Ok(()) => return Ok(name),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(source) => return Err(VersionsError::Io { path: dir.join(name), source }),
        }
    }
    unreachable!("some name is free")
}

/// Points `dir/CURRENT` at `version` atomically and durably.
pub fn publish(dir: &Path, version: &str) -> Result<(), VersionsError> {
    check_name(version)?;
    if !dir.join(version).join(MANIFEST_FILE).is_file() {
        return Err(VersionsError::Unknown { dir: dir.to_path_buf(), version: version.to_string() });
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| VersionsError::Io { path, source }
    };
    // Unique per process and moment: containers often all run as PID 1.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let staging = dir.join(format!(".{CURRENT_FILE}.{}-{nanos}", std::process::id()));
    let mut file = std::fs::File::create(&staging).map_err(io(&staging))?;
    file.write_all(format!("{version}\n").as_bytes()).map_err(io(&staging))?;
    file.sync_all().map_err(io(&staging))?;
    std::fs::rename(&staging, dir.join(CURRENT_FILE)).map_err(io(dir))?;
    // The rename is durable once the directory is synced.
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_follows_publish_and_names_are_checked() {
        let dir = std::env::temp_dir().join(format!("shoprank-versions-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("v1")).unwrap();
        std::fs::write(dir.join("v1").join(MANIFEST_FILE), "{}").unwrap();
        let source = BundleSource::at(&dir);
        assert_eq!(source, BundleSource::Versions(dir.clone()));
        assert!(matches!(source.current(), Err(VersionsError::NoCurrent { .. })));
        assert!(matches!(publish(&dir, "v2"), Err(VersionsError::Unknown { .. })));
        publish(&dir, "v1").unwrap();
        assert_eq!(source.current().unwrap(), (dir.join("v1"), Some("v1".to_string())));
        assert_eq!(claim(&dir, "v1").unwrap(), "v1.2");
        assert_eq!(claim(&dir, "v1").unwrap(), "v1.3", "a claimed name is taken");
        assert_eq!(claim(&dir, "v3").unwrap(), "v3");
        for bad in ["../etc", "a/b", "", ".hidden"] {
            assert!(matches!(source.version(bad), Err(VersionsError::BadName { .. })), "{bad}");
        }
        assert_eq!(BundleSource::at(&dir.join("v1")), BundleSource::Single(dir.join("v1")));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
