//! Small builders for the SigningKey controller's unit tests: a SigningKey, a timeline, rings of
//! real keys with their private and public halves, and plans that change nothing.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::json;

use super::stored::{Recovered, build_secret};
use crate::api::SigningKey;
use crate::jose::{Algorithm, KeySpec, PrivateJwk, PrivateKey};
use crate::lifecycle::{KeyRing, RingKey, RotationPlan};

/// The instant `secs` seconds into the test timeline.
pub fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

/// An ES256 SigningKey `a/victim` rotating every 100 s (prePublish 10 s, grace 30 s), no status.
pub fn signing_key() -> SigningKey {
    serde_json::from_value(json!({
        "apiVersion": "jwks-operator.io/v1alpha1",
        "kind": "SigningKey",
        "metadata": {"name": "victim", "namespace": "a", "uid": "0b7c6a4e-uid", "generation": 1},
        "spec": {"algorithm": "ES256", "rotation": {"interval": "100s", "prePublish": "10s", "gracePeriod": "30s"}},
    }))
    .unwrap()
}

/// A fresh private key of `algorithm`, as a JWK.
pub fn private_jwk(algorithm: Algorithm) -> PrivateJwk {
    PrivateKey::generate(KeySpec::new(algorithm, None, None).unwrap())
        .unwrap()
        .to_private_jwk()
        .unwrap()
}

/// Every value of a private member of `jwk`.
pub fn private_values(jwk: &PrivateJwk) -> Vec<String> {
    [
        Some(&jwk.d),
        jwk.p.as_ref(),
        jwk.q.as_ref(),
        jwk.dp.as_ref(),
        jwk.dq.as_ref(),
        jwk.qi.as_ref(),
    ]
    .into_iter()
    .flatten()
    .cloned()
    .collect()
}

/// A ring built key by key, oldest first, every key real and held.
#[derive(Default)]
pub struct Ring {
    recovered: Recovered,
}

impl Ring {
    pub fn new() -> Self {
        Ring::default()
    }

    /// A key of `algorithm` created at `created`, activated and retired at the given seconds
    /// (a retired key is removed 30 s after retiring).
    pub fn key(
        mut self,
        algorithm: Algorithm,
        created: i64,
        activated: Option<i64>,
        retired: Option<i64>,
    ) -> Self {
        let jwk = private_jwk(algorithm);
        let public = jwk.to_public_jwk();
        self.recovered.ring.keys.push(RingKey {
            kid: jwk.kid.clone(),
            spec: KeySpec::new(algorithm, None, None).unwrap(),
            created_at: t(created),
            activated_at: activated.map(t),
            retired_at: retired.map(t),
            remove_after: retired.map(|at| t(at) + SignedDuration::from_secs(30)),
            held: true,
        });
        self.recovered.public.insert(jwk.kid.clone(), public);
        self.recovered.private.insert(jwk.kid.clone(), jwk);
        self
    }

    pub fn active(self, since: i64) -> Self {
        self.key(Algorithm::Es256, since, Some(since), None)
    }

    pub fn pending(self, since: i64) -> Self {
        self.key(Algorithm::Es256, since, None, None)
    }

    pub fn retired(self, since: i64, retired: i64) -> Self {
        self.key(Algorithm::Es256, since, Some(since), Some(retired))
    }

    /// The last key's private half is gone.
    pub fn lost(mut self) -> Self {
        if let Some(key) = self.recovered.ring.keys.last_mut() {
            key.held = false;
            self.recovered.private.remove(&key.kid);
        }
        self
    }

    pub fn build(self) -> Recovered {
        self.recovered
    }
}

/// The Secret [`signing_key`] would write for `recovered`'s ring.
pub fn secret_of(recovered: &Recovered) -> Secret {
    build_secret(
        &signing_key(),
        &recovered.ring,
        &recovered.private,
        &recovered.public,
    )
    .unwrap()
}

/// The kid of the `index`th key of `ring`.
pub fn kid(ring: &KeyRing, index: usize) -> String {
    ring.keys[index].kid.clone()
}

/// A plan that keeps `ring` as it is and changes nothing.
pub fn unchanged(ring: &KeyRing) -> RotationPlan {
    RotationPlan {
        ring: ring.clone(),
        changes: Vec::new(),
        wake_at: None,
        next_rotation_at: None,
        blocked: None,
        ring_full: None,
        held_for_clock: false,
    }
}
