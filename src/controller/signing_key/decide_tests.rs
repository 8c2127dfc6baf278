//! The reconcile's pure decisions: what stops it, what it plans, whether the Secret needs a
//! write, what the metrics keep and when it looks again.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::runtime::controller::Action;

use super::decide::{
    LONGEST_SLEEP, Observed, PROBLEM_RETRY, import_pem, namespace_problem, observe,
    ownership_problem, plan, secret_matches, slim, wake_up, woken_by,
};
use super::fixtures::{Ring, kid, secret_of, signing_key, t, unchanged};
use super::report::Problem;
use super::stored::Recovered;
use crate::api::conditions::KeyReason;
use crate::api::{
    IMPORT_CONSENT_ANNOTATION, ImportFrom, JwksPublication, KeyState, MANAGED_BY_LABEL, MANAGER,
    REVOKE_ANNOTATION, SigningKey,
};
use crate::lifecycle::{Change, GenerateReason, Policy, RotationPlan, later};

fn namespaces(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

#[test]
fn secrets_outside_the_allowed_namespaces_are_a_problem() {
    assert_eq!(namespace_problem(None, "a"), None);
    assert_eq!(namespace_problem(Some(&namespaces(&["a", "b"])), "a"), None);
    let problem = namespace_problem(Some(&namespaces(&["b", "c"])), "a").unwrap();
    assert_eq!(problem.reason, KeyReason::SecretsNotAllowed);
    assert!(
        problem
            .message
            .contains("namespace a (it is limited to: b, c)")
    );
}

/// The Secret this SigningKey would write for a one-key ring.
fn own_secret() -> Secret {
    secret_of(&Ring::new().active(0).build())
}

#[test]
fn only_a_secret_this_signing_key_controls_or_made_is_ours() {
    let key = signing_key();
    assert_eq!(ownership_problem(&key, None), None);
    assert_eq!(ownership_problem(&key, Some(&own_secret())), None);

    let mut orphan = own_secret();
    orphan.metadata.owner_references = None;
    assert_eq!(ownership_problem(&key, Some(&orphan)), None);

    let mut foreign_owner = own_secret();
    foreign_owner.metadata.owner_references = Some(vec![OwnerReference {
        controller: Some(true),
        uid: "someone-else".into(),
        ..OwnerReference::default()
    }]);
    // Labels can be forged; without the SigningKey's UID in the lifecycle nothing is adopted.
    let mut planted = Secret::default();
    planted.metadata.name = Some("victim".into());
    planted.metadata.labels = Some(BTreeMap::from([(MANAGED_BY_LABEL.into(), MANAGER.into())]));
    for secret in [foreign_owner, planted] {
        let problem = ownership_problem(&key, Some(&secret)).unwrap();
        assert_eq!(problem.reason, KeyReason::SecretConflict);
        assert!(
            problem.message.starts_with("Secret victim exists"),
            "{}",
            problem.message
        );
    }
}

fn source() -> ImportFrom {
    serde_json::from_value(serde_json::json!({"secretName": "tls"})).unwrap()
}

fn import_secret(consent: Option<&str>, data: &[(&str, &[u8])]) -> Secret {
    let mut secret = Secret::default();
    secret.metadata.annotations =
        consent.map(|c| BTreeMap::from([(IMPORT_CONSENT_ANNOTATION.into(), c.into())]));
    secret.data = Some(
        data.iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
            .collect(),
    );
    secret
}

#[test]
fn an_import_needs_the_source_secret_and_its_consent() {
    let pem: &[u8] = b"-----BEGIN PRIVATE KEY-----";
    let consenting = import_secret(Some("other, victim"), &[("tls.key", pem)]);
    assert_eq!(
        import_pem(&source(), Some(consenting), "victim"),
        Ok(pem.to_vec())
    );

    let failures = [
        (None, "the Secret does not exist"),
        (
            Some(import_secret(None, &[("tls.key", pem)])),
            "does not consent",
        ),
        (
            Some(import_secret(Some("other"), &[("tls.key", pem)])),
            "does not consent",
        ),
        (
            Some(import_secret(Some("victim"), &[("ca.crt", pem)])),
            "no data key \"tls.key\"",
        ),
    ];
    for (secret, words) in failures {
        let problem = import_pem(&source(), secret, "victim").unwrap_err();
        assert_eq!(problem.reason, KeyReason::ImportFailed);
        assert!(
            problem
                .message
                .starts_with("cannot import the key from Secret tls: ")
        );
        assert!(problem.message.contains(words), "{}", problem.message);
        assert!(!problem.message.contains("ca.crt"));
    }
}

fn observed(policy: &Policy, import: Option<Result<Vec<u8>, Problem>>) -> Observed<'_> {
    Observed {
        policy,
        publications: &[],
        import,
        now: t(0),
        clock_in_sync: true,
    }
}

#[test]
fn a_first_plan_holds_the_key_it_minted() {
    let key = signing_key();
    let policy = Policy::from_spec(&key.spec).unwrap();
    let (plan, recovered) = plan(&key, Recovered::default(), observed(&policy, None)).unwrap();
    let active = plan.ring.active().expect("a first key signs at once");
    assert!(recovered.private.contains_key(&active.kid));
    assert!(recovered.public.contains_key(&active.kid));
    assert!(matches!(
        &plan.changes[0],
        Change::Generated {
            reason: GenerateReason::Bootstrap,
            ..
        }
    ));
}

#[test]
fn a_first_key_to_import_fails_with_the_import_problem() {
    let mut key = signing_key();
    key.spec.import_from = Some(source());
    let policy = Policy::from_spec(&key.spec).unwrap();
    let unreadable = Problem::new(KeyReason::ImportFailed, "cannot import".into());
    let failed = plan(
        &key,
        Recovered::default(),
        observed(&policy, Some(Err(unreadable.clone()))),
    );
    assert_eq!(failed.unwrap_err(), unreadable);
}

#[test]
fn the_revoke_annotation_revokes_through_the_plan() {
    let recovered = Ring::new().active(0).build();
    let revoked = kid(&recovered.ring, 0);
    let mut key = signing_key();
    key.metadata.annotations = Some(BTreeMap::from([(
        REVOKE_ANNOTATION.into(),
        format!(" {revoked} ,"),
    )]));
    let policy = Policy::from_spec(&key.spec).unwrap();
    let (plan, _) = plan(&key, recovered, observed(&policy, None)).unwrap();
    assert!(plan.ring.get(&revoked).is_none());
    assert!(plan.changes.contains(&Change::Revoked {
        kid: revoked,
        was_active: true
    }));
}

#[test]
fn a_secret_matches_when_it_carries_everything_desired() {
    let desired = own_secret();
    let mut observed = desired.clone();
    observed
        .metadata
        .labels
        .get_or_insert_default()
        .insert("extra".into(), "kept".into());
    assert!(secret_matches(&observed, &desired));

    let mut other_data = desired.clone();
    other_data.data.get_or_insert_default().remove("kid");
    let mut lost_label = desired.clone();
    lost_label
        .metadata
        .labels
        .get_or_insert_default()
        .remove(MANAGED_BY_LABEL);
    let mut lost_owner = desired.clone();
    lost_owner.metadata.owner_references = None;
    for observed in [other_data, lost_label, lost_owner] {
        assert!(!secret_matches(&observed, &desired));
    }
}

#[test]
fn rotations_count_activations_of_keys_published_before() {
    let recovered = Ring::new().active(0).pending(90).build();
    let [first, next] = [0, 1].map(|i| kid(&recovered.ring, i));
    let plan = RotationPlan {
        changes: vec![
            Change::Generated {
                kid: first.clone(),
                reason: GenerateReason::Replacement,
            },
            Change::Activated { kid: first },
            Change::Activated { kid: next.clone() },
            Change::Revoked {
                kid: next,
                was_active: false,
            },
        ],
        next_rotation_at: Some(t(100)),
        ..unchanged(&recovered.ring)
    };
    let seen = observe(&plan);
    assert_eq!((seen.rotations, seen.revocations), (1, 1));
    assert_eq!(seen.activated_at, Some(t(0)));
    assert_eq!(seen.next_rotation_at, Some(t(100)));
    assert!(!seen.blocked);
}

#[test]
fn the_next_look_is_when_the_plan_wakes_at_most_an_hour_away() {
    let ring = Ring::new().active(0).build().ring;
    let at = |wake_at, held_for_clock| RotationPlan {
        wake_at,
        held_for_clock,
        ..unchanged(&ring)
    };
    let cases = [
        (at(Some(t(60)), false), Duration::from_secs(60)),
        (at(Some(t(-5)), false), Duration::ZERO),
        (at(Some(t(10_000)), false), LONGEST_SLEEP),
        (at(None, false), LONGEST_SLEEP),
        (at(Some(t(60)), true), PROBLEM_RETRY),
    ];
    for (plan, delay) in cases {
        assert_eq!(wake_up(&plan, t(0)), Action::requeue(delay));
    }
}

fn publication(
    labels: serde_json::Value,
    generation: i64,
    observed: Option<i64>,
) -> JwksPublication {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "jwks-operator.io/v1alpha1",
        "kind": "JwksPublication",
        "metadata": {"name": "p", "namespace": "a", "generation": generation},
        "spec": {"selector": {"matchLabels": labels}},
        "status": {"observedGeneration": observed},
    }))
    .unwrap()
}

/// A key with this status, as the API returns it.
fn with_status(mut key: SigningKey, status: serde_json::Value) -> SigningKey {
    key.status = Some(serde_json::from_value(status).unwrap());
    key
}

fn held(kid: &str, state: &str) -> serde_json::Value {
    serde_json::json!({
        "kid": kid, "state": state, "createdAt": "2026-12-06T10:00:00.000000Z",
        "publicJwk": {"kty": "EC", "kid": kid},
    })
}

#[test]
fn a_publication_wakes_the_waiting_keys_it_selects_and_all_while_its_spec_change_is_unreported() {
    let mut key = signing_key();
    key.metadata.labels = Some([("team".to_string(), "x".to_string())].into());
    let waiting = with_status(
        key.clone(),
        serde_json::json!({"keys": [held("k1", "Active"), held("k2", "Pending")]}),
    );
    let selecting = serde_json::json!({"team": "x"});
    let other = serde_json::json!({"team": "y"});
    assert!(woken_by(
        &publication(selecting.clone(), 2, Some(2)),
        &waiting
    ));
    assert!(!woken_by(&publication(other.clone(), 2, Some(2)), &waiting));
    // A selector edit (generation 3) not yet reported may have released this key.
    assert!(woken_by(&publication(other.clone(), 3, Some(2)), &waiting));
    assert!(woken_by(&publication(other.clone(), 1, None), &waiting));
    let mut elsewhere = waiting.clone();
    elsewhere.metadata.namespace = Some("b".into());
    assert!(!woken_by(
        &publication(other.clone(), 3, Some(2)),
        &elsewhere
    ));
    // Publications decide only a pending key's activation: a key without one is never woken.
    let signing = with_status(key, serde_json::json!({"keys": [held("k1", "Active")]}));
    assert!(!woken_by(&publication(selecting, 2, Some(2)), &signing));
    assert!(!woken_by(&publication(other, 1, None), &signing));
}

/// A publication serving the pending kid wakes the key until the key reports the handover that
/// publication implies; its later writes (other keys added) leave the key asleep.
#[test]
fn a_publication_serving_the_pending_key_wakes_it_only_to_move_its_handover() {
    let mut key = signing_key();
    key.metadata.labels = Some([("team".to_string(), "x".to_string())].into());
    let pre_publish = Policy::from_spec(&key.spec).unwrap().pre_publish;
    let created = "2026-12-06T10:00:00Z".parse::<Timestamp>().unwrap();
    let waiting = |handover: Option<Timestamp>| {
        with_status(
            key.clone(),
            serde_json::json!({
                "keys": [held("k1", "Active"), held("k2", "Pending")],
                "nextRotationAt": handover.map(|at| at.to_string()),
            }),
        )
    };
    let serving = |since: Timestamp| {
        let mut publication = publication(serde_json::json!({"team": "x"}), 2, Some(2));
        let status = publication.status.as_mut().unwrap();
        status.keys = serde_json::from_value(serde_json::json!([
            {"kid": "k1", "publishedAt": "2026-12-06T09:00:00Z"},
            {"kid": "k2", "publishedAt": since.to_string()},
        ]))
        .unwrap();
        publication
    };
    let published = created + SignedDuration::from_secs(3);
    let reported = later(published, pre_publish);
    // Reported before publication (creation + prePublish): the publication moves it later.
    assert!(woken_by(
        &serving(published),
        &waiting(Some(later(created, pre_publish)))
    ));
    // Reported: the same publication's next write changes nothing for this key.
    assert!(!woken_by(&serving(published), &waiting(Some(reported))));
    // Served anew since a later instant (the ConfigMap was recreated): moves it again.
    let again = published + SignedDuration::from_secs(60);
    assert!(woken_by(&serving(again), &waiting(Some(reported))));
    // No handover reported at all: woken.
    assert!(woken_by(&serving(published), &waiting(None)));
    // A selecting publication that does not serve k2 yet always wakes it (its serving or its
    // deletion lets the key go on).
    let not_yet = publication(serde_json::json!({"team": "x"}), 2, Some(2));
    assert!(woken_by(&not_yet, &waiting(Some(reported))));
}

#[test]
fn the_cache_keeps_of_a_key_only_its_pending_key() {
    let mut key = with_status(
        signing_key(),
        serde_json::json!({
            "activeKid": "k1",
            "nextRotationAt": "2026-12-06T11:00:00.000000Z",
            "keys": [held("k0", "Retired"), held("k1", "Active"), held("k2", "Pending")],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KeyActive",
                "message": "m", "lastTransitionTime": "2026-12-06T10:00:00Z"}],
        }),
    );
    key.metadata.managed_fields = Some(vec![Default::default()]);
    slim(&mut key);
    assert_eq!(key.metadata.managed_fields, Some(vec![]));
    let status = key.status.clone().unwrap();
    assert_eq!((status.active_kid, status.conditions.len()), (None, 0));
    let kept: Vec<(&str, KeyState, usize)> = status
        .keys
        .iter()
        .map(|k| (k.kid.as_str(), k.state, k.public_jwk.len()))
        .collect();
    assert_eq!(kept, [("k2", KeyState::Pending, 0)]);
    // What woken_by compares a publication's publishedAt with.
    assert_eq!(
        status.next_rotation_at.map(|at| at.0.to_string()),
        Some("2026-12-06T11:00:00Z".to_owned())
    );

    let mut signing = with_status(
        signing_key(),
        serde_json::json!({"keys": [held("k1", "Active")]}),
    );
    slim(&mut signing);
    assert_eq!(signing.status, None);
}
