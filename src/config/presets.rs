//! The encoder presets: each a small TOML layer with the keys that belong
//! to one encoder, and the warning when the user's layers override one.

use figment::providers::{Format, Toml};
use figment::Figment;

/// The encoder presets, by name: each sets the keys that belong to one
/// encoder (where it is, its window, the bundle trained on it, the search
/// thresholds calibrated on its cosines). Layered over the defaults and
/// under everything the user sets.
pub(crate) const PRESETS: [(&str, &str); 2] = [
    ("all-MiniLM-L6-v2", include_str!("../../config/presets/all-MiniLM-L6-v2.toml")),
    ("m3e-small", include_str!("../../config/presets/m3e-small.toml")),
];

/// A user who picks a preset and also sets one of its keys (a file copied
/// from before presets, say) gets that key, not the preset's: say so, since
/// the server then runs, without complaint, with something else than asked.
pub(super) fn warn_of_overridden_preset_keys(user_layers: &Figment, preset: &str, preset_toml: &str) {
    if user_layers.find_value("encoder.preset").is_err() {
        return; // the default preset: overriding its keys is the usual way
    }
    let Ok(preset_keys) = Figment::from(Toml::string(preset_toml)).extract::<figment::value::Dict>() else { return };
    for (section, keys) in &preset_keys {
        for key in keys.as_dict().into_iter().flat_map(|dict| dict.keys()) {
            let path = format!("{section}.{key}");
            if let Ok(value) = user_layers.find_value(&path) {
                tracing::warn!(key = %path, value = ?value, preset, "a configuration layer overrides the preset's value");
            }
        }
    }
}
