//! A/B variants: each names a bundle and a share of users. A user is
//! assigned by a stable hash of their id (XXH3, a fixed algorithm, so the
//! same user lands in the same variant on every replica and after every
//! restart); a request without a user id gets a random variant.
//!
//! Each response carries a `request_id` of the form `<variant>.<16 hex
//! digits>`. The storefront sends it back with the events of the items that
//! response showed, and the variant is read back from it: no table of
//! served requests is needed, on any replica. Only configured variant
//! names are read back, so a forged id cannot grow the metrics' labels.

use std::sync::Arc;

use crate::config::VariantSettings;
use crate::model::bundle::Bundle;

/// The variant of a service without `ab.variants`.
pub(crate) const DEFAULT_VARIANT: &str = "default";
/// The `bundle` of a variant that serves whatever is current.
pub(crate) const CURRENT: &str = "current";

/// What a variant serves.
#[derive(Clone)]
pub(crate) enum Served {
    /// The current bundle: follows reloads and rollbacks.
    Current,
    /// One bundle version, loaded at start-up.
    Fixed(Arc<Bundle>),
}

pub(crate) struct Variant {
    pub name: String,
    pub served: Served,
    /// Users whose hash is below this bound (and above the previous
    /// variant's) get this variant.
    upto: u64,
}

pub(crate) struct Variants {
    variants: Vec<Variant>,
}

impl Variants {
    /// One variant, "default", serving the current bundle.
    pub(crate) fn single() -> Self {
        Self { variants: vec![Variant { name: DEFAULT_VARIANT.into(), served: Served::Current, upto: u64::MAX }] }
    }

    /// Variants in config order; `load` gives the bundle of a fixed version.
    /// The shares were checked with the configuration (they add up to 1).
    pub(crate) fn from_settings<E>(
        settings: &[VariantSettings],
        mut load: impl FnMut(&str) -> Result<Arc<Bundle>, E>,
    ) -> Result<Self, E> {
        if settings.is_empty() {
            return Ok(Self::single());
        }
        let mut variants = Vec::with_capacity(settings.len());
        let mut cumulative = 0.0;
        for (i, variant) in settings.iter().enumerate() {
            cumulative += variant.share;
            let upto = if i + 1 == settings.len() { u64::MAX } else { (cumulative.min(1.0) * u64::MAX as f64) as u64 };
            let served =
                if variant.bundle == CURRENT { Served::Current } else { Served::Fixed(load(&variant.bundle)?) };
            variants.push(Variant { name: variant.name.clone(), served, upto });
        }
        Ok(Self { variants })
    }

    /// The variant of `user_id`.
    pub(crate) fn assign(&self, user_id: Option<&str>) -> &Variant {
        let point = match user_id {
            Some(id) => xxhash_rust::xxh3::xxh3_64_with_seed(id.as_bytes(), 0x5348_4f50),
            None => rand::random(),
        };
        self.variants.iter().find(|v| point <= v.upto).unwrap_or(&self.variants[self.variants.len() - 1])
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Variant> {
        self.variants.iter()
    }

    /// Each variant and the share of users its hash range covers (the
    /// configured shares, as served; they add up to 1).
    pub(crate) fn shares(&self) -> impl Iterator<Item = (&Variant, f64)> {
        let mut from = 0u64;
        self.variants.iter().map(move |variant| {
            let share = variant.upto.saturating_sub(from) as f64 / u64::MAX as f64;
            from = variant.upto;
            (variant, share)
        })
    }

    /// The configured variant a request id names, if any.
    pub(crate) fn of_request(&self, request_id: &str) -> Option<&str> {
        let (name, _) = request_id.split_once('.')?;
        self.variants.iter().find(|v| v.name == name).map(|v| v.name.as_str())
    }
}

/// A fresh request id for a response of `variant`.
pub(crate) fn request_id(variant: &str) -> String {
    format!("{variant}.{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(shares: &[(&str, f64)]) -> Vec<VariantSettings> {
        shares
            .iter()
            .map(|(name, share)| VariantSettings { name: name.to_string(), bundle: CURRENT.into(), share: *share })
            .collect()
    }

    #[test]
    fn users_are_split_by_share_and_keep_their_variant() {
        let variants = Variants::from_settings(&settings(&[("a", 0.2), ("b", 0.8)]), |_| -> Result<_, ()> {
            unreachable!("no fixed versions")
        })
        .unwrap();
        let mut a = 0;
        for user in 0..10_000 {
            let id = format!("user-{user}");
            let first = variants.assign(Some(&id)).name.clone();
            assert_eq!(variants.assign(Some(&id)).name, first, "stable");
            a += usize::from(first == "a");
        }
        assert!((1_800..2_200).contains(&a), "{a} of 10,000 users in a 20% variant");
        let id = request_id("b");
        assert_eq!(variants.of_request(&id), Some("b"));
        assert_eq!(variants.of_request("zzz.0123"), None, "an unknown variant is not counted");
        assert_eq!(variants.of_request("no-dot"), None);
        let shares: Vec<(String, f64)> = variants.shares().map(|(v, share)| (v.name.clone(), share)).collect();
        assert_eq!(shares.len(), 2);
        assert!((shares[0].1 - 0.2).abs() < 1e-9 && (shares[1].1 - 0.8).abs() < 1e-9, "{shares:?}");
        assert_eq!(Variants::single().shares().map(|(_, share)| share).collect::<Vec<_>>(), [1.0]);
    }
}
