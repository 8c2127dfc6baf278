//! [`stored::recover`] against each kind of damage it detects, and the round trip through
//! [`stored::build_secret`].

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use proptest::prelude::*;

use super::fixtures::{
    Ring, kid, private_jwk, private_values, secret_of, signing_key, t, unchanged,
};
use super::report::{Outcome, build_status};
use super::stored::{self, Damage, KEY_PEM, KEYRING, LIFECYCLE_ANNOTATION, Recovered, recover};
use crate::api::SigningKeyStatus;
use crate::jose::{Algorithm, PrivateJwk};

/// The status a reconcile reports for `recovered`'s ring.
fn status_of(recovered: &Recovered) -> SigningKeyStatus {
    let key = signing_key();
    let plan = unchanged(&recovered.ring);
    build_status(&Outcome {
        key: &key,
        secret_name: "victim".into(),
        ring: &recovered.ring,
        public: &recovered.public,
        plan: Some(&plan),
        damage: &[],
        problem: None,
        now: t(0),
        clock_skew: Default::default(),
    })
}

fn set_data(secret: &mut Secret, item: &str, bytes: &[u8]) {
    let data = secret.data.get_or_insert_default();
    data.insert(item.into(), ByteString(bytes.to_vec()));
}

/// An active key and its pending successor, stored and reported.
fn stored_pair() -> (Recovered, Secret, SigningKeyStatus) {
    let recovered = Ring::new().active(0).pending(90).build();
    let secret = secret_of(&recovered);
    let status = status_of(&recovered);
    (recovered, secret, status)
}

#[test]
fn an_intact_secret_and_status_recover_without_damage() {
    let (written, secret, status) = stored_pair();
    let read = recover(Some(&secret), Some(&status));
    assert_eq!(read.damage, []);
    assert_eq!(read.ring, written.ring);
    assert_eq!(read.private, written.private);
    assert_eq!(read.public, written.public);
}

#[test]
fn a_deleted_secret_keeps_what_the_status_published() {
    let (written, _, status) = stored_pair();
    let read = recover(None, Some(&status));
    assert_eq!(read.damage, [Damage::SecretMissing]);
    assert_eq!(read.public, written.public);
    assert!(read.private.is_empty());
    assert!(read.ring.keys.iter().all(|k| !k.held));
}

#[test]
fn an_unreadable_keyring_is_reported_without_quoting_it() {
    let (written, mut secret, status) = stored_pair();
    set_data(&mut secret, KEYRING, b"{\"keys\": [\"secret-bytes");
    let read = recover(Some(&secret), Some(&status));
    let unreadable = read.damage.iter().find_map(|d| match d {
        Damage::Unreadable { item, reason } if item == KEYRING => Some(reason.clone()),
        _ => None,
    });
    let reason = unreadable.expect("the keyring is reported unreadable");
    assert!(!reason.contains("secret-bytes"), "{reason}");
    // The active key survives in its copies; the pending one is published but no longer held.
    let active = kid(&written.ring, 0);
    assert!(read.ring.get(&active).is_some_and(|k| k.held));
    assert!(
        read.ring
            .get(&kid(&written.ring, 1))
            .is_some_and(|k| !k.held)
    );
}

#[test]
fn an_unreadable_lifecycle_is_reported_as_such_not_as_missing() {
    let (_, mut secret, status) = stored_pair();
    let annotations = secret.metadata.annotations.get_or_insert_default();
    annotations.insert(LIFECYCLE_ANNOTATION.into(), "{\"keys\": [".into());
    let read = recover(Some(&secret), Some(&status));
    let item = format!("annotation {LIFECYCLE_ANNOTATION}");
    assert!(
        read.damage
            .iter()
            .any(|d| matches!(d, Damage::Unreadable { item: i, .. } if *i == item)),
        "{:?}",
        read.damage
    );
    assert!(!read.damage.contains(&Damage::LifecycleMissing));
}

#[test]
fn a_missing_lifecycle_is_taken_from_the_status() {
    let (written, mut secret, status) = stored_pair();
    secret
        .metadata
        .annotations
        .get_or_insert_default()
        .remove(LIFECYCLE_ANNOTATION);
    let read = recover(Some(&secret), Some(&status));
    assert_eq!(read.damage, [Damage::LifecycleMissing]);
    // The status lists keys by kid, so that is the order they come back in.
    let mut expected = written.ring.keys.clone();
    expected.sort_by(|a, b| a.kid.cmp(&b.kid));
    assert_eq!(read.ring.keys, expected);
}

#[test]
fn a_missing_active_copy_is_stale_and_rewritten() {
    let (written, mut secret, status) = stored_pair();
    secret.data.get_or_insert_default().remove(KEY_PEM);
    let read = recover(Some(&secret), Some(&status));
    assert_eq!(read.damage, [Damage::ActiveCopiesStale]);
    let rewritten = secret_of(&read);
    assert_eq!(rewritten.data, secret_of(&written).data);
}

#[test]
fn a_key_planted_in_the_keyring_is_ignored() {
    let (written, mut secret, status) = stored_pair();
    let foreign = private_jwk(Algorithm::Es256);
    let mut keys: Vec<PrivateJwk> = written.private.values().cloned().collect();
    keys.push(foreign.clone());
    let set = serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap();
    set_data(&mut secret, KEYRING, &set);
    let read = recover(Some(&secret), Some(&status));
    assert!(
        read.damage
            .iter()
            .any(|d| matches!(d, Damage::ForeignKey { item } if item.contains(&foreign.kid))),
        "{:?}",
        read.damage
    );
    assert!(read.ring.get(&foreign.kid).is_none());
    assert!(!read.private.contains_key(&foreign.kid));
    let said: String = read.damage.iter().map(ToString::to_string).collect();
    for value in private_values(&foreign) {
        assert!(!said.contains(&value));
    }
}

#[test]
fn a_lost_status_is_rebuilt_from_the_secret() {
    let (written, secret, _) = stored_pair();
    let read = recover(Some(&secret), None);
    assert_eq!(read.damage, [Damage::StatusRebuilt]);
    assert_eq!(read.ring, written.ring);
}

#[test]
fn a_status_key_whose_kid_is_not_its_thumbprint_is_unrecoverable() {
    let (_, _, mut status) = stored_pair();
    status.keys[1].kid = "forged".into();
    let read = recover(None, Some(&status));
    assert!(read.damage.contains(&Damage::Unrecoverable {
        kid: "forged".into()
    }));
    assert!(read.ring.get("forged").is_none());
    assert_eq!(read.ring.keys.len(), 1);
}

#[test]
fn a_recorded_key_with_neither_half_is_unrecoverable() {
    let written = Ring::new().retired(0, 50).active(40).build();
    let retired = kid(&written.ring, 0);
    let mut secret = secret_of(&written);
    let mut kept = written.private.clone();
    kept.remove(&retired);
    let keyring = stored::build_secret(&signing_key(), &written.ring, &kept, &written.public)
        .unwrap()
        .data
        .unwrap()
        .remove(KEYRING)
        .unwrap();
    set_data(&mut secret, KEYRING, &keyring.0);
    // The status never listed it: nothing witnesses its public half.
    let mut status = status_of(&written);
    status.keys.retain(|k| k.kid != retired);
    let read = recover(Some(&secret), Some(&status));
    assert!(read.damage.contains(&Damage::Unrecoverable {
        kid: retired.clone()
    }));
    assert!(read.ring.get(&retired).is_none());
}

/// A ring of `retired` retired keys, an active one and maybe a pending one, of `algorithms`.
fn ring_of(algorithms: &[Algorithm], retired: usize, pending: bool) -> Recovered {
    let mut ring = Ring::new();
    let mut algorithms = algorithms.iter().copied().cycle();
    let mut next = || algorithms.next().unwrap_or(Algorithm::Es256);
    for i in 0..retired as i64 {
        ring = ring.key(next(), i * 10, Some(i * 10), Some(i * 10 + 10));
    }
    let since = retired as i64 * 10;
    ring = ring.key(next(), since, Some(since), None);
    if pending {
        ring = ring.key(next(), since + 5, None, None);
    }
    ring.build()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn the_ring_written_is_the_ring_read_back(
        algorithms in prop::collection::vec(
            prop::sample::select(vec![Algorithm::Es256, Algorithm::Es384, Algorithm::EdDsa]),
            1..4,
        ),
        retired in 0usize..3,
        pending in any::<bool>(),
    ) {
        let written = ring_of(&algorithms, retired, pending);
        let secret = secret_of(&written);
        let read = recover(Some(&secret), Some(&status_of(&written)));
        prop_assert_eq!(&read.damage, &[]);
        prop_assert_eq!(&read.ring, &written.ring);
        prop_assert_eq!(&read.private, &written.private);
        prop_assert_eq!(&read.public, &written.public);
        // Without the status, the same ring is rebuilt from the Secret alone.
        let rebuilt = recover(Some(&secret), None);
        prop_assert_eq!(&rebuilt.damage, &[Damage::StatusRebuilt]);
        prop_assert_eq!(&rebuilt.ring, &written.ring);
        prop_assert_eq!(&rebuilt.private, &written.private);
    }
}

#[test]
fn the_secret_says_how_long_a_token_may_live() {
    let (_, secret, _) = stored_pair();
    let data = secret.data.unwrap();
    // The fixture's gracePeriod is 30s.
    assert_eq!(data[stored::MAX_TOKEN_LIFETIME].0, b"30");
    let mut key = signing_key();
    key.spec.rotation = None;
    let recovered = Ring::new().active(0).build();
    let secret =
        stored::build_secret(&key, &recovered.ring, &recovered.private, &recovered.public).unwrap();
    assert_eq!(
        secret.data.unwrap()[stored::MAX_TOKEN_LIFETIME].0,
        b"86400",
        "the default gracePeriod, 24h"
    );
}
