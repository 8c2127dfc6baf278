//! The ConfigMap that holds the documents: what it should hold, whether to write it, and what
//! the status may claim it serves.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::events::Event;

use crate::api::JwksPublication;
use crate::api::conditions::PublicationReason;
use crate::publication::{Assembled, JWKS_KEY, Published, strong_etag};

use super::Problem;
use super::naming::{controlled_by, metadata, object_name};

pub fn build_config_map(publication: &JwksPublication, published: &Published) -> ConfigMap {
    ConfigMap {
        metadata: metadata(publication),
        data: Some(published.to_data()),
        ..ConfigMap::default()
    }
}

/// Bytes the ConfigMap's data takes; the apiserver refuses objects over 1 MiB in total, and
/// the metadata needs some of that.
fn data_size(published: &Published) -> usize {
    published
        .to_data()
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum()
}

pub const CONFIG_MAP_DATA_LIMIT: usize = 1024 * 1024 - 16 * 1024;

/// What to do with the ConfigMap.
#[derive(Debug, PartialEq)]
pub enum ConfigMapAction {
    /// Apply this ConfigMap: its content changed.
    Write(Box<ConfigMap>),
    /// The ConfigMap already holds exactly this content: no write, no churn (G5).
    Unchanged,
    /// Leave it as it is, for this reason (a condition reason) and message.
    Refuse(PublicationReason, String),
}

/// Decides the ConfigMap write: never over a ConfigMap that is someone else's, never content
/// the apiserver would refuse or truncate.
pub fn plan_config_map(
    publication: &JwksPublication,
    existing: Option<&ConfigMap>,
    published: &Published,
) -> ConfigMapAction {
    let name = object_name(publication);
    if let Some(existing) = existing
        && !controlled_by(existing, publication)
    {
        return ConfigMapAction::Refuse(
            PublicationReason::ConfigMapConflict,
            format!(
                "ConfigMap {name} exists and is not managed by this JwksPublication; nothing is published or served until spec.configMapName names another ConfigMap or that one is deleted"
            ),
        );
    }
    let size = data_size(published);
    if size > CONFIG_MAP_DATA_LIMIT {
        return ConfigMapAction::Refuse(
            PublicationReason::TooLarge,
            format!(
                "the documents take {size} bytes, over the {CONFIG_MAP_DATA_LIMIT} a ConfigMap can hold; the ConfigMap keeps its previous content"
            ),
        );
    }
    let desired = build_config_map(publication, published);
    if existing.and_then(|cm| cm.data.as_ref()) == desired.data.as_ref() {
        ConfigMapAction::Unchanged
    } else {
        ConfigMapAction::Write(Box::new(desired))
    }
}

/// What the status may claim is served: when the ConfigMap is up to date, what was assembled;
/// otherwise what the ConfigMap holds if it is this publication's (`TooLarge` keeps the previous
/// content), and nothing when it is someone else's or absent — a foreign ConfigMap's kids must
/// never count as published (G1).
pub fn served(
    publication: &JwksPublication,
    up_to_date: bool,
    existing: Option<&ConfigMap>,
    published: &Published,
    kids: &BTreeSet<String>,
) -> (Vec<String>, Option<String>) {
    if up_to_date {
        return (
            kids.iter().cloned().collect(),
            Some(strong_etag(published.jwks.as_bytes())),
        );
    }
    match existing.filter(|cm| controlled_by(*cm, publication)) {
        Some(ours) => (
            kids_in(ours),
            ours.data
                .as_ref()
                .and_then(|d| d.get(JWKS_KEY))
                .map(|jwks| strong_etag(jwks.as_bytes())),
        ),
        None => (Vec::new(), None),
    }
}

/// What became of the ConfigMap, as the rest of the reconcile needs it.
pub struct Publishing {
    /// Why the ConfigMap could not be brought up to date, if it could not.
    pub problem: Option<Problem>,
    /// Whether the ConfigMap of that name, if any, is this publication's.
    pub ours: bool,
    /// The kids the ConfigMap serves now, and the etag of its `jwks.json`.
    pub served: Vec<String>,
    pub etag: Option<String>,
    /// The JwksUpdated event of a write, and the kids it added.
    pub event: Option<Event>,
    pub added: Vec<String>,
}

impl Publishing {
    /// The ConfigMap holds what was assembled (written now with `event`, adding `added`, or
    /// already).
    pub fn up_to_date(
        publication: &JwksPublication,
        assembled: &Assembled,
        event: Option<Event>,
        added: Vec<String>,
    ) -> Self {
        let (served, etag) = served(
            publication,
            true,
            None,
            &assembled.published,
            &assembled.kids,
        );
        Publishing {
            problem: None,
            ours: true,
            served,
            etag,
            event,
            added,
        }
    }

    /// The ConfigMap is left as it is, for `problem`: it serves what it holds if it is ours.
    pub fn refused(
        publication: &JwksPublication,
        existing: Option<&ConfigMap>,
        assembled: &Assembled,
        problem: Problem,
    ) -> Self {
        let (served, etag) = served(
            publication,
            false,
            existing,
            &assembled.published,
            &assembled.kids,
        );
        Publishing {
            problem: Some(problem),
            ours: existing.is_some_and(|cm| controlled_by(cm, publication)),
            served,
            etag,
            event: None,
            added: Vec::new(),
        }
    }
}

/// The kids in a ConfigMap's `jwks.json`.
pub fn kids_in(config_map: &ConfigMap) -> Vec<String> {
    config_map
        .data
        .as_ref()
        .and_then(|d| d.get(JWKS_KEY))
        .and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok())
        .and_then(|set| {
            set["keys"].as_array().map(|keys| {
                keys.iter()
                    .filter_map(|k| k["kid"].as_str().map(str::to_owned))
                    .collect()
            })
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use serde_json::json;
    use std::collections::BTreeMap;

    #[test]
    fn config_map_is_written_only_when_its_content_changes() {
        let publication = publication(json!({}));
        let content = published(r#"{"keys":[]}"#);
        let ConfigMapAction::Write(desired) = plan_config_map(&publication, None, &content) else {
            panic!("a missing ConfigMap is written");
        };
        assert_eq!(
            plan_config_map(&publication, Some(&desired), &content),
            ConfigMapAction::Unchanged
        );
        let changed = published(r#"{"keys":[{"kid":"a"}]}"#);
        assert!(matches!(
            plan_config_map(&publication, Some(&desired), &changed),
            ConfigMapAction::Write(_)
        ));
    }

    #[test]
    fn a_config_map_of_someone_else_is_left_alone() {
        let publication = publication(json!({}));
        let foreign = ConfigMap {
            metadata: ObjectMeta {
                name: Some("main-jwks".into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        };
        let action = plan_config_map(&publication, Some(&foreign), &published(r#"{"keys":[]}"#));
        assert!(
            matches!(
                action,
                ConfigMapAction::Refuse(PublicationReason::ConfigMapConflict, _)
            ),
            "{action:?}"
        );
    }

    #[test]
    fn content_over_the_object_limit_is_refused_never_truncated() {
        let publication = publication(json!({}));
        let huge = published(&format!(
            r#"{{"keys":[],"pad":"{}"}}"#,
            "x".repeat(CONFIG_MAP_DATA_LIMIT)
        ));
        let action = plan_config_map(&publication, None, &huge);
        let ConfigMapAction::Refuse(PublicationReason::TooLarge, message) = action else {
            panic!("{action:?}")
        };
        assert!(message.contains("keeps its previous content"), "{message}");
    }

    #[test]
    fn a_foreign_config_map_is_never_reported_as_served() {
        let publication = publication(json!({}));
        let content = published(r#"{"keys":[{"kid":"new"}]}"#);
        let kids = BTreeSet::from(["new".to_string()]);
        let with_kid = |controller: Option<&str>| {
            let mut cm: ConfigMap = object("main-jwks", controller);
            cm.data = Some(BTreeMap::from([(
                JWKS_KEY.into(),
                r#"{"keys":[{"kid":"old"}]}"#.into(),
            )]));
            cm
        };
        let foreign = with_kid(None);
        assert_eq!(
            served(&publication, false, Some(&foreign), &content, &kids),
            (vec![], None)
        );
        let other_publication = with_kid(Some("u-2"));
        assert_eq!(
            served(
                &publication,
                false,
                Some(&other_publication),
                &content,
                &kids
            ),
            (vec![], None)
        );
        assert_eq!(
            served(&publication, false, None, &content, &kids),
            (vec![], None)
        );

        let ours = with_kid(Some("u-1"));
        let (kids_now, etag) = served(&publication, false, Some(&ours), &content, &kids);
        assert_eq!(
            kids_now,
            ["old"],
            "TooLarge: the ConfigMap keeps (and serves) its previous content"
        );
        assert_eq!(etag, Some(strong_etag(br#"{"keys":[{"kid":"old"}]}"#)));
        let (kids_now, etag) = served(&publication, true, Some(&ours), &content, &kids);
        assert_eq!(kids_now, ["new"]);
        assert_eq!(etag, Some(strong_etag(content.jwks.as_bytes())));
    }

    #[test]
    fn a_refused_config_map_counts_as_ours_only_when_it_is() {
        let publication = publication(json!({}));
        let assembled = Assembled {
            published: published(r#"{"keys":[{"kid":"new"}]}"#),
            kids: BTreeSet::from(["new".to_string()]),
            sources: vec!["tokens".into()],
            skipped: Vec::new(),
        };
        let problem = || (PublicationReason::TooLarge, "big".to_string());
        let mut ours: ConfigMap = object("main-jwks", Some("u-1"));
        ours.data = Some(BTreeMap::from([(
            JWKS_KEY.into(),
            r#"{"keys":[{"kid":"old"}]}"#.into(),
        )]));
        let kept = Publishing::refused(&publication, Some(&ours), &assembled, problem());
        assert!(kept.ours);
        assert_eq!(kept.served, ["old"]);
        assert_eq!(kept.problem, Some(problem()));
        let foreign: ConfigMap = object("main-jwks", None);
        let theirs = Publishing::refused(&publication, Some(&foreign), &assembled, problem());
        assert!(!theirs.ours);
        assert!(theirs.served.is_empty() && theirs.etag.is_none());
        let absent = Publishing::refused(&publication, None, &assembled, problem());
        assert!(!absent.ours, "no ConfigMap is not ours to serve");

        let written = Publishing::up_to_date(&publication, &assembled, None, Vec::new());
        assert!(written.ours && written.problem.is_none());
        assert_eq!(written.served, ["new"]);
        assert_eq!(
            written.etag,
            Some(strong_etag(assembled.published.jwks.as_bytes()))
        );
    }
}
