//! The reconcile's decisions between its reads and its writes: what to warn about, whether the
//! server may run, what the JwksUpdated event says, and when to look again.

use std::collections::BTreeSet;
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};

use crate::api::JwksPublication;
use crate::api::conditions::PublicationReason;
use crate::publication::Assembled;

use super::Problem;
use super::naming::NameProblem;
use super::server::Server;

/// Nimbus JOSE+JWT's `RemoteJWKSet` refuses JWK Sets over 51 200 bytes by default.
pub const NIMBUS_LIMIT: usize = 51_200;

/// How long the kubelet may take to bring a changed ConfigMap into a pod that mounts it: its
/// sync period (1 min by default) plus its ConfigMap cache TTL (1 min); measured on a node from
/// 1.8 s to 80 s (docs/benchmarks.md).
pub const PROJECTION_DELAY: Duration = Duration::from_secs(120);

/// How soon to look again at a conflict with an object that is not ours (so not watched).
pub const PROBLEM_RETRY: Duration = Duration::from_secs(10);

/// What the documents publish that some verifier may trip on, for the Published condition.
/// `pre_publish` is the smallest prePublish of the selected keys; `mounted` says whether pods
/// (the server's) read the ConfigMap through a volume.
pub fn warnings(
    assembled: &Assembled,
    pre_publish: Option<Duration>,
    mounted: bool,
) -> Vec<String> {
    let mut warnings = Vec::new();
    let size = assembled.published.jwks.len();
    if size > NIMBUS_LIMIT {
        warnings.push(format!(
            "jwks.json is {size} bytes: some verifiers (Nimbus JOSE+JWT) refuse sets over {NIMBUS_LIMIT}"
        ));
    }
    let max_age = Duration::from_secs(assembled.published.max_age_seconds);
    if let Some(pre_publish) = pre_publish
        && max_age > pre_publish
    {
        warnings.push(format!(
            "cacheMaxAge {}s exceeds the smallest prePublish of the selected keys ({}s): a verifier may cache a JWKS without a key that already signs",
            max_age.as_secs(),
            pre_publish.as_secs()
        ));
    }
    if let Some(pre_publish) = pre_publish
        && mounted
        && pre_publish < PROJECTION_DELAY
    {
        warnings.push(format!(
            "the smallest prePublish of the selected keys ({}s) is shorter than the kubelet may take to update the server pods' mounted ConfigMap (up to {}s): a server pod may not serve a key yet when it starts signing",
            pre_publish.as_secs(),
            PROJECTION_DELAY.as_secs()
        ));
    }
    if !assembled.skipped.is_empty() {
        warnings.push(format!(
            "skipped invalid public JWKs: {}",
            assembled.skipped.join(", ")
        ));
    }
    warnings
}

/// Whether the server may be applied, or what keeps it from running.
#[derive(Debug, PartialEq)]
pub enum ServerPlan {
    Apply,
    Skip(Server),
}

/// The server runs when enabled, its name is valid, and the ConfigMap it would serve is this
/// publication's.
pub fn plan_server(
    publication: &JwksPublication,
    name_problem: Option<&NameProblem>,
    publish_problem: Option<&Problem>,
    config_map_ours: bool,
) -> ServerPlan {
    match (name_problem, publish_problem) {
        _ if !publication.spec.server.enabled => ServerPlan::Skip(Server::Disabled),
        (Some(problem), _) => {
            let (reason, message) = problem.problem();
            ServerPlan::Skip(Server::NotRun(reason, message))
        }
        // Never a server on a ConfigMap that is not this publication's (G7).
        (None, Some((reason, message))) if !config_map_ours => {
            ServerPlan::Skip(Server::NotRun(*reason, message.clone()))
        }
        _ => ServerPlan::Apply,
    }
}

/// The Normal event of a ConfigMap write: the kids it publishes now, added and removed.
pub fn published_event(before: &[String], after: &BTreeSet<String>) -> Event {
    let added: Vec<&str> = after
        .iter()
        .filter(|k| !before.contains(k))
        .map(String::as_str)
        .collect();
    let removed: Vec<&str> = before
        .iter()
        .filter(|k| !after.contains(*k))
        .map(String::as_str)
        .collect();
    let list = |kids: &[&str]| {
        if kids.is_empty() {
            "none".to_owned()
        } else {
            kids.join(", ")
        }
    };
    Event {
        type_: EventType::Normal,
        reason: "JwksUpdated".into(),
        note: Some(format!(
            "{} key(s) published; added: {}; removed: {}",
            after.len(),
            list(&added),
            list(&removed)
        )),
        action: "Publish".into(),
        secondary: None,
    }
}

/// A conflict with an object that is not ours, or a copy that could not be written, is looked
/// at again soon; nothing else changes with time alone, as every other input is watched.
pub fn next_action(publish_problem: Option<&Problem>, server: &Server, copies: bool) -> Action {
    let conflict = copies
        || matches!(
            publish_problem,
            Some((PublicationReason::ConfigMapConflict, _))
        )
        || matches!(server, Server::NotRun(PublicationReason::ServerConflict, _));
    if conflict {
        Action::requeue(PROBLEM_RETRY)
    } else {
        Action::await_change()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publication::Published;
    use serde_json::json;

    use super::super::fixtures::{named, publication};
    use super::super::naming::check_name;

    fn assembled(jwks_bytes: usize, max_age_seconds: u64, skipped: &[&str]) -> Assembled {
        Assembled {
            published: Published {
                jwks: "x".repeat(jwks_bytes),
                discovery: None,
                max_age_seconds,
                jwks_path: crate::publication::JWKS_PATH.into(),
            },
            kids: BTreeSet::new(),
            sources: Vec::new(),
            skipped: skipped.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn warnings_name_what_a_verifier_may_trip_on() {
        assert!(warnings(&assembled(NIMBUS_LIMIT, 300, &[]), None, true).is_empty());
        let big = warnings(&assembled(NIMBUS_LIMIT + 1, 300, &[]), None, true);
        assert_eq!(
            big,
            ["jwks.json is 51201 bytes: some verifiers (Nimbus JOSE+JWT) refuse sets over 51200"]
        );
        let minute = Some(Duration::from_secs(60));
        assert!(warnings(&assembled(10, 60, &[]), minute, false).is_empty());
        let cached = warnings(&assembled(10, 300, &[]), minute, false);
        assert_eq!(cached.len(), 1);
        assert!(
            cached[0].starts_with(
                "cacheMaxAge 300s exceeds the smallest prePublish of the selected keys (60s)"
            ),
            "{cached:?}"
        );
        assert_eq!(
            warnings(&assembled(10, 300, &["a", "b"]), None, true),
            ["skipped invalid public JWKs: a, b"]
        );
    }

    #[test]
    fn a_pre_publish_shorter_than_the_kubelet_projection_is_warned_when_pods_mount_it() {
        let short = Some(Duration::from_secs(60));
        let warned = warnings(&assembled(10, 30, &[]), short, true);
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert!(
            warned[0].starts_with("the smallest prePublish of the selected keys (60s) is shorter than the kubelet may take"),
            "{warned:?}"
        );
        assert!(warnings(&assembled(10, 30, &[]), short, false).is_empty());
        let enough = Some(PROJECTION_DELAY);
        assert!(warnings(&assembled(10, 30, &[]), enough, true).is_empty());
    }

    #[test]
    fn the_server_runs_only_enabled_well_named_and_on_our_config_map() {
        let enabled = publication(json!({}));
        let conflict = (PublicationReason::ConfigMapConflict, "theirs".to_string());
        assert_eq!(plan_server(&enabled, None, None, true), ServerPlan::Apply);
        assert_eq!(
            plan_server(&enabled, None, Some(&conflict), false),
            ServerPlan::Skip(Server::NotRun(
                PublicationReason::ConfigMapConflict,
                "theirs".into()
            ))
        );
        let too_large = (PublicationReason::TooLarge, "big".to_string());
        assert_eq!(
            plan_server(&enabled, None, Some(&too_large), true),
            ServerPlan::Apply,
            "our ConfigMap keeps its previous content and is served"
        );
        let disabled = publication(json!({"enabled": false}));
        assert_eq!(
            plan_server(&disabled, None, Some(&conflict), false),
            ServerPlan::Skip(Server::Disabled)
        );
        let dotted = named("a.b", json!({}));
        let problem = check_name(&dotted);
        let ServerPlan::Skip(Server::NotRun(reason, _)) =
            plan_server(&dotted, problem.as_ref(), None, true)
        else {
            panic!("an invalid name runs no server");
        };
        assert_eq!(reason, PublicationReason::InvalidName);
    }

    #[test]
    fn the_update_event_lists_added_and_removed_kids() {
        let before = ["a".to_string(), "b".to_string()];
        let after = BTreeSet::from(["b".to_string(), "c".to_string()]);
        let event = published_event(&before, &after);
        assert_eq!(event.reason, "JwksUpdated");
        assert_eq!(
            event.note.as_deref(),
            Some("2 key(s) published; added: c; removed: a")
        );
        let first = published_event(&[], &BTreeSet::new());
        assert_eq!(
            first.note.as_deref(),
            Some("0 key(s) published; added: none; removed: none")
        );
    }

    #[test]
    fn only_conflicts_with_foreign_objects_are_retried_on_a_timer() {
        let conflict = (PublicationReason::ConfigMapConflict, String::new());
        let too_large = (PublicationReason::TooLarge, String::new());
        let retry = Action::requeue(PROBLEM_RETRY);
        assert_eq!(
            next_action(Some(&conflict), &Server::Disabled, false),
            retry
        );
        assert_eq!(
            next_action(
                None,
                &Server::NotRun(PublicationReason::ServerConflict, String::new()),
                false
            ),
            retry
        );
        assert_eq!(next_action(None, &Server::Disabled, true), retry);
        assert_eq!(
            next_action(Some(&too_large), &Server::Disabled, false),
            Action::await_change()
        );
        assert_eq!(
            next_action(
                None,
                &Server::NotRun(PublicationReason::InvalidName, String::new()),
                false
            ),
            Action::await_change()
        );
    }
}
