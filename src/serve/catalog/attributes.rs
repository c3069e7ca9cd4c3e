//! Attribute filters and facets: how an item's free-JSON `attributes` are
//! read as values to match and to count (issue 28). One rule for both, so a
//! facet value is exactly what a filter on that attribute can ask for.
//!
//! **An attribute's values** are, for the top-level key: a string itself; a
//! number or a bool as its JSON text (`42`, `1.5`, `true`); a list, each of
//! its elements read the same way (duplicates once). `null`, objects and
//! lists inside lists have no values. Keys and values compare exactly (case
//! and spaces count).
//!
//! **An item passes an [`AttributeFilter`]** when, for every attribute the
//! filter names, one of the item's values for it is one of the filter's
//! values for it; an item without the attribute fails.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use serde_json::Value;

/// Most attributes one filter may name.
pub(crate) const MAX_FILTER_ATTRIBUTES: usize = 16;
/// Most values one filtered attribute may list.
pub(crate) const MAX_FILTER_VALUES: usize = 64;
/// Longest attribute name or value in a filter or a facet list, in bytes.
pub(crate) const MAX_ATTRIBUTE_BYTES: usize = 256;
/// Most facets one request may ask for.
pub(crate) const MAX_FACETS: usize = 16;
/// Most values one facet returns (the most frequent).
pub(crate) const MAX_FACET_VALUES: usize = 20;

/// Exact-match conditions on attributes: name → the accepted values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AttributeFilter {
    conditions: Vec<(String, HashSet<String>)>,
}

impl AttributeFilter {
    /// The filter with these conditions (an empty list passes every item).
    pub fn new(conditions: impl IntoIterator<Item = (String, HashSet<String>)>) -> Self {
        Self { conditions: conditions.into_iter().collect() }
    }

    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty()
    }

    /// Whether an item with these attributes passes (see the module docs).
    pub(crate) fn allows(&self, attributes: &Value) -> bool {
        self.conditions.iter().all(|(name, accepted)| {
            let matches = |v: &Value| scalar(v).is_some_and(|s| accepted.contains(s.as_ref()));
            match attributes.get(name) {
                Some(Value::Array(items)) => items.iter().any(matches),
                Some(value) => matches(value),
                None => false,
            }
        })
    }
}

/// The values of one attribute (see the module docs); a list's repeated
/// elements come once.
pub(crate) fn values(value: &Value) -> impl Iterator<Item = Cow<'_, str>> {
    let scalars: Vec<Cow<'_, str>> = match value {
        Value::Array(items) => {
            let mut seen = HashSet::new();
            items.iter().filter_map(scalar).filter(|v| seen.insert(v.clone())).collect()
        }
        value => scalar(value).into_iter().collect(),
    };
    scalars.into_iter()
}

fn scalar(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        _ => None,
    }
}

/// One facet's value and how many items have it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FacetCount {
    pub(crate) value: String,
    pub(crate) count: usize,
}

/// For each of `names`, in order, its values over `items` (their
/// attributes) with the number of items having each: most items first,
/// then by value; at most [`MAX_FACET_VALUES`] each.
pub(crate) fn count_facets<'a>(
    names: &[String],
    items: impl IntoIterator<Item = &'a Value>,
) -> Vec<(String, Vec<FacetCount>)> {
    let mut counts: Vec<HashMap<String, usize>> = vec![HashMap::new(); names.len()];
    for attributes in items {
        for (name, counts) in names.iter().zip(&mut counts) {
            for value in attributes.get(name).into_iter().flat_map(values) {
                *counts.entry(value.into_owned()).or_default() += 1;
            }
        }
    }
    names
        .iter()
        .zip(counts)
        .map(|(name, counts)| {
            let mut facet: Vec<FacetCount> =
                counts.into_iter().map(|(value, count)| FacetCount { value, count }).collect();
            facet.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
            facet.truncate(MAX_FACET_VALUES);
            (name.clone(), facet)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn filter(conditions: &[(&str, &[&str])]) -> AttributeFilter {
        AttributeFilter::new(
            conditions.iter().map(|(name, values)| (name.to_string(), values.iter().map(|v| v.to_string()).collect())),
        )
    }

    #[test]
    fn every_named_attribute_must_have_one_of_its_values() {
        let brand = filter(&[("brand", &["Ava", "Bex"])]);
        assert!(brand.allows(&json!({"brand": "Ava", "colour": "red"})));
        assert!(brand.allows(&json!({"brand": "Bex"})));
        assert!(!brand.allows(&json!({"brand": "ava"})), "case counts");
        assert!(!brand.allows(&json!({"brand": "Ava "})), "spaces count");
        assert!(!brand.allows(&json!({"colour": "red"})), "no such attribute");
        assert!(!brand.allows(&Value::Null), "no attributes");
        let both = filter(&[("brand", &["Ava"]), ("colour", &["blue"])]);
        assert!(both.allows(&json!({"brand": "Ava", "colour": "blue"})));
        assert!(!both.allows(&json!({"brand": "Ava", "colour": "red"})));
        assert!(AttributeFilter::default().allows(&Value::Null), "no conditions: every item passes");
    }

    #[test]
    fn a_list_attribute_passes_if_any_element_matches_and_scalars_match_their_json_text() {
        let colour = filter(&[("colour", &["blue"])]);
        assert!(colour.allows(&json!({"colour": ["red", "blue"]})));
        assert!(!colour.allows(&json!({"colour": ["red", ["blue"]]})), "nested lists have no values");
        assert!(!colour.allows(&json!({"colour": {"name": "blue"}})), "objects have no values");
        assert!(filter(&[("size", &["42"])]).allows(&json!({"size": 42})));
        assert!(filter(&[("size", &["1.5"])]).allows(&json!({"size": [1.5, 2]})));
        assert!(!filter(&[("size", &["42.0"])]).allows(&json!({"size": 42})), "the JSON text, not the number");
        assert!(filter(&[("organic", &["true"])]).allows(&json!({"organic": true})));
    }

    #[test]
    fn facets_count_items_per_value_most_first_then_by_value() {
        let items = [
            json!({"brand": "Ava", "colour": ["red", "blue", "red"]}),
            json!({"brand": "Bex", "colour": "blue"}),
            json!({"brand": "Ava", "size": 3}),
            Value::Null,
        ];
        let names = ["brand".to_string(), "colour".to_string(), "size".to_string(), "none".to_string()];
        let counts = count_facets(&names, &items);
        let pairs =
            |i: usize| -> Vec<(String, usize)> { counts[i].1.iter().map(|f| (f.value.clone(), f.count)).collect() };
        assert_eq!(counts[0].0, "brand");
        assert_eq!(pairs(0), [("Ava".into(), 2), ("Bex".into(), 1)]);
        // "red" twice in one item counts once; ties by value.
        assert_eq!(pairs(1), [("blue".into(), 2), ("red".into(), 1)]);
        assert_eq!(pairs(2), [("3".into(), 1)]);
        assert!(pairs(3).is_empty(), "a facet no item has is listed, empty");
    }

    #[test]
    fn facets_keep_the_most_frequent_values() {
        let items: Vec<Value> =
            (0..30).flat_map(|i| std::iter::repeat_n(json!({"n": format!("v{i:02}")}), i % 3 + 1)).collect();
        let counts = count_facets(&["n".to_string()], &items);
        assert_eq!(counts[0].1.len(), MAX_FACET_VALUES);
        assert!(counts[0].1.iter().take(10).all(|f| f.count == 3));
        assert_eq!(counts[0].1[0].value, "v02");
    }
}
