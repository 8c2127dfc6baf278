//! Every revision of one SigningKey and its Secret, as watched, in the apiserver's own order
//! (resourceVersions of one etcd are one sequence), with the invariants checked over it.

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use jwks_operator::api::{KeyState, SigningKey, SigningKeyStatus};
use jwks_operator::jose::{self, Jwk};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use serde::Deserialize;

#[derive(Clone, Debug)]
pub enum Revision {
    Key(Box<SigningKey>),
    Secret(Box<Secret>),
    SecretDeleted,
}

#[derive(Clone, Debug)]
pub struct Observation {
    pub resource_version: u64,
    /// When the watch delivered it (this machine's clock, like the operator's).
    pub seen_at: Timestamp,
    pub revision: Revision,
}

/// Watches start before the test acts, so nothing is missed.
pub struct Timeline {
    observations: Arc<Mutex<Vec<Observation>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Timeline {
    pub async fn watch(client: &Client, namespace: &str, key: &str, secret: &str) -> Timeline {
        let observations = Arc::new(Mutex::new(Vec::new()));
        let keys: Api<SigningKey> = Api::namespaced(client.clone(), namespace);
        let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let (ready_tx, ready_rx) = tokio::sync::mpsc::channel(2);
        let tasks = vec![
            tokio::spawn(record(
                keys,
                key.into(),
                observations.clone(),
                ready_tx.clone(),
                |k| Revision::Key(Box::new(k)),
            )),
            tokio::spawn(record(
                secrets,
                secret.into(),
                observations.clone(),
                ready_tx,
                |s| Revision::Secret(Box::new(s)),
            )),
        ];
        let mut ready_rx = ready_rx;
        for _ in 0..2 {
            ready_rx.recv().await;
        }
        Timeline {
            observations,
            tasks,
        }
    }

    /// Everything seen so far, in resourceVersion order.
    pub fn observations(&self) -> Vec<Observation> {
        let mut all = self.observations.lock().unwrap().clone();
        all.sort_by_key(|o| o.resource_version);
        all
    }

    /// Every observed Secret revision, with the status in effect when it was written.
    pub fn secret_revisions(&self) -> Vec<(Observation, Option<SigningKeyStatus>)> {
        let mut status = None;
        let mut out = Vec::new();
        for observation in self.observations() {
            match &observation.revision {
                Revision::Key(key) => status = key.status.clone(),
                Revision::Secret(_) => out.push((observation.clone(), status.clone())),
                Revision::SecretDeleted => {}
            }
        }
        out
    }

    /// At every revision of either object, a token signed with the Secret's `key.pem` verifies
    /// against the public JWK the status lists for that kid at that moment. `replaced` lists kids that may appear in the Secret
    /// before the status lists them: a first key, or one that replaced a revoked or lost key.
    pub fn assert_signers_always_verifiable(&self, replaced: &[String]) {
        let mut status: Option<SigningKeyStatus> = None;
        let mut signer: Option<Signer> = None;
        let mut checked = 0;
        for observation in self.observations() {
            match &observation.revision {
                Revision::Key(key) => status = key.status.clone(),
                Revision::Secret(secret) => signer = Signer::read(secret),
                Revision::SecretDeleted => signer = None,
            }
            let Some(signer) = &signer else { continue };
            let listed = status
                .iter()
                .flat_map(|s| &s.keys)
                .find(|k| k.kid == signer.kid);
            match listed {
                Some(listed) => {
                    let jwk: Jwk =
                        serde_json::from_value(listed.public_jwk.clone().into()).unwrap();
                    signer.assert_verifies_with(&jwk);
                    checked += 1;
                }
                None => assert!(
                    replaced.contains(&signer.kid),
                    "at rv {} signers use {} but the status does not list it",
                    observation.resource_version,
                    signer.kid
                ),
            }
        }
        assert!(checked > 0, "no revision was checked");
    }

    /// The kid of every key the Secret ever held, in order of first appearance.
    pub fn kids_ever_held(&self) -> Vec<String> {
        let mut kids = Vec::new();
        for (observation, _) in self.secret_revisions() {
            let Revision::Secret(secret) = observation.revision else {
                continue;
            };
            for kid in keyring_kids(&secret) {
                if !kids.contains(&kid) {
                    kids.push(kid);
                }
            }
        }
        kids
    }

    /// No kid comes back once it has left the Secret, and the Secret never holds two pending
    /// keys or other than one active key.
    pub fn assert_ring_well_formed(&self) {
        let mut gone: Vec<String> = Vec::new();
        let mut previous: Vec<String> = Vec::new();
        for (observation, _) in self.secret_revisions() {
            let Revision::Secret(secret) = &observation.revision else {
                continue;
            };
            let kids = keyring_kids(secret);
            for kid in &kids {
                assert!(
                    !gone.contains(kid),
                    "kid {kid} came back at rv {}",
                    observation.resource_version
                );
            }
            gone.extend(previous.iter().filter(|k| !kids.contains(k)).cloned());
            previous = kids;
            let states = lifecycle_states(secret);
            let count = |state| states.iter().filter(|s| **s == state).count();
            assert_eq!(
                count(KeyState::Active),
                1,
                "rv {}: {states:?}",
                observation.resource_version
            );
            assert!(
                count(KeyState::Pending) <= 1,
                "rv {}: {states:?}",
                observation.resource_version
            );
        }
    }

    /// The first instant (as watched) the Secret had signers use `kid`.
    pub fn secret_activation_seen(&self, kid: &str) -> Option<Timestamp> {
        self.secret_revisions()
            .into_iter()
            .find_map(|(o, _)| match &o.revision {
                Revision::Secret(s) if Signer::read(s).is_some_and(|signer| signer.kid == kid) => {
                    Some(o.seen_at)
                }
                _ => None,
            })
    }

    /// The first instant (as watched) the Secret no longer held `kid` after holding it.
    pub fn secret_removal_seen(&self, kid: &str) -> Option<Timestamp> {
        let mut held = false;
        for (o, _) in self.secret_revisions() {
            let Revision::Secret(s) = &o.revision else {
                continue;
            };
            let holds = keyring_kids(s).iter().any(|k| k == kid);
            if held && !holds {
                return Some(o.seen_at);
            }
            held |= holds;
        }
        None
    }
}

impl Drop for Timeline {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn record<K>(
    api: Api<K>,
    name: String,
    into: Arc<Mutex<Vec<Observation>>>,
    ready: tokio::sync::mpsc::Sender<()>,
    wrap: fn(K) -> Revision,
) where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
{
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher::watcher(api, config).boxed();
    while let Some(event) = stream.next().await {
        let (object, deleted) = match event {
            Ok(Event::Apply(o)) | Ok(Event::InitApply(o)) => (o, false),
            Ok(Event::Delete(o)) => (o, true),
            Ok(Event::InitDone) => {
                let _ = ready.send(()).await;
                continue;
            }
            Ok(Event::Init) | Err(_) => continue,
        };
        let resource_version = object
            .resource_version()
            .and_then(|rv| rv.parse().ok())
            .unwrap_or_default();
        let revision = if deleted {
            Revision::SecretDeleted
        } else {
            wrap(object)
        };
        into.lock().unwrap().push(Observation {
            resource_version,
            seen_at: Timestamp::now(),
            revision,
        });
    }
}

/// What a signer mounting the Secret uses: `key.pem`, `kid`, `alg`.
pub struct Signer {
    pub kid: String,
    key: jose::PrivateKey,
}

impl Signer {
    pub fn read(secret: &Secret) -> Option<Signer> {
        let data = secret.data.as_ref()?;
        let text = |k: &str| String::from_utf8(data.get(k)?.0.clone()).ok();
        let algorithm: jose::Algorithm = text("alg")?.parse().ok()?;
        let material = jose::private_key_from_pem(&data.get("key.pem")?.0).ok()?;
        Some(Signer {
            kid: text("kid")?,
            key: jose::PrivateKey::new(algorithm, material).ok()?,
        })
    }

    /// Signs a token-like message with `key.pem` and verifies it with `jwk`; checks the kid too.
    pub fn assert_verifies_with(&self, jwk: &Jwk) {
        assert_eq!(jwk.kid, self.kid);
        if self.key.algorithm().key_use() != jose::KeyUse::Sig {
            assert_eq!(self.key.public_key().to_jwk().kid, jwk.kid);
            return;
        }
        let message = format!("header.payload-for-{}", self.kid);
        let signature = self.key.sign(message.as_bytes()).unwrap();
        let public = jwk.to_public_key().unwrap();
        assert!(
            public.verify(message.as_bytes(), &signature),
            "a token signed with key.pem for {} does not verify",
            self.kid
        );
    }
}

#[derive(Deserialize)]
struct KeySet {
    keys: Vec<serde_json::Map<String, serde_json::Value>>,
}

pub fn keyring_kids(secret: &Secret) -> Vec<String> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get("keyring.jwks"))
        .and_then(|b| serde_json::from_slice::<KeySet>(&b.0).ok())
        .map(|set| {
            set.keys
                .iter()
                .filter_map(|k| k.get("kid")?.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LifecycleRecord {
    activated_at: Option<String>,
    retired_at: Option<String>,
}

fn lifecycle_states(secret: &Secret) -> Vec<KeyState> {
    #[derive(Deserialize)]
    struct Lifecycle {
        keys: Vec<LifecycleRecord>,
    }
    let lifecycle: Lifecycle = secret
        .annotations()
        .get("jwks-operator.io/lifecycle")
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or(Lifecycle { keys: Vec::new() });
    lifecycle
        .keys
        .iter()
        .map(|r| match (&r.activated_at, &r.retired_at) {
            (_, Some(_)) => KeyState::Retired,
            (Some(_), None) => KeyState::Active,
            (None, None) => KeyState::Pending,
        })
        .collect()
}
