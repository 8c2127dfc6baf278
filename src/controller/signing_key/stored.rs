//! The SigningKey's Secret, both ways: [`recover`] reads the key ring back from the Secret (and,
//! for what the Secret lost, from the status), reporting every kind of damage it finds;
//! [`build_secret`] renders the ring as the Secret signers mount. Pure.
//!
//! | data key | content |
//! |---|---|
//! | `key.pem` | the active private key, PKCS#8 PEM |
//! | `key.jwk` | the active private key as a JWK (`kid`, `alg`, `use`; `x5c` with a certificate) |
//! | `kid`, `alg` | the active key id and algorithm |
//! | `keyring.jwks` | every held key (pending, active, retired) as a private JWK Set |
//!
//! The annotation `jwks-operator.io/lifecycle` holds the per-key timestamps (canonical JSON), so
//! the status can be rebuilt from the Secret alone.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::{Resource, ResourceExt};
use serde::{Deserialize, Serialize};

use crate::api::{MANAGED_BY_LABEL, MANAGER, RotationSpec, SigningKey, SigningKeyStatus};
use crate::jose::{self, Jwk, KeySpec, PrivateJwk};
use crate::lifecycle::{KeyRing, RingKey};

pub const LIFECYCLE_ANNOTATION: &str = "jwks-operator.io/lifecycle";
pub const SIGNING_KEY_LABEL: &str = "jwks-operator.io/signing-key";

pub const KEY_PEM: &str = "key.pem";
pub const KEY_JWK: &str = "key.jwk";
pub const KID: &str = "kid";
pub const ALG: &str = "alg";
pub const KEYRING: &str = "keyring.jwks";
/// The longest lifetime, in seconds, a token signed with this Secret's keys may have: the
/// `gracePeriod`, for which a retired key stays published. A signer caps `exp` with it.
pub const MAX_TOKEN_LIFETIME: &str = "max-token-lifetime-seconds";

/// The ring as read back, with the key material that goes with it.
#[derive(Debug, Default)]
pub struct Recovered {
    pub ring: KeyRing,
    /// The private half of every held key, as stored in `keyring.jwks`.
    pub private: BTreeMap<String, PrivateJwk>,
    /// The public JWK of every key in the ring, exactly as published.
    pub public: BTreeMap<String, Jwk>,
    pub damage: Vec<Damage>,
}

impl Recovered {
    /// Adds newly minted keys: their private halves to be stored, their public halves derived.
    pub fn hold(&mut self, minted: BTreeMap<String, PrivateJwk>) {
        for (kid, jwk) in minted {
            self.public.insert(kid.clone(), jwk.to_public_jwk());
            self.private.insert(kid, jwk);
        }
    }
}

/// Something found wrong while reading the Secret back. Each is repaired by the next write;
/// none ever makes the operator publish a key whose private half it does not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Damage {
    /// The Secret is gone: the private halves are lost, the published keys stay (from status).
    SecretMissing,
    /// A data key or the lifecycle annotation cannot be parsed.
    Unreadable { item: String, reason: String },
    /// Key material that is not the key the lifecycle records under that kid; it is ignored.
    ForeignKey { item: String },
    /// `key.pem`, `key.jwk`, `kid` or `alg` do not hold the active key; they are rewritten.
    ActiveCopiesStale,
    /// The lifecycle annotation is missing: timestamps are taken from the status.
    LifecycleMissing,
    /// The status had lost its keys: it is rebuilt from the Secret.
    StatusRebuilt,
    /// A recorded key whose private half is gone and whose public half was never published.
    Unrecoverable { kid: String },
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::SecretMissing => write!(f, "the Secret was deleted"),
            Damage::Unreadable { item, reason } => write!(f, "{item} is unreadable ({reason})"),
            Damage::ForeignKey { item } => {
                write!(
                    f,
                    "{item} holds a key this SigningKey did not create; it is ignored"
                )
            }
            Damage::ActiveCopiesStale => {
                write!(f, "key.pem/key.jwk/kid/alg did not hold the active key")
            }
            Damage::LifecycleMissing => {
                write!(f, "the {LIFECYCLE_ANNOTATION} annotation was missing")
            }
            Damage::StatusRebuilt => write!(f, "the status had lost its keys"),
            Damage::Unrecoverable { kid } => {
                write!(
                    f,
                    "key {kid} has neither a stored private half nor a published public half"
                )
            }
        }
    }
}

/// The lifecycle annotation's content.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Lifecycle {
    keys: Vec<Record>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rotate_token: Option<String>,
    /// The UID of the SigningKey this Secret was made for: the proof an orphaned Secret needs
    /// to be adopted (a Secret pre-created under the name a SigningKey will use cannot know it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signing_key_uid: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    kid: String,
    created_at: MicroTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    activated_at: Option<MicroTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retired_at: Option<MicroTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    remove_after: Option<MicroTime>,
    /// Only for a key whose private half is lost: its public half stays published until
    /// `removeAfter`, and this is where it is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    public_jwk: Option<Jwk>,
}

#[derive(Serialize, Deserialize)]
struct PrivateKeySet {
    keys: Vec<PrivateJwk>,
}

/// Reads the ring back from the Secret; keys the Secret lost are taken from the status, public
/// half only.
pub fn recover(secret: Option<&Secret>, status: Option<&SigningKeyStatus>) -> Recovered {
    let mut damage = Vec::new();
    let empty = BTreeMap::new();
    let data = secret.and_then(|s| s.data.as_ref()).unwrap_or(&empty);
    let published: Published = status
        .map(|s| s.keys.iter().map(|k| (k.kid.as_str(), k)).collect())
        .unwrap_or_default();
    if secret.is_none() && !published.is_empty() {
        damage.push(Damage::SecretMissing);
    }
    let lifecycle = recorded_lifecycle(secret, data, &published, &mut damage);
    let recorded: BTreeSet<String> = lifecycle.keys.iter().map(|r| r.kid.clone()).collect();
    let mut records: Vec<Record> = lifecycle.keys.clone();
    for key in published.values() {
        if !records.iter().any(|r| r.kid == key.kid) {
            records.push(record_from_status(key));
        }
    }
    let mut private = read_keyring(data, &records, &mut damage);
    recover_active(secret, data, &records, &mut private, &mut damage);

    let mut ring = KeyRing {
        keys: Vec::new(),
        rotate_token: lifecycle.rotate_token,
    };
    let mut public = BTreeMap::new();
    for record in records {
        // Only when the whole Secret is gone is the status alone believed (what was published
        // stays published, G2).
        let witnessed = secret.is_none() || recorded.contains(record.kid.as_str());
        let held = private.get(&record.kid);
        let Some((jwk, spec)) = public_half(&record, held, witnessed, &published) else {
            damage.push(Damage::Unrecoverable { kid: record.kid });
            continue;
        };
        ring.keys.push(RingKey {
            kid: record.kid.clone(),
            spec,
            created_at: record.created_at.0,
            activated_at: record.activated_at.map(|t| t.0),
            retired_at: record.retired_at.map(|t| t.0),
            remove_after: record.remove_after.map(|t| t.0),
            held: held.is_some(),
        });
        public.insert(record.kid, jwk);
    }
    private.retain(|kid, _| ring.get(kid).is_some());
    if secret.is_some() && published.is_empty() && !ring.keys.is_empty() {
        damage.push(Damage::StatusRebuilt);
    }
    Recovered {
        ring,
        private,
        public,
        damage,
    }
}

/// The keys the status lists, by kid.
type Published<'a> = BTreeMap<&'a str, &'a crate::api::KeyStatus>;

/// The lifecycle annotation's records; a missing annotation is damage only when there is
/// something it should have described.
fn recorded_lifecycle(
    secret: Option<&Secret>,
    data: &BTreeMap<String, ByteString>,
    published: &Published<'_>,
    damage: &mut Vec<Damage>,
) -> Lifecycle {
    let lifecycle = secret.and_then(|s| read_lifecycle(s, damage));
    let unreadable = damage
        .iter()
        .any(|d| matches!(d, Damage::Unreadable { .. }));
    if secret.is_some()
        && lifecycle.is_none()
        && !unreadable
        && (!data.is_empty() || !published.is_empty())
    {
        damage.push(Damage::LifecycleMissing);
    }
    lifecycle.unwrap_or_default()
}

/// The active key's private half from its copies when `keyring.jwks` lost it, and whether the
/// copies still hold it.
fn recover_active(
    secret: Option<&Secret>,
    data: &BTreeMap<String, ByteString>,
    records: &[Record],
    private: &mut BTreeMap<String, PrivateJwk>,
    damage: &mut Vec<Damage>,
) {
    let Some(kid) = records
        .iter()
        .find(|r| r.activated_at.is_some() && r.retired_at.is_none())
        .map(|r| r.kid.clone())
    else {
        return;
    };
    if !private.contains_key(&kid)
        && let Some(jwk) = active_from_copies(data, &kid)
    {
        private.insert(kid.clone(), jwk);
    }
    if secret.is_some()
        && !data.is_empty()
        && let Some(active) = private.get(&kid)
    {
        let stale = active_copies(active).map_or(true, |copies| {
            copies
                .iter()
                .any(|(item, bytes)| data.get(*item) != Some(bytes))
        });
        if stale {
            damage.push(Damage::ActiveCopiesStale);
        }
    }
}

/// A recorded key's public JWK and shape. A held key's public half is derived from its private
/// half, never taken from a record. One whose private half is gone stays published only with
/// two witnesses: the Secret's lifecycle records it, and the status (written by the operator
/// alone) lists it with the same JWK — so neither a record planted in the annotation nor a key
/// planted in the status is ever published.
fn public_half(
    record: &Record,
    held: Option<&PrivateJwk>,
    witnessed: bool,
    published: &Published<'_>,
) -> Option<(Jwk, KeySpec)> {
    let jwk = match held {
        Some(jwk) => Some(jwk.to_public_jwk()),
        None if witnessed => published
            .get(record.kid.as_str())
            .and_then(|k| serde_json::from_value::<Jwk>(k.public_jwk.clone().into()).ok())
            .filter(|jwk| record.public_jwk.as_ref().is_none_or(|own| own == jwk)),
        None => None,
    };
    jwk.and_then(|jwk| checked_public(jwk, &record.kid))
}

fn read_lifecycle(secret: &Secret, damage: &mut Vec<Damage>) -> Option<Lifecycle> {
    let text = secret.annotations().get(LIFECYCLE_ANNOTATION)?;
    serde_json::from_str(text)
        .map_err(|e| {
            damage.push(Damage::Unreadable {
                item: format!("annotation {LIFECYCLE_ANNOTATION}"),
                reason: json_problem(&e),
            })
        })
        .ok()
}

/// What is wrong with a JSON document read from the Secret, without quoting it: serde's own
/// messages quote the offending value, which in `keyring.jwks` is private key material (G3).
fn json_problem(error: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match error.classify() {
        Category::Io => "cannot be read",
        Category::Syntax => "is not valid JSON",
        Category::Data => "is JSON of the wrong shape",
        Category::Eof => "is truncated JSON",
    };
    format!("{what} (line {}, column {})", error.line(), error.column())
}

/// The held private keys: each `keyring.jwks` entry that is a valid key whose thumbprint is the
/// kid it claims and that the lifecycle records.
fn read_keyring(
    data: &BTreeMap<String, ByteString>,
    records: &[Record],
    damage: &mut Vec<Damage>,
) -> BTreeMap<String, PrivateJwk> {
    let Some(bytes) = data.get(KEYRING) else {
        if !records.is_empty() && !data.is_empty() {
            damage.push(Damage::Unreadable {
                item: KEYRING.into(),
                reason: "missing".into(),
            });
        }
        return BTreeMap::new();
    };
    let set: PrivateKeySet = match serde_json::from_slice(&bytes.0) {
        Ok(set) => set,
        Err(e) => {
            damage.push(Damage::Unreadable {
                item: KEYRING.into(),
                reason: json_problem(&e),
            });
            return BTreeMap::new();
        }
    };
    let mut keys = BTreeMap::new();
    for jwk in set.keys {
        let recorded = records.iter().any(|r| r.kid == jwk.kid);
        if recorded && is_genuine(&jwk) {
            keys.insert(jwk.kid.clone(), jwk);
        } else {
            damage.push(Damage::ForeignKey {
                item: format!("{KEYRING} entry {:?}", jwk.kid),
            });
        }
    }
    keys
}

/// The active key from `key.jwk`, else from `key.pem`, when `keyring.jwks` lost it.
fn active_from_copies(data: &BTreeMap<String, ByteString>, kid: &str) -> Option<PrivateJwk> {
    let from_jwk = data
        .get(KEY_JWK)
        .and_then(|b| serde_json::from_slice::<PrivateJwk>(&b.0).ok())
        .filter(|jwk| jwk.kid == kid && is_genuine(jwk));
    from_jwk.or_else(|| {
        let algorithm: jose::Algorithm =
            std::str::from_utf8(&data.get(ALG)?.0).ok()?.parse().ok()?;
        let material = jose::private_key_from_pem(&data.get(KEY_PEM)?.0).ok()?;
        let key = jose::PrivateKey::new(algorithm, material).ok()?;
        key.to_private_jwk().ok().filter(|jwk| jwk.kid == kid)
    })
}

/// A private JWK whose private half matches its public half and whose kid is its thumbprint.
fn is_genuine(jwk: &PrivateJwk) -> bool {
    jwk.to_private_key()
        .is_ok_and(|key| key.public_key().to_jwk().kid == jwk.kid)
}

/// A published JWK that parses strictly and whose kid is its thumbprint, with its key shape.
fn checked_public(jwk: Jwk, kid: &str) -> Option<(Jwk, KeySpec)> {
    let key = jwk.to_public_key().ok()?;
    (jwk.kid == kid && key.to_jwk().kid == kid).then(|| {
        let spec = KeySpec {
            algorithm: key.algorithm,
            kind: key.material.kind(),
        };
        (jwk, spec)
    })
}

fn record_from_status(key: &crate::api::KeyStatus) -> Record {
    Record {
        kid: key.kid.clone(),
        created_at: key.created_at.clone(),
        activated_at: key.activated_at.clone(),
        retired_at: key.retired_at.clone(),
        remove_after: key.remove_after.clone(),
        public_jwk: None,
    }
}

/// `key.pem`, `key.jwk`, `kid`, `alg`: the active key in the forms signers read.
fn active_copies(active: &PrivateJwk) -> Result<[(&'static str, ByteString); 4], jose::Error> {
    let key = active.to_private_key()?;
    let jwk = jose::canonical_json(active).map_err(|e| jose::Error::Rejected(e.to_string()))?;
    Ok([
        (KEY_PEM, ByteString(key.to_pkcs8_pem()?.into_bytes())),
        (KEY_JWK, ByteString(jwk.into_bytes())),
        (KID, ByteString(active.kid.clone().into_bytes())),
        (ALG, ByteString(active.alg.clone().into_bytes())),
    ])
}

/// The Secret for `ring`: the active key's copies, the private key ring and the lifecycle.
/// The private half of every held key is stored here before any status lists its public half.
pub fn build_secret(
    key: &SigningKey,
    ring: &KeyRing,
    private: &BTreeMap<String, PrivateJwk>,
    public: &BTreeMap<String, Jwk>,
) -> Result<Secret, jose::Error> {
    let mut data = BTreeMap::new();
    if let Some(active) = ring.active().and_then(|k| private.get(&k.kid)) {
        data.extend(active_copies(active)?.map(|(k, v)| (k.to_owned(), v)));
    }
    let held: Vec<PrivateJwk> = ring
        .keys
        .iter()
        .filter_map(|k| private.get(&k.kid).cloned())
        .collect();
    let keyring = jose::canonical_json(&PrivateKeySet { keys: held })
        .map_err(|e| jose::Error::Rejected(e.to_string()))?;
    data.insert(KEYRING.to_owned(), ByteString(keyring.into_bytes()));
    let lifetime = max_token_lifetime(key).as_secs().to_string();
    data.insert(
        MAX_TOKEN_LIFETIME.to_owned(),
        ByteString(lifetime.into_bytes()),
    );

    let lifecycle = Lifecycle {
        keys: ring
            .keys
            .iter()
            .map(|k| Record {
                kid: k.kid.clone(),
                created_at: MicroTime(k.created_at),
                activated_at: k.activated_at.map(MicroTime),
                retired_at: k.retired_at.map(MicroTime),
                remove_after: k.remove_after.map(MicroTime),
                public_jwk: (!private.contains_key(&k.kid))
                    .then(|| public.get(&k.kid).cloned())
                    .flatten(),
            })
            .collect(),
        rotate_token: ring.rotate_token.clone(),
        signing_key_uid: key.uid(),
    };
    let lifecycle =
        jose::canonical_json(&lifecycle).map_err(|e| jose::Error::Rejected(e.to_string()))?;

    let template = key.spec.secret_template.clone().unwrap_or_default();
    let mut labels = template.labels;
    labels.insert(MANAGED_BY_LABEL.into(), MANAGER.into());
    labels.insert(SIGNING_KEY_LABEL.into(), key.name_any());
    let mut annotations = template.annotations;
    annotations.insert(LIFECYCLE_ANNOTATION.into(), lifecycle);
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(key.secret_name()),
            namespace: key.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: key.controller_owner_ref(&()).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Secret::default()
    })
}

/// How long a token may live: the `gracePeriod` (a value stored before the schema bounded it
/// never gets this far: planning refuses it first).
fn max_token_lifetime(key: &SigningKey) -> std::time::Duration {
    key.spec
        .rotation()
        .grace_period
        .parse_at_most(RotationSpec::MAX_GRACE_PERIOD)
        .unwrap_or(RotationSpec::DEFAULT_GRACE_PERIOD)
}

/// Whether `secret`'s lifecycle says it was made for this very SigningKey (same UID).
pub fn made_for(secret: &Secret, key: &SigningKey) -> bool {
    let recorded = secret
        .annotations()
        .get(LIFECYCLE_ANNOTATION)
        .and_then(|text| serde_json::from_str::<Lifecycle>(text).ok())
        .and_then(|lifecycle| lifecycle.signing_key_uid);
    recorded.is_some() && recorded == key.uid()
}
