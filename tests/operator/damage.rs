//! Damage handling: each case gives a clear condition and a Warning event, keeps published
//! public keys published (G2), and converges without publishing a key whose private half the
//! operator does not hold. Also import and certificates, and the G3 leak scan.

use std::collections::BTreeMap;

use jwks_operator::api::KeyState;
use jwks_operator::jose::{self, Algorithm, KeySpec, PrivateKey};
use kube::ResourceExt;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;

use super::fixtures::{ec_pkcs8_key, openssl, scratch_dir};
use super::*;

/// Overwrites some data keys of the Secret, as a careless `kubectl edit` would.
async fn overwrite_data(world: &World, name: &str, data: serde_json::Value) {
    let patch = json!({"data": data});
    world
        .secrets
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Waits until the Secret's `item` is back to its `original` value; returns all its data.
async fn restored_data(
    world: &World,
    name: &str,
    original: &BTreeMap<String, k8s_openapi::ByteString>,
    item: &str,
) -> BTreeMap<String, k8s_openapi::ByteString> {
    wait_for(TIMEOUT, &format!("{item} restored"), || async {
        let data = world
            .secrets
            .get(name)
            .await
            .map_err(|e| e.to_string())?
            .data
            .unwrap();
        if data.get(item) == original.get(item) {
            Ok(data)
        } else {
            Err("not yet".into())
        }
    })
    .await
}

/// Waits until the SigningKey reports Degraded with `reason`; returns its status.
async fn wait_degraded(
    world: &World,
    name: &str,
    what: &str,
    reason: &'static str,
) -> SigningKeyStatus {
    world
        .wait_status(name, what, move |s| degraded(s, reason))
        .await
}

fn degraded(status: &SigningKeyStatus, reason: &str) -> bool {
    condition(status, "Degraded").is_some_and(|c| c.status == "True" && c.reason == reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_secret_is_recreated_and_the_lost_key_stays_published_for_its_grace() {
    let world = World::new().await;
    world
        .create_key(
            "lost",
            json!({}),
            json!({"algorithm": "ES256", "rotation": {"gracePeriod": "4s"}}),
        )
        .await;
    let k1 = world.active_kid("lost").await;
    let published = world.keys.get("lost").await.unwrap().status.unwrap().keys[0]
        .public_jwk
        .clone();

    world
        .secrets
        .delete("lost", &DeleteParams::default())
        .await
        .unwrap();
    let k1_kid = k1.clone();
    let repaired = world
        .wait_status("lost", "a fresh key and the lost one retired", move |s| {
            active(s).is_some_and(|a| a.kid != k1_kid)
                && state_of(s, &k1_kid) == Some(KeyState::Retired)
        })
        .await;
    assert!(
        degraded(&repaired, "SecretRepaired") || degraded(&repaired, "PrivateKeysLost"),
        "{:?}",
        repaired.conditions
    );
    let lost = repaired.keys.iter().find(|k| k.kid == k1).unwrap();
    assert_eq!(
        lost.public_jwk, published,
        "G2: the lost key's public half stays as published"
    );
    let secret = world.secrets.get("lost").await.unwrap();
    let k2 = active(&repaired).unwrap().kid.clone();
    assert_eq!(
        timeline::keyring_kids(&secret),
        std::slice::from_ref(&k2),
        "only held keys are in the key ring"
    );
    assert!(
        world
            .wait_event("lost", "SecretRepaired")
            .await
            .contains("deleted")
    );
    assert!(world.wait_event("lost", "KeyLost").await.contains(&k1));

    let k1_kid = k1.clone();
    let settled = world
        .wait_status(
            "lost",
            "the lost key removed after its grace period",
            move |s| state_of(s, &k1_kid).is_none(),
        )
        .await;
    assert_eq!(condition(&settled, "Degraded").unwrap().status, "False");
    assert_eq!(active(&settled).unwrap().kid, k2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_key_pem_is_restored_from_the_key_ring() {
    let world = World::new().await;
    let timeline = world.timeline("tampered").await;
    let k1 = world
        .create_active_key("tampered", json!({}), "EdDSA")
        .await;
    let original = world.secrets.get("tampered").await.unwrap().data.unwrap();

    let foreign =
        PrivateKey::generate(KeySpec::new(Algorithm::EdDsa, None, None).unwrap()).unwrap();
    let foreign_kid = foreign.public_key().to_jwk().kid;
    overwrite_data(
        &world,
        "tampered",
        json!({
            "key.pem": b64(foreign.to_pkcs8_pem().unwrap().as_bytes()),
            "kid": b64(foreign_kid.as_bytes()),
        }),
    )
    .await;

    let repaired = wait_degraded(&world, "tampered", "the repair reported", "SecretRepaired").await;
    assert_eq!(
        active(&repaired).unwrap().kid,
        k1,
        "the active key is unchanged"
    );
    assert!(
        repaired.keys.iter().all(|k| k.kid != foreign_kid),
        "the foreign key is never published"
    );
    let restored = restored_data(&world, "tampered", &original, "key.pem").await;
    assert_eq!(restored, original, "every data key is back as it was");
    assert!(
        world
            .wait_event("tampered", "SecretRepaired")
            .await
            .contains("did not hold the active key")
    );
    timeline.assert_signers_always_verifiable(&[k1, foreign_kid]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_key_ring_is_never_published_and_a_fresh_key_takes_over() {
    let world = World::new().await;
    let k1 = world.create_active_key("foreign", json!({}), "ES256").await;

    let foreign =
        PrivateKey::generate(KeySpec::new(Algorithm::Es256, None, None).unwrap()).unwrap();
    let jwk = foreign.to_private_jwk().unwrap();
    let foreign_kid = jwk.kid.clone();
    let ring = jose::canonical_json(&json!({"keys": [jwk]})).unwrap();
    overwrite_data(&world, "foreign", json!({
        "keyring.jwks": b64(ring.as_bytes()),
        "key.jwk": b64(jose::canonical_json(&foreign.to_private_jwk().unwrap()).unwrap().as_bytes()),
        "key.pem": b64(foreign.to_pkcs8_pem().unwrap().as_bytes()),
        "kid": b64(foreign_kid.as_bytes()),
    }))
    .await;

    let k1_kid = k1.clone();
    let repaired = world
        .wait_status(
            "foreign",
            "a fresh key after the loss of the recorded one",
            move |s| state_of(s, &k1_kid) == Some(KeyState::Retired) && active(s).is_some(),
        )
        .await;
    let k2 = active(&repaired).unwrap().kid.clone();
    assert_ne!(k2, foreign_kid, "the foreign key is not adopted");
    assert!(
        repaired.keys.iter().all(|k| k.kid != foreign_kid),
        "nor published"
    );
    let secret = world.secrets.get("foreign").await.unwrap();
    assert_eq!(timeline::keyring_kids(&secret), [k2]);
    let note = world.wait_event("foreign", "SecretRepaired").await;
    assert!(note.contains("did not create"), "{note}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_key_ring_is_rebuilt_from_the_active_copies() {
    let world = World::new().await;
    let k1 = world.create_active_key("corrupt", json!({}), "RS256").await;
    let original = world.secrets.get("corrupt").await.unwrap().data.unwrap();

    overwrite_data(
        &world,
        "corrupt",
        json!({"keyring.jwks": b64(b"{not json")}),
    )
    .await;
    let repaired = wait_degraded(&world, "corrupt", "the repair reported", "SecretRepaired").await;
    assert_eq!(
        active(&repaired).unwrap().kid,
        k1,
        "key.jwk still held the active key"
    );
    assert_eq!(repaired.keys.len(), 1);
    let data = restored_data(&world, "corrupt", &original, "keyring.jwks").await;
    assert_eq!(data, original);
    assert!(
        world
            .wait_event("corrupt", "SecretRepaired")
            .await
            .contains("keyring.jwks is unreadable")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_status_is_rebuilt_from_the_secret() {
    let world = World::new().await;
    world
        .create_key(
            "wiped",
            json!({}),
            json!({"algorithm": "ES256", "rotation": {"prePublish": "1s", "gracePeriod": "1h"}}),
        )
        .await;
    let k1 = world.active_kid("wiped").await;
    world
        .annotate("wiped", "jwks-operator.io/rotate", "once")
        .await;
    let k1_kid = k1.clone();
    let before = world
        .wait_status("wiped", "one retired and one active key", move |s| {
            state_of(s, &k1_kid) == Some(KeyState::Retired) && active(s).is_some()
        })
        .await;

    let wipe = json!({"status": null});
    world
        .keys
        .patch_status("wiped", &PatchParams::default(), &Patch::Merge(&wipe))
        .await
        .unwrap();
    let rebuilt = world
        .wait_status("wiped", "the status rebuilt", |s| {
            degraded(s, "StatusRebuilt") && !s.keys.is_empty()
        })
        .await;
    assert_eq!(
        rebuilt.keys, before.keys,
        "same kids, states, timestamps and public JWKs"
    );
    assert_eq!(rebuilt.active_kid, before.active_kid);
    assert!(
        world
            .wait_event("wiped", "StatusRebuilt")
            .await
            .contains("rebuilt")
    );
    let again = world.keys.get("wiped").await.unwrap();
    assert_eq!(
        again
            .annotations()
            .get("jwks-operator.io/rotate")
            .map(String::as_str),
        Some("once")
    );
    assert_eq!(
        again.status.unwrap().keys.len(),
        2,
        "the handled rotate request did not rotate again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameter_changes_rotate_to_a_key_with_the_new_parameters() {
    let world = World::new().await;
    world
        .create_key("migrating", json!({}), json!({"algorithm": "RS256", "keySize": 2048, "rotation": {"prePublish": "1s", "gracePeriod": "1h"}}))
        .await;
    let k1 = world.active_kid("migrating").await;
    let k1_jwk = world
        .keys
        .get("migrating")
        .await
        .unwrap()
        .status
        .unwrap()
        .keys[0]
        .public_jwk
        .clone();

    let keys = world.keys.clone();
    let edit = |spec: serde_json::Value| {
        let keys = keys.clone();
        async move {
            keys.patch(
                "migrating",
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": spec})),
            )
            .await
            .unwrap();
        }
    };
    edit(json!({"keySize": 3072})).await;
    let k1_kid = k1.clone();
    let bigger = world
        .wait_status("migrating", "a 3072-bit key active", move |s| {
            active(s).is_some_and(|a| a.kid != k1_kid)
        })
        .await;
    let n = active(&bigger).unwrap().public_jwk["n"]
        .as_str()
        .unwrap()
        .len();
    assert_eq!(
        n, 512,
        "3072-bit modulus: 384 bytes, 512 base64url characters"
    );
    let old = bigger.keys.iter().find(|k| k.kid == k1).unwrap();
    assert_eq!(old.state, KeyState::Retired);
    assert_eq!(old.public_jwk, k1_jwk, "the existing key was not changed");

    edit(json!({"algorithm": "PS256", "keySize": null})).await;
    let migrated = world
        .wait_status("migrating", "a PS256 key active", |s| {
            active(s).is_some_and(|a| a.public_jwk["alg"] == "PS256")
        })
        .await;
    assert_eq!(
        migrated.keys.len(),
        3,
        "both earlier keys stay published for their grace period"
    );
    let notes: Vec<String> = world
        .events("migrating")
        .await
        .into_iter()
        .filter_map(|e| e.note)
        .collect();
    assert!(
        notes.iter().any(|n| n.contains("new key parameters")),
        "{notes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_then_provided_import_source_is_adopted_as_the_first_key() {
    let world = World::new().await;
    world
        .create_key(
            "imported",
            json!({}),
            json!({"algorithm": "RS256", "importFrom": {"secretName": "legacy"}}),
        )
        .await;
    let failing = world
        .wait_status("imported", "the import failure reported", |s| {
            condition(s, "Ready").is_some_and(|c| c.reason == "ImportFailed")
        })
        .await;
    assert!(
        condition(&failing, "Ready")
            .unwrap()
            .message
            .contains("does not exist")
    );
    assert!(
        world
            .wait_event("imported", "ImportFailed")
            .await
            .contains("legacy")
    );
    assert!(
        world.secrets.get_opt("imported").await.unwrap().is_none(),
        "no key was generated instead"
    );

    let dir = scratch_dir("import-legacy");
    openssl(
        &dir,
        &["genrsa", "-traditional", "-out", "legacy.pem", "2048"],
    );
    let pem = std::fs::read(dir.join("legacy.pem")).unwrap();
    let expected_kid =
        jose::PrivateKey::new(Algorithm::Rs256, jose::private_key_from_pem(&pem).unwrap())
            .unwrap()
            .public_key()
            .to_jwk()
            .kid;
    world.create_secret("legacy", "tls.key", pem.clone()).await;
    let refused = world
        .wait_status("imported", "the import refused without consent", |s| {
            condition(s, "Ready").is_some_and(|c| c.message.contains("does not consent"))
        })
        .await;
    let message = &condition(&refused, "Ready").unwrap().message;
    assert!(
        message.contains("jwks-operator.io/import-to=imported") && !message.contains("tls.key"),
        "names the opt-in, not the source's data keys: {message}"
    );
    assert!(
        active(&refused).is_none(),
        "nothing imported without consent"
    );
    let consent =
        json!({"metadata": {"annotations": {"jwks-operator.io/import-to": "other, imported"}}});
    world
        .secrets
        .patch("legacy", &PatchParams::default(), &Patch::Merge(&consent))
        .await
        .unwrap();
    let adopted = world
        .wait_status("imported", "the imported key active", |s| {
            active(s).is_some()
        })
        .await;
    assert_eq!(active(&adopted).unwrap().kid, expected_kid);
    assert_eq!(condition(&adopted, "Ready").unwrap().status, "True");
    assert!(
        world
            .wait_event("imported", "KeyImported")
            .await
            .contains(&expected_kid)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_import_source_is_reported_in_one_line() {
    let world = World::new().await;
    let dir = scratch_dir("import-encrypted");
    ec_pkcs8_key(
        &dir,
        "P-256",
        "enc.pem",
        &["-aes-128-cbc", "-pass", "pass:x"],
    );
    world
        .create_import_source(
            "encrypted",
            "key",
            std::fs::read(dir.join("enc.pem")).unwrap(),
            "enc",
        )
        .await;
    world
        .create_key(
            "enc",
            json!({}),
            json!({"algorithm": "ES256", "importFrom": {"secretName": "encrypted", "key": "key"}}),
        )
        .await;
    let failing = wait_degraded(&world, "enc", "the import failure reported", "ImportFailed").await;
    let message = &condition(&failing, "Degraded").unwrap().message;
    assert!(
        message.contains("encrypted") && !message.contains('\n'),
        "{message}"
    );
    assert!(active(&failing).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_and_import_publish_a_consistent_x5c_and_nothing_private_leaks() {
    let world = World::new().await;
    let timeline = world.timeline("certified").await;
    let dir = scratch_dir("import-pkcs8");
    ec_pkcs8_key(&dir, "P-384", "key.pem", &[]);
    world
        .create_import_source(
            "source",
            "tls.key",
            std::fs::read(dir.join("key.pem")).unwrap(),
            "certified",
        )
        .await;
    world
        .create_key(
            "certified",
            json!({}),
            json!({
                "algorithm": "ES384",
                "importFrom": {"secretName": "source"},
                "certificate": {"commonName": "tokens.example"},
                "rotation": {"interval": "4s", "prePublish": "1s", "gracePeriod": "1s"},
            }),
        )
        .await;
    let k1 = world.active_kid("certified").await;
    let k1_kid = k1.clone();
    let done = world
        .wait_status(
            "certified",
            "the imported key rotated out and removed",
            move |s| state_of(s, &k1_kid).is_none() && active(s).is_some(),
        )
        .await;

    for key in &done.keys {
        assert!(key.public_jwk.contains_key("x5c") && key.public_jwk.contains_key("x5t#S256"));
        let set = jose::canonical_json(&json!({"keys": [key.public_jwk]})).unwrap();
        let findings = jose::lint::lint(
            set.as_bytes(),
            jose::lint::LintOptions {
                thumbprint_kids: true,
            },
        );
        assert!(findings.is_empty(), "{findings:?}");
    }

    // G3: no private member of any key ever held appears in status, events or the operator log.
    let mut secrets_seen = Vec::new();
    for (observation, _) in timeline.secret_revisions() {
        if let timeline::Revision::Secret(secret) = observation.revision {
            let ring = &secret.data.as_ref().unwrap()["keyring.jwks"].0;
            let set: serde_json::Value = serde_json::from_slice(ring).unwrap();
            for key in set["keys"].as_array().unwrap() {
                secrets_seen.push(key["d"].as_str().unwrap().to_owned());
            }
        }
    }
    assert!(secrets_seen.len() >= 2);
    let statuses: String = timeline
        .observations()
        .iter()
        .filter_map(|o| match &o.revision {
            timeline::Revision::Key(k) => serde_json::to_string(k).ok(),
            _ => None,
        })
        .collect();
    let events = serde_json::to_string(&world.events("certified").await).unwrap();
    let log = world.operator.log();
    assert!(
        log.contains("key ring changed"),
        "the operator logged its work"
    );
    for (place, text) in [
        ("status", &statuses),
        ("events", &events),
        ("operator log", &log),
    ] {
        for d in &secrets_seen {
            assert!(
                !text.contains(d.as_str()),
                "a private key member appears in the {place}"
            );
        }
        assert!(
            !text.contains("\"d\":"),
            "a JWK \"d\" member appears in the {place}"
        );
        assert!(
            !text.contains("PRIVATE KEY"),
            "a PEM private key appears in the {place}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signing_key_where_secrets_are_not_allowed_is_refused_and_no_secret_is_made() {
    let world = World::with_operator_flags(&["--secret-namespaces", "somewhere-else"]).await;
    world
        .create_key("outside", json!({}), json!({"algorithm": "ES256"}))
        .await;
    let refused = world
        .wait_status("outside", "the namespace refused", |s| {
            condition(s, "Ready").is_some_and(|c| c.reason == "SecretsNotAllowed")
        })
        .await;
    let message = &condition(&refused, "Ready").unwrap().message;
    assert!(
        message.contains(&world.ns.name) && message.contains("somewhere-else"),
        "{message}"
    );
    assert_eq!(condition(&refused, "Ready").unwrap().status, "False");
    assert!(active(&refused).is_none());
    assert!(
        world
            .wait_event("outside", "SecretsNotAllowed")
            .await
            .contains("secretNamespaces")
    );
    assert!(
        world.secrets.get_opt("outside").await.unwrap().is_none(),
        "no Secret is made where the operator may not touch Secrets"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_applies_while_the_secret_is_someone_elses() {
    let world = World::new().await;
    let kid = world.create_active_key("taken", json!({}), "ES256").await;
    // Someone else takes the Secret over: another object becomes its controller.
    let owner = k8s_openapi::api::core::v1::ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some("new-owner".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let owner = kube::Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(
        world.ns.client.clone(),
        &world.ns.name,
    )
    .create(&Default::default(), &owner)
    .await
    .unwrap();
    let takeover = json!({"metadata": {"ownerReferences": [{
        "apiVersion": "v1", "kind": "ConfigMap", "name": "new-owner",
        "uid": owner.metadata.uid, "controller": true,
    }]}});
    world
        .secrets
        .patch("taken", &PatchParams::default(), &Patch::Merge(&takeover))
        .await
        .unwrap();
    let before = world.secrets.get("taken").await.unwrap();

    // The revocation is what makes the operator look again (a Secret taken over no longer maps
    // to the SigningKey): it finds the Secret someone else's, and revokes all the same.
    world
        .annotate("taken", "jwks-operator.io/revoke", &kid)
        .await;
    let kid_gone = kid.clone();
    let revoked = world
        .wait_status("taken", "the revoked kid gone from the status", move |s| {
            state_of(s, &kid_gone).is_none()
                && condition(s, "Ready").is_some_and(|c| c.reason == "SecretConflict")
        })
        .await;
    assert_eq!(
        condition(&revoked, "Ready").unwrap().reason,
        "SecretConflict"
    );
    assert!(world.wait_event("taken", "KeyRevoked").await.contains(&kid));
    let after = world.secrets.get("taken").await.unwrap();
    assert_eq!(
        after.metadata.resource_version, before.metadata.resource_version,
        "someone else's Secret is never written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_whose_clock_runs_ahead_activates_nothing_early() {
    // libfaketime shifts the operator's wall clock an hour ahead of the apiserver's.
    let world = World::with_operator_wrapped(&["faketime", "-f", "+1h"], &[]).await;
    world
        .create_key("skewed", json!({}), rotating("ES256", "4s", "1s", "2s"))
        .await;
    // The first key is not timed: it signs at once.
    let first = world.active_kid("skewed").await;
    let held = world
        .wait_status("skewed", "activation held for the clock", |s| {
            condition(s, "Rotating").is_some_and(|c| c.reason == "ClockSkew")
        })
        .await;
    let message = &condition(&held, "Rotating").unwrap().message;
    // The measured skew: an hour, to within the Date header's one-second resolution.
    let skew: f64 = message
        .split("differs from the apiserver's by ")
        .nth(1)
        .and_then(|rest| rest.split('s').next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no skew in {message:?}"));
    assert!((3598.0..=3602.0).contains(&skew), "{message}");
    assert!(
        world
            .wait_event("skewed", "ClockSkew")
            .await
            .contains("wait")
    );
    // Well past several intervals, the first key still signs and nothing was removed.
    let pending = pending(&held).map(|k| k.kid.clone());
    let later = wait_for(TIMEOUT, "three intervals to pass", || async {
        let key = world.keys.get("skewed").await?;
        let created = key.metadata.creation_timestamp.ok_or("no creation time")?.0;
        (Timestamp::now().duration_since(created) > SignedDuration::from_secs(12))
            .then_some(key.status.unwrap_or_default())
            .ok_or_else(|| "not yet".into())
    })
    .await;
    assert_eq!(active(&later).map(|k| k.kid.as_str()), Some(first.as_str()));
    if let Some(pending) = pending {
        assert_eq!(state_of(&later, &pending), Some(KeyState::Pending));
    }
    assert_eq!(condition(&later, "Rotating").unwrap().reason, "ClockSkew");
}
