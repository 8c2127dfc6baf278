//! Which publications select which SigningKeys: the same namespace, a matching label
//! selector, and a `use` that includes the key's use.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;

use crate::api::{JwksPublication, KeyUse, SigningKey};

/// Whether `publication` includes `key` in its JWKS.
pub fn selects(publication: &JwksPublication, key: &SigningKey) -> bool {
    publication.namespace() == key.namespace()
        && publication.spec.key_use.contains(&key_use(key))
        && label_selector_matches(&publication.spec.selector, key.labels())
}

/// Whether `key` signs or encrypts, as a publication's `use` names it.
pub fn key_use(key: &SigningKey) -> KeyUse {
    crate::jose::Algorithm::from(key.spec.algorithm)
        .key_use()
        .into()
}

/// Kubernetes label selector semantics: every `matchLabels` pair and every expression must hold;
/// an empty selector matches everything. An expression with an unknown operator matches nothing,
/// so a malformed selector can never widen what is published.
pub fn label_selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_match = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value));
    let expressions_match = selector.match_expressions.iter().flatten().all(|req| {
        let value = labels.get(&req.key);
        let values = req.values.as_deref().unwrap_or_default();
        match req.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_match && expressions_match
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expression(key: &str, operator: &str, values: &[&str]) -> LabelSelector {
        LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: key.into(),
                operator: operator.into(),
                values: Some(values.iter().map(|v| v.to_string()).collect()),
            }]),
            match_labels: None,
        }
    }

    #[test]
    fn empty_selector_matches_everything() {
        assert!(label_selector_matches(
            &LabelSelector::default(),
            &labels(&[])
        ));
    }

    #[test]
    fn match_labels_need_every_pair() {
        let selector = LabelSelector {
            match_labels: Some(labels(&[("a", "1"), ("b", "2")])),
            match_expressions: None,
        };
        assert!(label_selector_matches(
            &selector,
            &labels(&[("a", "1"), ("b", "2"), ("c", "3")])
        ));
        assert!(!label_selector_matches(&selector, &labels(&[("a", "1")])));
        assert!(!label_selector_matches(
            &selector,
            &labels(&[("a", "1"), ("b", "3")])
        ));
    }

    #[test]
    fn expressions_follow_kubernetes_semantics() {
        let with = labels(&[("tier", "api")]);
        let without = labels(&[]);
        let cases = [
            ("In", &["api", "web"][..], true, false),
            ("NotIn", &["web"][..], true, true),
            ("NotIn", &["api"][..], false, true),
            ("Exists", &[][..], true, false),
            ("DoesNotExist", &[][..], false, true),
            ("Bogus", &["api"][..], false, false),
        ];
        for (operator, values, on_with, on_without) in cases {
            let selector = expression("tier", operator, values);
            assert_eq!(
                label_selector_matches(&selector, &with),
                on_with,
                "{operator} {values:?}"
            );
            assert_eq!(
                label_selector_matches(&selector, &without),
                on_without,
                "{operator} {values:?}"
            );
        }
    }

    #[test]
    fn publications_select_by_namespace_labels_and_use() {
        let key: SigningKey = serde_json::from_value(serde_json::json!({
            "apiVersion": "jwks-operator.io/v1alpha1", "kind": "SigningKey",
            "metadata": {"name": "k", "namespace": "auth", "labels": {"jwks-operator.io/publication": "main"}},
            "spec": {"algorithm": "ES256"}
        }))
        .unwrap();
        let publication = |namespace: &str, uses: &[&str]| -> JwksPublication {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "jwks-operator.io/v1alpha1", "kind": "JwksPublication",
                "metadata": {"name": "main", "namespace": namespace},
                "spec": {"selector": {"matchLabels": {"jwks-operator.io/publication": "main"}}, "use": uses}
            }))
            .unwrap()
        };
        assert!(selects(&publication("auth", &["sig"]), &key));
        assert!(selects(&publication("auth", &["enc", "sig"]), &key));
        assert!(!selects(&publication("auth", &["enc"]), &key));
        assert!(!selects(&publication("other", &["sig"]), &key));
    }
}
