//! Lifecycles: schedule, publication gating, manual rotation, revocation, crashes, concurrency.

use jwks_operator::api::{JwksPublication, KeyState};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use super::support::{self, TIMEOUT, start_operator, wait_for};
use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_goes_pending_active_retired_removed_on_schedule() {
    let world = World::new().await;
    let timeline = world.timeline("tokens").await;
    world
        .create_key("tokens", json!({}), rotating("ES256", "6s", "2s", "3s"))
        .await;

    let first = world
        .wait_status("tokens", "has its first key", |s| active(s).is_some())
        .await;
    let k1 = active(&first).unwrap().clone();
    assert_eq!(
        k1.created_at,
        k1.activated_at.clone().unwrap(),
        "the first key signs at once"
    );
    assert_eq!(
        first.next_rotation_at.as_ref().map(at),
        Some(at(k1.activated_at.as_ref().unwrap()) + secs(6))
    );

    let (rotating_status, k2) = world.wait_pending("tokens", "a pending successor").await;
    let generation_due = at(k1.activated_at.as_ref().unwrap()) + secs(6) - secs(2);
    assert_eq!(
        condition(&rotating_status, "Rotating").unwrap().reason,
        "RotationInProgress"
    );

    let k2_kid = k2.kid.clone();
    let handed_over = world
        .wait_status("tokens", "the successor active", move |s| {
            state_of(s, &k2_kid) == Some(KeyState::Active)
        })
        .await;
    let k2_now = handed_over.keys.iter().find(|k| k.kid == k2.kid).unwrap();
    let k1_now = handed_over.keys.iter().find(|k| k.kid == k1.kid).unwrap();
    assert_eq!(k1_now.state, KeyState::Retired);
    let activated = at(k2_now.activated_at.as_ref().unwrap());
    assert!(
        activated >= at(&k2.created_at) + secs(2),
        "G1: prePublish before signing"
    );
    assert_eq!(at(k1_now.retired_at.as_ref().unwrap()), activated);
    assert_eq!(
        at(k1_now.remove_after.as_ref().unwrap()),
        activated + secs(3),
        "G2"
    );

    let k1_kid = k1.kid.clone();
    world
        .wait_status("tokens", "the retired key removed", move |s| {
            state_of(s, &k1_kid).is_none()
        })
        .await;

    timeline.assert_signers_always_verifiable(std::slice::from_ref(&k1.kid));
    timeline.assert_ring_well_formed();
    let test = "key_goes_pending_active_retired_removed_on_schedule";
    record_lag(
        test,
        "generate",
        generation_due,
        at(&k2.created_at),
        at(&k2.created_at),
    );
    let activation_due = at(&k2.created_at) + secs(2);
    record_lag(
        test,
        "activate",
        activation_due,
        activated,
        timeline.secret_activation_seen(&k2.kid).unwrap(),
    );
    let removal_due = at(k1_now.remove_after.as_ref().unwrap());
    let removed = timeline.secret_removal_seen(&k1.kid).unwrap();
    record_lag(test, "remove", removal_due, removed, removed);
    let notes: Vec<String> = world
        .events("tokens")
        .await
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    for reason in ["KeyGenerated", "KeyActivated", "KeyRetired", "KeyRemoved"] {
        assert!(
            notes.iter().any(|n| n == reason),
            "no {reason} event in {notes:?}"
        );
    }
}

/// A publication that cannot publish (its ConfigMap name is taken) holds the successor back;
/// once it publishes, the key signs prePublish after the publication's own `publishedAt`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activation_waits_until_every_selecting_publication_has_served_the_key() {
    let world = World::new().await;
    let config_maps: Api<ConfigMap> = Api::namespaced(world.ns.client.clone(), &world.ns.name);
    let squatter: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "main-jwks"}, "data": {"owner": "someone else"}}),
    )
    .unwrap();
    config_maps
        .create(&PostParams::default(), &squatter)
        .await
        .unwrap();
    let publications: Api<JwksPublication> =
        Api::namespaced(world.ns.client.clone(), &world.ns.name);
    for (name, label) in [("main", "main"), ("elsewhere", "other")] {
        let publication = PublicationBuilder::new(name)
            .publication_label(label)
            .server(false);
        support::create(&publications, &publication.build()).await;
    }
    let timeline = world.timeline("gated").await;
    world
        .create_key("gated", in_main(), rotating("ES256", "5s", "2s", "30s"))
        .await;
    let first = world
        .wait_status("gated", "its first key", |s| active(s).is_some())
        .await;
    let k1 = active(&first).unwrap().kid.clone();

    let blocked = world
        .wait_status("gated", "the rotation blocked", |s| {
            condition(s, "Rotating").is_some_and(|c| c.reason == "RotationBlocked")
        })
        .await;
    let k2 = pending(&blocked).unwrap().kid.clone();
    assert_eq!(
        active(&blocked).unwrap().kid,
        k1,
        "G1: the old key keeps signing"
    );
    let message = &condition(&blocked, "Rotating").unwrap().message;
    assert!(
        message.contains("main") && !message.contains("elsewhere"),
        "{message}"
    );
    assert!(
        world
            .wait_event("gated", "RotationBlocked")
            .await
            .contains(&k2)
    );
    let main = publications.get("main").await.unwrap().status.unwrap();
    let published = main
        .conditions
        .iter()
        .find(|c| c.type_ == "Published")
        .unwrap();
    assert_eq!(
        (published.status.as_str(), published.reason.as_str()),
        ("False", "ConfigMapConflict")
    );

    config_maps
        .delete("main-jwks", &Default::default())
        .await
        .unwrap();
    let k2_kid = k2.clone();
    let done = world
        .wait_status("gated", "the successor active", move |s| {
            state_of(s, &k2_kid) == Some(KeyState::Active)
        })
        .await;
    let main = publications.get("main").await.unwrap().status.unwrap();
    let served_at = at(&main.keys.iter().find(|k| k.kid == k2).unwrap().published_at);
    let activated = at(done
        .keys
        .iter()
        .find(|k| k.kid == k2)
        .unwrap()
        .activated_at
        .as_ref()
        .unwrap());
    assert!(
        activated >= served_at + secs(2),
        "G1: {activated} < {served_at} + prePublish"
    );
    record_lag(
        "activation_waits_until_every_selecting_publication_has_served_the_key",
        "activate-after-publication",
        served_at + secs(2),
        activated,
        timeline.secret_activation_seen(&k2).unwrap(),
    );
    timeline.assert_signers_always_verifiable(std::slice::from_ref(&k1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_rotation_publishes_first_and_signs_pre_publish_later() {
    let world = World::new().await;
    let timeline = world.timeline("manual").await;
    world
        .create_key(
            "manual",
            json!({}),
            json!({"algorithm": "EdDSA", "rotation": {"prePublish": "2s", "gracePeriod": "2s"}}),
        )
        .await;
    let first = world
        .wait_status("manual", "its first key", |s| active(s).is_some())
        .await;
    let k1 = active(&first).unwrap().kid.clone();
    assert_eq!(condition(&first, "Rotating").unwrap().reason, "ManualOnly");
    assert!(first.next_rotation_at.is_none());

    let cp = support::shared_control_plane().await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_jwks-operator"))
        .args(["rotate", "manual", "-n", &world.ns.name])
        .env("KUBECONFIG", &cp.kubeconfig)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let (_, k2) = world.wait_pending("manual", "a pending key").await;
    let k2_kid = k2.kid.clone();
    let k1_kid = k1.clone();
    let done = world
        .wait_status(
            "manual",
            "the new key active and the old one removed",
            move |s| {
                state_of(s, &k2_kid) == Some(KeyState::Active) && state_of(s, &k1_kid).is_none()
            },
        )
        .await;
    let activated = at(done.keys[0].activated_at.as_ref().unwrap());
    assert!(activated >= at(&k2.created_at) + secs(2));
    assert_eq!(
        timeline.kids_ever_held(),
        [k1.clone(), k2.kid.clone()],
        "one rotation, one new key"
    );
    timeline.assert_signers_always_verifiable(&[k1]);
    timeline.assert_ring_well_formed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_active_key_replaces_it_at_once() {
    let world = World::new().await;
    let timeline = world.timeline("revoked").await;
    world
        .create_key("revoked", json!({}), json!({"algorithm": "ES384"}))
        .await;
    let first = world
        .wait_status("revoked", "its first key", |s| active(s).is_some())
        .await;
    let k1 = active(&first).unwrap().kid.clone();

    world
        .annotate("revoked", "jwks-operator.io/revoke", &k1)
        .await;
    let k1_kid = k1.clone();
    let after = world
        .wait_status("revoked", "a fresh active key", move |s| {
            state_of(s, &k1_kid).is_none() && active(s).is_some()
        })
        .await;
    let k2 = active(&after).unwrap().kid.clone();
    assert_eq!(after.keys.len(), 1, "the revoked key left at once");
    let secret = world.secrets.get("revoked").await.unwrap();
    assert_eq!(timeline::keyring_kids(&secret), std::slice::from_ref(&k2));
    let note = world.wait_event("revoked", "KeyRevoked").await;
    assert!(note.contains(&k1) && note.contains("fresh key"), "{note}");
    assert!(
        world
            .events("revoked")
            .await
            .iter()
            .any(|e| e.reason.as_deref() == Some("KeyRevoked")
                && e.type_.as_deref() == Some("Warning"))
    );
    timeline.assert_signers_always_verifiable(&[k1, k2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_retired_key_withdraws_it_before_its_grace_period() {
    let world = World::new().await;
    world
        .create_key(
            "retiring",
            json!({}),
            json!({"algorithm": "ES256", "rotation": {"prePublish": "1s", "gracePeriod": "1h"}}),
        )
        .await;
    let first = world
        .wait_status("retiring", "its first key", |s| active(s).is_some())
        .await;
    let k1 = active(&first).unwrap().kid.clone();
    world
        .annotate("retiring", "jwks-operator.io/rotate", "first")
        .await;
    let k1_kid = k1.clone();
    world
        .wait_status("retiring", "the first key retired", move |s| {
            state_of(s, &k1_kid) == Some(KeyState::Retired)
        })
        .await;

    world
        .annotate("retiring", "jwks-operator.io/revoke", &k1)
        .await;
    let k1_kid = k1.clone();
    let after = world
        .wait_status("retiring", "the retired key withdrawn", move |s| {
            state_of(s, &k1_kid).is_none()
        })
        .await;
    assert_eq!(after.keys.len(), 1);
    assert_eq!(after.keys[0].state, KeyState::Active);
    assert!(!timeline::keyring_kids(&world.secrets.get("retiring").await.unwrap()).contains(&k1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_killed_mid_rotation_resumes_with_the_same_successor() {
    let mut world = World::new().await;
    let timeline = world.timeline("crash").await;
    world
        .create_key("crash", json!({}), rotating("PS256", "8s", "3s", "30s"))
        .await;
    let (pending, successor) = world.wait_pending("crash", "a pending successor").await;
    let k1 = active(&pending).unwrap().kid.clone();
    let k2 = successor.kid;

    let pid = world.operator.pid();
    world.operator.signal("KILL");
    wait_for(TIMEOUT, "the operator to die", || async {
        if support::process_running(pid) {
            Err("still running".into())
        } else {
            Ok(())
        }
    })
    .await;
    world.operator = start_operator(&world.ns.name).await;

    let k2_kid = k2.clone();
    world
        .wait_status("crash", "the successor active", move |s| {
            state_of(s, &k2_kid) == Some(KeyState::Active)
        })
        .await;
    let held = timeline.kids_ever_held();
    assert_eq!(
        &held[..2],
        [k1.clone(), k2.clone()],
        "the restarted operator kept the pending key"
    );
    timeline.assert_signers_always_verifiable(&[k1]);
    timeline.assert_ring_well_formed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_operators_at_once_neither_duplicate_nor_lose_keys() {
    let world = World::new().await;
    let _second = start_operator(&world.ns.name).await;
    let timeline = world.timeline("contended").await;
    world
        .create_key("contended", json!({}), rotating("ES256", "3s", "1s", "1s"))
        .await;

    let signed = || -> Vec<String> {
        let mut kids: Vec<String> = Vec::new();
        for observation in timeline.observations() {
            if let timeline::Revision::Key(key) = &observation.revision
                && let Some(kid) = key.status.as_ref().and_then(active).map(|k| k.kid.clone())
                && !kids.contains(&kid)
            {
                kids.push(kid);
            }
        }
        kids
    };
    wait_for(
        std::time::Duration::from_secs(90),
        "five keys to have signed",
        || async {
            let n = signed().len();
            if n >= 5 {
                Ok(())
            } else {
                Err(format!("{n} so far").into())
            }
        },
    )
    .await;
    let activated = signed();

    timeline.assert_ring_well_formed();
    timeline.assert_signers_always_verifiable(&activated[..1]);
    // Every key that entered the Secret either signed or is still the pending successor: none
    // was written and then overwritten by a concurrent writer.
    let held = timeline.kids_ever_held();
    let ever_active = signed();
    let never_signed: Vec<&String> = held.iter().filter(|k| !ever_active.contains(k)).collect();
    assert!(
        never_signed.len() <= 1,
        "keys that never signed: {never_signed:?} of {held:?}"
    );
}

/// What keeps two operators from both adding a key: the apiserver refuses a server-side apply
/// whose resourceVersion is stale, for the Secret and for the status subresource alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_with_a_stale_resource_version_is_refused() {
    let world = World::new().await;
    world.create_active_key("raced", json!({}), "ES256").await;
    let stale_secret = world.secrets.get("raced").await.unwrap();
    let stale_key = world.keys.get("raced").await.unwrap();
    world.annotate("raced", "example.com/touch", "1").await;
    let touch = json!({"metadata": {"annotations": {"example.com/touch": "1"}}});
    world
        .secrets
        .patch("raced", &PatchParams::default(), &Patch::Merge(&touch))
        .await
        .unwrap();

    let params = PatchParams::apply("jwks-operator").force();
    let secret_apply = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "raced", "resourceVersion": stale_secret.metadata.resource_version},
        "data": {"kid": "c3RhbGU="},
    });
    let status_apply = json!({
        "apiVersion": "jwks-operator.io/v1alpha1", "kind": "SigningKey",
        "metadata": {"name": "raced", "resourceVersion": stale_key.metadata.resource_version},
        "status": {"activeKid": "stale"},
    });
    let refusals = [
        world
            .secrets
            .patch("raced", &params, &Patch::Apply(&secret_apply))
            .await
            .map(drop),
        world
            .keys
            .patch_status("raced", &params, &Patch::Apply(&status_apply))
            .await
            .map(drop),
    ];
    for refusal in refusals {
        let error = refusal.unwrap_err();
        assert!(
            matches!(error, kube::Error::Api(ref s) if s.code == 409),
            "{error}"
        );
    }
}
