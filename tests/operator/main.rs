//! The operator (`jwks-operator run`) against a real kube-apiserver. SigningKeys: whole
//! lifecycles with intervals of seconds, activation held back by publications, manual rotation
//! and revocation, crashes, concurrent operators, damage repair, import and certificates.
//! JwksPublications: assembly, the ConfigMap, the server workload, following rotations. Each
//! test runs its own operator process (`jwks-operator run -n <its namespace>`).

#[path = "../fixtures/mod.rs"]
mod fixtures;
#[path = "../support/mod.rs"]
mod support;
mod timeline;

mod conformance;
mod damage;
mod operations;
mod publication;
mod rotation;

use std::io::Write;

use jwks_operator::api::{KeyState, KeyStatus, SigningKey, SigningKeyStatus};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::{
    ChildProcess, PublicationBuilder, SigningKeyBuilder, TIMEOUT, TestNamespace, test_namespace,
    wait_for,
};
use timeline::Timeline;

/// One test's world: a namespace, its APIs and an operator serving it.
pub struct World {
    pub ns: TestNamespace,
    pub keys: Api<SigningKey>,
    pub secrets: Api<Secret>,
    pub operator: ChildProcess,
}

impl World {
    pub async fn new() -> World {
        World::with_operator_flags(&[]).await
    }

    /// A world whose operator runs with more `run` flags.
    pub async fn with_operator_flags(flags: &[&str]) -> World {
        World::with_operator_wrapped(&[], flags).await
    }

    /// A world whose operator is started through `wrapper` (e.g. `faketime -f +1h`).
    pub async fn with_operator_wrapped(wrapper: &[&str], flags: &[&str]) -> World {
        let ns = test_namespace().await;
        let operator = support::start_operator_wrapped(&ns.name, wrapper, flags).await;
        World {
            keys: Api::namespaced(ns.client.clone(), &ns.name),
            secrets: Api::namespaced(ns.client.clone(), &ns.name),
            ns,
            operator,
        }
    }

    pub async fn create_key(&self, name: &str, labels: Value, spec: Value) -> SigningKey {
        let key = SigningKeyBuilder::new(name).labels(labels).spec(spec);
        support::create(&self.keys, &key.build()).await
    }

    /// Creates a SigningKey of `algorithm` with `labels`; waits for its active kid.
    pub async fn create_active_key(&self, name: &str, labels: Value, algorithm: &str) -> String {
        self.create_key(name, labels, json!({ "algorithm": algorithm }))
            .await;
        self.active_kid(name).await
    }

    pub async fn timeline(&self, name: &str) -> Timeline {
        Timeline::watch(&self.ns.client, &self.ns.name, name, name).await
    }

    /// Waits (watching) until the SigningKey's status satisfies `check`; returns that status.
    pub async fn wait_status(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&SigningKeyStatus) -> bool + Send + 'static,
    ) -> SigningKeyStatus {
        let condition =
            move |key: Option<&SigningKey>| key.and_then(|k| k.status.as_ref()).is_some_and(&check);
        let key = support::wait_until(&self.keys, name, TIMEOUT, what, condition)
            .await
            .unwrap();
        key.status.unwrap()
    }

    /// Waits until the SigningKey has an active key; returns its kid.
    pub async fn active_kid(&self, name: &str) -> String {
        let status = self
            .wait_status(name, "an active key", |s| active(s).is_some())
            .await;
        active(&status).unwrap().kid.clone()
    }

    /// Waits until the SigningKey has a pending successor; returns the status and that key.
    pub async fn wait_pending(&self, name: &str, what: &str) -> (SigningKeyStatus, KeyStatus) {
        let status = self.wait_status(name, what, |s| pending(s).is_some()).await;
        let successor = pending(&status).unwrap().clone();
        (status, successor)
    }

    /// Creates a Secret holding `bytes` under `key` (an import source, say).
    pub async fn create_secret(&self, name: &str, key: &str, bytes: Vec<u8>) {
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: Some([(key.to_string(), k8s_openapi::ByteString(bytes))].into()),
            ..Secret::default()
        };
        self.secrets
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
    }

    /// A Secret holding a key to import, consenting to `signing_key` importing it.
    pub async fn create_import_source(
        &self,
        name: &str,
        key: &str,
        bytes: Vec<u8>,
        signing_key: &str,
    ) {
        self.create_secret(name, key, bytes).await;
        let consent = json!({"metadata": {"annotations": {
            jwks_operator::api::IMPORT_CONSENT_ANNOTATION: signing_key
        }}});
        self.secrets
            .patch(name, &PatchParams::default(), &Patch::Merge(&consent))
            .await
            .unwrap();
    }

    pub async fn annotate(&self, name: &str, annotation: &str, value: &str) {
        let patch = json!({"metadata": {"annotations": {annotation: value}}});
        self.keys
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    /// The events about one SigningKey, oldest first.
    pub async fn events(&self, name: &str) -> Vec<Event> {
        self.events_about(name).await
    }

    /// The events about the object `name` (of any kind), oldest first.
    pub async fn events_about(&self, name: &str) -> Vec<Event> {
        let events: Api<Event> = Api::namespaced(self.ns.client.clone(), &self.ns.name);
        let mut list: Vec<Event> = events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .collect();
        list.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
        list
    }

    /// Waits until an event with `reason` about `name` exists; returns its note.
    pub async fn wait_event(&self, name: &str, reason: &str) -> String {
        wait_for(TIMEOUT, &format!("a {reason} event"), || async {
            self.events(name)
                .await
                .into_iter()
                .find(|e| e.reason.as_deref() == Some(reason))
                .map(|e| e.note.unwrap_or_default())
                .ok_or_else(|| "not yet".into())
        })
        .await
    }
}

pub fn active(status: &SigningKeyStatus) -> Option<&KeyStatus> {
    status.keys.iter().find(|k| k.state == KeyState::Active)
}

pub fn pending(status: &SigningKeyStatus) -> Option<&KeyStatus> {
    status.keys.iter().find(|k| k.state == KeyState::Pending)
}

pub fn state_of(status: &SigningKeyStatus, kid: &str) -> Option<KeyState> {
    status.keys.iter().find(|k| k.kid == kid).map(|k| k.state)
}

pub fn condition<'a>(
    status: &'a SigningKeyStatus,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

/// The labels that put a SigningKey into the publication "main".
pub fn in_main() -> Value {
    json!({ support::PUBLICATION_LABEL: "main" })
}

/// A SigningKey spec with a rotation of seconds.
pub fn rotating(algorithm: &str, interval: &str, pre_publish: &str, grace: &str) -> Value {
    json!({
        "algorithm": algorithm,
        "rotation": {"interval": interval, "prePublish": pre_publish, "gracePeriod": grace},
    })
}

/// Appends one measured transition lag to `target/transition-lag.tsv` (docs/benchmarks.md
/// summarises the file): how long after its due time a transition was written (`planned`: the
/// timestamp the operator recorded) and seen by a watcher (`observed`).
pub fn record_lag(
    test: &str,
    transition: &str,
    due: Timestamp,
    planned: Timestamp,
    observed: Timestamp,
) {
    let ms = |d: SignedDuration| d.as_secs_f64() * 1000.0;
    let planned_ms = ms(planned.duration_since(due));
    let observed_ms = ms(observed.duration_since(due));
    assert!(
        planned_ms >= 0.0,
        "{test}: {transition} happened {planned_ms} ms before it was due"
    );
    let path = support::repo_root().join("target/transition-lag.tsv");
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(
            file,
            "{test}\t{transition}\t{planned_ms:.1}\t{observed_ms:.1}"
        );
    }
}

pub fn at(time: &k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime) -> Timestamp {
    time.0
}

pub fn secs(n: i64) -> SignedDuration {
    SignedDuration::from_secs(n)
}
