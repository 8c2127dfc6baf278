//! Copies of the publication's ConfigMap in other namespaces (a pod mounts ConfigMaps of its own
//! namespace only): which namespaces get one, what a copy is and how it is known to be ours, and
//! what the copies let the status claim. G1 counts from the last copy that must carry a key, so
//! a kid is published only once every copy that must carry it holds it.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use crate::api::conditions::{ConditionStatus, PublicationCondition, PublicationReason};
use crate::api::{
    ACCEPT_COPIES_ANNOTATION, COPY_OF_LABEL, COPY_SOURCE_ANNOTATION, CopiesSpec, CopiesStatus,
    JwksPublication, MANAGED_BY_LABEL, MANAGER, PublishedKey,
};
use crate::controller::conditions::Verdict;
use crate::lifecycle::label_selector_matches;
use crate::publication::Published;

use super::config_map::kids_in;
use super::naming::object_name;

/// The namespaces asked for: those that get a copy, and those that refuse one.
#[derive(Debug, Default, PartialEq)]
pub struct Targets {
    pub wanted: Vec<String>,
    /// Selected or named, but absent or not accepting copies from the publication's namespace.
    pub refused: Vec<String>,
}

/// Which of `namespaces` (their metadata) get a copy: selected by `spec` and accepting copies
/// from the publication's namespace. The publication's own namespace (which has the ConfigMap
/// itself) and namespaces being deleted get none.
pub fn targets(
    publication: &JwksPublication,
    spec: &CopiesSpec,
    namespaces: &[ObjectMeta],
) -> Targets {
    let source = publication.namespace().unwrap_or_default();
    let existing: BTreeMap<&str, &ObjectMeta> = namespaces
        .iter()
        .filter_map(|n| Some((n.name.as_deref()?, n)))
        .collect();
    let selected = existing.iter().filter(|(_, meta)| {
        spec.namespace_selector.as_ref().is_some_and(|s| {
            label_selector_matches(s, meta.labels.as_ref().unwrap_or(&BTreeMap::new()))
        })
    });
    let named = spec
        .namespaces
        .iter()
        .map(|name| (name.as_str(), existing.get(name.as_str())));
    let asked: BTreeMap<&str, Option<&ObjectMeta>> = selected
        .map(|(name, meta)| (*name, Some(*meta)))
        .chain(named.map(|(name, meta)| (name, meta.copied())))
        .filter(|(name, _)| *name != source)
        .collect();
    let mut targets = Targets::default();
    for (name, meta) in asked {
        match meta {
            Some(meta) if meta.deletion_timestamp.is_some() => {}
            Some(meta) if accepts(meta, &source) => targets.wanted.push(name.to_owned()),
            _ => targets.refused.push(name.to_owned()),
        }
    }
    targets
}

/// Whether a namespace accepts copies from `source`: its [`ACCEPT_COPIES_ANNOTATION`] names it
/// or is `*`. Consent is the target's: otherwise any tenant could place a ConfigMap of its
/// choosing under a name another namespace's verifiers trust.
pub fn accepts(namespace: &ObjectMeta, source: &str) -> bool {
    namespace
        .annotations
        .as_ref()
        .and_then(|a| a.get(ACCEPT_COPIES_ANNOTATION))
        .is_some_and(|value| {
            value
                .split(',')
                .map(str::trim)
                .any(|accepted| accepted == "*" || accepted == source)
        })
}

/// The copy in `namespace`: the ConfigMap's name and data, marked as this publication's.
pub fn build_copy(
    publication: &JwksPublication,
    namespace: &str,
    published: &Published,
) -> ConfigMap {
    let uid = publication.uid().unwrap_or_default();
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(object_name(publication)),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([
                (MANAGED_BY_LABEL.into(), MANAGER.into()),
                (COPY_OF_LABEL.into(), uid),
            ])),
            annotations: Some(BTreeMap::from([(
                COPY_SOURCE_ANNOTATION.into(),
                format!(
                    "{}/{}",
                    publication.namespace().unwrap_or_default(),
                    publication.name_any()
                ),
            )])),
            ..ObjectMeta::default()
        },
        data: Some(published.to_data()),
        ..ConfigMap::default()
    }
}

/// The label selector that finds this publication's copies in every namespace.
pub fn copies_selector(publication: &JwksPublication) -> String {
    format!(
        "{MANAGED_BY_LABEL}={MANAGER},{COPY_OF_LABEL}={}",
        publication.uid().unwrap_or_default()
    )
}

/// Whether `object` is a copy of `publication` (the publication's UID in its labels).
pub fn is_copy_of(object: &ObjectMeta, publication: &JwksPublication) -> bool {
    let labels = object.labels.as_ref();
    let label = |key: &str| labels.and_then(|l| l.get(key)).map(String::as_str);
    let uid = publication.metadata.uid.as_deref();
    uid.is_some() && label(MANAGED_BY_LABEL) == Some(MANAGER) && label(COPY_OF_LABEL) == uid
}

/// The publication to reconcile when a ConfigMap of the operator's changes or goes: its
/// controller owner, or for a copy (no owner reference can cross namespaces) the publication
/// its [`COPY_SOURCE_ANNOTATION`] names.
pub fn publication_of(config_map: &ConfigMap) -> Option<ObjectRef<JwksPublication>> {
    let namespace = config_map.namespace();
    let owner = config_map
        .owner_references()
        .iter()
        .filter(|r| r.controller == Some(true))
        .find_map(|r| ObjectRef::from_owner_ref(namespace.as_deref(), r, ()));
    owner.or_else(|| {
        let source = config_map.annotations().get(COPY_SOURCE_ANNOTATION)?;
        let (namespace, name) = source.split_once('/')?;
        Some(ObjectRef::new(name).within(namespace))
    })
}

/// What to do in one target namespace.
#[derive(Debug, PartialEq)]
pub enum CopyPlan {
    /// A ConfigMap of that name is there and is not our copy: it is left alone.
    Conflict,
    Unchanged,
    Write(Box<ConfigMap>),
}

pub fn plan_copy(
    publication: &JwksPublication,
    namespace: &str,
    existing: Option<&ConfigMap>,
    published: &Published,
) -> CopyPlan {
    if existing.is_some_and(|cm| !is_copy_of(&cm.metadata, publication)) {
        return CopyPlan::Conflict;
    }
    let desired = build_copy(publication, namespace, published);
    if existing.and_then(|cm| cm.data.as_ref()) == desired.data.as_ref() {
        CopyPlan::Unchanged
    } else {
        CopyPlan::Write(Box::new(desired))
    }
}

/// What became of the copy in one namespace.
#[derive(Clone, Debug, PartialEq)]
pub enum CopyState {
    /// It holds the ConfigMap's content; `added` are the kids this reconcile wrote into it.
    UpToDate { added: Vec<String> },
    /// Writing it failed: it holds `held` (nothing when absent) and `error` says why.
    Stale { held: Vec<String>, error: String },
    /// A ConfigMap of that name there is not ours: no copy.
    Conflict,
}

impl CopyState {
    /// The state after writing `desired` over `existing` succeeded or failed with `error`.
    pub fn after_write(
        existing: Option<&ConfigMap>,
        desired: &ConfigMap,
        error: Option<String>,
    ) -> Self {
        let held = existing.map(kids_in).unwrap_or_default();
        match error {
            Some(error) => CopyState::Stale { held, error },
            None => CopyState::UpToDate {
                added: kids_in(desired)
                    .into_iter()
                    .filter(|k| !held.contains(k))
                    .collect(),
            },
        }
    }
}

/// What the copy step found.
#[derive(Debug, PartialEq)]
pub enum Copying {
    /// The publication asks for no copies.
    NotAsked,
    /// Copies are asked for but the operator may not make them (why).
    NotAllowed(String),
    /// The ConfigMap itself could not be brought up to date: the copies wait for it.
    Deferred,
    Done {
        copies: BTreeMap<String, CopyState>,
        refused: Vec<String>,
    },
}

impl Copying {
    /// The served kids the status may list: those every copy that must carry them holds. While
    /// the copies wait ([`Copying::Deferred`]) only kids listed before, as none was copied now.
    pub fn gate(&self, served: &[String], previous: &[PublishedKey]) -> Vec<String> {
        let listed = |kid: &String| previous.iter().any(|k| &k.kid == kid);
        let held_by_stale = |kid: &String| match self {
            Copying::Done { copies, .. } => copies.values().all(|state| match state {
                CopyState::Stale { held, .. } => held.contains(kid),
                _ => true,
            }),
            _ => true,
        };
        served
            .iter()
            .filter(|kid| !matches!(self, Copying::Deferred) || listed(kid))
            .filter(|kid| held_by_stale(kid))
            .cloned()
            .collect()
    }

    /// The kids written into some copy now: their `publishedAt` starts again from now.
    pub fn added(&self) -> BTreeSet<String> {
        match self {
            Copying::Done { copies, .. } => copies
                .values()
                .flat_map(|state| match state {
                    CopyState::UpToDate { added } => added.as_slice(),
                    _ => &[],
                })
                .cloned()
                .collect(),
            _ => BTreeSet::new(),
        }
    }

    /// Whether to look again soon: a failed write or a foreign ConfigMap (neither is watched).
    pub fn needs_retry(&self) -> bool {
        matches!(self, Copying::Done { copies, .. }
            if copies.values().any(|s| !matches!(s, CopyState::UpToDate { .. })))
    }

    pub fn status(&self) -> Option<CopiesStatus> {
        let Copying::Done { copies, refused } = self else {
            return None;
        };
        let listed = |names: Vec<&String>| {
            names
                .into_iter()
                .take(CopiesStatus::MAX_LISTED)
                .cloned()
                .collect()
        };
        Some(CopiesStatus {
            namespaces: count(copies.len()),
            up_to_date: count(
                self.in_state(|s| matches!(s, CopyState::UpToDate { .. }))
                    .len(),
            ),
            stale: listed(self.in_state(|s| matches!(s, CopyState::Stale { .. }))),
            conflicting: listed(self.in_state(|s| *s == CopyState::Conflict)),
            refused: listed(refused.iter().collect()),
        })
    }

    fn in_state(&self, state: impl Fn(&CopyState) -> bool) -> Vec<&String> {
        match self {
            Copying::Done { copies, .. } => copies
                .iter()
                .filter(|(_, s)| state(s))
                .map(|(namespace, _)| namespace)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The Copied condition, when copies are asked for.
    pub fn verdict(
        &self,
        publication: &JwksPublication,
    ) -> Option<Verdict<PublicationCondition, PublicationReason>> {
        let not_copied = |reason, message: String| {
            Some(Verdict::new(
                PublicationCondition::Copied,
                ConditionStatus::False,
                reason,
                message,
            ))
        };
        let Copying::Done { copies, refused } = self else {
            return match self {
                Copying::NotAsked => None,
                Copying::NotAllowed(why) => {
                    not_copied(PublicationReason::CopiesNotAllowed, why.clone())
                }
                _ => not_copied(
                    PublicationReason::CopiesPending,
                    "the copies wait until the ConfigMap itself can be brought up to date".into(),
                ),
            };
        };
        let name = object_name(publication);
        let stale: Vec<(&String, &String)> = copies
            .iter()
            .filter_map(|(namespace, state)| match state {
                CopyState::Stale { error, .. } => Some((namespace, error)),
                _ => None,
            })
            .collect();
        let conflicting = self.in_state(|s| *s == CopyState::Conflict);
        if let Some((namespace, error)) = stale.first() {
            return not_copied(
                PublicationReason::CopiesPending,
                format!(
                    "{} of {} copies hold an older set ({}); a key they lack is not published until they hold it. In {namespace}: {error}",
                    stale.len(),
                    copies.len(),
                    names(stale.iter().map(|(n, _)| *n)),
                ),
            );
        }
        if !conflicting.is_empty() {
            return not_copied(
                PublicationReason::CopyConflict,
                format!(
                    "ConfigMap {name} in {} is not this publication's copy: left alone, no copy there",
                    names(conflicting.into_iter())
                ),
            );
        }
        if !refused.is_empty() {
            let source = publication.namespace().unwrap_or_default();
            return not_copied(
                PublicationReason::CopiesRefused,
                format!(
                    "{} selected or named do not exist or do not accept copies from {source} (their annotation {ACCEPT_COPIES_ANNOTATION} must name {source} or be *): {}",
                    plural(refused.len(), "namespace"),
                    names(refused.iter())
                ),
            );
        }
        Some(Verdict::new(
            PublicationCondition::Copied,
            ConditionStatus::True,
            PublicationReason::CopiesUpToDate,
            format!(
                "{} of ConfigMap {name} up to date",
                plural(copies.len(), "copy")
            ),
        ))
    }
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn plural(n: usize, noun: &str) -> String {
    match (n, noun) {
        (1, _) => format!("1 {noun}"),
        (_, "copy") => format!("{n} copies"),
        _ => format!("{n} {noun}s"),
    }
}

/// Up to [`CopiesStatus::MAX_LISTED`] names, then how many more.
fn names<'a>(all: impl ExactSizeIterator<Item = &'a String>) -> String {
    let total = all.len();
    let shown: Vec<&str> = all
        .take(CopiesStatus::MAX_LISTED)
        .map(String::as_str)
        .collect();
    match total - shown.len() {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use crate::api::conditions::Term;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
    use k8s_openapi::jiff::Timestamp;
    use serde_json::json;

    fn namespace(name: &str, labels: serde_json::Value, accepts: Option<&str>) -> ObjectMeta {
        serde_json::from_value(json!({
            "name": name,
            "labels": labels,
            "annotations": accepts.map(|a| json!({ACCEPT_COPIES_ANNOTATION: a})).unwrap_or(json!({})),
        }))
        .unwrap()
    }

    fn with_copies(copies: serde_json::Value) -> JwksPublication {
        named("main", json!({"copies": copies}))
    }

    fn spec(publication: &JwksPublication) -> &CopiesSpec {
        publication.spec.copies.as_ref().unwrap()
    }

    #[test]
    fn targets_are_selected_or_named_namespaces_that_accept_copies_from_the_source() {
        let publication = with_copies(json!({
            "namespaceSelector": {"matchLabels": {"jwks": "main"}},
            "namespaces": ["named", "absent", "auth"],
        }));
        let mut terminating = namespace("terminating", json!({"jwks": "main"}), Some("auth"));
        terminating.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        let namespaces = [
            namespace("auth", json!({"jwks": "main"}), Some("*")),
            namespace("app", json!({"jwks": "main"}), Some("billing, auth")),
            namespace("wildcard", json!({"jwks": "main"}), Some("*")),
            namespace("other-source", json!({"jwks": "main"}), Some("billing")),
            namespace("no-consent", json!({"jwks": "main"}), None),
            namespace("unlabelled", json!({}), Some("auth")),
            namespace("named", json!({}), Some("auth")),
            terminating,
        ];
        let targets = targets(&publication, spec(&publication), &namespaces);
        assert_eq!(targets.wanted, ["app", "named", "wildcard"]);
        assert_eq!(targets.refused, ["absent", "no-consent", "other-source"]);
    }

    #[test]
    fn an_empty_selector_selects_every_namespace_and_consent_still_decides() {
        let publication = with_copies(json!({"namespaceSelector": {}}));
        let namespaces = [
            namespace("a", json!({}), Some("auth")),
            namespace("b", json!({}), Some("authx")),
        ];
        let targets = targets(&publication, spec(&publication), &namespaces);
        assert_eq!(targets.wanted, ["a"]);
        assert_eq!(targets.refused, ["b"]);
    }

    #[test]
    fn a_copy_is_the_config_map_data_marked_with_the_publication_uid() {
        let publication = with_copies(json!({"namespaces": ["app"]}));
        let copy = build_copy(&publication, "app", &published(r#"{"keys":[]}"#));
        assert_eq!(copy.metadata.namespace.as_deref(), Some("app"));
        assert_eq!(copy.metadata.name.as_deref(), Some("main-jwks"));
        assert!(copy.metadata.owner_references.is_none());
        assert_eq!(copy.data, Some(published(r#"{"keys":[]}"#).to_data()));
        assert!(is_copy_of(&copy.metadata, &publication));
        assert_eq!(
            copies_selector(&publication),
            "app.kubernetes.io/managed-by=jwks-operator,jwks-operator.io/copy-of=u-1"
        );
        let mut other = publication.clone();
        other.metadata.uid = Some("u-2".into());
        assert!(
            !is_copy_of(&copy.metadata, &other),
            "another publication's copy"
        );
        other.metadata.uid = None;
        assert!(
            !is_copy_of(&copy.metadata, &other),
            "no UID, nothing proven"
        );
        assert_eq!(
            publication_of(&copy),
            Some(ObjectRef::new("main").within("auth"))
        );
        let owned: ConfigMap = object("main-jwks", Some("u-1"));
        let mut owned = owned;
        owned.metadata.namespace = Some("auth".into());
        assert_eq!(
            publication_of(&owned),
            Some(ObjectRef::new("main").within("auth"))
        );
        assert_eq!(publication_of(&ConfigMap::default()), None);
    }

    #[test]
    fn a_copy_is_written_when_absent_or_different_and_never_over_a_foreign_config_map() {
        let publication = with_copies(json!({"namespaces": ["app"]}));
        let content = published(r#"{"keys":[]}"#);
        let CopyPlan::Write(desired) = plan_copy(&publication, "app", None, &content) else {
            panic!("an absent copy is written");
        };
        assert_eq!(
            plan_copy(&publication, "app", Some(&desired), &content),
            CopyPlan::Unchanged
        );
        let changed = published(r#"{"keys":[{"kid":"a"}]}"#);
        assert!(matches!(
            plan_copy(&publication, "app", Some(&desired), &changed),
            CopyPlan::Write(_)
        ));
        let foreign: ConfigMap = object("main-jwks", None);
        assert_eq!(
            plan_copy(&publication, "app", Some(&foreign), &content),
            CopyPlan::Conflict
        );
    }

    fn copy_holding(kids: &[&str]) -> ConfigMap {
        let keys: Vec<_> = kids.iter().map(|k| json!({"kid": k})).collect();
        ConfigMap {
            data: Some(published(&json!({"keys": keys}).to_string()).to_data()),
            ..ConfigMap::default()
        }
    }

    fn done(copies: &[(&str, CopyState)], refused: &[&str]) -> Copying {
        Copying::Done {
            copies: copies
                .iter()
                .map(|(n, s)| (n.to_string(), s.clone()))
                .collect(),
            refused: refused.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn listed(kids: &[&str]) -> Vec<PublishedKey> {
        kids.iter()
            .map(|kid| PublishedKey {
                kid: kid.to_string(),
                published_at: MicroTime(Timestamp::UNIX_EPOCH),
            })
            .collect()
    }

    #[test]
    fn a_write_reports_the_kids_it_added_or_what_the_stale_copy_still_holds() {
        let before = copy_holding(&["a"]);
        let after = copy_holding(&["a", "b"]);
        assert_eq!(
            CopyState::after_write(Some(&before), &after, None),
            CopyState::UpToDate {
                added: strings(&["b"])
            }
        );
        assert_eq!(
            CopyState::after_write(None, &after, None),
            CopyState::UpToDate {
                added: strings(&["a", "b"])
            }
        );
        assert_eq!(
            CopyState::after_write(Some(&before), &after, Some("denied".into())),
            CopyState::Stale {
                held: strings(&["a"]),
                error: "denied".into()
            }
        );
    }

    #[test]
    fn a_kid_is_published_only_once_every_copy_that_must_carry_it_holds_it() {
        let served = strings(&["a", "b"]);
        let stale = CopyState::Stale {
            held: strings(&["a"]),
            error: "denied".into(),
        };
        let up = CopyState::UpToDate {
            added: strings(&["b"]),
        };
        let copying = done(&[("x", up.clone()), ("y", stale)], &[]);
        assert_eq!(copying.gate(&served, &[]), ["a"]);
        assert!(copying.needs_retry());
        assert_eq!(copying.added(), BTreeSet::from(["b".to_string()]));
        // A foreign ConfigMap is no copy: it holds nothing back.
        let conflict = done(&[("x", up), ("z", CopyState::Conflict)], &[]);
        assert_eq!(conflict.gate(&served, &[]), ["a", "b"]);
        assert!(conflict.needs_retry());
        // Copies not checked at all: only what was listed before.
        assert_eq!(Copying::Deferred.gate(&served, &listed(&["b"])), ["b"]);
        assert_eq!(Copying::NotAsked.gate(&served, &[]), ["a", "b"]);
        assert!(!Copying::NotAsked.needs_retry());
    }

    #[test]
    fn status_and_condition_name_the_copies_that_lag_first() {
        let publication = with_copies(json!({"namespaces": ["x"]}));
        let up = || CopyState::UpToDate { added: vec![] };
        let stale = CopyState::Stale {
            held: vec![],
            error: "admission denied".into(),
        };
        let all = done(
            &[("x", up()), ("y", stale), ("z", CopyState::Conflict)],
            &["r"],
        );
        assert_eq!(
            all.status(),
            Some(CopiesStatus {
                namespaces: 3,
                up_to_date: 1,
                stale: strings(&["y"]),
                conflicting: strings(&["z"]),
                refused: strings(&["r"]),
            })
        );
        let verdict = all.verdict(&publication).unwrap();
        assert_eq!(verdict.status, ConditionStatus::False);
        assert_eq!(verdict.reason, PublicationReason::CopiesPending);
        assert!(
            verdict.message.contains("In y: admission denied"),
            "{}",
            verdict.message
        );
        let conflict = done(&[("x", up()), ("z", CopyState::Conflict)], &["r"]);
        assert_eq!(
            conflict.verdict(&publication).unwrap().reason,
            PublicationReason::CopyConflict
        );
        let refused = done(&[("x", up())], &["r"]);
        let message = refused.verdict(&publication).unwrap().message;
        assert!(
            message.contains("jwks-operator.io/accept-copies-from must name auth"),
            "{message}"
        );
        let fine = done(&[("x", up()), ("w", up())], &[])
            .verdict(&publication)
            .unwrap();
        assert_eq!(
            (fine.status, fine.reason.as_str(), fine.message.as_str()),
            (
                ConditionStatus::True,
                "CopiesUpToDate",
                "2 copies of ConfigMap main-jwks up to date"
            )
        );
        assert_eq!(Copying::NotAsked.verdict(&publication), None);
        assert_eq!(Copying::NotAsked.status(), None);
        let not_allowed = Copying::NotAllowed("namespaced".into())
            .verdict(&publication)
            .unwrap();
        assert_eq!(not_allowed.reason, PublicationReason::CopiesNotAllowed);
    }

    #[test]
    fn long_lists_are_cut_and_counted() {
        let many: Vec<String> = (0..25).map(|i| format!("ns-{i:02}")).collect();
        let refused: Vec<&str> = many.iter().map(String::as_str).collect();
        let copying = done(&[], &refused);
        assert_eq!(
            copying.status().unwrap().refused.len(),
            CopiesStatus::MAX_LISTED
        );
        let message = copying
            .verdict(&with_copies(json!({"namespaces": ["x"]})))
            .unwrap()
            .message;
        assert!(message.starts_with("25 namespaces selected"), "{message}");
        assert!(message.ends_with("ns-19 and 5 more"), "{message}");
    }
}
