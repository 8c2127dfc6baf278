//! The name the publication's objects share, the labels they carry, and how an object is proven
//! to be this publication's (its controller owner reference).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

use crate::api::conditions::PublicationReason;
use crate::api::{JwksPublication, MANAGED_BY_LABEL, MANAGER};

use super::Problem;

pub const PUBLICATION_NAME_LABEL: &str = "jwks-operator.io/publication-name";

/// The ConfigMap, Deployment and Service share this name: `spec.configMapName`, default
/// `<name>-jwks`.
pub fn object_name(publication: &JwksPublication) -> String {
    publication
        .spec
        .config_map_name
        .clone()
        .unwrap_or_else(|| format!("{}-jwks", publication.name_any()))
}

/// Why [`object_name`] cannot name what the publication needs: `config_map` when not even the
/// ConfigMap can bear it; otherwise only the server's Service cannot.
#[derive(Debug, PartialEq)]
pub struct NameProblem {
    pub config_map: bool,
    pub message: String,
}

impl NameProblem {
    /// The condition reason and message it is reported with.
    pub fn problem(&self) -> Problem {
        (PublicationReason::InvalidName, self.message.clone())
    }
}

/// Checks [`object_name`] against the apiserver's rules before anything is written, so a name
/// admitted before the schema refused it (or derived from a dotted `metadata.name`) becomes a
/// condition instead of a write the apiserver refuses on every retry.
pub fn check_name(publication: &JwksPublication) -> Option<NameProblem> {
    let name = object_name(publication);
    let which = match &publication.spec.config_map_name {
        Some(_) => format!("spec.configMapName {name:?}"),
        None => format!("the default name {name:?} (<metadata.name>-jwks)"),
    };
    if !is_dns1123_subdomain(&name) {
        return Some(NameProblem {
            config_map: true,
            message: format!(
                "{which} is not a valid ConfigMap name (lowercase letters, digits, '-' and '.', at most 253 characters); set spec.configMapName"
            ),
        });
    }
    (publication.spec.server.enabled && !is_dns1035_label(&name)).then(|| NameProblem {
        config_map: false,
        message: format!(
            "{which} cannot name the server's Service: with server.enabled it must be a DNS-1035 label (lowercase letters, digits and '-', starting with a letter, at most 63 characters); set spec.configMapName or server.enabled: false. The ConfigMap is published; the server is not run"
        ),
    })
}

/// A Service name (RFC 1035 label as Kubernetes restricts it).
fn is_dns1035_label(name: &str) -> bool {
    name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// A ConfigMap (or Deployment) name: dot-separated RFC 1123 labels, at most 253 characters
/// (Kubernetes does not limit the labels' length here).
fn is_dns1123_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

pub fn metadata(publication: &JwksPublication) -> ObjectMeta {
    ObjectMeta {
        name: Some(object_name(publication)),
        namespace: publication.namespace(),
        labels: Some(labels(publication)),
        owner_references: publication.controller_owner_ref(&()).map(|r| vec![r]),
        ..ObjectMeta::default()
    }
}

pub fn labels(publication: &JwksPublication) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.into(), MANAGER.into()),
        (PUBLICATION_NAME_LABEL.into(), name_label(publication)),
        ("app.kubernetes.io/name".into(), "jwks-server".into()),
        ("app.kubernetes.io/instance".into(), name_label(publication)),
    ])
}

/// The label selector that finds every object a publication may own (with the owner reference
/// UID, which proves it).
pub fn owned_selector(publication: &JwksPublication) -> String {
    format!(
        "{MANAGED_BY_LABEL}={MANAGER},{PUBLICATION_NAME_LABEL}={}",
        name_label(publication)
    )
}

/// The publication's name as a label value: itself when it fits (63 characters), else a prefix
/// and a hash of the whole, so a long name (valid for the object) still gives valid labels.
fn name_label(publication: &JwksPublication) -> String {
    let name = publication.name_any();
    if name.len() <= 63 {
        return name;
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, name.as_bytes());
    let hash: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let prefix = name.get(..40).unwrap_or_default();
    let prefix = prefix.trim_end_matches(['-', '.']);
    format!("{prefix}-{hash}")
}

pub fn selector_labels(publication: &JwksPublication) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "jwks-server".into()),
        ("app.kubernetes.io/instance".into(), name_label(publication)),
    ])
}

/// Whether `object` is controlled by `publication` (its controller owner reference).
pub fn controlled_by<K: Resource>(object: &K, publication: &JwksPublication) -> bool {
    let uid = publication.meta().uid.as_deref();
    uid.is_some()
        && object
            .owner_references()
            .iter()
            .any(|r| r.controller == Some(true) && Some(r.uid.as_str()) == uid)
}

/// The objects among `objects` this publication controls that are no longer wanted: every one
/// not named `keep` (a former `configMapName`, or the server while it is not to run). As
/// `(name, uid)`, for a delete conditional on the UID.
pub fn unwanted<K: Resource>(
    publication: &JwksPublication,
    objects: &[K],
    keep: Option<&str>,
) -> Vec<(String, String)> {
    objects
        .iter()
        .filter(|o| controlled_by(*o, publication))
        .filter(|o| o.meta().name.as_deref() != keep)
        .filter_map(|o| Some((o.meta().name.clone()?, o.meta().uid.clone()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use serde_json::json;

    #[test]
    fn server_names_must_be_dns_1035_labels_while_the_server_runs() {
        let long = "a".repeat(63);
        let too_long = "a".repeat(64);
        let cases = [
            // (metadata.name, spec, problem expected, ConfigMap unusable too)
            ("main", json!({}), false, false),
            ("main", json!({"configMapName": "jwks-1"}), false, false),
            ("main", json!({"configMapName": long}), false, false),
            ("main", json!({"configMapName": too_long}), true, false),
            ("main", json!({"configMapName": "a.b"}), true, false),
            ("main", json!({"configMapName": "1jwks"}), true, false),
            (
                "main",
                json!({"configMapName": "a.b", "server": {"enabled": false}}),
                false,
                false,
            ),
            ("a.b", json!({}), true, false),
            ("a.b", json!({"server": {"enabled": false}}), false, false),
            ("main", json!({"configMapName": "Main"}), true, true),
            (
                "main",
                json!({"configMapName": "a..b", "server": {"enabled": false}}),
                true,
                true,
            ),
            (
                &"a".repeat(250),
                json!({"server": {"enabled": false}}),
                true,
                true,
            ),
        ];
        for (name, spec, expected, config_map) in cases {
            let problem = check_name(&named(name, spec.clone()));
            assert_eq!(problem.is_some(), expected, "{name} {spec}: {problem:?}");
            if let Some(problem) = problem {
                assert_eq!(problem.config_map, config_map, "{name} {spec}");
            }
        }
        let explicit = check_name(&named("main", json!({"configMapName": "a.b"}))).unwrap();
        assert!(
            explicit
                .message
                .starts_with("spec.configMapName \"a.b\" cannot name the server's Service"),
            "{}",
            explicit.message
        );
        let default = check_name(&named("a.b", json!({}))).unwrap();
        assert!(
            default.message.contains("the default name \"a.b-jwks\""),
            "{}",
            default.message
        );
    }

    #[test]
    fn only_owned_objects_under_another_name_are_unwanted() {
        let publication = publication(json!({}));
        let objects: Vec<ConfigMap> = vec![
            object("old-jwks", Some("u-1")),
            object("main-jwks", Some("u-1")),
            object("foreign", None),
            object("other-publication", Some("u-2")),
        ];
        assert_eq!(
            unwanted(&publication, &objects, Some("main-jwks")),
            [("old-jwks".to_string(), "uid-of-old-jwks".to_string())]
        );
        let all_ours: Vec<&str> = unwanted(&publication, &objects, None)
            .iter()
            .map(|(n, _)| n.as_str())
            .map(|n| {
                if n == "old-jwks" {
                    "old-jwks"
                } else {
                    "main-jwks"
                }
            })
            .collect();
        assert_eq!(all_ours, ["old-jwks", "main-jwks"]);
        let mut no_uid = publication.clone();
        no_uid.metadata.uid = None;
        assert!(
            unwanted(&no_uid, &objects, None).is_empty(),
            "no UID, nothing proven ours"
        );
    }

    #[test]
    fn long_publication_names_still_give_valid_labels() {
        let short = named("main", json!({}));
        assert_eq!(labels(&short)[PUBLICATION_NAME_LABEL], "main");
        let name = format!("{}.{}", "a".repeat(39), "b".repeat(100));
        let long = named(&name, json!({"configMapName": "jwks"}));
        for value in labels(&long)
            .values()
            .chain(selector_labels(&long).values())
        {
            assert!(value.len() <= 63, "{value}");
            assert!(
                value.starts_with(|c: char| c.is_ascii_alphanumeric()),
                "{value}"
            );
            assert!(
                value.ends_with(|c: char| c.is_ascii_alphanumeric()),
                "{value}"
            );
        }
        let other = named(
            &format!("{}.{}", "a".repeat(39), "c".repeat(100)),
            json!({}),
        );
        assert_ne!(
            labels(&long)[PUBLICATION_NAME_LABEL],
            labels(&other)[PUBLICATION_NAME_LABEL]
        );
        assert!(owned_selector(&long).ends_with(&labels(&long)[PUBLICATION_NAME_LABEL]));
    }
}
