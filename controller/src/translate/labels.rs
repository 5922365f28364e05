//! Kubernetes label selectors (matchLabels + matchExpressions).

use std::collections::BTreeMap;

type Labels = BTreeMap<String, String>;

/// True when `labels` satisfy every matchLabels pair and every expression
/// `(key, operator, values)` with operators In, NotIn, Exists, DoesNotExist.
pub fn selector_matches<'e>(
    match_labels: Option<&Labels>,
    expressions: impl IntoIterator<Item = (&'e str, &'e str, Option<&'e [String]>)>,
    labels: Option<&Labels>,
) -> bool {
    let value = |key: &str| labels.and_then(|l| l.get(key));
    let pairs_ok = match_labels
        .into_iter()
        .flatten()
        .all(|(k, v)| value(k) == Some(v));
    pairs_ok
        && expressions.into_iter().all(|(key, operator, values)| {
            let values = values.unwrap_or(&[]);
            match operator {
                "In" => value(key).is_some_and(|v| values.contains(v)),
                "NotIn" => value(key).is_none_or(|v| !values.contains(v)),
                "Exists" => value(key).is_some(),
                "DoesNotExist" => value(key).is_none(),
                _ => false,
            }
        })
}

/// True when every `selector` pair is among `pairs` (which may hold several values per key).
pub fn pairs_cover(selector: &Labels, pairs: &[(String, String)]) -> bool {
    !selector.is_empty()
        && selector
            .iter()
            .all(|(k, v)| pairs.iter().any(|(pk, pv)| pk == k && pv == v))
}
