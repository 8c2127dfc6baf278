//! Damage and forgery without a cluster: a genuine Secret and status are mutated at random the
//! ways an attacker or an accident can (truncation, string-wrapping, swapped members, a foreign
//! `x5c`, extra kids, planted lifecycle records, a forged status), then read back, planned and
//! reported exactly as a reconcile does. Whatever the damage: no private byte reaches any
//! output, only keys the operator holds (or published before) are published, and a second pass
//! over what was written changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use serde_json::json;

use super::decide::{self, Observed};
use super::fixtures::{private_jwk, private_values, signing_key, t};
use super::report::{Outcome, build_events, build_status};
use super::stored::{self, KEY_PEM, KEYRING, LIFECYCLE_ANNOTATION};
use crate::api::{SigningKey, SigningKeyStatus};
use crate::jose::{self, Algorithm, KeySpec, PrivateJwk, PrivateKey};
use crate::lifecycle::{Change, Policy};

/// One reconcile, as the controller does it, without the I/O: what it would write and say.
struct Pass {
    secret: Secret,
    status: SigningKeyStatus,
    /// Every text the pass produced for others to read: status, conditions, events, damage.
    said: String,
    changes: usize,
    damage: usize,
    minted: BTreeSet<String>,
}

fn reconcile(key: &SigningKey, secret: Option<&Secret>, now: Timestamp) -> Pass {
    let recovered = stored::recover(secret, key.status.as_ref());
    let policy = Policy::from_spec(&key.spec).unwrap();
    let observed = Observed {
        policy: &policy,
        publications: &[],
        import: None,
        now,
        clock_in_sync: true,
    };
    let (plan, recovered) = decide::plan(key, recovered, observed).unwrap();
    let minted: BTreeSet<String> = plan
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::Generated { kid, .. } => Some(kid.clone()),
            _ => None,
        })
        .collect();
    let public = &recovered.public;
    let secret = stored::build_secret(key, &plan.ring, &recovered.private, public).unwrap();
    let outcome = Outcome {
        key,
        secret_name: "victim".into(),
        ring: &plan.ring,
        public,
        plan: Some(&plan),
        damage: &recovered.damage,
        problem: None,
        now,
        clock_skew: SignedDuration::ZERO,
    };
    let status = build_status(&outcome);
    let mut said = serde_json::to_string(&status).unwrap();
    for event in build_events(&outcome) {
        said.push_str(&event.reason);
        said.push_str(event.note.as_deref().unwrap_or_default());
    }
    for damage in &recovered.damage {
        said.push_str(&damage.to_string());
    }
    Pass {
        secret,
        status,
        said,
        changes: plan.changes.len(),
        damage: recovered.damage.len(),
        minted,
    }
}

/// A genuine state: a bootstrapped key and its pending successor, as stored and reported.
fn genuine() -> (SigningKey, Secret, Vec<PrivateJwk>) {
    let mut key = signing_key();
    let first = reconcile(&key, None, t(0));
    key.status = Some(first.status);
    let second = reconcile(&key, Some(&first.secret), t(95));
    key.status = Some(second.status);
    let secret = second.secret;
    let ring: Vec<PrivateJwk> = serde_json::from_slice(&secret.data.as_ref().unwrap()[KEYRING].0)
        .map(|set: serde_json::Value| serde_json::from_value(set["keys"].clone()).unwrap())
        .unwrap();
    assert_eq!(ring.len(), 2);
    (key, secret, ring)
}

#[derive(Clone, Debug)]
enum Damage {
    TruncateKeyring(usize),
    StringWrapKeyring,
    SwapPrivateMembers,
    ForeignX5c,
    ExtraKid,
    ForgedLifecycleRecord,
    TruncateLifecycle(usize),
    ForgedStatusKey,
    WipeStatus,
    ForeignKeyPem,
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (0usize..2000).prop_map(Damage::TruncateKeyring),
        Just(Damage::StringWrapKeyring),
        Just(Damage::SwapPrivateMembers),
        Just(Damage::ForeignX5c),
        Just(Damage::ExtraKid),
        Just(Damage::ForgedLifecycleRecord),
        (0usize..400).prop_map(Damage::TruncateLifecycle),
        Just(Damage::ForgedStatusKey),
        Just(Damage::WipeStatus),
        Just(Damage::ForeignKeyPem),
    ]
}

fn data(secret: &mut Secret) -> &mut BTreeMap<String, ByteString> {
    secret.data.get_or_insert_with(BTreeMap::new)
}

fn keyring_text(secret: &Secret) -> String {
    String::from_utf8_lossy(&secret.data.as_ref().unwrap()[KEYRING].0).into_owned()
}

fn cut(text: &str, at: usize) -> String {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    text[..at].to_owned()
}

/// Applies `damage`; returns the foreign keys it planted (never to be published).
fn apply(
    damage: &Damage,
    key: &mut SigningKey,
    secret: &mut Secret,
    ring: &[PrivateJwk],
) -> Vec<PrivateJwk> {
    let foreign = private_jwk(Algorithm::Es256);
    match damage {
        Damage::TruncateKeyring(at) => {
            let text = cut(&keyring_text(secret), *at);
            data(secret).insert(KEYRING.into(), ByteString(text.into_bytes()));
        }
        Damage::StringWrapKeyring => {
            let text = serde_json::to_string(&keyring_text(secret)).unwrap();
            data(secret).insert(KEYRING.into(), ByteString(text.into_bytes()));
        }
        Damage::SwapPrivateMembers => {
            let mut keys = ring.to_vec();
            let d = keys[0].d.clone();
            keys[0].d = keys[1].d.clone();
            keys[1].d = d;
            let text = serde_json::to_string(&json!({"keys": keys})).unwrap();
            data(secret).insert(KEYRING.into(), ByteString(text.into_bytes()));
        }
        Damage::ForeignX5c => {
            let other =
                PrivateKey::generate(KeySpec::new(Algorithm::Es256, None, None).unwrap()).unwrap();
            let now = SystemTime::now();
            let der = jose::self_signed_certificate(
                &other,
                "evil",
                now,
                now + std::time::Duration::from_secs(3600),
            )
            .unwrap();
            let mut keys = ring.to_vec();
            keys[1] = keys[1].clone().with_certificate(&der);
            let text = serde_json::to_string(&json!({"keys": keys})).unwrap();
            data(secret).insert(KEYRING.into(), ByteString(text.into_bytes()));
        }
        Damage::ExtraKid => {
            let mut keys = ring.to_vec();
            keys.push(foreign.clone());
            let text = serde_json::to_string(&json!({"keys": keys})).unwrap();
            data(secret).insert(KEYRING.into(), ByteString(text.into_bytes()));
            plant_record(secret, &foreign, false);
            return vec![foreign];
        }
        Damage::ForgedLifecycleRecord => {
            plant_record(secret, &foreign, true);
            return vec![foreign];
        }
        Damage::TruncateLifecycle(at) => {
            let annotations = secret
                .metadata
                .annotations
                .get_or_insert_with(BTreeMap::new);
            let text = cut(&annotations[LIFECYCLE_ANNOTATION], *at);
            annotations.insert(LIFECYCLE_ANNOTATION.into(), text);
        }
        Damage::ForgedStatusKey => {
            if let Some(status) = key.status.as_mut() {
                let mut forged = status.keys[0].clone();
                forged.kid = foreign.kid.clone();
                forged.public_jwk = serde_json::to_value(foreign.to_public_jwk())
                    .unwrap()
                    .as_object()
                    .unwrap()
                    .clone();
                status.keys.push(forged);
            }
            return vec![foreign];
        }
        Damage::WipeStatus => key.status = None,
        Damage::ForeignKeyPem => {
            let pem = foreign.to_private_key().unwrap().to_pkcs8_pem().unwrap();
            data(secret).insert(KEY_PEM.into(), ByteString(pem.into_bytes()));
            return vec![foreign];
        }
    }
    Vec::new()
}

/// A lifecycle record for `foreign`, with its public JWK (as for a lost key) when asked, and a
/// removeAfter far in the future.
fn plant_record(secret: &mut Secret, foreign: &PrivateJwk, with_public: bool) {
    let annotations = secret
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new);
    // Over a lifecycle an earlier damage truncated, the planter writes a whole new one.
    let mut lifecycle: serde_json::Value = annotations
        .get(LIFECYCLE_ANNOTATION)
        .and_then(|text| serde_json::from_str(text).ok())
        .filter(|l: &serde_json::Value| l["keys"].is_array())
        .unwrap_or_else(|| json!({"keys": []}));
    let mut record = json!({
        "kid": foreign.kid,
        "createdAt": "2026-01-01T00:00:00Z",
        "activatedAt": "2026-01-01T00:00:00Z",
        "retiredAt": "2026-01-01T00:00:01Z",
        "removeAfter": "2999-01-01T00:00:00Z",
    });
    if with_public {
        record["publicJwk"] = serde_json::to_value(foreign.to_public_jwk()).unwrap();
    }
    lifecycle["keys"].as_array_mut().unwrap().push(record);
    annotations.insert(LIFECYCLE_ANNOTATION.into(), lifecycle.to_string());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn damaged_or_forged_state_never_leaks_or_publishes_a_foreign_key(
        damages in prop::collection::vec(damage(), 1..4)
    ) {
        let (mut key, mut secret, ring) = genuine();
        let mut secrets: Vec<String> = ring.iter().flat_map(private_values).collect();
        let genuine_kids: BTreeSet<String> = ring.iter().map(|k| k.kid.clone()).collect();
        let mut foreign_kids = BTreeSet::new();
        for damage in &damages {
            for planted in apply(damage, &mut key, &mut secret, &ring) {
                secrets.extend(private_values(&planted));
                foreign_kids.insert(planted.kid);
            }
        }
        let first = reconcile(&key, Some(&secret), t(96));
        for value in &secrets {
            prop_assert!(!first.said.contains(value.as_str()), "a private member leaked after {:?}", damages);
        }
        for published in &first.status.keys {
            prop_assert!(
                genuine_kids.contains(&published.kid) || first.minted.contains(&published.kid),
                "published {} after {:?}", published.kid, damages
            );
            prop_assert!(!foreign_kids.contains(&published.kid));
        }
        // What was written reads back whole: nothing further to repair or change.
        key.status = Some(first.status.clone());
        let second = reconcile(&key, Some(&first.secret), t(96));
        prop_assert_eq!(second.damage, 0, "after {:?}", damages);
        prop_assert_eq!(second.changes, 0);
        prop_assert_eq!(&second.status.keys, &first.status.keys);
        prop_assert_eq!(second.secret.data, first.secret.data);
    }
}

#[test]
fn a_keyring_wrapped_in_a_string_is_reported_without_quoting_it() {
    let (key, mut secret, ring) = genuine();
    apply(
        &Damage::StringWrapKeyring,
        &mut key.clone(),
        &mut secret,
        &ring,
    );
    let pass = reconcile(&key, Some(&secret), t(96));
    assert!(
        pass.said
            .contains("keyring.jwks is unreadable (is JSON of the wrong shape (line 1, column"),
        "{}",
        pass.said
    );
    for value in ring.iter().flat_map(private_values) {
        assert!(!pass.said.contains(&value));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any text in any item of the Secret is read back without panicking, and publishes nothing
    /// beyond the genuine keys.
    #[test]
    fn any_text_in_the_secret_is_read_without_panicking(
        lifecycle in prop::option::of(".{0,300}"),
        items in prop::collection::btree_map(
            prop::sample::select(vec!["keyring.jwks", "key.jwk", "key.pem", "kid", "alg"]),
            prop::collection::vec(any::<u8>(), 0..300),
            0..5,
        ),
        json_like in prop::option::of(r#"\{"keys":\[\{"kid":"[a-zA-Z0-9_-]{0,43}","kty":"(EC|RSA|OKP)","d":"[a-zA-Z0-9_-]{0,60}"[^}]{0,80}\}\]\}"#),
    ) {
        let (key, mut secret, ring) = genuine();
        let genuine_kids: BTreeSet<String> = ring.iter().map(|k| k.kid.clone()).collect();
        let annotations = secret.metadata.annotations.get_or_insert_with(BTreeMap::new);
        match lifecycle {
            Some(text) => annotations.insert(LIFECYCLE_ANNOTATION.into(), text),
            None => annotations.remove(LIFECYCLE_ANNOTATION),
        };
        for (item, bytes) in items {
            data(&mut secret).insert(item.into(), ByteString(bytes));
        }
        if let Some(text) = json_like {
            data(&mut secret).insert(KEYRING.into(), ByteString(text.into_bytes()));
        }
        let pass = reconcile(&key, Some(&secret), t(96));
        for published in &pass.status.keys {
            prop_assert!(genuine_kids.contains(&published.kid) || pass.minted.contains(&published.kid));
        }
    }
}

/// A forged `nextRotationAt` (a status writer's) can only keep publications from waking its own
/// key: the next reconcile reports the planned instant again, and publications elsewhere never
/// wake it whatever it says.
#[test]
fn a_forged_handover_time_is_replaced_and_wakes_nothing_elsewhere() {
    let (mut key, secret, _) = genuine();
    let genuine_status = key.status.clone().unwrap();
    assert!(genuine_status.next_rotation_at.is_some());
    let pending = genuine_status
        .keys
        .iter()
        .find(|k| k.state == crate::api::KeyState::Pending)
        .unwrap()
        .kid
        .clone();
    let publication = |namespace: &str| -> crate::api::JwksPublication {
        serde_json::from_value(json!({
            "apiVersion": "jwks-operator.io/v1alpha1",
            "kind": "JwksPublication",
            "metadata": {"name": "p", "namespace": namespace, "generation": 1},
            "spec": {"selector": {}},
            "status": {"observedGeneration": 1, "keys": [
                {"kid": pending, "publishedAt": "1970-01-01T00:01:36Z"},
            ]},
        }))
        .unwrap()
    };
    for forged in ["2999-01-01T00:00:00Z", "1970-01-01T00:00:00Z"] {
        let status = key.status.as_mut().unwrap();
        status.next_rotation_at = Some(MicroTime(forged.parse().unwrap()));
        let pass = reconcile(&key, Some(&secret), t(96));
        assert_eq!(
            pass.status.next_rotation_at, genuine_status.next_rotation_at,
            "forged {forged}"
        );
        let mut cached = key.clone();
        decide::slim(&mut cached);
        assert!(
            !decide::woken_by(&publication("b"), &cached),
            "forged {forged}"
        );
    }
}
