//! The status a publication reports and the Warning events its new problems call for, as pure
//! functions of what the reconcile found.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::{Event, EventType};

use crate::api::conditions::{ConditionStatus, PublicationCondition, PublicationReason};
use crate::api::{JwksPublication, JwksPublicationSpec, JwksPublicationStatus, PublishedKey};
use crate::controller::conditions::{Verdict, reason_of};

use super::Problem;
use super::copies::Copying;
use super::naming::object_name;
use super::server::{Server, url};

/// What the spec holds that the operator cannot use as written (objects stored before the
/// schema refused it): a condition reason and message. The documents then use the default.
pub fn spec_problem(publication: &JwksPublication) -> Option<Problem> {
    let max_age = &publication.spec.cache_max_age;
    max_age
        .parse_at_most(JwksPublicationSpec::MAX_CACHE_MAX_AGE)
        .err()
        .map(|error| {
            (
                PublicationReason::InvalidSpec,
                format!(
                    "spec.cacheMaxAge: {error}; the documents carry the default max-age of {}s meanwhile",
                    JwksPublicationSpec::DEFAULT_CACHE_MAX_AGE.as_secs()
                ),
            )
        })
}

/// The facts the status is made of.
pub struct Facts<'a> {
    pub publication: &'a JwksPublication,
    /// Kids in the ConfigMap now, with the etag of its `jwks.json`.
    pub served: &'a [String],
    /// Kids this reconcile wrote into the ConfigMap.
    pub added: &'a [String],
    pub etag: Option<String>,
    /// Why the ConfigMap could not be brought up to date, if it could not.
    pub publish_problem: Option<Problem>,
    /// A spec value that cannot be used as written ([`spec_problem`]).
    pub spec_problem: Option<Problem>,
    pub warnings: &'a [String],
    pub sources: usize,
    pub server: Server,
    pub copying: &'a Copying,
    pub now: Timestamp,
}

type PublicationVerdict = Verdict<PublicationCondition, PublicationReason>;

pub fn build_status(facts: &Facts<'_>) -> JwksPublicationStatus {
    let previous = facts.publication.status.clone().unwrap_or_default();
    let served = facts.copying.gate(facts.served, &previous.keys);
    let mut written = facts.copying.added();
    written.extend(facts.added.iter().cloned());
    let keys = published_keys(&previous.keys, &served, &written, facts.now);
    let published = published_verdict(facts, keys.len());
    let server = server_verdict(&facts.server);
    let copied = facts.copying.verdict(facts.publication);
    let ready = ready_verdict(facts, &published, &server, copied.as_ref(), keys.len());
    let generation = facts.publication.metadata.generation;
    let conditions = [Some(ready), Some(published), Some(server), copied]
        .into_iter()
        .flatten()
        .map(|verdict| verdict.into_condition(&previous.conditions, generation, facts.now))
        .collect();
    JwksPublicationStatus {
        key_count: Some(i32::try_from(keys.len()).unwrap_or(i32::MAX)),
        keys,
        etag: facts.etag.clone(),
        url: matches!(facts.server, Server::Running { .. }).then(|| url(facts.publication)),
        conditions,
        observed_generation: generation,
        copies: facts.copying.status(),
    }
}

/// The served kids, each with the time the last ConfigMap or copy that had to carry it was
/// written: kept from `previous` unless this reconcile `written` it somewhere.
fn published_keys(
    previous: &[PublishedKey],
    served: &[String],
    written: &BTreeSet<String>,
    now: Timestamp,
) -> Vec<PublishedKey> {
    let since: BTreeMap<&str, &PublishedKey> =
        previous.iter().map(|k| (k.kid.as_str(), k)).collect();
    served
        .iter()
        .map(|kid| match since.get(kid.as_str()) {
            Some(known) if !written.contains(kid) => (*known).clone(),
            // G1 counts from here: the status is written only after every ConfigMap and copy
            // holding the kid was.
            _ => PublishedKey {
                kid: kid.clone(),
                published_at: MicroTime(now),
            },
        })
        .collect()
}

fn published_verdict(facts: &Facts<'_>, keys: usize) -> PublicationVerdict {
    let verdict = |status: bool, reason, message| {
        Verdict::new(
            PublicationCondition::Published,
            status.into(),
            reason,
            message,
        )
    };
    match &facts.publish_problem {
        Some((reason, message)) => verdict(false, *reason, message.clone()),
        None if !facts.warnings.is_empty() => verdict(
            true,
            PublicationReason::PublishedWithWarnings,
            facts.warnings.join("; "),
        ),
        None => verdict(
            true,
            PublicationReason::UpToDate,
            format!(
                "{keys} key(s) from {} SigningKey(s) in ConfigMap {}",
                facts.sources,
                object_name(facts.publication)
            ),
        ),
    }
}

fn server_verdict(server: &Server) -> PublicationVerdict {
    let verdict = |status: bool, reason, message| {
        Verdict::new(
            PublicationCondition::ServerAvailable,
            status.into(),
            reason,
            message,
        )
    };
    match server {
        Server::Disabled => verdict(
            false,
            PublicationReason::Disabled,
            "spec.server.enabled is false".to_owned(),
        ),
        Server::Running { available, desired } if *available > 0 => verdict(
            true,
            PublicationReason::Available,
            format!("{available}/{desired} replicas available"),
        ),
        Server::Running { desired, .. } => verdict(
            false,
            PublicationReason::Unavailable,
            format!("0/{desired} replicas available"),
        ),
        Server::NotRun(reason, message) => verdict(false, *reason, message.clone()),
    }
}

/// Ready holds when everything does; otherwise it carries the first problem, in this order.
fn ready_verdict(
    facts: &Facts<'_>,
    published: &PublicationVerdict,
    server: &PublicationVerdict,
    copied: Option<&PublicationVerdict>,
    keys: usize,
) -> PublicationVerdict {
    let not_ready = |reason, message: &str| {
        Verdict::new(
            PublicationCondition::Ready,
            ConditionStatus::False,
            reason,
            message,
        )
    };
    if published.status != ConditionStatus::True {
        not_ready(published.reason, &published.message)
    } else if let Some((reason, message)) = &facts.spec_problem {
        not_ready(*reason, message)
    } else if let Server::NotRun(reason, message) = &facts.server {
        not_ready(*reason, message)
    } else if let Some(copied) = copied.filter(|c| c.status != ConditionStatus::True) {
        not_ready(copied.reason, &copied.message)
    } else if keys == 0 {
        not_ready(
            PublicationReason::NoKeys,
            "no SigningKey with a key selected by spec.selector and spec.use",
        )
    } else if matches!(facts.server, Server::Running { .. })
        && server.status != ConditionStatus::True
    {
        not_ready(PublicationReason::ServerUnavailable, &server.message)
    } else {
        Verdict::new(
            PublicationCondition::Ready,
            ConditionStatus::True,
            PublicationReason::Ready,
            format!("{keys} key(s) published"),
        )
    }
}

/// Condition reasons that call for a Warning event when they appear or their message changes.
const WARNING_REASONS: [PublicationReason; 10] = [
    PublicationReason::PublishedWithWarnings,
    PublicationReason::TooLarge,
    PublicationReason::ConfigMapConflict,
    PublicationReason::ServerConflict,
    PublicationReason::InvalidName,
    PublicationReason::InvalidSpec,
    PublicationReason::CopiesPending,
    PublicationReason::CopyConflict,
    PublicationReason::CopiesRefused,
    PublicationReason::CopiesNotAllowed,
];

/// A Warning event for each problem the new conditions report that the previous ones did not
/// (same reason and message), once even when several conditions carry it.
pub fn warning_events(previous: &[Condition], current: &[Condition]) -> Vec<Event> {
    let mut events: Vec<Event> = Vec::new();
    for condition in current {
        let warns = reason_of::<PublicationReason>(condition)
            .is_some_and(|reason| WARNING_REASONS.contains(&reason));
        let reported_before = previous.iter().any(|p| {
            p.type_ == condition.type_
                && p.reason == condition.reason
                && p.message == condition.message
        });
        let repeated = events.iter().any(|e| {
            e.reason == condition.reason && e.note.as_deref() == Some(condition.message.as_str())
        });
        if warns && !reported_before && !repeated {
            events.push(Event {
                type_: EventType::Warning,
                reason: condition.reason.clone(),
                note: Some(condition.message.clone()),
                action: "Publish".into(),
                secondary: None,
            });
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::naming::check_name;
    use super::*;
    use crate::api::conditions::Term;
    use crate::controller::conditions::says;
    use serde_json::json;

    /// A publication without a server whose status has published `kid` since the epoch.
    fn published_since_epoch(kid: &str) -> JwksPublication {
        let mut publication = publication(json!({"enabled": false}));
        publication.status = Some(JwksPublicationStatus {
            keys: vec![PublishedKey {
                kid: kid.into(),
                published_at: MicroTime(Timestamp::UNIX_EPOCH),
            }],
            ..JwksPublicationStatus::default()
        });
        publication
    }

    #[test]
    fn a_kid_written_into_a_copy_now_is_dated_now_and_a_stale_copy_holds_new_kids_back() {
        use super::super::copies::CopyState;
        let publication = published_since_epoch("a");
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let served = ["a".to_string(), "b".to_string()];
        let copying = Copying::Done {
            copies: BTreeMap::from([
                // A namespace that starts matching gets a copy holding a: a counts from now.
                (
                    "new".to_string(),
                    CopyState::UpToDate {
                        added: vec!["a".into(), "b".into()],
                    },
                ),
                (
                    "slow".to_string(),
                    CopyState::Stale {
                        held: vec!["a".into()],
                        error: "x".into(),
                    },
                ),
            ]),
            refused: vec![],
        };
        let mut facts = facts(&publication, &served, Server::Disabled);
        facts.copying = &copying;
        facts.now = now;
        let status = build_status(&facts);
        let kids: Vec<(&str, Timestamp)> = status
            .keys
            .iter()
            .map(|k| (k.kid.as_str(), k.published_at.0))
            .collect();
        assert_eq!(kids, [("a", now)], "b waits for the stale copy");
        let (holds, reason, _) = condition_of(&status, PublicationCondition::Ready);
        assert_eq!(
            (holds, reason),
            (ConditionStatus::False, PublicationReason::CopiesPending)
        );
        assert_eq!(status.copies.unwrap().stale, ["slow"]);
    }

    #[test]
    fn status_keeps_first_publication_times_and_dates_new_kids_now() {
        let publication = published_since_epoch("a");
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let status = build_status(&Facts {
            publication: &publication,
            served: &["a".to_string(), "b".to_string()],
            added: &["b".to_string()],
            etag: Some("\"e\"".into()),
            publish_problem: None,
            spec_problem: None,
            warnings: &[],
            sources: 1,
            server: Server::Disabled,
            copying: &NO_COPIES,
            now,
        });
        assert_eq!(status.keys[0].published_at.0, Timestamp::UNIX_EPOCH);
        assert_eq!(status.keys[1].published_at.0, now);
        assert_eq!(status.key_count, Some(2));
        assert_eq!(status.url, None, "no server, no URL");
        assert_eq!(status.observed_generation, Some(3));
        let ready = &status.conditions[0];
        assert_eq!(
            ready.type_,
            PublicationCondition::Ready.as_str(),
            "Ready first"
        );
        assert!(says(ready, ConditionStatus::True, PublicationReason::Ready));
        assert!(
            status
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(3))
        );
    }

    #[test]
    fn a_server_that_cannot_be_named_is_a_condition_and_publishes_no_url() {
        let publication = named("a.b", json!({}));
        let message = check_name(&publication).unwrap().message;
        let served = ["k".to_string()];
        let status = build_status(&facts(
            &publication,
            &served,
            Server::NotRun(PublicationReason::InvalidName, message.clone()),
        ));
        assert_eq!(
            condition_of(&status, PublicationCondition::Published).0,
            ConditionStatus::True,
            "the ConfigMap is published"
        );
        assert_eq!(
            condition_of(&status, PublicationCondition::ServerAvailable),
            (
                ConditionStatus::False,
                PublicationReason::InvalidName,
                message.as_str()
            )
        );
        assert_eq!(
            condition_of(&status, PublicationCondition::Ready),
            (
                ConditionStatus::False,
                PublicationReason::InvalidName,
                message.as_str()
            )
        );
        assert_eq!(status.url, None);
        assert_eq!(status.keys.len(), 1);

        let running = build_status(&facts(
            &publication,
            &served,
            Server::Running {
                available: 1,
                desired: 2,
            },
        ));
        assert_eq!(
            running.url.as_deref(),
            Some("http://a.b-jwks.auth.svc:8080/.well-known/jwks.json")
        );
        assert_eq!(
            condition_of(&running, PublicationCondition::Ready).1,
            PublicationReason::Ready
        );
    }

    #[test]
    fn an_invalid_cache_max_age_is_a_condition_not_a_silent_default() {
        assert_eq!(
            spec_problem(&named("main", json!({"cacheMaxAge": "24h"}))),
            None
        );
        for invalid in ["25h", "soon", ""] {
            let publication = named("main", json!({"cacheMaxAge": invalid}));
            let (reason, message) = spec_problem(&publication).unwrap();
            assert_eq!(reason, PublicationReason::InvalidSpec);
            assert!(
                message.starts_with("spec.cacheMaxAge: ") && message.contains("300s"),
                "{message}"
            );
            let served = ["k".to_string()];
            let mut facts = facts(&publication, &served, Server::Disabled);
            facts.spec_problem = Some((reason, message.clone()));
            let status = build_status(&facts);
            assert_eq!(
                condition_of(&status, PublicationCondition::Ready),
                (
                    ConditionStatus::False,
                    PublicationReason::InvalidSpec,
                    message.as_str()
                )
            );
            assert_eq!(
                condition_of(&status, PublicationCondition::Published).0,
                ConditionStatus::True
            );
        }
    }

    #[test]
    fn each_new_problem_is_evented_once() {
        use PublicationCondition::{Published, Ready, ServerAvailable};
        use PublicationReason::{InvalidName, NoKeys, Unavailable, UpToDate};
        let at = |type_, reason, message: &str| {
            Verdict::new(type_, ConditionStatus::False, reason, message).into_condition(
                &[],
                Some(1),
                Timestamp::UNIX_EPOCH,
            )
        };
        let current = [
            at(Ready, InvalidName, "m"),
            at(Published, UpToDate, "fine"),
            at(ServerAvailable, InvalidName, "m"),
        ];
        let events = warning_events(&[], &current);
        assert_eq!(events.len(), 1, "one event for the same problem");
        assert_eq!(
            (events[0].reason.as_str(), events[0].note.as_deref()),
            ("InvalidName", Some("m"))
        );
        assert!(matches!(events[0].type_, EventType::Warning));
        assert!(
            warning_events(&current, &current).is_empty(),
            "reported already"
        );
        let changed = [at(ServerAvailable, InvalidName, "other")];
        assert_eq!(
            warning_events(&current, &changed).len(),
            1,
            "a new message is new"
        );
        let fine = [
            at(ServerAvailable, Unavailable, "0/2"),
            at(Ready, NoKeys, "none"),
        ];
        assert!(warning_events(&[], &fine).is_empty());
    }

    #[test]
    fn a_refused_write_reports_what_is_still_served() {
        let publication = publication(json!({}));
        let served = ["old-kid".to_string()];
        let mut facts = facts(&publication, &served, Server::Disabled);
        facts.publish_problem = Some((PublicationReason::TooLarge, "too large".into()));
        let status = build_status(&facts);
        assert_eq!(
            condition_of(&status, PublicationCondition::Published),
            (
                ConditionStatus::False,
                PublicationReason::TooLarge,
                "too large"
            )
        );
        assert_eq!(
            status.keys[0].kid, "old-kid",
            "the status lists what is still served"
        );
        assert_eq!(
            condition_of(&status, PublicationCondition::Ready),
            (
                ConditionStatus::False,
                PublicationReason::TooLarge,
                "too large"
            )
        );
    }
}
