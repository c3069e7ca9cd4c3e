//! Layered configuration: `config/default.toml` (or another file), then
//! environment variables `SHOPRANK__SECTION__KEY`. Parsed and validated once at
//! start-up; every module receives its own typed section and never reads the
//! environment itself.
//!
//! A leaf: this module imports no other module of the crate (checked by
//! `scripts/check-layers`). A setting says what was written: `precision =
//! "auto"` stays [`Precision::Auto`], and the layer that acts on it (the
//! encoder, where it opens) resolves it.
//!
//! - this file: [`Settings`], loading its layers, [`Settings::rooted_at`];
//! - `presets`: the encoder presets layered under the user's keys;
//! - `encoder`: the `[encoder]` section, its precision and linear layers;
//! - `store`: the `[store]` section, what `store.url` may be, [`redacted`];
//! - `sections`: every other section's typed values;
//! - `validate`: the checks between keys, each naming its key.

mod encoder;
mod presets;
mod sections;
mod store;
mod validate;

use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::Deserialize;

pub use self::encoder::{EncoderSettings, LinearLayer, Precision};
pub(crate) use self::presets::PRESETS;
pub(crate) use self::sections::{
    AbSettings, AdminSettings, BundleSettings, CacheSettings, CatalogSettings, EventSettings, Limits, OfflineSettings,
    SearchSettings, ServerSettings, MAX_RETRIEVED,
};
// The crate root re-exports these: a group of their own, as a `use` group
// has one visibility.
pub use self::sections::{BatchingSettings, UserTextBudget, VariantSettings};
pub use self::store::StoreLocation;
// `redacted` is the offline commands' (their log lines show store URLs).
#[cfg(feature = "offline")]
pub(crate) use self::store::redacted;
pub(crate) use self::store::StoreSettings;

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("invalid configuration: {key}: {problem}")]
    Invalid { key: &'static str, problem: String },
}

/// The whole configuration, one section per module.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub encoder: EncoderSettings,
    pub batching: BatchingSettings,
    pub cache: CacheSettings,
    pub bundle: BundleSettings,
    pub limits: Limits,
    pub user_text: UserTextBudget,
    pub catalog: CatalogSettings,
    pub store: StoreSettings,
    pub events: EventSettings,
    pub admin: AdminSettings,
    pub ab: AbSettings,
    pub search: SearchSettings,
    pub offline: OfflineSettings,
}

/// The configuration file compiled into the binary, so `shoprank` runs with
/// its defaults even when started outside the repository.
pub(crate) const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

impl Settings {
    /// Loads the defaults, then `file` (if given), then `SHOPRANK__*`
    /// environment variables, and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_preset(file, None)
    }

    /// As [`Settings::load`], with `preset` (the `--preset` flag), if given,
    /// taking precedence over `encoder.preset` from any layer. The preset is
    /// read from all layers first, then its keys go in between the defaults
    /// and the user's layers, so a file that sets `encoder.source` still wins.
    pub fn load_with_preset(file: Option<&Path>, preset: Option<&str>) -> Result<Self, ConfigError> {
        let user_layers = |mut figment: Figment| {
            if let Some(file) = file {
                figment = figment.merge(Toml::file_exact(file));
            }
            figment = figment.merge(Env::prefixed("SHOPRANK__").split("__"));
            if let Some(preset) = preset {
                figment = figment.merge(Serialized::default("encoder.preset", preset));
            }
            figment
        };
        let chosen: String =
            user_layers(Figment::from(Toml::string(DEFAULT_TOML))).extract_inner("encoder.preset").map_err(Box::new)?;
        let preset_toml = PRESETS.iter().find(|(name, _)| *name == chosen).map(|(_, toml)| *toml).ok_or_else(|| {
            let known: Vec<&str> = PRESETS.iter().map(|(name, _)| *name).collect();
            ConfigError::Invalid {
                key: "encoder.preset",
                problem: format!("unknown preset {chosen:?}; known: {}", known.join(", ")),
            }
        })?;
        presets::warn_of_overridden_preset_keys(&user_layers(Figment::new()), &chosen, preset_toml);
        let figment = user_layers(Figment::from(Toml::string(DEFAULT_TOML)).merge(Toml::string(preset_toml)));
        let settings: Settings = figment.extract().map_err(Box::new)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Resolves the relative model paths against `root` instead of the
    /// working directory (tests and benches run from anywhere).
    pub fn rooted_at(mut self, root: &Path) -> Self {
        let source = Path::new(&self.encoder.source);
        if source.is_relative() && root.join(source).is_dir() {
            self.encoder.source = root.join(source).display().to_string();
        }
        if self.bundle.path.is_relative() {
            self.bundle.path = root.join(&self.bundle.path);
        }
        if let StoreLocation::Embedded(dir) = self.store.location() {
            if dir.is_relative() {
                self.store.url = root.join(dir).display().to_string();
            }
        }
        self
    }
}

#[cfg(test)]
mod tests;
